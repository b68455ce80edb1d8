//! `rollgate loadtest`: an open-loop (coordinated-omission-corrected) and closed-loop HTTP load
//! generator for OpenAI-shaped and plain requests, with HDR latency histograms, SSE token
//! timings, token throughput, goodput under latency objectives, an alternating A/B mode that
//! measures what a gateway adds, and a sweep over a list of open-loop rates.
//!
//! Each `--threads` thread runs its own current-thread tokio runtime with a fixed share of the
//! connections and of the rate; hyper 1 client connections are driven directly (no pool), and
//! request bodies are prebuilt `Bytes`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use http::{uri::PathAndQuery, HeaderName, HeaderValue, Method, Uri};

use self::sweep::{Rates, SweepPlan};
use crate::sim::parse_duration;

pub use self::{schedule::Arrival, slo::Slo};

mod client;
mod engine;
mod report;
mod request;
mod run;
mod schedule;
mod slo;
mod sse;
mod stats;
mod sweep;

/// Flags of `rollgate loadtest`. Durations read `10s`, `500ms` (a bare number is milliseconds).
#[derive(clap::Args, Clone, Debug)]
#[command(
    after_help = "Open loop with --rate (latency from each request's intended send time), \
                  closed loop without it. See docs/loadtest.md."
)]
pub struct LoadArgs {
    /// Target base URL (`http://host:port`, optionally with a path).
    #[arg(required_unless_present = "compare", conflicts_with = "compare")]
    pub url: Option<String>,
    /// Run the same schedule against two targets in alternating slices and report what B adds
    /// over A (A: the upstream directly, B: through the gateway).
    #[arg(long, num_args = 2, value_names = ["URL_A", "URL_B"])]
    pub compare: Option<Vec<String>>,
    /// Length of each target's turn with `--compare`.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub slice: Duration,

    /// Open loop: requests per second in total (without it: closed loop). A list, as
    /// `10,20,40,80` (increasing), runs the workload at each rate in turn and prints a summary;
    /// the sweep stops after the first rate the target does not keep up at (falls behind, or
    /// fails more than 1 % of the requests).
    // Hyphen values allowed, so that `--rate -5` gets the rate's own message with the other
    // flag problems rather than clap's "unexpected argument".
    #[arg(long, value_name = "PER_SECOND[,...]", allow_hyphen_values = true)]
    pub rate: Option<String>,
    /// With a `--rate` list: run every rate, also past the first one the target does not keep up
    /// at.
    #[arg(long)]
    pub sweep_all: bool,
    /// Open-loop arrivals: evenly spaced or a Poisson process.
    #[arg(long, value_enum, default_value = "constant")]
    pub arrival: Arrival,
    /// Open loop: busy-wait (yielding to other tasks) the last millisecond before each send, so
    /// sends are not bunched on tokio's 1 ms timer ticks; costs generator CPU.
    #[arg(long)]
    pub spin: bool,
    /// Keep-alive connections per target (closed loop: each sends back to back).
    #[arg(long, short = 'c', default_value = "1")]
    pub connections: usize,
    /// With `--h2c`: requests in flight at once on each connection.
    #[arg(long, default_value = "1")]
    pub streams: usize,
    /// Generator threads, each with its own runtime and share of connections and rate.
    #[arg(long, short = 't', default_value = "1")]
    pub threads: usize,
    /// How long to measure (after the warm-up).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Send, but do not record, for this long first.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Longest one request may take, connect included, before it counts as a timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// HTTP/2 with prior knowledge (cleartext) instead of HTTP/1.1.
    #[arg(long)]
    pub h2c: bool,

    /// Request shape: an OpenAI API, or `raw` (GET, or POST of `--body`).
    #[arg(long, value_enum, default_value = "chat")]
    pub api: Api,
    /// Ask for an SSE stream and time its tokens (TTFT, inter-token gaps).
    #[arg(long)]
    pub stream: bool,
    /// The `model` of generated requests.
    #[arg(long, default_value = "sim-model")]
    pub model: String,
    /// Size of the synthetic prompt, in words (about one token each).
    #[arg(long, default_value = "16")]
    pub prompt_tokens: usize,
    /// `max_tokens` of generated requests (chat and completions).
    #[arg(long, default_value = "16")]
    pub max_tokens: u64,
    /// JSONL file: each line a JSON string (a prompt) or a JSON object (a whole request body
    /// sent as is); lines are used in turn, cycling.
    #[arg(long, value_name = "FILE", conflicts_with = "body")]
    pub prompts: Option<PathBuf>,
    /// Request body read from a file (sent as is, any `--api`).
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// Request path (default: the URL's path, else the API's path, `/` for raw).
    #[arg(long)]
    pub path: Option<String>,
    /// Request method (default: POST, or GET for `raw` without `--body`).
    #[arg(long)]
    pub method: Option<String>,
    /// Extra request header `Name: value` (repeatable; replaces a default of the same name).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Seed of the Poisson arrivals.
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// Latency objectives, as `ttft=200ms,tpot=50ms,total=2s` (any of ttfb, ttft, tpot,
    /// total): report goodput, the rate of successful requests that met every one.
    #[arg(long, value_parser = str::parse::<Slo>, value_name = "METRIC=DURATION,...")]
    pub slo: Option<Slo>,

