//! One model: its backends, split, cohort, shadow and affinity.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::Collect;
use crate::raw::{
    Bytes, Field, Parsed, RawAffinity, RawAffinityOptions, RawBackend, RawCohort, RawModel,
    RawShadow,
};
use crate::{Affinity, Backend, Cohort, Endpoint, Engine, Errors, Model, Ppm, Shadow};

const DEFAULT_LOAD_FACTOR: f64 = 1.25;

// === impl Model ===

impl TryFrom<RawModel> for Model {
    type Error = Errors;

    fn try_from(raw: RawModel) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let has_candidate = raw.candidate.is_some();
        let has_shadow = raw.shadow.is_some();
        let signals = GateSignals::of(&raw);
        let name = c.required("name", raw.name);
        if let Some(name) = &name {
            check_name(&mut c, name);
        }
        let default = c.take("default", raw.default).unwrap_or(false);
        let stable = c
            .required("stable", raw.stable)
            .and_then(|b| c.convert("stable", b));
        let candidate: Option<Backend> = c
            .take("candidate", raw.candidate)
            .and_then(|b| c.convert("candidate", b));
        let weight = c.take("weight", raw.weight).unwrap_or(Ppm::ZERO);
        if !weight.is_zero() && !has_candidate {
            c.error(
                "weight",
                format!(
                    "weight {weight} needs a candidate; add `candidate` or set the weight to 0"
                ),
            );
        }
        let cohort = c
            .take("cohort", raw.cohort)
            .and_then(|r| c.convert("cohort", r));
        let shadow = c
            .take("shadow", raw.shadow)
            .and_then(|r| c.convert("shadow", r));
        if has_shadow && !has_candidate {
            c.error(
                "shadow",
                "shadow mirrors requests to the candidate; add `candidate` or remove `shadow`",
            );
        }
        let affinity = match c.take("affinity", raw.affinity) {
            None | Some(RawAffinity::Enabled(false)) => None,
            Some(RawAffinity::Enabled(true)) => Some(Affinity::default()),
            Some(RawAffinity::Options(options)) => c.convert("affinity", options),
        };
        let has_rollout = raw.rollout.is_some();
        let rollout = c
            .take("rollout", raw.rollout)
            .and_then(|r| c.convert("rollout", r));
        if has_rollout && !has_candidate {
            c.error(
                "rollout",
                "a rollout delivers a candidate; add `candidate` or remove `rollout`",
            );
        }
        if has_rollout && has_candidate {
            signals.check(&mut c);
        }
        let model = name.zip(stable).map(|(name, stable)| Model {
            name,
            default,
            stable,
            candidate,
            weight,
            cohort: cohort.unwrap_or(Cohort::Random),
            shadow,
            affinity,
            rollout,
        });
        c.finish(model)
    }
}

/// What the gates need and what the candidate provides, read from the raw model so that a
/// mistake elsewhere in the rollout or the candidate does not hide these.
struct GateSignals {
    queue_time: bool,
    gpu_memory: bool,
    correctness: bool,
    /// `rollout.shadow` or `rollout.synthetic` is there.
    pairs: bool,
    /// The candidate's engine; `None` when it does not parse (reported on its own).
    engine: Option<Engine>,
    gpu_metrics: bool,
}

impl GateSignals {
    fn of(raw: &RawModel) -> Self {
        let rollout = raw.rollout.as_ref().and_then(|r| r.value.as_ref());
        let gates = rollout
            .and_then(|r| r.gates.as_ref())
            .and_then(|g| g.value.as_ref());
        let candidate = raw.candidate.as_ref().and_then(|c| c.value.as_ref());
        let engine = match candidate.and_then(|c| c.engine.as_ref()) {
            None => Some(Engine::Openai),
            Some(parsed) => parsed.value,
        };
        let gpu_metrics = candidate
            .and_then(|c| c.gpu_metrics.as_ref())
            .and_then(|g| g.value.as_ref())
            .is_some_and(|pages| !pages.is_empty());
        Self {
            queue_time: gates.is_some_and(|g| g.queue_time_p95.is_some()),
            gpu_memory: gates.is_some_and(|g| g.gpu_memory_used.is_some()),
            correctness: gates.is_some_and(|g| g.correctness.is_some()),
            pairs: rollout.is_some_and(|r| r.shadow.is_some() || r.synthetic.is_some()),
            engine,
            gpu_metrics,
        }
    }

