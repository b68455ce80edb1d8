//! Weighted split with sticky cohorts.
//!
//! A cohort is a stable hash of a client key in `[0, PPM_MAX)`. A request is on the candidate iff
//! `cohort < weight`, so raising the weight only moves cohorts from stable to candidate, never
//! back. The hash is FNV-1a 64 finished with the splitmix64 mixer: fixed forever, identical on
//! every replica and every platform, and independent of Rust's `DefaultHasher` (which is not
//! stable across releases).

use rollgate_config::{Ppm, PPM_MAX};

/// Which role serves (or observed) a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Stable,
    Candidate,
    Shadow,
}

// === impl Variant ===

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Stable, Variant::Candidate, Variant::Shadow];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Candidate => "candidate",
            Variant::Shadow => "shadow",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Parses the tester override header value.
    pub fn from_override(value: &[u8]) -> Option<Variant> {
        match value {
            b"stable" => Some(Variant::Stable),
            b"candidate" => Some(Variant::Candidate),
            _ => None,
        }
    }
}

/// 64-bit stable hash of a key (FNV-1a, then splitmix64 finalisation for avalanche).
pub fn hash64(key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    mix64(h)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The cohort of a key, uniform in `[0, PPM_MAX)` (multiply-shift, no modulo bias).
pub fn cohort_of(key: &[u8]) -> u32 {
    scale(hash64(key))
}

/// The cohort of a key already hashed with [`hash64`].
pub fn cohort_of_hash(h: u64) -> u32 {
    scale(h)
}

/// A random cohort, for requests without a key.
pub fn random_cohort() -> u32 {
    scale(fastrand::u64(..))
}

fn scale(h: u64) -> u32 {
    // (h * PPM_MAX) >> 64 is < PPM_MAX, so the cast cannot truncate.
    ((u128::from(h) * u128::from(PPM_MAX)) >> 64) as u32
}

/// True when the cohort is on the candidate at this weight.
pub fn is_candidate(cohort: u32, weight: Ppm) -> bool {
    cohort < weight.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed_forever() {
        // Changing these values moves every user between variants on upgrade: never do it.
        assert_eq!(cohort_of(b""), scale(mix64(0xcbf2_9ce4_8422_2325)));
        assert_eq!(cohort_of(b"user-1"), cohort_of(b"user-1"));
        assert_ne!(cohort_of(b"user-1"), cohort_of(b"user-2"));
    }

    #[test]
    fn cohorts_are_in_range_and_uniform() {
        let n = 200_000u32;
        let mut buckets = [0u32; 10];
        for i in 0..n {
            let c = cohort_of(format!("key-{i}").as_bytes());
            assert!(c < PPM_MAX);
            buckets[(c / 100_000) as usize] += 1;
        }
        // Each decile expects n/10 = 20_000 with sd ≈ 134; 6 sd is a safe bound.
        for (i, b) in buckets.iter().enumerate() {
            assert!((19_200..=20_800).contains(b), "decile {i} has {b}");
        }
    }

    #[test]
    fn raising_the_weight_never_moves_a_cohort_back() {
        let weights = [0, 1, 10_000, 100_000, 300_000, 999_999, 1_000_000];
        for i in 0..10_000 {
            let c = cohort_of(format!("k{i}").as_bytes());
            let mut was = false;
            for w in weights {
                let now = is_candidate(c, Ppm::new(w).expect("valid"));
                assert!(!was || now, "cohort {c} moved back at weight {w}");
                was = now;
            }
        }
    }

    #[test]
    fn zero_and_full_weights_are_absolute() {
        for i in 0..1000 {
            let c = cohort_of(format!("k{i}").as_bytes());
            assert!(!is_candidate(c, Ppm::ZERO));
            assert!(is_candidate(c, Ppm::FULL));
        }
    }
}
