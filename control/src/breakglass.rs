//! Break-glass on the source of truth: pausing and resuming Git/file sync (with an optional
//! second approver), drift between the desired config and the live state, and the live state
//! exported as a config file ready to commit.
//!
//! Drift is computed per model on the candidate `weight`: the config's value (desired) against
//! the weight serving now (live). A difference counts as out of sync unless an automated rollout
//! is actively moving the weight (Deploy, ValidateHealth, Shadow, Canary, Promote, neither paused
//! nor pinned): a pin, a paused rollout, a rollback and a finished rollout (Full) all leave the
//! live state where the source does not say it is until someone acts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rollgate_config::{Config, Model, Ppm, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use serde_yaml_ng::Value as Yaml;

use crate::clock::rfc3339_unix;
use crate::operator::{AdminAuth, Audit, Refused};
use crate::reload::{ReloaderHandle, SyncPause, SyncState};
use crate::rollout::{Command, DriverHandle, Phase, RolloutStatus};

mod held;

pub use held::{describe as describe_pause, unresumed_pause, HeldSync, PauseStore, Restored};

/// How long `resume-sync --release-pins` waits for the driver to apply the unpins.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The name of the shared token (`admin.token_file` / `ROLLGATE_ADMIN_TOKEN`): whoever holds it
/// says who they are in a header, so it names no person.
pub const SHARED_TOKEN: &str = "admin";

/// Who pinned or paused each model's rollout and why, for drift reasons (the driver keeps the
/// weight; this keeps the words). Rebuilt at startup from the audit log, which is where pins
/// and pauses are recorded durably.
#[derive(Clone, Debug, Default)]
pub struct OperatorNotes(Arc<Mutex<BTreeMap<String, ModelNotes>>>);

/// The notes of one model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelNotes {
    pub pin: Option<Note>,
    pub pause: Option<Note>,
}

/// One operator action's author and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub by: String,
    pub reason: String,
}

/// One field where the live state differs from the config serving now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub field: &'static str,
    pub desired: String,
    pub live: String,
    pub reason: String,
    /// False only while an automated rollout is moving the weight.
    pub out_of_sync: bool,
}

/// The `sync` object of `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub source: String,
    pub desired: Option<String>,
    pub applied: String,
    /// `Synced` or `OutOfSync`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<SyncPause>,
    /// Why it is out of sync; empty when synced.
    pub reasons: Vec<String>,
    /// kstatus-style `Synced` and `Stalled` conditions of the source (filled by `/status`).
    pub conditions: Vec<serde_json::Value>,
}

/// The authenticated parts of a sync call.
#[derive(Debug)]
pub struct SyncRequest<'a> {
    /// The `Authorization` header value.
    pub authorization: Option<&'a [u8]>,
    /// The `X-Rollgate-Approver` header value (`Bearer <token>`).
    pub approver: Option<&'a [u8]>,
    /// `x-rollgate-actor`: who is acting (free text for the audit log).
    pub actor: Option<&'a str>,
    pub body: &'a [u8],
}

/// Body of `POST /sync/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

/// Body of `POST /sync/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    #[serde(default)]
    release_pins: bool,
}

// === impl OperatorNotes ===

impl OperatorNotes {
    /// Records a rollout command's author: pin and pause set a note, unpin and resume clear it,
    /// abort clears the pin (a rollback releases it).
    pub fn record(&self, model: &str, action: &str, by: &str, reason: &str) {
        let mut notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = notes.entry(model.to_owned()).or_default();
        let note = || {
            Some(Note {
                by: by.to_owned(),
                reason: reason.to_owned(),
            })
        };
        match action {
            "pin" => n.pin = note(),
            "unpin" | "abort" => n.pin = None,
            "pause" => n.pause = note(),
            "resume" => n.pause = None,
            _ => {}
        }
    }