    /// Every gate must read a signal something provides: a gate on a missing signal would
    /// only ever be inconclusive, holding or aborting every rollout.
    fn check(&self, c: &mut Collect) {
        if let Some(engine) = self.engine {
            if self.queue_time && !engine.reports_queue_time() {
                c.error(
                    "rollout.gates.queue_time_p95",
                    format!(
                        "the candidate's engine `{engine}` reports no queue-time histogram (vllm and tgi do); \
                         remove the gate or read queue time with a promql gate"
                    ),
                );
            }
            if self.gpu_memory && !self.gpu_metrics && !engine.reports_gpu_memory() {
                c.error(
                    "rollout.gates.gpu_memory_used",
                    format!(
                        "no GPU memory source for the candidate: engine `{engine}` does not report it; \
                         add `candidate.gpu_metrics` (a rollgate gpu-agent or DCGM exporter page)"
                    ),
                );
            }
        }
        if self.correctness && !self.pairs {
            c.error(
                "rollout.gates.correctness",
                "correctness is read from shadow pairs and synthetic checks; \
                 add `rollout.shadow` or `rollout.synthetic`",
            );
        }
    }
}

/// A model name is a Prometheus label value in `/metrics` (`model="…"`), written as is: a
/// quote, a backslash or a line break there makes the whole page unreadable. `/`, `:`, spaces
/// and non-ASCII letters are fine (`meta-llama/Llama-3-8B`, `org/model:tag`).
fn check_name(c: &mut Collect, name: &str) {
    if name.is_empty() {
        c.error("name", "must not be empty");
    } else if name.trim() != name {
        c.error(
            "name",
            format!("{name:?} has leading or trailing whitespace"),
        );
    } else if let Some(bad) = name.chars().find(|&ch| label_breaking(ch)) {
        c.error(
            "name",
            format!(
                "{name:?} contains {bad:?}; a model name must not contain `\"`, `\\` or control characters: it would break the Prometheus label in /metrics"
            ),
        );
    } else if let Some(bad) = name.chars().find(|&ch| invisible(ch)) {
        c.error(
            "name",
            format!(
                "{name:?} contains U+{:04X}, an invisible or text-direction character: a model name must read as what it is in logs, metrics and the admin API",
                u32::from(bad)
            ),
        );
    }
}

/// Zero-width and bidirectional formatting characters (Unicode `Cf` that render as nothing or
/// reorder the text around them): `model` would look like another name (`Trojan Source`).
fn invisible(ch: char) -> bool {
    matches!(ch, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn label_breaking(ch: char) -> bool {
    ch == '"' || ch == '\\' || ch.is_control()
}

// === impl Backend ===

impl TryFrom<RawBackend> for Backend {
    type Error = Errors;

    fn try_from(raw: RawBackend) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let endpoints = c
            .required("endpoints", raw.endpoints)
            .and_then(|items| endpoints(&mut c, items));
        let engine = c.take("engine", raw.engine).unwrap_or(Engine::Openai);
        let revision = non_empty(&mut c, "revision", raw.revision);
        let artifact = non_empty(&mut c, "artifact", raw.artifact);
        let runtime = non_empty(&mut c, "runtime", raw.runtime);
        let gpu_metrics = c
            .take("gpu_metrics", raw.gpu_metrics)
            .map(|items| metric_pages(&mut c, items))
            .unwrap_or_default();
        let backend = endpoints.map(|endpoints| Backend {
            endpoints,
            engine,
            revision,
            artifact,
            runtime,
            gpu_metrics,
        });
        c.finish(backend)
    }
}

/// An optional label that, when present, says something.
fn non_empty(c: &mut Collect, key: &str, field: Field<String>) -> Option<String> {
    let value = c.take(key, field)?;
    if value.trim().is_empty() {
        c.error(key, "must not be empty; leave it out instead");
        return None;
    }
    Some(value)
}

/// `http://host:port/path` pages; the path (default `/metrics`) is kept in `url`.
fn metric_pages(c: &mut Collect, items: Vec<Parsed<String>>) -> Vec<Endpoint> {
    let mut pages = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("gpu_metrics[{i}]");
        let Some(text) = c.item(&key, item) else {
            continue;
        };
        let (base, path) = match text
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|p| p + 7))
        {
            Some(at) => (&text[..at], &text[at..]),
            None => (text.as_str(), "/metrics"),
        };
        match base.parse::<Endpoint>() {
            Ok(ep) => pages.push(Endpoint {
                url: format!("{}{path}", ep.url),
                authority: ep.authority,
            }),
            Err(e) => c.error(&key, e.to_string()),
        }
    }
    pages
}

/// At least one, and no two with the same (normalised) authority.
fn endpoints(c: &mut Collect, items: Vec<Parsed<Endpoint>>) -> Option<Vec<Endpoint>> {
    if items.is_empty() {
        c.error("endpoints", "at least one endpoint is required");
        return None;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut endpoints = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("endpoints[{i}]");
        let Some(endpoint) = c.item(&key, item) else {
            continue;
        };
        if let Some(first) = seen.get(&endpoint.authority) {
            c.error(
                &key,
                format!("duplicate endpoint {endpoint} (same as endpoints[{first}])"),
            );
            continue;
        }
        seen.insert(endpoint.authority.clone(), i);
        endpoints.push(endpoint);
    }
    Some(endpoints)
}

