//! `--rate 10,20,40,80`: the same open-loop workload at each rate in turn, as vLLM's
//! `--request-rate` loops and guidellm's `sweep` do, to find the rate where latency breaks. Each
//! rate is a whole run of its own (fresh schedule, warm-up, connections opened before its clock
//! and closed after its drain); the sweep stops after the first rate the target did not keep up
//! at (it fell behind the schedule, or failed more than [`MAX_ERROR_SHARE`] of the requests),
//! since higher rates only measure a longer backlog or more refusals, unless `--sweep-all`.

use std::{fmt::Write as _, io::Write as _, str::FromStr};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    report::{fmt_us, Report, TargetReport},
    run::execute,
    stats::Percentiles,
    LoadArgs, Plan,
};

/// The share of a rate's requests that may fail while the target still counts as keeping up
/// there. A server that sheds load answers fast 503s (queue full) and 429s: its latency and
/// achieved rate look fine while the users it refuses see errors, so a rate where it refuses a
/// material share is past its capacity. 1 % leaves room for a stray failure in a long run, not
/// for shedding. Every error kind counts (a 404 for an unknown model serves nobody either).
pub(crate) const MAX_ERROR_SHARE: f64 = 0.01;

/// Open-loop rates in requests per second: at least one, each above 0 and above the one before
/// it (a sweep runs them in order; a list out of order is a typo).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rates(Vec<f64>);

/// A sweep over more than one rate, as the flags asked.
#[derive(Clone, Debug)]
pub(crate) struct SweepPlan {
    pub rates: Rates,
    /// `--sweep-all`: go on past a rate the target did not keep up at.
    pub all: bool,
}

/// The runs of a sweep so far, and which rate comes next.
#[derive(Debug)]
pub(crate) struct Sweep {
    plan: SweepPlan,
    runs: Vec<Report>,
}

/// One row per rate that ran.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The rates asked for, in order.
    pub rates: Vec<f64>,
    pub sweep_all: bool,
    /// [`MAX_ERROR_SHARE`]: a rate whose `error_share` is above it did not keep up.
    pub max_error_share: f64,
    /// The first rate the target did not keep up at (`kept_up` false).
    pub saturated_at: Option<f64>,
    /// The rates left out: the sweep stopped at `saturated_at` (or a later rate's setup
    /// failed, and the command fails after this report).
    pub not_run: Vec<f64>,
    pub rows: Vec<Row>,
}

/// One rate's figures (latencies in µs; `None` where the run had no samples of them).
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Row {
    /// The rate asked for.
    pub rate: f64,
    /// The rate the target took requests at (the run's `rate`).
    pub achieved_rate: f64,
    pub ok: u64,
    pub errors: u64,
    pub total_p50_us: Option<u64>,
    pub total_p99_us: Option<u64>,
    pub ttft_p50_us: Option<u64>,
    pub ttft_p99_us: Option<u64>,
    pub tpot_p50_us: Option<u64>,
    pub tpot_p99_us: Option<u64>,
    pub output_tokens_per_s: Option<f64>,
    /// With `--slo`.
    pub goodput_per_s: Option<f64>,
    /// The run's `fell_short`: the target fell behind the schedule.
    pub fell_short: bool,
    /// `errors` over the measured requests (`ok + errors`); 0 without requests.
    pub error_share: f64,
    /// Neither fell short nor failed more than `max_error_share` of the requests.
    pub kept_up: bool,
}

/// What `--json` prints for a sweep.
#[derive(Debug, Serialize)]
struct SweepJson<'a> {
    runs: &'a [Report],
    summary: Summary,
}

// === impl Rates ===

impl Rates {
    pub fn first(&self) -> f64 {
        self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }
}

impl FromStr for Rates {
    type Err = String;

