//! The engine's `/metrics` page, hand-written so every name is exactly the engine's own.

use std::{
    fmt::{Display, Write},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use super::{state::State, Engine};

mod engines;

/// vLLM's `time_to_first_token_seconds` bounds, copied so dashboards built on vLLM read the same.
const VLLM_TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's bounds for `e2e_request_latency_seconds` and `request_queue_time_seconds`.
const VLLM_REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// SGLang's `time_to_first_token_seconds` bounds.
const SGLANG_TTFT_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 120.0, 160.0,
];
/// SGLang's `e2e_request_latency_seconds` bounds.
const SGLANG_E2E_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 150.0,
    200.0, 250.0, 300.0, 350.0, 500.0, 1000.0,
];
/// TGI's `*_duration` bounds: 35 buckets growing by 1.5× from 150 µs.
const TGI_DURATION_BUCKETS: usize = 35;

/// Counters and histograms; gauges are read from [`super::state::Load`] when rendering.
pub(super) struct Metrics {
    ttft: Histogram,
    e2e: Histogram,
    queue: Histogram,
    queue_micros: AtomicU64,
    success_stop: AtomicU64,
    success_length: AtomicU64,
    pub(super) success_abort: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    queue_full: AtomicU64,
    /// Inference requests received, not shadowed and shadowed. Apart from the received log's
    /// counts, which `DELETE /sim/requests` resets: a Prometheus counter never goes back.
    received: [AtomicU64; 2],
    faults: [AtomicU64; Injected::ALL.len()],
}

/// How a finished request ended, for the success counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    Stop,
    Length,
    /// The client left mid-stream (vLLM's `finished_reason="abort"`).
    Abort,
}

/// A fault that fired, for `rollgate_sim_faults_injected_total{fault}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Injected {
    Error,
    Truncate,
    ErrorEvent,
    WrongAnswer,
    Stall,
}

/// A histogram in seconds with fixed bounds; the last slot is `+Inf`.
struct Histogram {
    bounds: Box<[f64]>,
    counts: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

/// A Prometheus text page under construction; `labels` go on every sample.
struct Page {
    out: String,
    labels: String,
}

// === impl Metrics ===

impl Metrics {
    pub fn new(engine: Engine) -> Self {
        let tgi: Vec<f64> = (1..=TGI_DURATION_BUCKETS as i32)
            .map(|i| 0.0001 * 1.5f64.powi(i))
            .collect();
        let (ttft, e2e, queue) = match engine {
            Engine::Vllm | Engine::Triton => (
                VLLM_TTFT_BUCKETS.to_vec(),
                VLLM_REQUEST_BUCKETS.to_vec(),
                VLLM_REQUEST_BUCKETS.to_vec(),
            ),
            Engine::Sglang => (
                SGLANG_TTFT_BUCKETS.to_vec(),
                SGLANG_E2E_BUCKETS.to_vec(),
                SGLANG_E2E_BUCKETS.to_vec(),
            ),
            Engine::Tgi => (VLLM_TTFT_BUCKETS.to_vec(), tgi.clone(), tgi),
        };
        Self {
            ttft: Histogram::new(ttft),
            e2e: Histogram::new(e2e),
            queue: Histogram::new(queue),
            queue_micros: AtomicU64::new(0),
            success_stop: AtomicU64::new(0),
            success_length: AtomicU64::new(0),
            success_abort: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            received: Default::default(),
            faults: Default::default(),
        }
    }

    pub fn observe_queue(&self, d: Duration) {
        self.queue.observe(d);
        self.queue_micros.fetch_add(micros(d), Relaxed);
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d);
    }

