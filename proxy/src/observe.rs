//! Per-(model, variant) observations written by the request path with atomics only, read by the
//! control loop and the metrics collector without taking any lock the request path takes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::split::Variant;

mod collector;
mod histogram;

pub(crate) use collector::ProxyCollector;
pub(crate) use histogram::AtomicHistogram;
pub use histogram::{HistogramSnapshot, LATENCY_BUCKETS};

/// Response status classes, plus `error` for requests that got no upstream response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// No upstream response (connect failure, timeout, reset before the head).
    Error,
}

/// Failures after a 200 head: the client saw success, then the stream broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    /// An SSE `error` event or `{"error": ...}` data payload.
    ErrorEvent,
    /// An SSE stream that ended without `data: [DONE]`.
    Truncated,
    /// No body bytes for longer than `upstream.idle_timeout`.
    IdleTimeout,
    /// The upstream connection failed mid-body.
    UpstreamReset,
}

/// Why a mirrored request was not sent or not completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowDrop {
    /// `shadow.max_inflight` mirrors already running for this model.
    Inflight,
    /// Over the pace: once the in-flight bound refuses mirrors, they start evenly spaced, at
    /// about the rate it sustains (see `shadow::Pace`).
    Paced,
    /// The shadow read slower than the primary and `shadow.buffer` filled up.
    Backpressure,
    /// The request body exceeded `shadow.max_body`.
    BodyTooLarge,
    /// The primary request body failed or was abandoned before its end.
    PrimaryAborted,
    /// Connecting to or exchanging with the shadow endpoint failed.
    UpstreamError,
    /// The mirrored exchange exceeded `shadow.timeout`.
    Timeout,
    /// Sampled while the worker was saturated, over `shadow.saturated_sample` (see `load`).
    Saturated,
}

/// Counters and histograms of one (model, variant).
#[derive(Debug, Default)]
pub struct VariantStats {
    status: [AtomicU64; StatusClass::COUNT],
    stream_failures: [AtomicU64; StreamFailure::COUNT],
    cancelled: AtomicU64,
    inflight: AtomicI64,
    pub(crate) latency: AtomicHistogram,
    pub(crate) ttfb: AtomicHistogram,
    pub(crate) ttft: AtomicHistogram,
}

/// Everything observed for one model name. Lives as long as the process: counters are
/// cumulative across reloads, as Prometheus expects.
#[derive(Debug)]
pub struct ModelStats {
    name: Arc<str>,
    variants: [VariantStats; 3],
    shadow_drops: [AtomicU64; ShadowDrop::COUNT],
    pub(crate) shadow_inflight: AtomicI64,
    pub(crate) shadow_pace: crate::shadow::Pace,
    endpoint_ejections: [AtomicU64; 2],
    /// Candidate-bound requests that reached no candidate endpoint, or whose answer had a
    /// status listed in `routing.candidate_fallback_status`, and were answered by the stable
    /// backend (`routing.candidate_fallback`).
    fallbacks: AtomicU64,
    /// Shared with the control loop: signalled when a candidate request fails, so a hard
    /// breach is evaluated at once instead of at the next tick.
    breach: Arc<tokio::sync::Notify>,
}

/// A point-in-time copy of one (model, variant)'s cumulative counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantObservation {
    /// Requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx, error]`.
    pub status: [u64; StatusClass::COUNT],
    /// Failures after a 200: `[error_event, truncated, idle_timeout, upstream_reset]`.
    pub stream_failures: [u64; StreamFailure::COUNT],
    /// Requests the client abandoned before the end.
    pub cancelled: u64,
    pub inflight: i64,
    pub latency: HistogramSnapshot,
    pub ttfb: HistogramSnapshot,
    pub ttft: HistogramSnapshot,
}

/// A point-in-time copy of one model's observations, for the control loop.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelObservation {
    pub model: Arc<str>,
    pub stable: VariantObservation,
    pub candidate: VariantObservation,
    pub shadow: VariantObservation,
    /// Mirrors dropped, by [`ShadowDrop`] order.
    pub shadow_drops: [u64; ShadowDrop::COUNT],
    /// Passive ejections of endpoints: `[stable, candidate]`.
    pub ejections: [u64; 2],
    /// Candidate-bound requests the stable backend answered because no candidate endpoint
    /// could be reached (each is also a candidate `error`).
    pub fallbacks: u64,
}

