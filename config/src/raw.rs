//! The serde-facing shape of the config file.
//!
//! Every section is a `Raw*` struct with `deny_unknown_fields`, and every key in it is a
//! [`Field`]: `None` when the key is absent, otherwise a [`Parsed`] that holds the value when it
//! is usable and the errors found inside it either way. Reading a `Parsed` never fails, so one
//! serde pass reads a document with many mistakes and keeps all of them where they happened; an
//! unknown key is found by asking serde about each key on its own. The `TryFrom` impls in
//! `validate` then apply defaults and cross-field rules and collect the errors with their paths.
//!
//! Scalars are read into their units here (sizes, durations, ratios, addresses, endpoints), so
//! a bad value is reported at its own key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_yaml_ng::{Mapping, Value};

use crate::validate::yaml::big_int;
use crate::{
    parse_duration, parse_ppm, parse_size, ConfigError, Endpoint, Engine, GateName, ParseError, Ppm,
};

/// One key of a raw section: `None` when absent (or `null`).
pub(crate) type Field<T> = Option<Parsed<T>>;

/// A value as read: the value when usable, and every error found in it, with paths relative to
/// it (an empty path is the value itself).
#[derive(Debug)]
pub(crate) struct Parsed<T> {
    pub value: Option<T>,
    pub errors: Vec<ConfigError>,
}

/// Reads a value of this type from YAML, recording problems instead of failing.
pub(crate) trait FromYaml: Sized {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self>;
}

/// A byte count, from `65536`, `64KiB` or `64MB`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bytes(pub u64);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Field<SocketAddr>,
    pub workers: Field<usize>,
    pub tls: Field<RawTls>,
    pub admin: Field<RawAdmin>,
    pub limits: Field<RawLimits>,
    pub upstream: Field<RawUpstream>,
    pub ejection: Field<RawEjection>,
    pub routing: Field<RawRouting>,
    pub data_plane: Field<String>,
    pub drain_timeout: Field<Duration>,
    pub access_log: Field<PathBuf>,
    pub state_dir: Field<PathBuf>,
    pub env: Field<String>,
    pub policy: Field<RawPolicy>,
    pub gitops: Field<crate::validate::gitops::RawGitops>,
    pub models: Field<Vec<Parsed<RawModel>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub max_step: Field<Ppm>,
    pub require_gates: Field<RawEnvGates>,
    pub require_approval: Field<Vec<Parsed<String>>>,
    pub immutable_candidates: Field<bool>,
    pub one_change_per_rollout: Field<bool>,
}