    /// `10` or `10,20,40`; every bad entry is reported at once.
    fn from_str(s: &str) -> Result<Self, String> {
        let entries: Vec<&str> = s.split(',').map(str::trim).collect();
        // One rate keeps the words it always had; in a list, say which entry.
        let which = |i: usize| match entries.len() {
            1 => String::new(),
            _ => format!("rate {} ({}) ", i + 1, entries[i]),
        };
        let mut rates = Vec::new();
        let mut errors = Vec::new();
        let mut highest = f64::NEG_INFINITY;
        for (i, text) in entries.iter().enumerate() {
            if text.is_empty() {
                errors.push(format!("rate {} is empty", i + 1));
                continue;
            }
            let Ok(rate) = text.parse::<f64>() else {
                errors.push(format!("{text:?} is not a number"));
                continue;
            };
            if !(rate.is_finite() && rate > 0.0) {
                errors.push(format!("{}must be above 0", which(i)));
                continue;
            }
            if rate <= highest {
                errors.push(format!(
                    "{}is not above {highest}: the rates of a sweep increase",
                    which(i)
                ));
            }
            highest = highest.max(rate);
            rates.push(rate);
        }
        if errors.is_empty() {
            Ok(Self(rates))
        } else {
            Err(errors.join("; "))
        }
    }
}

// === impl Sweep ===

impl Sweep {
    pub fn new(plan: SweepPlan) -> Self {
        Self {
            plan,
            runs: Vec::new(),
        }
    }

    /// The next rate to run: the list in order, until the target did not keep up at one (it is
    /// saturated; higher rates would only measure the backlog or more refusals), unless
    /// `--sweep-all`.
    pub fn next_rate(&self) -> Option<f64> {
        if !self.plan.all && self.runs.iter().any(|r| !kept_up(target(r))) {
            return None;
        }
        self.plan.rates.as_slice().get(self.runs.len()).copied()
    }

    /// Adds the report of the rate `next_rate` gave.
    pub fn record(&mut self, report: Report) {
        self.runs.push(report);
    }

    pub fn runs(&self) -> &[Report] {
        &self.runs
    }

    pub fn summary(&self) -> Summary {
        let rates = self.plan.rates.as_slice();
        let rows: Vec<Row> = rates
            .iter()
            .zip(&self.runs)
            .map(|(&rate, report)| Row::new(rate, target(report)))
            .collect();
        Summary {
            rates: rates.to_vec(),
            sweep_all: self.plan.all,
            max_error_share: MAX_ERROR_SHARE,
            saturated_at: rows.iter().find(|r| !r.kept_up).map(|r| r.rate),
            not_run: rates[rows.len().min(rates.len())..].to_vec(),
            rows,
        }
    }

    /// The summary table: one row per rate, then whether and where the target saturated.
    pub fn table(&self) -> String {
        let summary = self.summary();
        let run = self.runs.first().map(|r| &r.run);
        let stream = run.is_some_and(|r| r.stream);
        let slo = run.is_some_and(|r| r.slo.is_some());
        let tokens = summary.rows.iter().any(|r| r.output_tokens_per_s.is_some());
        let columns = Row::columns(stream, tokens, slo);
        let mut out = String::from("sweep summary\n");
        let heads: Vec<String> = columns.iter().map(|(head, _)| (*head).to_owned()).collect();
        line(&mut out, &heads, &columns);
        for row in &summary.rows {
            line(&mut out, &row.cells(stream, tokens, slo), &columns);
        }
        let _ = writeln!(out, "{}", summary.verdict());
        out
    }

    /// Each run's CSV rows with the rate it was asked for in front.
    pub fn csv(&self) -> String {
        let mut out = String::from("rate,target,url,metric,stat,value_us\n");
        for (rate, report) in self.plan.rates.as_slice().iter().zip(&self.runs) {
            for line in report.csv().lines().skip(1) {
                let _ = writeln!(out, "{rate},{line}");
            }
        }
        out
    }

    /// One JSON object: `runs` (each what a single run prints) and `summary`.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(&SweepJson {
            runs: &self.runs,
            summary: self.summary(),
        })
    }
}

