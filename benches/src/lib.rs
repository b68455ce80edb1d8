//! Benchmarks live in `benches/benches/` (criterion); see the README.
