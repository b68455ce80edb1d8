//! Status back to GitOps: one kstatus object per model ([`ModelStatus`]) and the adapters that
//! publish it — `GET /status/models/{model}`, the Argo Rollouts `web` metric, Flagger
//! webhooks, Flux notification-controller events and (feature `k8s`) the `ModelRollout`
//! custom resource's `.status`.
//!
//! HTTP answers are computed on request from the driver's status, the serving revision and the
//! reload funnel. Pushed sinks (Flux, Kubernetes) are fed by one publisher task that wakes after
//! each driver step and on a tick, and hands each change to a bounded per-sink queue with
//! `try_send`: a slow sink drops (counted) instead of delaying anything.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rollgate_proxy::ProxyHandle;
use tokio::sync::{mpsc, watch};

use crate::admin::json;
use crate::reload::ReloaderHandle;
use crate::rollout::{DriverHandle, Phase, RolloutStatus};

mod argo;
mod flagger;
mod flux;
#[cfg(feature = "k8s")]
pub mod k8s;
mod status;

pub use argo::{web_metric, WebMetric};
pub use flagger::{Answer, Hook, Payload};
pub use flux::{event as flux_event, Event as FluxEvent};
pub(crate) use status::hold;
pub use status::{
    build, condition, phase_name, verdict, ConditionClock, Context, ModelStatus, StatusCondition,
    Verdict,
};
pub use status::{count, object_name};

/// API group/version and kind of the custom resource the status belongs to.
pub const API_VERSION: &str = "rollgate.dev/v1alpha1";
pub const KIND: &str = "ModelRollout";
/// Namespace named in events and patches when `gitops.kubernetes.namespace` is not set.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Changes waiting per sink; beyond it a change is dropped and counted (the next change
/// carries the whole status again, so a drop loses history, not state).
const SINK_QUEUE: usize = 64;
/// The publisher also looks on this tick (a reload can change status without a driver step).
const PUBLISH_TICK: Duration = Duration::from_secs(1);
/// Largest webhook body read (Flagger payloads are small).
const MAX_HOOK_BODY: usize = 64 * 1024;

/// Computes model statuses and serves the GitOps endpoints. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gitops {
    proxy: ProxyHandle,
    reloader: ReloaderHandle,
    driver: Option<DriverHandle>,
    clock: Arc<Mutex<ConditionClock>>,
}

/// One model's status changed (what pushed sinks receive).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub model: String,
    pub status: ModelStatus,
    /// The status last published for the model; `None` on the first one.
    pub previous: Option<ModelStatus>,
}

/// `rollgate_gitops_events_total{sink, result}`.
#[derive(Clone, Debug, Default)]
pub struct EventCounters(Family<EventLabels, Counter>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `flux` or `kubernetes`.
    pub sink: &'static str,
    /// `sent`, `failed` or `dropped` (queue full).
    pub result: &'static str,
}

/// A pushed sink's queue; its worker delivers one change at a time.
#[derive(Clone, Debug)]
pub struct SinkQueue {
    name: &'static str,
    tx: mpsc::Sender<Change>,
    counters: EventCounters,
    /// Whether the sink wants the first status of each model even when it is quiet.
    initial: bool,
}

/// What model statuses are built from: the serving snapshot (config, revision and directives),
/// the driver's statuses and the reload funnel's latest outcome.
struct StatusInputs {
    snapshot: Arc<rollgate_proxy::Snapshot>,
    rollouts: Option<u64>,
    latest: Option<crate::reload::ReloadOutcome>,
}

/// What every model's status is built from besides its own rollout: the reload funnel's
/// latest outcome, the generation (successful loads + 1) and the time conditions are stamped
/// with.
struct Common {
    latest: Option<crate::reload::ReloadOutcome>,
    generation: i64,
    now: SystemTime,
}

// === impl Gitops ===

impl Gitops {
    pub fn new(proxy: ProxyHandle, reloader: ReloaderHandle, driver: Option<DriverHandle>) -> Self {
        Gitops {
            proxy,
            reloader,
            driver,
            clock: Arc::default(),
        }
    }

