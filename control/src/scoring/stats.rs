//! Pair scores accumulated over a gate window, and the one number the correctness gate reads.
//!
//! The gate input is the share of comparable pairs whose score is at least the per-pair
//! threshold, not the mean score: "98% of answers agreed" is what `min: 0.98` should mean, and a
//! mean lets many near-misses hide one answer that is completely wrong (or one 0 drag a window of
//! perfect answers under the bar). The mean is kept beside it for dashboards.

use super::PairScore;

/// Per-pair threshold of "agrees" unless configured: one word in about twelve changed (or a
/// modestly shorter paraphrase) still passes; a different answer of the same length scores about
/// 0.2–0.3 and fails.
pub const DEFAULT_PAIR_THRESHOLD: f64 = 0.8;

/// Upper bounds (inclusive) of the score histogram. Dense near 1 because healthy candidates
/// cluster there and gate thresholds live between 0.8 and 1; coarse below 0.5, where every
/// answer is simply "different". 1.0 is the last bound since no score exceeds it.
pub const SCORE_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0];

/// Scores of one window. Only comparable pairs enter the mean, the share and the histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreStats {
    threshold: f64,
    count: u64,
    comparable: u64,
    passing: u64,
    status_mismatch: u64,
    sum: f64,
    /// Non-cumulative counts per bucket of [`SCORE_BUCKETS`].
    buckets: [u64; SCORE_BUCKETS.len()],
}

/// What the correctness gate compares with its `min`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateInput {
    /// Share of comparable pairs scoring at least the threshold, in `0..=1`.
    pub value: f64,
    /// Comparable pairs behind `value`, for the gate's minimum-sample rule.
    pub samples: u64,
}

// === impl ScoreStats ===

impl ScoreStats {
    /// `threshold` is clamped to `0..=1`; NaN means [`DEFAULT_PAIR_THRESHOLD`].
    pub fn new(threshold: f64) -> Self {
        let threshold = if threshold.is_nan() {
            DEFAULT_PAIR_THRESHOLD
        } else {
            threshold.clamp(0.0, 1.0)
        };
        Self {
            threshold,
            count: 0,
            comparable: 0,
            passing: 0,
            status_mismatch: 0,
            sum: 0.0,
            buckets: [0; SCORE_BUCKETS.len()],
        }
    }

    pub fn record(&mut self, s: &PairScore) {
        self.count += 1;
        if !s.comparable {
            return;
        }
        // A NaN could only come from a bug; counting it as 0 keeps the window's sums finite.
        let score = if s.score.is_nan() {
            0.0
        } else {
            s.score.clamp(0.0, 1.0)
        };
        self.comparable += 1;
        self.sum += score;
        if score >= self.threshold {
            self.passing += 1;
        }
        if !s.status_match {
            self.status_mismatch += 1;
        }
        let bucket = SCORE_BUCKETS
            .iter()
            .position(|b| score <= *b)
            .unwrap_or(SCORE_BUCKETS.len() - 1);
        self.buckets[bucket] += 1;
    }

    /// Adds another window's counts (per-worker windows into one); keeps this threshold.
    pub fn merge(&mut self, other: &ScoreStats) {
        self.count += other.count;
        self.comparable += other.comparable;
        self.passing += other.passing;
        self.status_mismatch += other.status_mismatch;
        self.sum += other.sum;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }

    /// `None` with no comparable pair: no data is not a pass.
    pub fn gate_input(&self) -> Option<GateInput> {
        Some(GateInput {
            value: self.pass_share()?,
            samples: self.comparable,
        })
    }

    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Every pair recorded, comparable or not.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn comparable(&self) -> u64 {
        self.comparable
    }

    /// Comparable pairs whose status classes differed.
    pub fn status_mismatches(&self) -> u64 {
        self.status_mismatch
    }

    pub fn mean(&self) -> Option<f64> {
        (self.comparable > 0).then(|| self.sum / self.comparable as f64)
    }

    pub fn pass_share(&self) -> Option<f64> {
        (self.comparable > 0).then(|| self.passing as f64 / self.comparable as f64)
    }

    /// `(upper bound, pairs at or under it)`, cumulative as Prometheus `le` buckets are.
    pub fn histogram(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        SCORE_BUCKETS
            .iter()
            .zip(self.buckets.iter())
            .scan(0u64, |total, (bound, n)| {
                *total += n;
                Some((*bound, *total))
            })
    }
}

impl Default for ScoreStats {
    fn default() -> Self {
        Self::new(DEFAULT_PAIR_THRESHOLD)
    }
}