/// `{ prod: [error_rate, latency_p99], staging: [error_rate] }`: gate names by environment,
/// in file order.
#[derive(Debug, Default)]
pub(crate) struct RawEnvGates(pub Vec<(String, Parsed<Vec<Parsed<GateName>>>)>);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Field<PathBuf>,
    pub key: Field<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Field<SocketAddr>,
    pub token_file: Field<PathBuf>,
    pub audit_log: Field<PathBuf>,
    pub tokens: Field<Vec<Parsed<RawAdminToken>>>,
    pub sync_pause_approvers: Field<u32>,
    pub protect_reads: Field<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdminToken {
    pub name: Field<String>,
    pub file: Field<PathBuf>,
    pub roles: Field<Vec<Parsed<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_header_bytes: Field<Bytes>,
    pub max_headers: Field<usize>,
    pub max_body: Field<Bytes>,
    pub model_prefix: Field<Bytes>,
    pub header_read_timeout: Field<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub connect_timeout: Field<Duration>,
    pub response_timeout: Field<Duration>,
    pub idle_timeout: Field<Duration>,
    pub pool_idle_timeout: Field<Duration>,
    pub pool_max_idle: Field<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEjection {
    pub consecutive_failures: Field<u32>,
    pub base: Field<Duration>,
    pub max: Field<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub variant_header: Field<bool>,
    pub allow_override: Field<bool>,
    pub candidate_fallback: Field<bool>,
    pub candidate_fallback_status: Field<Vec<Parsed<u32>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub name: Field<String>,
    pub default: Field<bool>,
    pub stable: Field<RawBackend>,
    pub candidate: Field<RawBackend>,
    pub weight: Field<Ppm>,
    pub cohort: Field<RawCohort>,
    pub shadow: Field<RawShadow>,
    pub affinity: Field<RawAffinity>,
    pub rollout: Field<RawRollout>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRollout {
    pub synthetic: Field<RawSynthetic>,
    pub shadow: Field<RawShadowPhase>,
    pub steps: Field<Vec<Parsed<RawStep>>>,
    pub gates: Field<RawGates>,
    pub min_samples: Field<usize>,
    pub metric_errors: Field<RawMetricErrors>,
    pub approval: Field<String>,
    pub cooldown: Field<Duration>,
    pub validate_timeout: Field<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSynthetic {
    pub suite: Field<PathBuf>,
    pub every: Field<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadowPhase {
    pub sample: Field<Ppm>,
    #[serde(rename = "for")]
    pub duration: Field<Duration>,
    pub min_pairs: Field<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStep {
    pub weight: Field<Ppm>,
    #[serde(rename = "for")]
    pub duration: Field<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGates {
    pub error_rate: Field<RawErrorRateGate>,
    pub latency_p99: Field<RawLatencyGate>,
    pub ttft_p95: Field<RawLatencyGate>,
    pub queue_time_p95: Field<RawLatencyGate>,
    pub gpu_memory_used: Field<RawMaxRatio>,
    pub correctness: Field<RawMinShare>,
    pub promql: Field<RawPromql>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPromql {
    pub url: Field<String>,
    pub timeout: Field<Duration>,
    pub queries: Field<Vec<Parsed<RawPromqlQuery>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPromqlQuery {
    pub name: Field<String>,
    pub query: Field<String>,
    pub max: Field<f64>,
    pub min: Field<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawErrorRateGate {
    pub max: Field<Ppm>,
    /// Written with a sign: `+0.5%`.
    pub max_vs_stable: Field<Delta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLatencyGate {
    pub max: Field<Duration>,
    pub max_ratio_vs_stable: Field<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMaxRatio {
    pub max: Field<Ppm>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMinShare {
    pub min: Field<Ppm>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetricErrors {
    pub limit: Field<u32>,
    pub then: Field<String>,
}

/// An allowed increase over stable: `+0.5%` (the sign is optional; negative is an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta(pub Ppm);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub endpoints: Field<Vec<Parsed<Endpoint>>>,
    pub engine: Field<Engine>,
    pub revision: Field<String>,
    pub artifact: Field<String>,
    pub runtime: Field<String>,
    pub gpu_metrics: Field<Vec<Parsed<String>>>,
}

/// Exactly one key; checked in `validate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCohort {
    pub header: Field<String>,
    pub api_key: Field<bool>,
    pub body_field: Field<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadow {
    pub sample: Field<Ppm>,
    pub saturated_sample: Field<Ppm>,
    pub max_inflight: Field<usize>,
    pub max_body: Field<Bytes>,
    pub buffer: Field<Bytes>,
    pub timeout: Field<Duration>,
    pub capture: Field<Bytes>,
}

/// `affinity: true` (defaults), `affinity: false` (off) or `affinity: { load_factor: 1.5 }`.
#[derive(Debug)]
pub(crate) enum RawAffinity {
    Enabled(bool),
    Options(RawAffinityOptions),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAffinityOptions {
    pub load_factor: Field<f64>,
}

/// What a value is, for messages: `a list`, `the string "abc"`.
pub(crate) fn describe(value: &Value) -> String {
    if let Some(n) = big_int(value) {
        return format!("the number {n}");
    }
    match value {
        Value::Null => "nothing (null)".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Reads a section: each key is checked against the struct's keys on its own, so every unknown
/// key is reported (serde stops at the first), then the known keys are read in one go.
fn read_section<T>(value: Value, errors: &mut Vec<ConfigError>) -> Option<T>
where
    T: for<'de> Deserialize<'de>,
{
    let map = match value {
        Value::Mapping(map) => map,
        other => {
            errors.push(ConfigError::new(
                "",
                format!("expected a mapping, found {}", describe(&other)),
            ));
            return None;
        }
    };
    let mut known = Mapping::new();
    for (key, value) in map {
        let Some(name) = key.as_str() else {
            errors.push(ConfigError::new(
                "",
                format!("keys must be strings, found {}", describe(&key)),
            ));
            continue;
        };
        let probe = Mapping::from_iter([(key.clone(), Value::Null)]);
        match T::deserialize(Value::Mapping(probe)) {
            Ok(_) => {
                known.insert(key, value);
            }
            Err(e) => errors.push(ConfigError::new(
                name,
                e.to_string().replace("unknown field", "unknown key"),
            )),
        }
    }
    T::deserialize(Value::Mapping(known))
        .map_err(|e| errors.push(ConfigError::new("", e.to_string())))
        .ok()
}

/// A leaf read that either works or says why not, at the value's own path.
fn leaf<T>(result: Result<T, String>, errors: &mut Vec<ConfigError>) -> Option<T> {
    result
        .map_err(|message| errors.push(ConfigError::new("", message)))
        .ok()
}

/// The text of a scalar for unit parsing; YAML numbers count (`weight: 0.1`, `max_body: 1024`).
fn scalar_text(value: &Value, what: &str) -> Result<String, String> {
    if let Some(n) = big_int(value) {
        return Ok(n.to_owned());
    }
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Ok(u.to_string()),
            (None, Some(i), _) => Ok(i.to_string()),
            // `f64`'s Display never uses an exponent, so the exact decimal reader takes it.
            (None, None, Some(f)) if f.is_finite() => Ok(f.to_string()),
            _ => Err(format!("expected {what}, found {}", describe(value))),
        },
        other => Err(format!("expected {what}, found {}", describe(other))),
    }
}

// === impl Parsed ===

impl<T: FromYaml> Parsed<T> {
    pub(crate) fn read(value: Value) -> Self {
        let mut errors = Vec::new();
        let value = T::from_yaml(value, &mut errors);
        Parsed { value, errors }
    }
}

impl<'de, T: FromYaml> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Parsed::read)
    }
}

// === impl FromYaml ===

macro_rules! sections {
    ($($t:ty),* $(,)?) => {$(
        impl FromYaml for $t {
            fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
                read_section(value, errors)
            }
        }
    )*};
}

sections!(
    RawConfig,
    RawTls,
    RawAdmin,
    RawAdminToken,
    RawLimits,
    RawUpstream,
    RawEjection,
    RawRouting,
    RawModel,
    RawBackend,
    RawCohort,
    RawShadow,
    RawAffinityOptions,
    RawRollout,
    RawSynthetic,
    RawShadowPhase,
    RawStep,
    RawGates,
    RawErrorRateGate,
    RawLatencyGate,
    RawMaxRatio,
    RawMinShare,
    RawMetricErrors,
    RawPromql,
    RawPromqlQuery,
    RawPolicy,
    crate::validate::gitops::RawGitops,
    crate::validate::gitops::RawKubernetes,
);

/// Items keep their index even when some are unusable, so later errors point at the right one.
impl<T: FromYaml> FromYaml for Vec<Parsed<T>> {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        match value {
            Value::Sequence(items) => Some(items.into_iter().map(Parsed::read).collect()),
            other => leaf(
                Err(format!("expected a list, found {}", describe(&other))),
                errors,
            ),
        }
    }
}

impl FromYaml for RawAffinity {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        match value {
            Value::Bool(on) => Some(RawAffinity::Enabled(on)),
            map @ Value::Mapping(_) => read_section(map, errors).map(RawAffinity::Options),
            other => {
                let found = describe(&other);
                leaf(
                    Err(format!("expected true, false or a mapping, found {found}")),
                    errors,
                )
            }
        }
    }
}

impl FromYaml for RawEnvGates {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let map = match value {
            Value::Mapping(map) => map,
            other => {
                let found = describe(&other);
                return leaf(
                    Err(format!(
                        "expected a mapping of environment to gate names, e.g. {{ prod: [error_rate] }}, found {found}"
                    )),
                    errors,
                );
            }
        };
        let mut out = Vec::with_capacity(map.len());
        for (key, value) in map {
            match key {
                Value::String(env) => out.push((env, Parsed::read(value))),
                other => errors.push(ConfigError::new(
                    "",
                    format!(
                        "environment names must be strings, found {}",
                        describe(&other)
                    ),
                )),
            }
        }
        Some(RawEnvGates(out))
    }
}

impl FromYaml for GateName {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = match &value {
            Value::String(s) => s.parse().map_err(|e: ParseError| e.to_string()),
            other => Err(format!("expected a gate name, found {}", describe(other))),
        };
        leaf(result, errors)
    }
}

impl FromYaml for String {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = match value {
            Value::String(s) => Ok(s),
            big if big_int(&big).is_some() => Err(format!(
                "expected a string, found {}; quote it",
                describe(&big)
            )),
            scalar @ (Value::Number(_) | Value::Bool(_)) => Err(format!(
                "expected a string, found {}; quote it",
                describe(&scalar)
            )),
            other => Err(format!("expected a string, found {}", describe(&other))),
        };
        leaf(result, errors)
    }
}

impl FromYaml for PathBuf {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        String::from_yaml(value, errors).map(PathBuf::from)
    }
}

impl FromYaml for bool {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = match value {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "expected true or false, found {}",
                describe(&other)
            )),
        };
        leaf(result, errors)
    }
}

/// Counts: non-negative integers.
fn count(value: &Value) -> Result<u64, String> {
    if let Some(n) = big_int(value).filter(|n| !n.starts_with('-')) {
        return Err(format!("{n} is too large"));
    }
    value.as_u64().ok_or_else(|| {
        format!(
            "expected a non-negative whole number, found {}",
            describe(value)
        )
    })
}

impl FromYaml for usize {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result =
            count(&value).and_then(|n| usize::try_from(n).map_err(|_| format!("{n} is too large")));
        leaf(result, errors)
    }
}

