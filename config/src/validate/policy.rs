//! The `policy:` section: rules for changes to the config, checked by `crate::check`.

use super::Collect;
use crate::raw::{RawEnvGates, RawPolicy};
use crate::{Errors, GateName, Policy};

// === impl Policy ===

impl TryFrom<RawPolicy> for Policy {
    type Error = Errors;

    fn try_from(raw: RawPolicy) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let max_step = c.take("max_step", raw.max_step);
        if max_step.is_some_and(|m| m.is_zero()) {
            c.error(
                "max_step",
                "must be greater than 0% (no weight could ever change)",
            );
        }
        let require_gates = c
            .take("require_gates", raw.require_gates)
            .map(|g| env_gates(&mut c, g))
            .unwrap_or_default();
        let mut require_approval = Vec::new();
        for (i, item) in c
            .take("require_approval", raw.require_approval)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let key = format!("require_approval[{i}]");
            if let Some(env) = c.item(&key, item) {
                if env.trim().is_empty() {
                    c.error(&key, "an environment name must not be empty");
                }
                require_approval.push(env);
            }
        }
        let policy = Policy {
            max_step,
            require_gates,
            require_approval,
            immutable_candidates: c
                .take("immutable_candidates", raw.immutable_candidates)
                .unwrap_or(false),
            one_change_per_rollout: c
                .take("one_change_per_rollout", raw.one_change_per_rollout)
                .unwrap_or(false),
        };
        c.finish(Some(policy))
    }
}

fn env_gates(c: &mut Collect, raw: RawEnvGates) -> Vec<(String, Vec<GateName>)> {
    let mut out = Vec::with_capacity(raw.0.len());
    for (env, parsed) in raw.0 {
        let key = format!("require_gates.{env}");
        let Some(items) = c.item(&key, parsed) else {
            continue;
        };
        if items.is_empty() {
            c.error(&key, "list at least one gate, or leave the environment out");
        }
        let mut gates = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            if let Some(gate) = c.item(&format!("{key}[{i}]"), item) {
                gates.push(gate);
            }
        }
        out.push((env, gates));
    }
    out
}
