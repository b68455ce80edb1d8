//! A fixed-bucket histogram written with relaxed atomics (no lock, no allocation per
//! observation) and read as a consistent-enough snapshot for metrics and gates.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds in seconds. Inference latencies span a 1 ms cache hit to multi-minute
/// generations. Between 50 ms and 2 min the bounds are the round values gates are written with
/// (200 ms, 500 ms, 2 s, 30 s …): a gate's bound on a bucket bound counts exactly the samples
/// above it. With session 19's 18 bounds a bound inside a bucket could not pass: a TTFT of 150 ms
/// under `ttft_p95: { max: 200ms }` interpolated a third of the (100 ms, 250 ms] bucket above
/// 200 ms, and Markov's bound (mean / 200 ms) proved nothing, so the gate stayed inconclusive
/// and the rollout held. 34 buckets × 3 histograms × 3 variants per model; the old bounds are
/// all still here, so dashboards built on them keep working.
pub const LATENCY_BUCKETS: [f64; 34] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    300.0, 600.0,
];

const NB: usize = LATENCY_BUCKETS.len();

#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    /// Non-cumulative counts; the last slot is +Inf.
    buckets: [AtomicU64; NB + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A copy of a histogram's state; buckets are cumulative like Prometheus's `le` buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`; the last bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

// === impl AtomicHistogram ===

// By hand: `Default` for arrays stops at 32 elements.
impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        self.buckets[idx].fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(NB + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            let le = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_micros.load(Relaxed) as f64 / 1e6,
            // The count is the +Inf bucket, so the snapshot is self-consistent even while
            // writers race with this read.
            count: cumulative,
        }
    }
}

// === impl HistogramSnapshot ===

impl HistogramSnapshot {
    /// Estimated quantile (0..=1) by linear interpolation inside the bucket, like PromQL's
    /// `histogram_quantile`. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut lower = 0.0;
        let mut below = 0u64;
        for &(le, cum) in &self.buckets {
            if cum as f64 >= rank && cum > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - below as f64) / (cum - below) as f64;
                return Some(lower + (le - lower) * within);
            }
            lower = le;
            below = cum;
        }
        Some(lower)
    }

    /// The difference `self - earlier` (observations made between the two snapshots).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &(le, c))| {
                let before = earlier.buckets.get(i).map_or(0, |b| b.1);
                (le, c.saturating_sub(before))
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
            count: self.count.saturating_sub(earlier.count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(500)); // ≤ 1 ms
        h.observe(Duration::from_millis(1)); // == 1 ms boundary is inclusive (le)
        h.observe(Duration::from_millis(30)); // ≤ 50 ms
        h.observe(Duration::from_secs(1000)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], (0.001, 2));
        assert_eq!(s.buckets[5], (0.05, 3));
        assert_eq!(s.buckets[4], (0.025, 2), "30 ms is above 25 ms");
        assert_eq!(s.buckets[NB], (f64::INFINITY, 4));
        assert!((s.sum_seconds - 1000.0315).abs() < 1e-6);
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        let h = AtomicHistogram::default();
        for _ in 0..100 {
            h.observe(Duration::from_millis(180)); // bucket (0.15, 0.2]
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).expect("has data");
        assert!((p50 - 0.175).abs() < 1e-9, "p50 {p50}");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn since_subtracts_windows() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_millis(2));
        let a = h.snapshot();
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(3));
        let d = h.snapshot().since(&a);
        assert_eq!(d.count, 2);
        // The window's maximum is the top of the (2.5 s, 3 s] bucket.
        assert!((d.quantile(1.0).expect("data") - 3.0).abs() < 1e-9);
    }
}
