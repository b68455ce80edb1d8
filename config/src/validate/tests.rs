use std::net::SocketAddr;
use std::path::PathBuf;

use super::*;
use crate::{Affinity, Backend, Cohort, Endpoint, Engine, GateName, Policy, Ppm, Shadow};

const FULL: &str = r#"
listen: 0.0.0.0:8080
workers: 4
tls: { cert: /etc/rollgate/tls.crt, key: /etc/rollgate/tls.key }
admin: { listen: 127.0.0.1:9191 }
limits:
  max_header_bytes: 32KiB
  max_headers: 50
  max_body: 16MiB
  model_prefix: 8KiB
  header_read_timeout: 5s
upstream:
  connect_timeout: 500ms
  response_timeout: 120s
  idle_timeout: 30s
  pool_idle_timeout: 1m
  pool_max_idle: 0
ejection: { consecutive_failures: 3, base: 1s, max: 30s }
routing: { variant_header: false, allow_override: true, candidate_fallback: false }
drain_timeout: 45s
models:
  - name: chat-small
    default: true
    stable: { endpoints: ["http://10.0.0.1:8000/", "http://10.0.0.3:8000"], engine: vllm, revision: v1 }
    candidate: { endpoints: ["http://10.0.0.2:8000"], engine: vllm, revision: v2 }
    weight: 10%
    cohort: { header: X-User-Id }
    shadow: { sample: 20%, saturated_sample: 0.5%, max_inflight: 8, max_body: 1MiB, buffer: 64KiB, timeout: 10s, capture: 4KiB }
    affinity: { load_factor: 1.5 }
  - name: embed
    stable: { endpoints: ["http://[fd00::1]:9000"], engine: tgi }
    affinity: true
"#;

const MINIMAL: &str = r#"
listen: 0.0.0.0:8080
models:
  - name: chat
    stable: { endpoints: ["http://vllm:8000"] }
"#;

fn endpoint(url: &str) -> Endpoint {
    url.parse().expect("test endpoint")
}

/// Every error as (path, message).
pub(crate) fn errors(yaml: &str) -> Vec<(String, String)> {
    match parse(yaml) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
    }
}

/// The errors are exactly these paths, in order, each message containing its text.
pub(crate) fn assert_errors(yaml: &str, want: &[(&str, &str)]) {
    let got = errors(yaml);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    let want_paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
    assert_eq!(paths, want_paths, "{yaml}\n{got:#?}");
    for ((path, message), (_, text)) in got.iter().zip(want) {
        assert!(message.contains(text), "{path}: {message:?} lacks {text:?}");
    }
}

/// A document with one model given in flow style.
pub(crate) fn one_model(model: &str) -> String {
    format!("listen: 0.0.0.0:8080\nmodels: [{model}]\n")
}

#[test]
fn full_example() {
    let config = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
    assert_eq!(config.workers, 4);
    let tls = config.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, PathBuf::from("/etc/rollgate/tls.crt"));
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 9191))
    );
    let l = &config.limits;
    assert_eq!(
        (
            l.max_header_bytes,
            l.max_headers,
            l.max_body,
            l.model_prefix
        ),
        (32 << 10, 50, 16 << 20, 8 << 10)
    );
    assert_eq!(l.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.upstream.connect_timeout, Duration::from_millis(500));
    assert_eq!(config.upstream.pool_max_idle, 0);
    assert_eq!(config.ejection.consecutive_failures, 3);
    assert!(!config.routing.variant_header && config.routing.allow_override);
    assert!(!config.routing.candidate_fallback);
    assert_eq!(config.drain_timeout, Duration::from_secs(45));

    let chat = config.default_model().expect("default model");
    assert_eq!(chat.name, "chat-small");
    let stable = Backend {
        endpoints: vec![
            endpoint("http://10.0.0.1:8000"),
            endpoint("http://10.0.0.3:8000"),
        ],
        engine: Engine::Vllm,
        revision: Some("v1".to_owned()),
        artifact: None,
        runtime: None,
        gpu_metrics: vec![],
    };
    assert_eq!(chat.stable, stable);
    assert_eq!(
        chat.candidate.as_ref().and_then(|c| c.revision.as_deref()),
        Some("v2")
    );
    assert_eq!(chat.weight, Ppm::new(100_000).expect("ppm"));
    assert_eq!(chat.cohort, Cohort::Header("x-user-id".to_owned()));
    let shadow = Shadow {
        sample: Ppm::new(200_000).expect("ppm"),
        saturated_sample: Ppm::new(5_000).expect("ppm"),
        max_inflight: 8,
        max_body: 1 << 20,
        buffer: 64 << 10,
        timeout: Duration::from_secs(10),
        capture: 4 << 10,
    };
    assert_eq!(chat.shadow, Some(shadow));
    assert_eq!(chat.affinity, Some(Affinity { load_factor: 1.5 }));

    let embed = config.model("embed").expect("embed");
    assert_eq!(
        embed.stable.endpoints,
        vec![endpoint("http://[fd00::1]:9000")]
    );
    assert_eq!(
        (embed.candidate.as_ref(), embed.weight, &embed.cohort),
        (None, Ppm::ZERO, &Cohort::Random)
    );
    assert_eq!(embed.affinity, Some(Affinity::default()));
}