    /// Replays the rollout commands of an audit log (missing file: no notes). Unreadable lines
    /// are skipped: the log is append-only and a torn last line must not stop a restart.
    pub fn from_audit(path: Option<&std::path::Path>) -> OperatorNotes {
        let notes = OperatorNotes::default();
        let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
            return notes;
        };
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let field = |k: &str| entry.get(k).and_then(Value::as_str);
            if let (Some(model), Some(action), Some(by)) =
                (field("model"), field("action"), field("actor"))
            {
                notes.record(model, action, by, field("reason").unwrap_or_default());
            }
        }
        notes
    }

    pub fn get(&self, model: &str) -> ModelNotes {
        let notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        notes.get(model).cloned().unwrap_or_default()
    }
}

// === drift ===

/// The drift of one model: its config (`m`), its live candidate weight and its rollout status.
pub fn drift(
    m: &Model,
    live: Ppm,
    rollout: Option<&RolloutStatus>,
    notes: &ModelNotes,
) -> Vec<Drift> {
    if live == m.weight {
        return Vec::new();
    }
    let (reason, out_of_sync) = weight_reason(live, rollout, notes);
    vec![Drift {
        field: "weight",
        desired: m.weight.to_string(),
        live: live.to_string(),
        reason,
        out_of_sync,
    }]
}

fn weight_reason(live: Ppm, s: Option<&RolloutStatus>, notes: &ModelNotes) -> (String, bool) {
    let Some(s) = s else {
        return ("set by the rollout engine".to_owned(), true);
    };
    if s.pinned.is_some() {
        let why = match &notes.pin {
            Some(n) => format!("pinned by {}: {}", n.by, n.reason),
            None => format!("pinned at {live} (author unknown: pinned before a restart)"),
        };
        return (why, true);
    }
    if let Some(reason) = &s.paused {
        let by = notes
            .pause
            .as_ref()
            .map_or(String::new(), |n| format!(" (by {})", n.by));
        return (format!("rollout paused: {reason}{by}"), true);
    }
    match s.phase {
        Phase::Previous | Phase::Rollback => (format!("rolled back: {}", s.reason), true),
        Phase::Full => (
            "rollout complete (Full): make the candidate the stable in the source".to_owned(),
            true,
        ),
        Phase::Idle => ("set by the rollout engine".to_owned(), true),
        Phase::Canary(k) => (
            format!("rollout in progress (Canary step {})", k + 1),
            false,
        ),
        phase => (format!("rollout in progress ({phase:?})"), false),
    }
}

/// The `sync` object: the source's revision against the serving one, and every reason the live
/// state is not what the source says.
pub fn sync_report(
    state: SyncState,
    rejected: Option<&str>,
    drift: &[(String, Vec<Drift>)],
) -> SyncReport {
    let mut reasons = Vec::new();
    if let Some(desired) = state.desired.as_deref().filter(|d| *d != state.applied) {
        let applied = &state.applied;
        reasons.push(match (&state.paused, rejected == Some(desired)) {
            (Some(p), _) => format!(
                "sync paused by {}{}: {}; source at {desired}, serving {applied}",
                p.by,
                p.approver
                    .as_ref()
                    .map_or(String::new(), |a| format!(" (approved by {a})")),
                p.reason
            ),
            (None, true) => {
                format!("source revision {desired} is invalid (see last_reload); serving {applied}")
            }
            (None, false) => {
                format!("source revision {desired} not applied yet; serving {applied}")
            }
        });
    }
    for (model, entries) in drift {
        for d in entries.iter().filter(|d| d.out_of_sync) {
            reasons.push(format!(
                "model {model}: {} {} live, {} desired ({})",
                d.field, d.live, d.desired, d.reason
            ));
        }
    }
    SyncReport {
        source: state.source,
        desired: state.desired,
        applied: state.applied,
        status: if reasons.is_empty() {
            "Synced"
        } else {
            "OutOfSync"
        },
        paused: state.paused,
        reasons,
        conditions: Vec::new(),
    }
}

// === sync pause and resume ===

