//! The final report: a table on stdout (or one JSON object with `--json`), per-percentile CSV
//! rows with `--csv`, token throughput and goodput, and with `--compare` the latency B adds over
//! A and the throughput ratios.

use std::{collections::BTreeMap, fmt::Write as _, io::Write as _, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    run::Outcome,
    stats::{Errors, Percentiles, Recorder, Refusal},
    Arrival, LoadArgs, Mode, Plan, Slo,
};

mod throughput;

pub(crate) use self::throughput::{Goodput, TokenReport};

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub run: RunInfo,
    pub targets: Vec<TargetReport>,
    /// Only with `--compare`.
    pub compare: Option<Comparison>,
}

/// How the run was made.
#[derive(Debug, Serialize)]
pub(crate) struct RunInfo {
    /// `open` or `closed`.
    pub mode: &'static str,
    pub target_rate: Option<f64>,
    pub arrival: Option<&'static str>,
    pub connections: usize,
    pub streams: usize,
    pub threads: usize,
    /// `http1` or `h2c`.
    pub protocol: &'static str,
    pub duration_s: Option<f64>,
    pub requests_limit: Option<u64>,
    pub warmup_s: f64,
    pub stream: bool,
    /// `--slo`, µs per metric; `None` (JSON `null`) without it.
    pub slo_us: Option<BTreeMap<&'static str, u64>>,
    /// `--slo` as given, for the table.
    #[serde(skip)]
    pub slo: Option<Slo>,
}

/// One target's results.
#[derive(Debug, Serialize)]
pub(crate) struct TargetReport {
    pub url: String,
    /// Measured requests (due in the measured window) that were sent and ended, whenever:
    /// ok plus errors. The latencies are theirs.
    pub requests: u64,
    pub ok: u64,
    pub errors_total: u64,
    pub errors: Errors,
    /// Of `requests`, those still waiting for a free connection at the window's end, sent
    /// after it.
    pub backlog: u64,
    /// Open-loop requests due but never sent (the generator fell too far behind).
    pub dropped: u64,
    /// Open loop: requests due in the measured window (`requests + dropped`).
    pub offered: Option<u64>,
    /// What `rate` counts: `requests` plus warm-up requests sent after the warm-up.
    pub sent: u64,
    /// Seconds `rate` is over: this target's share of the window (of its slices with
    /// `--compare`), stretched to the last backlog request's send.
    pub measured_s: f64,
    /// `sent` per measured second: the rate the target took requests at.
    pub rate: f64,
    /// Open loop with `--duration`: whether the target fell behind the schedule.
    pub fell_short: Option<bool>,
    /// Output (and prompt) tokens and their rates; `None` when no successful request had a
    /// token count (a plain HTTP target, embeddings).
    pub tokens: Option<TokenReport>,
    /// With `--slo`: the successful requests that met it.
    pub goodput: Option<Goodput>,
    pub latency_us: Latencies,
    /// The first 4xx or 5xx answer (of any thread's, in any interval): its status and the
    /// start of its body; `None` when there was none.
    pub first_error: Option<Refusal>,
    /// Every 4xx or 5xx answer had `first_error`'s status.
    #[serde(skip)]
    pub one_status: bool,
}

/// Percentiles of each latency, in microseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Latencies {
    /// From the intended send time (open loop) or the send (closed loop) to the body's end.
    pub total: Percentiles,
    /// To the response head.
    pub ttfb: Percentiles,
    /// To the first SSE event carrying a token (streams only).
    pub ttft: Percentiles,
    /// Time per output token after the first: (total − TTFT) / (output tokens − 1), for
    /// streams of at least two tokens.
    pub tpot: Percentiles,
    /// Between consecutive token events (streams only).
    pub itl: Percentiles,
}

/// What B adds over A.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    /// B − A, µs, per latency and percentile (negative: B was faster).
    pub added_us: AddedLatencies,
    /// B's served rate over A's.
    pub throughput_ratio: f64,
    /// B's output tokens per second over A's; `None` when either has no token count.
    pub output_tokens_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AddedLatencies {
    pub total: Added,
    pub ttfb: Added,
    /// `None` (JSON `null`) without `--stream`: there are no tokens to time.
    pub ttft: Option<Added>,
    /// As `ttft`.
    pub tpot: Option<Added>,
}

/// Signed differences at each percentile.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Added {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    #[serde(rename = "p99.9")]
    pub p99_9: i64,
}

