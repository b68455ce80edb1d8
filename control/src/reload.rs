//! The reload funnel. Every trigger (file change, SIGHUP, admin `POST /reload`, a Git poll or
//! webhook) goes into one bounded channel; one task reads the source (a file, or a commit of a
//! Git branch), validates it (every error), diffs it against the serving config, builds the
//! snapshot off the request path and publishes it in one swap. An invalid file or commit is
//! logged with every error and counted; the last good snapshot keeps serving. Sync can be
//! paused (break-glass): the source is still read, so the desired revision moves, but nothing
//! is applied until it is resumed.

use std::path::PathBuf;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rollgate_config::Config;
use rollgate_proxy::ProxyHandle;
use tokio::sync::mpsc;

use crate::git::GitSource;

/// Pending triggers beyond this are coalesced (one queued reload reads the newest file anyway).
const TRIGGER_QUEUE: usize = 4;

/// Why a reload was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    FileChanged,
    Signal,
    Admin,
    /// The Git source's poll timer.
    Poll,
    /// `POST /hooks/git`.
    Webhook,
    /// `resume_sync`.
    Resume,
}

/// Where the config comes from. Cheap to clone.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// A file; its revision is a content hash ([`revision_of`]).
    File(PathBuf),
    /// A file in a Git branch; its revision is the commit SHA.
    Git(Arc<GitSource>),
}

/// Who paused Git/file sync and why (break-glass).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyncPause {
    pub by: String,
    pub approver: Option<String>,
    pub reason: String,
    pub since_unix: u64,
}

/// Desired (source) vs applied (live) config revision.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    /// "git <url> <branch>:<path>" or "file <path>".
    pub source: String,
    /// Newest revision the source offers (commit SHA for Git), once read.
    pub desired: Option<String>,
    /// Revision serving now.
    pub applied: String,
    pub paused: Option<SyncPause>,
}

/// What a source read found.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// The revision is one the funnel already judged (serving or rejected); text not read.
    Known(String),
    New {
        revision: String,
        text: String,
    },
}

/// Why a source read gave no config text.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Nothing could be read (file missing, fetch failed): no revision to name.
    Unreadable(String),
    /// The revision exists but must not be applied (unsigned commit, path missing in it).
    Refused { revision: String, error: String },
}

/// The result of one reload attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied {
        revision: String,
        changes: Vec<String>,
    },
    Unchanged {
        revision: String,
    },
    /// The source still holds a revision already rejected: not judged or counted again (it
    /// counts as "unchanged"), but its errors are still current, and the answer is "invalid"
    /// with `counted_as: "unchanged"`.
    StillInvalid {
        revision: String,
        errors: Vec<String>,
    },
    Invalid {
        revision: String,
        errors: Vec<String>,
    },
    Unreadable {
        error: String,
    },
}

/// Called after a config is applied (wakes the rollout driver so that a withdrawn candidate
/// loses its traffic at once, not on the next tick). Must not block.
pub type OnApplied = Arc<dyn Fn() + Send + Sync>;

/// Checks a parsed config against what this process needs besides a valid config (files,
/// features); every problem it names refuses the reload like a parse error.
pub type Preflight = Arc<dyn Fn(&Config) -> Vec<String> + Send + Sync>;