/// The audit actor of a call made with the token named `token`: a named token is the actor (the
/// header cannot rename it); the shared `admin` token takes the name in `x-rollgate-actor`, or
/// `admin-token` without one.
pub fn actor<'a>(token: &'a str, header: Option<&'a str>) -> &'a str {
    match (token, header) {
        (SHARED_TOKEN, Some(a)) => a,
        (SHARED_TOKEN, None) => "admin-token",
        (name, _) => name,
    }
}

/// `POST /sync/pause`: a `sync` token, and with `approvers: 2` a second `sync` token of another
/// person in `X-Rollgate-Approver` (named tokens only, see [`second_approver`]). Audited with
/// both names, and saved in `store` with the revision it holds, so that a restart comes back
/// paused on it.
pub fn pause_sync(
    reloader: &ReloaderHandle,
    auth: Option<&AdminAuth>,
    approvers: u32,
    audit: &Audit,
    store: &PauseStore,
    req: SyncRequest<'_>,
) -> Result<Value, Refused> {
    let auth = auth.ok_or(Refused::Unauthorized)?;
    let caller = auth.authorize(req.authorization, Role::Sync)?;
    let body: PauseBody = json_body(req.body)?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| {
            Refused::BadRequest("a pause needs a reason: {\"reason\": \"...\"}".into())
        })?;
    let by = actor(caller.name, req.actor);
    let approver = if approvers >= 2 {
        Some(second_approver(auth, caller.name, by, req.approver)?)
    } else {
        None
    };
    if let Some(p) = reloader.sync_state().paused {
        return Err(Refused::Conflict(format!(
            "sync is already paused by {} since {}: {}",
            p.by, p.since_unix, p.reason
        )));
    }
    let pause = SyncPause {
        by: by.to_owned(),
        approver: approver.map(str::to_owned),
        reason,
        since_unix: unix_secs(),
    };
    reloader.pause_sync(pause.clone());
    let state = reloader.sync_state();
    let saved = save_pause(reloader, store, &pause, &state.applied);
    let entry = json!({
        "time": unix_secs_f64(),
        "action": "pause-sync",
        "actor": pause.by,
        "token": caller.name,
        "approver": pause.approver,
        "reason": pause.reason,
        "source": state.source,
        "desired": state.desired,
        "applied": state.applied,
    });
    audit.record(&entry);
    Ok(json!({ "accepted": true, "audit": entry, "sync": state, "saved": saved }))
}

/// Saves the pause with the revision serving (`applied`) and its text; what the answer says of
/// it: the file, `null` without a `state_dir`, or the error. A pause that could not be saved
/// still holds in this process (break-glass must work on a full disk), and says so loudly.
fn save_pause(
    reloader: &ReloaderHandle,
    store: &PauseStore,
    pause: &SyncPause,
    applied: &str,
) -> Value {
    let Some(text) = reloader.applied_text() else {
        return json!({ "error": "the serving config text is unknown: the pause is not saved" });
    };
    match store.save(&HeldSync::new(pause, applied, &text)) {
        Ok(Some(path)) => json!(path.display().to_string()),
        Ok(None) => {
            tracing::warn!("no state_dir: the sync pause is not saved, a restart applies the source's newest revision (the audit log still names the pause)");
            Value::Null
        }
        Err(e) => {
            tracing::error!(error = %e, "saving the sync pause failed: a restart would apply the source's newest revision");
            json!({ "error": e })
        }
    }
}

