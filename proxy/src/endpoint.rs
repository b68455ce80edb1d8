//! Endpoints: per-address state shared by every worker (outstanding requests, passive health),
//! and the choice of an endpoint inside a backend.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use hyper::header::HeaderValue;
use pingora_ketama::{Bucket, Continuum};
use rollgate_config::{Ejection, Endpoint};
use tokio::time::Instant;

use crate::split::hash64;

/// State of one model-server address, kept across reloads (keyed by its URL) so that pooled
/// connections, in-flight counts and ejections survive a config change.
#[derive(Debug)]
pub struct EndpointState {
    /// Process-unique id; keys the per-worker connection pools.
    pub(crate) id: u64,
    pub(crate) url: Arc<str>,
    pub(crate) authority: Arc<str>,
    pub(crate) host_header: HeaderValue,
    outstanding: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a success in between; doubles the backoff.
    ejections: AtomicU32,
    /// Nanoseconds since `epoch` until which the endpoint is out; 0 = in.
    ejected_until: AtomicU64,
    epoch: Instant,
    /// Exchanges started on a new connection / on a pooled one (connection reuse, by worker
    /// pools and shadow mirrors alike).
    pub(crate) exchanges_new: AtomicU64,
    pub(crate) exchanges_pooled: AtomicU64,
}

/// The endpoints of one backend, pre-built at snapshot time.
#[derive(Debug)]
pub(crate) struct EndpointSet {
    pub(crate) endpoints: Vec<Arc<EndpointState>>,
    /// Consistent-hash ring (by cohort key), present when affinity is configured.
    ring: Option<Ring>,
}

struct Ring {
    continuum: Continuum,
    /// Ring node address → endpoint index. Node addresses are synthetic (derived from a hash of
    /// the URL) so that ring positions depend on endpoint identity, not on list order.
    index: HashMap<SocketAddr, usize>,
    load_factor: f64,
}

/// All endpoint states ever built, by URL.
#[derive(Debug, Default)]
pub(crate) struct EndpointRegistry {
    next_id: AtomicU64,
    by_url: Mutex<HashMap<String, Arc<EndpointState>>>,
    epoch: Option<Instant>,
}

/// What happened on an exchange, for passive health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    /// Connect failure, timeout before the head, or a 5xx.
    Failure,
}

impl Outcome {
    /// An answer's outcome for its endpoint's health: a 5xx is a failure.
    pub(crate) fn of(status: u16) -> Outcome {
        if status >= 500 {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.index.len())
            .field("load_factor", &self.load_factor)
            .finish()
    }
}

// === impl EndpointState ===

impl EndpointState {
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Relaxed)
    }

    pub(crate) fn acquire(self: &Arc<Self>) -> Outstanding {
        self.outstanding.fetch_add(1, Relaxed);
        Outstanding(self.clone())
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Relaxed);
        until != 0 && nanos_since(self.epoch, now) < until
    }

    /// Records an outcome; returns true when this failure ejected the endpoint.
    pub(crate) fn record(&self, outcome: Outcome, policy: &Ejection, now: Instant) -> bool {
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Relaxed);
                if self.ejected_until.load(Relaxed) != 0 && !self.is_ejected(now) {
                    self.ejected_until.store(0, Relaxed);
                    self.ejections.store(0, Relaxed);
                }
                false
            }
            Outcome::Failure => {
                let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
                if n < policy.consecutive_failures || self.is_ejected(now) {
                    return false;
                }
                let times = self.ejections.fetch_add(1, Relaxed).min(16);
                let backoff = policy.base.saturating_mul(1 << times).min(policy.max);
                let until = nanos_since(self.epoch, now + backoff).max(1);
                self.ejected_until.store(until, Relaxed);
                self.consecutive_failures.store(0, Relaxed);
                tracing::warn!(endpoint = %self.url, ?backoff, "endpoint ejected after consecutive failures");
                true
            }
        }
    }
}

fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Decrements the endpoint's outstanding count when dropped.
#[derive(Debug)]
pub(crate) struct Outstanding(Arc<EndpointState>);

impl Outstanding {
    pub(crate) fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

// === impl EndpointRegistry ===

impl EndpointRegistry {
    pub(crate) fn new() -> Self {
        EndpointRegistry {
            epoch: Some(Instant::now()),
            ..Default::default()
        }
    }

    pub(crate) fn get(&self, ep: &Endpoint) -> Arc<EndpointState> {
        let mut map = self.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = map.get(&ep.url) {
            return s.clone();
        }
        let host_header = HeaderValue::from_str(&ep.authority)
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let state = Arc::new(EndpointState {
            id: self.next_id.fetch_add(1, Relaxed),
            url: Arc::from(ep.url.as_str()),
            authority: Arc::from(ep.authority.as_str()),
            host_header,
            outstanding: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            epoch: self.epoch.unwrap_or_else(Instant::now),
            exchanges_new: AtomicU64::new(0),
            exchanges_pooled: AtomicU64::new(0),
        });
        map.insert(ep.url.clone(), state.clone());
        state
    }

