//! Entry points to crate-private hot paths for the criterion benchmarks (`benches/`). Not a
//! stable API: each function runs the same code the request path runs, nothing more.

use std::time::Duration;

use hyper::header::HeaderMap;
use rollgate_config::Endpoint;
use tokio::time::Instant;

use crate::endpoint::{EndpointRegistry, EndpointSet};
use crate::observe::{AtomicHistogram, StatusClass};
use crate::snapshot::Snapshot;
use crate::split::{cohort_of_hash, hash64, is_candidate, random_cohort, Variant};

/// The model named by a routing header (`x-gateway-model-name`, `x-ai-eg-model`), looked up in
/// the snapshot as `service::resolve` does. Returns the route's name.
pub fn header_model<'a>(snap: &'a Snapshot, headers: &HeaderMap) -> Option<&'a str> {
    let v = crate::service::MODEL_HEADERS
        .iter()
        .find_map(|h| headers.get(h))?;
    let name = v.to_str().ok()?;
    snap.model(name).map(|r| &*r.name)
}

/// The split decision for a model as `service::pick_variant` makes it: hash the cohort key
/// (random cohort without one) and compare with the route's weight.
pub fn split(snap: &Snapshot, model: &str, key: Option<&[u8]>) -> Option<Variant> {
    let route = snap.model(model)?;
    if route.weight.get() == 0 {
        return Some(Variant::Stable);
    }
    let cohort = key.map_or_else(random_cohort, |k| cohort_of_hash(hash64(k)));
    Some(if is_candidate(cohort, route.weight) {
        Variant::Candidate
    } else {
        Variant::Stable
    })
}

/// A backend's endpoint set, for the endpoint-choice benchmark.
#[derive(Debug)]
pub struct Endpoints {
    set: EndpointSet,
}

impl Endpoints {
    /// `n` endpoints on distinct loopback ports; consistent-hash affinity when `affinity` is set.
    pub fn new(n: usize, affinity: Option<f64>) -> Self {
        let registry = EndpointRegistry::new();
        let endpoints = (0..n)
            .map(|i| {
                let authority = format!("127.0.0.1:{}", 20_000 + i);
                registry.get(&Endpoint {
                    url: format!("http://{authority}"),
                    authority,
                })
            })
            .collect();
        Endpoints {
            set: EndpointSet::new(endpoints, affinity),
        }
    }

    /// One pick (P2C, or ketama affinity by `key`), as the exchange does before connecting.
    /// Returns the picked endpoint's index in the process.
    pub fn pick(&self, key: Option<&[u8]>) -> Option<u64> {
        self.set.pick(key, Instant::now()).map(|e| e.id)
    }
}

/// A sampled request's mirror admission as the fast path makes it (`shadow::admit`, with the
/// request's clock reading): `Some(true)` when a slot was free (released again at once),
/// `Some(false)` when the in-flight bound or the pace refused it (counted as dropped), `None`
/// when the model has no shadow.
pub fn shadow_admit(snap: &Snapshot, model: &str, now: Instant) -> Option<bool> {
    let route = snap.model(model)?;
    let cfg = route.shadow.as_ref()?;
    Some(crate::shadow::admit(route, cfg, Some(now)).is_some())
}

/// The per-request mirror decision (`shadow::sampled`: the sample's random draw and, for a draw
/// between `saturated_sample` and `sample`, this thread's saturation reading — cached, re-read
/// from the kernel every 2 ms). `None` when the model has no shadow.
pub fn shadow_sampled(snap: &Snapshot, model: &str, now: std::time::Instant) -> Option<bool> {
    let route = snap.model(model)?;
    let cfg = route.shadow.as_ref()?;
    Some(crate::shadow::sampled(cfg, &route.stats, || now))
}

/// Takes up to `n` of a model's in-flight mirror slots, as `n` mirrors in flight hold them,
/// until the result is dropped.
pub fn shadow_hold(snap: &Snapshot, model: &str, n: usize) -> ShadowSlots {
    let held = snap
        .model(model)
        .and_then(|r| r.shadow.as_ref().map(|cfg| (r, cfg)))
        .map(|(r, cfg)| {
            (0..n)
                .filter_map(|_| crate::shadow::admit(r, cfg, None))
                .collect()
        })
        .unwrap_or_default();
    ShadowSlots(held)
}

/// In-flight mirror slots held by [`shadow_hold`]; dropping it releases them.
pub struct ShadowSlots(Vec<crate::shadow::Admitted>);

impl ShadowSlots {
    /// How many slots are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No slot is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ShadowSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShadowSlots").field(&self.0.len()).finish()
    }
}

/// Records one finished stable request of `model` (in-flight gauge, status counter, latency
/// histogram) through the route's stats, as the request start and the response body's end do.
pub fn record(snap: &Snapshot, model: &str, latency: Duration) {
    if let Some(route) = snap.model(model) {
        let v = route.stats.variant(Variant::Stable);
        v.start();
        v.finish(StatusClass::Success, latency);
    }
}

/// The request path's atomic latency histogram.
#[derive(Debug, Default)]
pub struct Histogram(AtomicHistogram);

impl Histogram {
    /// One observation: bucket search plus three relaxed atomic adds.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d);
    }
}

/// The fast path's request head work: parse, header limits, routing notes and the upstream
/// head written into `out` (`h1::digest`). Returns the upstream head's length, 0 when `head`
/// is not a whole request head the fast path takes.
pub fn h1_request_head(snap: &Snapshot, head: &[u8], out: &mut Vec<u8>) -> usize {
    crate::h1::bench::request(head, snap.config(), out)
}

/// The fast path's response head work: parse the upstream head and write the downstream one
/// into `out` (`h1::response_head`). Returns its length, 0 when `head` is not a whole head.
pub fn h1_response_head(snap: &Snapshot, head: &[u8], out: &mut Vec<u8>) -> usize {
    crate::h1::bench::response(head, snap.config(), out)
}
