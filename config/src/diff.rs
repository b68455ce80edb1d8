//! What changed between two configs, for the reload log and for deciding what to rebuild.

use std::fmt;
use std::time::Duration;

use crate::error::join;
use crate::units::format_size;
use crate::{
    Affinity, Approval, Backend, Config, Endpoint, GateName, Gates, LatencyGate, MetricErrors,
    Model, Policy, Ppm, PromqlGates, PromqlQuery, Rollout, Shadow, Step,
};

/// One change between two configs, shown as one line:
/// `models[chat-small].weight: 10% -> 30%`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What changed: `listen`, `limits.max_body`, `models[chat-small].candidate.revision`.
    /// Models are named, not numbered, so reordering them is not a change.
    pub path: String,
    pub kind: ChangeKind,
    /// Only a restart applies it (listeners, worker threads, TLS, the admin server and its
    /// tokens, GitOps publishers, upstream pools, `drain_timeout`, `state_dir`); a reload keeps
    /// the old value.
    pub restart_required: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Present only in the new config; a short description of it.
    Added(String),
    /// Present only in the old config; a short description of it.
    Removed(String),
    /// Present in both, with a different value.
    Changed { old: String, new: String },
}

/// Collects changes; the restart flag applies to what is pushed while it is set.
#[derive(Default)]
struct Diff {
    changes: Vec<Change>,
    restart: bool,
}

/// Every change from `old` to `new`: top-level settings first, then removed models, then each
/// model of `new` in order. Empty when they are equal.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let mut d = Diff::default();
    settings(&mut d, old, new);
    for model in &old.models {
        if new.model(&model.name).is_none() {
            d.removed(format!("models[{}]", model.name), describe_model(model));
        }
    }
    for model in &new.models {
        let path = format!("models[{}]", model.name);
        match old.model(&model.name) {
            Some(before) => diff_model(&mut d, &path, before, model),
            None => d.added(path, describe_model(model)),
        }
    }
    d.changes
}

/// Compares each named field of `$old` and `$new`, reporting under `$prefix.field`.
macro_rules! fields {
    ($d:expr, $prefix:expr, $old:expr, $new:expr, { $($field:ident: $show:expr),* $(,)? }) => {
        {
            $( $d.value(&join($prefix, stringify!($field)), &$old.$field, &$new.$field, $show); )*
        }
    };
}

