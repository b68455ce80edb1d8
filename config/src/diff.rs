//! What changed between two configs, for the reload log and for deciding what to rebuild.

use std::fmt;
use std::time::Duration;

use crate::error::join;
use crate::units::format_size;
use crate::{Affinity, Backend, Config, Endpoint, Model, Shadow};

/// One change between two configs, shown as one line:
/// `models[chat-small].weight: 10% -> 30%`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What changed: `listen`, `limits.max_body`, `models[chat-small].candidate.revision`.
    /// Models are named, not numbered, so reordering them is not a change.
    pub path: String,
    pub kind: ChangeKind,
    /// Only a restart applies it (listeners, worker threads, TLS); a reload keeps the old value.
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

fn settings(d: &mut Diff, old: &Config, new: &Config) {
    d.restart = true;
    fields!(d, "", old, new, { listen: text, workers: text });
    d.option("tls", &old.tls, &new.tls, |t| {
        format!("cert {}, key {}", t.cert.display(), t.key.display())
    });
    fields!(d, "admin", old.admin, new.admin, { listen: text });
    d.restart = false;
    fields!(d, "limits", old.limits, new.limits, {
        max_header_bytes: usize_size,
        max_headers: text,
        max_body: size,
        model_prefix: usize_size,
        header_read_timeout: dur,
    });
    fields!(d, "upstream", old.upstream, new.upstream, {
        connect_timeout: dur,
        response_timeout: dur,
        idle_timeout: dur,
        pool_idle_timeout: dur,
        pool_max_idle: text,
    });
    fields!(d, "ejection", old.ejection, new.ejection, {
        consecutive_failures: text,
        base: dur,
        max: dur,
    });
    fields!(d, "routing", old.routing, new.routing, {
        variant_header: text,
        allow_override: text,
    });
    fields!(d, "", old, new, { data_plane: text, drain_timeout: dur });
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
    d.option(&rollout, &old.rollout, &new.rollout, describe_rollout);
}

fn describe_rollout(r: &crate::Rollout) -> String {
    let steps: Vec<String> = r.steps.iter().map(|s| s.weight.to_string()).collect();
    format!(
        "shadow {}, steps [{}], approval {:?}",
        r.shadow
            .as_ref()
            .map_or("off".to_owned(), |s| s.sample.to_string()),
        steps.join(", "),
        r.approval
    )
}

fn diff_backend(d: &mut Diff, path: &str, old: &Backend, new: &Backend) {
    fields!(d, path, old, new, {
        endpoints: |e: &Vec<Endpoint>| endpoints(e),
        engine: text,
        revision: |r: &Option<String>| r.clone().unwrap_or_else(|| "none".to_owned()),
    });
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

/// `vllm v2 [http://10.0.0.2:8000]`
fn describe_backend(backend: &Backend) -> String {
    match &backend.revision {
        Some(revision) => format!(
            "{} {revision} {}",
            backend.engine,
            endpoints(&backend.endpoints)
        ),
        None => format!("{} {}", backend.engine, endpoints(&backend.endpoints)),
    }
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
