//! Argo CD health check, argocd-cm, and the Argo Rollouts and Flagger adapters' manifests.

use std::collections::BTreeMap;
use std::process::Command;

use super::{on_path, read, run, text, yaml_docs, PHASES};

/// Runs the Argo CD health check on every sample status, in Lua 5.1 (Argo CD's gopher-lua
/// speaks 5.1) and 5.4; each maps as docs/deploy.md says.
#[test]
fn argocd_health_check_maps_every_phase() {
    for lua in ["lua5.1", "lua5.4"] {
        assert!(
            on_path(lua).is_some(),
            "no {lua} on PATH; scripts/install-test-deps installs it"
        );
        let out = run(
            Command::new(lua).args(["deploy/argocd/test_health.lua", "deploy/argocd/health.lua"]),
            lua,
        );
        let said = text(&out);
        assert!(
            out.status.success(),
            "{lua}: the health check failed on a sample:\n{said}"
        );
        assert_health_mapping(lua, &said);
    }
}

/// Checks the harness's `sample TAB status TAB message` lines.
fn assert_health_mapping(lua: &str, said: &str) {
    let got: BTreeMap<&str, (&str, &str)> = said
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, (f.next()?, f.next().unwrap_or(""))))
        })
        .collect();
    let want = [
        ("no-status", "Progressing"),
        ("no-candidate", "Healthy"),
        ("Idle", "Healthy"),
        ("Deploy", "Progressing"),
        ("ValidateHealth", "Progressing"),
        ("Shadow", "Progressing"),
        ("Canary", "Progressing"),
        ("Promote", "Progressing"),
        ("Full", "Healthy"),
        ("Rollback", "Degraded"),
        ("Previous", "Degraded"),
        ("paused", "Suspended"),
        ("paused-bool", "Suspended"),
        ("stalled", "Degraded"),
        ("stale-generation", "Progressing"),
        ("unknown-phase", "Unknown"),
    ];
    for (sample, status) in want {
        let (s, msg) = got
            .get(sample)
            .unwrap_or_else(|| panic!("no result for {sample}:\n{said}"));
        assert_eq!(*s, status, "{lua}: {sample} → {s} ({msg})");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "a sample without an expectation:\n{said}"
    );
    for p in PHASES {
        assert!(got.contains_key(p), "no sample for phase {p}");
    }
    assert_eq!(got["no-status"].1, "waiting for rollgate");
    assert!(
        got["Canary"].1.contains("Canary step 1") && got["Canary"].1.contains("10%"),
        "{said}"
    );
    let stalled = got["stalled"].1;
    assert!(
        stalled.contains("9e8d7c6") && stalled.contains("120% is above 100%"),
        "{stalled}"
    );
    assert!(got["paused"].1.contains("incident 42"), "{said}");
}

/// argocd-cm.yaml carries health.lua byte for byte.
#[test]
fn argocd_cm_embeds_health_lua() {
    let cm = &yaml_docs(&read("deploy/argocd/argocd-cm.yaml"))[0];
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let embedded = cm["data"]["resource.customizations.health.rollgate.dev_ModelRollout"]
        .as_str()
        .expect("argocd-cm has the rollgate.dev_ModelRollout health key");
    assert!(
        embedded == read("deploy/argocd/health.lua"),
        "deploy/argocd/argocd-cm.yaml and deploy/argocd/health.lua differ; copy health.lua into \
         the ConfigMap (indented four spaces)"
    );
}

/// The Argo Rollouts template and the Flagger canary call the admin routes of CONTRACTS.md.
#[test]
fn argo_rollouts_and_flagger_call_the_gitops_endpoints() {
    let at = &yaml_docs(&read("deploy/argo-rollouts/analysistemplate.yaml"))[0];
    let m = &at["spec"]["metrics"][0];
    let web = &m["provider"]["web"];
    assert_eq!(
        web["url"],
        "http://rollgate-admin.{{args.namespace}}.svc:9090/gitops/argo-rollouts/{{args.model}}"
    );
    assert_eq!(web["jsonPath"], "{$.verdict}");
    assert_eq!(m["successCondition"], "result == \"promote\"");
    assert_eq!(m["failureCondition"], "result == \"rollback\"");
    for key in ["interval", "count", "consecutiveErrorLimit"] {
        assert!(m.get(key).is_some(), "AnalysisTemplate metric lacks {key}");
    }

    let canary = &yaml_docs(&read("deploy/flagger/canary.yaml"))[0];
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_array()
        .expect("webhooks");
    let types = [
        "confirm-rollout",
        "pre-rollout",
        "rollout",
        "confirm-traffic-increase",
        "confirm-promotion",
        "post-rollout",
        "event",
        "rollback",
    ];
    for t in types {
        let h = hooks
            .iter()
            .find(|h| h["type"] == t)
            .unwrap_or_else(|| panic!("no Flagger webhook of type {t}"));
        let url = h["url"].as_str().unwrap_or("");
        assert_eq!(
            url,
            format!("http://rollgate-admin.rollgate-prod.svc:9090/gitops/flagger/{t}")
        );
        assert_eq!(h["metadata"]["model"], "chat-small", "{t}");
    }
    assert_eq!(hooks.len(), types.len());
}
