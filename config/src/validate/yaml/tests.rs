use super::nesting::flow_depth;
use super::*;
use crate::validate::tests::{assert_errors, errors, one_model};

const MODEL: &str = r#"{name: a, stable: {endpoints: ["http://h:1"]}}"#;

/// The single document-level error for `yaml`.
fn document_error(yaml: &str) -> String {
    let got = errors(yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "", "{got:?}");
    got[0].1.clone()
}

#[test]
fn deep_flow_nesting_is_refused_before_parsing() {
    // libyaml would take minutes on this; the scan stops at the 65th `[`.
    assert_eq!(flow_depth(&"[".repeat(200_000), MAX_NESTING), (65, 1));
    let message = document_error(&"[".repeat(200_000));
    assert_eq!(
        message,
        "invalid YAML: `[`/`{` nested deeper than 64 levels at line 1"
    );
    let message = document_error(&format!("listen: x\nmodels: {}", "{a: ".repeat(40_000)));
    assert!(message.ends_with("at line 2"), "{message}");
    let message = document_error(&format!("a: 1\n{}", "[\n".repeat(1000)));
    assert!(message.ends_with("at line 66"), "{message}");
    // Exactly at the bound, the parser decides (here: the nesting is unclosed).
    let at_bound = "[".repeat(MAX_NESTING);
    assert_eq!(flow_depth(&at_bound, MAX_NESTING), (64, 1));
    assert!(!document_error(&at_bound).contains("nested deeper"));
}

#[test]
fn brackets_that_open_nothing_are_not_counted() {
    let deep = "[".repeat(100);
    let cases = [
        format!("q: '{deep}'"),
        format!("q: \"{deep}\\\" {deep}\""),
        format!("q: 'it''s {deep}'"),
        format!("# {deep}\nq: 1"),
        format!("q: 1 # {deep}"),
        format!("q: rate(x{deep})"),
        format!("q: a\n  {deep}\nr: 1"),
        format!("q: |\n  {deep}\n\n  {deep}\nr: 1"),
        format!("q: >-\n    {deep}\n\n    {deep}\nr: 1"),
        format!("- |2\n   {deep}\n- b"),
        format!("q: [a, '{deep}', \"{deep}\"]"),
    ];
    for text in cases {
        let (depth, _) = flow_depth(&text, MAX_NESTING);
        assert!(depth <= 1, "{text:?}: {depth}");
        assert!(
            serde_yaml_ng::from_str::<Value>(&text).is_ok(),
            "not YAML: {text:?}"
        );
    }
}

#[test]
fn brackets_that_open_collections_are_counted() {
    let deep = "[".repeat(100);
    let cases = [
        // A quote inside a plain scalar opens no string.
        format!("a: it's\nb: {deep}"),
        format!("[a 'b, {deep}"),
        format!("a: x\"y\nb: {deep}"),
        // The block scalar ends before a line at or left of its parent's indentation.
        format!("a: |\n  text\nb: {deep}"),
        format!("- key: |\n  other: {deep}"),
        // A plain scalar does not continue left of its mapping.
        format!("  a: x\n  b: {deep}"),
        // libyaml breaks lines at LS, PS and NEL, so they end a comment.
        format!("# x\u{2028}{deep}"),
        format!("# x\u{85}{deep}"),
        format!("a: 'x'{deep}"),
        format!("{{a: b}}{deep}"),
        format!("--- {deep}"),
    ];
    for text in cases {
        let (depth, _) = flow_depth(&text, MAX_NESTING);
        assert!(depth > MAX_NESTING, "{text:?}: {depth}");
    }
}

/// Small random documents that serde_yaml_ng reads as one flow sequence: the scan never
/// reports less nesting than the value has.
#[test]
fn the_scan_never_undercounts_what_libyaml_reads() {
    let alphabet = b"[[]]{}},,:: aaa'\"#\n-?|\\!&";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut checked = 0;
    for _ in 0..100_000 {
        let len = 1 + (next() % 24) as usize;
        let mut text = String::from("[");
        for _ in 0..len {
            text.push(char::from(
                alphabet[(next() % alphabet.len() as u64) as usize],
            ));
        }
        let Ok(value @ Value::Sequence(_)) = serde_yaml_ng::from_str::<Value>(&text) else {
            continue;
        };
        checked += 1;
        let (depth, _) = flow_depth(&text, MAX_NESTING);
        assert!(
            depth >= value_depth(&value),
            "{text:?}: {depth} < {value:?}"
        );
    }
    assert!(checked > 1000, "only {checked} documents parsed");
}

/// Flow levels the value needs at least: `[a: b]` and `[? a]` hold a one-pair mapping that
/// opens no level of its own.
fn value_depth(value: &Value) -> usize {
    match value {
        Value::Sequence(items) => {
            let pair = |v: &Value| match v {
                Value::Mapping(m) if m.len() == 1 => m
                    .iter()
                    .map(|(k, v)| value_depth(k).max(value_depth(v)))
                    .max(),
                _ => None,
            };
            let inner = items
                .iter()
                .map(|v| pair(v).unwrap_or_else(|| value_depth(v)));
            1 + inner.max().unwrap_or(0)
        }
        Value::Mapping(map) => {
            let inner = map.iter().map(|(k, v)| value_depth(k).max(value_depth(v)));
            1 + inner.max().unwrap_or(0)
        }
        Value::Tagged(t) => value_depth(&t.value),
        _ => 0,
    }
}

