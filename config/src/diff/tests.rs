use super::*;
use crate::parse;

const BASE: &str = r#"
listen: 0.0.0.0:8080
models:
  - name: chat-small
    stable: { endpoints: ["http://10.0.0.1:8000"], engine: vllm, revision: v1 }
    candidate: { endpoints: ["http://10.0.0.2:8000"], engine: vllm, revision: v2 }
    weight: 10%
    shadow: { sample: 5% }
  - name: embed
    stable: { endpoints: ["http://10.0.1.1:8000"] }
"#;

fn config(yaml: &str) -> Config {
    parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// The changes from `BASE` to `BASE` with `from` replaced by `to`, one line each.
fn lines_after(from: &str, to: &str) -> Vec<String> {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    let new = config(&BASE.replacen(from, to, 1));
    diff(&config(BASE), &new)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn equal_configs_have_no_changes() {
    assert_eq!(diff(&config(BASE), &config(BASE)), Vec::new());
}

#[test]
fn changes_one_line_each() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("weight: 10%", "weight: 30%", &["models[chat-small].weight: 10% -> 30%"]),
        (
            "listen: 0.0.0.0:8080",
            "listen: 0.0.0.0:9000",
            &["listen: 0.0.0.0:8080 -> 0.0.0.0:9000 (restart required)"],
        ),
        (
            "listen: 0.0.0.0:8080",
            "listen: 0.0.0.0:8080\nworkers: 2\nlimits: { max_body: 1MiB }\ndrain_timeout: 5s",
            &[
                "workers: 0 -> 2 (restart required)",
                "limits.max_body: 64MiB -> 1MiB",
                "drain_timeout: 30s -> 5s (restart required)",
            ],
        ),
        (
            "revision: v2",
            "revision: v3",
            &["models[chat-small].candidate.revision: v2 -> v3"],
        ),
        (
            r#"endpoints: ["http://10.0.0.1:8000"], engine: vllm, revision: v1"#,
            r#"endpoints: ["http://10.0.0.1:8000", "http://10.0.0.3:8000"], engine: sglang, revision: v1"#,
            &[
                "models[chat-small].stable.endpoints: [http://10.0.0.1:8000] -> [http://10.0.0.1:8000, http://10.0.0.3:8000]",
                "models[chat-small].stable.engine: vllm -> sglang",
            ],
        ),
        (
            "    candidate: { endpoints: [\"http://10.0.0.2:8000\"], engine: vllm, revision: v2 }\n    weight: 10%\n    shadow: { sample: 5% }\n",
            "",
            &[
                "models[chat-small].candidate: removed (vllm v2 [http://10.0.0.2:8000])",
                "models[chat-small].weight: 10% -> 0%",
                "models[chat-small].shadow: removed (sample 5%)",
            ],
        ),
        (
            "shadow: { sample: 5% }",
            "shadow: { sample: 20%, timeout: 5s }\n    cohort: { header: x-user-id }\n    affinity: true",
            &[
                "models[chat-small].cohort: random -> header x-user-id",
                "models[chat-small].shadow.sample: 5% -> 20%",
                "models[chat-small].shadow.timeout: 60s -> 5s",
                "models[chat-small].affinity: added (load_factor 1.25)",
            ],
        ),
        (
            "  - name: embed\n    stable: { endpoints: [\"http://10.0.1.1:8000\"] }\n",
            "  - name: rerank\n    default: true\n    stable: { endpoints: [\"http://10.0.2.1:8000\"], engine: tgi }\n",
            &[
                "models[embed]: removed (stable openai [http://10.0.1.1:8000])",
                "models[rerank]: added (stable tgi [http://10.0.2.1:8000])",
            ],
        ),
    ];
    for (from, to, want) in cases {
        assert_eq!(lines_after(from, to), *want, "{from:?} -> {to:?}");
    }
}

#[test]
fn candidate_added_and_restart_flags() {
    let old = config(BASE);
    let new = config(&BASE.replacen(
        "    stable: { endpoints: [\"http://10.0.1.1:8000\"] }\n",
        "    stable: { endpoints: [\"http://10.0.1.1:8000\"] }\n    candidate: { endpoints: [\"http://10.0.1.2:8000\"], revision: r2 }\n    weight: 1%\n",
        1,
    ));
    let changes = diff(&old, &new);
    let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "models[embed].candidate: added (openai r2 [http://10.0.1.2:8000])",
            "models[embed].weight: 0% -> 1%",
        ]
    );
    assert!(changes.iter().all(|c| !c.restart_required));
    assert_eq!(
        changes[1].kind,
        ChangeKind::Changed {
            old: "0%".to_owned(),
            new: "1%".to_owned()
        }
    );
}

#[test]
fn reordering_models_is_not_a_change() {
    let reordered = r#"
listen: 0.0.0.0:8080
models:
  - name: embed
    stable: { endpoints: ["http://10.0.1.1:8000"] }
  - name: chat-small
    stable: { endpoints: ["http://10.0.0.1:8000"], engine: vllm, revision: v1 }
    candidate: { endpoints: ["http://10.0.0.2:8000"], engine: vllm, revision: v2 }
    weight: 10%
    shadow: { sample: 5% }
"#;
    assert_eq!(diff(&config(BASE), &config(reordered)), Vec::new());
}

