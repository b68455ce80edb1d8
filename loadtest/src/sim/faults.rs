//! Scripted faults: set by flags at start, replaced at run time through `POST /sim/faults` or
//! [`crate::sim::Sim::set_faults`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{check_duration, format_duration, parse_bytes, parse_duration, Ratio};

/// The faults a simulator injects. Every field defaults to "off".
///
/// JSON form (all fields optional on input; an omitted field is off):
/// `{"error_rate":0.1, "extra_latency":"300ms", "truncate_rate":0, "error_event_rate":0,
///   "stall_first_event":"2s", "stall":"10s", "wrong_answers":0.5,
///   "gpu_memory_growth":"1GiB", "gpu_memory_used":0.95, "fail_health":false}`.
/// Shares are numbers in `0..=1`; durations are strings (`300ms`, `1.5s`) or numbers of
/// milliseconds; `gpu_memory_growth` is bytes per second, a number or a string (`512MiB`).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFaults", into = "RawFaults")]
pub struct Faults {
    /// Share of inference requests answered 500 (OpenAI error shape).
    #[arg(
        long,
        value_name = "SHARE",
        default_value = "0",
        help_heading = "Faults"
    )]
    pub error_rate: Ratio,
    /// Added before the first token.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration, help_heading = "Faults")]
    pub extra_latency: Duration,
    /// Share of streams cut mid-way: the connection ends without the final chunk or `[DONE]`.
    #[arg(
        long,
        value_name = "SHARE",
        default_value = "0",
        help_heading = "Faults"
    )]
    pub truncate_rate: Ratio,
    /// Share of streams that send a `data: {"error":...}` event mid-way (then `[DONE]`).
    #[arg(
        long,
        value_name = "SHARE",
        default_value = "0",
        help_heading = "Faults"
    )]
    pub error_event_rate: Ratio,
    /// Pause after the first SSE event, to show whether a gateway buffers streams.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration, help_heading = "Faults")]
    pub stall_first_event: Duration,
    /// Wait this long before reading an inference request at all.
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = parse_duration, help_heading = "Faults")]
    pub stall: Duration,
    /// Share of answers whose text differs from the deterministic answer.
    #[arg(
        long,
        value_name = "SHARE",
        default_value = "0",
        help_heading = "Faults"
    )]
    pub wrong_answers: Ratio,
    /// Bytes per second added to the reported GPU memory, counted from when the faults were set.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_bytes, help_heading = "Faults")]
    pub gpu_memory_growth: u64,
    /// Fixed share of GPU memory reported as used, replacing `--gpu-memory-used` and the KV
    /// growth (run time only: at start `--gpu-memory-used` says the same).
    #[arg(skip)]
    pub gpu_memory_used: Option<Ratio>,
    /// Answer `/health` with 503.
    #[arg(long, help_heading = "Faults")]
    pub fail_health: bool,
}

/// The serde face of [`Faults`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    error_rate: Option<RawRatio>,
    extra_latency: Option<RawDuration>,
    truncate_rate: Option<RawRatio>,
    error_event_rate: Option<RawRatio>,
    stall_first_event: Option<RawDuration>,
    stall: Option<RawDuration>,
    wrong_answers: Option<RawRatio>,
    gpu_memory_growth: Option<RawBytes>,
    gpu_memory_used: Option<RawRatio>,
    fail_health: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Millis(f64),
    Text(String),
}

/// A share as the flags take it: `0.1` or `"10%"` (or `"0.1"`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RawRatio {
    Number(f64),
    Text(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RawBytes {
    Bytes(u64),
    Text(String),
}

// === impl RawRatio ===

impl RawRatio {
    fn parse(self) -> Result<Ratio, String> {
        match self {
            RawRatio::Number(v) => Ratio::new(v),
            RawRatio::Text(t) => t.parse(),
        }
    }
}

// === impl Faults ===

impl Faults {
    /// Parses the JSON form, reporting every out-of-range field at once.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

impl TryFrom<RawFaults> for Faults {
    type Error = String;

    fn try_from(raw: RawFaults) -> Result<Self, String> {
        let mut errors = Vec::new();
        let mut ratio = |name: &str, value: Option<RawRatio>| match value.map(RawRatio::parse) {
            None => None,
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                errors.push(format!("{name}: {e}"));
                None
            }
        };
        let error_rate = ratio("error_rate", raw.error_rate);
        let truncate_rate = ratio("truncate_rate", raw.truncate_rate);
        let error_event_rate = ratio("error_event_rate", raw.error_event_rate);
        let wrong_answers = ratio("wrong_answers", raw.wrong_answers);
        let gpu_memory_used = ratio("gpu_memory_used", raw.gpu_memory_used);
        let mut duration =
            |name: &str, value: Option<RawDuration>| match value.map(RawDuration::parse) {
                None => Duration::ZERO,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    errors.push(format!("{name}: {e}"));
                    Duration::ZERO
                }
            };
        let extra_latency = duration("extra_latency", raw.extra_latency);
        let stall_first_event = duration("stall_first_event", raw.stall_first_event);
        let stall = duration("stall", raw.stall);
        let gpu_memory_growth = match raw.gpu_memory_growth.map(RawBytes::parse) {
            None => 0,
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                errors.push(format!("gpu_memory_growth: {e}"));
                0
            }
        };
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(Self {
            error_rate: error_rate.unwrap_or_default(),
            extra_latency,
            truncate_rate: truncate_rate.unwrap_or_default(),
            error_event_rate: error_event_rate.unwrap_or_default(),
            stall_first_event,
            stall,
            wrong_answers: wrong_answers.unwrap_or_default(),
            gpu_memory_growth,
            gpu_memory_used,
            fail_health: raw.fail_health.unwrap_or(false),
        })
    }
}

