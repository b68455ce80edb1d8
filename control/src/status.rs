//! `/status`: what is serving, from which revision, and what the data plane sees; the sync
//! state and per-model drift (desired vs live); the live state as a config file.

use rollgate_config::Model;
use rollgate_proxy::{ModelObservation, ProxyHandle, VariantObservation};
use serde::Serialize;
use serde_json::{json, Value};

use std::collections::{BTreeMap, HashMap};

use crate::breakglass::{Drift, OperatorNotes, SyncReport};
use crate::reload::{ReloadOutcome, ReloaderHandle};
use crate::rollout::{DriverHandle, RolloutStatus};

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Revision of the serving config.
    pub revision: String,
    /// The last reload that changed something or failed, or the "unchanged" one that ended a
    /// failure (the source reverted to the serving revision, or readable again).
    pub last_reload: Option<Value>,
    pub reloads: Value,
    /// Settings changed since the process started that only a restart applies (their start
    /// values still serve), as `… (restart required)` change lines; empty when none.
    pub restart_pending: Vec<String>,
    pub models: Vec<Value>,
    /// One kstatus-shaped rollout status per model with a rollout plan.
    pub rollouts: Vec<crate::rollout::RolloutStatus>,
    /// The config source: desired vs applied revision, paused or not, why out of sync, and
    /// conditions `Synced` (desired revision applied) and `Stalled` (naming the revision and
    /// every error while the source's newest revision is one that was refused, or the read
    /// error while the source is unreadable).
    pub sync: SyncReport,
    /// The kstatus object of every model, by name (what `GET /status/models/{model}` serves).
    pub kstatus: std::collections::BTreeMap<String, crate::gitops::ModelStatus>,
}

/// The live weight and drift of every serving model, in config order.
struct Live {
    weights: BTreeMap<String, rollgate_config::Ppm>,
    drift: Vec<(String, Vec<Drift>)>,
}

// === impl StatusReport ===

impl StatusReport {
    /// Keeps only `model`'s entries in `models`, `rollouts` and `kstatus`; false when the
    /// serving config has no such model.
    pub fn only(&mut self, model: &str) -> bool {
        self.models.retain(|m| m["name"] == model);
        self.rollouts.retain(|r| r.model == model);
        self.kstatus.retain(|name, _| name == model);
        !self.models.is_empty()
    }

    /// The report without operator notes (drift reasons do not name who pinned).
    pub fn build(
        proxy: &ProxyHandle,
        reloader: &ReloaderHandle,
        driver: Option<&DriverHandle>,
    ) -> StatusReport {
        Self::build_with_notes(proxy, reloader, driver, &OperatorNotes::default())
    }

    pub fn build_with_notes(
        proxy: &ProxyHandle,
        reloader: &ReloaderHandle,
        driver: Option<&DriverHandle>,
        notes: &OperatorNotes,
    ) -> StatusReport {
        let snap = proxy.snapshot();
        let observed = proxy.observe();
        let rollouts = driver.map(DriverHandle::status).unwrap_or_default();
        let live = Live::read(proxy, snap.config(), &rollouts, notes);
        // By name: a scan per model made `/status` quadratic in the models.
        let observed: HashMap<&str, &ModelObservation> =
            observed.iter().map(|o| (&*o.model, o)).collect();
        let models = snap
            .config()
            .models
            .iter()
            .zip(&live.drift)
            .map(|(m, (_, drift))| {
                let weight = live.weights.get(&m.name).copied().unwrap_or(m.weight);
                model_entry(m, weight, drift, observed.get(m.name.as_str()).copied())
            })
            .collect();
        Self::assemble(snap.revision(), reloader, models, rollouts, &live.drift)
    }

    /// What [`StatusReport::build_with_notes`] and then [`StatusReport::only`] give, built
    /// from `model`'s entries alone (`kstatus` left empty for the caller, as there). `sync`
    /// still reads every model's weight, which is cheap: it reports every drifting model.
    /// `None` when the serving config has no such model.
    pub fn build_one(
        proxy: &ProxyHandle,
        reloader: &ReloaderHandle,
        driver: Option<&DriverHandle>,
        notes: &OperatorNotes,
        model: &str,
    ) -> Option<StatusReport> {
        let snap = proxy.snapshot();
        let config = snap.config();
        let m = config.model(model)?;
        let directives = proxy.directives();
        let rollout_of = |m: &Model| driver.and_then(|d| d.status_of(m, directives.get(&m.name)));
        let rollout = rollout_of(m);
        let weight = crate::rollout::traffic(m, directives.get(&m.name)).weight;
        let drift = crate::breakglass::drift(m, weight, rollout.as_ref(), &notes.get(&m.name));
        let observed = proxy.observe_model(&m.name);
        let entry = model_entry(m, weight, &drift, observed.as_ref());
        let drifted = drifting(config, &directives, notes, rollout_of);
        let rollouts = rollout.into_iter().collect();
        Some(Self::assemble(
            snap.revision(),
            reloader,
            vec![entry],
            rollouts,
            &drifted,
        ))
    }

