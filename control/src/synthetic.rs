//! Synthetic golden checks: a suite of requests with assertions, sent straight to a candidate
//! backend before any user traffic reaches it.
//!
//! # Suite format (YAML)
//!
//! ```yaml
//! requests:                       # at least one
//!   - name: capital               # unique, non-empty
//!     path: /v1/chat/completions  # starts with /; always POSTed
//!     body: { model: chat-small, messages: [{role: user, content: "capital of France?"}] }
//!     expect:                     # optional; without it the check wants a 2xx
//!       status: 200               # exact status; absent: any 2xx
//!       json:                     # JSON path -> matchers, all must hold
//!         "choices[0].message.content": { contains: "Paris", prefix: "The" }
//!       max_latency: 2s           # whole answer, stream included: 250ms, 2s, 1m
//!       stream_done: true         # needs `stream: true` in the body: ends with [DONE], no
//!                                 # error event, every choice has a finish_reason
//!       embedding_dim: 384        # every data[i].embedding has this many components
//! ```
//!
//! Matchers: `equals` (any JSON value), `contains`, `prefix`, `suffix` (strings), `exists`
//! (bool). Paths: see [`JsonPath`]. A streamed answer is reassembled into the non-streamed
//! shape first, so `choices[0].message.content` (and `choices[0].text`) work for it too. The
//! `regex` crate is left out on purpose: the gateway does not carry it, and golden answers are
//! checked for a fact (`contains`), not a pattern.
//!
//! Unknown keys, wrong types, bad paths and durations are all reported at once, each with its
//! path (`requests[2].expect.json."choices[0]x": expected ...`).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

mod path;
mod run;
mod suite;

pub use path::{JsonPath, Matcher};

/// Marks synthetic requests so the gateway and the model server keep them out of user metrics.
pub const SYNTHETIC_HEADER: &str = "x-rollgate-synthetic";
/// Largest answer body read; golden answers are short, and a broken backend must not make the
/// control plane hold an endless stream.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// How long a connection to a backend may sit unused between suite runs.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A validated suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    checks: Vec<Check>,
}

/// One request and what its answer must satisfy.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    name: String,
    path: String,
    /// The body as JSON, serialised once at load.
    body: Bytes,
    /// The body says `stream: true`.
    stream: bool,
    expect: Expect,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Expect {
    /// `None`: any 2xx.
    status: Option<u16>,
    json: Vec<(JsonPath, Vec<Matcher>)>,
    max_latency: Option<Duration>,
    stream_done: bool,
    embedding_dim: Option<usize>,
}

/// Every problem found in a suite file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid synthetic suite, {}:\n{}", crate::gitops::count(.issues.len(), "error"), join_issues(.issues))]
pub struct SuiteError {
    pub issues: Vec<Issue>,
}

/// One problem and where it is; `path` is empty for the whole file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

/// The HTTP client and limits a suite runs with; cheap to clone, one per control plane.
#[derive(Clone, Debug)]
pub struct SyntheticClient {
    client: Client<HttpConnector, Full<Bytes>>,
    /// Limit on one whole exchange, answer body included.
    timeout: Duration,
}

/// The outcome of one suite run.
#[derive(Clone, Debug, PartialEq)]
pub struct SuiteResult {
    pub passed: usize,
    pub failed: usize,
    pub results: Vec<CheckResult>,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    /// Status of the answer; `None` when none came (connection refused, timeout).
    pub status: Option<u16>,
    /// From sending the request to the end of the answer (or the failure).
    pub latency: Duration,
    /// Why it failed, one reason per broken expectation; empty when it passed.
    pub failures: Vec<String>,
}

/// Runs the checks one after another (so their latencies do not disturb each other) against
/// `base_url` (`http://host:port`, no trailing path needed). Never fails as a whole: a network
/// error or a bad URL fails the checks it touches, with the reason.
pub async fn run_suite(suite: &Suite, base_url: &str, client: &SyntheticClient) -> SuiteResult {
    let mut results = Vec::with_capacity(suite.checks.len());
    for check in &suite.checks {
        let result = run::run_check(check, base_url, client).await;
        if !result.passed {
            tracing::debug!(check = %result.name, failures = ?result.failures, "synthetic check failed");
        }
        results.push(result);
    }
    let passed = results.iter().filter(|r| r.passed).count();
    SuiteResult {
        passed,
        failed: results.len() - passed,
        results,
    }
}

fn join_issues(issues: &[Issue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
    lines.join("\n")
}

// === impl Suite ===

impl Suite {
    /// Reads a suite file, reporting every problem at once.
    pub fn from_yaml(text: &str) -> Result<Self, SuiteError> {
        suite::parse(text)
    }

    pub fn checks(&self) -> &[Check] {
        &self.checks
    }
}

// === impl Check ===

impl Check {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn stream(&self) -> bool {
        self.stream
    }
}

// === impl Issue ===

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_str() {
            "" => f.write_str(&self.message),
            path => write!(f, "{path}: {}", self.message),
        }
    }
}

// === impl SyntheticClient ===

impl SyntheticClient {
    /// Plain HTTP; `timeout` bounds each exchange, answer body included.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            // Without a timer the pool never closes idle connections to a retired candidate.
            client: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE)
                .build(connector),
            timeout,
        }
    }
}

// === impl SuiteResult ===

impl SuiteResult {
    /// Share of checks that passed; 0 for an empty run, since no evidence is not a pass.
    pub fn pass_rate(&self) -> f64 {
        match self.results.len() {
            0 => 0.0,
            n => self.passed as f64 / n as f64,
        }
    }

    pub fn all_passed(&self) -> bool {
        self.failed == 0 && !self.results.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