/// The top-level settings. What a running gateway reads once, at start, is marked
/// `restart_required`; the rest applies on reload (limits to new connections).
fn settings(d: &mut Diff, old: &Config, new: &Config) {
    d.restart = true;
    fields!(d, "", old, new, { listen: text, workers: text });
    d.option("tls", &old.tls, &new.tls, |t| {
        format!("cert {}, key {}", t.cert.display(), t.key.display())
    });
    // The admin server, its tokens and the audit log are set up once.
    fields!(d, "admin", old.admin, new.admin, { listen: text });
    d.value(
        "admin.token_file",
        &old.admin.token_file,
        &new.admin.token_file,
        path,
    );
    d.value(
        "admin.audit_log",
        &old.admin.audit_log,
        &new.admin.audit_log,
        path,
    );
    d.value("admin.tokens", &old.admin.tokens, &new.admin.tokens, |t| {
        let names: Vec<String> = t
            .iter()
            .map(|t| {
                let roles: Vec<&str> = t.roles.iter().map(|r| r.as_str()).collect();
                format!("{} ({}, {})", t.name, t.file.display(), roles.join("+"))
            })
            .collect();
        format!("[{}]", names.join(", "))
    });
    fields!(d, "admin", old.admin, new.admin, {
        sync_pause_approvers: text,
        protect_reads: text,
    });
    d.restart = false;
    fields!(d, "limits", old.limits, new.limits, {
        max_header_bytes: usize_size,
        max_headers: text,
        max_body: size,
        model_prefix: usize_size,
        header_read_timeout: dur,
    });
    // Each worker's upstream connection pools are built once; the timeouts are read per request.
    let up = |d: &mut Diff, restart: bool, field: &str, old: &Duration, new: &Duration| {
        d.restart = restart;
        d.value(&join("upstream", field), old, new, dur);
    };
    let (o, n) = (&old.upstream, &new.upstream);
    up(
        d,
        true,
        "connect_timeout",
        &o.connect_timeout,
        &n.connect_timeout,
    );
    up(
        d,
        false,
        "response_timeout",
        &o.response_timeout,
        &n.response_timeout,
    );
    up(d, false, "idle_timeout", &o.idle_timeout, &n.idle_timeout);
    up(
        d,
        true,
        "pool_idle_timeout",
        &o.pool_idle_timeout,
        &n.pool_idle_timeout,
    );
    d.restart = true;
    fields!(d, "upstream", o, n, { pool_max_idle: text });
    d.restart = false;
    fields!(d, "ejection", old.ejection, new.ejection, {
        consecutive_failures: text,
        base: dur,
        max: dur,
    });
    fields!(d, "routing", old.routing, new.routing, {
        variant_header: text,
        allow_override: text,
        candidate_fallback: text,
        candidate_fallback_status: |s: &Vec<u16>| format!("{s:?}"),
    });
    fields!(d, "", old, new, { data_plane: text });
    d.value("access_log", &old.access_log, &new.access_log, |a| {
        a.as_ref().map_or("none".to_owned(), ToString::to_string)
    });
    // Read at start: the shutdown deadline, the state store, the GitOps publishers.
    d.restart = true;
    fields!(d, "", old, new, { drain_timeout: dur });
    d.value("state_dir", &old.state_dir, &new.state_dir, path);
    d.value(
        "gitops.flux_events_url",
        &old.gitops.flux_events_url,
        &new.gitops.flux_events_url,
        label,
    );
    d.option(
        "gitops.kubernetes",
        &old.gitops.kubernetes,
        &new.gitops.kubernetes,
        |k| format!("namespace {}", k.namespace),
    );
    d.restart = false;
    d.value("env", &old.env, &new.env, label);
    diff_policy(d, &old.policy, &new.policy);
}

fn diff_policy(d: &mut Diff, old: &Policy, new: &Policy) {
    fields!(d, "policy", old, new, {
        max_step: |m: &Option<Ppm>| m.map_or("none".to_owned(), |m| m.to_string()),
        require_gates: |g: &Vec<(String, Vec<GateName>)>| {
            let envs: Vec<String> = g
                .iter()
                .map(|(env, gates)| format!("{env}: [{}]", gate_names(gates)))
                .collect();
            format!("{{{}}}", envs.join(", "))
        },
        require_approval: |a: &Vec<String>| format!("[{}]", a.join(", ")),
        immutable_candidates: text,
        one_change_per_rollout: text,
    });
}

fn gate_names(gates: &[GateName]) -> String {
    let names: Vec<&str> = gates.iter().map(|g| g.as_str()).collect();
    names.join(", ")
}

fn diff_model(d: &mut Diff, path: &str, old: &Model, new: &Model) {
    fields!(d, path, old, new, { default: text });
    diff_backend(d, &join(path, "stable"), &old.stable, &new.stable);
    let candidate = join(path, "candidate");
    match (&old.candidate, &new.candidate) {
        (Some(o), Some(n)) => diff_backend(d, &candidate, o, n),
        (o, n) => d.option(&candidate, o, n, describe_backend),
    }
    fields!(d, path, old, new, { weight: text, cohort: text });
    let shadow = join(path, "shadow");
    match (&old.shadow, &new.shadow) {
        (Some(o), Some(n)) => fields!(d, &shadow, o, n, {
            sample: text,
            saturated_sample: text,
            max_inflight: text,
            max_body: size,
            buffer: usize_size,
            timeout: dur,
            capture: usize_size,
        }),
        (o, n) => d.option(&shadow, o, n, describe_shadow),
    }
    let affinity = join(path, "affinity");
    d.option(&affinity, &old.affinity, &new.affinity, describe_affinity);
    let rollout = join(path, "rollout");
    match (&old.rollout, &new.rollout) {
        (Some(o), Some(n)) => diff_rollout(d, &rollout, o, n),
        (o, n) => d.option(&rollout, o, n, describe_rollout),
    }
}

