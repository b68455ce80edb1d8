//! Rollout state on disk: one JSON file written atomically (temp file, fsync, rename, fsync of
//! the directory), so a restart — even after `kill -9` — resumes every rollout at its step.
//! A file that does not parse is moved aside (`rollout-state.json.corrupt-<UTC time>`) before
//! the driver starts fresh and writes a new one, so what it held (the failed candidates, a Full
//! rollout) can still be read and restored by hand.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::decide::RolloutState;

const FILE: &str = "rollout-state.json";

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a rollout state file: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    /// A saved file that does not parse, and where it went: moved aside (`Ok`), or why it
    /// could not be (`Err`).
    #[error("{path}: not a rollout state file: {source}; {}", match kept {
        Ok(p) => format!("moved aside to {p}"),
        Err(e) => format!("could not move it aside ({e}): the next save replaces it"),
    })]
    Unreadable {
        path: String,
        source: serde_json::Error,
        kept: Result<String, String>,
    },
}

// === impl StateStore ===

impl StateStore {
    /// A store in `dir`, or in memory only without one.
    pub fn new(dir: Option<PathBuf>) -> StateStore {
        StateStore { dir }
    }

    /// The saved states; empty when there is no directory or no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, RolloutState>, StoreError> {
        let Some(path) = self.path() else {
            return Ok(BTreeMap::new());
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Unreadable {
                path: path.display().to_string(),
                source,
                kept: set_aside(&path, SystemTime::now()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(StoreError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Replaces the saved states atomically.
    pub fn save(&self, states: &BTreeMap<String, &RolloutState>) -> Result<(), StoreError> {
        let (Some(dir), Some(path)) = (self.dir.as_deref(), self.path()) else {
            return Ok(());
        };
        let io = |source, p: &Path| StoreError::Io {
            path: p.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(states).map_err(|source| StoreError::Corrupt {
            path: tmp.display().to_string(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, &tmp))?;
        f.write_all(&bytes).map_err(|e| io(e, &tmp))?;
        f.sync_all().map_err(|e| io(e, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(e, dir))
    }

    fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(FILE))
    }
}

/// Renames an unreadable state file to `<name>.corrupt-<UTC time>` (`.1`, `.2`, ... after it
/// when that name is taken), never over another file; the new path, or why not.
fn set_aside(path: &Path, now: SystemTime) -> Result<String, String> {
    let stamp = crate::clock::rfc3339(now).replace([':', '-'], "");
    let base = format!("{}.corrupt-{stamp}", path.display());
    let target = (0..100)
        .map(|i| match i {
            0 => PathBuf::from(&base),
            i => PathBuf::from(format!("{base}.{i}")),
        })
        .find(|p| !p.exists())
        .ok_or_else(|| format!("{base} and 99 more names are taken"))?;
    std::fs::rename(path, &target).map_err(|e| e.to_string())?;
    Ok(target.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Phase;

    #[test]
    fn states_survive_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("rollgate-store-{}", std::process::id()));
        let store = StateStore::new(Some(dir.clone()));
        assert!(store.load().expect("empty").is_empty());
        let s = RolloutState {
            candidate: Some("v2@1".into()),
            started_revision: Some("9f2c1e7a".into()),
            phase: Phase::Canary(2),
            weight: 250_000,
            ..RolloutState::idle()
        };
        store
            .save(&BTreeMap::from([("m".to_owned(), &s)]))
            .expect("save");
        assert_eq!(store.load().expect("load").get("m"), Some(&s));
        // A file written before `started_revision` existed still loads, without it.
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(FILE)).expect("read")).expect("json");
        old["m"]
            .as_object_mut()
            .expect("state")
            .remove("started_revision");
        std::fs::write(dir.join(FILE), old.to_string()).expect("write");
        let loaded = store.load().expect("an older file");
        assert_eq!(loaded["m"].started_revision, None);
        assert_eq!(loaded["m"].phase, Phase::Canary(2));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unreadable_file_is_moved_aside_and_the_error_says_where() {
        let dir = std::env::temp_dir().join(format!("rollgate-store-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = StateStore::new(Some(dir.clone()));
        let bad = br#"{"chat": {"phase": "#;
        std::fs::write(dir.join(FILE), bad).expect("write");
        let err = store.load().expect_err("a truncated file");
        let StoreError::Unreadable { kept: Ok(kept), .. } = &err else {
            panic!("expected the file moved aside: {err}");
        };
        assert!(
            kept.contains("rollout-state.json.corrupt-") && kept.ends_with('Z'),
            "{kept}"
        );
        assert!(
            err.to_string().contains(&format!("moved aside to {kept}")),
            "{err}"
        );
        assert_eq!(std::fs::read(kept).expect("kept"), bad);
        // The driver starts fresh and saves: the bad file stays where it was moved.
        assert!(store.load().expect("no file now").is_empty());
        store.save(&BTreeMap::new()).expect("save");
        assert_eq!(std::fs::read(kept).expect("still kept"), bad);
        // A second bad file in the same second takes the next name.
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_703_187);
        std::fs::write(dir.join(FILE), b"{").expect("write");
        let first = set_aside(&dir.join(FILE), now).expect("first");
        std::fs::write(dir.join(FILE), b"[").expect("write");
        let second = set_aside(&dir.join(FILE), now).expect("second");
        assert!(first.ends_with(".corrupt-20261126T142627Z"), "{first}");
        assert_eq!(second, format!("{first}.1"));
        assert_eq!(std::fs::read(&first).expect("first"), b"{");
        std::fs::remove_dir_all(&dir).ok();
    }
}