    pub fn finished(&self, finish: Finish, e2e: Duration, prompt: u64, generated: u64) {
        self.e2e.observe(e2e);
        self.prompt_tokens.fetch_add(prompt, Relaxed);
        self.generation_tokens.fetch_add(generated, Relaxed);
        let counter = match finish {
            Finish::Stop => &self.success_stop,
            Finish::Length => &self.success_length,
            Finish::Abort => &self.success_abort,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    pub fn queue_full(&self) {
        self.queue_full.fetch_add(1, Relaxed);
    }

    pub fn received(&self, shadow: bool) {
        self.received[usize::from(shadow)].fetch_add(1, Relaxed);
    }

    pub fn injected(&self, fault: Injected) {
        self.faults[fault as usize].fetch_add(1, Relaxed);
    }

    fn successes(&self) -> u64 {
        self.success_stop.load(Relaxed) + self.success_length.load(Relaxed)
    }
}

/// Renders the whole page for the simulator's engine profile.
pub(super) fn render(state: &State) -> String {
    let model = escape(&state.args.model);
    let mut page = Page {
        out: String::with_capacity(8 * 1024),
        labels: String::new(),
    };
    match state.args.engine {
        Engine::Vllm => engines::vllm(&mut page, state, &model),
        Engine::Sglang => engines::sglang(&mut page, state, &model),
        Engine::Tgi => engines::tgi(&mut page, state),
        Engine::Triton => engines::triton(&mut page, state, &model),
    }
    common(&mut page, state);
    page.out
}

/// Series every profile carries: simulated GPU memory, requests received, faults fired.
fn common(page: &mut Page, state: &State) {
    let m = &state.metrics;
    let (used, total) = state.gpu_memory();
    page.labels = String::new();
    page.gauge(
        "rollgate_sim_gpu_memory_used_bytes",
        "Simulated GPU memory in use, in bytes.",
        used,
    );
    page.gauge(
        "rollgate_sim_gpu_memory_total_bytes",
        "Simulated GPU memory, in bytes.",
        total,
    );
    page.family(
        "rollgate_sim_requests_total",
        "counter",
        "Inference requests received, by x-rollgate-shadow.",
    );
    for (shadow, labels) in [(false, "shadow=\"false\""), (true, "shadow=\"true\"")] {
        let count = m.received[usize::from(shadow)].load(Relaxed);
        page.sample("rollgate_sim_requests_total", labels, count);
    }
    page.counter(
        "rollgate_sim_queue_full_total",
        "Requests refused because the queue was full.",
        m.queue_full.load(Relaxed),
    );
    page.family(
        "rollgate_sim_faults_injected_total",
        "counter",
        "Faults that fired, by fault.",
    );
    for fault in Injected::ALL {
        let labels = format!("fault=\"{}\"", fault.as_str());
        page.sample(
            "rollgate_sim_faults_injected_total",
            &labels,
            m.faults[fault as usize].load(Relaxed),
        );
    }
}

// === impl Injected ===

impl Injected {
    const ALL: [Self; 5] = [
        Self::Error,
        Self::Truncate,
        Self::ErrorEvent,
        Self::WrongAnswer,
        Self::Stall,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Truncate => "truncate",
            Self::ErrorEvent => "error_event",
            Self::WrongAnswer => "wrong_answer",
            Self::Stall => "stall",
        }
    }
}

// === impl Histogram ===

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds: bounds.into_boxed_slice(),
            counts,
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = self.bounds.partition_point(|&b| b < secs);
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros(d), Relaxed);
    }
}

// === impl Page ===

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, extra: &str, value: impl Display) {
        let sep = if self.labels.is_empty() || extra.is_empty() {
            ""
        } else {
            ","
        };
        let labels = format!("{}{sep}{extra}", self.labels);
        // Writing to a String cannot fail.
        let _ = if labels.is_empty() {
            writeln!(self.out, "{name} {value}")
        } else {
            writeln!(self.out, "{name}{{{labels}}} {value}")
        };
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    fn counter(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "counter", help);
        self.sample(name, "", value);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let mut cumulative = 0;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = match h.bounds.get(i) {
                Some(bound) => format!("le=\"{bound}\""),
                None => "le=\"+Inf\"".to_owned(),
            };
            self.sample(&format!("{name}_bucket"), &le, cumulative);
        }
        let sum = h.sum_micros.load(Relaxed) as f64 / 1e6;
        self.sample(&format!("{name}_sum"), "", sum);
        self.sample(&format!("{name}_count"), "", cumulative);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Escapes a label value per the text exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
