//! rollgate's control plane: the reload funnel, the admin API and status. The rollout engine,
//! signal sources and GitOps publishers will grow here.
//!
//! Depends on `config` and on the data plane's public [`rollgate_proxy::ProxyHandle`].

mod admin;
pub mod breakglass;
pub use rollgate_proxy::clock;
pub mod git;
pub mod gitops;
pub mod gpu;
pub mod operator;
mod reload;
pub mod rollout;
pub mod scoring;
pub mod signals;
mod status;
pub mod synthetic;

pub use admin::path::PathError;
pub use admin::{local_addr, serve_admin, AdminServer};
pub use reload::{
    revision_of, ConfigSource, OnApplied, Preflight, ReloadOutcome, ReloadTrigger, Reloader,
    ReloaderHandle, SyncPause, SyncState,
};
pub use status::StatusReport;
