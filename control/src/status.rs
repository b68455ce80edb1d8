//! `/status`: what is serving, from which revision, and what the data plane sees.

use rollgate_proxy::{ModelObservation, ProxyHandle, VariantObservation};
use serde::Serialize;
use serde_json::{json, Value};

use crate::reload::{ReloadOutcome, ReloaderHandle};

/// The whole status document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Revision of the serving config.
    pub revision: String,
    /// The last reload that changed something or failed.
    pub last_reload: Option<Value>,
    pub reloads: Value,
    pub models: Vec<Value>,
    /// One kstatus-shaped rollout status per model with a rollout plan.
    pub rollouts: Vec<crate::rollout::RolloutStatus>,
    /// The kstatus object of every model, by name (what `GET /status/models/{model}` serves).
    pub kstatus: std::collections::BTreeMap<String, crate::gitops::ModelStatus>,
}

// === impl StatusReport ===

impl StatusReport {
    pub fn build(
        proxy: &ProxyHandle,
        reloader: &ReloaderHandle,
        driver: Option<&crate::rollout::DriverHandle>,
    ) -> StatusReport {
        let directives = proxy.directives();
        let snap = proxy.snapshot();
        let observed = proxy.observe();
        let models = snap
            .config()
            .models
            .iter()
            .map(|m| {
                let obs = observed.iter().find(|o| *o.model == *m.name);
                json!({
                    "name": m.name,
                    "default": m.default,
                    "weight": live_weight(m, &directives).to_string(),
                    "weight_ppm": live_weight(m, &directives).get(),
                    "desired_weight": m.weight.to_string(),
                    "stable": backend(&m.stable),
                    "candidate": m.candidate.as_ref().map(backend),
                    "shadow": m.shadow.as_ref().map(|s| json!({ "sample": s.sample.to_string() })),
                    "observed": obs.map(observation),
                })
            })
            .collect();
        let reloads: serde_json::Map<String, Value> = reloader
            .counts()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        StatusReport {
            revision: snap.revision().to_owned(),
            last_reload: reloader.last().as_ref().map(outcome_json),
            reloads: Value::Object(reloads),
            models,
            rollouts: driver
                .map(crate::rollout::DriverHandle::status)
                .unwrap_or_default(),
            kstatus: std::collections::BTreeMap::new(),
        }
    }
}

/// The weight serving now: the rollout's directive when there is one, else the config's.
fn live_weight(m: &rollgate_config::Model, d: &rollgate_proxy::Directives) -> rollgate_config::Ppm {
    match (&m.candidate, d.get(&m.name)) {
        (None, _) => rollgate_config::Ppm::ZERO,
        (Some(_), Some(d)) => d.weight,
        (Some(_), None) => m.weight,
    }
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

/// JSON form of a reload outcome.
pub fn outcome_json(o: &ReloadOutcome) -> Value {
    match o {
        ReloadOutcome::Applied { revision, changes } => {
            json!({ "result": "success", "revision": revision, "changes": changes })
        }
        ReloadOutcome::Unchanged { revision } => {
            json!({ "result": "unchanged", "revision": revision })
        }
        ReloadOutcome::Invalid { revision, errors } => {
            json!({ "result": "invalid", "revision": revision, "errors": errors })
        }
        ReloadOutcome::Unreadable { error } => json!({ "result": "unreadable", "error": error }),
    }
}
