//! Rollout status as Git notes: on each phase change the driver hands the statuses to a bounded
//! queue; one task writes them as a note (`refs/notes/rollgate`) on the commit being evaluated,
//! in the local mirror, and pushes the notes ref when asked to. The driver never waits on Git;
//! a full queue drops the note and counts it. Never a commit on the watched branch.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::GitSource;
use crate::rollout::RolloutStatus;

/// Notes waiting to be written; phase changes are rare, so a full queue means Git is stuck.
pub(crate) const NOTE_QUEUE: usize = 32;
/// The notes ref (`git notes --ref rollgate`).
pub const NOTES_REF: &str = "refs/notes/rollgate";

/// One note to write: the commit and its content.
#[derive(Debug)]
pub(crate) struct Note {
    pub(crate) commit: String,
    pub(crate) content: String,
}

#[derive(Serialize)]
struct NoteDoc<'a> {
    revision: &'a str,
    models: BTreeMap<&'a str, &'a RolloutStatus>,
}

/// The note's YAML: the config revision and each model's rollout status as `/rollouts` shows
/// it. The one place that decides what a note holds.
pub fn note_content(revision: &str, statuses: &[RolloutStatus]) -> String {
    let doc = NoteDoc {
        revision,
        models: statuses.iter().map(|s| (s.model.as_str(), s)).collect(),
    };
    serde_yaml_ng::to_string(&doc)
        .unwrap_or_else(|e| format!("revision: {revision}\nerror: {e:?}\n"))
}

// === impl GitSource (notes) ===

impl GitSource {
    /// Queues a note with the statuses on `revision` (a commit SHA); drops and counts it when
    /// the queue is full. Never blocks.
    pub fn queue_note(&self, revision: &str, statuses: &[RolloutStatus]) {
        let note = Note {
            commit: revision.to_owned(),
            content: note_content(revision, statuses),
        };
        if self.notes_tx.try_send(note).is_err() {
            self.stats.notes[NoteResult::Dropped as usize].fetch_add(1, Relaxed);
            tracing::warn!(%revision, "git note dropped: the notes queue is full");
        }
    }

    /// Writes queued notes until the queue's senders are gone. Spawn once.
    pub async fn write_notes(self: Arc<Self>) {
        let Some(mut rx) = super::lock(&self.notes_rx).take() else {
            return;
        };
        while let Some(note) = rx.recv().await {
            self.write_note(note).await;
        }
    }

    async fn write_note(&self, note: Note) {
        let _repo = self.repo.lock().await;
        let count = |r: NoteResult| self.stats.notes[r as usize].fetch_add(1, Relaxed);
        let remote_notes = format!("+{NOTES_REF}:{NOTES_REF}");
        if self.settings.push_notes {
            // Start from the remote's notes so that the push fast-forwards; a remote without
            // notes yet is the normal first case, so a failure here is not an error.
            let _ = self
                .cli
                .run(
                    &["fetch", "--quiet", &self.settings.url, &remote_notes],
                    None,
                )
                .await;
        }
        let add = [
            "notes",
            "--ref",
            NOTES_REF,
            "add",
            "-f",
            "-F",
            "-",
            &note.commit,
        ];
        if let Err(e) = self.cli.run(&add, Some(note.content.as_bytes())).await {
            count(NoteResult::WriteFailed);
            tracing::warn!(commit = %note.commit, error = %e, "git note not written");
            return;
        }
        count(NoteResult::Written);
        tracing::info!(commit = %note.commit, "git note written ({NOTES_REF})");
        if !self.settings.push_notes {
            return;
        }
        let refspec = format!("{NOTES_REF}:{NOTES_REF}");
        match self
            .cli
            .run(&["push", "--quiet", &self.settings.url, &refspec], None)
            .await
        {
            Ok(_) => {
                count(NoteResult::Pushed);
                tracing::info!(commit = %note.commit, "git notes pushed");
            }
            Err(e) => {
                count(NoteResult::PushFailed);
                let e = self.scrub(&e);
                tracing::warn!(commit = %note.commit, error = %e, "git notes push failed; the note stays in the local mirror");
            }
        }
    }
}

/// `rollgate_git_notes_total{result}` values.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NoteResult {
    Written = 0,
    WriteFailed = 1,
    Pushed = 2,
    PushFailed = 3,
    Dropped = 4,
}

pub(crate) const NOTE_RESULTS: [&str; 5] = [
    "written",
    "write_failed",
    "pushed",
    "push_failed",
    "dropped",
];

/// A bounded channel for notes.
pub(crate) fn channel() -> (mpsc::Sender<Note>, mpsc::Receiver<Note>) {
    mpsc::channel(NOTE_QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_names_the_revision_and_each_models_phase() {
        let status = RolloutStatus {
            model: "m".into(),
            change: Some("revision"),
            candidate: Some("v2@0123456789ab".into()),
            phase: crate::rollout::Phase::Full,
            paused: None,
            pinned: None,
            weight: "100%".into(),
            mirror: "0%".into(),
            reason: "promoted".into(),
            since_unix_ms: 1,
            gates: None,
            transition_gates: None,
            conditions: vec![crate::rollout::Condition {
                kind: "Ready",
                status: "True",
                reason: "promoted".into(),
            }],
        };
        let text = note_content("abc123", &[status]);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        assert_eq!(doc["revision"].as_str(), Some("abc123"));
        assert_eq!(doc["models"]["m"]["phase"].as_str(), Some("Full"));
        assert_eq!(doc["models"]["m"]["weight"].as_str(), Some("100%"));
        assert!(doc["models"]["m"]["conditions"].is_sequence(), "{text}");
    }
}