/// Owns the funnel's receiving end; run it with [`Reloader::run`].
pub struct Reloader {
    rx: mpsc::Receiver<ReloadTrigger>,
    source: ConfigSource,
    proxy: ProxyHandle,
    state: Arc<State>,
    on_applied: Option<OnApplied>,
    preflight: Option<Preflight>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Sends triggers into the funnel and reads the last outcome. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloaderHandle {
    tx: mpsc::Sender<ReloadTrigger>,
    state: Arc<State>,
    source: ConfigSource,
}

#[derive(Debug, Default)]
struct State {
    /// `[success, invalid, unreadable, unchanged]`.
    counts: [AtomicU64; 4],
    last_success_unix: AtomicU64,
    /// The last outcome that changed something or failed, or the "unchanged" that ended a
    /// failure (see [`Reloader::supersedes`]).
    last: Mutex<Option<ReloadOutcome>>,
    /// The outcome of the most recent reload, "unchanged" included (what `POST /reload` shows).
    latest: Mutex<Option<ReloadOutcome>>,
    revision: Mutex<String>,
    /// Reloads begun and finished; one at a time, so a reload numbered above `started` as read
    /// at some moment reads the file as it was at that moment or later.
    started: AtomicU64,
    finished: AtomicU64,
    done: tokio::sync::Notify,
    /// The newest revision the source offered.
    desired: Mutex<Option<String>>,
    paused: Mutex<Option<SyncPause>>,
    /// The text of the config serving now.
    applied_text: Mutex<Option<Arc<str>>>,
    /// The config the process started with: what restart-only settings still hold.
    at_start: Mutex<Option<Arc<Config>>>,
    /// Changes since the start that only a restart applies (`… (restart required)` lines).
    restart_pending: Mutex<Vec<String>>,
}

const RESULTS: [&str; 4] = ["success", "invalid", "unreadable", "unchanged"];

#[derive(Debug)]
struct ReloadCollector(Arc<State>);

// === impl Reloader ===

impl Reloader {
    /// Creates the funnel for the source whose `text` produced the serving snapshot.
    pub fn new(
        source: ConfigSource,
        text: &str,
        proxy: ProxyHandle,
        registry: &mut Registry,
    ) -> (Reloader, ReloaderHandle) {
        let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
        let state = Arc::new(State::default());
        let revision = proxy.snapshot().revision().to_owned();
        *lock(&state.desired) = Some(revision.clone());
        *lock(&state.revision) = revision;
        *lock(&state.applied_text) = Some(Arc::from(text));
        *lock(&state.at_start) = Some(proxy.snapshot().config().clone());
        state.last_success_unix.store(unix_now(), Relaxed);
        registry.register_collector(Box::new(ReloadCollector(state.clone())));
        let handle = ReloaderHandle {
            tx,
            state: state.clone(),
            source: source.clone(),
        };
        (
            Reloader {
                rx,
                source,
                proxy,
                state,
                on_applied: None,
                preflight: None,
            },
            handle,
        )
    }

    /// Calls `hook` after every applied config.
    pub fn on_applied(&mut self, hook: OnApplied) {
        self.on_applied = Some(hook);
    }

    /// Runs `check` on every config that parses, before it is applied.
    pub fn preflight(&mut self, check: Preflight) {
        self.preflight = Some(check);
    }

    /// Runs until every handle is dropped.
    pub async fn run(mut self) {
        while let Some(trigger) = self.rx.recv().await {
            self.state.started.fetch_add(1, SeqCst);
            let outcome = self.reload(trigger).await;
            self.record(outcome);
        }
    }

    async fn reload(&self, trigger: ReloadTrigger) -> ReloadOutcome {
        let serving = self.proxy.snapshot();
        let known = |rev: &str| rev == serving.revision() || self.rejected(rev);
        let (revision, text) = match self.source.read(&known).await {
            Ok(Fetched::Known(revision)) => {
                *lock(&self.state.desired) = Some(revision.clone());
                return match self.rejection(&revision) {
                    Some(errors) => ReloadOutcome::StillInvalid { revision, errors },
                    None => ReloadOutcome::Unchanged { revision },
                };
            }
            Ok(Fetched::New { revision, text }) => (revision, Ok(text)),
            Err(ReadError::Refused { revision, error }) => (revision, Err(error)),
            Err(ReadError::Unreadable(error)) => {
                // The source offers no revision now; the one read before is no longer desired.
                *lock(&self.state.desired) = None;
                tracing::warn!(?trigger, %error, applied = %serving.revision(), "config reload failed: source unreadable; keeping the last good config");
                return ReloadOutcome::Unreadable { error };
            }
        };
        *lock(&self.state.desired) = Some(revision.clone());
        if let Some(p) = lock(&self.state.paused).clone() {
            tracing::info!(?trigger, desired = %revision, applied = %serving.revision(), paused_by = %p.by, reason = %p.reason, "sync paused: not applying the source's revision");
            return ReloadOutcome::Unchanged {
                revision: serving.revision().to_owned(),
            };
        }
        let parsed = text.map_err(|e| vec![e]).and_then(|text| {
            let config = rollgate_config::parse(&text)
                .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
            match self.preflight.as_ref().map(|check| check(&config)) {
                Some(errors) if !errors.is_empty() => Err(errors),
                _ => Ok((config, text)),
            }
        });
        let (config, text) = match parsed {
            Ok(c) => c,
            Err(errors) => {
                tracing::warn!(
                    ?trigger, %revision, count = errors.len(),
                    "config reload rejected; keeping revision {}:\n  {}", serving.revision(), errors.join("\n  ")
                );
                return ReloadOutcome::Invalid { revision, errors };
            }
        };
        // Against the start, not the last reload: a restart-only change stays pending (the old
        // value serving) through later reloads until a restart or a revert.
        let pending = lock(&self.state.at_start).as_ref().map(|start| {
            let pending: Vec<String> = rollgate_config::diff(start, &config)
                .iter()
                .filter(|c| c.restart_required)
                .map(ToString::to_string)
                .collect();
            *lock(&self.state.restart_pending) = pending.clone();
            pending
        });
        let changes = describe_changes(serving.config(), &config, pending.as_deref());
        self.proxy.apply(config, &revision);
        *lock(&self.state.applied_text) = Some(Arc::from(text));
        tracing::info!(?trigger, %revision, previous = %serving.revision(), changes = %changes.join("; "), "config reloaded");
        if let Some(hook) = &self.on_applied {
            hook();
        }
        ReloadOutcome::Applied { revision, changes }
    }

