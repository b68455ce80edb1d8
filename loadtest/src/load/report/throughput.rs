//! The report's throughput figures beyond requests: output (and prompt) tokens per second, and
//! goodput, the rate of successful requests that met every `--slo` bound.

use std::fmt::Write as _;

use serde::Serialize;

use super::super::{stats::Tokens, Slo};

/// Tokens of one target's successful requests over its measured time.
#[derive(Debug, Serialize)]
pub(crate) struct TokenReport {
    /// Successful requests whose output tokens are known (every stream; a whole answer with
    /// `usage`).
    pub requests: u64,
    /// Their output tokens over every choice.
    pub output: u64,
    /// `output` per request.
    pub mean_output: f64,
    /// `output` per measured second.
    pub output_per_s: f64,
    /// Their prompt tokens, when `usage` gave them for every one; else `None`.
    pub prompt: Option<u64>,
    /// `prompt + output` per measured second, when `prompt` is known.
    pub total_per_s: Option<f64>,
}

/// Successful requests that met every `--slo` bound.
#[derive(Debug, Serialize)]
pub(crate) struct Goodput {
    pub met: u64,
    /// `met` over the successful requests (0 when none succeeded).
    pub share: f64,
    /// `met` per measured second.
    pub per_s: f64,
}

// === impl TokenReport ===

impl TokenReport {
    /// `None` when no successful request had a token count.
    pub fn new(t: &Tokens, secs: f64) -> Option<Self> {
        if t.counted == 0 {
            return None;
        }
        let prompt = (t.prompted == t.counted).then_some(t.prompt);
        Some(Self {
            requests: t.counted,
            output: t.output,
            mean_output: t.output as f64 / t.counted as f64,
            output_per_s: per_second(t.output, secs),
            prompt,
            total_per_s: prompt.map(|p| per_second(p + t.output, secs)),
        })
    }

    /// `  tokens/s 1596.8 output, 3193.6 total  (16.0 output tokens per request)`.
    pub fn table(&self, out: &mut String, ok: u64) {
        let _ = write!(out, "  tokens/s {:.1} output", self.output_per_s);
        if let Some(total) = self.total_per_s {
            let _ = write!(out, ", {total:.1} total");
        }
        let _ = write!(out, "  ({:.1} output tokens per request", self.mean_output);
        if self.requests < ok {
            let _ = write!(out, "; counted for {} of {ok} ok requests", self.requests);
        }
        out.push_str(")\n");
    }

    /// `(metric, stat, value)` rows for the CSV.
    pub fn rows(&self) -> Vec<(&'static str, &'static str, String)> {
        let mut rows = vec![(
            "tokens",
            "output_per_s",
            format!("{:.1}", self.output_per_s),
        )];
        if let Some(total) = self.total_per_s {
            rows.push(("tokens", "total_per_s", format!("{total:.1}")));
        }
        rows.push(("tokens", "mean_output", format!("{:.1}", self.mean_output)));
        rows
    }
}

// === impl Goodput ===

impl Goodput {
    pub fn new(met: u64, ok: u64, secs: f64) -> Self {
        Self {
            met,
            share: if ok > 0 { met as f64 / ok as f64 } else { 0.0 },
            per_s: per_second(met, secs),
        }
    }

    /// `  goodput 987.3/s  9873 of 9998 ok requests (98.7%) met ttft ≤ 200ms, tpot ≤ 50ms`, and
    /// `; 64 failed requests not counted` when some failed (a share of the ok requests alone
    /// reads as 100 % next to a 50 % error rate).
    pub fn table(&self, out: &mut String, ok: u64, failed: u64, slo: &Slo) {
        let _ = write!(
            out,
            "  goodput {:.1}/s  {} of {ok} ok requests ({:.1}%) met {slo}",
            self.per_s,
            self.met,
            self.share * 100.0
        );
        if failed > 0 {
            let _ = write!(out, "; {failed} failed requests not counted");
        }
        out.push('\n');
    }

    /// `(metric, stat, value)` rows for the CSV.
    pub fn rows(&self) -> [(&'static str, &'static str, String); 2] {
        [
            ("goodput", "per_s", format!("{:.1}", self.per_s)),
            ("goodput", "share", format!("{:.4}", self.share)),
        ]
    }
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
