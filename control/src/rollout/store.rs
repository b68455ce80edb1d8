//! Rollout state on disk: one JSON file written atomically (temp file, fsync, rename, fsync of
//! the directory), so a restart — even after `kill -9` — resumes every rollout at its step.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

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
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.display().to_string(),
                source,
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
        std::fs::write(dir.join(FILE), b"{garbage").expect("write");
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