    /// The report around its model entries: the serving revision, the reload funnel's state
    /// and the sync state (`drift`: each model's, or at least every drifting one's).
    fn assemble(
        revision: &str,
        reloader: &ReloaderHandle,
        models: Vec<Value>,
        rollouts: Vec<RolloutStatus>,
        drift: &[(String, Vec<Drift>)],
    ) -> StatusReport {
        let reloads: serde_json::Map<String, Value> = reloader
            .counts()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let last = reloader.last();
        let mut sync =
            crate::breakglass::sync_report(reloader.sync_state(), rejected(last.as_ref()), drift);
        if let Some(ReloadOutcome::Unreadable { error }) = &last {
            // No desired revision to compare: say why instead of reading as synced.
            sync.reasons.insert(0, unreadable(error, &sync.applied));
            sync.status = "OutOfSync";
        }
        sync.conditions = sync_conditions(reloader);
        StatusReport {
            revision: revision.to_owned(),
            last_reload: last.as_ref().map(outcome_json),
            reloads: Value::Object(reloads),
            restart_pending: reloader.restart_pending(),
            models,
            rollouts,
            sync,
            kstatus: std::collections::BTreeMap::new(),
        }
    }
}

/// `GET /live-config`: the serving config text with live weights, ready to commit.
pub(crate) fn live_config(
    proxy: &ProxyHandle,
    reloader: &ReloaderHandle,
    driver: Option<&DriverHandle>,
    notes: &OperatorNotes,
) -> Result<String, String> {
    let snap = proxy.snapshot();
    let text = reloader
        .applied_text()
        .ok_or("the text of the serving config is not known yet (it changed on disk before it was read at startup); reload and retry")?;
    let rollouts = driver.map(DriverHandle::status).unwrap_or_default();
    let live = Live::read(proxy, snap.config(), &rollouts, notes);
    crate::breakglass::live_config(
        &text,
        snap.config(),
        &live.weights,
        &live.drift,
        &reloader.sync_state(),
        crate::breakglass::unix_secs(),
    )
}

fn rejected(last: Option<&ReloadOutcome>) -> Option<&str> {
    match last {
        Some(ReloadOutcome::Invalid { revision, .. }) => Some(revision),
        _ => None,
    }
}

fn unreadable(error: &str, applied: &str) -> String {
    format!("source unreadable: {error}; serving {applied}")
}

// === impl Live ===

impl Live {
    fn read(
        proxy: &ProxyHandle,
        config: &rollgate_config::Config,
        rollouts: &[RolloutStatus],
        notes: &OperatorNotes,
    ) -> Live {
        let directives = proxy.directives();
        let rollouts: HashMap<&str, &RolloutStatus> =
            rollouts.iter().map(|s| (s.model.as_str(), s)).collect();
        let mut weights = BTreeMap::new();
        let mut drift = Vec::with_capacity(config.models.len());
        for m in &config.models {
            let w = crate::rollout::traffic(m, directives.get(&m.name)).weight;
            let status = rollouts.get(m.name.as_str()).copied();
            let d = crate::breakglass::drift(m, w, status, &notes.get(&m.name));
            weights.insert(m.name.clone(), w);
            drift.push((m.name.clone(), d));
        }
        Live { weights, drift }
    }
}

/// The models whose live weight is not their configured one, with their drift, in config
/// order: what `sync` reports about models (a model on its configured weight has no drift).
/// Finding them takes no status, note or allocation per model.
fn drifting(
    config: &rollgate_config::Config,
    directives: &rollgate_proxy::Directives,
    notes: &OperatorNotes,
    rollout_of: impl Fn(&Model) -> Option<RolloutStatus>,
) -> Vec<(String, Vec<Drift>)> {
    (config.models.iter())
        .filter_map(|m| {
            let live = crate::rollout::traffic(m, directives.get(&m.name)).weight;
            if live == m.weight {
                return None;
            }
            let rollout = rollout_of(m);
            let drift = crate::breakglass::drift(m, live, rollout.as_ref(), &notes.get(&m.name));
            Some((m.name.clone(), drift))
        })
        .collect()
}