// === impl Cohort ===

impl TryFrom<RawCohort> for Cohort {
    type Error = Errors;

    fn try_from(raw: RawCohort) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let present = [
            raw.header.is_some(),
            raw.api_key.is_some(),
            raw.body_field.is_some(),
        ];
        if present.iter().filter(|p| **p).count() != 1 {
            c.error("", "needs exactly one of header, api_key or body_field (leave cohort out for a random split)");
        }
        let mut cohorts = Vec::new();
        if let Some(header) = c.take("header", raw.header) {
            cohorts.extend(header_name(&mut c, &header).map(Cohort::Header));
        }
        match c.take("api_key", raw.api_key) {
            Some(true) => cohorts.push(Cohort::ApiKey),
            Some(false) => c.error(
                "api_key",
                "must be true (leave cohort out for a random split)",
            ),
            None => {}
        }
        if let Some(field) = c.take("body_field", raw.body_field) {
            if field.is_empty() {
                c.error("body_field", "must not be empty");
            } else {
                cohorts.push(Cohort::BodyField(field));
            }
        }
        c.finish(cohorts.pop())
    }
}

/// A header name: an RFC 9110 token, lowercased.
fn header_name(c: &mut Collect, name: &str) -> Option<String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        c.error("header", format!("{name:?} is not a valid header name"));
        return None;
    }
    Some(name.to_ascii_lowercase())
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cohort::Random => f.write_str("random"),
            Cohort::Header(name) => write!(f, "header {name}"),
            Cohort::ApiKey => f.write_str("api_key"),
            Cohort::BodyField(field) => write!(f, "body_field {field}"),
        }
    }
}

// === impl Shadow ===

impl Shadow {
    /// Defaults for everything but the sample, which has none.
    pub const DEFAULT_MAX_INFLIGHT: usize = 64;
    pub const DEFAULT_MAX_BODY: u64 = 64 << 20;
    pub const DEFAULT_BUFFER: usize = 4 << 20;
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    pub const DEFAULT_CAPTURE: usize = 256 << 10;
    /// 1 %: against a saturated gateway that is a few hundred mirrors a second, enough to
    /// score, at ≈ 1 % of its throughput (a mirror costs ≈ 1.3 plain requests' CPU).
    pub const DEFAULT_SATURATED_SAMPLE: Ppm = match Ppm::new(10_000) {
        Some(p) => p,
        None => Ppm::FULL,
    };
    /// The most `max_inflight` may be: each mirror holds an upstream request and up to
    /// `buffer` bytes, so more than this is no bound at all (and past 2^63 the proxy's
    /// signed count would refuse every mirror).
    pub const MAX_MAX_INFLIGHT: usize = 1_000_000;
}

impl TryFrom<RawShadow> for Shadow {
    type Error = Errors;

    fn try_from(raw: RawShadow) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let sample = c.required("sample", raw.sample);
        let saturated_sample = c
            .take("saturated_sample", raw.saturated_sample)
            .unwrap_or(Shadow::DEFAULT_SATURATED_SAMPLE);
        let max_inflight = c.positive(
            "max_inflight",
            raw.max_inflight,
            Shadow::DEFAULT_MAX_INFLIGHT,
        );
        if max_inflight > Shadow::MAX_MAX_INFLIGHT {
            c.error(
                "max_inflight",
                format!(
                    "{max_inflight} is above {}; each mirror holds an upstream request and up to `buffer` bytes, so that many is no bound",
                    Shadow::MAX_MAX_INFLIGHT
                ),
            );
        }
        let Bytes(max_body) = c.positive("max_body", raw.max_body, Bytes(Shadow::DEFAULT_MAX_BODY));
        let buffer = c.size("buffer", raw.buffer, Shadow::DEFAULT_BUFFER);
        let timeout = c.positive("timeout", raw.timeout, Shadow::DEFAULT_TIMEOUT);
        let capture = c.size("capture", raw.capture, Shadow::DEFAULT_CAPTURE);
        let shadow = sample.map(|sample| Shadow {
            sample,
            saturated_sample,
            max_inflight,
            max_body,
            buffer,
            timeout,
            capture,
        });
        c.finish(shadow)
    }
}

// === impl Affinity ===

impl Default for Affinity {
    fn default() -> Self {
        Self {
            load_factor: DEFAULT_LOAD_FACTOR,
        }
    }
}

impl TryFrom<RawAffinityOptions> for Affinity {
    type Error = Errors;

    fn try_from(raw: RawAffinityOptions) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let load_factor = c
            .take("load_factor", raw.load_factor)
            .unwrap_or(DEFAULT_LOAD_FACTOR);
        if load_factor < 1.0 {
            c.error("load_factor", format!("{load_factor} is below 1"));
        }
        c.finish(Some(Affinity { load_factor }))
    }
}

#[cfg(test)]
mod tests;
