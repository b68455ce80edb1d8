//! What a run measures: per-request samples folded into HDR histograms (microseconds), token and
//! error counts and the requests that met `--slo`, merged across threads, and the percentile
//! summaries the reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    slo::{Measured, Slo},
    sse::Usage,
};

/// Largest latency a histogram holds exactly: one hour in µs (longer ones are clamped to it).
const HIGHEST_US: u64 = 3_600_000_000;
/// Three significant digits: 0.1 % error at any magnitude, about 190 KB per histogram.
const SIGFIGS: u8 = 3;
/// Bytes of a refusal's body kept: room for [`REFUSAL_CHARS`] characters of UTF-8.
pub const REFUSAL_BYTES: usize = 512;
/// Characters of a refusal's body the report shows: an OpenAI error's message fits.
const REFUSAL_CHARS: usize = 200;

/// Why a request failed. Request errors are counted and reported, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connect (or HTTP/2 handshake) to the target failed.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// The connection failed after the request went out and before the response head.
    Io,
    /// A 4xx response.
    Status4xx,
    /// A 5xx response (or any other non-2xx/3xx status).
    Status5xx,
    /// After a 2xx head: the body was cut, or a stream ended without `[DONE]`.
    Cut,
    /// A stream was expected, and a 2xx answer whose content type is not
    /// `text/event-stream` (a JSON completion, say) ended without `[DONE]`.
    NotAStream,
    /// After a 2xx head: the stream carried an error event.
    ErrorEvent,
}

/// Errors by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub timeout: u64,
    pub io: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// Body cut or stream without `[DONE]` after a 2xx head.
    pub cut_after_200: u64,
    /// A whole (say JSON) answer where a stream was expected.
    pub not_a_stream: u64,
    /// Error event in a stream after a 2xx head.
    pub error_event: u64,
}

/// One request's timings, filled by the exchange and folded into a [`Recorder`]. A worker keeps
/// one and reuses its buffer, so recording allocates nothing.
#[derive(Debug, Default)]
pub struct Sample {
    /// Response head received.
    pub head: Option<Instant>,
    /// First token event received (streams only).
    pub first_token: Option<Instant>,
    /// Gaps between consecutive token events of the same choice.
    pub gaps: Vec<Duration>,
    pub error: Option<ErrorKind>,
    /// The body was read as a stream, so `token_events` is a count (0 included).
    pub streamed: bool,
    /// Token events over every choice (streams only).
    pub token_events: u64,
    /// Choices that sent a token (streams only).
    pub choices: u32,
    /// The answer's `usage` counts: a stream's last usage chunk, a whole answer's `usage`.
    pub usage: Option<Usage>,
    /// The HTTP status of a 4xx or 5xx answer (0 otherwise).
    pub status: u16,
    /// The start of that answer's body, at most [`REFUSAL_BYTES`].
    pub error_body: Vec<u8>,
}

/// The status of the first 4xx or 5xx answer and the start of its body, and whether any other
/// status came: a run whose every request got the same refusal says what the target answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    pub first: Option<Refusal>,
    /// A status besides `first`'s was seen.
    pub mixed: bool,
}

/// One refusal: its status and the start of its body (whitespace runs as one space, at most
/// [`REFUSAL_CHARS`] characters, `…` when cut).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub status: u16,
    pub body: String,
}

/// Output and prompt tokens of successful requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Requests whose output tokens are known (streams, and answers with `usage`).
    pub counted: u64,
    /// Their output tokens.
    pub output: u64,
    /// Of `counted`, those whose prompt tokens are known too (from `usage`).
    pub prompted: u64,
    /// Their prompt tokens.
    pub prompt: u64,
}

/// The measured window as the recorders see it, to place requests that were sent late.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// The end of the warm-up.
    pub from: Instant,
    /// `None` with `--requests`: the window lasts until the last request ended.
    pub until: Option<Instant>,
}

/// The histograms and counters of one target.
#[derive(Clone, Debug)]
pub struct Recorder {
    pub total: Histogram<u64>,
    pub ttfb: Histogram<u64>,
    pub ttft: Histogram<u64>,
    /// Time per output token: (total − TTFT) / (output tokens per choice − 1).
    pub tpot: Histogram<u64>,
    pub itl: Histogram<u64>,
    /// Requests that succeeded (their total latency is in `total`).
    pub ok: u64,
    pub tokens: Tokens,
    /// Successful requests that met every bound of `--slo` (all of them without one).
    pub slo_met: u64,
    pub errors: Errors,
    /// Open-loop requests that were due but never sent (the generator gave up, far behind).
    pub dropped: u64,
    /// Warm-up requests that waited for a free connection past the warm-up's end: the target
    /// took them in the measured window.
    pub spill: u64,
    /// Measured requests (in `ok` or `errors`) that waited for a free connection past the
    /// window's end: the backlog sent after it.
    pub backlog: u64,
    /// When the last backlog request was sent.
    pub last_backlog: Option<Instant>,
    /// When the last measured request ended (the window's end with `--requests`).
    pub last_end: Option<Instant>,
    pub refusals: Refusals,
}