// === impl Report ===

impl Report {
    pub fn new(plan: &Plan, outcome: &Outcome) -> Self {
        let targets: Vec<TargetReport> = plan
            .targets
            .iter()
            .zip(&outcome.recorders)
            .zip(outcome.measured)
            .map(|((t, rec), measured)| TargetReport::new(plan, t.url.clone(), rec, measured))
            .collect();
        let compare = match targets.as_slice() {
            [a, b] => Some(Comparison::new(a, b, plan.request.sse)),
            _ => None,
        };
        Self {
            run: RunInfo::new(plan),
            targets,
            compare,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let load = match (r.target_rate, r.arrival) {
            (Some(rate), Some(arrival)) => format!("open loop, {rate} req/s {arrival}"),
            _ => "closed loop".to_owned(),
        };
        let length = match (r.duration_s, r.requests_limit) {
            (Some(d), _) => format!("{d}s"),
            (None, Some(n)) => format!("{n} requests"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{load}, {} connection(s) x {} stream(s), {} thread(s), {}, {length} after {}s warm-up",
            r.connections, r.streams, r.threads, r.protocol, r.warmup_s
        );
        let names = ["A", "B"];
        for (i, t) in self.targets.iter().enumerate() {
            let name = if self.targets.len() > 1 {
                format!("{} ", names[i])
            } else {
                String::new()
            };
            t.table(&mut out, &name, r.target_rate, r.slo.as_ref());
            if let Some(warning) = t.shortfall(r.target_rate) {
                let _ = writeln!(out, "  warning: {warning}");
            }
        }
        if let Some(c) = &self.compare {
            c.table(&mut out);
        }
        out
    }

    /// Warnings for stderr, when the table (which carries them) is not printed.
    pub fn warnings(&self) -> Vec<String> {
        let refused = self
            .targets
            .iter()
            .filter_map(|t| Some(format!("{}: {}", t.url, t.refused()?)));
        self.targets
            .iter()
            .filter_map(|t| Some(format!("{}: {}", t.url, t.shortfall(self.run.target_rate)?)))
            .chain(refused)
            .collect()
    }

    /// One row per target, latency and statistic: `target,url,metric,stat,value_us`, then the
    /// token and goodput rows, whose value is in the unit their stat names. Like the table, it
    /// leaves out token latencies without samples (always without `--stream`), token rows
    /// without a count, and B − A rows that do not apply.
    pub fn csv(&self) -> String {
        let mut out = String::from("target,url,metric,stat,value_us\n");
        let names = ["A", "B"];
        for (i, t) in self.targets.iter().enumerate() {
            for (metric, p) in t.latency_us.shown() {
                for (stat, v) in p.rows() {
                    let _ = writeln!(out, "{},{},{metric},{stat},{v}", names[i], t.url);
                }
                let _ = writeln!(out, "{},{},{metric},mean,{:.1}", names[i], t.url, p.mean);
            }
            let counts = t.tokens.iter().flat_map(TokenReport::rows);
            for (metric, stat, v) in counts.chain(t.goodput.iter().flat_map(Goodput::rows)) {
                let _ = writeln!(out, "{},{},{metric},{stat},{v}", names[i], t.url);
            }
        }
        if let Some(c) = &self.compare {
            for (metric, added) in c.added_us.rows() {
                for (stat, v) in added.rows() {
                    let _ = writeln!(out, "B-A,,{metric},{stat},{v}");
                }
            }
        }
        out
    }
}

// === impl RunInfo ===

impl RunInfo {
    fn new(plan: &Plan) -> Self {
        let (mode, target_rate, arrival) = match plan.mode {
            Mode::Open { rate, arrival } => (
                "open",
                Some(rate),
                Some(match arrival {
                    Arrival::Constant => "constant",
                    Arrival::Poisson => "poisson",
                }),
            ),
            Mode::Closed => ("closed", None, None),
        };
        Self {
            mode,
            target_rate,
            arrival,
            connections: plan.connections,
            streams: plan.streams,
            threads: plan.threads,
            protocol: if plan.h2c { "h2c" } else { "http1" },
            duration_s: plan.duration.map(|d| d.as_secs_f64()),
            requests_limit: plan.requests,
            warmup_s: plan.warmup.as_secs_f64(),
            stream: plan.request.sse,
            slo_us: plan.slo.map(|slo| {
                slo.bounds()
                    .into_iter()
                    .filter_map(|(metric, b)| Some((metric, micros(b?))))
                    .collect()
            }),
            slo: plan.slo,
        }
    }
}

// === impl TargetReport ===

impl TargetReport {
    fn new(plan: &Plan, url: String, rec: &Recorder, measured: Duration) -> Self {
        let requests = rec.completed();
        let secs = measured.as_secs_f64();
        let open = matches!(plan.mode, Mode::Open { .. });
        let offered = open.then_some(requests + rec.dropped);
        // A short burst at the very end can leave a few due requests waiting even when the
        // target keeps up; a whole round of the connections is the target falling behind.
        let round = (plan.connections * plan.streams) as u64;
        let fell_short =
            (open && plan.duration.is_some()).then_some(rec.dropped > 0 || rec.backlog > round);
        let sent = rec.taken();
        Self {
            url,
            requests,
            ok: rec.ok,
            errors_total: rec.errors.total(),
            errors: rec.errors,
            backlog: rec.backlog,
            dropped: rec.dropped,
            offered,
            sent,
            measured_s: secs,
            rate: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
            fell_short,
            tokens: TokenReport::new(&rec.tokens, secs),
            goodput: plan
                .slo
                .is_some()
                .then(|| Goodput::new(rec.slo_met, rec.ok, secs)),
            latency_us: Latencies {
                total: Percentiles::of(&rec.total),
                ttfb: Percentiles::of(&rec.ttfb),
                ttft: Percentiles::of(&rec.ttft),
                tpot: Percentiles::of(&rec.tpot),
                itl: Percentiles::of(&rec.itl),
            },
            first_error: rec.refusals.first.clone(),
            one_status: rec.refusals.uniform().is_some(),
        }
    }

    /// What the target answered, when it refused every request with the same status (a model
    /// the gateway does not know, a wrong path): without it the report is only counts.
    fn refused(&self) -> Option<String> {
        let status_errors = self.errors.status_4xx + self.errors.status_5xx;
        let every = self.ok == 0 && status_errors > 0 && status_errors == self.errors_total;
        let first = self
            .first_error
            .as_ref()
            .filter(|_| every && self.one_status)?;
        Some(format!(
            "every request got HTTP {}: {}",
            first.status, first.body
        ))
    }

    fn table(&self, out: &mut String, name: &str, target_rate: Option<f64>, slo: Option<&Slo>) {
        let _ = writeln!(out, "\n{name}{}", self.url);
        let _ = write!(
            out,
            "  requests {}  ok {}  errors {}  backlog {}  dropped {}  rate {:.1}/s",
            self.requests, self.ok, self.errors_total, self.backlog, self.dropped, self.rate
        );
        match target_rate {
            Some(t) => {
                let _ = writeln!(out, " (target {t}/s)");
            }
            None => out.push('\n'),
        }
        if let Some(tokens) = &self.tokens {
            tokens.table(out, self.ok);
        }
        if let (Some(goodput), Some(slo)) = (&self.goodput, slo) {
            goodput.table(out, self.ok, self.errors_total, slo);
        }
        let _ = writeln!(
            out,
            "  {:<6}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "max", "mean", "count"
        );
        for (metric, p) in self.latency_us.shown() {
            let _ = write!(out, "  {metric:<6}");
            for (_, v) in p.rows() {
                let _ = write!(out, "{:>10}", fmt_us(v));
            }
            let _ = writeln!(out, "{:>10}{:>10}", fmt_us(p.mean.round() as u64), p.count);
        }
        if self.errors_total > 0 {
            let kinds: Vec<String> = self
                .errors
                .by_kind()
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(out, "  errors: {}", kinds.join(", "));
        }
        if let Some(refused) = self.refused() {
            let _ = writeln!(out, "  {refused}");
        }
    }

    /// Why the rate falls short of the target, when it does (open loop with `--duration`).
    fn shortfall(&self, target_rate: Option<f64>) -> Option<String> {
        if self.fell_short != Some(true) {
            return None;
        }
        let offered = self.offered.unwrap_or(self.requests);
        let mut text = format!(
            "the target fell behind the schedule: of the {offered} requests due in the window, \
             {} went out only after it ended, waiting for a free connection, and {} were never \
             sent (dropped). The measured time runs until the last was sent ({:.2}s), so the \
             rate, {:.1}/s, is what the target took, not the {}/s asked for; the latencies \
             include the wait behind the backlog",
            self.backlog,
            self.dropped,
            self.measured_s,
            self.rate,
            target_rate.unwrap_or_default(),
        );
        if self.dropped > 0 {
            text.push_str(", and leave out the dropped requests, so they are optimistic");
        }
        text.push('.');
        Some(text)
    }
}

// === impl Latencies ===

impl Latencies {
    /// The latencies the reports show: token latencies only when they have samples (streams).
    fn shown(&self) -> impl Iterator<Item = (&'static str, &Percentiles)> {
        [
            ("total", &self.total),
            ("ttfb", &self.ttfb),
            ("ttft", &self.ttft),
            ("tpot", &self.tpot),
            ("itl", &self.itl),
        ]
        .into_iter()
        .filter(|(metric, p)| p.count > 0 || !matches!(*metric, "ttft" | "tpot" | "itl"))
    }
}

// === impl Comparison ===

impl Comparison {
    fn new(a: &TargetReport, b: &TargetReport, stream: bool) -> Self {
        let (la, lb) = (&a.latency_us, &b.latency_us);
        Self {
            added_us: AddedLatencies {
                total: Added::between(&la.total, &lb.total),
                ttfb: Added::between(&la.ttfb, &lb.ttfb),
                ttft: stream.then(|| Added::between(&la.ttft, &lb.ttft)),
                tpot: stream.then(|| Added::between(&la.tpot, &lb.tpot)),
            },
            throughput_ratio: if a.rate > 0.0 { b.rate / a.rate } else { 0.0 },
            output_tokens_ratio: match (&a.tokens, &b.tokens) {
                (Some(a), Some(b)) if a.output_per_s > 0.0 => Some(b.output_per_s / a.output_per_s),
                _ => None,
            },
        }
    }

    fn table(&self, out: &mut String) {
        let _ = writeln!(out, "\nB - A (what B adds)");
        let _ = writeln!(
            out,
            "  {:<6}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9"
        );
        for (metric, added) in self.added_us.rows() {
            let _ = write!(out, "  {metric:<6}");
            for (_, v) in added.rows() {
                let _ = write!(out, "{:>10}", fmt_signed_us(v));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "  throughput B/A {:.3}", self.throughput_ratio);
        if let Some(ratio) = self.output_tokens_ratio {
            let _ = writeln!(out, "  output tokens/s B/A {ratio:.3}");
        }
    }
}

// === impl AddedLatencies ===

impl AddedLatencies {
    /// The differences that apply: TTFT and TPOT only with `--stream`.
    fn rows(&self) -> impl Iterator<Item = (&'static str, &Added)> {
        [("total", &self.total), ("ttfb", &self.ttfb)]
            .into_iter()
            .chain(self.ttft.as_ref().map(|ttft| ("ttft", ttft)))
            .chain(self.tpot.as_ref().map(|tpot| ("tpot", tpot)))
    }
}

// === impl Added ===

impl Added {
    fn between(a: &Percentiles, b: &Percentiles) -> Self {
        if a.count == 0 || b.count == 0 {
            return Self::default();
        }
        let d = |x: u64, y: u64| {
            i64::try_from(y).unwrap_or(i64::MAX) - i64::try_from(x).unwrap_or(i64::MAX)
        };
        Self {
            p50: d(a.p50, b.p50),
            p90: d(a.p90, b.p90),
            p99: d(a.p99, b.p99),
            p99_9: d(a.p99_9, b.p99_9),
        }
    }

    fn rows(&self) -> [(&'static str, i64); 4] {
        [
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("p99.9", self.p99_9),
        ]
    }
}

/// `850µs`, `1.25ms`, `3.40s`.
pub(crate) fn fmt_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn fmt_signed_us(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "+" };
    format!("{sign}{}", fmt_us(us.unsigned_abs()))
}

/// Prints the report as the flags ask and writes the CSV file.
pub(crate) fn emit(plan: &Plan, outcome: &Outcome, args: &LoadArgs) -> anyhow::Result<()> {
    let report = Report::new(plan, outcome);
    if let Some(path) = &args.csv {
        std::fs::write(path, report.csv()).with_context(|| format!("--csv {}", path.display()))?;
    }
    let text = if args.json {
        for warning in report.warnings() {
            // The table carries its warnings; JSON keeps stdout one object, so they go here.
            eprintln!("warning: {warning}");
        }
        let mut json = serde_json::to_string(&report)?;
        json.push('\n');
        json
    } else {
        report.table()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
