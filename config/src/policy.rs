//! Policy checks for a config change, for CI (`rollgate validate --repo`, `rollgate diff`).
//!
//! Pure: a function of the old config (the parent commit's, when there is one) and the new
//! one. The rules come from both configs' `policy:` sections, the stricter of each, so a change
//! cannot relax the rules it is judged by; environment rules apply when either config's `env`
//! matches, so a change cannot leave `prod` to escape them.

use std::fmt;

use crate::{Approval, Backend, Config, GateName, Model, Policy, Ppm};

/// References that move: a candidate named by one is not reproducible.
const MUTABLE_REFS: [&str; 10] = [
    "latest", "main", "master", "head", "stable", "dev", "develop", "nightly", "edge", "trunk",
];

/// One rule broken by a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The policy key that sets the rule: `max_step`, `require_gates`, `require_approval`,
    /// `immutable_candidates`, `one_change_per_rollout`.
    pub rule: &'static str,
    /// The model whose change breaks it.
    pub model: String,
    /// What is wrong and where, for a person.
    pub message: String,
}

/// What a candidate changes relative to stable: a model rollout, a runtime rollout, both, or
/// neither (a new revision of the same artifact and runtime, or artifact and runtime unnamed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutChange {
    Revision,
    Artifact,
    Runtime,
    ArtifactAndRuntime,
}

/// Which of `artifact` and `runtime` the candidate changes relative to stable. A key named on
/// one backend and not the other counts as changed.
pub fn rollout_change(stable: &Backend, candidate: &Backend) -> RolloutChange {
    let artifact = stable.artifact != candidate.artifact;
    let runtime = stable.runtime != candidate.runtime;
    match (artifact, runtime) {
        (false, false) => RolloutChange::Revision,
        (true, false) => RolloutChange::Artifact,
        (false, true) => RolloutChange::Runtime,
        (true, true) => RolloutChange::ArtifactAndRuntime,
    }
}