    /// Every configured model's status, by name.
    pub fn statuses(&self) -> BTreeMap<String, ModelStatus> {
        let snap = self.proxy.snapshot();
        let rollouts: BTreeMap<String, RolloutStatus> = self
            .driver
            .as_ref()
            .map(DriverHandle::status)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.model.clone(), r))
            .collect();
        let directives = self.proxy.directives();
        let common = self.common();
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let config = snap.config();
        // A set, not a scan of the config per clock entry (quadratic in the models).
        let names: HashSet<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
        clock.retain(|m| names.contains(m));
        config
            .models
            .iter()
            .map(|m| {
                let r = rollouts.get(&m.name).cloned();
                let d = directives.get(&m.name);
                let s = common.build(&snap, m, r, d, &mut clock);
                (m.name.clone(), s)
            })
            .collect()
    }

    /// One model's status; `None` when no such model is configured. Built alone: what
    /// [`Gitops::statuses`] has for it, without every other model's.
    pub fn status(&self, model: &str) -> Option<ModelStatus> {
        let snap = self.proxy.snapshot();
        let m = snap.config().model(model)?;
        let directives = self.proxy.directives();
        let d = directives.get(model);
        let r = self.driver.as_ref().and_then(|dr| dr.status_of(m, d));
        let common = self.common();
        let mut clock = self.clock.lock().unwrap_or_else(PoisonError::into_inner);
        Some(common.build(&snap, m, r, d, &mut clock))
    }

    /// What every model's status shares, read once.
    fn common(&self) -> Common {
        let applied = (self.reloader.counts().iter())
            .find(|(k, _)| *k == "success")
            .map_or(0, |c| c.1);
        Common {
            latest: self.reloader.latest(),
            generation: i64::try_from(applied).unwrap_or(i64::MAX).saturating_add(1),
            now: SystemTime::now(),
        }
    }

    /// What [`Gitops::statuses`] reads besides the clock, read before it.
    fn inputs(&self) -> StatusInputs {
        StatusInputs {
            snapshot: self.proxy.snapshot(),
            rollouts: self.driver.as_ref().map(DriverHandle::status_version),
            latest: self.reloader.latest(),
        }
    }

    /// Serves `/status/models/{model}`, `/gitops/argo-rollouts/{model}` and
    /// `/gitops/flagger/{hook}`; `None` for other paths. The model is the rest of the path,
    /// percent-decoded (a raw `/` in it is kept).
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
        let path = req.uri().path().to_owned();
        if let Some(rest) = path.strip_prefix("/status/models/") {
            if req.method() != Method::GET {
                return Some(error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET",
                    "method_not_allowed",
                ));
            }
            return Some(self.for_model(rest, |s| json(StatusCode::OK, s)));
        }
        if let Some(rest) = path.strip_prefix("/gitops/argo-rollouts/") {
            if !matches!(*req.method(), Method::GET | Method::POST | Method::PUT) {
                return Some(error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET, POST or PUT",
                    "method_not_allowed",
                ));
            }
            // Argo may send a body (POST/PUT); it carries nothing rollgate needs.
            return Some(self.for_model(rest, |s| json(StatusCode::OK, &web_metric(s))));
        }
        let hook = path.strip_prefix("/gitops/flagger/")?.to_owned();
        Some(self.flagger(&hook, req).await)
    }

    /// `answer` for the model a path names (`rest`, after its prefix); 404 for a model not
    /// configured, 400 (naming the fault) for a path that names none.
    fn for_model(
        &self,
        rest: &str,
        answer: impl FnOnce(&ModelStatus) -> Response<Full<Bytes>>,
    ) -> Response<Full<Bytes>> {
        let model = match crate::admin::path::model(rest) {
            Ok(m) => m,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                    "invalid_model_path",
                )
            }
        };
        match self.status(&model) {
            Some(s) => answer(&s),
            None => unknown_model(&model),
        }
    }

    async fn flagger(&self, hook: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let Some(hook) = Hook::parse(hook) else {
            let known: Vec<&str> = Hook::ALL.iter().map(|h| h.as_str()).collect();
            let msg = format!("unknown Flagger hook `{hook}`; known: {}", known.join(", "));
            return error(StatusCode::NOT_FOUND, &msg, "unknown_hook");
        };
        if req.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST",
                "method_not_allowed",
            );
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_HOOK_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the body: {e}"),
                    "bad_body",
                )
            }
        };
        let payload: Payload = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("not a Flagger webhook payload ({{name, namespace, phase, checksum, metadata}}): {e}");
                return error(StatusCode::BAD_REQUEST, &msg, "invalid_payload");
            }
        };
        let model = payload.model().to_owned();
        let status = self.status(&model);
        if hook == Hook::Event {
            tracing::info!(
                canary = %payload.name, namespace = %payload.namespace,
                phase = payload.phase.as_deref().unwrap_or(""),
                event_type = payload.metadata.get("eventType").map_or("", String::as_str),
                message = payload.metadata.get("eventMessage").map_or("", String::as_str),
                "Flagger event"
            );
            return json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "hook": "event", "accepted": true }),
            );
        }
        let Some(s) = status else {
            return unknown_model(&model);
        };
        let answer = hook.answer(&s);
        tracing::debug!(hook = hook.as_str(), %model, status = answer.status, "Flagger hook");
        let reason = condition(&s, "Stalled")
            .filter(|c| c.status == "True")
            .map_or_else(
                || s.reason.clone(),
                |c| format!("{}: {}", c.reason, c.message),
            );
        let body = serde_json::json!({
            "hook": hook, "model": model, "pass": answer.pass, "verdict": verdict(&s),
            "phase": s.phase, "step": s.step, "revision": s.observed_revision, "reason": reason,
        });
        json(
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::PRECONDITION_FAILED),
            &body,
        )
    }

    /// Publishes status changes to `sinks` until `shutdown` flips.
    pub async fn publish(self, sinks: Vec<SinkQueue>, mut shutdown: watch::Receiver<bool>) {
        let mut last: BTreeMap<String, ModelStatus> = BTreeMap::new();
        let mut seen: Option<StatusInputs> = None;
        let stepped = self.driver.as_ref().map(DriverHandle::stepped);
        let mut tick = tokio::time::interval(PUBLISH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = async {
                match &stepped {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = step => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            // Every model's status is rebuilt from these; while none moved (an idle gateway)
            // the rebuild would find nothing new.
            let inputs = self.inputs();
            if seen.as_ref().is_some_and(|s| s.same(&inputs)) {
                continue;
            }
            seen = Some(inputs);
            let statuses = self.statuses();
            let restored = self.restored(statuses.keys().filter(|m| !last.contains_key(*m)));
            for (model, status) in statuses {
                let previous = last.get(&model);
                if previous.is_some_and(|p| !changed(p, &status)) {
                    continue;
                }
                let change = Change {
                    model: model.clone(),
                    status: status.clone(),
                    previous: previous.cloned(),
                };
                // A first status is quiet when Idle and not held, or when it only restates a
                // phase restored at startup (a restart must not announce a rollback again).
                let quiet = previous.is_none()
                    && ((status.phase == "Idle" && !status::is_held(&status))
                        || restored.contains(&model));
                for sink in &sinks {
                    if sink.initial || !quiet {
                        sink.offer(change.clone());
                    }
                }
                last.insert(model, status);
            }
        }
    }

    /// Of `first` (models about to be published for the first time), those whose rollout is
    /// still in the phase restored from the state file. One read of the driver's statuses, and
    /// only while some model has not been published yet.
    fn restored<'a>(&self, first: impl Iterator<Item = &'a String>) -> HashSet<String> {
        let first: HashSet<&String> = first.collect();
        let Some(driver) = self.driver.as_ref().filter(|_| !first.is_empty()) else {
            return HashSet::new();
        };
        (driver.status().into_iter())
            .filter(|r| first.contains(&r.model) && driver.is_restored(r))
            .map(|r| r.model)
            .collect()
    }
}

