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
mod percent;
mod policy;
mod raw;
mod units;
mod validate;

pub use diff::{diff, Change, ChangeKind};
pub use error::{ConfigError, Errors, ParseError};
pub use percent::{encode_path_segment, percent_decode, PercentError};
pub use policy::{check, rollout_change, RolloutChange, Violation};
pub use units::{parse_duration, parse_ppm, parse_size, Ppm, PPM_MAX};
pub use validate::gitops::{Gitops, Kubernetes};
pub use validate::MAX_CONFIG_BYTES;

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
    /// Where one JSON line per request goes (`access_log:`), if anywhere. Applies on reload.
    pub access_log: Option<AccessLog>,
    /// Directory for persistent state (rollout progress). None: kept in memory only, so a
    /// restart begins every rollout again.
    pub state_dir: Option<PathBuf>,
    /// Which environment this config deploys to (free text, e.g. `staging`, `prod`); policy
    /// rules keyed by environment apply when it matches.
    pub env: Option<String>,
    /// Rules for changes to this config, checked by `rollgate validate --repo` and `rollgate
    /// diff` (never at runtime). Default: no rules.
    pub policy: Policy,
    /// Where model statuses are pushed (`gitops:`); see `docs/gitops.md`.
    pub gitops: Gitops,
    pub models: Vec<Model>,
}

/// Rules a change to the config must follow (the `policy:` section), checked by
/// [`check`]. Every rule is off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Largest traffic increase in one move: between consecutive canary steps (the first from
    /// 0 %) and, without a rollout plan, from the old config's weight to the new one.
    pub max_step: Option<Ppm>,
    /// Gates every rollout must configure, by environment (`env`). Names are gate keys.
    pub require_gates: Vec<(String, Vec<GateName>)>,
    /// Environments whose rollouts must wait for an operator (`approval: manual`).
    pub require_approval: Vec<String>,
    /// Candidates must be named by immutable references: no `latest`/`main`/… revision,
    /// artifact or runtime, and runtime images pinned by `@sha256:` digest.
    pub immutable_candidates: bool,
    /// A candidate may change the model artifact or the runtime relative to stable, not both.
    pub one_change_per_rollout: bool,
}

/// A gate key of `rollout.gates`, as policy rules name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GateName {
    ErrorRate,
    LatencyP99,
    TtftP95,
    QueueTimeP95,
    GpuMemoryUsed,
    Correctness,
    Promql,
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
    /// Named tokens with roles. `token_file` / `ROLLGATE_ADMIN_TOKEN` acts as one more token,
    /// named `admin`, with every role.
    pub tokens: Vec<AdminToken>,
    /// Distinct named `sync` tokens that `POST /sync/pause` needs: 1 (default) or 2 (the
    /// second one as `X-Rollgate-Approver`).
    pub sync_pause_approvers: u32,
    /// The read endpoints (`/metrics`, `/status`, `/status/models/…`, `GET /rollouts`, the
    /// Argo Rollouts metric) and `POST /reload` need a token with the `read` role. Default
    /// false: they are open, and the listener's address is what protects them. `/healthz`,
    /// the Git webhook (signed) and the Flagger webhooks (which send no headers) stay open.
    pub protect_reads: bool,
}

/// One named admin token (`admin.tokens[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminToken {
    /// Who holds it: the actor in the audit log.
    pub name: String,
    /// File holding the token; read once at startup.
    pub file: PathBuf,
    /// What it may do; never empty.
    pub roles: Vec<Role>,
}

/// What an admin token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Rollout commands: pause, resume, abort, promote, approve, pin, unpin.
    Operate,
    /// Pause and resume Git/file sync (break-glass on the source of truth).
    Sync,
    /// `GET /live-config`, and the read endpoints under `admin.protect_reads`. Every token may
    /// read; this role allows nothing else.
    Read,
}

impl Role {
    /// Every role, in the order they are written.
    pub const ALL: [Role; 3] = [Role::Operate, Role::Sync, Role::Read];