impl FromYaml for u32 {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result =
            count(&value).and_then(|n| u32::try_from(n).map_err(|_| format!("{n} is too large")));
        leaf(result, errors)
    }
}

impl FromYaml for f64 {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = value
            .as_f64()
            .or_else(|| big_int(&value).and_then(|n| n.parse().ok()))
            .filter(|f: &f64| f.is_finite())
            .ok_or_else(|| format!("expected a number, found {}", describe(&value)));
        leaf(result, errors)
    }
}

impl FromYaml for SocketAddr {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let hint = "expected ip:port, e.g. 0.0.0.0:8080 or [::]:8080";
        let result = match &value {
            Value::String(s) => s
                .parse()
                .map_err(|_| format!("`{s}` is not an address; {hint}")),
            other => Err(format!("{hint}, found {}", describe(other))),
        };
        leaf(result, errors)
    }
}

impl FromYaml for Bytes {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = scalar_text(&value, "a size such as 64KiB")
            .and_then(|text| parse_size(&text).map_err(|e| e.to_string()));
        leaf(result.map(Bytes), errors)
    }
}

impl FromYaml for Duration {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = scalar_text(&value, "a duration such as 10s")
            .and_then(|text| parse_duration(&text).map_err(|e| e.to_string()));
        leaf(result, errors)
    }
}

