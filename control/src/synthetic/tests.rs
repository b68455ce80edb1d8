//! Suite validation, JSON paths and durations; runs against simulators in `tests/live.rs`.

use serde_json::json;

use super::suite::parse_duration;
use super::*;

mod live;

const EXAMPLE: &str = r#"
# golden/chat-small.yaml
requests:
  - name: capital
    path: /v1/chat/completions
    body: { model: chat-small, messages: [{role: user, content: "capital of France?"}], max_tokens: 16 }
    expect:
      status: 200
      json: { "choices[0].message.content": { contains: "Paris" } }
      max_latency: 2s
  - name: stream-completes
    path: /v1/chat/completions
    body: { model: chat-small, stream: true, messages: [{role: user, content: hi}] }
    expect: { status: 200, stream_done: true }
  - name: embedding-dim
    path: /v1/embeddings
    body: { model: embed, input: "hello" }
    expect: { embedding_dim: 384 }
  - name: defaults
    path: /v1/completions
    body: { prompt: "x", "null-field": null }
"#;

#[test]
fn example_suite_parses() {
    let suite = Suite::from_yaml(EXAMPLE).unwrap();
    let names: Vec<&str> = suite.checks().iter().map(Check::name).collect();
    assert_eq!(
        names,
        ["capital", "stream-completes", "embedding-dim", "defaults"]
    );
    let streams: Vec<bool> = suite.checks().iter().map(Check::stream).collect();
    assert_eq!(streams, [false, true, false, false]);
    let capital = &suite.checks()[0];
    assert_eq!(capital.path(), "/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_slice(&capital.body).unwrap();
    assert_eq!(body["messages"][0]["content"], "capital of France?");
    assert_eq!(body["max_tokens"], 16);
    assert_eq!(capital.expect.status, Some(200));
    assert_eq!(capital.expect.max_latency, Some(Duration::from_secs(2)));
    assert_eq!(
        capital.expect.json[0].1,
        [Matcher::Contains("Paris".to_owned())]
    );
    assert_eq!(suite.checks()[3].expect, Expect::default());
}

#[test]
fn every_error_is_reported_with_its_path() {
    let yaml = r#"
version: 2
requests:
  - nme: typo
    path: v1/chat
    body: [1, 2]
    expect:
      status: 999
      json:
        "choices[0]x": { contains: "a" }
        "choices[0].message.content": { matches: "P.*s", contains: 42 }
        id: {}
      max_latency: 2 parsecs
      stream_done: true
      embedding_dim: 0
      colour: red
  - name: dup
    path: /v1/chat/completions
    body: { stream: "yes" }
  - name: dup
    path: /v1/embeddings
    body: { input: hi }
    expect: { max_latency: 2, equals: 1 }
  - just a string
"#;
    let err = Suite::from_yaml(yaml).unwrap_err();
    let want = [
        ("version", "unknown key"),
        ("requests[0].nme", "unknown key"),
        ("requests[0].name", "missing"),
        ("requests[0].path", "must start with /"),
        ("requests[0].body", "must be a mapping"),
        ("requests[0].expect.status", "100 to 599"),
        (
            "requests[0].expect.json.\"choices[0]x\"",
            "expected `.` or `[`",
        ),
        (
            "requests[0].expect.json.\"choices[0].message.content\".matches",
            "unknown key",
        ),
        (
            "requests[0].expect.json.\"choices[0].message.content\".contains",
            "expected a string",
        ),
        ("requests[0].expect.json.id", "no matcher"),
        ("requests[0].expect.max_latency", "unknown unit \"parsecs\""),
        ("requests[0].expect.stream_done", "needs `stream: true`"),
        ("requests[0].expect.embedding_dim", "at least 1"),
        ("requests[0].expect.colour", "unknown key"),
        ("requests[1].body.stream", "true or false"),
        ("requests[2].name", "also the name of requests[1]"),
        ("requests[2].expect.max_latency", "no unit"),
        ("requests[2].expect.equals", "unknown key"),
        ("requests[3]", "expected a mapping"),
    ];
    for (path, message) in want {
        assert!(
            err.issues
                .iter()
                .any(|i| i.path == path && i.message.contains(message)),
            "no `{path}: …{message}…` in\n{err:#?}"
        );
    }
    assert_eq!(err.issues.len(), want.len(), "{err:#?}");
    let text = err.to_string();
    assert!(
        text.contains("requests[0].expect.status: must be an HTTP status"),
        "{text}"
    );
}

#[test]
fn whole_file_errors() {
    let table = [
        ("requests: [", "not valid YAML"),
        ("", "expected a mapping"),
        ("other: 1", "missing"),
        ("requests: []", "empty"),
        ("requests: 3", "invalid type"),
    ];
    for (yaml, message) in table {
        let err = Suite::from_yaml(yaml).unwrap_err();
        assert!(
            err.issues.iter().any(|i| i.message.contains(message)),
            "{yaml:?}: {err:?}"
        );
    }
}

#[test]
fn json_paths() {
    let doc = json!({"a": {"b": [{"c": 1}, {"c": 2}]}, "x.y": {"z": true}, "m": [[0, 5]]});
    let found = [
        ("a.b[1].c", Some(json!(2))),
        ("a.b[0]", Some(json!({"c": 1}))),
        (r#"["x.y"].z"#, Some(json!(true))),
        ("m[0][1]", Some(json!(5))),
        ("a.b[2].c", None),
        ("a.nope", None),
        ("a.b.c", None),
    ];
    for (path, want) in found {
        let p = JsonPath::parse(path).unwrap();
        assert_eq!(p.lookup(&doc).cloned(), want, "{path}");
        assert_eq!(p.to_string(), path);
    }
    assert_eq!(
        JsonPath::parse("[0].id")
            .unwrap()
            .lookup(&json!([{"id": 7}])),
        Some(&json!(7))
    );
    for bad in [
        "", "a..b", "a.", "a[", "a[x]", "a]b", "a[0]b", r#"a["x]"#, "a[-1]",
    ] {
        assert!(JsonPath::parse(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn matchers() {
    let path = JsonPath::parse("v").unwrap();
    let s = json!("The capital is Paris.");
    let table = [
        (Matcher::Contains("Paris".into()), Some(&s), true),
        (Matcher::Contains("Lyon".into()), Some(&s), false),
        (Matcher::Prefix("The".into()), Some(&s), true),
        (Matcher::Suffix("Paris".into()), Some(&s), false),
        (
            Matcher::Equals(json!("The capital is Paris.")),
            Some(&s),
            true,
        ),
        (Matcher::Equals(json!(1.0)), Some(&json!(1)), true),
        (Matcher::Contains("1".into()), Some(&json!(1)), false),
        (Matcher::Exists(true), None, false),
        (Matcher::Exists(false), None, true),
        (Matcher::Exists(false), Some(&s), false),
        (Matcher::Equals(json!(null)), None, false),
    ];
    for (m, value, pass) in table {
        let got = m.check(&path, value);
        assert_eq!(got.is_none(), pass, "{m:?} on {value:?}: {got:?}");
        if let Some(reason) = got {
            assert!(reason.starts_with("`v`: "), "{reason}");
        }
    }
}

#[test]
fn durations() {
    let ok = [
        ("250ms", 250),
        ("2s", 2000),
        ("1.5s", 1500),
        ("1m", 60_000),
        (" 3s ", 3000),
    ];
    for (text, ms) in ok {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for bad in ["2", "2h", "abc", "-1s", "s", "1e400s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
    }
}

/// A suite's report names its requests, so two requests with one name are an error, whatever
/// else is wrong with either of them.
#[test]
fn duplicate_request_names_are_flagged() {
    let ok = "path: /v1/completions, body: { prompt: hi }";
    let cases = [
        (
            format!("{{ name: a, {ok} }}"),
            format!("{{ name: a, {ok} }}"),
        ),
        // One of the two unusable for another reason (no path, no body, a bad expectation).
        (
            "{ name: a, body: {} }".to_owned(),
            format!("{{ name: a, {ok} }}"),
        ),
        (
            format!("{{ name: a, {ok} }}"),
            "{ name: a, path: /v1/x }".to_owned(),
        ),
        (
            format!("{{ name: a, {ok}, expect: {{ status: 1 }} }}"),
            format!("{{ name: a, {ok} }}"),
        ),
    ];
    for (first, second) in cases {
        let yaml = format!("requests:\n  - {first}\n  - {second}\n  - {{ name: b, {ok} }}\n");
        let err = Suite::from_yaml(&yaml).unwrap_err();
        let dups: Vec<&Issue> = err
            .issues
            .iter()
            .filter(|i| i.message.contains("also the name"))
            .collect();
        assert_eq!(dups.len(), 1, "{yaml}\n{err:#?}");
        assert_eq!(dups[0].path, "requests[1].name", "{yaml}");
        assert!(
            dups[0]
                .message
                .starts_with("\"a\" is also the name of requests[0]"),
            "{yaml}\n{err:#?}"
        );
    }
}