#[test]
fn a_huge_file_is_refused_by_size() {
    let text = format!("# {}\n", "x".repeat(MAX_CONFIG_BYTES));
    let message = document_error(&text);
    assert!(
        message.contains("at most 67108864 bytes (64 MiB)"),
        "{message}"
    );
}

#[test]
fn a_byte_order_mark_is_ignored() {
    let config = crate::parse(&format!("\u{feff}{}", one_model(MODEL)));
    assert_eq!(config.expect("valid").models[0].name, "a");
}

#[test]
fn tabs_get_a_hint() {
    let message = document_error("listen: 0.0.0.0:8080\nmodels:\n\t- name: a\n");
    assert!(
        message.contains("at line 3 column 1")
            && message.ends_with("YAML does not allow tabs for indentation, use spaces"),
        "{message}"
    );
    // Other syntax errors get no hint.
    assert!(!document_error("listen: [\n").contains("tabs"));
}

#[test]
fn a_duplicate_key_is_reported_at_its_own_line() {
    assert_errors(
        "listen: 0.0.0.0:8080\nmodels: []\nenv: a\nenv: b\n",
        &[
            (
                "env",
                "duplicate key at line 4 column 1; the first is at line 3",
            ),
            ("models", "at least one model is required"),
        ],
    );
    assert_errors(
        "listen: x\nmodels:\n  - name: a\n    stable: {}\n    name: b\n",
        &[
            (
                "models[0].name",
                "duplicate key at line 5 column 5; the first is at line 3",
            ),
            ("listen", "is not an address"),
            ("models[0].stable.endpoints", "required key is missing"),
        ],
    );
    // A key that is not a string is named in the message, under its mapping's path.
    let got = errors("a: {1: x, 1: y}\n");
    assert_eq!(
        got[0],
        (
            "a".to_owned(),
            "duplicate key 1 at line 1 column 11; the first is at line 1".to_owned()
        )
    );
}

/// A duplicate key used to stop the parse and hide every other error.
#[test]
fn a_duplicate_key_is_one_error_among_others() {
    let yaml = "listen: nowhere\nworkers: 2\nworkers: 3\ndrain_timeout: 5\nmodels:\n  - name: a\n    stable: { endpoints: [\"ftp://h:1\"] }\n    weight: 120%\n";
    assert_errors(
        yaml,
        &[
            (
                "workers",
                "duplicate key at line 3 column 1; the first is at line 2",
            ),
            ("listen", "is not an address"),
            ("drain_timeout", "has no unit"),
            ("models[0].stable.endpoints[0]", "unsupported scheme `ftp`"),
            ("models[0].weight", "above 100%"),
        ],
    );
    // Every duplicate is reported, nested ones and ones inside a dropped value included.
    let yaml = "listen: 0.0.0.0:8080\nmodels:\n  - name: a\n    stable: { endpoints: [\"http://h:1\"] }\n    stable: { engine: vllm, engine: tgi }\n";
    assert_errors(
        yaml,
        &[
            (
                "models[0].stable",
                "at line 5 column 5; the first is at line 4",
            ),
            (
                "models[0].stable.engine",
                "at line 5 column 29; the first is at line 5",
            ),
        ],
    );
}

#[test]
fn a_duplicate_in_an_anchor_is_reported_once() {
    let yaml = "x-b: &b { engine: vllm, engine: tgi }\nlisten: 0.0.0.0:8080\nmodels:\n  - { name: a, stable: { <<: *b, endpoints: [\"http://h:1\"] } }\n  - { name: b, stable: { <<: *b, endpoints: [\"http://h:2\"] } }\n";
    assert_errors(yaml, &[("x-b.engine", "at line 1 column 25")]);
}

#[test]
fn an_out_of_range_integer_is_one_error_among_others() {
    let yaml = "listen: 0.0.0.0:8080\nworkers: -99999999999999999999\ndrain_timeout: 18446744073709551616\nmodels: [{name: a, stable: {endpoints: ['http://h:1']}, candidate: {endpoints: ['http://h:2']}, shadow: {sample: 1%, max_inflight: 18446744073709551616}}, {name: 99999999999999999999999, stable: 1}]\n";
    assert_errors(
        yaml,
        &[
            (
                "workers",
                "expected a non-negative whole number, found the number -99999999999999999999",
            ),
            ("drain_timeout", "`18446744073709551616` has no unit"),
            (
                "models[0].shadow.max_inflight",
                "18446744073709551616 is too large",
            ),
            (
                "models[1].name",
                "expected a string, found the number 99999999999999999999999; quote it",
            ),
            ("models[1].stable", "expected a mapping, found the number 1"),
        ],
    );
}

#[test]
fn top_level_x_keys_hold_anchors() {
    let yaml = r#"
x-backend: &backend { endpoints: ["http://h:1"], engine: vllm }
x-anything: [1, 2]
x-vllm: &vllm { engine: vllm }
listen: 0.0.0.0:8080
models:
  - { name: a, stable: *backend }
  - { name: b, stable: { <<: *vllm, endpoints: ["http://h:2"] } }
"#;
    let config = crate::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.models[0].stable.engine, crate::Engine::Vllm);
    assert_eq!(config.models[1].stable.engine, crate::Engine::Vllm);
    // Only at the top level.
    assert_errors(
        &one_model(r#"{name: a, x-note: 1, stable: {endpoints: ["http://h:1"]}}"#),
        &[("models[0].x-note", "unknown key `x-note`")],
    );
}