// === impl Summary ===

impl Summary {
    /// Where the target saturated, and what the sweep did about it.
    pub fn verdict(&self) -> String {
        let not_run: Vec<String> = self.not_run.iter().map(|r| format!("{r}/s")).collect();
        let not_run = not_run.join(", ");
        let Some(row) = self.rows.iter().find(|r| !r.kept_up) else {
            if not_run.is_empty() {
                return "the target kept up at every rate".to_owned();
            }
            return format!("the target kept up at every rate that ran (not run: {not_run})");
        };
        let at = row.rate;
        let mut text = format!("the target fell short at {at}/s");
        if let Some(errors) = row.errors_over(self.max_error_share) {
            let behind = if row.fell_short {
                "behind the schedule, "
            } else {
                ""
            };
            let _ = write!(text, " ({behind}{errors})");
        }
        text.push_str(": it is saturated there");
        if !self.sweep_all && !not_run.is_empty() {
            let _ = write!(
                text,
                ", so the sweep stopped (not run: {not_run}; --sweep-all runs every rate)"
            );
        } else if self.rows.last().is_some_and(|r| r.rate > at) {
            text.push_str(" (--sweep-all ran the rates above it; they measure the backlog)");
        }
        if self.sweep_all && !not_run.is_empty() {
            let _ = write!(text, " (not run: {not_run})");
        }
        text
    }
}

// === impl Row ===

impl Row {
    fn new(rate: f64, t: &TargetReport) -> Self {
        let lat = &t.latency_us;
        let p = |p: &Percentiles, q: u64| (p.count > 0).then_some(q);
        Self {
            rate,
            achieved_rate: t.rate,
            ok: t.ok,
            errors: t.errors_total,
            total_p50_us: p(&lat.total, lat.total.p50),
            total_p99_us: p(&lat.total, lat.total.p99),
            ttft_p50_us: p(&lat.ttft, lat.ttft.p50),
            ttft_p99_us: p(&lat.ttft, lat.ttft.p99),
            tpot_p50_us: p(&lat.tpot, lat.tpot.p50),
            tpot_p99_us: p(&lat.tpot, lat.tpot.p99),
            output_tokens_per_s: t.tokens.as_ref().map(|t| t.output_per_s),
            goodput_per_s: t.goodput.as_ref().map(|g| g.per_s),
            fell_short: fell_short(t),
            error_share: error_share(t),
            kept_up: kept_up(t),
        }
    }

    /// `errors 47% of requests, over 1%` when the errors alone make the rate one the target
    /// did not keep up at.
    fn errors_over(&self, max: f64) -> Option<String> {
        (self.error_share > max).then(|| {
            format!(
                "errors {} of requests, over {}",
                percent(self.error_share),
                percent(max)
            )
        })
    }

    /// The table's headings and widths: TTFT and TPOT with `--stream`, output tokens when a run
    /// counted them, goodput with `--slo`.
    fn columns(stream: bool, tokens: bool, slo: bool) -> Vec<(&'static str, usize)> {
        let mut columns = vec![("rate", 7), ("achieved", 9), ("ok", 6), ("errors", 6)];
        columns.extend([("total p50", 9), ("total p99", 9)]);
        if stream {
            columns.extend([("ttft p50", 9), ("ttft p99", 9)]);
            columns.extend([("tpot p50", 9), ("tpot p99", 9)]);
        }
        if tokens {
            columns.push(("out tok/s", 9));
        }
        if slo {
            columns.push(("goodput/s", 9));
        }
        columns.push(("kept up", 7));
        columns
    }