/// Every policy violation of changing `old` (None: no previous config) into `new`, model by
/// model in `new`'s order.
pub fn check(old: Option<&Config>, new: &Config) -> Vec<Violation> {
    let policy = stricter(old.map(|o| &o.policy), &new.policy);
    let envs: Vec<&str> = [old.and_then(|o| o.env.as_deref()), new.env.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let mut out = Vec::new();
    for model in &new.models {
        let before = old.and_then(|o| o.model(&model.name));
        let mut v = |rule, message: String| {
            out.push(Violation {
                rule,
                model: model.name.clone(),
                message,
            })
        };
        if let Some(max) = policy.max_step {
            max_step(&mut v, max, before, model);
        }
        let Some(candidate) = &model.candidate else {
            continue;
        };
        for (env, gates) in &policy.require_gates {
            if envs.contains(&env.as_str()) {
                require_gates(&mut v, env, gates, model);
            }
        }
        if let Some(env) = envs
            .iter()
            .find(|e| policy.require_approval.iter().any(|a| a == *e))
        {
            require_approval(&mut v, env, model);
        }
        if policy.immutable_candidates {
            immutable(&mut v, candidate);
        }
        let change = rollout_change(&model.stable, candidate);
        if policy.one_change_per_rollout && change == RolloutChange::ArtifactAndRuntime {
            v(
                "one_change_per_rollout",
                format!(
                    "candidate changes both artifact ({} -> {}) and runtime ({} -> {}); \
                     roll out one, then the other",
                    shown(&model.stable.artifact),
                    shown(&candidate.artifact),
                    shown(&model.stable.runtime),
                    shown(&candidate.runtime),
                ),
            );
        }
    }
    out
}

/// Each rule at its strictest across the two sections.
fn stricter(old: Option<&Policy>, new: &Policy) -> Policy {
    let Some(old) = old else {
        return new.clone();
    };
    let mut p = new.clone();
    p.max_step = match (old.max_step, new.max_step) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    for (env, gates) in &old.require_gates {
        match p.require_gates.iter_mut().find(|(e, _)| e == env) {
            Some((_, have)) => have.extend(
                gates
                    .iter()
                    .filter(|g| !have.contains(g))
                    .collect::<Vec<_>>(),
            ),
            None => p.require_gates.push((env.clone(), gates.clone())),
        }
    }
    for env in &old.require_approval {
        if !p.require_approval.contains(env) {
            p.require_approval.push(env.clone());
        }
    }
    p.immutable_candidates |= old.immutable_candidates;
    p.one_change_per_rollout |= old.one_change_per_rollout;
    p
}

/// Canary steps (the first from 0 %); without a plan, the declared weight from where it was:
/// from 0 % when the candidate is new or another one.
fn max_step(v: &mut impl FnMut(&'static str, String), max: Ppm, old: Option<&Model>, new: &Model) {
    if let Some(rollout) = &new.rollout {
        let mut prev = Ppm::ZERO;
        for (i, step) in rollout.steps.iter().enumerate() {
            if rise(prev, step.weight) > max.get() {
                v(
                    "max_step",
                    format!(
                        "rollout.steps[{i}]: {prev} -> {} rises by {}, above max_step {max}",
                        step.weight,
                        Ppm::new(rise(prev, step.weight)).unwrap_or(Ppm::FULL)
                    ),
                );
            }
            prev = step.weight;
        }
    }
    // Under a rollout plan the driver sets the weight, step by step, and `weight` is not read.
    if new.rollout.is_some() {
        return;
    }
    let from = match old.filter(|o| same_candidate(o.candidate.as_ref(), new.candidate.as_ref())) {
        // The live weight came from the old plan's steps; the config does not say which.
        Some(o) if o.rollout.is_some() => return,
        Some(o) => o.weight,
        None => Ppm::ZERO,
    };
    if rise(from, new.weight) > max.get() {
        v(
            "max_step",
            format!(
                "weight: {from} -> {} rises by {}, above max_step {max}",
                new.weight,
                Ppm::new(rise(from, new.weight)).unwrap_or(Ppm::FULL)
            ),
        );
    }
}

fn rise(from: Ppm, to: Ppm) -> u32 {
    to.get().saturating_sub(from.get())
}

/// The same candidate serves: traffic it already had is not a new step.
fn same_candidate(old: Option<&Backend>, new: Option<&Backend>) -> bool {
    match (old, new) {
        (Some(o), Some(n)) => {
            o.endpoints == n.endpoints
                && o.revision == n.revision
                && o.artifact == n.artifact
                && o.runtime == n.runtime
        }
        _ => false,
    }
}

fn require_gates(
    v: &mut impl FnMut(&'static str, String),
    env: &str,
    gates: &[GateName],
    model: &Model,
) {
    let missing: Vec<&str> = gates
        .iter()
        .filter(|g| !model.rollout.as_ref().is_some_and(|r| r.gates.has(**g)))
        .map(|g| g.as_str())
        .collect();
    if missing.is_empty() {
        return;
    }
    let missing = missing.join(", ");
    let message = match &model.rollout {
        Some(_) => format!("env {env} requires gates {missing} in rollout.gates"),
        None => format!(
            "env {env} requires gates {missing}, and the candidate has no rollout plan; add rollout.gates"
        ),
    };
    v("require_gates", message);
}

fn require_approval(v: &mut impl FnMut(&'static str, String), env: &str, model: &Model) {
    let message = match &model.rollout {
        Some(r) if r.approval == Approval::Manual => return,
        Some(_) => format!("env {env} requires rollout.approval: manual"),
        None => format!(
            "env {env} requires manual approval, and the candidate has no rollout plan to wait in; \
             add a rollout with approval: manual"
        ),
    };
    v("require_approval", message);
}

fn immutable(v: &mut impl FnMut(&'static str, String), candidate: &Backend) {
    let fields = [
        (
            "revision",
            &candidate.revision,
            mutable_label as fn(&str) -> Option<String>,
        ),
        ("artifact", &candidate.artifact, mutable_artifact),
        ("runtime", &candidate.runtime, mutable_runtime),
    ];
    for (key, value, why) in fields {
        if let Some(reason) = value.as_deref().and_then(why) {
            v("immutable_candidates", format!("candidate.{key}: {reason}"));
        }
    }
}

fn is_mutable_name(name: &str) -> bool {
    MUTABLE_REFS.contains(&name.to_ascii_lowercase().as_str())
}

/// A revision label: the whole label, or the reference after its last `@` or `:`.
fn mutable_label(label: &str) -> Option<String> {
    let tail = label.rsplit(['@', ':']).next().unwrap_or(label);
    (is_mutable_name(label) || is_mutable_name(tail))
        .then(|| format!("`{label}` is a mutable reference; name a version or a digest"))
}

/// `hf://org/model@<commit>` (a Hugging Face repo without `@` follows `main`), `s3://…/v3`,
/// `registry/image:tag`: mutable when the reference or the last path segment names a branch.
fn mutable_artifact(artifact: &str) -> Option<String> {
    if let Some((_, reference)) = artifact.rsplit_once('@') {
        return is_mutable_name(reference).then(|| {
            format!("`{artifact}` names the moving reference `{reference}`; pin a commit or digest")
        });
    }
    if artifact.starts_with("hf://") {
        return Some(format!(
            "`{artifact}` has no `@<commit>`, so it follows the default branch; pin a commit"
        ));
    }
    let last = artifact
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(artifact);
    let tag = last.rsplit_once(':').map_or(last, |(_, t)| t);
    (is_mutable_name(last) || is_mutable_name(tag))
        .then(|| format!("`{artifact}` names the moving reference `{tag}`; pin a version"))
}

/// A server image must be pinned by digest: a tag can be pushed again.
fn mutable_runtime(runtime: &str) -> Option<String> {
    let digest = runtime.rsplit_once("@sha256:").map(|(_, d)| d);
    match digest {
        Some(d) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => None,
        Some(_) => Some(format!(
            "`{runtime}` has a malformed sha256 digest (64 hex digits)"
        )),
        None => Some(format!(
            "`{runtime}` is not pinned by digest; write image@sha256:<digest>"
        )),
    }
}

fn shown(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("none")
}

// === impl RolloutChange ===

impl RolloutChange {
    /// `revision`, `artifact`, `runtime` or `artifact+runtime`.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutChange::Revision => "revision",
            RolloutChange::Artifact => "artifact",
            RolloutChange::Runtime => "runtime",
            RolloutChange::ArtifactAndRuntime => "artifact+runtime",
        }
    }
}

impl fmt::Display for RolloutChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Violation ===

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] models[{}]: {}",
            self.rule, self.model, self.message
        )
    }
}

#[cfg(test)]
mod tests;
