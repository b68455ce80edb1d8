//! Small, exact statistics for gates: Wilson score intervals for proportions and a one-sided
//! two-proportion test. Enough for "is this rate really above that bound?" with a minimum
//! sample size, without a statistics dependency.

/// One-sided 95 % normal quantile: gates ask "significantly worse?", never "different?".
pub const Z_95: f64 = 1.644_853_626_951_472_2;

/// The z value gates use (one-sided 95 %).
pub fn z_for() -> f64 {
    Z_95
}

/// Wilson score interval `(low, high)` for `k` successes in `n` trials at normal quantile `z`.
/// With `n == 0` it is the whole `[0, 1]`.
pub fn wilson(k: f64, n: f64, z: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let p = (k / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Is `p_c - p_s` significantly above `delta` (one-sided, unpooled normal approximation with
/// a Wilson-style floor on the variance so that zero counts do not make it infinitely sure)?
/// `Some(true)`: significantly above; `Some(false)`: the observed difference is within
/// `delta`; `None`: above `delta` but not significantly.
pub fn exceeds_by(kc: f64, nc: f64, ks: f64, ns: f64, delta: f64, z: f64) -> Option<bool> {
    let (pc, ps) = (kc / nc, ks / ns);
    let diff = pc - ps;
    if diff <= delta {
        return Some(false);
    }
    // Variance floor: as if each side had seen half an event more.
    let var = |p: f64, n: f64| {
        let p = p.max(0.5 / n).min(1.0 - 0.5 / n);
        p * (1.0 - p) / n
    };
    let se = (var(pc, nc) + var(ps, ns)).sqrt();
    ((diff - delta) / se > z).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_known_values() {
        // 10 of 200 at z = 1.96: (0.0275, 0.0898) from the textbook formula.
        let (lo, hi) = wilson(10.0, 200.0, 1.96);
        assert!(
            (lo - 0.0275).abs() < 5e-4 && (hi - 0.0898).abs() < 5e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0.0, 0.0, 1.96), (0.0, 1.0));
        let (lo, hi) = wilson(0.0, 400.0, Z_95);
        assert!(lo == 0.0 && hi < 0.01, "{hi}");
    }

    #[test]
    fn two_proportion_test_needs_evidence() {
        // 5 % vs 0.5 % over 400 each with a 0.5 pp allowance: clearly worse.
        assert_eq!(exceeds_by(20.0, 400.0, 2.0, 400.0, 0.005, Z_95), Some(true));
        // Same rates: within the allowance.
        assert_eq!(exceeds_by(2.0, 400.0, 2.0, 400.0, 0.005, Z_95), Some(false));
        // 2 errors in 20 vs 0 in 20: above the allowance but not significant yet.
        assert_eq!(exceeds_by(2.0, 20.0, 0.0, 20.0, 0.005, Z_95), None);
    }
}