    fn cells(&self, stream: bool, tokens: bool, slo: bool) -> Vec<String> {
        let us = |v: Option<u64>| v.map_or_else(|| "–".to_owned(), fmt_us);
        let per_s = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"));
        let mut cells = vec![
            format!("{}/s", self.rate),
            format!("{:.1}/s", self.achieved_rate),
            self.ok.to_string(),
            self.errors.to_string(),
            us(self.total_p50_us),
            us(self.total_p99_us),
        ];
        if stream {
            cells.extend([self.ttft_p50_us, self.ttft_p99_us].map(us));
            cells.extend([self.tpot_p50_us, self.tpot_p99_us].map(us));
        }
        if tokens {
            cells.push(per_s(self.output_tokens_per_s));
        }
        if slo {
            cells.push(per_s(self.goodput_per_s));
        }
        let why: Vec<String> = [
            self.fell_short.then(|| "behind the schedule".to_owned()),
            (self.error_share > MAX_ERROR_SHARE)
                .then(|| format!("errors {}", percent(self.error_share))),
        ]
        .into_iter()
        .flatten()
        .collect();
        cells.push(if why.is_empty() {
            "yes".to_owned()
        } else {
            format!("no: {}", why.join(", "))
        });
        cells
    }
}

/// A sweep has one target (`--compare` is refused with a rate list).
fn target(report: &Report) -> &TargetReport {
    &report.targets[0]
}

fn fell_short(t: &TargetReport) -> bool {
    t.fell_short == Some(true)
}

fn error_share(t: &TargetReport) -> f64 {
    match t.requests {
        0 => 0.0,
        n => t.errors_total as f64 / n as f64,
    }
}

/// The target kept the schedule and served all but a stray share of the requests.
fn kept_up(t: &TargetReport) -> bool {
    !fell_short(t) && error_share(t) <= MAX_ERROR_SHARE
}

/// `47%`, `1.5%`, `0.2%`: a whole percent once it is that coarse.
fn percent(share: f64) -> String {
    let pct = share * 100.0;
    if pct >= 10.0 {
        format!("{pct:.0}%")
    } else {
        format!("{pct:.1}%").replace(".0%", "%")
    }
}

/// One table line: every column right-aligned to its width but the last (`kept up`, whose
/// reasons vary in length), which ends the line unpadded.
fn line(out: &mut String, cells: &[String], columns: &[(&'static str, usize)]) {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, (_, width))) in cells.iter().zip(columns).enumerate() {
        let _ = if i == last {
            write!(out, "  {cell}")
        } else {
            write!(out, "  {cell:>width$}")
        };
    }
    out.push('\n');
}

/// Runs each rate of the sweep in turn (each a whole run: its own threads, connections opened
/// before its clock, its warm-up), printing each rate's table as it ends and then the summary
/// (or, with `--json`, one object at the end). A setup failure at a later rate still reports the
/// rates before it, then fails the command.
pub(crate) fn run(plan: &Plan, sweep: &SweepPlan, args: &LoadArgs) -> anyhow::Result<()> {
    let count = sweep.rates.len();
    let mut state = Sweep::new(sweep.clone());
    let mut failure = None;
    while let Some(rate) = state.next_rate() {
        let index = state.runs().len() + 1;
        if !args.quiet {
            eprintln!("rate {index} of {count}: {rate} req/s");
        }
        let at = plan.at_rate(rate);
        let outcome = match execute(&at, !args.quiet) {
            Ok(outcome) => outcome,
            Err(e) => {
                failure = Some(e.context(format!("--rate {rate} (rate {index} of {count})")));
                break;
            }
        };
        let report = Report::new(&at, &outcome);
        if args.json {
            for warning in report.warnings() {
                eprintln!("warning: at {rate}/s: {warning}");
            }
        } else {
            print(&format!("{}\n", report.table()))?;
        }
        state.record(report);
    }
    if state.runs().is_empty() {
        // Nothing ran: fail as a single run would.
        return failure.map_or(Ok(()), Err);
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, state.csv()).with_context(|| format!("--csv {}", path.display()))?;
    }
    if args.json {
        eprintln!("sweep: {}", state.summary().verdict());
        print(&format!("{}\n", state.json()?))?;
    } else {
        print(&state.table())?;
    }
    failure.map_or(Ok(()), Err)
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