impl From<Faults> for RawFaults {
    fn from(f: Faults) -> Self {
        Self {
            error_rate: Some(RawRatio::Number(f.error_rate.as_f64())),
            extra_latency: Some(RawDuration::Text(format_duration(f.extra_latency))),
            truncate_rate: Some(RawRatio::Number(f.truncate_rate.as_f64())),
            error_event_rate: Some(RawRatio::Number(f.error_event_rate.as_f64())),
            stall_first_event: Some(RawDuration::Text(format_duration(f.stall_first_event))),
            stall: Some(RawDuration::Text(format_duration(f.stall))),
            wrong_answers: Some(RawRatio::Number(f.wrong_answers.as_f64())),
            gpu_memory_growth: Some(RawBytes::Bytes(f.gpu_memory_growth)),
            gpu_memory_used: f.gpu_memory_used.map(|r| RawRatio::Number(r.as_f64())),
            fail_health: Some(f.fail_health),
        }
    }
}

// === impl RawDuration ===

impl RawDuration {
    fn parse(self) -> Result<Duration, String> {
        match self {
            Self::Millis(ms) => Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|e| format!("{ms} is not a number of milliseconds: {e}"))
                .and_then(check_duration),
            Self::Text(s) => parse_duration(&s),
        }
    }
}

// === impl RawBytes ===

impl RawBytes {
    fn parse(self) -> Result<u64, String> {
        match self {
            Self::Bytes(b) => Ok(b),
            Self::Text(s) => parse_bytes(&s),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let faults = Faults {
            error_rate: Ratio::ONE,
            extra_latency: Duration::from_millis(300),
            stall: Duration::from_secs(10),
            gpu_memory_growth: 1 << 30,
            gpu_memory_used: Ratio::new(0.95).ok(),
            fail_health: true,
            ..Faults::default()
        };
        let json = serde_json::to_string(&faults).unwrap();
        assert!(json.contains(r#""extra_latency":"300ms""#), "{json}");
        assert!(json.contains(r#""stall":"10s""#), "{json}");
        assert_eq!(Faults::from_json(json.as_bytes()), Ok(faults));
    }

    #[test]
    fn json_inputs() {
        let parsed = Faults::from_json(
            br#"{"extra_latency": 250, "stall": "1.5s", "gpu_memory_growth": "1MiB"}"#,
        )
        .unwrap();
        assert_eq!(parsed.extra_latency, Duration::from_millis(250));
        assert_eq!(parsed.stall, Duration::from_millis(1500));
        assert_eq!(parsed.gpu_memory_growth, 1 << 20);
        assert_eq!(Faults::from_json(b"{}"), Ok(Faults::default()));
        // Shares as the flags take them: a fraction, or a percentage in a string.
        let shares =
            Faults::from_json(br#"{"error_rate": "10%", "truncate_rate": "0.5"}"#).unwrap();
        assert_eq!(shares.error_rate, Ratio::new(0.1).unwrap());
        assert_eq!(shares.truncate_rate, Ratio::new(0.5).unwrap());
        let err = Faults::from_json(br#"{"error_rate": "ten"}"#).unwrap_err();
        assert!(
            err.contains("error_rate") && err.contains("not a share"),
            "{err}"
        );
    }

    #[test]
    fn json_errors_are_all_reported() {
        let err = Faults::from_json(br#"{"error_rate": 2, "stall": "soon", "wrong_answers": -1}"#)
            .unwrap_err();
        for field in ["error_rate", "stall", "wrong_answers"] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
        assert!(Faults::from_json(br#"{"nope": 1}"#).is_err());
        assert!(Faults::from_json(br#"{"stall": 1e18}"#).is_err());
    }
}
