//! The reload funnel. Every trigger (file change, SIGHUP, admin `POST /reload`) goes into one
//! bounded channel; one task reads the file, validates it (every error), diffs it against the
//! serving config, builds the snapshot off the request path and publishes it in one swap. An
//! invalid file is logged with every error and counted; the last good snapshot keeps serving.

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

/// Pending triggers beyond this are coalesced (one queued reload reads the newest file anyway).
const TRIGGER_QUEUE: usize = 4;

/// Why a reload was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    FileChanged,
    Signal,
    Admin,
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
    Invalid {
        revision: String,
        errors: Vec<String>,
    },
    Unreadable {
        error: String,
    },
}

/// Owns the funnel's receiving end; run it with [`Reloader::run`].
#[derive(Debug)]
pub struct Reloader {
    rx: mpsc::Receiver<ReloadTrigger>,
    path: PathBuf,
    proxy: ProxyHandle,
    state: Arc<State>,
}

/// Sends triggers into the funnel and reads the last outcome. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloaderHandle {
    tx: mpsc::Sender<ReloadTrigger>,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `[success, invalid, unreadable, unchanged]`.
    counts: [AtomicU64; 4],
    last_success_unix: AtomicU64,
    last: Mutex<Option<ReloadOutcome>>,
    /// The outcome of the most recent reload, "unchanged" included (what `POST /reload` shows;
    /// content already rejected shows that rejection again).
    latest: Mutex<Option<ReloadOutcome>>,
    revision: Mutex<String>,
    /// Reloads begun and finished; one at a time, so a reload numbered above `started` as read
    /// at some moment reads the file as it was at that moment or later.
    started: AtomicU64,
    finished: AtomicU64,
    done: tokio::sync::Notify,
}

const RESULTS: [&str; 4] = ["success", "invalid", "unreadable", "unchanged"];

#[derive(Debug)]
struct ReloadCollector(Arc<State>);

// === impl Reloader ===

impl Reloader {
    /// Creates the funnel for the config file that produced the serving snapshot.
    pub fn new(
        path: PathBuf,
        proxy: ProxyHandle,
        registry: &mut Registry,
    ) -> (Reloader, ReloaderHandle) {
        let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
        let state = Arc::new(State::default());
        *lock(&state.revision) = proxy.snapshot().revision().to_owned();
        state.last_success_unix.store(unix_now(), Relaxed);
        registry.register_collector(Box::new(ReloadCollector(state.clone())));
        let handle = ReloaderHandle {
            tx,
            state: state.clone(),
        };
        (
            Reloader {
                rx,
                path,
                proxy,
                state,
            },
            handle,
        )
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
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => {
                let error = format!("{}: {e}", self.path.display());
                tracing::warn!(?trigger, %error, "config reload failed: file unreadable; keeping the last good config");
                return ReloadOutcome::Unreadable { error };
            }
        };
        let revision = revision_of(&text);
        let serving = self.proxy.snapshot();
        if revision == serving.revision() || self.rejected(&revision) {
            return ReloadOutcome::Unchanged { revision };
        }
        let config = match rollgate_config::parse(&text) {
            Ok(c) => c,
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                tracing::warn!(
                    ?trigger, %revision, count = errors.len(),
                    "config reload rejected; keeping revision {}:\n  {}", serving.revision(), errors.join("\n  ")
                );
                return ReloadOutcome::Invalid { revision, errors };
            }
        };
        let changes = describe_changes(serving.config(), &config);
        self.proxy.apply(config, &revision);
        tracing::info!(?trigger, %revision, previous = %serving.revision(), changes = %changes.join("; "), "config reloaded");
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
            ReloadOutcome::Unchanged { .. } => 3,
        };
        self.state.counts[idx].fetch_add(1, Relaxed);
        let latest = match &outcome {
            ReloadOutcome::Unchanged { revision } if self.rejected(revision) => self.last_outcome(),
            other => Some(other.clone()),
        };
        *lock(&self.state.latest) = latest;
        if idx != 3 {
            *lock(&self.state.last) = Some(outcome);
        }
        self.state.finished.fetch_add(1, SeqCst);
        self.state.done.notify_waiters();
    }

    fn last_outcome(&self) -> Option<ReloadOutcome> {
        lock(&self.state.last).clone()
    }

    /// The file still holds what the last reload rejected (the watcher seeing a write that an
    /// admin reload already judged, or the reverse): it was reported and counted once already.
    fn rejected(&self, revision: &str) -> bool {
        let last = lock(&self.state.last);
        matches!(&*last, Some(ReloadOutcome::Invalid { revision: r, .. }) if r == revision)
    }
}

/// Lines describing what changed, warning about settings that need a restart.
fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let changes: Vec<String> = rollgate_config::diff(old, new)
        .iter()
        .map(ToString::to_string)
        .collect();
    let restart = old.listen != new.listen
        || old.workers != new.workers
        || old.tls != new.tls
        || old.admin != new.admin
        || old.limits != new.limits
        || old.upstream != new.upstream;
    if restart {
        tracing::warn!(
            "listen, workers, tls, admin, limits and upstream changes take effect after a restart"
        );
    }
    changes
}

/// A config file's revision: a content hash (Git commits will use the commit id).
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

    /// The last outcome other than "unchanged".
    pub fn last(&self) -> Option<ReloadOutcome> {
        lock(&self.state.last).clone()
    }

    /// The most recent outcome, "unchanged" included (content already rejected reads as that
    /// rejection): what the status conditions judge, so a revert to the serving revision clears
    /// an `InvalidConfig` stall.
    pub fn latest(&self) -> Option<ReloadOutcome> {
        lock(&self.state.latest).clone()
    }

    pub fn counts(&self) -> [(&'static str, u64); 4] {
        std::array::from_fn(|i| (RESULTS[i], self.state.counts[i].load(Relaxed)))
    }

    /// Watches the file and triggers a reload when its content changes. Polls (cheap: one
    /// `stat` and, on a changed mtime or size, one read) so it works on every filesystem,
    /// including Kubernetes ConfigMap symlink swaps.
    pub async fn watch_file(self, path: PathBuf, every: Duration) {
        let mut last = file_stamp(&path).await;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = file_stamp(&path).await;
            if now != last {
                last = now;
                // A full queue means a reload is already pending; it will read this content.
                let _ = self.tx.try_send(ReloadTrigger::FileChanged);
            }
        }
    }
}

async fn file_stamp(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    let text = tokio::fs::read(path).await.ok()?;
    Some((
        meta.modified().ok()?,
        meta.len(),
        rollgate_proxy::hash64(&text),
    ))
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
