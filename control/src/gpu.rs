//! `rollgate gpu-agent`: reads GPU memory through NVML on a timer and serves it as
//! Prometheus metrics (`/metrics`) and JSON (`/gpus`), for the rollout gate to read.
//!
//! No GPU (no `libnvidia-ml.so.1`, a failing init, zero devices) is a normal state: the agent
//! keeps serving, says `available: false` with the reason, logs it once, and tries NVML again
//! every [`NVML_RETRY_INTERVAL`] in case a driver appears.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Level;

mod http;
mod metrics;
mod reader;
mod snapshot;

pub use snapshot::{GpuInfo, GpuProcess, GpuSnapshot};

use self::http::AgentHttp;
use self::metrics::GpuMetrics;
use self::reader::{GpuReader, ReaderHandle, Reading};

/// How often a missing or failing NVML init is retried: init is cheap when the library is
/// absent, but a driver rarely appears, so once a minute is plenty.
pub const NVML_RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// Longest wait for one NVML read, init included (init takes seconds per GPU when
/// persistence mode is off). Past it the snapshot turns unavailable rather than going stale.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepted `--refresh-interval` range: faster hammers the driver, slower makes the gate blind.
const MIN_REFRESH: Duration = Duration::from_millis(100);
const MAX_REFRESH: Duration = Duration::from_secs(300);

/// Flags of `rollgate gpu-agent`.
#[derive(clap::Args, Clone, Debug)]
pub struct GpuAgentArgs {
    /// Address for `/metrics`, `/gpus` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:9401", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// How often to read NVML: `2s`, `500ms`, `1m`.
    #[arg(long, default_value = "2s", value_parser = parse_refresh, value_name = "DURATION")]
    pub refresh_interval: Duration,
    /// NVML library to load instead of `libnvidia-ml.so.1` from the loader's search path.
    #[arg(long, value_name = "PATH")]
    pub nvml_lib: Option<PathBuf>,
}

/// The refresh loop: the only writer of the snapshot and the metrics.
struct Refresher {
    reader: ReaderHandle,
    metrics: GpuMetrics,
    snapshot: watch::Sender<Arc<GpuSnapshot>>,
    interval: Duration,
    /// [`NVML_RETRY_INTERVAL`] outside tests.
    retry: Duration,
    health: Health,
}

/// What the last reading said, to log transitions once instead of every refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Starting,
    NoGpu,
    Ok,
    Failing,
}

/// Binds `args.listen` and serves until `shutdown` resolves.
pub async fn run(args: GpuAgentArgs, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the gpu-agent listener on {}: {e}", args.listen),
        )
    })?;
    let addr = listener.local_addr().unwrap_or(args.listen);
    tracing::info!(%addr, refresh = ?args.refresh_interval, "gpu-agent listening");
    serve(listener, args, shutdown).await
}

/// Serves on `listener` until `shutdown` resolves, then returns at once: scrapes are cheap
/// and idempotent, so nothing is drained. `args.listen` is ignored.
pub async fn serve(
    listener: TcpListener,
    args: GpuAgentArgs,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let reader = ReaderHandle::spawn(GpuReader::new(args.nvml_lib)).map_err(|e| {
        std::io::Error::new(e.kind(), format!("starting the NVML reader thread: {e}"))
    })?;
    let mut registry = Registry::default();
    let metrics = GpuMetrics::register(&mut registry);
    let (tx, rx) = watch::channel(Arc::new(GpuSnapshot::starting()));
    let refresher = Refresher {
        reader,
        metrics,
        snapshot: tx,
        interval: args.refresh_interval,
        retry: NVML_RETRY_INTERVAL,
        health: Health::Starting,
    };
    let http = Arc::new(AgentHttp {
        registry,
        snapshot: rx,
    });
    // One task: dropping the loser futures stops the refresh loop and the reader thread.
    tokio::select! {
        never = http::accept_loop(listener, http) => match never {},
        never = refresher.run() => match never {},
        () = shutdown => {
            tracing::info!("gpu-agent shutting down");
            Ok(())
        }
    }
}

// === impl Refresher ===

impl Refresher {
    async fn run(mut self) -> Infallible {
        // `interval` panics on zero; the CLI refuses it, a library caller might not.
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(1)));
        // After a slow read, wait a full interval rather than firing a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_init = Instant::now();
        loop {
            tick.tick().await;
            if self.health == Health::NoGpu && Instant::now() < next_init {
                continue;
            }
            let reading = self.reader.read(READ_TIMEOUT).await;
            if matches!(reading, Reading::NoGpu(_)) {
                next_init = Instant::now() + self.retry;
            }
            self.apply(reading);
        }
    }

    fn apply(&mut self, reading: Reading) {
        let (next, level) = transition(self.health, &reading);
        let now = crate::clock::rfc3339_millis(SystemTime::now());
        let snap = match reading {
            Reading::Gpus(gpus) => {
                log(level, &format!("NVML reads {} GPU(s)", gpus.len()));
                GpuSnapshot::read(gpus, now)
            }
            Reading::NoGpu(reason) => {
                log(level, &format!("no GPU: {reason}"));
                GpuSnapshot::unavailable(reason, Some(now))
            }
            Reading::Failed(error) => {
                log(level, &format!("GPU refresh failed: {error}"));
                self.metrics.refresh_failed();
                GpuSnapshot::unavailable(format!("refresh failed: {error}"), Some(now))
            }
        };
        self.metrics.publish(&snap);
        // Receivers live in the HTTP handlers; with none left the value is simply kept.
        self.snapshot.send_replace(Arc::new(snap));
        self.health = next;
    }
}

/// The next health, and the level to log this reading at: info or warn on a change, debug
/// (`None`) while nothing changes, so "no GPU" is one line at startup, not one per refresh.
fn transition(prev: Health, reading: &Reading) -> (Health, Option<Level>) {
    let next = match reading {
        Reading::Gpus(_) => Health::Ok,
        Reading::NoGpu(_) => Health::NoGpu,
        Reading::Failed(_) => Health::Failing,
    };
    let level = match (prev, next) {
        (p, n) if p == n => None,
        (_, Health::Failing) | (Health::Ok | Health::Failing, Health::NoGpu) => Some(Level::WARN),
        _ => Some(Level::INFO),
    };
    (next, level)
}

fn log(level: Option<Level>, msg: &str) {
    match level {
        Some(Level::WARN) => tracing::warn!("{msg}"),
        Some(_) => tracing::info!("{msg}"),
        None => tracing::debug!("{msg}"),
    }
}

/// Parses `--refresh-interval`: `500ms`, `2s`, `1m`, decimals allowed.
///
/// MOVE NOTE: in the control crate, `rollgate_config::parse_duration` can replace the unit
/// parsing; keep the range check.
fn parse_refresh(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let per_unit = match unit {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(format!("`{t}`: write a duration such as 500ms, 2s or 1m")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{t}`: write a duration such as 500ms, 2s or 1m"))?;
    let d = Duration::try_from_secs_f64(value * per_unit).map_err(|e| format!("`{t}`: {e}"))?;
    if !(MIN_REFRESH..=MAX_REFRESH).contains(&d) {
        return Err(format!(
            "`{t}` is outside {MIN_REFRESH:?}..={MAX_REFRESH:?}"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
