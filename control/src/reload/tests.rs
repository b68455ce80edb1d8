//! Sync pause and resume over a file source: the source is still read while paused (desired
//! moves), nothing is applied until resume, and resume applies the newest revision at once.

use super::*;

struct Fixture {
    dir: PathBuf,
    handle: ReloaderHandle,
    proxy: ProxyHandle,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Already gone is fine.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn yaml(weight: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nmodels:\n  - name: m\n    \
         stable: {{ endpoints: [\"http://127.0.0.1:1\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"http://127.0.0.1:2\"], engine: vllm, revision: v2 }}\n    \
         weight: {weight}\n"
    )
}

fn start(tag: &str) -> Fixture {
    let dir =
        std::env::temp_dir().join(format!("rollgate-reload-unit-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("rollgate.yaml");
    let text = yaml("10%");
    std::fs::write(&path, &text).expect("write");
    let mut registry = Registry::default();
    let config = rollgate_config::parse(&text).expect("valid");
    let proxy = ProxyHandle::new(config, &revision_of(&text), &mut registry);
    let (reloader, handle) = Reloader::new(
        ConfigSource::File(path),
        &text,
        proxy.clone(),
        &mut registry,
    );
    tokio::spawn(reloader.run());
    Fixture { dir, handle, proxy }
}

impl Fixture {
    fn write(&self, text: &str) {
        std::fs::write(self.dir.join("rollgate.yaml"), text).expect("write");
    }

    fn weight(&self) -> String {
        self.proxy.snapshot().config().models[0].weight.to_string()
    }
}

fn pause() -> SyncPause {
    SyncPause {
        by: "oncall-alice".into(),
        approver: Some("oncall-bob".into()),
        reason: "incident 42".into(),
        since_unix: 1_700_000_000,
    }
}

#[tokio::test]
async fn paused_sync_reads_the_source_but_applies_nothing_until_resumed() {
    let f = start("pause");
    let first = revision_of(&yaml("10%"));
    let s = f.handle.sync_state();
    assert!(
        s.source.starts_with("file ") && s.source.ends_with("rollgate.yaml"),
        "{s:?}"
    );
    assert_eq!(
        (s.applied.as_str(), s.desired.as_deref()),
        (first.as_str(), Some(first.as_str()))
    );
    assert_eq!(s.paused, None);
    assert_eq!(
        f.handle.applied_text().as_deref(),
        Some(yaml("10%").as_str())
    );

    f.handle.pause_sync(pause());
    f.write(&yaml("40%"));
    let outcome = f.handle.reload_now(ReloadTrigger::Admin).await;
    assert_eq!(
        outcome,
        Some(ReloadOutcome::Unchanged {
            revision: first.clone()
        })
    );
    let second = revision_of(&yaml("40%"));
    let s = f.handle.sync_state();
    assert_eq!(s.desired.as_deref(), Some(second.as_str()), "desired moves");
    assert_eq!(s.applied, first, "applied does not");
    assert_eq!(s.paused, Some(pause()));
    assert_eq!(f.weight(), "10%");
    assert_eq!(
        f.handle.applied_text().as_deref(),
        Some(yaml("10%").as_str())
    );

    // Even an invalid change is only read while paused: not judged, not counted.
    f.write("models: [");
    let _ = f.handle.reload_now(ReloadTrigger::Admin).await;
    assert_eq!(f.handle.counts()[1], ("invalid", 0));
    f.write(&yaml("40%"));

    let resumed = f.handle.resume_sync().await;
    assert!(
        matches!(&resumed, Some(ReloadOutcome::Applied { revision, .. }) if *revision == second),
        "{resumed:?}"
    );
    let s = f.handle.sync_state();
    assert_eq!((s.applied.as_str(), s.paused), (second.as_str(), None));
    assert_eq!(f.weight(), "40%");
    assert_eq!(
        f.handle.applied_text().as_deref(),
        Some(yaml("40%").as_str())
    );
}

#[tokio::test]
async fn resume_without_changes_is_unchanged_and_an_invalid_source_keeps_the_last_good() {
    let f = start("resume-invalid");
    f.handle.pause_sync(pause());
    let first = revision_of(&yaml("10%"));
    assert_eq!(
        f.handle.resume_sync().await,
        Some(ReloadOutcome::Unchanged {
            revision: first.clone()
        })
    );
    f.handle.pause_sync(pause());
    f.write("models: [");
    let resumed = f.handle.resume_sync().await;
    assert!(
        matches!(&resumed, Some(ReloadOutcome::Invalid { .. })),
        "{resumed:?}"
    );
    let s = f.handle.sync_state();
    assert_eq!(s.applied, first);
    assert_eq!(s.desired, Some(revision_of("models: [")));
    assert_eq!(f.weight(), "10%");
}