#[test]
fn defaults() {
    let config = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.workers, 0);
    assert_eq!(config.tls, None);
    assert_eq!(config.admin, Admin::default());
    assert_eq!(
        config.admin.listen,
        SocketAddr::from(([127, 0, 0, 1], 9090))
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.upstream, Upstream::default());
    assert_eq!(config.ejection, Ejection::default());
    assert_eq!(config.routing, Routing::default());
    assert!(
        config.routing.candidate_fallback,
        "a down candidate falls back by default"
    );
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.data_plane, crate::DataPlane::Fast);
    let chat = &config.models[0];
    assert!(!chat.default);
    assert_eq!(chat.stable.engine, Engine::Openai);
    assert_eq!(chat.stable.endpoints, vec![endpoint("http://vllm:8000")]);
    assert_eq!(
        (chat.weight, &chat.cohort, &chat.shadow, &chat.affinity),
        (Ppm::ZERO, &Cohort::Random, &None, &None)
    );
    assert_eq!(config.default_model(), None);

    // A shadow section's defaults: 1 % mirrored while a worker is saturated, and the limits.
    let yaml = format!(
        "{MINIMAL}    candidate: {{ endpoints: [\"http://vllm-2:8000\"] }}\n    shadow: {{ sample: 10% }}\n"
    );
    let config = parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let shadow = config.models[0].shadow.as_ref().expect("shadow");
    assert_eq!(
        (shadow.saturated_sample, shadow.max_inflight),
        (Ppm::new(10_000).expect("ppm"), 64)
    );
}