/// Percentiles of one histogram, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    pub max: u64,
}

// === impl Errors ===

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.io
            + self.status_4xx
            + self.status_5xx
            + self.cut_after_200
            + self.not_a_stream
            + self.error_event
    }

    pub fn add(&mut self, kind: ErrorKind) {
        *match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Io => &mut self.io,
            ErrorKind::Status4xx => &mut self.status_4xx,
            ErrorKind::Status5xx => &mut self.status_5xx,
            ErrorKind::Cut => &mut self.cut_after_200,
            ErrorKind::NotAStream => &mut self.not_a_stream,
            ErrorKind::ErrorEvent => &mut self.error_event,
        } += 1;
    }

    fn merge(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.io += o.io;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.cut_after_200 += o.cut_after_200;
        self.not_a_stream += o.not_a_stream;
        self.error_event += o.error_event;
    }

    /// `(name, count)` for every kind, in report order.
    pub fn by_kind(&self) -> [(&'static str, u64); 8] {
        [
            ("connect", self.connect),
            ("timeout", self.timeout),
            ("io", self.io),
            ("status_4xx", self.status_4xx),
            ("status_5xx", self.status_5xx),
            ("cut_after_200", self.cut_after_200),
            ("not_a_stream", self.not_a_stream),
            ("error_event", self.error_event),
        ]
    }
}

// === impl Sample ===

impl Sample {
    /// Clears it for the next request, keeping the gap buffer's capacity.
    pub fn reset(&mut self) {
        self.head = None;
        self.first_token = None;
        self.gaps.clear();
        self.error = None;
        self.streamed = false;
        self.token_events = 0;
        self.choices = 0;
        self.usage = None;
        self.status = 0;
        self.error_body.clear();
    }

    /// Output tokens over every choice: `usage.completion_tokens` when the answer carried it,
    /// else a stream's token events; `None` for a whole answer without `usage`.
    pub fn output_tokens(&self) -> Option<u64> {
        match self.usage {
            Some(usage) => Some(usage.completion),
            None => self.streamed.then_some(self.token_events),
        }
    }

    /// vLLM's time per output token for a stream that ended at `end`: the time after the first
    /// token over the tokens after it, (total − TTFT) / (output tokens − 1), for at least two
    /// tokens. With `n` > 1 the choices are generated side by side, so the tokens are counted
    /// per choice (output tokens over the choices that sent one).
    pub fn tpot(&self, end: Instant) -> Option<Duration> {
        let first = self.first_token?;
        let per_choice = self.output_tokens()? as f64 / f64::from(self.choices.max(1));
        (per_choice >= 2.0).then(|| (end - first).div_f64(per_choice - 1.0))
    }
}

// === impl Refusals ===

impl Refusals {
    /// Copies the body only for the first refusal of each interval.
    pub fn add(&mut self, status: u16, body: &[u8]) {
        match &self.first {
            None => {
                self.first = Some(Refusal {
                    status,
                    body: shorten(body),
                })
            }
            Some(first) => self.mixed |= first.status != status,
        }
    }

    pub fn merge(&mut self, o: &Refusals) {
        self.mixed |= o.mixed;
        match (&self.first, &o.first) {
            (None, _) => self.first = o.first.clone(),
            (Some(a), Some(b)) => self.mixed |= a.status != b.status,
            (Some(_), None) => {}
        }
    }

    /// The refusal every failed request got, when all of them got the same status.
    pub fn uniform(&self) -> Option<&Refusal> {
        self.first.as_ref().filter(|_| !self.mixed)
    }
}

