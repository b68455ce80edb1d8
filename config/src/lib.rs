//! rollgate configuration.
//!
//! YAML is read into serde-facing `Raw*` types (see `raw.rs`), then converted into the validated
//! types below. After conversion invalid states are unrepresentable: weights are [`Ppm`],
//! durations are [`Duration`], endpoints are parsed. Validation collects every error with its
//! path instead of stopping at the first one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod backend;
mod diff;
mod error;
mod raw;
mod units;
mod validate;

pub use diff::{diff, Change, ChangeKind};
pub use error::{ConfigError, Errors, ParseError};
pub use units::{parse_duration, parse_ppm, parse_size, Ppm, PPM_MAX};

/// Parses and validates a YAML config document, collecting every error.
pub fn parse(yaml: &str) -> Result<Config, Errors> {
    validate::parse(yaml)
}

/// One validated configuration. Immutable; a reload builds a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Data-plane listen address (HTTP/1.1 and h2c; TLS when `tls` is set).
    pub listen: SocketAddr,
    /// Data-plane worker threads (one runtime and one listener each); 0 = one per core.
    pub workers: usize,
    pub tls: Option<Tls>,
    pub admin: Admin,
    pub limits: Limits,
    pub upstream: Upstream,
    pub ejection: Ejection,
    pub routing: Routing,
    /// Which HTTP/1.1 implementation serves plain (non-TLS) downstream connections. Read per
    /// accepted connection, so a reload applies to new connections. Default `fast`.
    pub data_plane: DataPlane,
    /// How long SIGTERM waits for in-flight requests and streams before exiting.
    pub drain_timeout: Duration,
    /// Directory for persistent state (rollout progress). None: kept in memory only, so a
    /// restart begins every rollout again.
    pub state_dir: Option<PathBuf>,
    pub models: Vec<Model>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Admin listener: `/metrics`, `/status`, `/healthz`, the rollout API.
    pub listen: SocketAddr,
    /// File holding the bearer token for mutating admin calls (break-glass). The environment
    /// variable `ROLLGATE_ADMIN_TOKEN` takes precedence. Without either, mutating calls are
    /// refused.
    pub token_file: Option<PathBuf>,
    /// Append-only audit log (JSON lines) of every operator action. Default:
    /// `<state_dir>/audit.log` when `state_dir` is set.
    pub audit_log: Option<PathBuf>,
}

/// Limits applied to every downstream request before anything is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of all request header names and values (431 above it). Default 64 KiB.
    pub max_header_bytes: usize,
    /// Number of request headers (431 above it). Default 100.
    pub max_headers: usize,
    /// Request body bytes (413 above it). Default 64 MiB.
    pub max_body: u64,
    /// Bytes of a JSON body read to find `model` (and a cohort body field). Default 64 KiB.
    pub model_prefix: usize,
    /// Time allowed to receive a full request head (slowloris). Default 30 s. hyper starts this
    /// timer whenever it waits for a request head, so it is also how long an idle HTTP/1
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
}

/// The HTTP/1.1 implementation behind the data plane's listeners (`data_plane:` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPlane {
    /// hyper 1 for every connection.
    Hyper,
    /// rollgate's specialised HTTP/1.1 relay for plain HTTP/1.1 connections (Content-Length
    /// and chunked bodies, SSE passthrough); hyper still serves TLS, h2c, HTTP/1.0, upgrades,
    /// `Expect`, CONNECT and non-origin-form targets (the connection is handed over whole).
    #[default]
    Fast,
}

impl std::fmt::Display for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataPlane::Hyper => "hyper",
            DataPlane::Fast => "fast",
        })
    }
}

/// Timeouts and pool settings for connections to model servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// TCP connect timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Time from sending the request to receiving the response head. Default 300 s.
    pub response_timeout: Duration,
    /// Longest silence between two response body frames (failure after a 200). Default 60 s.
    pub idle_timeout: Duration,
    /// Pooled upstream connections idle longer than this are closed. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per endpoint per worker. Default 128.
    pub pool_max_idle: usize,
}

/// Passive health: endpoints that fail repeatedly are taken out for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive connect failures or 5xx responses that eject an endpoint. Default 5.
    pub consecutive_failures: u32,
    /// First ejection time; doubles on each repeat ejection. Default 5 s.
    pub base: Duration,
    /// Upper bound for the ejection time. Default 60 s.
    pub max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    /// Add `x-rollgate-variant` to responses. Default true.
    pub variant_header: bool,
    /// Honour the tester override request header `x-rollgate-variant: stable|candidate`.
    /// Default false.
    pub allow_override: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Matched exactly against the request's model.
    pub name: String,
    /// Takes requests that name no model. At most one model is the default.
    pub default: bool,
    pub stable: Backend,
    pub candidate: Option<Backend>,
    /// Candidate share. Zero when there is no candidate.
    pub weight: Ppm,
    pub cohort: Cohort,
    /// Mirror a sample to the candidate. Requires a candidate.
    pub shadow: Option<Shadow>,
    /// Consistent hashing of the cohort key onto endpoints (prefix/KV-cache warmth).
    pub affinity: Option<Affinity>,
    /// The rollout plan for the candidate. Requires a candidate. Without it, `weight` and
    /// `shadow` are applied as written and nothing is automated.
    pub rollout: Option<Rollout>,
}

