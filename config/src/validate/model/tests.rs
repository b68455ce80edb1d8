use crate::validate::tests::{assert_errors, one_model};
use crate::{parse, Affinity, Cohort, Model, Ppm};

#[test]
fn accepted_model_forms() {
    let stable = r#"stable: {endpoints: ["http://h:1"]}"#;
    let candidate = r#"candidate: {endpoints: ["http://h:2"]}"#;
    type Check = fn(&Model) -> bool;
    let cases: &[(&str, Check)] = &[
        ("weight: 0.1", |m| m.weight.get() == 100_000),
        ("weight: 10%", |m| m.weight.get() == 100_000),
        ("weight: 100000ppm", |m| m.weight.get() == 100_000),
        ("weight: 1", |m| m.weight == Ppm::FULL),
        ("weight: 0", |m| m.weight == Ppm::ZERO),
        ("cohort: {api_key: true}", |m| m.cohort == Cohort::ApiKey),
        ("cohort: {body_field: user}", |m| {
            m.cohort == Cohort::BodyField("user".to_owned())
        }),
        ("affinity: false", |m| m.affinity.is_none()),
        ("affinity: {}", |m| m.affinity == Some(Affinity::default())),
        ("affinity: {load_factor: 1}", |m| {
            m.affinity == Some(Affinity { load_factor: 1.0 })
        }),
        ("shadow: {sample: 0}", |m| {
            m.shadow
                .as_ref()
                .is_some_and(|s| s.sample == Ppm::ZERO && s.max_inflight == 64)
        }),
    ];
    for (extra, check) in cases {
        let yaml = one_model(&format!("{{name: m, {stable}, {candidate}, {extra}}}"));
        let config = parse(&yaml).unwrap_or_else(|e| panic!("{extra}: {e}"));
        assert!(check(&config.models[0]), "{extra}: {:?}", config.models[0]);
    }
}

#[test]
fn each_rule() {
    let ok = r#"stable: {endpoints: ["http://h:1"]}"#;
    let cand = r#"candidate: {endpoints: ["http://h:2"]}"#;
    let model_cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("{{name: m, {ok}, weight: 10%}}"),
            vec![("models[0].weight", "weight 10% needs a candidate")],
        ),
        (
            format!("{{name: m, {ok}, shadow: {{sample: 5%}}}}"),
            vec![("models[0].shadow", "add `candidate`")],
        ),
        (
            format!("{{name: m, {ok}, {cand}, weight: 120%}}"),
            vec![("models[0].weight", "120% is above 100%")],
        ),
        (
            format!("{{name: m, {ok}, {cand}, weight: -1}}"),
            vec![("models[0].weight", "negative")],
        ),
        (
            format!("{{name: m, {ok}, {cand}, shadow: {{}}}}"),
            vec![("models[0].shadow.sample", "required key is missing")],
        ),
        (
            format!("{{name: m, {ok}, {cand}, shadow: {{sample: 1%, timeout: 0s}}}}"),
            vec![("models[0].shadow.timeout", "greater than 0")],
        ),
        (
            format!("{{name: '', {ok}}}"),
            vec![("models[0].name", "must not be empty")],
        ),
        (
            format!("{{name: ' m', {ok}}}"),
            vec![("models[0].name", "whitespace")],
        ),
        (
            format!("{{name: 7, {ok}}}"),
            vec![("models[0].name", "quote it")],
        ),
        (
            "{name: m}".to_owned(),
            vec![("models[0].stable", "required key is missing")],
        ),
        (
            "{name: m, stable: {}}".to_owned(),
            vec![("models[0].stable.endpoints", "required key is missing")],
        ),
        (
            "{name: m, stable: {endpoints: []}}".to_owned(),
            vec![("models[0].stable.endpoints", "at least one endpoint")],
        ),
        (
            "{name: m, stable: {endpoints: \"http://h:1\"}}".to_owned(),
            vec![("models[0].stable.endpoints", "expected a list")],
        ),
        (
            r#"{name: m, stable: {endpoints: ["http://h:1", "http://H:1/"]}}"#.to_owned(),
            vec![(
                "models[0].stable.endpoints[1]",
                "duplicate endpoint http://h:1 (same as endpoints[0])",
            )],
        ),
        (
            r#"{name: m, stable: {endpoints: ["https://h:1"]}}"#.to_owned(),
            vec![(
                "models[0].stable.endpoints[0]",
                "upstream TLS is not supported yet",
            )],
        ),
        (
            r#"{name: m, stable: {endpoints: ["http://h:1/v1"]}}"#.to_owned(),
            vec![("models[0].stable.endpoints[0]", "has a path `/v1`")],
        ),
        (
            format!("{{name: m, {ok}, {cand}, engine: vllm}}"),
            vec![(
                "models[0].engine",
                "unknown key `engine`, expected one of `name`, `default`",
            )],
        ),
        (
            r#"{name: m, stable: {endpoints: ["http://h:1"], engine: vlm}}"#.to_owned(),
            vec![("models[0].stable.engine", "unknown engine `vlm`")],
        ),
        (
            r#"{name: m, stable: {endpoints: ["http://h:1"], revision: ""}}"#.to_owned(),
            vec![("models[0].stable.revision", "must not be empty")],
        ),
        (
            format!("{{name: m, {ok}, cohort: {{}}}}"),
            vec![(
                "models[0].cohort",
                "exactly one of header, api_key or body_field",
            )],
        ),
        (
            format!("{{name: m, {ok}, cohort: {{header: a, body_field: b}}}}"),
            vec![("models[0].cohort", "exactly one")],
        ),
        (
            format!("{{name: m, {ok}, cohort: {{header: 'x user'}}}}"),
            vec![("models[0].cohort.header", "not a valid header name")],
        ),
        (
            format!("{{name: m, {ok}, cohort: {{api_key: false}}}}"),
            vec![("models[0].cohort.api_key", "must be true")],
        ),
        (
            format!("{{name: m, {ok}, cohort: {{user: x}}}}"),
            vec![
                ("models[0].cohort.user", "unknown key `user`"),
                ("models[0].cohort", "exactly one"),
            ],
        ),
        (
            format!("{{name: m, {ok}, affinity: {{load_factor: 0.9}}}}"),
            vec![("models[0].affinity.load_factor", "0.9 is below 1")],
        ),
        (
            format!("{{name: m, {ok}, affinity: yes}}"),
            vec![("models[0].affinity", "expected true, false or a mapping")],
        ),
        (
            format!("{{name: m, {ok}, default: 1}}"),
            vec![("models[0].default", "expected true or false")],
        ),
    ];
    for (model, want) in &model_cases {
        assert_errors(&one_model(model), want);
    }
}

