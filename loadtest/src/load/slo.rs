//! `--slo ttft=200ms,tpot=50ms,total=2s`: latency objectives a request must all meet to count
//! towards goodput (vLLM's `--goodput`), parsed once into bounds.

use std::{fmt, str::FromStr, time::Duration};

use crate::sim::{format_duration, parse_duration};

/// The bounds a good request stays within; a metric without one is not judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slo {
    pub ttfb: Option<Duration>,
    pub ttft: Option<Duration>,
    pub tpot: Option<Duration>,
    pub total: Option<Duration>,
}

/// What one successful request measured, as the objectives judge it.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub ttfb: Option<Duration>,
    pub ttft: Option<Duration>,
    /// `None` for fewer than two output tokens.
    pub tpot: Option<Duration>,
    pub total: Duration,
}

/// The metrics `--slo` names, in report order.
const METRICS: [&str; 4] = ["ttfb", "ttft", "tpot", "total"];

// === impl Slo ===

impl Slo {
    /// `(metric, bound)` for every metric, in report order.
    pub fn bounds(&self) -> [(&'static str, Option<Duration>); 4] {
        [
            ("ttfb", self.ttfb),
            ("ttft", self.ttft),
            ("tpot", self.tpot),
            ("total", self.total),
        ]
    }

    /// Every named bound holds. A request with no token to time misses a `ttft` bound (its
    /// client never saw one); one with fewer than two output tokens has no TPOT and meets a
    /// `tpot` bound, as vLLM's goodput counts it.
    pub fn met(&self, m: &Measured) -> bool {
        let within = |bound: Option<Duration>, value: Option<Duration>| match bound {
            None => true,
            Some(bound) => value.is_some_and(|v| v <= bound),
        };
        within(self.ttfb, m.ttfb)
            && within(self.ttft, m.ttft)
            && self
                .tpot
                .is_none_or(|bound| m.tpot.is_none_or(|v| v <= bound))
            && self.total.is_none_or(|bound| m.total <= bound)
    }
}

impl FromStr for Slo {
    type Err = String;

    /// `METRIC=DURATION` pairs separated by commas; every bad pair is reported at once.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Self::default();
        let mut errors = Vec::new();
        for pair in s.split(',').map(str::trim) {
            let Some((metric, value)) = pair.split_once('=') else {
                errors.push(format!("{pair:?}: use METRIC=DURATION, as ttft=200ms"));
                continue;
            };
            let bound = match parse_duration(value) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(format!("{}: {e}", metric.trim()));
                    continue;
                }
            };
            let slot = match metric.trim() {
                "ttfb" => &mut slo.ttfb,
                "ttft" => &mut slo.ttft,
                "tpot" => &mut slo.tpot,
                "total" => &mut slo.total,
                other => {
                    errors.push(format!(
                        "unknown metric {other:?} (use {})",
                        METRICS.join(", ")
                    ));
                    continue;
                }
            };
            if slot.replace(bound).is_some() {
                errors.push(format!("{} is named twice", metric.trim()));
            }
        }
        if errors.is_empty() {
            Ok(slo)
        } else {
            Err(errors.join("; "))
        }
    }
}

impl fmt::Display for Slo {
    /// `ttft ≤ 200ms, tpot ≤ 50ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named: Vec<String> = self
            .bounds()
            .iter()
            .filter_map(|(metric, b)| Some(format!("{metric} ≤ {}", format_duration((*b)?))))
            .collect();
        f.write_str(&named.join(", "))
    }
}
