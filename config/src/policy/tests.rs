use super::*;
use crate::parse;

/// A prod config: the policy turned fully on, and one model whose candidate is written in.
fn config(top: &str, candidate: &str, rest: &str) -> Config {
    let yaml = format!(
        "listen: 0.0.0.0:8080\n{top}\nmodels:\n  - name: chat\n    stable: {{ endpoints: [\"http://10.0.0.1:8000\"], revision: v1, artifact: \"hf://org/m@aaa111\", runtime: \"vllm/vllm-openai@sha256:{DIGEST}\" }}\n    candidate: {{ endpoints: [\"http://10.0.0.2:8000\"]{candidate} }}\n{rest}"
    );
    parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A candidate that changes the artifact only, immutably.
fn good_candidate() -> String {
    format!(", revision: v2, artifact: \"hf://org/m@bbb222\", runtime: \"vllm/vllm-openai@sha256:{DIGEST}\"")
}

const GOOD_ROLLOUT: &str = "    rollout: { steps: [{ weight: 10%, for: 1m }, { weight: 30%, for: 1m }, { weight: 50%, for: 1m }], gates: { error_rate: { max: 1% }, latency_p99: { max: 2s } }, approval: manual }\n";

fn rules(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.rule).collect()
}

/// Each rule: a passing case and a failing case, judged alone (the policy sets just that rule).
#[test]
fn each_rule_passes_and_fails() {
    let good = good_candidate();
    type Case<'a> = (&'a str, &'a str, String, &'a str, &'a [&'a str], &'a str);
    let cases: Vec<Case<'_>> = vec![
        // (name, policy, candidate, rollout, want rules, text in the first message)
        (
            "steps within max_step",
            "policy: { max_step: 25% }",
            good.clone(),
            GOOD_ROLLOUT,
            &[],
            "",
        ),
        (
            "a step above max_step",
            "policy: { max_step: 25% }",
            good.clone(),
            "    rollout: { steps: [{ weight: 10%, for: 1m }, { weight: 50%, for: 1m }] }\n",
            &["max_step"],
            "rollout.steps[1]: 10% -> 50% rises by 40%, above max_step 25%",
        ),
        (
            "the first step counts from 0%",
            "policy: { max_step: 25% }",
            good.clone(),
            "    rollout: { steps: [{ weight: 30%, for: 1m }] }\n",
            &["max_step"],
            "rollout.steps[0]: 0% -> 30%",
        ),
        (
            "a new candidate's weight counts from 0%",
            "policy: { max_step: 25% }",
            good.clone(),
            "    weight: 40%\n",
            &["max_step"],
            "weight: 0% -> 40% rises by 40%",
        ),
        (
            "gates present for prod",
            "env: prod\npolicy: { require_gates: { prod: [error_rate, latency_p99] } }",
            good.clone(),
            GOOD_ROLLOUT,
            &[],
            "",
        ),
        (
            "a gate missing for prod",
            "env: prod\npolicy: { require_gates: { prod: [error_rate, ttft_p95, latency_p99] } }",
            good.clone(),
            GOOD_ROLLOUT,
            &["require_gates"],
            "env prod requires gates ttft_p95 in rollout.gates",
        ),
        (
            "no rollout in prod",
            "env: prod\npolicy: { require_gates: { prod: [error_rate] } }",
            good.clone(),
            "",
            &["require_gates"],
            "no rollout plan",
        ),
        (
            "gates for another env",
            "env: staging\npolicy: { require_gates: { prod: [ttft_p95] } }",
            good.clone(),
            GOOD_ROLLOUT,
            &[],
            "",
        ),
        (
            "manual approval in prod",
            "env: prod\npolicy: { require_approval: [prod] }",
            good.clone(),
            GOOD_ROLLOUT,
            &[],
            "",
        ),
        (
            "auto approval in prod",
            "env: prod\npolicy: { require_approval: [prod] }",
            good.clone(),
            "    rollout: { steps: [{ weight: 10%, for: 1m }] }\n",
            &["require_approval"],
            "env prod requires rollout.approval: manual",
        ),
        (
            "auto approval in staging",
            "env: staging\npolicy: { require_approval: [prod] }",
            good.clone(),
            "    rollout: { steps: [{ weight: 10%, for: 1m }] }\n",
            &[],
            "",
        ),
        (
            "pinned candidate",
            "policy: { immutable_candidates: true }",
            good.clone(),
            "",
            &[],
            "",
        ),
        (
            "latest revision",
            "policy: { immutable_candidates: true }",
            ", revision: latest".to_owned(),
            "",
            &["immutable_candidates"],
            "candidate.revision: `latest` is a mutable reference",
        ),
        (
            "artifact on a branch",
            "policy: { immutable_candidates: true }",
            ", artifact: \"hf://org/m@main\"".to_owned(),
            "",
            &["immutable_candidates"],
            "candidate.artifact: `hf://org/m@main` names the moving reference `main`",
        ),
        (
            "hf artifact without a commit",
            "policy: { immutable_candidates: true }",
            ", artifact: \"hf://org/m\"".to_owned(),
            "",
            &["immutable_candidates"],
            "has no `@<commit>`",
        ),
        (
            "runtime by tag",
            "policy: { immutable_candidates: true }",
            ", runtime: \"vllm/vllm-openai:v0.6.3\"".to_owned(),
            "",
            &["immutable_candidates"],
            "candidate.runtime: `vllm/vllm-openai:v0.6.3` is not pinned by digest",
        ),
        (
            "artifact change only",
            "policy: { one_change_per_rollout: true }",
            good.clone(),
            "",
            &[],
            "",
        ),
        (
            "artifact and runtime at once",
            "policy: { one_change_per_rollout: true }",
            format!(
                ", artifact: \"hf://org/m@bbb222\", runtime: \"vllm/vllm-openai@sha256:{}\"",
                "f".repeat(64)
            ),
            "",
            &["one_change_per_rollout"],
            "candidate changes both artifact (hf://org/m@aaa111 -> hf://org/m@bbb222) and runtime",
        ),
    ];
    for (name, top, candidate, rollout, want, text) in &cases {
        let new = config(top, candidate, rollout);
        let got = check(None, &new);
        assert_eq!(rules(&got), *want, "{name}: {got:#?}");
        if let Some(first) = got.first() {
            assert_eq!(first.model, "chat", "{name}");
            assert!(
                first.message.contains(text),
                "{name}: {:?} lacks {text:?}",
                first.message
            );
        }
    }
}

