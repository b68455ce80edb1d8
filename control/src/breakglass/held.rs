//! A sync pause that outlasts a restart. `POST /sync/pause` saves who paused, why, and the
//! revision serving then with its config text in `<state_dir>/sync-pause.json` (written
//! atomically); `POST /sync/resume` removes it. At startup a saved pause comes back: the gateway
//! serves the revision the pause held, paused, while the source's newer revision waits (see
//! [`Restored`]). The text is kept because the source may no longer serve that revision (a file
//! source has only its current content; a Git branch can be force-pushed).
//!
//! Without `state_dir` nothing is saved; the audit log still records the pause, and a start whose
//! audit log ends its sync actions on an unresumed `pause-sync` comes back paused too, on the
//! source's revision (the held one was not kept), and says so at `error` level and in `/status`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::rfc3339_unix;
use crate::reload::SyncPause;

/// The file in `state_dir`.
const FILE: &str = "sync-pause.json";

/// Where a sync pause is saved: `<state_dir>/sync-pause.json`, or nowhere without a
/// `state_dir`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PauseStore {
    dir: Option<PathBuf>,
}

/// A pause as saved: who paused, why, and the revision it held with its config text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSync {
    pub by: String,
    pub approver: Option<String>,
    pub reason: String,
    pub since_unix: u64,
    /// The revision serving when sync was paused.
    pub revision: String,
    /// That revision's config text.
    pub text: String,
}

/// What a start found of a pause made before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restored {
    /// Saved in `state_dir`: serve its revision, paused.
    Held(HeldSync),
    /// Only the audit log knows of it: paused, but on the source's revision. `revision` is the
    /// one the pause held, as the audit line has it.
    Audited {
        pause: SyncPause,
        revision: Option<String>,
    },
}

// === impl PauseStore ===

impl PauseStore {
    /// A store in `state_dir`, or none (saves nothing) without one.
    pub fn new(state_dir: Option<PathBuf>) -> PauseStore {
        PauseStore { dir: state_dir }
    }

    /// `<state_dir>/sync-pause.json`, when there is a `state_dir`.
    pub fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(FILE))
    }

    /// Saves the pause atomically (temp file, fsync, rename, fsync of the directory). `Ok(None)`
    /// without a `state_dir`; else the file written.
    pub fn save(&self, held: &HeldSync) -> Result<Option<PathBuf>, String> {
        let (Some(dir), Some(path)) = (self.dir.as_deref(), self.path()) else {
            return Ok(None);
        };
        let fail = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(held).map_err(|e| e.to_string())?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| fail(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| fail(&tmp, e))?;
        f.sync_all().map_err(|e| fail(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| fail(&path, e))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(dir, e))?;
        Ok(Some(path))
    }

    /// Removes the saved pause (none saved is fine).
    pub fn clear(&self) -> Result<(), String> {
        let Some(path) = self.path() else {
            return Ok(());
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("{}: {e}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// The saved pause, if any. A file that does not parse is an error: the start says so
    /// rather than pass over a pause it cannot read.
    pub fn load(&self) -> Result<Option<HeldSync>, String> {
        let Some(path) = self.path() else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{}: not a saved sync pause: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The pause made before this start: the saved one, else an unresumed `pause-sync` at the
    /// end of the audit log's sync actions. A saved file that cannot be read falls back on the
    /// audit log, with the error for the caller to log.
    pub fn restore(&self, audit: Option<&Path>) -> (Option<Restored>, Option<String>) {
        let (saved, error) = match self.load() {
            Ok(saved) => (saved, None),
            Err(e) => (None, Some(e)),
        };
        if let Some(held) = saved {
            return (Some(Restored::Held(held)), error);
        }
        let audited = audit.and_then(unresumed_pause);
        (
            audited.map(|(pause, revision)| Restored::Audited { pause, revision }),
            error,
        )
    }
}

// === impl HeldSync ===

impl HeldSync {
    /// The pause with the revision serving now and its text.
    pub fn new(pause: &SyncPause, revision: &str, text: &str) -> HeldSync {
        HeldSync {
            by: pause.by.clone(),
            approver: pause.approver.clone(),
            reason: pause.reason.clone(),
            since_unix: pause.since_unix,
            revision: revision.to_owned(),
            text: text.to_owned(),
        }
    }

    pub fn pause(&self) -> SyncPause {
        SyncPause {
            by: self.by.clone(),
            approver: self.approver.clone(),
            reason: self.reason.clone(),
            since_unix: self.since_unix,
        }
    }
}

/// `by alice (approved by bob) at 2026-…Z: reason`, for log lines.
pub fn describe(p: &SyncPause) -> String {
    let approver = p
        .approver
        .as_ref()
        .map_or(String::new(), |a| format!(" (approved by {a})"));
    format!(
        "by {}{approver} at {}: {}",
        p.by,
        rfc3339_unix(p.since_unix),
        p.reason
    )
}

/// The last `pause-sync` of an audit log when no `resume-sync` follows it, with the revision it
/// held (`applied`). Unreadable lines are skipped (a torn last line must not stop a start).
pub fn unresumed_pause(audit: &Path) -> Option<(SyncPause, Option<String>)> {
    let text = std::fs::read_to_string(audit).ok()?;
    let mut last = None;
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let field = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_owned);
        match field("action").as_deref() {
            Some("pause-sync") => {
                let pause = SyncPause {
                    by: field("actor").unwrap_or_else(|| "unknown".to_owned()),
                    approver: field("approver"),
                    reason: field("reason").unwrap_or_default(),
                    // Whole seconds are enough to say when (`as` saturates, NaN is 0).
                    since_unix: entry.get("time").and_then(Value::as_f64).unwrap_or(0.0) as u64,
                };
                last = Some((pause, field("applied")));
            }
            Some("resume-sync") => last = None,
            _ => {}
        }
    }
    last
}