/// The set of per-model stats; touched under its lock only when a snapshot is built or
/// metrics/observations are read, never per request.
#[derive(Debug, Default)]
pub(crate) struct StatsRegistry {
    models: Mutex<HashMap<Arc<str>, Arc<ModelStats>>>,
    /// Candidate failures wake whoever waits here (the rollout driver).
    pub(crate) breach: Arc<tokio::sync::Notify>,
    /// Requests answered by the gateway itself, by `error::REJECT_REASONS` index.
    rejected: [AtomicU64; crate::error::REJECT_REASONS.len()],
}

// === impl StatusClass ===

impl StatusClass {
    pub const COUNT: usize = 6;
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Error,
    ];

    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Error => "error",
        }
    }
}

// === impl StreamFailure ===

impl StreamFailure {
    pub const COUNT: usize = 4;
    pub const ALL: [StreamFailure; 4] = [
        StreamFailure::ErrorEvent,
        StreamFailure::Truncated,
        StreamFailure::IdleTimeout,
        StreamFailure::UpstreamReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamFailure::ErrorEvent => "error_event",
            StreamFailure::Truncated => "truncated",
            StreamFailure::IdleTimeout => "idle_timeout",
            StreamFailure::UpstreamReset => "upstream_reset",
        }
    }
}

// === impl ShadowDrop ===

impl ShadowDrop {
    pub const COUNT: usize = 8;
    pub const ALL: [ShadowDrop; 8] = [
        ShadowDrop::Inflight,
        ShadowDrop::Paced,
        ShadowDrop::Backpressure,
        ShadowDrop::BodyTooLarge,
        ShadowDrop::PrimaryAborted,
        ShadowDrop::UpstreamError,
        ShadowDrop::Timeout,
        ShadowDrop::Saturated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShadowDrop::Inflight => "inflight",
            ShadowDrop::Paced => "paced",
            ShadowDrop::Backpressure => "backpressure",
            ShadowDrop::BodyTooLarge => "body_too_large",
            ShadowDrop::PrimaryAborted => "primary_aborted",
            ShadowDrop::UpstreamError => "upstream_error",
            ShadowDrop::Timeout => "timeout",
            ShadowDrop::Saturated => "saturated",
        }
    }
}

// === impl VariantStats ===

impl VariantStats {
    pub(crate) fn start(&self) {
        self.inflight.fetch_add(1, Relaxed);
    }

    pub(crate) fn finish(&self, class: StatusClass, latency: Duration) {
        self.inflight.fetch_sub(1, Relaxed);
        self.status[class as usize].fetch_add(1, Relaxed);
        self.latency.observe(latency);
    }

    pub(crate) fn cancelled(&self) {
        self.inflight.fetch_sub(1, Relaxed);
        self.cancelled.fetch_add(1, Relaxed);
    }