/// The approver's token name: valid, with the `sync` role, and another person than the
/// requester (token `requester`, audit actor `by`) by token and by name. The shared `admin`
/// token is refused on either side: anyone holding it may write any name in
/// `x-rollgate-actor`, so with it one person holding two tokens could pass as two.
fn second_approver<'a>(
    auth: &'a AdminAuth,
    requester: &str,
    by: &str,
    header: Option<&[u8]>,
) -> Result<&'a str, Refused> {
    if requester == SHARED_TOKEN {
        return Err(Refused::Forbidden(
            "with admin.sync_pause_approvers: 2 the shared `admin` token cannot pause sync (it \
             names no person): use a named `sync` token from admin.tokens"
                .into(),
        ));
    }
    let Some(header) = header else {
        return Err(Refused::Forbidden(
            "pausing sync needs a second approver (admin.sync_pause_approvers: 2): send another \
             `sync` token as `X-Rollgate-Approver: Bearer <token>`"
                .into(),
        ));
    };
    let approver = auth.identify(Some(header)).ok_or_else(|| {
        Refused::Forbidden("the X-Rollgate-Approver token is missing or wrong".into())
    })?;
    if approver.name == SHARED_TOKEN {
        return Err(Refused::Forbidden(
            "the shared `admin` token cannot approve a sync pause (it names no person): the \
             approver needs a named `sync` token from admin.tokens"
                .into(),
        ));
    }
    if approver.name == requester {
        return Err(Refused::Forbidden(format!(
            "the approver must be a different token than the requester (both are `{requester}`)"
        )));
    }
    if approver.name == by {
        return Err(Refused::Forbidden(format!(
            "the approver must be a different person than the requester (both are `{by}`)"
        )));
    }
    if !approver.has(Role::Sync) {
        return Err(Refused::Forbidden(format!(
            "approver token `{}` lacks the `sync` role",
            approver.name
        )));
    }
    Ok(approver.name)
}

/// `POST /sync/resume`: clears the pause and applies the source now; with `release_pins` (which
/// also needs the `operate` role: it undoes operators' pins, as `unpin` does) every pinned
/// rollout is unpinned first. Audited; 409 and not audited when there is nothing to act on
/// (sync not paused and no pin to release), as for the rollout commands.
pub async fn resume_sync(
    reloader: &ReloaderHandle,
    driver: Option<&DriverHandle>,
    auth: Option<&AdminAuth>,
    audit: &Audit,
    store: &PauseStore,
    notes: &OperatorNotes,
    req: SyncRequest<'_>,
) -> Result<Value, Refused> {
    let auth = auth.ok_or(Refused::Unauthorized)?;
    let caller = auth.authorize(req.authorization, Role::Sync)?;
    let body: ResumeBody = json_body(req.body)?;
    if body.release_pins && !caller.has(Role::Operate) {
        return Err(Refused::Forbidden(format!(
            "token `{}` lacks the `operate` role, which release_pins needs (it unpins \
             operators' pins)",
            caller.name
        )));
    }
    let by = actor(caller.name, req.actor);
    let pinned = match (body.release_pins, driver) {
        (true, Some(d)) => pinned_models(d),
        _ => Vec::new(),
    };
    let was = reloader.sync_state().paused;
    if was.is_none() && pinned.is_empty() {
        return Err(Refused::Conflict(if body.release_pins {
            "sync is not paused and no rollout is pinned: nothing to resume".into()
        } else {
            "sync is not paused: nothing to resume".into()
        }));
    }
    let released = match driver {
        Some(d) if !pinned.is_empty() => release_pins(d, notes, by, pinned).await?,
        _ => Vec::new(),
    };
    // Forgotten before the source is applied: a restart from here on must not pause again.
    if let Err(e) = store.clear() {
        tracing::error!(error = %e, "removing the saved sync pause failed: a restart would come back paused");
    }
    let outcome = reloader.resume_sync().await;
    let state = reloader.sync_state();
    let entry = json!({
        "time": unix_secs_f64(),
        "action": "resume-sync",
        "actor": by,
        "token": caller.name,
        "was_paused": was,
        "released_pins": released,
        "reload": outcome.as_ref().map(crate::status::outcome_json),
        "desired": state.desired,
        "applied": state.applied,
    });
    audit.record(&entry);
    Ok(json!({ "accepted": true, "audit": entry, "sync": state }))
}

/// The models whose rollout is pinned now.
fn pinned_models(driver: &DriverHandle) -> Vec<String> {
    driver
        .status()
        .into_iter()
        .filter(|s| s.pinned.is_some())
        .map(|s| s.model)
        .collect()
}