#[test]
fn rules_across_models_and_sections() {
    let m = |name: &str, extra: &str| {
        format!(r#"{{name: {name}, stable: {{endpoints: ["http://h:1"]}}{extra}}}"#)
    };
    let doc =
        |models: &[String]| format!("listen: 0.0.0.0:8080\nmodels: [{}]\n", models.join(", "));
    assert_errors(
        &doc(&[m("a", ""), m("b", ""), m("a", "")]),
        &[(
            "models[2].name",
            "duplicate model name `a` (also models[0])",
        )],
    );
    let two_defaults = doc(&[m("a", ", default: true"), m("b", ", default: true")]);
    assert_errors(
        &two_defaults,
        &[(
            "models[1].default",
            "models[0] (`a`) is already the default",
        )],
    );
    assert_errors(
        "listen: 0.0.0.0:8080\nmodels: []\n",
        &[("models", "at least one model")],
    );
    assert_errors(
        "models: 5\n",
        &[
            ("listen", "required key is missing"),
            ("models", "expected a list"),
        ],
    );
    assert_errors("", &[("listen", "required"), ("models", "required")]);
    assert_errors("- a\n", &[("", "expected a mapping, found a list")]);

    let base = format!("listen: 0.0.0.0:8080\nmodels: [{}]\n", m("a", ""));
    let cases = [
        (
            "admin: {listen: 0.0.0.0:8080}",
            ("admin.listen", "also the data-plane `listen` address"),
        ),
        ("tls: {cert: a.pem}", ("tls.key", "required key is missing")),
        ("tls: {cert: '', key: k}", ("tls.cert", "must not be empty")),
        (
            "ejection: {base: 10s, max: 5s}",
            ("ejection.max", "5s is shorter than base (10s)"),
        ),
        (
            "ejection: {consecutive_failures: 0}",
            ("ejection.consecutive_failures", "greater than 0"),
        ),
        (
            "limits: {max_body: 0}",
            ("limits.max_body", "greater than 0"),
        ),
        (
            "limits: {max_headers: 1.5}",
            ("limits.max_headers", "non-negative whole number"),
        ),
        (
            "upstream: {connect_timeout: 2}",
            (
                "upstream.connect_timeout",
                "`2` has no unit; write 2s or 2ms",
            ),
        ),
        (
            "routing: {variant_header: yes}",
            ("routing.variant_header", "expected true or false"),
        ),
        (
            "drain_timeout: soon",
            ("drain_timeout", "`soon` is not a number"),
        ),
        ("workers: -2", ("workers", "non-negative whole number")),
        (
            "data_plane: nginx",
            ("data_plane", "`nginx` is not fast or hyper"),
        ),
        (
            "admin: {listen: localhost:9090}",
            ("admin.listen", "`localhost:9090` is not an address"),
        ),
        ("limits: {12: x}", ("limits", "keys must be strings")),
    ];
    for (extra, want) in cases {
        assert_errors(&format!("{base}{extra}\n"), &[want]);
    }
}

#[test]
fn every_error_is_reported() {
    let yaml = r#"
listen: 0.0.0.0:8080
workerz: 4
limits: { max_body: 64k, max_headers: -1, header_read_timeout: 10 }
upstream: 5
models:
  - name: chat-small
    default: true
    stable: { endpoints: ["http://10.0.0.1:8000", "http://10.0.0.1:8000/"], engine: vllm }
    weight: 120%
    shadow: { sample: 20%, saturated_sample: 150% }
  - name: chat-small
    default: true
    stable: { endpoints: ["https://10.0.0.3:8000"], engin: vllm }
    candidate: { endpoints: [] }
    weight: 10%
    cohort: { header: x-user-id, api_key: true }
    affinity: { load_factor: 0.5 }
  - 5
  - name: ""
"#;
    assert_errors(
        yaml,
        &[
            (
                "workerz",
                "unknown key `workerz`, expected one of `listen`, `workers`",
            ),
            ("limits.max_headers", "non-negative whole number"),
            ("limits.max_body", "`64k` is ambiguous"),
            ("limits.header_read_timeout", "`10` has no unit"),
            ("upstream", "expected a mapping, found the number 5"),
            ("models[0].stable.endpoints[1]", "duplicate endpoint"),
            ("models[0].weight", "120% is above 100%"),
            ("models[0].shadow.saturated_sample", "150% is above 100%"),
            ("models[0].shadow", "mirrors requests to the candidate"),
            (
                "models[1].stable.engin",
                "unknown key `engin`, expected one of `endpoints`, `engine`, `revision`, `artifact`, `runtime`, `gpu_metrics`",
            ),
            (
                "models[1].stable.endpoints[0]",
                "upstream TLS is not supported yet",
            ),
            ("models[1].candidate.endpoints", "at least one endpoint"),
            ("models[1].cohort", "exactly one"),
            ("models[1].affinity.load_factor", "below 1"),
            (
                "models[1].name",
                "duplicate model name `chat-small` (also models[0])",
            ),
            ("models[1].default", "already the default"),
            ("models[2]", "expected a mapping, found the number 5"),
            ("models[3].name", "must not be empty"),
            ("models[3].stable", "required key is missing"),
        ],
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let cases = [
        ("listen: [\n", "at line 2 column 1"),
        ("a: 1\n---\nb: 2\n", "more than one document"),
    ];
    for (yaml, want) in cases {
        let got = errors(yaml);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "");
        assert!(
            got[0].1.starts_with("invalid YAML: ") && got[0].1.contains(want),
            "{:?} lacks {want:?}",
            got[0].1
        );
    }
}

#[test]
fn anchors_and_merge_keys() {
    let yaml = r#"
listen: 0.0.0.0:8080
models:
  - &base
    name: a
    stable: { endpoints: ["http://h:1"], engine: vllm }
  - <<: *base
    name: b
"#;
    let config = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.models[1].name, "b");
    assert_eq!(config.models[1].stable.engine, Engine::Vllm);
}

#[test]
fn errors_display_one_per_line() {
    let err = parse(&one_model(
        "{name: m, stable: {endpoints: [\"http://h:1\"]}, weight: 120%, shadw: {}}",
    ))
    .expect_err("invalid");
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), err.len());
    assert!(
        lines.contains(&"models[0].weight: 120% is above 100%"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("models[0].shadw: unknown key `shadw`")),
        "{text}"
    );
}

