//! The `gitops:` section: where model statuses are pushed (Flux events, Kubernetes).
//!
//! ```yaml
//! gitops:
//!   flux_events_url: http://notification-controller.flux-system.svc.cluster.local./
//!   kubernetes: { namespace: rollgate }
//! ```

use serde::Deserialize;

use crate::raw::Field;
use crate::validate::Collect;
use crate::Errors;

/// Status publishing targets. Default: none (the HTTP endpoints always work).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gitops {
    /// Flux notification-controller event endpoint (`http://` only: it is an in-cluster
    /// Service). Each phase change is POSTed there as a Flux `Event`.
    pub flux_events_url: Option<String>,
    /// Patch each model's `ModelRollout` `.status` (needs the `k8s` build feature).
    pub kubernetes: Option<Kubernetes>,
}

/// Where the `ModelRollout` resources live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubernetes {
    /// Namespace of the `ModelRollout` objects (one per model, named after the model); also
    /// the namespace Flux events name.
    pub namespace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGitops {
    pub flux_events_url: Field<String>,
    pub kubernetes: Field<RawKubernetes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubernetes {
    pub namespace: Field<String>,
}

// === impl Gitops ===

impl TryFrom<RawGitops> for Gitops {
    type Error = Errors;

    fn try_from(raw: RawGitops) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let flux_events_url = c.take("flux_events_url", raw.flux_events_url);
        if let Some(url) = &flux_events_url {
            if let Err(why) = http_url(url) {
                c.error("flux_events_url", why);
            }
        }
        let kubernetes = c
            .take("kubernetes", raw.kubernetes)
            .and_then(|k| c.convert("kubernetes", k));
        c.finish(Some(Gitops {
            flux_events_url,
            kubernetes,
        }))
    }
}

/// `http://host[:port][/path]` with a host.
fn http_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "`{url}` is not an http:// URL (notification-controller serves plain HTTP in the cluster)"
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

// === impl Kubernetes ===

impl TryFrom<RawKubernetes> for Kubernetes {
    type Error = Errors;

    fn try_from(raw: RawKubernetes) -> Result<Self, Errors> {
        let mut c = Collect::default();
        let namespace = c.required("namespace", raw.namespace);
        if let Some(ns) = &namespace {
            if !dns_label(ns) {
                c.error(
                    "namespace",
                    format!("`{ns}` is not a Kubernetes namespace name (lowercase letters, digits and `-`, at most 63, starting and ending with a letter or digit)"),
                );
            }
        }
        c.finish(namespace.map(|namespace| Kubernetes { namespace }))
    }
}

/// An RFC 1123 label, as namespace names are.
fn dns_label(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|&b| ok(b) || b == b'-')
        && bytes.first().copied().is_some_and(ok)
        && bytes.last().copied().is_some_and(ok)
}

#[cfg(test)]
mod tests {
    fn parse(gitops: &str) -> Result<crate::Config, crate::Errors> {
        crate::parse(&format!(
            "listen: 127.0.0.1:0\ngitops: {gitops}\nmodels:\n  - name: m\n    stable: {{ endpoints: [\"http://10.0.0.1:8000\"], engine: vllm }}\n"
        ))
    }

    #[test]
    fn absent_means_no_sinks() {
        let c = crate::parse("listen: 127.0.0.1:0\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://10.0.0.1:8000\"], engine: vllm }\n")
            .expect("valid");
        assert_eq!(c.gitops, super::Gitops::default());
    }

    #[test]
    fn reads_flux_url_and_namespace() {
        let c = parse(
            "{ flux_events_url: \"http://nc.flux-system/\", kubernetes: { namespace: ml-prod } }",
        )
        .expect("valid");
        assert_eq!(
            c.gitops.flux_events_url.as_deref(),
            Some("http://nc.flux-system/")
        );
        assert_eq!(c.gitops.kubernetes.expect("k8s").namespace, "ml-prod");
    }

    #[test]
    fn every_mistake_is_reported_with_its_path() {
        let errors = parse(
            "{ flux_events_url: \"https://x/\", kubernetes: { namespace: Prod_1 }, extra: 1 }",
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            errors.contains("gitops.flux_events_url: `https://x/` is not an http:// URL"),
            "{errors}"
        );
        assert!(
            errors.contains("gitops.kubernetes.namespace: `Prod_1` is not a Kubernetes namespace"),
            "{errors}"
        );
        assert!(errors.contains("gitops.extra"), "{errors}");
        let errors = parse("{ kubernetes: {} }")
            .expect_err("invalid")
            .to_string();
        assert!(
            errors.contains("gitops.kubernetes.namespace: required key is missing"),
            "{errors}"
        );
    }
}