/// A body as one line of at most [`REFUSAL_CHARS`] characters.
fn shorten(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    match line.char_indices().nth(REFUSAL_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

// === impl Tokens ===

impl Tokens {
    fn add(&mut self, output: u64, prompt: Option<u64>) {
        self.counted += 1;
        self.output += output;
        if let Some(prompt) = prompt {
            self.prompted += 1;
            self.prompt += prompt;
        }
    }

    fn merge(&mut self, o: &Tokens) {
        self.counted += o.counted;
        self.output += o.output;
        self.prompted += o.prompted;
        self.prompt += o.prompt;
    }
}

// === impl Recorder ===

impl Default for Recorder {
    fn default() -> Self {
        let h = || {
            // Constant, valid bounds: 1 ≤ low, high ≥ 2·low, sigfigs ≤ 5.
            Histogram::new_with_bounds(1, HIGHEST_US, SIGFIGS).expect("valid bounds")
        };
        Self {
            total: h(),
            ttfb: h(),
            ttft: h(),
            tpot: h(),
            itl: h(),
            ok: 0,
            tokens: Tokens::default(),
            slo_met: 0,
            errors: Errors::default(),
            dropped: 0,
            spill: 0,
            backlog: 0,
            last_backlog: None,
            last_end: None,
            refusals: Refusals::default(),
        }
    }
}

impl Recorder {
    /// Folds in one finished request that was due at `due` and ended at `end`. Failed requests
    /// are counted by kind; their latencies and tokens stay out, and they are never good.
    pub fn record(&mut self, due: Instant, end: Instant, s: &Sample, slo: &Slo) {
        self.last_end = self.last_end.max(Some(end));
        if let Some(kind) = s.error {
            self.errors.add(kind);
            if s.status != 0 {
                self.refusals.add(s.status, &s.error_body);
            }
            return;
        }
        self.ok += 1;
        let m = Measured {
            ttfb: s.head.map(|head| head - due),
            ttft: s.first_token.map(|first| first - due),
            tpot: s.tpot(end),
            total: end - due,
        };
        self.total.saturating_record(micros(m.total));
        for (h, value) in [
            (&mut self.ttfb, m.ttfb),
            (&mut self.ttft, m.ttft),
            (&mut self.tpot, m.tpot),
        ] {
            if let Some(v) = value {
                h.saturating_record(micros(v));
            }
        }
        for gap in &s.gaps {
            self.itl.saturating_record(micros(*gap));
        }
        if let Some(output) = s.output_tokens() {
            self.tokens.add(output, s.usage.and_then(|u| u.prompt));
        }
        if slo.met(&m) {
            self.slo_met += 1;
        }
    }

    /// Places a request sent at `at` that was due before a connection was free (`queued`): a
    /// warm-up one sent after the warm-up is spill, a measured one sent after the window is
    /// backlog. Requests sent on time are where their due time puts them.
    pub fn sent(&mut self, at: Instant, queued: bool, measured: bool, span: Span) {
        if !queued {
            return;
        }
        if !measured && at >= span.from {
            self.spill += 1;
        } else if measured && span.until.is_some_and(|until| at >= until) {
            self.backlog += 1;
            self.last_backlog = self.last_backlog.max(Some(at));
        }
    }

    /// Measured requests that ended (succeeded or failed), whenever; dropped ones were never
    /// sent.
    pub fn completed(&self) -> u64 {
        self.ok + self.errors.total()
    }

    /// Requests the rate counts: the measured ones and the warm-up ones sent in the window.
    pub fn taken(&self) -> u64 {
        self.completed() + self.spill
    }

    pub fn merge(&mut self, o: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.total.add(&o.total);
        let _ = self.ttfb.add(&o.ttfb);
        let _ = self.ttft.add(&o.ttft);
        let _ = self.tpot.add(&o.tpot);
        let _ = self.itl.add(&o.itl);
        self.ok += o.ok;
        self.tokens.merge(&o.tokens);
        self.slo_met += o.slo_met;
        self.errors.merge(&o.errors);
        self.dropped += o.dropped;
        self.spill += o.spill;
        self.backlog += o.backlog;
        self.last_backlog = self.last_backlog.max(o.last_backlog);
        self.last_end = self.last_end.max(o.last_end);
        self.refusals.merge(&o.refusals);
    }

    /// Empties it for the next interval, keeping its memory.
    pub fn reset(&mut self) {
        self.total.reset();
        self.ttfb.reset();
        self.ttft.reset();
        self.tpot.reset();
        self.itl.reset();
        self.ok = 0;
        self.tokens = Tokens::default();
        self.slo_met = 0;
        self.errors = Errors::default();
        self.dropped = 0;
        self.spill = 0;
        self.backlog = 0;
        self.last_backlog = None;
        self.refusals = Refusals::default();
        self.last_end = None;
    }
}

// === impl Percentiles ===

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `(name, µs)` for each reported percentile and the maximum, in order.
    pub fn rows(&self) -> [(&'static str, u64); 5] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p99_9),
            ("max", self.max),
        ]
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