    fn record(&self, outcome: ReloadOutcome) {
        let idx = match &outcome {
            ReloadOutcome::Applied { revision, .. } => {
                self.state.last_success_unix.store(unix_now(), Relaxed);
                revision.clone_into(&mut lock(&self.state.revision));
                0
            }
            ReloadOutcome::Invalid { .. } => 1,
            ReloadOutcome::Unreadable { .. } => 2,
            ReloadOutcome::Unchanged { .. } | ReloadOutcome::StillInvalid { .. } => 3,
        };
        self.state.counts[idx].fetch_add(1, Relaxed);
        *lock(&self.state.latest) = Some(outcome.clone());
        let mut last = lock(&self.state.last);
        if Self::supersedes(&outcome, last.as_ref()) {
            *last = Some(outcome);
        }
        drop(last);
        self.state.finished.fetch_add(1, SeqCst);
        self.state.done.notify_waiters();
    }

    /// Whether `outcome` replaces `last` as the last reload worth reporting: anything but
    /// "unchanged", and an "unchanged" that ends a failure (the source readable again, or moved
    /// off the rejected revision, e.g. reverted to the serving one), so that `/status` does not
    /// keep showing errors that are no longer current.
    fn supersedes(outcome: &ReloadOutcome, last: Option<&ReloadOutcome>) -> bool {
        match (outcome, last) {
            (ReloadOutcome::StillInvalid { .. }, _) => false,
            (ReloadOutcome::Unchanged { .. }, Some(ReloadOutcome::Unreadable { .. })) => true,
            (
                ReloadOutcome::Unchanged { revision },
                Some(ReloadOutcome::Invalid { revision: r, .. }),
            ) => r != revision,
            (ReloadOutcome::Unchanged { .. }, _) => false,
            _ => true,
        }
    }

    /// The errors of `revision` when the last reload rejected it (the watcher seeing a write that
    /// an admin reload already judged, or the reverse): it was reported and counted once already.
    fn rejection(&self, revision: &str) -> Option<Vec<String>> {
        match &*lock(&self.state.last) {
            Some(ReloadOutcome::Invalid {
                revision: r,
                errors,
            }) if r == revision => Some(errors.clone()),
            _ => None,
        }
    }

