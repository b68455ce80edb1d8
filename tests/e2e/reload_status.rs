//! What `POST /reload`, the reload counter and `/status` say about a file source that was
//! rejected, reverted or deleted: the answer and the counter agree, the status tells the truth,
//! and the last good config serves throughout.

use rollgate_loadtest::sim::Sim;
use serde_json::Value;

use crate::support::*;

fn count(status: &Value, result: &str) -> u64 {
    status["reloads"][result].as_u64().expect("count")
}

fn stalled(sync: &Value) -> Option<&Value> {
    sync["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
}

/// A gateway on `weight: 10%` whose watcher has rejected `bad`; returns it with that status.
async fn rejected_by_watcher(stable: &Sim, bad: &str) -> (Gateway, Value) {
    let gw = Gateway::start(&config(stable, None, "", ""));
    gw.write_config(bad);
    let status = wait_status(&gw, "the watcher did not reject the file", |s| {
        count(s, "invalid") == 1
    })
    .await;
    (gw, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_of_content_the_watcher_rejected_says_invalid_and_how_it_was_counted() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let bad = config(&stable, None, "    weight: 150%\n", "surprise: 1\n");
    let (gw, before) = rejected_by_watcher(&stable, &bad).await;

    let outcome = gw.reload().await;
    let after = gw.status().await;
    let moved: Vec<&str> = ["success", "invalid", "unreadable", "unchanged"]
        .into_iter()
        .filter(|r| count(&after, r) != count(&before, r))
        .collect();
    // The answer says what the content is, and how this reload was counted: once is enough.
    assert_eq!(outcome["result"], "invalid", "{outcome:#}");
    assert_eq!(moved, ["unchanged"], "{outcome:#}");
    assert_eq!(outcome["counted_as"], "unchanged", "{outcome:#}");
    assert_eq!(outcome["errors"], before["last_reload"]["errors"]);
    assert_eq!(outcome["revision"], before["last_reload"]["revision"]);
    let page = gw.metrics().await;
    assert_eq!(
        metric(&page, r#"rollgate_config_reload_total{result="invalid"}"#),
        Some(1.0)
    );
    assert_eq!(after["revision"], before["revision"]);
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_to_the_serving_file_clears_the_rejection_from_status() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let good = config(&stable, None, "", "");
    let (gw, rejected) =
        rejected_by_watcher(&stable, &config(&stable, None, "    weight: 150%\n", "")).await;
    assert_eq!(rejected["last_reload"]["result"], "invalid", "{rejected:#}");
    let serving = rejected["revision"].clone();

    gw.write_config(&good);
    let s = wait_status(&gw, "last_reload still shows the rejection", |s| {
        s["last_reload"]["result"] == "unchanged"
    })
    .await;
    assert_eq!(s["last_reload"]["revision"], serving, "{s:#}");
    assert!(s["last_reload"].get("errors").is_none(), "{s:#}");
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);
    assert!(stalled(&s["sync"]).is_none(), "{:#}", s["sync"]);
    assert_eq!((count(&s, "invalid"), s["revision"].clone()), (1, serving));
    assert_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_file_reads_as_unreadable_and_stalled() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let (gw, rejected) = rejected_by_watcher(&stable, "").await;
    let serving = rejected["revision"].clone();
    std::fs::remove_file(&gw.config).expect("rm config");

    let outcome = gw.reload().await;
    assert_eq!(outcome["result"], "unreadable", "{outcome:#}");
    let error = outcome["error"].as_str().expect("error");
    let s = gw.status().await;
    let sync = &s["sync"];
    assert_eq!(s["last_reload"]["result"], "unreadable", "{s:#}");
    assert_eq!(sync["desired"], Value::Null, "{sync:#}");
    assert_eq!(sync["applied"], serving);
    assert_eq!(sync["status"], "OutOfSync", "{sync:#}");
    let reasons = sync["reasons"].to_string();
    assert!(reasons.contains("source unreadable"), "{reasons}");
    assert!(!reasons.contains("not applied yet"), "{reasons}");
    let cond = stalled(sync).unwrap_or_else(|| panic!("no Stalled in {sync:#}"));
    assert_eq!(cond["reason"], "SourceUnreadable", "{cond}");
    assert!(
        cond["message"].as_str().is_some_and(|m| m.contains(error)),
        "{cond}"
    );
    assert_eq!(s["revision"], serving);
    assert_serves(&gw).await;
}