    /// Forgets the endpoints `keep` refuses (no model names them any more): pods come and go
    /// with new addresses, and each would otherwise stay in `/metrics` for good.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut map = self.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|url, _| keep(url));
    }

    /// Every endpoint configured, sorted by URL (for metrics; not on the request path).
    pub(crate) fn all(&self) -> Vec<Arc<EndpointState>> {
        let map = self.by_url.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map.values().cloned().collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }
}

// === impl EndpointSet ===

impl EndpointSet {
    pub(crate) fn new(endpoints: Vec<Arc<EndpointState>>, affinity: Option<f64>) -> Self {
        let ring = affinity.map(|load_factor| {
            let mut index = HashMap::with_capacity(endpoints.len());
            let buckets: Vec<Bucket> = endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let h = u128::from(hash64(e.url.as_bytes())) << 64 | i as u128;
                    let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(h), 1, 0, 0));
                    index.insert(addr, i);
                    Bucket::new(addr, 1)
                })
                .collect();
            Ring {
                continuum: Continuum::new(&buckets),
                index,
                load_factor,
            }
        });
        EndpointSet { endpoints, ring }
    }

    /// Picks an endpoint: by consistent hash of `key` (bounded by load) when affinity is on and a
    /// key exists, else the least outstanding of two random healthy endpoints. When every
    /// endpoint is ejected, ejection is ignored (better a likely failure than a certain one).
    pub(crate) fn pick(&self, key: Option<&[u8]>, now: Instant) -> Option<&Arc<EndpointState>> {
        self.pick_untried(key, now, &[])
    }

    /// [`Self::pick`] for a retry: endpoints whose ids are in `tried` (this request's failed
    /// connects) are passed over while another is left; once every one was tried, any may be
    /// picked again.
    pub(crate) fn pick_untried(
        &self,
        key: Option<&[u8]>,
        now: Instant,
        tried: &[u64],
    ) -> Option<&Arc<EndpointState>> {
        if let (Some(ring), Some(key)) = (&self.ring, key) {
            if let Some(e) = self.pick_affine(ring, key, now, tried) {
                return Some(e);
            }
        }
        if !tried.is_empty() && tried.len() < self.endpoints.len() {
            let fresh = |e: &&Arc<EndpointState>| !tried.contains(&e.id);
            if let Some(e) = self.pick_p2c(now, true, fresh) {
                return Some(e);
            }
            if let Some(e) = self.pick_p2c(now, false, fresh) {
                return Some(e);
            }
        }
        self.pick_p2c(now, true, |_| true)
            .or_else(|| self.pick_p2c(now, false, |_| true))
    }

    fn pick_affine(
        &self,
        ring: &Ring,
        key: &[u8],
        now: Instant,
        tried: &[u64],
    ) -> Option<&Arc<EndpointState>> {
        let total: usize = self.endpoints.iter().map(|e| e.outstanding()).sum();
        let avg = total as f64 / self.endpoints.len().max(1) as f64;
        let bound = (ring.load_factor * avg).floor() as usize + 1;
        ring.continuum
            .node_iter(key)
            .take(self.endpoints.len() * 4)
            .filter_map(|addr| ring.index.get(addr).and_then(|i| self.endpoints.get(*i)))
            .find(|e| !e.is_ejected(now) && e.outstanding() < bound && !tried.contains(&e.id))
    }

    fn pick_p2c(
        &self,
        now: Instant,
        skip_ejected: bool,
        allowed: impl Fn(&&Arc<EndpointState>) -> bool,
    ) -> Option<&Arc<EndpointState>> {
        let n = self.endpoints.len();
        let ok = |e: &&Arc<EndpointState>| (!skip_ejected || !e.is_ejected(now)) && allowed(e);
        if n <= 1 {
            return self.endpoints.first().filter(ok);
        }
        // Two distinct healthy endpoints found by scanning from two random offsets.
        let start = fastrand::usize(..n);
        let a = (0..n).map(|i| &self.endpoints[(start + i) % n]).find(ok)?;
        let off = fastrand::usize(1..n);
        let b = (0..n)
            .map(|i| &self.endpoints[(start + off + i) % n])
            .find(|e| ok(e) && !Arc::ptr_eq(e, a));
        match b {
            Some(b) if b.outstanding() < a.outstanding() => Some(b),
            _ => Some(a),
        }
    }
}

#[cfg(test)]
mod tests;