/// Against the old config: weight moves from where it was, env and rules from either side.
#[test]
fn rules_against_the_old_config() {
    let good = good_candidate();
    let at = |w: &str| {
        config(
            "policy: { max_step: 25% }",
            &good,
            &format!("    weight: {w}\n"),
        )
    };
    // 20% -> 40% with the same candidate: a rise of 20%.
    assert_eq!(check(Some(&at("20%")), &at("40%")), vec![]);
    let v = check(Some(&at("10%")), &at("40%"));
    assert_eq!(rules(&v), ["max_step"]);
    assert!(
        v[0].message.contains("weight: 10% -> 40% rises by 30%"),
        "{v:?}"
    );
    // Going down is never a step too large.
    assert_eq!(check(Some(&at("90%")), &at("0%")), vec![]);
    // Under a rollout plan the steps are the path, and `weight` is not read.
    let planned = config(
        "policy: { max_step: 25% }",
        &good,
        "    weight: 60%\n    rollout: { steps: [{ weight: 20%, for: 1m }] }\n",
    );
    assert_eq!(check(None, &planned), vec![]);
    // Another candidate at the same weight starts from 0%.
    let other = config(
        "policy: { max_step: 25% }",
        ", revision: v3",
        "    weight: 40%\n",
    );
    assert_eq!(rules(&check(Some(&at("40%")), &other)), ["max_step"]);

    // Removing the policy in the same change does not escape it; nor does leaving prod.
    let strict = config(
        "env: prod\npolicy: { require_approval: [prod], immutable_candidates: true }",
        &good,
        GOOD_ROLLOUT,
    );
    let relaxed = config(
        "env: dev",
        ", revision: latest",
        "    rollout: { steps: [{ weight: 10%, for: 1m }] }\n",
    );
    assert_eq!(
        rules(&check(Some(&strict), &relaxed)),
        ["require_approval", "immutable_candidates"]
    );
    // The stricter max_step of the two wins.
    let loose = config("policy: { max_step: 50% }", &good, "    weight: 40%\n");
    let tight = config("policy: { max_step: 10% }", &good, "    weight: 5%\n");
    assert_eq!(rules(&check(Some(&tight), &loose)), ["max_step"]);
}

#[test]
fn rollout_kinds() {
    let base = ", revision: v2";
    let cases = [
        (format!("{base}, artifact: \"hf://org/m@aaa111\", runtime: \"vllm/vllm-openai@sha256:{DIGEST}\""), RolloutChange::Revision, "revision"),
        (format!("{base}, artifact: \"hf://org/m@bbb\", runtime: \"vllm/vllm-openai@sha256:{DIGEST}\""), RolloutChange::Artifact, "artifact"),
        (format!("{base}, artifact: \"hf://org/m@aaa111\", runtime: \"vllm/vllm-openai@sha256:{}\"", "e".repeat(64)), RolloutChange::Runtime, "runtime"),
        (base.to_owned(), RolloutChange::ArtifactAndRuntime, "artifact+runtime"),
    ];
    for (candidate, want, text) in cases {
        let c = config("", &candidate, "");
        let m = &c.models[0];
        let got = rollout_change(&m.stable, m.candidate.as_ref().expect("candidate"));
        assert_eq!((got, got.as_str()), (want, text), "{candidate}");
    }
}

#[test]
fn mutable_references() {
    for label in [
        "latest",
        "HEAD",
        "main",
        "stable",
        "org/model:latest",
        "v2@main",
    ] {
        assert!(mutable_label(label).is_some(), "{label}");
    }
    for label in ["v2", "2024-06-01", "abc1234", "v2.1.0"] {
        assert!(mutable_label(label).is_none(), "{label}");
    }
    for artifact in [
        "hf://org/m@main",
        "hf://org/m",
        "s3://b/models/latest",
        "registry/m:nightly",
    ] {
        assert!(mutable_artifact(artifact).is_some(), "{artifact}");
    }
    for artifact in ["hf://org/m@4f2c9e1", "s3://b/models/v3", "registry/m:1.2.0"] {
        assert!(mutable_artifact(artifact).is_none(), "{artifact}");
    }
    assert!(mutable_runtime(&format!("vllm/vllm-openai:v0.6@sha256:{DIGEST}")).is_none());
    assert!(mutable_runtime("vllm/vllm-openai@sha256:abc").is_some());
    assert!(mutable_runtime("vllm/vllm-openai:latest").is_some());
}
