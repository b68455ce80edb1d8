//! `rollgate_rollout_*` metrics, read from the published statuses on each scrape.

use std::sync::PoisonError;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::decide::Phase;
use super::driver::{RolloutStatus, SharedTallies};
use super::gates::Verdict;
use super::live::Statuses;

/// Every phase name, so each model exports a complete one-hot set.
const PHASES: [&str; 9] = [
    "Idle",
    "Deploy",
    "ValidateHealth",
    "Shadow",
    "Canary",
    "Promote",
    "Full",
    "Rollback",
    "Previous",
];

#[derive(Debug)]
pub(crate) struct RolloutCollector(pub(crate) Statuses, pub(crate) SharedTallies);

impl Collector for RolloutCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Idle models with the split they are served with (the config's, or none).
        let statuses: Vec<RolloutStatus> = self.0.read();
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_phase",
            "1 for the phase each model's rollout is in, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            let current = phase_name(s.phase);
            for p in PHASES {
                let v = u64::from(p == current);
                f.encode_family(&[("model", s.model.as_str()), ("phase", p)])?
                    .encode_gauge(&v)?;
            }
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_step",
            "Canary step index (0-based) while in Canary, else -1",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            let step = match s.phase {
                Phase::Canary(k) => k as i64,
                _ => -1,
            };
            f.encode_family(&[("model", s.model.as_str())])?
                .encode_gauge(&step)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_candidate_weight_ratio",
            "Candidate share of live traffic (0..1)",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            f.encode_family(&[("model", s.model.as_str())])?
                .encode_gauge(&ratio(&s.weight))?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_paused",
            "1 while an operator has paused the rollout or pinned the candidate weight",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            let v = u64::from(s.paused.is_some() || s.pinned.is_some());
            f.encode_family(&[("model", s.model.as_str())])?
                .encode_gauge(&v)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_gate_verdict",
            "Latest verdict per gate: 1 pass, 0 inconclusive, -1 fail",
            None,
            MetricType::Gauge,
        )?;
        for s in &statuses {
            for r in s.gates.iter().flat_map(|e| e.results.iter()) {
                let v: i64 = match r.verdict {
                    Verdict::Pass => 1,
                    Verdict::Inconclusive => 0,
                    Verdict::Fail => -1,
                };
                f.encode_family(&[("model", s.model.as_str()), ("gate", r.gate)])?
                    .encode_gauge(&v)?;
            }
        }
        let tallies = self.1.lock().unwrap_or_else(PoisonError::into_inner);
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_shadow_score",
            "Scores (0..1) of comparable shadow pairs: candidate's answer against stable's",
            None,
            MetricType::Histogram,
        )?;
        for (model, t) in tallies.iter() {
            // Scores never exceed 1.0; the +Inf bucket (f64::MAX to the encoder) is always empty.
            let buckets: Vec<(f64, u64)> = crate::scoring::SCORE_BUCKETS
                .iter()
                .copied()
                .zip(t.scores.iter().copied())
                .chain(std::iter::once((f64::MAX, 0)))
                .collect();
            let count = t.scores.iter().sum();
            f.encode_family(&[("model", model.as_str())])?
                .encode_histogram::<[(&str, &str); 0]>(t.score_sum, count, &buckets, None)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_shadow_pairs_not_comparable",
            "Shadow pairs not scored (capture overflowed or a stream broke)",
            None,
            MetricType::Counter,
        )?;
        for (model, t) in tallies.iter() {
            f.encode_family(&[("model", model.as_str())])?
                .encode_counter::<[(&str, &str); 0], _, u64>(&t.not_comparable, None)?;
        }
        let mut f = enc.encode_descriptor(
            "rollgate_rollout_synthetic_runs",
            "Synthetic suite runs against the candidate, by result",
            None,
            MetricType::Counter,
        )?;
        for (model, t) in tallies.iter() {
            for (result, n) in [
                ("passed", t.synthetic_passed),
                ("failed", t.synthetic_failed),
            ] {
                f.encode_family(&[("model", model.as_str()), ("result", result)])?
                    .encode_counter::<[(&str, &str); 0], _, u64>(&n, None)?;
            }
        }
        Ok(())
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Idle => "Idle",
        Phase::Deploy => "Deploy",
        Phase::ValidateHealth => "ValidateHealth",
        Phase::Shadow => "Shadow",
        Phase::Canary(_) => "Canary",
        Phase::Promote => "Promote",
        Phase::Full => "Full",
        Phase::Rollback => "Rollback",
        Phase::Previous => "Previous",
    }
}

/// `10%` → 0.1 (statuses carry the display form).
fn ratio(pct: &str) -> f64 {
    rollgate_config::parse_ppm(pct).map_or(0.0, |p| p.as_fraction())
}
