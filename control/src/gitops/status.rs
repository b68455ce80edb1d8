//! The kstatus object of one model: what Flux, Argo CD and `kubectl wait` read. Built from the
//! rollout driver's status, the serving config revision and the reload funnel's latest outcome;
//! condition transition times are kept by a [`ConditionClock`] so that they move only when a
//! condition's status flips.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::clock::rfc3339;
use crate::reload::ReloadOutcome;
use crate::rollout::{Phase, RolloutStatus};

/// `status` of a `ModelRollout` (kstatus shape, camelCase), served by `GET /status/models/{model}`
/// and patched into Kubernetes by the `k8s` feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "k8s", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    /// Over HTTP: the gateway's config generation (1 + applied reloads). In Kubernetes: the
    /// `metadata.generation` of the resource the status was written for.
    pub observed_generation: i64,
    /// The config revision serving now (a content hash, or the commit SHA under Git).
    pub observed_revision: String,
    /// Idle|Deploy|ValidateHealth|Shadow|Canary|Promote|Full|Rollback|Previous.
    pub phase: String,
    /// Canary step index (0-based), only in `Canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// The candidate the rollout is about (`revision@fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    /// Candidate traffic share now, e.g. `10%`.
    pub weight: String,
    /// Shadow mirror sample now, e.g. `5%`.
    pub mirror: String,
    /// Operator pause reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Operator pin of the candidate weight, e.g. `30%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Why the last rollout transition happened.
    pub reason: String,
    /// `Ready`, `Reconciling`, `Stalled`, always all three.
    pub conditions: Vec<StatusCondition>,
    /// The gate evaluation behind the phase (free-form: per gate verdict, value, threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "k8s", schemars(schema_with = "free_form"))]
    pub gates: Option<serde_json::Value>,
}

/// One kstatus condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "k8s", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason (`Full`, `Canary`, `RolledBack`, `InvalidConfig`, ...).
    pub reason: String,
    pub message: String,
    /// RFC 3339, UTC: when `status` last changed.
    pub last_transition_time: String,
}

/// Transition times per model and condition type. A time changes only when the status flips.
#[derive(Debug, Default)]
pub struct ConditionClock {
    seen: HashMap<(String, String), (String, String)>,
}

/// What the verdict endpoints answer, from one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Promote,
    Hold,
    Rollback,
}

/// A hold that is not waiting for evidence: invalid config, pause, pin or a holding rollout.
pub(crate) fn is_held(s: &ModelStatus) -> bool {
    condition(s, "Stalled").is_some_and(|c| c.status == "True")
}

/// The condition of a type, if present.
pub fn condition<'a>(s: &'a ModelStatus, kind: &str) -> Option<&'a StatusCondition> {
    s.conditions.iter().find(|c| c.kind == kind)
}

/// The verdict for a status: `rollback` once rollgate rolled the candidate back (until a new
/// candidate); `promote` at Promote/Full unless held or still waiting for a manual `approve`
/// (Flagger's `confirm-promotion` or an Argo step must not promote before the person does);
/// `hold` otherwise.
pub fn verdict(s: &ModelStatus) -> Verdict {
    match s.phase.as_str() {
        "Rollback" | "Previous" => Verdict::Rollback,
        _ if is_held(s) => Verdict::Hold,
        "Promote" if s.reason == crate::rollout::AWAITING_APPROVAL => Verdict::Hold,
        "Promote" | "Full" => Verdict::Promote,
        _ => Verdict::Hold,
    }
}

/// Inputs of [`build`] besides the rollout status.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Revision of the serving snapshot.
    pub serving: &'a str,
    /// The reload funnel's most recent outcome.
    pub latest: Option<&'a ReloadOutcome>,
    /// Whether the serving config names a candidate for this model.
    pub has_candidate: bool,
    pub generation: i64,
}

/// Builds the status without transition times (see [`ConditionClock::stamp`]).
pub fn build(r: &RolloutStatus, cx: Context<'_>) -> ModelStatus {
    let (phase, step) = phase_name(r.phase);
    let gates = r
        .gates
        .as_ref()
        .or(r.transition_gates.as_ref())
        .and_then(|g| serde_json::to_value(g).ok());
    ModelStatus {
        observed_generation: cx.generation,
        observed_revision: cx.serving.to_owned(),
        phase: phase.to_owned(),
        step,
        candidate: r.candidate.clone(),
        weight: r.weight.clone(),
        mirror: r.mirror.clone(),
        paused: r.paused.clone(),
        pinned: r.pinned.clone(),
        reason: r.reason.clone(),
        conditions: conditions(r, cx),
        gates,
    }
}

/// A phase's name and, for Canary, its step.
pub fn phase_name(p: Phase) -> (&'static str, Option<i64>) {
    match p {
        Phase::Idle => ("Idle", None),
        Phase::Deploy => ("Deploy", None),
        Phase::ValidateHealth => ("ValidateHealth", None),
        Phase::Shadow => ("Shadow", None),
        Phase::Canary(i) => ("Canary", Some(i64::try_from(i).unwrap_or(i64::MAX))),
        Phase::Promote => ("Promote", None),
        Phase::Full => ("Full", None),
        Phase::Rollback => ("Rollback", None),
        Phase::Previous => ("Previous", None),
    }
}