    /// No live progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write per-percentile rows to this CSV file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

/// The request shape.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Chat,
    Completions,
    Embeddings,
    Raw,
}

/// Validated settings of one run.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
    pub mode: Mode,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub timeout: Duration,
    pub h2c: bool,
    pub slice: Duration,
    pub request: request::Template,
    pub seed: u64,
    pub spin: bool,
    /// `--slo`: goodput is reported only with it.
    pub slo: Option<Slo>,
    /// A `--rate` list of more than one rate; `mode` then holds the first.
    pub sweep: Option<SweepPlan>,
}

/// Open or closed loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    Open { rate: f64, arrival: Arrival },
    Closed,
}

/// One target: where to connect and what to put in the request line and `Host`.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// Origin form (`/v1/chat/completions`) for HTTP/1.1.
    pub origin: Uri,
    /// Absolute form for HTTP/2 (`:scheme`, `:authority`).
    pub absolute: Uri,
    pub host: HeaderValue,
}

// === impl Api ===

impl Api {
    fn default_path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
            Api::Embeddings => "/v1/embeddings",
            Api::Raw => "/",
        }
    }
}

// === impl Plan ===

impl TryFrom<&LoadArgs> for Plan {
    type Error = anyhow::Error;

    /// Checks every flag and reports all problems at once.
    fn try_from(a: &LoadArgs) -> anyhow::Result<Self> {
        let mut errors = Vec::new();
        let urls: Vec<&str> = match (&a.url, &a.compare) {
            (_, Some(both)) => both.iter().map(String::as_str).collect(),
            (Some(url), None) => vec![url.as_str()],
            (None, None) => Vec::new(),
        };
        let mut targets = Vec::new();
        for url in urls {
            match Target::parse(url, a) {
                Ok(t) => targets.push(t),
                Err(e) => errors.push(format!("{url}: {e:#}")),
            }
        }
        let rates = a.rate.as_deref().and_then(|s| {
            s.parse::<Rates>()
                .map_err(|e| errors.push(format!("--rate {s}: {e}")))
                .ok()
        });
        let mode = match &rates {
            Some(rates) => Mode::Open {
                rate: rates.first(),
                arrival: a.arrival,
            },
            None => Mode::Closed,
        };
        let sweep = rates.filter(|r| r.len() > 1).map(|rates| SweepPlan {
            rates,
            all: a.sweep_all,
        });
        sweep_conflicts(a, sweep.is_some(), &mut errors);
        if a.connections == 0 {
            errors.push("--connections must be at least 1".to_owned());
        }
        if a.streams == 0 {
            errors.push("--streams must be at least 1".to_owned());
        }
        if a.streams > 1 && !a.h2c {
            errors.push("--streams above 1 needs --h2c (HTTP/1.1 sends one at a time)".to_owned());
        }
        if a.threads == 0 || a.threads > a.connections.max(1) {
            errors.push(format!(
                "--threads {} must be between 1 and --connections ({})",
                a.threads, a.connections
            ));
        }
        if a.requests == Some(0) {
            errors.push("--requests must be at least 1".to_owned());
        }
        if a.requests.is_none() && a.duration.is_zero() {
            errors.push("--duration must be above 0".to_owned());
        }
        if a.timeout.is_zero() {
            errors.push("--timeout must be above 0".to_owned());
        }
        if a.compare.is_some() && a.slice.is_zero() {
            errors.push("--slice must be above 0".to_owned());
        }
        let slo = a.slo.unwrap_or_default();
        for (metric, bound) in [("ttft", slo.ttft), ("tpot", slo.tpot)] {
            if bound.is_some() && !a.stream {
                errors.push(format!(
                    "--slo {metric}: needs --stream (only a stream's tokens are timed)"
                ));
            }
        }
        let request = request::Template::build(a).unwrap_or_else(|e| {
            errors.push(format!("{e:#}"));
            request::Template::empty()
        });
        if !errors.is_empty() {
            bail!("invalid loadtest flags:\n  {}", errors.join("\n  "));
        }
        Ok(Self {
            targets,
            mode,
            connections: a.connections,
            streams: a.streams,
            threads: a.threads,
            duration: a.requests.is_none().then_some(a.duration),
            requests: a.requests,
            warmup: a.warmup,
            timeout: a.timeout,
            h2c: a.h2c,
            slice: if a.compare.is_some() {
                a.slice
            } else {
                Duration::ZERO
            },
            request,
            seed: a.seed,
            spin: a.spin,
            slo: a.slo,
            sweep,
        })
    }
}