fn diff_rollout(d: &mut Diff, path: &str, old: &Rollout, new: &Rollout) {
    d.option(
        &join(path, "synthetic"),
        &old.synthetic,
        &new.synthetic,
        |s| format!("suite {}, every {:?}", s.suite.display(), s.every),
    );
    d.option(&join(path, "shadow"), &old.shadow, &new.shadow, |s| {
        format!(
            "sample {}, for {:?}, min_pairs {}",
            s.sample, s.duration, s.min_pairs
        )
    });
    d.value(&join(path, "steps"), &old.steps, &new.steps, |s| steps(s));
    diff_gates(d, &join(path, "gates"), &old.gates, &new.gates);
    fields!(d, path, old, new, {
        min_samples: text,
        metric_errors: |m: &MetricErrors| format!("limit {}, then {:?}", m.limit, m.then).to_lowercase(),
        approval: |a: &Approval| format!("{a:?}").to_lowercase(),
        cooldown: dur,
        validate_timeout: dur,
    });
}

fn diff_gates(d: &mut Diff, path: &str, old: &Gates, new: &Gates) {
    let at = |name: &str| join(path, name);
    d.option(&at("error_rate"), &old.error_rate, &new.error_rate, |g| {
        bounds(&[
            ("max", g.max.map(|m| m.to_string())),
            ("max_vs_stable", g.max_vs_stable.map(|m| format!("+{m}"))),
        ])
    });
    let latency = |g: &LatencyGate| {
        bounds(&[
            ("max", g.max.map(|m| dur(&m))),
            (
                "max_ratio_vs_stable",
                g.max_ratio_vs_stable.map(|r| r.to_string()),
            ),
        ])
    };
    d.option(
        &at("latency_p99"),
        &old.latency_p99,
        &new.latency_p99,
        latency,
    );
    d.option(&at("ttft_p95"), &old.ttft_p95, &new.ttft_p95, latency);
    d.option(
        &at("queue_time_p95"),
        &old.queue_time_p95,
        &new.queue_time_p95,
        latency,
    );
    d.option(
        &at("gpu_memory_used"),
        &old.gpu_memory_used,
        &new.gpu_memory_used,
        |g| format!("max {}", g.max),
    );
    d.option(
        &at("correctness"),
        &old.correctness,
        &new.correctness,
        |g| format!("min {}", g.min),
    );
    let promql = at("promql");
    match (&old.promql, &new.promql) {
        (Some(o), Some(n)) => diff_promql(d, &promql, o, n),
        (o, n) => d.option(&promql, o, n, |p| {
            let names: Vec<&str> = p.queries.iter().map(|q| q.name.as_str()).collect();
            format!("{} [{}]", p.url, names.join(", "))
        }),
    }
}

/// Queries by name, like models: reordering them is not a change.
fn diff_promql(d: &mut Diff, path: &str, old: &PromqlGates, new: &PromqlGates) {
    fields!(d, path, old, new, { url: text, timeout: dur });
    let find = |p: &PromqlGates, name: &str| p.queries.iter().find(|q| q.name == name).cloned();
    for q in &old.queries {
        if find(new, &q.name).is_none() {
            d.removed(format!("{path}.queries[{}]", q.name), describe_query(q));
        }
    }
    for q in &new.queries {
        let key = format!("{path}.queries[{}]", q.name);
        d.option(&key, &find(old, &q.name), &Some(q.clone()), describe_query);
    }
}

fn describe_query(q: &PromqlQuery) -> String {
    let range = bounds(&[
        ("min", q.min.map(|m| m.to_string())),
        ("max", q.max.map(|m| m.to_string())),
    ]);
    format!("{}, {range}", q.query)
}

/// `max 1%, max_vs_stable +0.5%` from the bounds that are set.
fn bounds(parts: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = parts
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    set.join(", ")
}

/// `[10%/60s, 30%/60s]`
fn steps(steps: &[Step]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|s| format!("{}/{}", s.weight, dur(&s.duration)))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn describe_rollout(r: &Rollout) -> String {
    let gates: Vec<&str> = GateName::ALL
        .into_iter()
        .filter(|g| r.gates.has(*g))
        .map(GateName::as_str)
        .collect();
    format!(
        "shadow {}, steps {}, gates [{}], approval {}",
        r.shadow
            .as_ref()
            .map_or("off".to_owned(), |s| s.sample.to_string()),
        steps(&r.steps),
        gates.join(", "),
        format!("{:?}", r.approval).to_lowercase()
    )
}

