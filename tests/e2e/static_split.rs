//! A model with a candidate and a static `weight` but no `rollout:` plan: `/rollouts`,
//! `rollgate ctl status` and `rollgate_rollout_candidate_weight_ratio` report the split the
//! data plane serves, as `/status` does, and follow a reload that moves it.

use std::process::Command;
use std::time::Duration;

use rollgate_loadtest::sim::Sim;
use serde_json::Value;

use crate::support::*;

const RATIO: &str = "rollgate_rollout_candidate_weight_ratio{model=\"m\"}";

fn static_config(stable: &Sim, candidate: &Sim, weight: &str) -> String {
    let model =
        format!("    weight: {weight}\n    shadow: {{ sample: 100%, saturated_sample: 100% }}\n");
    config(stable, Some(candidate), &model, "")
}

/// Model `m`'s entry in `rollgate ctl status`.
fn ctl_status(gw: &Gateway) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["ctl", "--admin", &format!("http://{}", gw.admin), "status"])
        .env_remove("ROLLGATE_ADMIN_TOKEN")
        .output()
        .expect("run rollgate ctl");
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).expect("ctl status prints JSON");
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["model"] == "m").cloned())
        .unwrap_or(Value::Null)
}

/// Asserts that every reader agrees the candidate gets `weight` and a `mirror` sample.
async fn assert_split(gw: &Gateway, weight: &str, mirror: &str, ratio: f64) {
    let status = gw.status().await;
    assert_eq!(status["models"][0]["weight"], weight, "{status:#}");
    let kstatus = get(&client(), &gw.admin_url("/status/models/m"))
        .await
        .json();
    assert_eq!(
        (kstatus["weight"].as_str(), kstatus["mirror"].as_str()),
        (Some(weight), Some(mirror)),
        "{kstatus:#}"
    );
    for (what, s) in [
        ("/rollouts", rollout_status(gw).await),
        ("ctl status", ctl_status(gw)),
    ] {
        assert_eq!(
            (
                s["phase"].as_str(),
                s["weight"].as_str(),
                s["mirror"].as_str()
            ),
            (Some("Idle"), Some(weight), Some(mirror)),
            "{what}: {s:#}"
        );
        assert_eq!(s["candidate"], kstatus["candidate"], "{what}: {s:#}");
        assert!(
            s["candidate"].is_string(),
            "{what} names the candidate: {s:#}"
        );
    }
    gw.wait_metric(RATIO, ratio, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_split_is_reported_live_by_rollouts_ctl_and_metrics() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let gw = Gateway::start(&static_config(&stable, &candidate, "30%"));
    // `/rollouts` lists a model from the driver's first step, right after startup.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rollout_status(&gw).await.is_null() {
        assert!(tokio::time::Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_split(&gw, "30%", "100%", 0.3).await;

    let reload = gw
        .apply_config(&static_config(&stable, &candidate, "50%"))
        .await;
    assert_eq!(reload["result"], "success", "{reload}");
    assert_split(&gw, "50%", "100%", 0.5).await;
}
