//! The final report: a table on stdout (or one JSON object with `--json`), per-percentile CSV
//! rows with `--csv`, and with `--compare` the latency B adds over A and the throughput ratio.

use std::{fmt::Write as _, io::Write as _, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    run::Outcome,
    stats::{Errors, Percentiles, Recorder},
    Arrival, LoadArgs, Mode, Plan,
};

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
}

/// One target's results.
#[derive(Debug, Serialize)]
pub(crate) struct TargetReport {
    pub url: String,
    /// Requests that ended in the measured window (ok plus errors).
    pub requests: u64,
    pub ok: u64,
    pub errors_total: u64,
    pub errors: Errors,
    /// Open-loop requests due but never sent (the generator fell too far behind).
    pub dropped: u64,
    /// Seconds this target was measured (its share of the slices with `--compare`).
    pub measured_s: f64,
    /// Ended requests per measured second.
    pub rate: f64,
    pub latency_us: Latencies,
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
    /// Between consecutive token events (streams only).
    pub itl: Percentiles,
}

/// What B adds over A.
#[derive(Debug, Serialize)]
pub(crate) struct Comparison {
    /// B − A, µs, per latency and percentile (negative: B was faster).
    pub added_us: AddedLatencies,
    /// B's rate over A's.
    pub throughput_ratio: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AddedLatencies {
    pub total: Added,
    pub ttfb: Added,
    pub ttft: Added,
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
            .map(|((t, rec), measured)| TargetReport::new(t.url.clone(), rec, measured))
            .collect();
        let compare = match targets.as_slice() {
            [a, b] => Some(Comparison::new(a, b)),
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
            t.table(&mut out, &name, r.target_rate);
        }
        if let Some(c) = &self.compare {
            c.table(&mut out, r.stream);
        }
        out
    }

    /// One row per target, latency and statistic: `target,url,metric,stat,value_us`.
    pub fn csv(&self) -> String {
        let mut out = String::from("target,url,metric,stat,value_us\n");
        let names = ["A", "B"];
        for (i, t) in self.targets.iter().enumerate() {
            let l = &t.latency_us;
            for (metric, p) in [
                ("total", &l.total),
                ("ttfb", &l.ttfb),
                ("ttft", &l.ttft),
                ("itl", &l.itl),
            ] {
                for (stat, v) in p.rows() {
                    let _ = writeln!(out, "{},{},{metric},{stat},{v}", names[i], t.url);
                }
                let _ = writeln!(out, "{},{},{metric},mean,{:.1}", names[i], t.url, p.mean);
            }
        }
        if let Some(c) = &self.compare {
            let a = &c.added_us;
            for (metric, added) in [("total", &a.total), ("ttfb", &a.ttfb), ("ttft", &a.ttft)] {
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
        }
    }
}

// === impl TargetReport ===

impl TargetReport {
    fn new(url: String, rec: &Recorder, measured: Duration) -> Self {
        let requests = rec.completed();
        let secs = measured.as_secs_f64();
        Self {
            url,
            requests,
            ok: rec.ok,
            errors_total: rec.errors.total(),
            errors: rec.errors,
            dropped: rec.dropped,
            measured_s: secs,
            rate: if secs > 0.0 {
                requests as f64 / secs
            } else {
                0.0
            },
            latency_us: Latencies {
                total: Percentiles::of(&rec.total),
                ttfb: Percentiles::of(&rec.ttfb),
                ttft: Percentiles::of(&rec.ttft),
                itl: Percentiles::of(&rec.itl),
            },
        }
    }

    fn table(&self, out: &mut String, name: &str, target_rate: Option<f64>) {
        let _ = writeln!(out, "\n{name}{}", self.url);
        let _ = write!(
            out,
            "  requests {}  ok {}  errors {}  dropped {}  rate {:.1}/s",
            self.requests, self.ok, self.errors_total, self.dropped, self.rate
        );
        match target_rate {
            Some(t) => {
                let _ = writeln!(out, " (target {t}/s)");
            }
            None => out.push('\n'),
        }
        let _ = writeln!(
            out,
            "  {:<6}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "max", "mean", "count"
        );
        let l = &self.latency_us;
        for (metric, p) in [
            ("total", &l.total),
            ("ttfb", &l.ttfb),
            ("ttft", &l.ttft),
            ("itl", &l.itl),
        ] {
            if p.count == 0 && matches!(metric, "ttft" | "itl") {
                continue;
            }
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
    }
}

// === impl Comparison ===

impl Comparison {
    fn new(a: &TargetReport, b: &TargetReport) -> Self {
        let (la, lb) = (&a.latency_us, &b.latency_us);
        Self {
            added_us: AddedLatencies {
                total: Added::between(&la.total, &lb.total),
                ttfb: Added::between(&la.ttfb, &lb.ttfb),
                ttft: Added::between(&la.ttft, &lb.ttft),
            },
            throughput_ratio: if a.rate > 0.0 { b.rate / a.rate } else { 0.0 },
        }
    }

    fn table(&self, out: &mut String, stream: bool) {
        let _ = writeln!(out, "\nB - A (what B adds)");
        let _ = writeln!(
            out,
            "  {:<6}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9"
        );
        let a = &self.added_us;
        let rows = [("total", &a.total), ("ttfb", &a.ttfb), ("ttft", &a.ttft)];
        for (metric, added) in rows.into_iter().take(if stream { 3 } else { 2 }) {
            let _ = write!(out, "  {metric:<6}");
            for (_, v) in added.rows() {
                let _ = write!(out, "{:>10}", fmt_signed_us(v));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "  throughput B/A {:.3}", self.throughput_ratio);
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