impl FromYaml for Ppm {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = scalar_text(&value, "a ratio such as 10%")
            .and_then(|text| parse_ppm(&text).map_err(|e| e.to_string()));
        leaf(result, errors)
    }
}

impl FromYaml for Delta {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = scalar_text(&value, "an increase such as +0.5%").and_then(|text| {
            let t = text.trim();
            if t.starts_with('-') {
                return Err(format!(
                    "`{t}` is negative; write the allowed increase, e.g. +0.5%"
                ));
            }
            parse_ppm(t.strip_prefix('+').unwrap_or(t)).map_err(|e| e.to_string())
        });
        leaf(result.map(Delta), errors)
    }
}

impl FromYaml for Endpoint {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = match &value {
            Value::String(s) => s.parse().map_err(|e: ParseError| e.to_string()),
            other => Err(format!(
                "expected an endpoint such as http://10.0.0.1:8000, found {}",
                describe(other)
            )),
        };
        leaf(result, errors)
    }
}

impl FromYaml for Engine {
    fn from_yaml(value: Value, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let result = match &value {
            Value::String(s) => s.parse().map_err(|e: ParseError| e.to_string()),
            other => Err(format!(
                "expected an engine name, found {}",
                describe(other)
            )),
        };
        leaf(result, errors)
    }
}
