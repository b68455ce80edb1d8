use std::time::Duration;

use crate::{parse, Approval, OnMetricErrors, Ppm};

fn model_with(rollout: &str) -> String {
    format!(
        "listen: 127.0.0.1:8080\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    candidate: {{ endpoints: [\"http://127.0.0.1:2\"], revision: v2, engine: vllm, gpu_metrics: [\"http://127.0.0.1:9400\"] }}\n    rollout:\n{rollout}"
    )
}

#[test]
fn the_documented_rollout_parses() {
    let yaml = model_with(
        "      synthetic: { suite: golden/chat-small.yaml, every: 30s }
      shadow:    { sample: 20%, for: 2m, min_pairs: 200 }
      steps:     [ {weight: 1%, for: 1m}, {weight: 5%, for: 2m}, {weight: 25%, for: 5m}, {weight: 50%, for: 5m} ]
      gates:
        error_rate:      { max: 1%, max_vs_stable: +0.5% }
        latency_p99:     { max: 2s, max_ratio_vs_stable: 1.2 }
        ttft_p95:        { max: 800ms }
        queue_time_p95:  { max: 500ms }
        gpu_memory_used: { max: 92% }
        correctness:     { min: 0.98 }
      min_samples: 200
      metric_errors: { limit: 4, then: hold }
      approval: manual
",
    );
    let config = parse(&yaml).expect("valid");
    let r = config.models[0].rollout.as_ref().expect("rollout");
    assert_eq!(r.steps.len(), 4);
    assert_eq!(r.steps[2].weight, Ppm::new(250_000).expect("ppm"));
    assert_eq!(r.steps[0].duration, Duration::from_secs(60));
    let shadow = r.shadow.as_ref().expect("shadow");
    assert_eq!(
        (shadow.sample.get(), shadow.duration, shadow.min_pairs),
        (200_000, Duration::from_secs(120), 200)
    );
    let e = r.gates.error_rate.as_ref().expect("error gate");
    assert_eq!(
        (e.max.map(Ppm::get), e.max_vs_stable.map(Ppm::get)),
        (Some(10_000), Some(5_000))
    );
    assert_eq!(
        r.gates
            .latency_p99
            .as_ref()
            .and_then(|l| l.max_ratio_vs_stable),
        Some(1.2)
    );
    assert_eq!(
        r.gates.gpu_memory_used.as_ref().map(|g| g.max.get()),
        Some(920_000)
    );
    assert!((r.gates.correctness.as_ref().expect("correctness").min - 0.98).abs() < 1e-12);
    assert_eq!(
        (r.metric_errors.limit, r.metric_errors.then),
        (4, OnMetricErrors::Hold)
    );
    assert_eq!(r.approval, Approval::Manual);
    assert_eq!(
        r.synthetic.as_ref().map(|s| s.every),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn defaults_apply_to_an_empty_rollout() {
    let config = parse(&model_with("      steps: [ {weight: 50%, for: 10s} ]\n")).expect("valid");
    let r = config.models[0].rollout.as_ref().expect("rollout");
    assert_eq!(r.min_samples, 200);
    assert_eq!(r.approval, Approval::Auto);
    assert_eq!(r.metric_errors.then, OnMetricErrors::Hold);
    assert_eq!(r.cooldown, Duration::from_secs(300));
    assert!(r.gates.error_rate.is_none());
}

#[test]
fn every_rollout_mistake_is_reported_with_its_path() {
    let yaml = model_with(
        "      steps: [ {weight: 10%, for: 1m}, {weight: 5%, for: 1m}, {weight: 0, for: 0s} ]
      gates:
        error_rate: { max_vs_stable: -1% }
        latency_p99: { max_ratio_vs_stable: 0.5 }
        ttft_p95: {}
        gpu_memory_used: { max: 120% }
        bogus: { max: 1 }
      metric_errors: { then: explode }
      approval: sometimes
      shadow: { for: 1m }
",
    );
    let errors = parse(&yaml).expect_err("invalid");
    let text = errors.to_string();
    for path in [
        "models[0].rollout.steps[1].weight",
        "models[0].rollout.steps[2].weight",
        "models[0].rollout.steps[2].for",
        "models[0].rollout.gates.error_rate.max_vs_stable",
        "models[0].rollout.gates.latency_p99.max_ratio_vs_stable",
        "models[0].rollout.gates.ttft_p95",
        "models[0].rollout.gates.gpu_memory_used.max",
        "models[0].rollout.gates.bogus",
        "models[0].rollout.metric_errors.then",
        "models[0].rollout.approval",
        "models[0].rollout.shadow.sample",
    ] {
        assert!(
            text.contains(&format!("{path}:")),
            "missing {path} in:\n{text}"
        );
    }
}

#[test]
fn a_rollout_needs_a_candidate() {
    let yaml = "listen: 127.0.0.1:8080\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    rollout: { steps: [ {weight: 10%, for: 1m} ] }\n";
    let text = parse(yaml).expect_err("invalid").to_string();
    assert!(
        text.contains("models[0].rollout: a rollout delivers a candidate"),
        "{text}"
    );
}

#[test]
fn gpu_metrics_pages_default_to_the_metrics_path() {
    let yaml = "listen: 127.0.0.1:8080\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    candidate: { endpoints: [\"http://127.0.0.1:2\"], gpu_metrics: [\"http://10.0.0.9:9401\", \"http://10.0.0.9:9400/custom\"] }\n";
    let config = parse(yaml).expect("valid");
    let pages: Vec<&str> = config.models[0]
        .candidate
        .as_ref()
        .expect("candidate")
        .gpu_metrics
        .iter()
        .map(|e| e.url.as_str())
        .collect();
    assert_eq!(
        pages,
        [
            "http://10.0.0.9:9401/metrics",
            "http://10.0.0.9:9400/custom"
        ]
    );
    let bad = yaml.replace("http://10.0.0.9:9401", "ftp://x");
    assert!(parse(&bad)
        .expect_err("invalid")
        .to_string()
        .contains("models[0].candidate.gpu_metrics[0]"));
}

/// A gate on a signal nothing provides would only ever be inconclusive: each is refused with
/// its path, and the same gate with a source is accepted.
#[test]
fn gates_need_a_signal_source() {
    let model = |candidate: &str, rollout: &str| {
        format!(
            "listen: 127.0.0.1:8080\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"http://127.0.0.1:1\"] }}\n    candidate: {{ endpoints: [\"http://127.0.0.1:2\"]{candidate} }}\n    rollout: {rollout}\n"
        )
    };
    let queue = "{ gates: { queue_time_p95: { max: 500ms } } }";
    let gpu = "{ gates: { gpu_memory_used: { max: 92% } } }";
    let correct = "{ gates: { correctness: { min: 0.9 } } }";
    let promql_empty = "{ gates: { promql: { url: \"http://prom:9090\", queries: [] } } }";
    let promql_no_url = "{ gates: { promql: { queries: [{ name: a, query: up, max: 1 }] } } }";
    let promql_dup = "{ gates: { promql: { url: \"http://prom:9090\", queries: [{ name: a, query: up, max: 1 }, { name: a, query: up, min: 1 }] } } }";
    let invalid: &[(&str, &str, &str, &str)] = &[
        (
            ", engine: sglang",
            queue,
            "models[0].rollout.gates.queue_time_p95",
            "engine `sglang` reports no queue-time",
        ),
        (
            ", engine: triton",
            queue,
            "models[0].rollout.gates.queue_time_p95",
            "engine `triton` reports no queue-time",
        ),
        (
            "",
            queue,
            "models[0].rollout.gates.queue_time_p95",
            "engine `openai`",
        ),
        (
            ", engine: vllm",
            gpu,
            "models[0].rollout.gates.gpu_memory_used",
            "no GPU memory source",
        ),
        (
            "",
            correct,
            "models[0].rollout.gates.correctness",
            "add `rollout.shadow` or `rollout.synthetic`",
        ),
        (
            "",
            promql_empty,
            "models[0].rollout.gates.promql.queries",
            "at least one query",
        ),
        (
            "",
            promql_no_url,
            "models[0].rollout.gates.promql.url",
            "required key is missing",
        ),
        (
            "",
            promql_dup,
            "models[0].rollout.gates.promql.queries[1].name",
            "duplicate query name `a` (also queries[0])",
        ),
    ];
    for (candidate, rollout, path, text) in invalid {
        crate::validate::tests::assert_errors(&model(candidate, rollout), &[(path, text)]);
    }
    let valid: &[(&str, &str)] = &[
        (", engine: vllm", queue),
        (", engine: tgi", queue),
        (", engine: triton", gpu),
        (", engine: vllm, gpu_metrics: [\"http://10.0.0.9:9400\"]", gpu),
        ("", "{ shadow: { sample: 10% }, gates: { correctness: { min: 0.9 } } }"),
        ("", "{ synthetic: { suite: g.yaml }, gates: { correctness: { min: 0.9 } } }"),
        ("", "{ gates: { ttft_p95: { max: 1s }, latency_p99: { max: 2s }, error_rate: { max: 1% } } }"),
    ];
    for (candidate, rollout) in valid {
        let yaml = model(candidate, rollout);
        parse(&yaml).unwrap_or_else(|e| panic!("{yaml}\n{e}"));
    }
}

/// A mistake elsewhere in the rollout (here `cooldown: 5`) no longer hides the gates' signal
/// errors: all four come in one pass.
#[test]
fn a_broken_rollout_still_reports_its_gate_signals() {
    let yaml = "listen: 127.0.0.1:8080\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    candidate: { endpoints: [\"http://127.0.0.1:2\"], engine: sglang }\n    rollout: { cooldown: 5, gates: { queue_time_p95: {max: 1s}, gpu_memory_used: {max: 92%}, correctness: {min: 99%} } }\n";
    crate::validate::tests::assert_errors(
        yaml,
        &[
            ("models[0].rollout.cooldown", "`5` has no unit"),
            (
                "models[0].rollout.gates.queue_time_p95",
                "reports no queue-time",
            ),
            (
                "models[0].rollout.gates.gpu_memory_used",
                "no GPU memory source",
            ),
            (
                "models[0].rollout.gates.correctness",
                "add `rollout.shadow`",
            ),
        ],
    );
    // A candidate engine that does not parse is reported once, not again by each gate.
    let yaml = yaml.replace("engine: sglang", "engine: vlm");
    crate::validate::tests::assert_errors(
        &yaml,
        &[
            ("models[0].candidate.engine", "unknown engine `vlm`"),
            ("models[0].rollout.cooldown", "`5` has no unit"),
            (
                "models[0].rollout.gates.correctness",
                "add `rollout.shadow`",
            ),
        ],
    );
}

#[test]
fn promql_queries_that_cannot_work_are_refused() {
    let promql = |queries: &str| {
        model_with(&format!(
            "      gates: {{ promql: {{ url: \"http://prom:9090\", queries: [{queries}] }} }}\n"
        ))
    };
    let q = "models[0].rollout.gates.promql.queries";
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            // The duplicate is reported even though the first query has no bound.
            "{name: a, query: up}, {name: a, query: up, max: 1}",
            &[
                ("[0]", "set max, min or both"),
                ("[1].name", "duplicate query name `a` (also queries[0])"),
            ],
        ),
        (
            "{name: a, query: up, min: 5, max: 1}",
            &[("[0].min", "5 is above max 1; the query could never pass")],
        ),
        (
            "{name: '', query: ' '}",
            &[
                ("[0].name", "must not be empty"),
                ("[0].query", "must not be empty"),
            ],
        ),
    ];
    for (queries, want) in cases {
        let want: Vec<(String, &str)> = want.iter().map(|(p, m)| (format!("{q}{p}"), *m)).collect();
        let want: Vec<(&str, &str)> = want.iter().map(|(p, m)| (p.as_str(), *m)).collect();
        crate::validate::tests::assert_errors(&promql(queries), &want);
    }
    // A query that can pass only at one value is allowed.
    parse(&promql("{name: a, query: up, min: 1, max: 1}")).unwrap_or_else(|e| panic!("{e}"));
}