    fn rejected(&self, revision: &str) -> bool {
        self.rejection(revision).is_some()
    }
}

/// Lines describing what changed (`… (restart required)` for what a reload cannot apply),
/// with a warning naming those settings. `pending`: the restart-only changes since the start
/// (`None` when unknown); a restart-only setting that is back at the value it started with
/// needs no restart, and says so.
fn describe_changes(old: &Config, new: &Config, pending: Option<&[String]>) -> Vec<String> {
    let mut changes = rollgate_config::diff(old, new);
    let mut reverted = Vec::new();
    if let Some(pending) = pending {
        for c in changes.iter_mut().filter(|c| c.restart_required) {
            let prefix = format!("{}:", c.path);
            if !pending.iter().any(|p| p.starts_with(&prefix)) {
                c.restart_required = false;
                reverted.push(c.path.clone());
            }
        }
    }
    let restart: Vec<&str> = (changes.iter())
        .filter(|c| c.restart_required)
        .map(|c| c.path.as_str())
        .collect();
    if !restart.is_empty() {
        tracing::warn!(
            settings = %restart.join(", "),
            "these changes take effect after a restart; the rest is applied"
        );
    }
    changes
        .iter()
        .map(|c| match reverted.contains(&c.path) {
            true => format!("{c} (back to the value running since the start: no restart needed)"),
            false => c.to_string(),
        })
        .collect()
}

/// A config file's revision: a content hash (a Git source uses the commit SHA).
pub fn revision_of(text: &str) -> String {
    format!("sha-{:016x}", rollgate_proxy::hash64(text.as_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl ReloaderHandle ===

impl ReloaderHandle {
    /// Asks for a reload; false when the funnel is full (a reload is already queued) or gone.
    pub fn trigger(&self, why: ReloadTrigger) -> bool {
        self.tx.try_send(why).is_ok()
    }

    /// Asks for a reload and waits until a reload that read the file after this call has
    /// finished (a watcher reload already running may have read older content).
    pub async fn reload_now(&self, why: ReloadTrigger) -> Option<ReloadOutcome> {
        let after = self.state.started.load(SeqCst);
        self.tx.send(why).await.ok()?;
        loop {
            let done = self.state.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.state.finished.load(SeqCst) > after {
                return lock(&self.state.latest).clone();
            }
            done.await;
        }
    }

    /// The last outcome that changed something or failed, or the "unchanged" that ended a
    /// failure (a revert to the serving revision, the source readable again).
    pub fn last(&self) -> Option<ReloadOutcome> {
        lock(&self.state.last).clone()
    }

    /// The most recent outcome, "unchanged" included (content already rejected reads as that
    /// rejection): what the status conditions judge, so a revert to the serving revision clears
    /// an `InvalidConfig` stall.
    pub fn latest(&self) -> Option<ReloadOutcome> {
        lock(&self.state.latest)
            .clone()
            .map(|outcome| match outcome {
                ReloadOutcome::StillInvalid { revision, errors } => {
                    ReloadOutcome::Invalid { revision, errors }
                }
                other => other,
            })
    }

    /// Reload attempts by result, as `rollgate_config_reload_total` counts them.
    pub fn counts(&self) -> [(&'static str, u64); 4] {
        std::array::from_fn(|i| (RESULTS[i], self.state.counts[i].load(Relaxed)))
    }

    /// The Git source, when the config comes from Git (for the webhook).
    pub fn git(&self) -> Option<&Arc<GitSource>> {
        match &self.source {
            ConfigSource::Git(g) => Some(g),
            ConfigSource::File(_) => None,
        }
    }

    /// Stops applying source changes (they are still fetched; `desired` keeps moving).
    pub fn pause_sync(&self, pause: SyncPause) {
        tracing::warn!(by = %pause.by, approver = ?pause.approver, reason = %pause.reason, applied = %lock(&self.state.revision), "config sync paused");
        *lock(&self.state.paused) = Some(pause);
    }

    /// Clears the pause and applies the source's newest revision now.
    pub async fn resume_sync(&self) -> Option<ReloadOutcome> {
        if let Some(p) = lock(&self.state.paused).take() {
            tracing::info!(paused_by = %p.by, "config sync resumed");
        }
        self.reload_now(ReloadTrigger::Resume).await
    }

    /// Desired (source) vs applied (live) revision, and the pause if any.
    pub fn sync_state(&self) -> SyncState {
        SyncState {
            source: self.source.describe(),
            desired: lock(&self.state.desired).clone(),
            applied: lock(&self.state.revision).clone(),
            paused: lock(&self.state.paused).clone(),
        }
    }

    /// Changes since the process started that only a restart applies: the settings whose old
    /// values still serve.
    pub fn restart_pending(&self) -> Vec<String> {
        lock(&self.state.restart_pending).clone()
    }

    /// The text of the config serving now (for export-live).
    pub fn applied_text(&self) -> Option<Arc<str>> {
        lock(&self.state.applied_text).clone()
    }

    /// Watches the file and triggers a reload when it changes. Polls (cheap: one `stat`, and
    /// one read when the mtime, size or inode changed or the mtime is under 2 s old) so it
    /// works on every filesystem, including Kubernetes ConfigMap symlink swaps.
    pub async fn watch_file(self, path: PathBuf, every: Duration) {
        let mut last = file_stamp(&path, None).await;
        // This task may first run after the file changed again (or went away) since it was
        // read at startup: compare with the serving text, not only with later looks.
        let applied = self
            .applied_text()
            .map(|t| rollgate_proxy::hash64(t.as_bytes()));
        if last.map(|s| s.hash) != applied {
            // A full queue means a reload is already pending; it will read this content.
            let _ = self.tx.try_send(ReloadTrigger::FileChanged);
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = file_stamp(&path, last.as_ref()).await;
            if now != last {
                last = now;
                // A full queue means a reload is already pending; it will read this content.
                let _ = self.tx.try_send(ReloadTrigger::FileChanged);
            }
        }
    }
}

/// What the watcher compares: the file's metadata and a hash of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
    hash: u64,
}

/// How recent a modification must be for the content to be hashed although the metadata did
/// not change: a filesystem with coarse timestamps can hide a same-size rewrite within them.
const FRESH: Duration = Duration::from_secs(2);

/// The file's stamp. Its content is read and hashed only when the metadata changed since `last`
/// or is fresh: a 50,000-model config (8 MB) hashed every second was most of an idle gateway's
/// CPU.
async fn file_stamp(path: &std::path::Path, last: Option<&Stamp>) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = tokio::fs::metadata(path).await.ok()?;
    let (modified, len, inode) = (meta.modified().ok()?, meta.len(), meta.ino());
    let settled = modified.elapsed().is_ok_and(|age| age > FRESH);
    if let Some(l) =
        last.filter(|l| settled && (l.modified, l.len, l.inode) == (modified, len, inode))
    {
        return Some(*l);
    }
    // A file past the size limit is refused unread; its metadata alone tells it changed.
    let hash = if len > rollgate_config::MAX_CONFIG_BYTES as u64 {
        0
    } else {
        rollgate_proxy::hash64(&tokio::fs::read(path).await.ok()?)
    };
    Some(Stamp {
        modified,
        len,
        inode,
        hash,
    })
}

/// Reads a config file, refusing one over [`rollgate_config::MAX_CONFIG_BYTES`] before
/// reading it (a file written by mistake must not be loaded into memory whole, every time).
pub async fn read_config(path: &std::path::Path) -> std::io::Result<String> {
    let len = tokio::fs::metadata(path).await?.len();
    let max = rollgate_config::MAX_CONFIG_BYTES as u64;
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes; a config file is at most {max} bytes (64 MiB)"
        )));
    }
    tokio::fs::read_to_string(path).await
}