fn conditions(r: &RolloutStatus, cx: Context<'_>) -> Vec<StatusCondition> {
    let (phase, step) = phase_name(r.phase);
    let at = match step {
        Some(i) => format!("{phase} step {} at {}", i + 1, r.weight),
        None => format!("{phase} at {}", r.weight),
    };
    let progressing = matches!(
        r.phase,
        Phase::Deploy | Phase::ValidateHealth | Phase::Shadow | Phase::Canary(_) | Phase::Promote
    );
    let rolled_back = matches!(r.phase, Phase::Rollback | Phase::Previous);
    let stalled = stalled(r, cx, rolled_back);
    let ready = match r.phase {
        Phase::Full => (
            true,
            "Full",
            format!("candidate serves all traffic: {}", r.reason),
        ),
        Phase::Idle if !cx.has_candidate => {
            (true, "Stable", "stable serves all traffic".to_owned())
        }
        Phase::Idle => (
            true,
            "Idle",
            format!(
                "no rollout plan: the configured split serves ({} to the candidate)",
                r.weight
            ),
        ),
        _ if rolled_back => (false, "RolledBack", format!("{at}: {}", r.reason)),
        _ => (false, phase, format!("{at}: {}", r.reason)),
    };
    // Only an operator pause or pin and a metric hold stop the rollout; an invalid newer config
    // stalls the model (rollgate keeps serving the old revision) while the rollout goes on.
    let reconciling = if progressing && hold(r).is_none() {
        (true, phase, format!("{at}: {}", r.reason))
    } else if progressing {
        (false, "Held", format!("{at}: held"))
    } else {
        (false, "Settled", format!("{phase}: nothing in progress"))
    };
    let stalled = stalled.map_or_else(
        || (false, "Healthy", "no error and no hold".to_owned()),
        |(reason, message)| (true, reason, message),
    );
    [
        ("Ready", ready),
        ("Reconciling", reconciling),
        ("Stalled", stalled),
    ]
    .into_iter()
    .map(|(kind, (on, reason, message))| StatusCondition {
        kind: kind.to_owned(),
        status: if on { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: String::new(),
    })
    .collect()
}

/// Why the model is stuck, most urgent first: an invalid newer config, a rollback, an operator
/// pause or pin, a rollout holding on metric errors.
fn stalled(
    r: &RolloutStatus,
    cx: Context<'_>,
    rolled_back: bool,
) -> Option<(&'static str, String)> {
    if let Some(ReloadOutcome::Invalid { revision, errors }) = cx.latest {
        if revision != cx.serving {
            let message = format!(
                "revision {revision} is invalid ({}: {}); revision {} keeps serving",
                count(errors.len(), "error"),
                errors.join("; "),
                cx.serving
            );
            return Some(("InvalidConfig", message));
        }
    }
    if rolled_back {
        return Some(("RolledBack", format!("candidate rolled back: {}", r.reason)));
    }
    hold(r)
}

/// What keeps the rollout from moving: an operator pause or pin, or a hold on metric errors.
/// The driver's own conditions (`rollouts[].conditions`) hold on the same reasons.
pub(crate) fn hold(r: &RolloutStatus) -> Option<(&'static str, String)> {
    if let Some(why) = &r.paused {
        return Some(("Paused", format!("paused by an operator: {why}")));
    }
    if let Some(w) = &r.pinned {
        return Some((
            "Pinned",
            format!("candidate weight pinned at {w} by an operator"),
        ));
    }
    if r.reason.starts_with("holding") {
        return Some(("Holding", r.reason.clone()));
    }
    None
}

#[cfg(feature = "k8s")]
fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

// === impl ConditionClock ===

impl ConditionClock {
    /// Fills `lastTransitionTime` for each condition of `model`: the remembered time while the
    /// status is unchanged, `now` when it flipped or is new.
    pub fn stamp(&mut self, model: &str, status: &mut ModelStatus, now: SystemTime) {
        for c in &mut status.conditions {
            let key = (model.to_owned(), c.kind.clone());
            let entry = self
                .seen
                .entry(key)
                .or_insert_with(|| (c.status.clone(), rfc3339(now)));
            if entry.0 != c.status {
                *entry = (c.status.clone(), rfc3339(now));
            }
            c.last_transition_time.clone_from(&entry.1);
        }
    }

    /// Forgets models no longer configured.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.seen.retain(|(m, _), _| keep(m));
    }
}

/// The Kubernetes object name (`ModelRollout`, and the object Flux events are about) for a
/// model: the model name itself when it is a valid DNS-1123 subdomain (lowercase letters, digits,
/// `-` and `.`, starting and ending with a letter or digit, at most 253 characters); otherwise
/// it lowercased, every other character as `-`, and `-` plus 8 hex digits of a hash of the
/// real name, so that `meta-llama/Llama-3-8B` is `meta-llama-llama-3-8b-1f0c2d3e` and two
/// names that map alike stay apart. The real name is the object's `spec.model`.
pub fn object_name(model: &str) -> String {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = model.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1]);
    if valid {
        return model.to_owned();
    }
    let mut base: String = model
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.') => c,
            _ => '-',
        })
        .collect();
    // Room for the suffix; ends on a letter or digit.
    base.truncate(243);
    let base = base.trim_matches(|c: char| c == '-' || c == '.');
    let hash = rollgate_proxy::hash64(model.as_bytes()) >> 32;
    if base.is_empty() {
        format!("model-{hash:08x}")
    } else {
        format!("{base}-{hash:08x}")
    }
}

/// `1 error`, `3 errors`.
pub fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