// === impl Target ===

impl Target {
    fn parse(url: &str, a: &LoadArgs) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().context("not a URL")?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("scheme {other} is not supported (http only)"),
            None => bail!("no scheme (use http://host:port)"),
        }
        let authority = uri.authority().context("no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
            .with_context(|| format!("cannot resolve {}", authority.host()))?
            .next()
            .with_context(|| format!("{} has no address", authority.host()))?;
        let url_path = uri.path_and_query().map(PathAndQuery::as_str);
        let path = match (&a.path, url_path) {
            (Some(p), _) => p.as_str(),
            (None, Some(p)) if p != "/" => p,
            (None, _) => a.api.default_path(),
        };
        let origin: Uri = path.parse().with_context(|| format!("bad path {path:?}"))?;
        let absolute = Uri::builder()
            .scheme("http")
            .authority(authority.clone())
            .path_and_query(path)
            .build()
            .with_context(|| format!("bad path {path:?}"))?;
        let host = HeaderValue::from_str(authority.as_str()).context("bad host")?;
        Ok(Self {
            url: url.to_owned(),
            addr,
            origin,
            absolute,
            host,
        })
    }
}

/// The flags a `--rate` list does not go with.
fn sweep_conflicts(a: &LoadArgs, sweep: bool, errors: &mut Vec<String>) {
    if a.sweep_all && a.rate.is_none() {
        errors.push("--sweep-all needs a --rate list (10,20,40)".to_owned());
    }
    if !sweep {
        return;
    }
    if a.compare.is_some() {
        errors.push(
            "--compare takes one --rate, not a list (sweep each target on its own)".to_owned(),
        );
    }
    if a.requests.is_some() {
        errors.push(
            "--requests does not go with a --rate list: a sweep measures each rate for \
             --duration, the window it can fall short in"
                .to_owned(),
        );
    }
}

/// Parses `Name: value`.
fn parse_header(h: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = h
        .split_once(':')
        .with_context(|| format!("header {h:?}: use Name:value"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("header {h:?}: bad name"))?;
    let value =
        HeaderValue::from_str(value.trim()).with_context(|| format!("header {h:?}: bad value"))?;
    Ok((name, value))
}

impl Plan {
    /// The plan of one rate of a sweep: the same workload, open loop at `rate`.
    fn at_rate(&self, rate: f64) -> Self {
        let mode = match self.mode {
            Mode::Open { arrival, .. } => Mode::Open { rate, arrival },
            Mode::Closed => Mode::Closed,
        };
        Self {
            mode,
            sweep: None,
            ..self.clone()
        }
    }

    /// With `--compare` the warm-up is the start of the sliced schedule, so unless it is an even
    /// number of slices one target is warmed longer than the other. Harmless for latencies; a
    /// counter read over the whole run (a server's CPU time per request) is skewed by it.
    fn uneven_warmup(&self) -> Option<String> {
        let pair = self.slice.as_nanos() * 2;
        if self.targets.len() < 2 || pair == 0 || self.warmup.as_nanos() % pair == 0 {
            return None;
        }
        Some(format!(
            "the --warmup of {:?} is not an even number of {:?} slices, so A is warmed longer \
             than B; latencies are unaffected, but counters that include the warm-up (a \
             server's CPU time per request) are skewed. --warmup {:?} warms both alike.",
            self.warmup,
            self.slice,
            self.slice * 2 * u32::try_from(self.warmup.as_nanos().div_ceil(pair)).unwrap_or(1),
        ))
    }
}

fn parse_method(m: &str) -> anyhow::Result<Method> {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("--method {m:?} is not a method"))
}

/// Runs a load test as the flags say and prints its report. Request errors are reported, not
/// returned; an error here is a setup failure (bad flags, unreadable file, target unreachable).
/// A `--rate` list runs a sweep; falling short in it is reported, not an error.
pub fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let plan = Plan::try_from(args)?;
    if let Some(sweep) = &plan.sweep {
        return sweep::run(&plan, sweep, args);
    }
    if let Some(note) = plan.uneven_warmup() {
        eprintln!("note: {note}");
    }
    let result = run::execute(&plan, !args.quiet)?;
    report::emit(&plan, &result, args)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