/// Whether a status differs from the one last published in what GitOps tools watch: phase,
/// step, candidate, revision, pause, pin, or a condition's status or reason.
fn changed(a: &ModelStatus, b: &ModelStatus) -> bool {
    let conditions_differ = a.conditions.len() != b.conditions.len()
        || a.conditions
            .iter()
            .zip(&b.conditions)
            .any(|(x, y)| x.status != y.status || x.reason != y.reason);
    conditions_differ
        || a.phase != b.phase
        || a.step != b.step
        || a.candidate != b.candidate
        || a.observed_revision != b.observed_revision
        || a.paused != b.paused
        || a.pinned != b.pinned
}

fn idle(model: &str, weight: rollgate_config::Ppm) -> RolloutStatus {
    RolloutStatus {
        started_revision: None,
        model: model.to_owned(),
        change: None,
        candidate: None,
        phase: Phase::Idle,
        paused: None,
        pinned: None,
        weight: weight.to_string(),
        mirror: rollgate_config::Ppm::ZERO.to_string(),
        reason: "no rollout evaluated yet".to_owned(),
        since_unix_ms: 0,
        gates: None,
        transition_gates: None,
        conditions: Vec::new(),
    }
}

fn unknown_model(model: &str) -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        &format!("no model `{model}` in the serving config"),
        "model_not_found",
    )
}

