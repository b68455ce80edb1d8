use super::*;

fn one(line: &str) -> Sample {
    let mut samples = parse(line).unwrap();
    assert_eq!(samples.len(), 1, "{line}");
    samples.remove(0)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// (line, name, labels, value)
type LineCase = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    f64,
);

#[test]
fn sample_lines() {
    // (line, name, labels, value)
    let cases: &[LineCase] = &[
        ("up 1", "up", &[], 1.0),
        (
            "vllm:num_requests_waiting 3",
            "vllm:num_requests_waiting",
            &[],
            3.0,
        ),
        (":weird:name: 2", ":weird:name:", &[], 2.0),
        ("x{} 1", "x", &[], 1.0),
        ("x{a=\"b\"} 1.5", "x", &[("a", "b")], 1.5),
        ("x{a=\"b\",} 1", "x", &[("a", "b")], 1.0),
        (
            "x { a = \"b\" , c=\"d\" } 1",
            "x",
            &[("a", "b"), ("c", "d")],
            1.0,
        ),
        ("x{a=\"\"} 0", "x", &[("a", "")], 0.0),
        (r#"x{p="C:\\dir"} 1"#, "x", &[("p", "C:\\dir")], 1.0),
        (r#"x{q="say \"hi\""} 1"#, "x", &[("q", "say \"hi\"")], 1.0),
        (r#"x{n="a\nb"} 1"#, "x", &[("n", "a\nb")], 1.0),
        (
            "x{u=\"ünï cödé {}=,\"} 1",
            "x",
            &[("u", "ünï cödé {}=,")],
            1.0,
        ),
        ("x +Inf", "x", &[], f64::INFINITY),
        ("x -Inf", "x", &[], f64::NEG_INFINITY),
        ("x 1e-3", "x", &[], 0.001),
        ("x -0.5", "x", &[], -0.5),
        ("x 12 1395066363000", "x", &[], 12.0),
        ("x 12 1395066363.25", "x", &[], 12.0),
        ("x 12 -5", "x", &[], 12.0),
        ("\t  x 7  \t", "x", &[], 7.0),
        ("x 7\r", "x", &[], 7.0),
        (
            "h_bucket{le=\"0.5\"} 4 # {trace_id=\"abc\"} 0.3 1.0",
            "h_bucket",
            &[("le", "0.5")],
            4.0,
        ),
        ("x{le=\"+Inf\"} 9", "x", &[("le", "+Inf")], 9.0),
    ];
    for &(line, name, want_labels, value) in cases {
        let s = one(line);
        assert_eq!(s.name, name, "{line}");
        assert_eq!(s.labels, labels(want_labels), "{line}");
        assert_eq!(s.value, value, "{line}");
    }
}

#[test]
fn nan_value() {
    for line in ["x NaN", "x nan", "x{a=\"b\"} NaN 17"] {
        assert!(one(line).value.is_nan(), "{line}");
    }
}

#[test]
fn garbage_lines_are_errors_with_their_line() {
    // (page, line number, reason)
    let cases: &[(&str, usize, &str)] = &[
        ("up 1\nthis is not metrics\n", 2, "invalid sample value"),
        ("up", 1, "invalid sample value"),
        ("up one", 1, "invalid sample value"),
        ("9up 1", 1, "invalid metric name"),
        ("{a=\"b\"} 1", 1, "invalid metric name"),
        ("<html><body>", 1, "invalid metric name"),
        (
            "# HELP x\n\nx{a=b} 1",
            3,
            "expected '\"' to open a label value",
        ),
        ("x{a=\"b} 1", 1, "unterminated label value"),
        ("x{a=\"b\" 1", 1, "expected ',' or '}' after label value"),
        ("x{a:b=\"c\"} 1", 1, "expected '=' after label name"),
        ("x{1a=\"c\"} 1", 1, "invalid label name"),
        ("x{a=\"b\",a=\"c\"} 1", 1, "duplicate label name"),
        (r#"x{a="\t"} 1"#, 1, "invalid escape in label value"),
        ("x 1 soon", 1, "invalid timestamp"),
        ("x 1 NaN", 1, "invalid timestamp"),
        ("x 1 2 3", 1, "unexpected text after the value"),
        ("x{a=\"b\"}", 1, "invalid sample value"),
        ("ok 1\nok 2\nok 3\nx 0x1p3", 4, "invalid sample value"),
    ];
    for &(page, line, reason) in cases {
        match parse(page) {
            Err(ParseError::Line {
                line: got_line,
                reason: got_reason,
                ..
            }) => {
                assert_eq!((got_line, got_reason), (line, reason), "{page:?}");
            }
            other => panic!("{page:?}: expected a line error, got {other:?}"),
        }
    }
}

#[test]
fn error_excerpt_is_bounded() {
    let page = format!("x{}", "!".repeat(10_000));
    let err = parse(&page).unwrap_err();
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn comments_blanks_and_openmetrics() {
    let page = "\
# HELP vllm:num_requests_running Number of requests.
# TYPE vllm:num_requests_running gauge
# UNIT x_seconds seconds
#a comment with no space
   # indented comment

vllm:num_requests_running{model_name=\"m\"} 2
x_total 5
# EOF
anything at all after EOF is ignored {{{
";
    let samples = parse(page).unwrap();
    let names: Vec<_> = samples.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["vllm:num_requests_running", "x_total"]);
    assert_eq!(samples[0].label("model_name"), Some("m"));
    assert_eq!(samples[0].label("nope"), None);
}

#[test]
fn empty_page_is_empty() {
    assert_eq!(parse(""), Ok(vec![]));
    assert_eq!(parse("\n\n# only comments\n"), Ok(vec![]));
}

#[test]
fn size_limit() {
    let page = "x 1\n".repeat(100);
    assert_eq!(
        parse_filtered(&page, 399, |_| true),
        Err(ParseError::TooLarge { limit: 399 })
    );
    assert_eq!(parse_filtered(&page, 400, |_| true).unwrap().len(), 100);
    assert_eq!(
        parse_bytes(page.as_bytes(), 10),
        Err(ParseError::TooLarge { limit: 10 })
    );
}

#[test]
fn bytes_must_be_utf8() {
    assert_eq!(
        parse_bytes(b"x 1\ny{a=\"\xff\"} 2\n", 1024),
        Err(ParseError::NotUtf8 { line: 2 })
    );
    assert_eq!(parse_bytes(b"x 1\n", 1024).unwrap().len(), 1);
}

#[test]
fn filter_skips_without_relaxing_checks() {
    let page = "a{x=\"1\"} 1\nb{y=\"2\"} 2\n";
    let kept = parse_filtered(page, 1024, |n| n == "b").unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].labels, labels(&[("y", "2")]));
    // Garbage in a skipped series still rejects the page.
    let bad = "a{x=1} 1\nb 2\n";
    assert!(parse_filtered(bad, 1024, |n| n == "b").is_err());
}

#[test]
fn display_round_trips() {
    let line = r#"x:y{a="q\"\\\n",b=""} 1.5"#;
    let s = one(line);
    assert_eq!(one(&s.to_string()), s);
}

#[test]
fn large_page_parses() {
    // About 100 KB, the size of a busy vLLM page; a smoke test, not a benchmark.
    let mut page = String::new();
    for i in 0..1500 {
        page.push_str(&format!(
            "vllm:e2e_request_latency_seconds_bucket{{engine=\"{}\",model_name=\"m\",le=\"{i}\"}} {i}\n",
            i % 4
        ));
    }
    assert!(page.len() > 100_000);
    assert_eq!(parse(&page).unwrap().len(), 1500);
}
