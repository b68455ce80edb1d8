//! Operator commands on models that no rollout directs: a static split (a candidate with a
//! `weight`, no `rollout:` plan) and a model without a candidate. A pin holds a static split's
//! candidate weight in the data plane (mirror off) across a reload and a restart until
//! unpinned; commands that act on a rollout are refused with 409 and are not audited.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rollgate_loadtest::sim::Sim;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "ops-secret";
const PAUSED: &str = "rollgate_rollout_paused{model=\"m\"}";
const RATIO: &str = "rollgate_rollout_candidate_weight_ratio{model=\"m\"}";

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Model `m` split `weight` to the candidate, mirroring every stable request to it; with
/// `with_n`, a second model `n` without a candidate.
fn split_yaml(stable: &Sim, candidate: &Sim, dir: &Path, weight: &str, with_n: bool) -> String {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token file");
    let top = format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: {:?}, audit_log: {:?} }}\nstate_dir: {:?}\n",
        dir.join("token"),
        dir.join("audit.log"),
        dir.join("state"),
    );
    let model =
        format!("    weight: {weight}\n    shadow: {{ sample: 100%, saturated_sample: 100% }}\n");
    let mut yaml = config(stable, Some(candidate), &model, &top)
        .replace("admin: { listen: 127.0.0.1:0 }\n", "");
    if with_n {
        yaml.push_str(&format!(
            "  - name: n\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n",
            stable.url()
        ));
    }
    yaml
}

/// `POST /rollouts/{model}/{action}` with the token.
async fn command(gw: &Gateway, model: &str, action: &str, body: &str) -> Reply {
    let path = format!("/rollouts/{model}/{action}");
    crate::breakglass::call(gw, "POST", &path, Some(TOKEN), None, body).await
}

/// `rollgate ctl --admin … --token-file DIR/token --actor oncall ARGS`: (exit code, stdout,
/// stderr).
fn ctl(gw: &Gateway, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let args = [&["--actor", "oncall"][..], args].concat();
    crate::breakglass::ctl(gw, Some(&dir.join("token")), &args)
}

fn audit_actions(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("audit line"))
        .filter_map(|a| a["action"].as_str().map(str::to_owned))
        .collect()
}

