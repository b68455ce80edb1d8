//! Value types shared by the simulator's flags and its fault JSON: shares, durations, byte sizes.

use std::{fmt, str::FromStr, time::Duration};

/// A share in `0..=1`, kept in parts per million so comparisons against a seeded RNG are exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ratio(u32);

const PPM: u32 = 1_000_000;

// === impl Ratio ===

impl Ratio {
    pub const ZERO: Self = Self(0);
    pub const ONE: Self = Self(PPM);

    /// Builds a share from a fraction in `0..=1`.
    pub fn new(fraction: f64) -> Result<Self, String> {
        if !fraction.is_finite() || !(0.0..=1.0).contains(&fraction) {
            return Err(format!("{fraction} is not a share between 0 and 1"));
        }
        // In range by the check above, so the cast cannot truncate.
        Ok(Self((fraction * f64::from(PPM)).round() as u32))
    }

    pub fn from_ppm(ppm: u32) -> Option<Self> {
        (ppm <= PPM).then_some(Self(ppm))
    }

    pub fn ppm(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(PPM)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True for `ppm` draws out of a million; `draw` must be uniform in `0..1_000_000`.
    pub fn hit(self, draw: u32) -> bool {
        draw < self.0
    }
}

impl FromStr for Ratio {
    type Err = String;

    /// Accepts `0.25` or `25%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, scale) = match s.strip_suffix('%') {
            Some(pct) => (pct.trim(), 100.0),
            None => (s, 1.0),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{s:?} is not a share (use 0.25 or 25%)"))?;
        Self::new(value / scale)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// The longest duration accepted: far beyond any test or demo, and short enough that adding it
/// to an `Instant` cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses `300ms`, `1.5s`, `2m`, `500us`, `1h` up to [`MAX_DURATION`]; a bare number is
/// milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use 300ms, 1.5s, 2m)"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "ms" => 1e-3,
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{s:?}: unknown duration unit {other:?}")),
    };
    let d =
        Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|e| format!("{s:?}: {e}"))?;
    check_duration(d)
}

/// Refuses durations over [`MAX_DURATION`].
pub fn check_duration(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!("{} is longer than 30 days", format_duration(d)));
    }
    Ok(d)
}

/// The inverse of [`parse_duration`], in the largest unit that is exact.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0ms".to_owned()
    } else if nanos % 1_000_000_000 == 0 {
        format!("{}s", d.as_secs())
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if nanos % 1_000 == 0 {
        format!("{}us", d.as_micros())
    } else {
        format!("{nanos}ns")
    }
}

/// Parses `80GiB`, `512MiB`, `1.5GB`, `4096`; binary suffixes are powers of 1024, the others of
/// 1000.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (use 80GiB, 512MiB, 4096)"))?;
    let multiplier: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("{s:?}: unknown size unit {other:?}")),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    // Finite, non-negative (no sign is accepted) and in range by the checks above.
    Ok(bytes.round() as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn ratios() {
        let table = [
            ("0", Some(0)),
            ("1", Some(PPM)),
            ("0.25", Some(250_000)),
            ("25%", Some(250_000)),
            ("1.5", None),
            ("-0.1", None),
            ("NaN", None),
            ("x", None),
        ];
        for (input, want) in table {
            let got = input.parse::<Ratio>().ok().map(Ratio::ppm);
            assert_eq!(got, want, "{input}");
        }
        assert!(Ratio::ONE.hit(PPM - 1));
        assert!(!Ratio::ZERO.hit(0));
    }

    #[test]
    fn durations_round_trip() {
        let table = [
            ("300ms", Duration::from_millis(300)),
            ("300", Duration::from_millis(300)),
            ("1.5s", Duration::from_millis(1500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("250us", Duration::from_micros(250)),
            ("0", Duration::ZERO),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
            assert_eq!(parse_duration(&format_duration(want)), Ok(want), "{input}");
        }
        for bad in ["", "ms", "1x", "-1s", "1e400s", "31d", "744h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_sizes() {
        let table = [
            ("80GiB", Some(80 << 30)),
            ("512MiB", Some(512 << 20)),
            ("1.5GB", Some(1_500_000_000)),
            ("4096", Some(4096)),
            ("4096B", Some(4096)),
            ("1PB", None),
            ("-1", None),
        ];
        for (input, want) in table {
            assert_eq!(parse_bytes(input).ok(), want, "{input}");
        }
    }
}