fn diff_backend(d: &mut Diff, path: &str, old: &Backend, new: &Backend) {
    fields!(d, path, old, new, {
        endpoints: |e: &Vec<Endpoint>| endpoints(e),
        engine: text,
        revision: label,
        artifact: label,
        runtime: label,
        gpu_metrics: |e: &Vec<Endpoint>| endpoints(e),
    });
}

fn label(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "none".to_owned())
}

fn path(value: &Option<std::path::PathBuf>) -> String {
    value
        .as_ref()
        .map_or("none".to_owned(), |p| p.display().to_string())
}

fn describe_model(model: &Model) -> String {
    let mut text = format!("stable {}", describe_backend(&model.stable));
    if let Some(candidate) = &model.candidate {
        text.push_str(&format!(
            "; candidate {} at {}",
            describe_backend(candidate),
            model.weight
        ));
    }
    text
}

/// `vllm v2 [http://10.0.0.2:8000]`, then `artifact …` and `runtime …` when named.
fn describe_backend(backend: &Backend) -> String {
    let mut text = backend.engine.to_string();
    if let Some(revision) = &backend.revision {
        text.push_str(&format!(" {revision}"));
    }
    text.push_str(&format!(" {}", endpoints(&backend.endpoints)));
    if let Some(artifact) = &backend.artifact {
        text.push_str(&format!(", artifact {artifact}"));
    }
    if let Some(runtime) = &backend.runtime {
        text.push_str(&format!(", runtime {runtime}"));
    }
    text
}

fn describe_shadow(shadow: &Shadow) -> String {
    format!("sample {}", shadow.sample)
}

fn describe_affinity(affinity: &Affinity) -> String {
    format!("load_factor {}", affinity.load_factor)
}

fn endpoints(endpoints: &[Endpoint]) -> String {
    let urls: Vec<&str> = endpoints.iter().map(|e| e.url.as_str()).collect();
    format!("[{}]", urls.join(", "))
}

fn text<T: fmt::Display>(value: &T) -> String {
    value.to_string()
}

fn size(bytes: &u64) -> String {
    format_size(*bytes)
}

fn usize_size(bytes: &usize) -> String {
    format_size(*bytes as u64)
}

fn dur(duration: &Duration) -> String {
    format!("{duration:?}")
}

// === impl Change ===

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ChangeKind::Added(what) => write!(f, "{}: added ({what})", self.path)?,
            ChangeKind::Removed(what) => write!(f, "{}: removed ({what})", self.path)?,
            ChangeKind::Changed { old, new } => write!(f, "{}: {old} -> {new}", self.path)?,
        }
        if self.restart_required {
            f.write_str(" (restart required)")?;
        }
        Ok(())
    }
}

// === impl Diff ===

impl Diff {
    fn push(&mut self, path: impl Into<String>, kind: ChangeKind) {
        self.changes.push(Change {
            path: path.into(),
            kind,
            restart_required: self.restart,
        });
    }

    fn added(&mut self, path: impl Into<String>, what: String) {
        self.push(path, ChangeKind::Added(what));
    }

    fn removed(&mut self, path: impl Into<String>, what: String) {
        self.push(path, ChangeKind::Removed(what));
    }

    fn value<T: PartialEq>(&mut self, path: &str, old: &T, new: &T, show: impl Fn(&T) -> String) {
        if old != new {
            let (old, new) = (show(old), show(new));
            self.push(path, ChangeKind::Changed { old, new });
        }
    }

    /// An optional part: added, removed, or changed as a whole.
    fn option<T: PartialEq>(
        &mut self,
        path: &str,
        old: &Option<T>,
        new: &Option<T>,
        show: impl Fn(&T) -> String,
    ) {
        match (old, new) {
            (None, Some(n)) => self.added(path, show(n)),
            (Some(o), None) => self.removed(path, show(o)),
            (Some(o), Some(n)) => self.value(path, o, n, show),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests;
