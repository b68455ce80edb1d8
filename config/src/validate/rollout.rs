//! A model's rollout plan: synthetic checks, shadow phase, canary steps, gates and policies.

use std::collections::HashMap;
use std::time::Duration;

use super::Collect;
use crate::raw::{
    Delta, Parsed, RawErrorRateGate, RawGates, RawLatencyGate, RawMaxRatio, RawMetricErrors,
    RawMinShare, RawPromql, RawPromqlQuery, RawRollout, RawShadowPhase, RawStep, RawSynthetic,
};
use crate::{
    Approval, CorrectnessGate, ErrorRateGate, Errors, Gates, GpuMemoryGate, LatencyGate,
    MetricErrors, OnMetricErrors, Ppm, PromqlGates, PromqlQuery, Rollout, ShadowPhase, Step,
    Synthetic,
};

const DEFAULT_MIN_SAMPLES: u64 = 200;
const DEFAULT_METRIC_ERROR_LIMIT: u32 = 4;
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
const DEFAULT_VALIDATE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_SYNTHETIC_EVERY: Duration = Duration::from_secs(30);
const DEFAULT_SHADOW_FOR: Duration = Duration::from_secs(120);
const DEFAULT_PROMQL_TIMEOUT: Duration = Duration::from_secs(2);

// === impl Rollout ===

impl TryFrom<RawRollout> for Rollout {
    type Error = Errors;

    fn try_from(raw: RawRollout) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let synthetic = c
            .take("synthetic", raw.synthetic)
            .and_then(|r| c.convert("synthetic", r));
        let shadow = c
            .take("shadow", raw.shadow)
            .and_then(|r| c.convert("shadow", r));
        let steps = c
            .take("steps", raw.steps)
            .map(|s| steps(&mut c, s))
            .unwrap_or_default();
        let gates: Option<Gates> = c.section("gates", raw.gates);
        let min_samples = c.positive("min_samples", raw.min_samples, DEFAULT_MIN_SAMPLES as usize);
        let metric_errors = c.section("metric_errors", raw.metric_errors);
        let approval = match c.take("approval", raw.approval).as_deref() {
            None | Some("auto") => Approval::Auto,
            Some("manual") => Approval::Manual,
            Some(other) => {
                c.error("approval", format!("`{other}` is not auto or manual"));
                Approval::Auto
            }
        };
        let cooldown = c.take("cooldown", raw.cooldown).unwrap_or(DEFAULT_COOLDOWN);
        let validate_timeout = c.positive(
            "validate_timeout",
            raw.validate_timeout,
            DEFAULT_VALIDATE_TIMEOUT,
        );
        let rollout = gates
            .zip(metric_errors)
            .map(|(gates, metric_errors)| Rollout {
                synthetic,
                shadow,
                steps,
                gates,
                min_samples: min_samples as u64,
                metric_errors,
                approval,
                cooldown,
                validate_timeout,
            });
        c.finish(rollout)
    }
}

/// Strictly increasing weights in (0, 100%]; each step held for a non-zero time.
fn steps(c: &mut Collect, items: Vec<Parsed<RawStep>>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("steps[{i}]");
        let Some(step) = c
            .item(&key, item)
            .and_then(|raw| c.convert::<_, Step>(&key, raw))
        else {
            continue;
        };
        if let Some(prev) = out.last().filter(|p| p.weight >= step.weight) {
            c.error(
                &format!("{key}.weight"),
                format!(
                    "{} is not above the previous step's {}; steps only go up",
                    step.weight, prev.weight
                ),
            );
        }
        out.push(step);
    }
    out
}

impl TryFrom<RawStep> for Step {
    type Error = Errors;

