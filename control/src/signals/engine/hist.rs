//! A scraped Prometheus histogram: cumulative buckets as the engine reports them, with the two
//! things a gate does with one — a window delta and a quantile.

use serde::Serialize;

/// Cumulative buckets `(le, count)` in ascending `le`, normally ending with `+Inf`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Hist {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

// === impl Hist ===

impl Hist {
    /// The `q`-quantile (`0..=1`) the way PromQL's `histogram_quantile` computes it: linear
    /// interpolation inside the bucket holding the rank, the lowest bucket starting at 0, and the
    /// largest finite bound when the rank falls in `+Inf`. `None` where PromQL says NaN: no
    /// observations, no `+Inf` bucket, fewer than two buckets, or `q` outside `0..=1`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) || self.buckets.len() < 2 {
            return None;
        }
        let &(last_le, _) = self.buckets.last()?;
        if last_le != f64::INFINITY {
            return None;
        }
        // Engines scrape buckets non-atomically; a later bucket may lag an earlier one. PromQL
        // forces them monotonic the same way.
        let mut buckets = self.buckets.clone();
        let mut max = 0.0f64;
        for (_, count) in &mut buckets {
            max = max.max(*count);
            *count = max;
        }
        let total = buckets[buckets.len() - 1].1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let b = buckets.partition_point(|&(_, count)| count < rank);
        if b >= buckets.len() - 1 {
            return Some(buckets[buckets.len() - 2].0);
        }
        if b == 0 && buckets[0].0 <= 0.0 {
            return Some(buckets[0].0);
        }
        let (end, mut count) = buckets[b];
        let (mut start, mut rank) = (0.0, rank);
        if b > 0 {
            let (prev_le, prev_count) = buckets[b - 1];
            start = prev_le;
            count -= prev_count;
            rank -= prev_count;
        }
        if count <= 0.0 {
            // Only reachable at q = 0 with an empty first bucket: the quantile is its start.
            return Some(start);
        }
        Some(start + (end - start) * (rank / count))
    }

    /// Mean observation (`sum / count`), if there is any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// What was observed between `earlier` and `self`. A counter reset (the engine restarted:
    /// any bucket or the count went down) or changed bounds make `self` the whole window, as
    /// PromQL's `increase` does after a reset.
    pub fn since(&self, earlier: &Hist) -> Hist {
        let same_bounds = self.buckets.len() == earlier.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .all(|(a, b)| a.0 == b.0);
        let reset = self.count < earlier.count
            || self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .any(|(a, b)| a.1 < b.1);
        if !same_bounds || reset {
            return self.clone();
        }
        Hist {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| (a.0, a.1 - b.1))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }

    /// Both histograms as one. With equal bounds that is bucket-wise addition; otherwise only the
    /// bounds both have are kept — each side's cumulative count at a shared bound is exact, so
    /// the result is coarser but never wrong.
    pub fn merge(&self, other: &Hist) -> Hist {
        let mut buckets = Vec::with_capacity(self.buckets.len().min(other.buckets.len()));
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(b)) = (self.buckets.get(i), other.buckets.get(j)) {
            if a.0 == b.0 {
                buckets.push((a.0, a.1 + b.1));
                i += 1;
                j += 1;
            } else if a.0 < b.0 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Hist {
            buckets,
            sum: self.sum + other.sum,
            count: self.count + other.count,
        }
    }
}