/// Unpins each of `pinned` and waits (bounded) for the driver to apply it.
async fn release_pins(
    driver: &DriverHandle,
    notes: &OperatorNotes,
    by: &str,
    pinned: Vec<String>,
) -> Result<Vec<String>, Refused> {
    let mut applied = Vec::with_capacity(pinned.len());
    for model in &pinned {
        applied.push(driver.command(model, Command::Unpin).ok_or(Refused::Busy)?);
        notes.record(model, "unpin", by, "sync resumed with release_pins");
    }
    // The driver applies the unpins on its next step, at once (it was woken).
    let _ = tokio::time::timeout(APPLY_WAIT, async {
        for a in applied {
            let _ = a.await;
        }
    })
    .await;
    Ok(pinned)
}

fn json_body<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Refused> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Refused::BadRequest(format!("body: {e}")))
}

// === live config ===

/// The live state as a config file: the serving config's text with each model's `weight` set
/// to its live weight where they differ, under a comment header saying from which revision,
/// when and why. The result parses with [`rollgate_config::parse`] (checked).
pub fn live_config(
    applied_text: &str,
    config: &Config,
    live: &BTreeMap<String, Ppm>,
    drift: &[(String, Vec<Drift>)],
    sync: &SyncState,
    now_unix: u64,
) -> Result<String, String> {
    let mut doc: Yaml = serde_yaml_ng::from_str(applied_text)
        .map_err(|e| format!("the serving config text does not parse: {e}"))?;
    let mut changed = Vec::new();
    if let Some(models) = doc.get_mut("models").and_then(Yaml::as_sequence_mut) {
        for item in models.iter_mut() {
            let Some(name) = item.get("name").and_then(Yaml::as_str).map(str::to_owned) else {
                continue;
            };
            let Some(m) = config.models.iter().find(|m| m.name == name) else {
                continue;
            };
            let Some(w) = live.get(&name).filter(|w| **w != m.weight) else {
                continue;
            };
            if let Some(map) = item.as_mapping_mut() {
                map.insert(Yaml::from("weight"), Yaml::from(w.to_string()));
                changed.push(name);
            }
        }
    }
    let body = serde_yaml_ng::to_string(&doc).map_err(|e| format!("writing YAML: {e}"))?;
    let text = format!("{}{body}", header(sync, drift, now_unix));
    rollgate_config::parse(&text)
        .map_err(|e| format!("the exported config does not validate:\n{e}"))?;
    Ok(text)
}

fn header(sync: &SyncState, drift: &[(String, Vec<Drift>)], now_unix: u64) -> String {
    let mut h = format!(
        "# rollgate live state, exported {} from serving revision {}\n# source: {}",
        rfc3339_unix(now_unix),
        sync.applied,
        sync.source
    );
    match sync.desired.as_deref() {
        Some(d) if d != sync.applied => h.push_str(&format!(
            " (now at {d}: changes made there since are NOT in this file; merge them by hand)\n"
        )),
        _ => h.push('\n'),
    }
    if let Some(p) = &sync.paused {
        let approver = p
            .approver
            .as_ref()
            .map_or(String::new(), |a| format!(" (approved by {a})"));
        h.push_str(&format!(
            "# sync paused at {} by {}{approver}: {}\n",
            rfc3339_unix(p.since_unix),
            p.by,
            one_line(&p.reason)
        ));
    }
    let entries: Vec<String> = drift
        .iter()
        .flat_map(|(model, ds)| {
            ds.iter().map(move |d| {
                format!(
                    "#   model {model}: {} {} (source says {}): {}\n",
                    d.field,
                    d.live,
                    d.desired,
                    one_line(&d.reason)
                )
            })
        })
        .collect();
    if entries.is_empty() {
        h.push_str("# The live weights are the ones this revision sets.\n");
    } else {
        h.push_str("# Live state that differs from that revision (written below):\n");
        h.extend(entries);
    }
    h.push_str("# Commit this file to the source to make the live state the desired state.\n");
    h
}

/// No newline can end the comment early and start YAML.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Unix seconds now.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