    /// The name used in the config file and in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operate => "operate",
            Role::Sync => "sync",
            Role::Read => "read",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Bytes of a JSON body read to find `model` (and a cohort body field), held while they are
    /// read. Default 1 MiB: clients that write `model` after `messages` send the whole prompt
    /// first.
    pub model_prefix: usize,
    /// Time allowed to receive a full request head (slowloris). Default 30 s. hyper starts this
    /// timer whenever it waits for a request head, so it is also how long an idle HTTP/1
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
}

/// The access log's destination: `access_log: "-"` (standard output) or a file path (opened
/// for appending, created if missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLog {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLog::Stdout => f.write_str("standard output"),
            AccessLog::File(p) => write!(f, "{}", p.display()),
        }
    }
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
    /// A candidate-bound request that reaches no candidate endpoint (every connect attempt
    /// failed, or every endpoint is ejected; nothing was sent) is answered by the stable
    /// backend instead. The candidate is still charged the failure. Default true.
    pub candidate_fallback: bool,
    /// Candidate answer statuses (429, 500–599) that also hand the request to the stable
    /// backend, when the whole request is still in hand and nothing of the answer has been
    /// sent: the candidate's answer is dropped unread. Sorted, no duplicates. Default empty.
    pub candidate_fallback_status: Vec<u16>,
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
    /// The model weights served, e.g. `hf://org/model@<commit>` or `s3://bucket/model/v3`.
    /// Tells a model rollout from a runtime rollout; never read at runtime.
    pub artifact: Option<String>,
    /// The server image and driver, e.g. `vllm/vllm-openai@sha256:…`. Never read at runtime.
    pub runtime: Option<String>,
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
    /// Share mirrored while the worker handling the request is saturated (running or waiting
    /// for a CPU nearly all the time): users' requests first. Above `sample` it has no effect.
    /// Default 1 %.
    pub saturated_sample: Ppm,
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

// === impl GateName ===

impl GateName {
    pub const ALL: [GateName; 7] = [
        GateName::ErrorRate,
        GateName::LatencyP99,
        GateName::TtftP95,
        GateName::QueueTimeP95,
        GateName::GpuMemoryUsed,
        GateName::Correctness,
        GateName::Promql,
    ];

    /// The key under `rollout.gates`.
    pub fn as_str(self) -> &'static str {
        match self {
            GateName::ErrorRate => "error_rate",
            GateName::LatencyP99 => "latency_p99",
            GateName::TtftP95 => "ttft_p95",
            GateName::QueueTimeP95 => "queue_time_p95",
            GateName::GpuMemoryUsed => "gpu_memory_used",
            GateName::Correctness => "correctness",
            GateName::Promql => "promql",
        }
    }
}

impl std::str::FromStr for GateName {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        GateName::ALL
            .into_iter()
            .find(|g| g.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = GateName::ALL.iter().map(|g| g.as_str()).collect();
                ParseError::new(format!(
                    "unknown gate `{text}`; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

// === impl Gates ===

impl Gates {
    /// Whether the gate `name` is configured.
    pub fn has(&self, name: GateName) -> bool {
        match name {
            GateName::ErrorRate => self.error_rate.is_some(),
            GateName::LatencyP99 => self.latency_p99.is_some(),
            GateName::TtftP95 => self.ttft_p95.is_some(),
            GateName::QueueTimeP95 => self.queue_time_p95.is_some(),
            GateName::GpuMemoryUsed => self.gpu_memory_used.is_some(),
            GateName::Correctness => self.correctness.is_some(),
            GateName::Promql => self.promql.is_some(),
        }
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

    /// Whether the engine's `/metrics` has a queue-time histogram (what `queue_time_p95`
    /// reads): vLLM `vllm:request_queue_time_seconds`, TGI `tgi_request_queue_duration`.
    /// Kept in step with the control crate's alias table by a test there.
    pub fn reports_queue_time(self) -> bool {
        matches!(self, Engine::Vllm | Engine::Tgi)
    }

    /// Whether the engine's own `/metrics` has GPU memory (Triton's `nv_gpu_memory_*`); other
    /// engines need a `gpu_metrics` page (gpu-agent, DCGM) for the `gpu_memory_used` gate.
    pub fn reports_gpu_memory(self) -> bool {
        matches!(self, Engine::Triton)
    }
}