#[test]
fn policy_env_artifact_and_runtime() {
    let yaml = r#"
listen: 0.0.0.0:8080
env: prod
policy:
  max_step: 25%
  require_gates: { prod: [error_rate, latency_p99], staging: [error_rate] }
  require_approval: [prod]
  immutable_candidates: true
  one_change_per_rollout: true
models:
  - name: chat
    stable:    { endpoints: ["http://vllm:8000"], artifact: "hf://org/m@abc123", runtime: "vllm/vllm-openai@sha256:00" }
    candidate: { endpoints: ["http://vllm:8001"], artifact: "hf://org/m@def456" }
"#;
    let config = parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.env.as_deref(), Some("prod"));
    let p = &config.policy;
    assert_eq!(p.max_step, Ppm::new(250_000));
    assert_eq!(
        p.require_gates,
        vec![
            (
                "prod".to_owned(),
                vec![GateName::ErrorRate, GateName::LatencyP99]
            ),
            ("staging".to_owned(), vec![GateName::ErrorRate]),
        ]
    );
    assert_eq!(p.require_approval, vec!["prod".to_owned()]);
    assert!(p.immutable_candidates && p.one_change_per_rollout);
    let chat = &config.models[0];
    assert_eq!(chat.stable.artifact.as_deref(), Some("hf://org/m@abc123"));
    assert_eq!(
        chat.stable.runtime.as_deref(),
        Some("vllm/vllm-openai@sha256:00")
    );
    assert_eq!(
        chat.candidate.as_ref().and_then(|c| c.runtime.as_deref()),
        None
    );
    // Absent: no env, every rule off.
    let minimal = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((minimal.env, minimal.policy), (None, Policy::default()));
}

#[test]
fn policy_errors_name_every_key() {
    let yaml = r#"
listen: 0.0.0.0:8080
env: ""
policy:
  max_step: 0%
  require_gates: { prod: [error_rate, latency_p50], staging: [], dev: oops }
  require_approval: [prod, ""]
  immutable_candidates: yes please
  one_change: true
models:
  - name: chat
    stable: { endpoints: ["http://vllm:8000"], artifact: "", runtime: 3 }
"#;
    assert_errors(
        yaml,
        &[
            ("env", "must not be empty"),
            ("policy.one_change", "unknown key `one_change`"),
            ("policy.max_step", "must be greater than 0%"),
            (
                "policy.require_gates.prod[1]",
                "unknown gate `latency_p50`; expected one of error_rate",
            ),
            ("policy.require_gates.staging", "list at least one gate"),
            ("policy.require_gates.dev", "expected a list"),
            ("policy.require_approval[1]", "must not be empty"),
            ("policy.immutable_candidates", "expected true or false"),
            ("models[0].stable.artifact", "must not be empty"),
            (
                "models[0].stable.runtime",
                "expected a string, found the number 3; quote it",
            ),
        ],
    );
}

#[test]
fn admin_tokens_with_roles() {
    let yaml = format!(
        "{MINIMAL}admin:\n  token_file: /run/admin\n  sync_pause_approvers: 2\n  protect_reads: true\n  tokens:\n    - {{ name: alice, file: /run/alice, roles: [operate, sync] }}\n    - {{ name: ci, file: /run/ci, roles: [read, read] }}\n"
    );
    let admin = parse(&yaml).expect("valid").admin;
    assert_eq!(admin.sync_pause_approvers, 2);
    assert!(admin.protect_reads);
    assert_eq!(
        admin.tokens,
        vec![
            AdminToken {
                name: "alice".into(),
                file: PathBuf::from("/run/alice"),
                roles: vec![Role::Operate, Role::Sync],
            },
            AdminToken {
                name: "ci".into(),
                file: PathBuf::from("/run/ci"),
                roles: vec![Role::Read],
            },
        ]
    );
    let defaults = parse(MINIMAL).expect("valid").admin;
    assert_eq!(defaults.sync_pause_approvers, 1);
    assert!(!defaults.protect_reads, "reads are open unless asked");
}

