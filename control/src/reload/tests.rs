//! Sync pause and resume over a file source: the source is still read while paused (desired
//! moves), nothing is applied until resume, and resume applies the newest revision at once.

use super::*;

mod failures;

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

/// Runs git in `dir`; panics with stderr on failure.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_paused_git_source_still_fetches_and_resume_applies_the_newest_commit() {
    let root = std::env::temp_dir().join(format!("rollgate-reload-git-{}", std::process::id()));
    let origin = root.join("origin");
    std::fs::create_dir_all(&origin).expect("dir");
    let commit = |text: &str| {
        std::fs::write(origin.join("rollgate.yaml"), text).expect("write");
        git(&origin, &["add", "."]);
        git(
            &origin,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "c",
            ],
        );
        git(&origin, &["rev-parse", "HEAD"])
    };
    git(&origin, &["init", "-q", "-b", "main"]);
    let first = commit(&yaml("10%"));
    let settings = crate::git::GitSettings {
        url: origin.display().to_string(),
        branch: "main".into(),
        path: "rollgate.yaml".into(),
        poll: std::time::Duration::from_secs(60),
        git_dir: root.join("mirror.git"),
        token_file: None,
        ssh_key: None,
        webhook_secret_file: None,
        allowed_signers: None,
        push_notes: false,
        command_timeout: crate::git::COMMAND_TIMEOUT,
    };
    let source = ConfigSource::Git(
        crate::git::GitSource::open(settings.clone())
            .await
            .expect("open"),
    );
    let (revision, text) = source.read_initial().await.expect("initial");
    assert_eq!(revision, first, "the revision is the commit SHA");
    let mut registry = Registry::default();
    let config = rollgate_config::parse(&text).expect("valid");
    let proxy = ProxyHandle::new(config, &revision, &mut registry);
    let (reloader, handle) = Reloader::new(source, &text, proxy.clone(), &mut registry);
    tokio::spawn(reloader.run());
    assert_eq!(
        handle.sync_state().source,
        format!("git {} main:rollgate.yaml", origin.display())
    );

    handle.pause_sync(pause());
    let second = commit(&yaml("55%"));
    let outcome = handle.reload_now(ReloadTrigger::Poll).await;
    assert_eq!(
        outcome,
        Some(ReloadOutcome::Unchanged {
            revision: first.clone()
        })
    );
    let s = handle.sync_state();
    assert_eq!(
        (s.desired.as_deref(), s.applied.as_str()),
        (Some(second.as_str()), first.as_str())
    );
    assert_eq!(proxy.snapshot().revision(), first);

    let resumed = handle.resume_sync().await;
    assert!(
        matches!(&resumed, Some(ReloadOutcome::Applied { revision, .. }) if *revision == second),
        "{resumed:?}"
    );
    assert_eq!(
        proxy.snapshot().config().models[0].weight.to_string(),
        "55%"
    );
    assert_eq!(handle.applied_text().as_deref(), Some(yaml("55%").as_str()));

    // The remote goes away: polls report it unreadable (last good kept); a restart on the same
    // mirror starts from the last fetched commit.
    std::fs::rename(&origin, root.join("gone")).expect("move origin");
    let outcome = handle.reload_now(ReloadTrigger::Poll).await;
    assert!(
        matches!(outcome, Some(ReloadOutcome::Unreadable { .. })),
        "{outcome:?}"
    );
    assert_eq!(proxy.snapshot().revision(), second);
    let reopened = crate::git::GitSource::open(settings).await.expect("reopen");
    let (revision, _) = ConfigSource::Git(reopened)
        .read_initial()
        .await
        .expect("from the mirror");
    assert_eq!(revision, second);
    // Cleanup only; a leftover temp dir is harmless.
    let _ = std::fs::remove_dir_all(&root);
}

/// The watcher hashes a file's content only when its metadata moved or is fresh: an unchanged
/// old file costs a `stat`, a fresh or changed one is read.
#[tokio::test]
async fn the_watcher_reads_a_file_only_when_its_metadata_moved_or_is_fresh() {
    let dir = std::env::temp_dir().join(format!("rollgate-stamp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("c.yaml");
    let set_old = |p: &std::path::Path| {
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(an_hour_ago))
            .expect("set mtime");
    };
    std::fs::write(&path, "aaaa").expect("write");
    let fresh = file_stamp(&path, None).await.expect("stamp");
    // Fresh: a same-size rewrite is seen even with the same metadata (coarse timestamps).
    std::fs::write(&path, "bbbb").expect("write");
    let again = file_stamp(&path, Some(&fresh)).await.expect("stamp");
    assert_ne!(again.hash, fresh.hash);
    // Old and unchanged: the last stamp stands, content not read.
    set_old(&path);
    let old = file_stamp(&path, None).await.expect("stamp");
    let same = file_stamp(&path, Some(&old)).await.expect("stamp");
    assert_eq!(same, old);
    // Any metadata change is read again.
    std::fs::write(&path, "ccccc").expect("write");
    set_old(&path);
    let changed = file_stamp(&path, Some(&old)).await.expect("stamp");
    assert_ne!(changed.len, old.len);
    assert_ne!(changed.hash, old.hash);
    std::fs::remove_dir_all(&dir).ok();
}

/// A config file past the size limit is refused from its metadata, before it is read.
#[tokio::test]
async fn an_oversized_config_file_is_refused_unread() {
    let dir = std::env::temp_dir().join(format!("rollgate-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("c.yaml");
    let f = std::fs::File::create(&path).expect("create");
    // Sparse: no 64 MiB written to disk.
    f.set_len(rollgate_config::MAX_CONFIG_BYTES as u64 + 1)
        .expect("set_len");
    let err = read_config(&path).await.expect_err("too large");
    assert!(err.to_string().contains("at most 67108864 bytes"), "{err}");
    std::fs::write(&path, "listen: 127.0.0.1:0\n").expect("write");
    assert_eq!(
        read_config(&path).await.expect("small"),
        "listen: 127.0.0.1:0\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}