/// How a candidate is delivered: health and synthetic checks, shadow, canary steps, promote.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollout {
    /// Golden requests run against the candidate directly before it sees users, then every
    /// `every` during Shadow and Canary.
    pub synthetic: Option<Synthetic>,
    /// Mirror phase before any user traffic reaches the candidate.
    pub shadow: Option<ShadowPhase>,
    /// Canary steps, strictly increasing weights, each held for its duration. May be empty
    /// (straight to Promote after Shadow).
    pub steps: Vec<Step>,
    pub gates: Gates,
    /// Samples (requests or pairs) a gate needs in its window before it can pass or fail.
    /// Default 200.
    pub min_samples: u64,
    pub metric_errors: MetricErrors,
    pub approval: Approval,
    /// After a rollback, no new rollout of this model starts for this long. Default 5 min.
    pub cooldown: Duration,
    /// Longest time ValidateHealth may take before the rollout is rolled back. Default 5 min.
    pub validate_timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synthetic {
    /// Suite file (YAML), relative to the config file's directory.
    pub suite: PathBuf,
    /// Period during Shadow and Canary. Default 30 s.
    pub every: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowPhase {
    pub sample: Ppm,
    /// Minimum time in Shadow. Default 2 min.
    pub duration: Duration,
    /// Comparable shadow pairs needed before Shadow can pass. Default 200.
    pub min_pairs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub weight: Ppm,
    /// Minimum time at this weight (`for` in the file).
    pub duration: Duration,
}

/// Gate thresholds; an absent gate is not evaluated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gates {
    pub error_rate: Option<ErrorRateGate>,
    pub latency_p99: Option<LatencyGate>,
    pub ttft_p95: Option<LatencyGate>,
    pub queue_time_p95: Option<LatencyGate>,
    pub gpu_memory_used: Option<GpuMemoryGate>,
    pub correctness: Option<CorrectnessGate>,
    /// Queries against a Prometheus HTTP API, each with bounds on its value.
    pub promql: Option<PromqlGates>,
}

/// PromQL gates: `GET {url}/api/v1/query`; `$model` in a query is replaced by the model name.
#[derive(Clone, Debug, PartialEq)]
pub struct PromqlGates {
    /// Prometheus base URL, `http://host:port` (a path prefix is kept).
    pub url: String,
    /// Per-query timeout. Default 2 s.
    pub timeout: Duration,
    pub queries: Vec<PromqlQuery>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PromqlQuery {
    /// Names the gate in status and metrics (`promql:NAME`).
    pub name: String,
    pub query: String,
    /// The value must not exceed this…
    pub max: Option<f64>,
    /// …nor fall below this. At least one is required.
    pub min: Option<f64>,
}

/// Failures (5xx, no response, failures after a 200) over requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorRateGate {
    pub max: Option<Ppm>,
    /// Candidate rate may exceed stable's (same window) by at most this, significantly.
    pub max_vs_stable: Option<Ppm>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyGate {
    pub max: Option<Duration>,
    /// Candidate quantile may be at most this multiple of stable's (same window).
    pub max_ratio_vs_stable: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuMemoryGate {
    /// Highest share of GPU memory in use on any candidate endpoint.
    pub max: Ppm,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CorrectnessGate {
    /// Lowest share of comparable shadow pairs (and synthetic checks) that must agree.
    pub min: f64,
}

/// What to do when signals cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricErrors {
    /// Consecutive inconclusive evaluations caused by metric errors. Default 4.
    pub limit: u32,
    pub then: OnMetricErrors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMetricErrors {
    /// Stay at the current step (never promote) until signals return.
    Hold,
    /// Roll back.
    Abort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    Auto,
    /// Wait for an operator's `approve` before Promote.
    Manual,
}

/// A pool of endpoints serving one model revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// At least one; no duplicates.
    pub endpoints: Vec<Endpoint>,
    pub engine: Engine,
    /// Free-form revision label (model version, image tag); shown in status.
    pub revision: Option<String>,
    /// Extra Prometheus pages with this backend's GPU memory (a `rollgate gpu-agent` or a DCGM
    /// exporter on the same nodes), read besides each endpoint's own `/metrics`.
    pub gpu_metrics: Vec<Endpoint>,
}

/// One model-server address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Normalised `http://host:port` (no path, no trailing slash).
    pub url: String,
    /// `host:port`, used as the upstream `Host` and to connect.
    pub authority: String,
}

/// The model server's engine: selects metric names and behaviours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    Vllm,
    Sglang,
    Tgi,
    Triton,
    /// Any other OpenAI-compatible server.
    Openai,
}

/// How a request's cohort key is found. No key → a random cohort per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cohort {
    /// Every request gets a random cohort.
    Random,
    /// A request header, lowercased (e.g. `x-user-id`).
    Header(String),
    /// The bearer token / `x-api-key` (hashed, never logged).
    ApiKey,
    /// A top-level string field of the JSON body (e.g. `user`), read from the model prefix.
    BodyField(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadow {
    /// Share of requests mirrored to the candidate.
    pub sample: Ppm,
    /// Mirrored requests in flight per model; more are dropped and counted. Default 64.
    pub max_inflight: usize,
    /// Mirrored request bodies larger than this are abandoned and counted. Default 64 MiB.
    pub max_body: u64,
    /// Request bytes queued for one mirrored request when the shadow reads slower than the
    /// primary; past it the mirror is abandoned and counted. Default 4 MiB.
    pub buffer: usize,
    /// Whole mirrored exchange deadline. Default 60 s.
    pub timeout: Duration,
    /// Response bytes kept per side (primary and shadow) for scoring. Default 256 KiB.
    pub capture: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Affinity {
    /// Bounded load: an endpoint is skipped when its outstanding requests exceed
    /// `load_factor × average + 1`. Default 1.25; must be ≥ 1.
    pub load_factor: f64,
}

// === impl Config ===

impl Config {
    /// The model a request names, by exact name.
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The model marked `default: true`, if any.
    pub fn default_model(&self) -> Option<&Model> {
        self.models.iter().find(|m| m.default)
    }
}

// === impl Engine ===

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Tgi => "tgi",
            Engine::Triton => "triton",
            Engine::Openai => "openai",
        }
    }
}
