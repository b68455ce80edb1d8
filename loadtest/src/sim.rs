//! An OpenAI-compatible model-server simulator (`rollgate sim`): it stands in for vLLM, SGLang,
//! TGI or Triton with a real concurrency limit and queue, a token-paced latency model,
//! deterministic answers, the engine's own `/metrics` names and faults switchable at run time.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

use self::state::State;

mod answer;
mod faults;
mod inference;
mod metrics;
mod openai;
mod reply;
mod service;
mod state;
mod stream;
mod tools;
mod units;

pub use faults::Faults;
pub use units::{format_duration, parse_bytes, parse_duration, Ratio, MAX_DURATION};

/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Flags of `rollgate sim`. Durations read `300ms`, `1.5s` (a bare number is milliseconds);
/// sizes read `80GiB`, `512MiB` or bytes; shares read `0.25` or `25%`.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct SimArgs {
    /// Address to listen on (the caller binds it and passes the listener to `start`).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The served model name (`/v1/models`, metrics labels).
    #[arg(long, default_value = "sim-model")]
    pub model: String,
    /// Sent back in the `x-sim-name` header of every response; defaults to `--model`.
    #[arg(long)]
    pub name: Option<String>,
    /// Whose `/metrics` names to serve.
    #[arg(long, value_enum, default_value = "vllm")]
    pub engine: Engine,
    /// Accept any `model` in requests; `--any-model false` answers other names with 404.
    #[arg(long, default_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    pub any_model: bool,
    /// Requests generating at once; the rest wait in the queue, first come first served.
    #[arg(long, default_value = "64")]
    pub max_concurrency: usize,
    /// Requests that may wait; beyond it requests get 503 with `Retry-After: 1`.
    #[arg(long, default_value = "1024")]
    pub max_queue: usize,
    /// Time to first token, after the queue.
    #[arg(long, default_value = "20ms", value_parser = parse_duration, value_name = "DURATION")]
    pub ttft: Duration,
    /// Time per output token after the first.
    #[arg(long, default_value = "5ms", value_parser = parse_duration, value_name = "DURATION")]
    pub tpot: Duration,
    /// Output tokens when a request names no `max_tokens`/`max_completion_tokens`.
    #[arg(long, default_value = "16")]
    pub output_tokens: u64,
    /// Spread of TTFT and TPOT: each is scaled by a seeded draw in `1 ± jitter`.
    #[arg(long, default_value = "0", value_name = "SHARE")]
    pub jitter: Ratio,
    /// Seed of the per-request fault and jitter draws.
    #[arg(long, default_value = "0")]
    pub seed: u64,
    /// Components of each embedding vector (a request's `dimensions` overrides it).
    #[arg(long, default_value = "384")]
    pub embedding_dim: usize,
    /// Largest request body kept for parsing; longer bodies are still read and hashed, then 413.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub max_body: u64,
    /// Prompt plus output tokens one request may use; more is a 400, as in vLLM. No limit unless
    /// set, so that bodies of any size get answers.
    #[arg(long)]
    pub max_model_len: Option<u64>,
    /// KV cache size in tokens: running requests' prompt plus output tokens over this is the
    /// reported KV usage.
    #[arg(long, default_value = "262144")]
    pub kv_cache_tokens: u64,
    /// Simulated GPU memory.
    #[arg(long, default_value = "80GiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub gpu_memory_total: u64,
    /// Share of GPU memory used with an empty KV cache; KV usage fills the rest.
    #[arg(long, default_value = "0.6", value_name = "SHARE")]
    pub gpu_memory_used: Ratio,
    /// Received requests kept for `GET /sim/requests`.
    #[arg(long, default_value = "1024")]
    pub received_log: usize,
    /// Longest an HTTP/1 client may take to send its request head.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub header_read_timeout: Duration,
    /// On shutdown, how long open requests may run before their connections are cut.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: Duration,
    /// Runtime threads of `rollgate sim` (not of an embedded `start`). `1` serves everything
    /// on one thread: the cheapest per request when the simulator is pinned to one core (a
    /// benchmark's stand-in shadow), since no thread wakes another.
    #[arg(long, default_value = "2", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    #[command(flatten)]
    pub faults: Faults,
}

/// Engine profiles: which metric names `/metrics` serves.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    Tgi,
    Triton,
}

/// One inference request as the simulator received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// 1 for the first request since start (or since the log was reset).
    pub seq: u64,
    pub path: String,
    /// SHA-256 of the whole body, lowercase hex.
    pub sha256: String,
    /// Body length in bytes.
    pub len: u64,
    /// The request carried `x-rollgate-shadow: 1` (or `true`).
    pub shadow: bool,
}