    fn try_from(raw: RawStep) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let weight = c.required("weight", raw.weight);
        if weight.is_some_and(Ppm::is_zero) {
            c.error("weight", "a canary step needs a weight above 0");
        }
        let duration = c.required("for", raw.duration);
        if duration.is_some_and(|d| d.is_zero()) {
            c.error("for", "must be greater than 0");
        }
        c.finish(
            weight
                .zip(duration)
                .map(|(weight, duration)| Step { weight, duration }),
        )
    }
}

impl TryFrom<RawSynthetic> for Synthetic {
    type Error = Errors;

    fn try_from(raw: RawSynthetic) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let suite = c.required("suite", raw.suite);
        let every = c.positive("every", raw.every, DEFAULT_SYNTHETIC_EVERY);
        c.finish(suite.map(|suite| Synthetic { suite, every }))
    }
}

impl TryFrom<RawShadowPhase> for ShadowPhase {
    type Error = Errors;

    fn try_from(raw: RawShadowPhase) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let sample = c.required("sample", raw.sample);
        if sample.is_some_and(Ppm::is_zero) {
            c.error("sample", "a shadow phase needs a sample above 0");
        }
        let duration = c.positive("for", raw.duration, DEFAULT_SHADOW_FOR);
        let min_pairs = c.positive("min_pairs", raw.min_pairs, DEFAULT_MIN_SAMPLES as usize);
        c.finish(sample.map(|sample| ShadowPhase {
            sample,
            duration,
            min_pairs: min_pairs as u64,
        }))
    }
}

// === impl Gates ===

impl TryFrom<RawGates> for Gates {
    type Error = Errors;

    fn try_from(raw: RawGates) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let gates = Gates {
            error_rate: c
                .take("error_rate", raw.error_rate)
                .and_then(|r| c.convert("error_rate", r)),
            latency_p99: c
                .take("latency_p99", raw.latency_p99)
                .and_then(|r| c.convert("latency_p99", r)),
            ttft_p95: c
                .take("ttft_p95", raw.ttft_p95)
                .and_then(|r| c.convert("ttft_p95", r)),
            queue_time_p95: c
                .take("queue_time_p95", raw.queue_time_p95)
                .and_then(|r| c.convert("queue_time_p95", r)),
            gpu_memory_used: c
                .take("gpu_memory_used", raw.gpu_memory_used)
                .and_then(|r| c.convert("gpu_memory_used", r)),
            correctness: c
                .take("correctness", raw.correctness)
                .and_then(|r| c.convert("correctness", r)),
            promql: c
                .take("promql", raw.promql)
                .and_then(|r| c.convert("promql", r)),
        };
        c.finish(Some(gates))
    }
}

impl TryFrom<RawErrorRateGate> for ErrorRateGate {
    type Error = Errors;

    fn try_from(raw: RawErrorRateGate) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let max = c.take("max", raw.max);
        let max_vs_stable = c.take("max_vs_stable", raw.max_vs_stable).map(|Delta(d)| d);
        if max.is_none() && max_vs_stable.is_none() && c.is_clean() {
            c.error("", "set max, max_vs_stable or both");
        }
        c.finish(Some(ErrorRateGate { max, max_vs_stable }))
    }
}

impl TryFrom<RawLatencyGate> for LatencyGate {
    type Error = Errors;

    fn try_from(raw: RawLatencyGate) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let max = c.take("max", raw.max);
        if max.is_some_and(|d| d.is_zero()) {
            c.error("max", "must be greater than 0");
        }
        let ratio = c.take("max_ratio_vs_stable", raw.max_ratio_vs_stable);
        if ratio.is_some_and(|r| r < 1.0) {
            c.error(
                "max_ratio_vs_stable",
                "must be at least 1 (1.2 allows 20 % slower than stable)",
            );
        }
        if max.is_none() && ratio.is_none() && c.is_clean() {
            c.error("", "set max, max_ratio_vs_stable or both");
        }
        c.finish(Some(LatencyGate {
            max,
            max_ratio_vs_stable: ratio,
        }))
    }
}

