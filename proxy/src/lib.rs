//! rollgate's data plane, on hyper 1.
//!
//! One worker thread per core, each with a current-thread runtime, its own `SO_REUSEPORT`
//! listener and its own upstream connection pool (no locks between workers). A downstream
//! connection is one task; its requests' upstream exchanges run inline in it (no spawn, channel
//! or lock per request). The only per-request shared state is one `ArcSwap` load of the
//! current [`Snapshot`] and relaxed atomics for observation.
//!
//! `proxy` depends on `config` only; the control plane reads this crate through
//! [`ProxyHandle`].

#[doc(hidden)]
mod access_log;
pub mod bench_api;
mod body;
pub mod clock;
mod endpoint;
mod error;
mod fasthash;
pub mod h1;
mod handle;
mod load;
mod observe;
mod pool;
pub mod scan;
mod server;
mod service;
mod shadow;
mod snapshot;
mod split;
pub mod sse;

pub use handle::{ProxyHandle, SHADOW_PAIRS_KEPT};
pub use observe::{
    HistogramSnapshot, ModelObservation, ShadowDrop, StatusClass, StreamFailure,
    VariantObservation, LATENCY_BUCKETS,
};
pub use server::{load_tls, Listeners, Running, TlsError};
pub use shadow::{ShadowPair, Side};
pub use snapshot::{Directive, Directives, Snapshot};
pub use split::{cohort_of, hash64, is_candidate, Variant};
