//! A fast, fixed hasher for the data plane's per-request map lookups (models by name, idle
//! upstream connections by endpoint id). The keys of these maps come from the config, never
//! from requests, so there is nothing for a flooding attack to fill; a request only looks a key
//! up. std's SipHash costs about 150 instructions per lookup of a short name, this a few dozen.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Multiply-rotate over 8-byte words (the scheme of rustc's `FxHasher`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_differ_anywhere_hash_apart_and_lookups_work() {
        let mut m: FastMap<String, usize> = FastMap::default();
        let names = [
            "m",
            "n",
            "llama-3.1-8b",
            "llama-3.1-8c",
            "a-model-name-longer-than-16",
        ];
        for (i, n) in names.iter().enumerate() {
            m.insert((*n).to_owned(), i);
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(*n), Some(&i), "{n}");
        }
        assert_eq!(m.get("llama-3.1-8d"), None);
        let hash = |s: &str| {
            let mut h = FastHasher::default();
            h.write(s.as_bytes());
            h.finish()
        };
        assert_ne!(hash("llama-3.1-8b"), hash("llama-3.1-8c"));
    }
}