/// One model's entry in `models`: config, live weight (`weight`), drift and observations.
fn model_entry(
    m: &Model,
    weight: rollgate_config::Ppm,
    drift: &[Drift],
    observed: Option<&ModelObservation>,
) -> Value {
    json!({
        "name": m.name,
        "default": m.default,
        "weight": weight.to_string(),
        "weight_ppm": weight.get(),
        "desired_weight": m.weight.to_string(),
        "drift": drift,
        "stable": backend(&m.stable),
        "candidate": m.candidate.as_ref().map(backend),
        "shadow": m.shadow.as_ref().map(|s| json!({ "sample": s.sample.to_string() })),
        "observed": observed.map(observation),
    })
}

fn backend(b: &rollgate_config::Backend) -> Value {
    json!({
        "engine": b.engine.as_str(),
        "revision": b.revision,
        "endpoints": b.endpoints.iter().map(|e| e.url.as_str()).collect::<Vec<_>>(),
    })
}

fn observation(o: &ModelObservation) -> Value {
    json!({
        "stable": variant(&o.stable),
        "candidate": variant(&o.candidate),
        "shadow": variant(&o.shadow),
        "shadow_dropped": o.shadow_drops.iter().sum::<u64>(),
        "ejections": { "stable": o.ejections[0], "candidate": o.ejections[1] },
        "candidate_fallbacks": o.fallbacks,
    })
}

fn variant(v: &VariantObservation) -> Value {
    let total: u64 = v.status.iter().sum();
    json!({
        "requests": total,
        "status": { "1xx": v.status[0], "2xx": v.status[1], "3xx": v.status[2], "4xx": v.status[3], "5xx": v.status[4], "error": v.status[5] },
        "stream_failures": v.stream_failures.iter().sum::<u64>(),
        "cancelled": v.cancelled,
        "inflight": v.inflight,
        "latency_p50_seconds": v.latency.quantile(0.5),
        "latency_p99_seconds": v.latency.quantile(0.99),
        "ttft_p95_seconds": v.ttft.quantile(0.95),
    })
}

/// The sync state's kstatus-style conditions: `Synced` (the source's newest revision is the
/// one serving) and `Stalled`, with every error while that revision was refused, or with the
/// read error while the source is unreadable (`SourceUnreadable`; nothing to compare, so
/// `Synced` is `Unknown`).
fn sync_conditions(reloader: &ReloaderHandle) -> Vec<Value> {
    let sync = reloader.sync_state();
    let (stalled, reason) = match reloader.last() {
        Some(ReloadOutcome::Invalid { revision, errors })
            if sync.desired.as_deref() == Some(revision.as_str()) =>
        {
            let stalled = json!({
                "type": "Stalled",
                "status": "True",
                "reason": "InvalidRevision",
                "revision": revision,
                "errors": errors,
                "message": format!("revision {revision} refused ({}); serving {}: {}", crate::gitops::count(errors.len(), "error"), sync.applied, errors.join("; ")),
            });
            (Some(stalled), "InvalidRevision")
        }
        Some(ReloadOutcome::Unreadable { error }) => {
            let stalled = json!({
                "type": "Stalled",
                "status": "True",
                "reason": "SourceUnreadable",
                "errors": [error],
                "message": unreadable(&error, &sync.applied),
            });
            (Some(stalled), "SourceUnreadable")
        }
        _ => (None, ""),
    };
    let out_of_sync = sync.desired.as_deref().is_some_and(|d| d != sync.applied);
    let status = if reason == "SourceUnreadable" {
        "Unknown"
    } else if out_of_sync {
        "False"
    } else {
        "True"
    };
    let mut conditions = vec![json!({
        "type": "Synced",
        "status": status,
        "reason": match (&sync.paused, &stalled, out_of_sync) {
            (Some(_), _, true) => "SyncPaused",
            (_, Some(_), _) => reason,
            (_, _, true) => "Pending",
            _ => "Applied",
        },
    })];
    conditions.extend(stalled);
    conditions
}

/// JSON form of a reload outcome.
pub fn outcome_json(o: &ReloadOutcome) -> Value {
    match o {
        ReloadOutcome::Applied { revision, changes } => {
            json!({ "result": "success", "revision": revision, "changes": changes })
        }
        ReloadOutcome::Unchanged { revision } => {
            json!({ "result": "unchanged", "revision": revision })
        }
        // Still invalid, which is what a client checking its push needs to read; judged and
        // counted once already, so counted "unchanged" this time, and the answer says so.
        ReloadOutcome::StillInvalid { revision, errors } => {
            json!({ "result": "invalid", "revision": revision, "errors": errors, "counted_as": "unchanged" })
        }
        ReloadOutcome::Invalid { revision, errors } => {
            json!({ "result": "invalid", "revision": revision, "errors": errors })
        }
        ReloadOutcome::Unreadable { error } => json!({ "result": "unreadable", "error": error }),
    }
}
