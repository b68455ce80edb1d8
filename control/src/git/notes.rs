//! Rollout status as Git notes: on each phase change the driver hands the statuses to a bounded
//! queue; one task writes them as a note (`refs/notes/rollgate`) on the commit being evaluated,
//! in the local mirror, and pushes the notes ref when asked to. A rollout's phase changes under
//! a later commit (a withdrawal, an unrelated commit mid-rollout) are also written on the commit
//! that started it, so that its note ends with how the rollout ended. The driver never waits on
//! Git; a full queue drops the note and counts it. Never a commit on the watched branch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::GitSource;
use crate::rollout::{Phase, RolloutStatus};

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

/// Each model's rollout as the notes saw it: which commit started it, so that its later phase
/// changes (under other commits) land on that commit too. The commit comes from the status
/// (`started_revision`, saved with the rollout state), so it outlasts a restart; the phase last
/// noted is in memory.
#[derive(Debug, Default)]
pub(crate) struct Origins(HashMap<String, Origin>);

#[derive(Debug)]
struct Origin {
    candidate: String,
    /// The commit under which the rollout of `candidate` was first noted.
    commit: String,
    /// The phase last noted.
    phase: Phase,
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
    /// Queues a note with the statuses on `revision` (a commit SHA), and the same note on each
    /// commit that started a rollout whose phase changed under `revision`; drops and counts a
    /// note when the queue is full. Never blocks.
    pub fn queue_note(&self, revision: &str, statuses: &[RolloutStatus]) {
        let origins = super::lock(&self.origins).observe(revision, statuses);
        let content = note_content(revision, statuses);
        for commit in std::iter::once(revision.to_owned()).chain(origins) {
            let note = Note {
                commit,
                content: content.clone(),
            };
            if let Err(e) = self.notes_tx.try_send(note) {
                self.stats.notes[NoteResult::Dropped as usize].fetch_add(1, Relaxed);
                let commit = e.into_inner().commit;
                tracing::warn!(%revision, %commit, "git note dropped: the notes queue is full");
            }
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

// === impl Origins ===

impl Origins {
    /// Takes the statuses of a step with a phase change under `revision`; the other commits
    /// that must get this note: those that started a rollout whose phase changed now. A
    /// rollout is followed from its first noted phase to its end: a model that turns Idle, or
    /// names another candidate, is done (its starting commit keeps the outcome, e.g. the
    /// `Previous` of a withdrawal rather than the `Idle` that follows it).
    pub(crate) fn observe(
        &mut self,
        revision: &str,
        statuses: &[RolloutStatus],
    ) -> BTreeSet<String> {
        let mut commits = BTreeSet::new();
        self.0
            .retain(|model, _| statuses.iter().any(|s| &s.model == model));
        for s in statuses {
            let candidate = match &s.candidate {
                Some(c) if s.phase != Phase::Idle => c,
                _ => {
                    self.0.remove(&s.model);
                    continue;
                }
            };
            match self.0.get_mut(&s.model) {
                Some(o) if &o.candidate == candidate => {
                    if o.phase != s.phase && o.commit != revision {
                        commits.insert(o.commit.clone());
                    }
                    o.phase = s.phase;
                }
                _ => {
                    // The commit that named the candidate, from the rollout's saved state: after
                    // a restart mid-rollout this is the first sight of a rollout that started
                    // under an earlier commit, which gets the note too.
                    let commit = s.started_revision.as_deref().unwrap_or(revision);
                    if commit != revision {
                        commits.insert(commit.to_owned());
                    }
                    let origin = Origin {
                        candidate: candidate.clone(),
                        commit: commit.to_owned(),
                        phase: s.phase,
                    };
                    self.0.insert(s.model.clone(), origin);
                }
            }
        }
        commits
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

    fn status(model: &str, candidate: Option<&str>, phase: Phase) -> RolloutStatus {
        RolloutStatus {
            started_revision: None,
            model: model.into(),
            change: Some("revision"),
            candidate: candidate.map(str::to_owned),
            phase,
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
                reason: "Full",
                message: "promoted".into(),
            }],
        }
    }

    #[test]
    fn note_names_the_revision_and_each_models_phase() {
        let status = status("m", Some("v2@0123456789ab"), Phase::Full);
        let text = note_content("abc123", &[status]);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        assert_eq!(doc["revision"].as_str(), Some("abc123"));
        assert_eq!(doc["models"]["m"]["phase"].as_str(), Some("Full"));
        assert_eq!(doc["models"]["m"]["weight"].as_str(), Some("100%"));
        assert!(doc["models"]["m"]["conditions"].is_sequence(), "{text}");
    }

    /// The commits besides `revision` that a step's note goes to.
    fn extra(o: &mut Origins, revision: &str, statuses: &[RolloutStatus]) -> Vec<String> {
        o.observe(revision, statuses).into_iter().collect()
    }

    #[test]
    fn a_rollout_ended_under_a_later_commit_is_noted_on_the_commit_that_started_it() {
        let mut o = Origins::default();
        let v2 = Some("v2@1");
        // Started and advanced under `start`: nothing else to note.
        assert!(extra(&mut o, "start", &[status("m", v2, Phase::Deploy)]).is_empty());
        assert!(extra(&mut o, "start", &[status("m", v2, Phase::Canary(0))]).is_empty());
        // Withdrawn by `withdraw`: the rollback goes on `start` too.
        assert_eq!(
            extra(&mut o, "withdraw", &[status("m", v2, Phase::Previous)]),
            ["start"]
        );
        // The Idle that follows is no longer that rollout: `start` keeps Previous.
        assert!(extra(&mut o, "withdraw", &[status("m", None, Phase::Idle)]).is_empty());
        assert!(extra(&mut o, "later", &[status("m", Some("v3@1"), Phase::Idle)]).is_empty());
        // A re-named, already rolled-back candidate is a rollout of its own commit.
        assert!(extra(&mut o, "again", &[status("m", v2, Phase::Previous)]).is_empty());
        assert!(extra(&mut o, "again2", &[status("m", None, Phase::Idle)]).is_empty());
    }

    #[test]
    fn after_a_restart_a_rollout_is_still_noted_on_the_commit_that_started_it() {
        // A fresh `Origins` (a restarted gateway) sees a rollout whose saved state says which
        // commit named its candidate.
        let mut o = Origins::default();
        let canary = |phase| RolloutStatus {
            started_revision: Some("start".into()),
            ..status("m", Some("v2@1"), phase)
        };
        assert_eq!(
            extra(&mut o, "later", &[canary(Phase::Canary(1))]),
            ["start"]
        );
        assert_eq!(extra(&mut o, "later", &[canary(Phase::Full)]), ["start"]);
        // Under the starting commit itself, nothing else to note.
        let mut o = Origins::default();
        assert!(extra(&mut o, "start", &[canary(Phase::Canary(1))]).is_empty());
    }

    #[test]
    fn only_the_rollouts_whose_phase_changed_go_back_to_their_commits() {
        let mut o = Origins::default();
        let (a, b) = (Some("a@1"), Some("b@1"));
        extra(&mut o, "c1", &[status("a", a, Phase::Canary(0))]);
        // Another commit starts b; a moves on under it.
        let both = [
            status("a", a, Phase::Canary(1)),
            status("b", b, Phase::Deploy),
        ];
        assert_eq!(extra(&mut o, "c2", &both), ["c1"]);
        // b changes under c3, a does not: only c2 (b's) gets it.
        let both = [
            status("a", a, Phase::Canary(1)),
            status("b", b, Phase::Shadow),
        ];
        assert_eq!(extra(&mut o, "c3", &both), ["c2"]);
        // Both end under c4: both starting commits.
        let both = [status("a", a, Phase::Full), status("b", b, Phase::Previous)];
        assert_eq!(extra(&mut o, "c4", &both), ["c1", "c2"]);
        // A model that left the config is forgotten; a new candidate starts at its commit.
        let b2 = [status("b", Some("b@2"), Phase::Deploy)];
        assert!(extra(&mut o, "c5", &b2).is_empty());
        assert!(!o.0.contains_key("a"));
        assert_eq!(o.0["b"].commit, "c5");
    }
}