/// A model name is written into /metrics as a label value: characters that would end or
/// escape the label are refused, everything else in real model names is kept.
#[test]
fn model_names_that_would_break_a_metrics_label() {
    let ok = r#"stable: {endpoints: ["http://h:1"]}"#;
    for name in [
        r#"'q"uo\te'"#,
        r#""a\nb""#,
        r#""a\tb""#,
        r#""a\u0000b""#,
        r#"'back\slash'"#,
    ] {
        assert_errors(
            &one_model(&format!("{{name: {name}, {ok}}}")),
            &[("models[0].name", "it would break the Prometheus label")],
        );
    }
    for name in ["\"chat\u{202E}gnp\"", "\"a\u{200B}b\"", "\"\u{FEFF}m\""] {
        assert_errors(
            &one_model(&format!("{{name: {name}, {ok}}}")),
            &[("models[0].name", "an invisible or text-direction character")],
        );
    }
    for name in [
        "meta-llama/Llama-3-8B",
        "org/model:tag",
        "my model v2",
        "模型-7b",
        "café@2024",
    ] {
        let config = parse(&one_model(&format!("{{name: '{name}', {ok}}}")));
        assert_eq!(
            config.unwrap_or_else(|e| panic!("{name}: {e}")).models[0].name,
            name
        );
    }
}

#[test]
fn shadow_max_inflight_is_bounded() {
    let model = |n: &str| {
        one_model(&format!(
            r#"{{name: m, stable: {{endpoints: ["http://h:1"]}}, candidate: {{endpoints: ["http://h:2"]}}, shadow: {{sample: 1%, max_inflight: {n}}}}}"#
        ))
    };
    assert_errors(
        &model("9223372036854775808"),
        &[("models[0].shadow.max_inflight", "is above 1000000")],
    );
    assert_errors(
        &model("18446744073709551616"),
        &[(
            "models[0].shadow.max_inflight",
            "18446744073709551616 is too large",
        )],
    );
    let shadow = parse(&model("1000000")).expect("valid").models[0]
        .shadow
        .clone();
    assert_eq!(shadow.map(|s| s.max_inflight), Some(1_000_000));
}