const ROLLOUT: &str = r#"
listen: 0.0.0.0:8080
models:
  - name: chat
    stable: { endpoints: ["http://10.0.0.1:8000"], engine: vllm, revision: v1, artifact: "hf://org/m@a1", runtime: "img@sha256:1" }
    candidate: { endpoints: ["http://10.0.0.2:8000"], engine: vllm, revision: v2, artifact: "hf://org/m@a2", runtime: "img@sha256:1" }
    rollout:
      steps: [{ weight: 10%, for: 1m }, { weight: 50%, for: 1m }]
      gates:
        error_rate: { max: 1% }
        latency_p99: { max: 2s }
        promql: { url: "http://prom:9090", queries: [{ name: a, query: up, max: 1 }] }
"#;

/// Inside a rollout plan each part is its own line, so a PR diff shows exactly what moved.
#[test]
fn rollout_parts_one_line_each() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[{ weight: 10%, for: 1m }, { weight: 50%, for: 1m }]",
            "[{ weight: 10%, for: 1m }, { weight: 25%, for: 2m }, { weight: 50%, for: 1m }]",
            &["models[chat].rollout.steps: [10%/60s, 50%/60s] -> [10%/60s, 25%/120s, 50%/60s]"],
        ),
        (
            "        latency_p99: { max: 2s }\n",
            "        latency_p99: { max: 1500ms, max_ratio_vs_stable: 1.2 }\n        ttft_p95: { max: 800ms }\n",
            &[
                "models[chat].rollout.gates.latency_p99: max 2s -> max 1.5s, max_ratio_vs_stable 1.2",
                "models[chat].rollout.gates.ttft_p95: added (max 800ms)",
            ],
        ),
        (
            "        error_rate: { max: 1% }\n",
            "",
            &["models[chat].rollout.gates.error_rate: removed (max 1%)"],
        ),
        (
            "queries: [{ name: a, query: up, max: 1 }]",
            "queries: [{ name: b, query: up, min: 1 }, { name: a, query: up, max: 2 }]",
            &[
                "models[chat].rollout.gates.promql.queries[b]: added (up, min 1)",
                "models[chat].rollout.gates.promql.queries[a]: up, max 1 -> up, max 2",
            ],
        ),
        (
            "artifact: \"hf://org/m@a2\", runtime: \"img@sha256:1\"",
            "artifact: \"hf://org/m@a3\", runtime: \"img@sha256:2\", gpu_metrics: [\"http://10.0.0.9:9400\"]",
            &[
                "models[chat].candidate.artifact: hf://org/m@a2 -> hf://org/m@a3",
                "models[chat].candidate.runtime: img@sha256:1 -> img@sha256:2",
                "models[chat].candidate.gpu_metrics: [] -> [http://10.0.0.9:9400/metrics]",
            ],
        ),
        (
            "listen: 0.0.0.0:8080",
            "listen: 0.0.0.0:8080\nenv: prod\nstate_dir: /var/lib/rollgate\npolicy: { max_step: 25%, require_gates: { prod: [error_rate] } }",
            &[
                "state_dir: none -> /var/lib/rollgate (restart required)",
                "env: none -> prod",
                "policy.max_step: none -> 25%",
                "policy.require_gates: {} -> {prod: [error_rate]}",
            ],
        ),
        (
            "      steps:",
            "      approval: manual\n      min_samples: 50\n      steps:",
            &[
                "models[chat].rollout.min_samples: 200 -> 50",
                "models[chat].rollout.approval: auto -> manual",
            ],
        ),
    ];
    let old = config(ROLLOUT);
    for (from, to, want) in cases {
        assert!(ROLLOUT.contains(from), "{from:?}");
        let new = config(&ROLLOUT.replacen(from, to, 1));
        let got: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(got, *want, "{from:?} -> {to:?}");
    }
}

#[test]
fn admin_and_gitops_changes_are_listed_and_need_a_restart() {
    let old = config(BASE);
    let new = config(&BASE.replacen(
        "listen: 0.0.0.0:8080\n",
        "listen: 0.0.0.0:8080\nadmin: { tokens: [{ name: ops, file: /run/ops, roles: [operate] }], sync_pause_approvers: 2, protect_reads: true }\ngitops: { flux_events_url: \"http://notification-controller.flux-system/\" }\nupstream: { response_timeout: 30s, pool_max_idle: 8 }\n",
        1,
    ));
    let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "admin.tokens: [] -> [ops (/run/ops, operate)] (restart required)",
            "admin.sync_pause_approvers: 1 -> 2 (restart required)",
            "admin.protect_reads: false -> true (restart required)",
            "upstream.response_timeout: 300s -> 30s",
            "upstream.pool_max_idle: 128 -> 8 (restart required)",
            "gitops.flux_events_url: none -> http://notification-controller.flux-system/ (restart required)",
        ]
    );
}
