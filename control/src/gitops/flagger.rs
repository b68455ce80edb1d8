//! Flagger webhooks: `POST /gitops/flagger/{hook}` for every hook type. Flagger reads only the
//! status code: 200–202 passes, anything above 202 fails or holds; the `rollback` hook is
//! inverted (2xx = "roll back now"). Each answer is decided from the model's verdict.
//!
//! | hook | promote | hold (progressing, idle) | hold (stalled: invalid, paused, pinned) | rollback |
//! |---|---|---|---|---|
//! | confirm-rollout | 200 | 200 | 412 | 412 |
//! | pre-rollout | 200 | 200 | 200 | 412 |
//! | rollout | 200 | 200 | 200 | 412 |
//! | confirm-traffic-increase | 200 | 200 | 412 | 412 |
//! | confirm-promotion | 200 | 412 | 412 | 412 |
//! | post-rollout | 200 | 200 | 200 | 200 |
//! | rollback | 412 | 412 | 412 | 200 |
//! | event | 202 | 202 | 202 | 202 |
//!
//! Gates Flagger retries (`confirm-*`) close while rollgate is held, so Flagger waits; checks
//! that count toward Flagger's failure threshold (`pre-rollout`, `rollout`) fail only on a
//! rollgate rollback, so a pause never makes Flagger roll back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::{is_held, verdict, ModelStatus, Verdict};

/// Flagger's webhook types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    ConfirmRollout,
    PreRollout,
    Rollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Event,
    Rollback,
}

/// The JSON Flagger posts (`checksum` and `metadata` are optional; event hooks carry
/// `eventMessage`, `eventType` and `timestamp` in `metadata`).
#[derive(Clone, Debug, Deserialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a hook answers: the HTTP status and whether it means "yes" to Flagger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub pass: bool,
}

/// Status code for "no" (the gate stays closed, the check fails, no rollback wanted).
pub const NO: u16 = 412;

// === impl Hook ===

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::ConfirmRollout,
        Hook::PreRollout,
        Hook::Rollout,
        Hook::ConfirmTrafficIncrease,
        Hook::ConfirmPromotion,
        Hook::PostRollout,
        Hook::Event,
        Hook::Rollback,
    ];

    pub fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::ConfirmRollout => "confirm-rollout",
            Hook::PreRollout => "pre-rollout",
            Hook::Rollout => "rollout",
            Hook::ConfirmTrafficIncrease => "confirm-traffic-increase",
            Hook::ConfirmPromotion => "confirm-promotion",
            Hook::PostRollout => "post-rollout",
            Hook::Event => "event",
            Hook::Rollback => "rollback",
        }
    }

    /// The answer for a model's status (the table in the module docs).
    pub fn answer(self, s: &ModelStatus) -> Answer {
        let v = verdict(s);
        let held = is_held(s);
        let yes = match self {
            Hook::ConfirmRollout | Hook::ConfirmTrafficIncrease => v != Verdict::Rollback && !held,
            Hook::PreRollout | Hook::Rollout => v != Verdict::Rollback,
            Hook::ConfirmPromotion => v == Verdict::Promote,
            Hook::PostRollout => true,
            Hook::Rollback => v == Verdict::Rollback,
            Hook::Event => {
                return Answer {
                    status: 202,
                    pass: true,
                }
            }
        };
        Answer {
            status: if yes { 200 } else { NO },
            pass: yes,
        }
    }
}

// === impl Payload ===

impl Payload {
    /// The model a payload is about: `metadata.model` when set, else the canary's `name`.
    pub fn model(&self) -> &str {
        self.metadata
            .get("model")
            .map_or(self.name.as_str(), String::as_str)
    }
}