// === impl ConfigSource ===

impl ConfigSource {
    /// `git <url> <branch>:<path>` or `file <path>` (credentials never included).
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => format!("file {}", p.display()),
            ConfigSource::Git(g) => g.describe(),
        }
    }

    /// Reads the newest revision and its text (at startup): `(revision, text)`. A Git source
    /// whose remote is unreachable starts from the mirror's last fetched commit, if any.
    pub async fn read_initial(&self) -> Result<(String, String), String> {
        let read = match self {
            ConfigSource::Git(g) => g.read(&|_| false, true).await,
            ConfigSource::File(_) => self.read(&|_| false).await,
        };
        match read {
            Ok(Fetched::New { revision, text }) => Ok((revision, text)),
            Ok(Fetched::Known(revision)) => Err(format!("revision {revision} not read")),
            Err(ReadError::Unreadable(error) | ReadError::Refused { error, .. }) => Err(error),
        }
    }

    /// Reads the newest revision; the text only where `known` says the revision is new.
    pub(crate) async fn read(
        &self,
        known: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Fetched, ReadError> {
        match self {
            ConfigSource::File(path) => match read_config(path).await {
                Ok(text) => {
                    let revision = revision_of(&text);
                    Ok(if known(&revision) {
                        Fetched::Known(revision)
                    } else {
                        Fetched::New { revision, text }
                    })
                }
                Err(e) => Err(ReadError::Unreadable(format!("{}: {e}", path.display()))),
            },
            ConfigSource::Git(g) => g.read(known, false).await,
        }
    }
}

// === impl ReloadCollector ===

impl Collector for ReloadCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut f = enc.encode_descriptor(
            "rollgate_config_reload",
            "Config reload attempts by result (success, invalid, unreadable, unchanged)",
            None,
            MetricType::Counter,
        )?;
        for (i, result) in RESULTS.iter().enumerate() {
            let n = self.0.counts[i].load(Relaxed);
            f.encode_family(&[("result", *result)])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&n, None)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            None,
            MetricType::Gauge,
        )?;
        f.encode_gauge(&self.0.last_success_unix.load(Relaxed))?;
        let mut f = enc.encode_descriptor(
            "rollgate_config_info",
            "The config revision serving now (value is always 1)",
            None,
            MetricType::Gauge,
        )?;
        let revision = lock(&self.0.revision).clone();
        f.encode_family(&[("revision", revision.as_str())])?
            .encode_gauge(&1u64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