#[test]
fn access_log_is_a_path_or_standard_output() {
    let config = parse(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.access_log, None, "off unless asked");
    let config = parse(&format!("{MINIMAL}access_log: \"-\"\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.access_log, Some(crate::AccessLog::Stdout));
    let config = parse(&format!(
        "{MINIMAL}access_log: /var/log/rollgate/access.log\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.access_log,
        Some(crate::AccessLog::File(
            "/var/log/rollgate/access.log".into()
        ))
    );
    assert_errors(
        &format!("{MINIMAL}access_log: \"\"\n"),
        &[("access_log", "must not be empty")],
    );
}

#[test]
fn candidate_fallback_statuses_are_read_sorted_and_checked() {
    let yaml = format!("{MINIMAL}routing: {{ candidate_fallback_status: [503, 500, 429, 503] }}\n");
    let config = parse(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.routing.candidate_fallback_status,
        vec![429, 500, 503]
    );

    let yaml =
        format!("{MINIMAL}routing: {{ candidate_fallback_status: [404, 502, 600, -1, x] }}\n");
    assert_errors(
        &yaml,
        &[
            (
                "routing.candidate_fallback_status[0]",
                "404 is not a status to fall back on: 429 or 500–599",
            ),
            (
                "routing.candidate_fallback_status[2]",
                "600 is not a status to fall back on",
            ),
            (
                "routing.candidate_fallback_status[3]",
                "non-negative whole number",
            ),
            (
                "routing.candidate_fallback_status[4]",
                "non-negative whole number",
            ),
        ],
    );
    let yaml = format!(
        "{MINIMAL}routing: {{ candidate_fallback: false, candidate_fallback_status: [503] }}\n"
    );
    assert_errors(
        &yaml,
        &[(
            "routing.candidate_fallback_status",
            "needs candidate_fallback: true",
        )],
    );
}

#[test]
fn admin_token_errors_are_all_reported() {
    let yaml = format!(
        "{MINIMAL}admin:\n  sync_pause_approvers: 3\n  protect_reads: 1\n  tokens:\n    - {{ name: alice, file: /a, roles: [operate, root] }}\n    - {{ name: alice, file: /b, roles: [] }}\n    - {{ name: admin, roles: [sync] }}\n"
    );
    assert_errors(
        &yaml,
        &[
            ("admin.tokens[0].roles[1]", "unknown role `root`"),
            ("admin.tokens[1].name", "duplicate token name `alice`"),
            ("admin.tokens[1].roles", "at least one role"),
            ("admin.tokens[2].file", "required key is missing"),
            ("admin.tokens[2].name", "`admin` is the name"),
            ("admin.sync_pause_approvers", "3 is not 1 or 2"),
            ("admin.protect_reads", "expected true or false"),
        ],
    );
}

const MINIMAL_MODEL: &str = "models: [{name: a, stable: {endpoints: ['http://h:1']}}]\n";

#[test]
fn values_that_cannot_work_are_refused() {
    let cases = [
        (
            "state_dir: ''",
            ("state_dir", "must not be empty; leave it out instead"),
        ),
        (
            "admin: {audit_log: '', token_file: /t}",
            ("admin.audit_log", "must not be empty; leave it out instead"),
        ),
        (
            "admin: {token_file: ''}",
            (
                "admin.token_file",
                "must not be empty; leave it out instead",
            ),
        ),
        (
            "workers: 100000",
            ("workers", "100000 is above 1024; each worker is a thread"),
        ),
        (
            "listen: 0.0.0.0:18555\nadmin: {listen: 127.0.0.1:18555}",
            ("admin.listen", "share port 18555"),
        ),
        (
            "listen: 10.0.0.1:18555\nadmin: {listen: '[::]:18555'}",
            ("admin.listen", "both cannot bind"),
        ),
        (
            "listen: '[::]:18555'\nadmin: {listen: 0.0.0.0:18555}",
            ("admin.listen", "both cannot bind"),
        ),
        // An IPv4-mapped address binds the IPv4 one.
        (
            "listen: 127.0.0.1:18555\nadmin: {listen: '[::ffff:127.0.0.1]:18555'}",
            ("admin.listen", "is also the data-plane `listen` address"),
        ),
        (
            "listen: 0.0.0.0:18555\nadmin: {listen: '[::ffff:127.0.0.1]:18555'}",
            ("admin.listen", "both cannot bind"),
        ),
    ];
    // A mistake elsewhere in `admin` does not hide the clash.
    assert_errors(
        &format!("listen: 0.0.0.0:9090\n{MINIMAL_MODEL}admin: {{sync_pause_approvers: 3}}\n"),
        &[
            ("admin.sync_pause_approvers", "3 is not 1 or 2"),
            ("admin.listen", "share port 9090"),
        ],
    );
    let model = MINIMAL_MODEL;
    for (extra, want) in cases {
        let listen = if extra.starts_with("listen") {
            ""
        } else {
            "listen: 0.0.0.0:8080\n"
        };
        assert_errors(&format!("{listen}{model}{extra}\n"), &[want]);
    }
    // Different ports, different families, or port 0 (picked at bind) can all bind.
    for pair in [
        "listen: 0.0.0.0:18555\nadmin: {listen: 127.0.0.1:18556}",
        "listen: 0.0.0.0:18555\nadmin: {listen: '[::1]:18555'}",
        "listen: 127.0.0.1:18555\nadmin: {listen: 127.0.0.2:18555}",
        "listen: 0.0.0.0:0\nadmin: {listen: 127.0.0.1:0}",
        "listen: 0.0.0.0:8080\nworkers: 1024",
    ] {
        parse(&format!("{model}{pair}\n")).unwrap_or_else(|e| panic!("{pair}: {e}"));
    }
}