impl TryFrom<RawMaxRatio> for GpuMemoryGate {
    type Error = Errors;

    fn try_from(raw: RawMaxRatio) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let max = c.required("max", raw.max);
        c.finish(max.map(|max| GpuMemoryGate { max }))
    }
}

impl TryFrom<RawMinShare> for CorrectnessGate {
    type Error = Errors;

    fn try_from(raw: RawMinShare) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let min = c.required("min", raw.min);
        c.finish(min.map(|min| CorrectnessGate {
            min: min.as_fraction(),
        }))
    }
}

// === impl PromqlGates ===

impl TryFrom<RawPromql> for PromqlGates {
    type Error = Errors;

    fn try_from(raw: RawPromql) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let url = c
            .required("url", raw.url)
            .map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &url {
            if !u.starts_with("http://") {
                c.error("url", format!("`{u}` is not an http:// URL"));
            }
        }
        let timeout = c.positive("timeout", raw.timeout, DEFAULT_PROMQL_TIMEOUT);
        let mut queries = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let items = c.required("queries", raw.queries);
        let has_queries = items.as_ref().is_none_or(|q| !q.is_empty());
        for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
            let key = format!("queries[{i}]");
            // Read before converting, so a mistake elsewhere in the query does not hide it.
            let name = item
                .value
                .as_ref()
                .and_then(|q| q.name.as_ref()?.value.clone());
            let query = c
                .item(&key, item)
                .and_then(|r| c.convert::<_, PromqlQuery>(&key, r));
            if let Some(name) = name.filter(|n| !n.trim().is_empty()) {
                match seen.get(&name) {
                    Some(first) => c.error(
                        &format!("{key}.name"),
                        format!("duplicate query name `{name}` (also queries[{first}])"),
                    ),
                    None => {
                        seen.insert(name, i);
                    }
                }
            }
            queries.extend(query);
        }
        if !has_queries {
            c.error("queries", "at least one query is required");
        }
        c.finish(url.map(|url| PromqlGates {
            url,
            timeout,
            queries,
        }))
    }
}

impl TryFrom<RawPromqlQuery> for PromqlQuery {
    type Error = Errors;

    fn try_from(raw: RawPromqlQuery) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let name = c.required("name", raw.name);
        let query = c.required("query", raw.query);
        for (key, text) in [("name", &name), ("query", &query)] {
            if text.as_ref().is_some_and(|t| t.trim().is_empty()) {
                c.error(key, "must not be empty");
            }
        }
        let max = c.take("max", raw.max);
        let min = c.take("min", raw.min);
        if max.is_none() && min.is_none() && c.is_clean() {
            c.error("", "set max, min or both");
        }
        if let (Some(min), Some(max)) = (min, max) {
            if min > max {
                c.error(
                    "min",
                    format!("{min} is above max {max}; the query could never pass"),
                );
            }
        }
        c.finish(name.zip(query).map(|(name, query)| PromqlQuery {
            name,
            query,
            max,
            min,
        }))
    }
}

// === impl MetricErrors ===

impl Default for MetricErrors {
    fn default() -> Self {
        MetricErrors {
            limit: DEFAULT_METRIC_ERROR_LIMIT,
            then: OnMetricErrors::Hold,
        }
    }
}

impl TryFrom<RawMetricErrors> for MetricErrors {
    type Error = Errors;

    fn try_from(raw: RawMetricErrors) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let limit = c.positive("limit", raw.limit, DEFAULT_METRIC_ERROR_LIMIT);
        let then = match c.take("then", raw.then).as_deref() {
            None | Some("hold") => OnMetricErrors::Hold,
            Some("abort") => OnMetricErrors::Abort,
            Some(other) => {
                c.error("then", format!("`{other}` is not hold or abort"));
                OnMetricErrors::Hold
            }
        };
        c.finish(Some(MetricErrors { limit, then }))
    }
}

#[cfg(test)]
mod tests;
