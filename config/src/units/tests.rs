use super::*;

#[test]
fn ppm_accepted() {
    let cases = [
        ("10%", 100_000),
        ("0.5%", 5_000),
        ("12.3456%", 123_456),
        ("100%", 1_000_000),
        ("0%", 0),
        ("0.0001%", 1),
        (" 10 % ", 100_000),
        ("0.1", 100_000),
        ("0.25", 250_000),
        ("1", 1_000_000),
        ("1.0", 1_000_000),
        ("0", 0),
        (".5", 500_000),
        ("0.000001", 1),
        ("100000ppm", 100_000),
        ("1000000ppm", 1_000_000),
        ("0ppm", 0),
    ];
    for (text, want) in cases {
        let got = parse_ppm(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(got.get(), want, "{text:?}");
    }
}

#[test]
fn ppm_rejected() {
    let cases = [
        ("120%", "120% is above 100%"),
        ("100.0001%", "100.0001% is above 100%"),
        ("1000001ppm", "1000001ppm is above 100%"),
        (
            "10",
            "10 is above 1; a bare number is a fraction of 1 (write 10% for a percentage)",
        ),
        (
            "1.5",
            "1.5 is above 1; a bare number is a fraction of 1 (write 1.5% for",
        ),
        // No hint towards a percentage that is itself out of range.
        (
            "120",
            "120 is above 1 (a bare number is a fraction of 1) and a share is at most 100%",
        ),
        ("-5%", "`-5%` is negative"),
        ("-0.1", "`-0.1` is negative"),
        ("0.00001%", "0.00001% is finer than 1 ppm (0.0001%)"),
        ("0.0000001", "0.0000001 is finer than 1 ppm"),
        ("0.5ppm", "finer than 1 ppm"),
        ("NaN", "`NaN` is not a number"),
        ("ten%", "`ten%` is not a number"),
        ("", "is not a number"),
        ("%", "is not a number"),
        ("1e-1", "is not a number"),
        ("1.2.3%", "is not a number"),
        ("99999999999999999999999999%", "too many digits"),
    ];
    for (text, want) in cases {
        let err = parse_ppm(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn ppm_display_is_shortest_exact() {
    let cases = [
        (0, "0%"),
        (1, "0.0001%"),
        (5_000, "0.5%"),
        (100_000, "10%"),
        (123_456, "12.3456%"),
        (120_000, "12%"),
        (1_000_000, "100%"),
    ];
    for (ppm, want) in cases {
        let ppm = Ppm::new(ppm).expect("in range");
        assert_eq!(ppm.to_string(), want);
        assert_eq!(parse_ppm(want), Ok(ppm), "round trip {want}");
    }
}

#[test]
fn ppm_bounds() {
    assert_eq!(Ppm::new(PPM_MAX), Some(Ppm::FULL));
    assert_eq!(Ppm::new(PPM_MAX + 1), None);
    assert_eq!(Ppm::ZERO.get(), 0);
    assert!((Ppm::FULL.as_fraction() - 1.0).abs() < f64::EPSILON);
    assert!((Ppm::new(250_000).map(Ppm::as_fraction) == Some(0.25)));
    assert_eq!("10%".parse::<Ppm>().map(Ppm::get), Ok(100_000));
}

#[test]
fn size_accepted() {
    let cases = [
        ("0", 0),
        ("1024", 1024),
        ("64B", 64),
        ("64KiB", 64 << 10),
        ("64 KiB", 64 << 10),
        ("64kib", 64 << 10),
        ("64MiB", 64 << 20),
        ("1GiB", 1 << 30),
        ("2TiB", 2 << 40),
        ("64Ki", 64 << 10),
        ("4Mi", 4 << 20),
        ("1.5KiB", 1536),
        ("64KB", 64_000),
        ("64MB", 64_000_000),
        ("1GB", 1_000_000_000),
        ("1TB", 1_000_000_000_000),
    ];
    for (text, want) in cases {
        let got = parse_size(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn size_rejected() {
    let cases = [
        (
            "64k",
            "`64k` is ambiguous: write 64KiB (binary, 1024) or 64KB (SI, 1000)",
        ),
        ("64M", "is ambiguous"),
        ("1g", "is ambiguous"),
        ("64Q", "unknown unit `Q`"),
        ("64 bytes", "unknown unit `bytes`"),
        ("-1", "is negative"),
        ("1.5B", "not a whole number of bytes"),
        ("0.1", "not a whole number of bytes"),
        ("KiB", "is not a number"),
        ("", "is not a number"),
        ("99999999999TiB", "too large"),
        ("18446744073709551616", "too large"),
    ];
    for (text, want) in cases {
        let err = parse_size(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn duration_accepted() {
    let ms = Duration::from_millis;
    let cases = [
        ("10s", ms(10_000)),
        ("500ms", ms(500)),
        ("2m", ms(120_000)),
        ("1h", ms(3_600_000)),
        ("1.5s", ms(1_500)),
        ("250us", Duration::from_micros(250)),
        ("250µs", Duration::from_micros(250)),
        ("7ns", Duration::from_nanos(7)),
        ("1m30s", ms(90_000)),
        ("1h 30m", ms(5_400_000)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        (" 10s ", ms(10_000)),
    ];
    for (text, want) in cases {
        let got = parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(got, want, "{text:?}");
    }
}

#[test]
fn duration_rejected() {
    let cases = [
        ("10", "`10` has no unit; write 10s or 10ms"),
        ("1.5", "`1.5` has no unit"),
        ("10x", "unknown unit `x`; use ns, us, ms, s, m or h"),
        ("10S", "unknown unit `S`"),
        ("1d", "unknown unit `d`"),
        ("-1s", "is negative"),
        ("1.5ns", "finer than 1ns"),
        ("10s5", "number without a unit"),
        ("s", "is not a number"),
        ("", "empty duration"),
        ("99999999999999999999h", "too long"),
    ];
    for (text, want) in cases {
        let err = parse_duration(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
    }
}

#[test]
fn size_format() {
    let cases = [
        (0, "0B"),
        (1000, "1000B"),
        (1536, "1536B"),
        (64 << 10, "64KiB"),
        (4 << 20, "4MiB"),
        (1 << 30, "1GiB"),
    ];
    for (bytes, want) in cases {
        assert_eq!(format_size(bytes), want);
    }
}
