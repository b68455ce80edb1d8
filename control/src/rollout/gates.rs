//! Gates: rules over signals with a window and a minimum sample size. A verdict is `Pass` only
//! with enough samples and the bound met; `Fail` only when the evidence is significant (or a
//! level, like GPU memory, is over its bound); otherwise `Inconclusive`, which never promotes.

use std::time::Duration;

use rollgate_config::Gates;
use rollgate_proxy::{HistogramSnapshot, VariantObservation};
use serde::Serialize;

use super::stats::{exceeds_by, wilson, Z_95};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// A latency distribution as cumulative buckets `(upper bound in seconds, count)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dist {
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    /// Sum of the observations (seconds); bounds the tail when buckets are coarse.
    pub sum: f64,
}

/// What one variant did inside the window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantWindow {
    pub requests: u64,
    /// 5xx, no response, and failures after a 200.
    pub failures: u64,
    pub latency: Dist,
    pub ttft: Dist,
}

/// Shadow-pair agreement and synthetic results inside the window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Correctness {
    pub comparable_pairs: u64,
    pub agreeing_pairs: u64,
    pub synthetic_passed: u64,
    pub synthetic_failed: u64,
    /// Comparable pairs needed before the gate can pass (the shadow phase's `min_pairs`); a
    /// significant failure needs only `min_samples`. 0 outside Shadow.
    pub min_pairs: u64,
}

/// Everything gates read, for one model, over one window shared by both variants.
#[derive(Clone, Debug)]
pub struct GateInputs {
    pub stable: VariantWindow,
    /// The candidate's user traffic, or its shadow traffic during the Shadow phase.
    pub candidate: VariantWindow,
    /// Candidate queue time from the engine's metrics; `Err` when it could not be read.
    pub queue_time: Result<Option<Dist>, String>,
    /// Highest GPU memory share across candidate endpoints; `Err` when it could not be read.
    pub gpu_memory: Result<Option<f64>, String>,
    /// Shadow-pair agreement and synthetic results; `None` where the phase has neither (a
    /// canary without a synthetic suite), which leaves the correctness gate out.
    pub correctness: Option<Correctness>,
    /// Candidate endpoints ejected by the data plane in the window.
    pub ejections: u64,
    /// PromQL gate values by query name (`Err` when the query could not be answered).
    pub promql: Vec<(String, Result<f64, String>)>,
    /// The candidate's signals (queue time, GPU memory, PromQL) have not been read yet under
    /// this config: their gates wait (inconclusive, not a metric error).
    pub signals_pending: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub gate: &'static str,
    pub verdict: Verdict,
    /// The measured value (rate, seconds, share) when there is one.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub samples: u64,
    pub reason: String,
    /// Inconclusive because a signal could not be read (counts toward `metric_errors`).
    pub metric_error: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub results: Vec<GateResult>,
    pub metric_error: bool,
}

// === impl GateInputs ===

impl Default for GateInputs {
    fn default() -> Self {
        GateInputs {
            stable: VariantWindow::default(),
            candidate: VariantWindow::default(),
            queue_time: Ok(None),
            gpu_memory: Ok(None),
            correctness: None,
            ejections: 0,
            promql: Vec::new(),
            signals_pending: false,
        }
    }
}

// === impl Dist ===

impl Dist {
    pub fn from_histogram(h: &HistogramSnapshot) -> Dist {
        Dist {
            buckets: h.buckets.iter().map(|&(le, c)| (le, c as f64)).collect(),
            count: h.count as f64,
            sum: h.sum_seconds,
        }
    }

    /// Estimated observations above `t` seconds (linear inside the bucket holding `t`).
    pub fn count_above(&self, t: f64) -> f64 {
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, cum) in &self.buckets {
            if t < le {
                if le.is_infinite() {
                    return self.count - below;
                }
                let inside = (cum - below) * ((t - lower) / (le - lower)).clamp(0.0, 1.0);
                return (self.count - below - inside).max(0.0);
            }
            lower = le;
            below = cum;
        }
        (self.count - below).max(0.0)
    }

    /// Observations certainly above `t`: those in buckets whose lower bound is at least `t`.
    /// Failures are judged on this, so a bound inside a coarse bucket (vLLM's queue-time
    /// histogram starts at 0.3 s) never counts requests that may well be below it.
    pub fn count_surely_above(&self, t: f64) -> f64 {
        let mut lower = 0.0;
        let mut below = 0.0;
        for &(le, cum) in &self.buckets {
            if lower >= t {
                return (self.count - below).max(0.0);
            }
            lower = le;
            below = cum;
        }
        if lower >= t {
            (self.count - below).max(0.0)
        } else {
            0.0
        }
    }

    /// Quantile by linear interpolation, like PromQL's `histogram_quantile`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank && cum > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (cum - below));
            }
            lower = le;
            below = cum;
        }
        Some(lower)
    }
}