/// `{"error":{"message","type","code"}}`.
fn error(status: StatusCode, message: &str, code: &str) -> Response<Full<Bytes>> {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    json(
        status,
        &serde_json::json!({ "error": { "message": message, "type": kind, "code": code } }),
    )
}

// === impl EventCounters ===

impl EventCounters {
    /// Registers `rollgate_gitops_events_total` (sinks register once, share the family).
    pub fn register(registry: &mut Registry) -> EventCounters {
        let c = EventCounters::default();
        registry.register(
            "rollgate_gitops_events",
            "Status changes offered to GitOps sinks, by sink and result (sent, failed, dropped)",
            c.0.clone(),
        );
        c
    }

    pub fn inc(&self, sink: &'static str, result: &'static str) {
        self.0.get_or_create(&EventLabels { sink, result }).inc();
    }
}

// === impl SinkQueue ===

impl SinkQueue {
    /// Starts a sink's worker: `deliver` is called for each change in order, one at a time.
    pub fn spawn<F, Fut>(
        name: &'static str,
        counters: EventCounters,
        initial: bool,
        mut deliver: F,
    ) -> SinkQueue
    where
        F: FnMut(Change) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Change>(SINK_QUEUE);
        let c = counters.clone();
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let model = change.model.clone();
                match deliver(change).await {
                    Ok(()) => c.inc(name, "sent"),
                    Err(e) => {
                        c.inc(name, "failed");
                        tracing::warn!(sink = name, %model, error = %e, "GitOps status publish failed");
                    }
                }
            }
        });
        SinkQueue {
            name,
            tx,
            counters,
            initial,
        }
    }

    /// Queues a change without waiting; a full queue drops it (counted).
    pub fn offer(&self, change: Change) {
        if self.tx.try_send(change).is_err() {
            self.counters.inc(self.name, "dropped");
        }
    }
}

// === impl StatusInputs ===

impl StatusInputs {
    fn same(&self, other: &StatusInputs) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot)
            && self.rollouts == other.rollouts
            && self.latest == other.latest
    }
}

// === impl Common ===

impl Common {
    /// `m`'s status from its rollout `r` (Idle when the driver has published none yet) and its
    /// directive `d`, its conditions stamped by `clock`.
    fn build(
        &self,
        snap: &rollgate_proxy::Snapshot,
        m: &rollgate_config::Model,
        r: Option<RolloutStatus>,
        d: Option<&rollgate_proxy::Directive>,
        clock: &mut ConditionClock,
    ) -> ModelStatus {
        let mut r = r.unwrap_or_else(|| idle(&m.name, rollgate_config::Ppm::ZERO));
        // Idle (also before the driver's first step): the split served now, read from this
        // snapshot.
        crate::rollout::overlay(&mut r, m, d);
        let cx = Context {
            serving: snap.revision(),
            latest: self.latest.as_ref(),
            has_candidate: m.candidate.is_some(),
            generation: self.generation,
        };
        let mut s = build(&r, cx);
        clock.stamp(&m.name, &mut s, self.now);
        s
    }
}

/// The Flux sink: posts [`FluxEvent`]s to `url`, naming objects in `namespace`.
pub fn flux_sink(url: &str, namespace: &str, counters: EventCounters) -> Result<SinkQueue, String> {
    let poster = flux::FluxPoster::new(url, namespace)?;
    Ok(SinkQueue::spawn("flux", counters, false, move |change| {
        let poster = poster.clone();
        async move { poster.post(&change).await }
    }))
}

#[cfg(test)]
mod tests;