/// Waits (bounded) for the driver's first step, after which `/rollouts` lists `m`.
async fn listed(gw: &Gateway) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = rollout_status(gw).await;
        if !s.is_null() {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `n` chat requests from distinct users; returns how many the candidate answered.
async fn served_by_candidate(gw: &Gateway, tag: &str, n: usize) -> usize {
    let (c, url) = (client(), gw.url("/v1/chat/completions"));
    let mut on_candidate = 0;
    for i in 0..n {
        let user = format!("{tag}-{i}");
        let r = send(&c, &url, &[("x-user-id", &user)], chat("m", "hi", false)).await;
        assert_eq!(r.status, 200, "{user}: {}", r.text());
        match r.header("x-sim-name") {
            Some("candidate") => on_candidate += 1,
            Some("stable") => {}
            other => panic!("{user}: answered by {other:?}"),
        }
    }
    on_candidate
}

/// `m` is pinned at 0 %: no user request and no mirror reaches the candidate, and every reader
/// says so.
async fn assert_held_out(gw: &Gateway, candidate: &Sim, tag: &str) {
    let s = rollout_status(gw).await;
    assert_eq!(
        (&s["phase"], &s["pinned"], &s["weight"], &s["mirror"]),
        (&"Idle".into(), &"0%".into(), &"0%".into(), &"0%".into()),
        "{s:#}"
    );
    let status = gw.status().await;
    assert_eq!(status["models"][0]["weight"], "0%", "{status:#}");
    assert_eq!(
        status["models"][0]["drift"][0]["reason"], "pinned by oncall: incident 7",
        "{status:#}"
    );
    gw.wait_metric(RATIO, 0.0, Duration::from_secs(5)).await;
    gw.wait_metric(PAUSED, 1.0, Duration::from_secs(5)).await;
    let before = candidate.requests_total();
    assert_eq!(served_by_candidate(gw, tag, 50).await, 0, "{tag}");
    assert_eq!(
        candidate.requests_total(),
        before,
        "{tag}: the candidate got requests (mirrors?) while pinned at 0 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_holds_a_static_splits_candidate_out_over_a_reload_and_a_restart_until_unpinned() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-idle-pin"));
    let dir = &dir.0;
    let mut gw = Gateway::start(&split_yaml(&stable, &candidate, dir, "30%", false));
    assert_eq!(listed(&gw).await["weight"], "30%");

    let (code, out, err) = ctl(&gw, dir, &["pin", "m", "0%", "--reason", "incident 7"]);
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).expect("ctl prints the JSON answer");
    assert_eq!(answer["accepted"], true, "{answer:#}");
    assert_eq!(answer["status"]["pinned"], "0%", "{answer:#}");
    assert_held_out(&gw, &candidate, "pinned").await;

    // A reload that moves the split leaves the pin in place.
    let outcome = gw
        .apply_config(&split_yaml(&stable, &candidate, dir, "50%", false))
        .await;
    assert_eq!(outcome["result"], "success", "{outcome:#}");
    assert_eq!(gw.status().await["models"][0]["desired_weight"], "50%");
    assert_held_out(&gw, &candidate, "reloaded").await;

    // So does a restart, from the first request on.
    gw.signal("TERM");
    let exit = gw.wait(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gw.logs());
    // The stopped gateway owns the config's temp dir until the end of the test.
    let stopped = gw;
    let gw = stopped.start_again();
    listed(&gw).await;
    assert_held_out(&gw, &candidate, "restarted").await;

    // Unpinned: the configured split and its mirror come back.
    let (code, out, err) = ctl(&gw, dir, &["unpin", "m", "--reason", "fixed"]);
    assert_eq!(code, 0, "{out}{err}");
    let s = rollout_status(&gw).await;
    assert_eq!(
        (&s["pinned"], &s["weight"], &s["mirror"]),
        (&Value::Null, &"50%".into(), &"100%".into()),
        "{s:#}"
    );
    gw.wait_metric(PAUSED, 0.0, Duration::from_secs(5)).await;
    assert!(served_by_candidate(&gw, "unpinned", 50).await > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while candidate.shadow_requests_total() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no mirror after unpin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing left to unpin: refused, non-zero exit, not audited.
    let (code, out, err) = ctl(&gw, dir, &["unpin", "m", "--reason", "again"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("nothing is pinned"), "{out}");
    assert!(err.contains("409"), "{err}");
    assert_eq!(audit_actions(dir), ["pin", "unpin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_on_a_model_without_a_plan_or_a_candidate_are_refused() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = Scratch(temp_dir("breakglass-idle-refused"));
    let dir = &dir.0;
    let gw = Gateway::start(&split_yaml(&stable, &candidate, dir, "30%", true));
    listed(&gw).await;

    for action in ["pause", "resume", "abort", "promote", "approve"] {
        let r = command(&gw, "m", action, r#"{"reason":"incident 7"}"#).await;
        assert_eq!(r.status, 409, "{action}: {}", r.text());
        let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.contains(&format!("`{action}` on model `m` refused"))
                && error.contains("no rollout plan"),
            "{action}: {error}"
        );
    }
    let r = command(&gw, "m", "unpin", r#"{"reason":"x"}"#).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("nothing is pinned"), "{}", r.text());
    for (action, body) in [
        ("pin", r#"{"reason":"x","weight":"0%"}"#),
        ("pause", r#"{"reason":"x"}"#),
    ] {
        let r = command(&gw, "n", action, body).await;
        assert_eq!(r.status, 409, "n {action}: {}", r.text());
        assert!(
            r.text().contains("no candidate"),
            "n {action}: {}",
            r.text()
        );
    }

    let (code, out, err) = ctl(&gw, dir, &["pause", "m", "--reason", "incident 7"]);
    assert_ne!(code, 0, "a refused pause must fail: {out}{err}");
    assert!(out.contains("no rollout plan"), "{out}");
    assert!(err.contains("409"), "{err}");

    let s = rollout_status(&gw).await;
    assert_eq!(
        (&s["paused"], &s["pinned"], &s["weight"]),
        (&Value::Null, &Value::Null, &"30%".into()),
        "{s:#}"
    );
    gw.wait_metric(PAUSED, 0.0, Duration::from_secs(5)).await;
    assert!(audit_actions(dir).is_empty(), "refusals are not audited");
}
