//! A rejected or unreadable source over a file: the answer of a reload and the counter agree,
//! and `/status` stops showing a failure once the source is back at the serving revision. The
//! watcher sees a change made before its first look.

use serde_json::Value;

use super::*;
use crate::status::{outcome_json, StatusReport};

impl Fixture {
    /// Reloads now; returns the answer (as `POST /reload` writes it) and the counter label that
    /// moved.
    async fn reload_counted(&self, why: ReloadTrigger) -> (Value, &'static str) {
        let before = self.handle.counts();
        let outcome = self.handle.reload_now(why).await.expect("funnel running");
        let moved: Vec<&str> = self
            .handle
            .counts()
            .iter()
            .zip(before)
            .filter(|(now, was)| now.1 != was.1)
            .map(|(now, _)| now.0)
            .collect();
        assert_eq!(moved.len(), 1, "one counter per reload: {moved:?}");
        (outcome_json(&outcome), moved[0])
    }

    fn status(&self) -> Value {
        serde_json::to_value(StatusReport::build(&self.proxy, &self.handle, None)).expect("json")
    }
}

fn stalled(sync: &Value) -> Option<&Value> {
    sync["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
}

#[tokio::test]
async fn a_reload_of_content_already_rejected_answers_what_it_counts() {
    let f = start("again");
    f.write("models: [");
    let (first, counted) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(
        (first["result"].as_str(), counted),
        (Some("invalid"), "invalid")
    );

    for why in [
        ReloadTrigger::Admin,
        ReloadTrigger::Signal,
        ReloadTrigger::Admin,
    ] {
        let (again, counted) = f.reload_counted(why).await;
        assert_eq!(again["result"], "invalid", "{why:?}: {again}");
        assert_eq!(counted, "unchanged", "the rejection is counted once");
        assert_eq!(
            again["counted_as"].as_str(),
            Some(counted),
            "{why:?}: {again}"
        );
        assert_eq!(again["revision"], first["revision"]);
        assert_eq!(
            again["errors"], first["errors"],
            "the errors are still current"
        );
    }
    assert_eq!(f.handle.counts()[1], ("invalid", 1));
    assert_eq!(f.weight(), "10%");
    let s = f.status();
    assert_eq!(s["last_reload"], first, "{s:#}");
    assert!(stalled(&s["sync"]).is_some(), "{:#}", s["sync"]);
}

#[tokio::test]
async fn a_revert_to_the_serving_content_clears_the_rejection_from_status() {
    let f = start("revert");
    let serving = revision_of(&yaml("10%"));
    f.write(&yaml("150%"));
    let (rejected, _) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(rejected["result"], "invalid", "{rejected}");
    assert_eq!(f.status()["last_reload"], rejected);

    f.write(&yaml("10%"));
    let (reverted, counted) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(
        (reverted["result"].as_str(), counted),
        (Some("unchanged"), "unchanged")
    );
    let s = f.status();
    assert_eq!(
        s["last_reload"],
        serde_json::json!({ "result": "unchanged", "revision": serving }),
        "{s:#}"
    );
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);
    assert!(stalled(&s["sync"]).is_none(), "{:#}", s["sync"]);
    assert_eq!(
        (s["revision"].as_str(), f.weight()),
        (Some(serving.as_str()), "10%".into())
    );

    // Still no history kept: the rejected content written again is judged (and counted) again.
    f.write(&yaml("150%"));
    let (again, counted) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(
        (again["result"].as_str(), counted),
        (Some("invalid"), "invalid")
    );
}

#[tokio::test]
async fn a_deleted_source_reads_as_unreadable_and_stalled_until_it_is_back() {
    let f = start("deleted");
    let serving = revision_of(&yaml("10%"));
    f.write("");
    let (empty, _) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(empty["result"], "invalid", "{empty}");
    std::fs::remove_file(f.dir.join("rollgate.yaml")).expect("rm");
    let (gone, counted) = f.reload_counted(ReloadTrigger::Admin).await;
    assert_eq!(
        (gone["result"].as_str(), counted),
        (Some("unreadable"), "unreadable")
    );
    let error = gone["error"].as_str().expect("error");
    assert!(error.contains("rollgate.yaml"), "{error}");

    let s = f.status();
    let sync = &s["sync"];
    assert_eq!(s["last_reload"], gone, "{s:#}");
    assert_eq!(
        sync["desired"],
        Value::Null,
        "nothing readable is desired: {sync:#}"
    );
    assert_eq!(sync["applied"], serving.as_str());
    assert_eq!(sync["status"], "OutOfSync", "{sync:#}");
    let reasons = sync["reasons"].to_string();
    assert!(
        reasons.contains("source unreadable") && reasons.contains(error),
        "{reasons}"
    );
    assert!(!reasons.contains("not applied yet"), "{reasons}");
    let cond = stalled(sync).unwrap_or_else(|| panic!("no Stalled in {sync:#}"));
    assert_eq!(cond["reason"], "SourceUnreadable");
    assert!(
        cond["message"].as_str().is_some_and(|m| m.contains(error)),
        "{cond}"
    );
    assert_eq!(sync["conditions"][0]["status"], "Unknown", "{sync:#}");
    assert_eq!(
        (s["revision"].as_str(), f.weight()),
        (Some(serving.as_str()), "10%".into())
    );

    // Back at the serving content: readable, synced, nothing stalled.
    f.write(&yaml("10%"));
    let (back, _) = f.reload_counted(ReloadTrigger::FileChanged).await;
    assert_eq!(back["result"], "unchanged", "{back}");
    let s = f.status();
    assert_eq!(s["last_reload"], back, "{s:#}");
    assert_eq!(s["sync"]["status"], "Synced", "{:#}", s["sync"]);
    assert_eq!(s["sync"]["desired"], serving.as_str());
    assert!(stalled(&s["sync"]).is_none(), "{:#}", s["sync"]);
}

#[tokio::test]
async fn the_watcher_sees_a_change_made_before_it_first_looked() {
    let f = start("watch-late");
    f.write(&yaml("40%"));
    let path = f.dir.join("rollgate.yaml");
    // Ticks after the first look would find nothing new: only that first look can see it.
    let watcher = tokio::spawn(f.handle.clone().watch_file(path, Duration::from_secs(3600)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.weight() != "40%" {
        assert!(tokio::time::Instant::now() < deadline, "never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
}
