//! What one simulator shares between its connections: settings, faults, load, counters, log.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, PoisonError, RwLock,
    },
};

use http::HeaderValue;
use sha2::{Digest, Sha256};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use super::{metrics::Metrics, openai::MAX_EMBEDDING_DIM, Faults, Received, SimArgs};

pub(super) struct State {
    pub args: SimArgs,
    /// The `x-sim-name` response header.
    pub name: HeaderValue,
    /// A stable fake GPU UUID derived from the name, for Triton's `gpu_uuid` label.
    pub gpu_uuid: String,
    pub metrics: Metrics,
    pub load: Load,
    faults: RwLock<Arc<FaultState>>,
    seq: AtomicU64,
    slots: Arc<Semaphore>,
    received: Mutex<ReceivedLog>,
}

/// Faults plus when they were set: GPU memory growth counts from then.
pub(super) struct FaultState {
    pub faults: Faults,
    pub since: Instant,
}

/// Gauges the engine metrics report.
#[derive(Default)]
pub(super) struct Load {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    /// Prompt plus output tokens of the running requests: what the KV cache holds.
    pub kv_tokens: AtomicU64,
}

#[derive(Default)]
struct ReceivedLog {
    total: u64,
    shadow: u64,
    last: VecDeque<Received>,
}

/// Why a request was not admitted.
pub(super) struct QueueFull;

/// One admitted request: holds its concurrency slot and its KV tokens until dropped.
pub(super) struct Running {
    state: Arc<State>,
    kv_tokens: u64,
    _slot: OwnedSemaphorePermit,
}

/// Keeps `waiting` right when a queued request's connection goes away.
struct Waiting<'a>(&'a Load);

// === impl State ===

impl State {
    pub fn new(args: SimArgs) -> anyhow::Result<Self> {
        let name = args.name.clone().unwrap_or_else(|| args.model.clone());
        let name = HeaderValue::from_str(&name)
            .map_err(|_| anyhow::anyhow!("--name {name:?} is not a valid header value"))?;
        anyhow::ensure!(
            (1..=Semaphore::MAX_PERMITS).contains(&args.max_concurrency),
            "--max-concurrency must be between 1 and {}",
            Semaphore::MAX_PERMITS
        );
        anyhow::ensure!(
            (1..=u64::from(u32::MAX)).contains(&args.output_tokens),
            "--output-tokens must be between 1 and {}",
            u32::MAX
        );
        anyhow::ensure!(
            (1..=MAX_EMBEDDING_DIM).contains(&args.embedding_dim),
            "--embedding-dim must be between 1 and {MAX_EMBEDDING_DIM}"
        );
        anyhow::ensure!(
            args.kv_cache_tokens > 0,
            "--kv-cache-tokens must be at least 1"
        );
        let digest = Sha256::digest(name.as_bytes());
        let hex = hex(&digest[..16]);
        let gpu_uuid = format!(
            "GPU-{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        let faults = FaultState {
            faults: args.faults.clone(),
            since: Instant::now(),
        };
        Ok(Self {
            slots: Arc::new(Semaphore::new(args.max_concurrency)),
            metrics: Metrics::new(args.engine),
            load: Load::default(),
            faults: RwLock::new(Arc::new(faults)),
            seq: AtomicU64::new(0),
            received: Mutex::new(ReceivedLog::default()),
            name,
            gpu_uuid,
            args,
        })
    }

    pub fn faults(&self) -> Arc<FaultState> {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        tracing::info!(?faults, "simulator faults set");
        let next = Arc::new(FaultState {
            faults,
            since: Instant::now(),
        });
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// A per-request number that seeds the request's fault and jitter draws.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    /// Logs one inference request; its `seq` is assigned here.
    pub fn record(&self, mut received: Received) {
        self.metrics.received(received.shadow);
        let mut log = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        log.total += 1;
        received.seq = log.total;
        log.shadow += u64::from(received.shadow);
        if self.args.received_log == 0 {
            return;
        }
        if log.last.len() >= self.args.received_log {
            log.last.pop_front();
        }
        log.last.push_back(received);
    }

    /// `(total, shadow, last N)`.
    pub fn received(&self) -> (u64, u64, Vec<Received>) {
        let log = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        (log.total, log.shadow, log.last.iter().cloned().collect())
    }

    pub fn reset_received(&self) {
        *self.received.lock().unwrap_or_else(PoisonError::into_inner) = ReceivedLog::default();
    }

    /// Waits FIFO for a concurrency slot, or refuses when `--max-queue` requests already wait.
    pub async fn admit(self: &Arc<Self>, kv_tokens: u64) -> Result<Running, QueueFull> {
        let start = Instant::now();
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                let max = self.args.max_queue;
                let load = &self.load;
                load.waiting
                    .fetch_update(Relaxed, Relaxed, |w| (w < max).then_some(w + 1))
                    .map_err(|_| QueueFull)?;
                let _waiting = Waiting(load);
                // The semaphore is never closed, so acquiring only fails if that changes.
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| QueueFull)?
            }
        };
        let queued = start.elapsed();
        self.load.running.fetch_add(1, Relaxed);
        self.load.kv_tokens.fetch_add(kv_tokens, Relaxed);
        self.metrics.observe_queue(queued);
        Ok(Running {
            state: self.clone(),
            kv_tokens,
            _slot: slot,
        })
    }

    /// KV cache occupancy in `0..=1`.
    pub fn kv_usage(&self) -> f64 {
        let tokens = self.load.kv_tokens.load(Relaxed) as f64;
        (tokens / self.args.kv_cache_tokens as f64).min(1.0)
    }

    /// `(used, total)` bytes: base share plus KV growth plus the growth fault, capped at total.
    pub fn gpu_memory(&self) -> (u64, u64) {
        let total = self.args.gpu_memory_total;
        let faults = self.faults();
        let used = match faults.faults.gpu_memory_used {
            Some(fixed) => fixed.as_f64() * total as f64,
            None => {
                let base = self.args.gpu_memory_used.as_f64() * total as f64;
                base + self.kv_usage() * (total as f64 - base)
            }
        };
        let growth = faults.faults.gpu_memory_growth as f64 * faults.since.elapsed().as_secs_f64();
        // Capped at `total`, so the cast back cannot overflow.
        let used = (used + growth).min(total as f64) as u64;
        (used, total)
    }
}

// === impl Running ===

impl Drop for Running {
    fn drop(&mut self) {
        let load = &self.state.load;
        load.running.fetch_sub(1, Relaxed);
        load.kv_tokens.fetch_sub(self.kv_tokens, Relaxed);
    }
}

// === impl Waiting ===

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Relaxed);
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}