    /// Ends a request counted in `class` without a latency sample.
    fn finish_unmeasured(&self, class: StatusClass) {
        self.inflight.fetch_sub(1, Relaxed);
        self.status[class as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_failure(&self, failure: StreamFailure) {
        self.stream_failures[failure as usize].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> VariantObservation {
        VariantObservation {
            status: std::array::from_fn(|i| self.status[i].load(Relaxed)),
            stream_failures: std::array::from_fn(|i| self.stream_failures[i].load(Relaxed)),
            cancelled: self.cancelled.load(Relaxed),
            inflight: self.inflight.load(Relaxed),
            latency: self.latency.snapshot(),
            ttfb: self.ttfb.snapshot(),
            ttft: self.ttft.snapshot(),
        }
    }
}

// === impl ModelStats ===

impl ModelStats {
    pub(crate) fn new(name: Arc<str>, breach: Arc<tokio::sync::Notify>) -> Self {
        ModelStats {
            name,
            variants: Default::default(),
            shadow_drops: Default::default(),
            shadow_inflight: AtomicI64::new(0),
            shadow_pace: crate::shadow::Pace::default(),
            endpoint_ejections: Default::default(),
            fallbacks: AtomicU64::new(0),
            breach,
        }
    }

    pub(crate) fn variant(&self, v: Variant) -> &VariantStats {
        &self.variants[v.index()]
    }

    /// A request of `variant` that the gateway answered itself after `took`. The client's own
    /// fault (a body over the limit, broken framing: [`Reject::is_client_fault`]) counts as the
    /// 4xx it got and leaves no latency sample (a 413 after a slow 70 MB upload says nothing of
    /// the backend); anything else is the backend's `error` (a candidate's wakes the driver).
    ///
    /// [`Reject::is_client_fault`]: crate::error::Reject::is_client_fault
    pub(crate) fn gateway_answered(&self, variant: Variant, client_fault: bool, took: Duration) {
        let vs = self.variant(variant);
        if client_fault {
            vs.finish_unmeasured(StatusClass::ClientError);
        } else {
            vs.finish(StatusClass::Error, took);
            if variant == Variant::Candidate {
                self.candidate_failed();
            }
        }
    }

    /// A candidate exchange failed (5xx, no response, or broken after a 200): one atomic
    /// store when nobody waits, a wake-up when the driver does.
    pub(crate) fn candidate_failed(&self) {
        self.breach.notify_one();
    }

    /// A candidate-bound request reached no candidate endpoint, or the candidate answered a
    /// status the fallback replaces (after `waited`), and goes to the stable backend: the
    /// candidate is charged an error (its gates see it, the driver wakes) and the fallback
    /// counted.
    pub(crate) fn fell_back(&self, waited: Duration) {
        self.variant(Variant::Candidate)
            .finish(StatusClass::Error, waited);
        self.candidate_failed();
        self.fallbacks.fetch_add(1, Relaxed);
    }

    pub(crate) fn shadow_dropped(&self, reason: ShadowDrop) {
        self.shadow_drops[reason as usize].fetch_add(1, Relaxed);
    }

    /// Records an exchange outcome on the endpoint (passive health) and counts an ejection it
    /// caused against this model's backend role.
    pub(crate) fn record(
        &self,
        ep: &crate::endpoint::EndpointState,
        outcome: crate::endpoint::Outcome,
        policy: &rollgate_config::Ejection,
        candidate: bool,
    ) {
        self.record_at(ep, outcome, policy, candidate, tokio::time::Instant::now());
    }

    /// [`Self::record`] with the caller's clock reading.
    pub(crate) fn record_at(
        &self,
        ep: &crate::endpoint::EndpointState,
        outcome: crate::endpoint::Outcome,
        policy: &rollgate_config::Ejection,
        candidate: bool,
        now: tokio::time::Instant,
    ) {
        if ep.record(outcome, policy, now) {
            self.endpoint_ejections[usize::from(candidate)].fetch_add(1, Relaxed);
        }
    }

    pub fn observe(&self) -> ModelObservation {
        ModelObservation {
            model: self.name.clone(),
            stable: self.variants[0].snapshot(),
            candidate: self.variants[1].snapshot(),
            // A mirror is in flight from admission (its `max_inflight` slot) to the end of its
            // exchange; the shadow variant's own gauge only moves when the exchange completes.
            shadow: VariantObservation {
                inflight: self.shadow_inflight.load(Relaxed),
                ..self.variants[2].snapshot()
            },
            shadow_drops: std::array::from_fn(|i| self.shadow_drops[i].load(Relaxed)),
            ejections: std::array::from_fn(|i| self.endpoint_ejections[i].load(Relaxed)),
            fallbacks: self.fallbacks.load(Relaxed),
        }
    }
}

// === impl StatsRegistry ===

impl StatsRegistry {
    /// The stats of a model, created on first use (at snapshot build time).
    pub(crate) fn model(&self, name: &str) -> Arc<ModelStats> {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = models.get(name) {
            return s.clone();
        }
        let name: Arc<str> = Arc::from(name);
        let stats = Arc::new(ModelStats::new(name.clone(), self.breach.clone()));
        models.insert(name, stats.clone());
        stats
    }

    pub(crate) fn rejected(&self, reason: usize) {
        if let Some(c) = self.rejected.get(reason) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn rejected_counts(&self) -> Vec<u64> {
        self.rejected.iter().map(|c| c.load(Relaxed)).collect()
    }

    /// The stats of a configured model (none for a name no config has, unlike [`Self::model`]).
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ModelStats>> {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.get(name).cloned()
    }

    /// Forgets the models `keep` refuses (removed by a reload): their series leave `/metrics`,
    /// so renaming models does not grow it forever. Requests still in flight on an older
    /// snapshot finish on the stats they hold.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        models.retain(|name, _| keep(name));
    }

    /// Every model configured, sorted by name.
    pub(crate) fn all(&self) -> Vec<Arc<ModelStats>> {
        let models = self.models.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = models.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}