// === impl VariantWindow ===

impl VariantWindow {
    /// The window between two cumulative observations of one variant.
    pub fn between(earlier: &VariantObservation, later: &VariantObservation) -> VariantWindow {
        let sum = |o: &VariantObservation| -> (u64, u64) {
            let total: u64 = o.status.iter().sum();
            let failures = o.status[4] + o.status[5] + o.stream_failures.iter().sum::<u64>();
            (total, failures)
        };
        let (t0, f0) = sum(earlier);
        let (t1, f1) = sum(later);
        VariantWindow {
            requests: t1.saturating_sub(t0),
            failures: f1.saturating_sub(f0),
            latency: Dist::from_histogram(&later.latency.since(&earlier.latency)),
            ttft: Dist::from_histogram(&later.ttft.since(&earlier.ttft)),
        }
    }
}

/// Evaluates every configured gate; the overall verdict is Fail if any fails, else
/// Inconclusive if any is, else Pass. An ejected candidate endpoint fails the evaluation.
pub fn evaluate(gates: &Gates, min_samples: u64, inputs: &GateInputs) -> Evaluation {
    let mut results = Vec::new();
    if inputs.ejections > 0 {
        results.push(result(
            "ejection",
            Verdict::Fail,
            Some(inputs.ejections as f64),
            Some(0.0),
            0,
            format!(
                "{} candidate endpoint ejection(s) by the data plane",
                inputs.ejections
            ),
        ));
    }
    if let Some(g) = &gates.error_rate {
        results.push(error_rate(g, min_samples, inputs));
    }
    let latency = [
        (
            "latency_p99",
            &gates.latency_p99,
            0.99,
            &inputs.stable.latency,
            &inputs.candidate.latency,
        ),
        (
            "ttft_p95",
            &gates.ttft_p95,
            0.95,
            &inputs.stable.ttft,
            &inputs.candidate.ttft,
        ),
    ];
    for (name, gate, q, stable, candidate) in latency {
        if let Some(g) = gate {
            results.push(quantile_gate(
                name,
                g.max,
                g.max_ratio_vs_stable,
                q,
                min_samples,
                stable,
                candidate,
            ));
        }
    }
    if let Some(g) = &gates.queue_time_p95 {
        results.push(match &inputs.queue_time {
            _ if inputs.signals_pending => not_read_yet("queue_time_p95"),
            Ok(Some(d)) => quantile_gate(
                "queue_time_p95",
                g.max,
                None,
                0.95,
                min_samples,
                &Dist::default(),
                d,
            ),
            Ok(None) => metric_error(
                "queue_time_p95",
                "the candidate's engine reports no queue time".into(),
            ),
            Err(e) => metric_error("queue_time_p95", e.clone()),
        });
    }
    if let Some(g) = &gates.gpu_memory_used {
        let max = g.max.as_fraction();
        results.push(match &inputs.gpu_memory {
            _ if inputs.signals_pending => not_read_yet("gpu_memory_used"),
            Ok(Some(used)) if *used > max => result(
                "gpu_memory_used",
                Verdict::Fail,
                Some(*used),
                Some(max),
                1,
                format!(
                    "GPU memory {:.1} % is above {:.1} %",
                    used * 100.0,
                    max * 100.0
                ),
            ),
            Ok(Some(used)) => result(
                "gpu_memory_used",
                Verdict::Pass,
                Some(*used),
                Some(max),
                1,
                String::new(),
            ),
            Ok(None) => metric_error(
                "gpu_memory_used",
                "no GPU memory reading for the candidate".into(),
            ),
            Err(e) => metric_error("gpu_memory_used", e.clone()),
        });
    }
    if let (Some(g), Some(c)) = (&gates.correctness, &inputs.correctness) {
        results.push(correctness(g.min, min_samples, c));
    }
    if let Some(p) = &gates.promql {
        for q in &p.queries {
            let got = inputs
                .promql
                .iter()
                .find(|(n, _)| *n == q.name)
                .map(|(_, v)| v);
            results.push(if inputs.signals_pending {
                not_read_yet("promql")
            } else {
                promql_gate(q, got)
            });
        }
    }
    let verdict = if results.iter().any(|r| r.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if results.iter().any(|r| r.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    let metric_error = results.iter().any(|r| r.metric_error);
    Evaluation {
        verdict,
        results,
        metric_error,
    }
}

fn result(
    gate: &'static str,
    verdict: Verdict,
    value: Option<f64>,
    threshold: Option<f64>,
    samples: u64,
    reason: String,
) -> GateResult {
    GateResult {
        gate,
        verdict,
        value,
        threshold,
        samples,
        reason,
        metric_error: false,
    }
}

/// A gate on a signal whose first reading is still running: wait, without counting an error.
fn not_read_yet(gate: &'static str) -> GateResult {
    result(
        gate,
        Verdict::Inconclusive,
        None,
        None,
        0,
        "waiting for the first reading".into(),
    )
}

fn metric_error(gate: &'static str, reason: String) -> GateResult {
    GateResult {
        metric_error: true,
        ..result(gate, Verdict::Inconclusive, None, None, 0, reason)
    }
}

fn too_few(gate: &'static str, n: u64, min: u64) -> GateResult {
    result(
        gate,
        Verdict::Inconclusive,
        None,
        None,
        n,
        format!("{n} samples, {min} needed"),
    )
}

fn error_rate(g: &rollgate_config::ErrorRateGate, min: u64, i: &GateInputs) -> GateResult {
    let (c, s) = (&i.candidate, &i.stable);
    if c.requests < min {
        return too_few("error_rate", c.requests, min);
    }
    let (k, n) = (c.failures as f64, c.requests as f64);
    let rate = k / n;
    let mut verdict = Verdict::Pass;
    let mut reasons = Vec::new();
    if let Some(max) = g.max.map(|m| m.as_fraction()) {
        let (lo, _) = wilson(k, n, Z_95);
        if lo > max {
            verdict = Verdict::Fail;
            reasons.push(format!(
                "{:.2} % (95 % lower bound {:.2} %) is above {:.2} %",
                rate * 100.0,
                lo * 100.0,
                max * 100.0
            ));
        } else if rate > max {
            verdict = Verdict::Inconclusive;
            reasons.push(format!(
                "{:.2} % is above {:.2} % but not yet significantly",
                rate * 100.0,
                max * 100.0
            ));
        }
    }
    if let Some(delta) = g.max_vs_stable.map(|d| d.as_fraction()) {
        if s.requests < min {
            return too_few("error_rate", s.requests, min);
        }
        match exceeds_by(k, n, s.failures as f64, s.requests as f64, delta, Z_95) {
            Some(true) => {
                verdict = Verdict::Fail;
                reasons.push(format!(
                    "{:.2} % vs stable {:.2} %: more than +{:.2} pp, significantly",
                    rate * 100.0,
                    s.failures as f64 / s.requests as f64 * 100.0,
                    delta * 100.0
                ));
            }
            None if verdict == Verdict::Pass => {
                verdict = Verdict::Inconclusive;
                reasons
                    .push("above stable by more than the allowance, not yet significantly".into());
            }
            _ => {}
        }
    }
    result(
        "error_rate",
        verdict,
        Some(rate),
        g.max.map(|m| m.as_fraction()),
        c.requests,
        reasons.join("; "),
    )
}

/// A latency quantile gate: the candidate's q-quantile must stay under `max` and under
/// `ratio × stable's q-quantile`. Fails when significantly more than `1 - q` of the candidate's
/// samples lie above the threshold (binomial, Wilson lower bound), passes when the observed
/// share above it is at most `1 - q`.
fn quantile_gate(
    gate: &'static str,
    max: Option<Duration>,
    ratio: Option<f64>,
    q: f64,
    min: u64,
    stable: &Dist,
    candidate: &Dist,
) -> GateResult {
    let n = candidate.count;
    if (n as u64) < min {
        return too_few(gate, n as u64, min);
    }
    let mut thresholds = Vec::new();
    if let Some(max) = max {
        thresholds.push(max.as_secs_f64());
    }
    if let Some(r) = ratio {
        if (stable.count as u64) < min {
            return too_few(gate, stable.count as u64, min);
        }
        if let Some(sq) = stable.quantile(q) {
            thresholds.push(sq * r);
        }
    }
    let value = candidate.quantile(q);
    let Some(t) = thresholds.into_iter().reduce(f64::min) else {
        return result(gate, Verdict::Pass, value, None, n as u64, String::new());
    };
    let above = candidate.count_above(t);
    let surely = candidate.count_surely_above(t);
    let tail = 1.0 - q;
    let (lo, _) = wilson(surely, n, Z_95);
    // Markov: P(X > t) <= mean / t, exact whatever the buckets, so a candidate that barely
    // waits passes a bound that lies inside a coarse first bucket.
    let markov = if t > 0.0 {
        candidate.sum / n / t
    } else {
        f64::INFINITY
    };
    let (verdict, reason) = if lo > tail {
        (
            Verdict::Fail,
            format!(
                "{:.0} of {n:.0} samples above {:.3} s (allowed {:.1} %)",
                surely,
                t,
                tail * 100.0
            ),
        )
    } else if above / n > tail && markov > tail {
        (
            Verdict::Inconclusive,
            format!(
                "{:.0} of {n:.0} above {:.3} s, not yet significantly",
                above, t
            ),
        )
    } else {
        (Verdict::Pass, String::new())
    };
    result(gate, verdict, value, Some(t), n as u64, reason)
}

/// A PromQL value against its bounds; no answer is a metric error. Values are aggregates
/// Prometheus already computed, so there is no sample count to test.
fn promql_gate(q: &rollgate_config::PromqlQuery, got: Option<&Result<f64, String>>) -> GateResult {
    let v = match got {
        Some(Ok(v)) => *v,
        Some(Err(e)) => return metric_error("promql", format!("{}: {e}", q.name)),
        None => return metric_error("promql", format!("{}: not queried", q.name)),
    };
    let threshold = q.max.or(q.min);
    if let Some(max) = q.max.filter(|m| v > *m) {
        return result(
            "promql",
            Verdict::Fail,
            Some(v),
            Some(max),
            1,
            format!("{}: {v} is above {max}", q.name),
        );
    }
    if let Some(min) = q.min.filter(|m| v < *m) {
        return result(
            "promql",
            Verdict::Fail,
            Some(v),
            Some(min),
            1,
            format!("{}: {v} is below {min}", q.name),
        );
    }
    result(
        "promql",
        Verdict::Pass,
        Some(v),
        threshold,
        1,
        q.name.clone(),
    )
}

fn correctness(min: f64, min_samples: u64, c: &Correctness) -> GateResult {
    if c.synthetic_failed > 0 {
        return result(
            "correctness",
            Verdict::Fail,
            Some(0.0),
            Some(min),
            c.synthetic_passed + c.synthetic_failed,
            format!("{} synthetic check(s) failed", c.synthetic_failed),
        );
    }
    let n = c.comparable_pairs;
    if n == 0 && c.synthetic_passed > 0 && c.min_pairs == 0 {
        let why = "synthetic checks passed; no shadow pairs in this phase".to_owned();
        return result(
            "correctness",
            Verdict::Pass,
            Some(1.0),
            Some(min),
            c.synthetic_passed,
            why,
        );
    }
    if n < min_samples {
        return too_few("correctness", n, min_samples);
    }
    let share = c.agreeing_pairs as f64 / n as f64;
    let (_, hi) = wilson(c.agreeing_pairs as f64, n as f64, Z_95);
    let (verdict, reason) = if hi < min {
        (
            Verdict::Fail,
            format!(
                "{:.1} % of {n} shadow pairs agree (95 % upper bound {:.1} %), {:.1} % needed",
                share * 100.0,
                hi * 100.0,
                min * 100.0
            ),
        )
    } else if share < min {
        (
            Verdict::Inconclusive,
            format!(
                "{:.1} % agree, below {:.1} % but not yet significantly",
                share * 100.0,
                min * 100.0
            ),
        )
    } else if n < c.min_pairs {
        let why = format!("{n} shadow pairs, {} needed (min_pairs)", c.min_pairs);
        (Verdict::Inconclusive, why)
    } else {
        (Verdict::Pass, String::new())
    };
    result("correctness", verdict, Some(share), Some(min), n, reason)
}

#[cfg(test)]
mod tests;