/// A running simulator. Dropping it starts a shutdown; [`Sim::shutdown`] also waits for it.
pub struct Sim {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

// === impl SimArgs ===

impl Default for SimArgs {
    /// The same values as the flags' defaults.
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            model: "sim-model".to_owned(),
            name: None,
            engine: Engine::Vllm,
            any_model: true,
            max_concurrency: 64,
            max_queue: 1024,
            ttft: Duration::from_millis(20),
            tpot: Duration::from_millis(5),
            output_tokens: 16,
            jitter: Ratio::ZERO,
            seed: 0,
            embedding_dim: 384,
            max_body: 64 << 20,
            max_model_len: None,
            kv_cache_tokens: 262_144,
            gpu_memory_total: 80 << 30,
            gpu_memory_used: Ratio::from_ppm(600_000).unwrap_or_default(),
            received_log: 1024,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
            threads: 2,
            faults: Faults::default(),
        }
    }
}

// === impl Sim ===

impl Sim {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for building request URLs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `x-sim-name` this simulator answers with.
    pub fn name(&self) -> &str {
        self.state.name.to_str().unwrap_or_default()
    }

    pub fn faults(&self) -> Faults {
        self.state.faults().faults.clone()
    }

    /// Replaces every fault at once (what `POST /sim/faults` does).
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// The last `--received-log` inference requests, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.state.received().2
    }

    /// Inference requests received since start or the last reset.
    pub fn requests_total(&self) -> u64 {
        self.state.received().0
    }

    /// Of those, the ones marked `x-rollgate-shadow`.
    pub fn shadow_requests_total(&self) -> u64 {
        self.state.received().1
    }

    /// Clears the received log and its two counts (what `DELETE /sim/requests` does); the
    /// `rollgate_sim_requests_total` counter on `/metrics` keeps counting.
    pub fn reset_received(&self) {
        self.state.reset_received();
    }

    /// The `/metrics` page as it reads now.
    pub fn metrics_text(&self) -> String {
        metrics::render(&self.state)
    }

    /// Begins [`Sim::shutdown`] without waiting for it: the listener closes (new connections
    /// are refused) and open requests finish. A server that went down, as a crashed pod's.
    pub fn stop(&self) {
        // Nobody listening only means the server already stopped.
        let _ = self.stop.send(true);
    }

    /// Stops accepting, lets open requests finish for `--shutdown-grace`, then cuts the rest.
    pub async fn shutdown(mut self) {
        // Nobody listening only means the server already stopped.
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            // A panicked or cancelled server task has nothing left to stop.
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        // Nobody listening only means the server already stopped.
        let _ = self.stop.send(true);
    }
}

/// Starts serving on `listener` in the current runtime and returns at once.
pub async fn start(args: SimArgs, listener: TcpListener) -> anyhow::Result<Sim> {
    let addr = listener.local_addr()?;
    let state = Arc::new(State::new(args)?);
    let (stop, stopped) = watch::channel(false);
    tracing::info!(%addr, model = %state.args.model, engine = ?state.args.engine, "simulator listening");
    let task = tokio::spawn(serve(listener, state.clone(), stopped));
    Ok(Sim {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

async fn serve(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !state.args.header_read_timeout.is_zero() {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(state.args.header_read_timeout);
    }
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let conn = serve_conn(builder.clone(), stream, state.clone(), stopped.clone());
                    conns.spawn(conn);
                }
                // Out of descriptors or a reset before accept: keep serving the others.
                Err(e) => {
                    tracing::debug!(error = %e, "simulator accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(state.args.shutdown_grace, drain)
        .await
        .is_err()
    {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tracing::info!("simulator stopped");
}

async fn serve_conn(
    builder: auto::Builder<TokioExecutor>,
    stream: TcpStream,
    state: Arc<State>,
    mut stopped: watch::Receiver<bool>,
) {
    // Nagle would hold back small SSE events; failing to turn it off only costs latency.
    let _ = stream.set_nodelay(true);
    // hyper's header timeout starts with the first byte; this one covers a silent client.
    let first_byte = state.args.header_read_timeout;
    if !first_byte.is_zero() {
        let mut byte = [0u8; 1];
        // Biased: a request already in the socket when shutdown begins is served (an open
        // request, which shutdown lets finish), not dropped unanswered.
        tokio::select! {
            biased;
            peeked = tokio::time::timeout(first_byte, stream.peek(&mut byte)) => match peeked {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    tracing::debug!("simulator client sent nothing; closing");
                    return;
                }
            },
            _ = stopped.changed() => return,
        }
    }
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(service::handle(state, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    // Biased, as above: polled first, the connection reads a request already in its socket,
    // which graceful shutdown then lets finish.
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = stopped.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "simulator connection ended with an error");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests;
