//! The admin listener over loopback: who may call what with `admin.protect_reads` on and off,
//! and `GET /status?model=` answering what the full report has for that model.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use hyper::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use hyper_util::client::legacy::Client;
use serde_json::Value;

use super::*;
use crate::breakglass::OperatorNotes;
use crate::reload::{ConfigSource, Reloader};
use crate::rollout::{Driver, Health, ModelSignals, SignalSource, StateStore, SyntheticState};

mod sync;

/// The `admin` token (every role), a `read`-only one and an `operate`-only one.
const ADMIN: &str = "admin-secret";
const CI: &str = "ci-secret";
const OPS: &str = "ops-secret";

/// Three models: two static splits (one named with `/`, `:` and a space) and a stable alone.
const YAML: &str = "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nmodels:\n  \
    - name: a\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    \
    candidate: { endpoints: [\"http://127.0.0.1:2\"], revision: v2 }\n    weight: 10%\n  \
    - name: org/b:tag 2\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n    \
    candidate: { endpoints: [\"http://127.0.0.1:2\"], revision: v2 }\n    weight: 20%\n  \
    - name: c\n    stable: { endpoints: [\"http://127.0.0.1:1\"] }\n";

/// A candidate whose health is never known: nothing moves but what operators do.
struct Quiet;

/// A running admin listener over a data plane serving [`YAML`], with a driver and a reloader.
struct Fixture {
    base: String,
    dir: PathBuf,
    stop: watch::Sender<bool>,
}

/// One answer: status, `WWW-Authenticate`, body.
struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: String,
}

// === impl Quiet ===

impl SignalSource for Quiet {
    fn read<'a>(
        &'a self,
        _: &'a rollgate_config::Model,
    ) -> Pin<Box<dyn Future<Output = ModelSignals> + Send + 'a>> {
        Box::pin(std::future::ready(ModelSignals {
            health: Health::Unknown,
            promql: Vec::new(),
            queue_time: Ok(None),
            gpu_memory: Ok(None),
        }))
    }
}

// === impl Fixture ===

impl Fixture {
    /// Serves on `127.0.0.1:0` once the driver has published its first statuses.
    async fn start(tag: &str, protect_reads: bool, auth: Option<AdminAuth>) -> Fixture {
        Fixture::start_with(tag, protect_reads, auth, 1).await
    }

    /// [`Fixture::start`] with `admin.sync_pause_approvers`; the audit log is `audit.log` in
    /// [`Fixture::dir`].
    async fn start_with(
        tag: &str,
        protect_reads: bool,
        auth: Option<AdminAuth>,
        sync_pause_approvers: u32,
    ) -> Fixture {
        let dir = std::env::temp_dir().join(format!("rollgate-admin-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("rollgate.yaml");
        std::fs::write(&path, YAML).expect("write");
        let mut registry = Registry::default();
        let config = rollgate_config::parse(YAML).expect("config");
        let proxy = ProxyHandle::new(config, "rev-1", &mut registry);
        let (reloader, handle) =
            Reloader::new(ConfigSource::File(path), YAML, proxy.clone(), &mut registry);
        tokio::spawn(reloader.run());
        let synthetic: crate::rollout::SyntheticRunner =
            Arc::new(|_| Box::pin(std::future::ready(SyntheticState::None)));
        let (driver, driver_handle) = Driver::new(
            proxy.clone(),
            StateStore::new(None),
            Arc::new(Quiet),
            Arc::new(|_| None),
            synthetic,
            Duration::from_secs(3600),
        );
        let (stop, stopped) = watch::channel(false);
        let stepped = driver_handle.stepped();
        let first_step = stepped.notified();
        tokio::pin!(first_step);
        first_step.as_mut().enable();
        tokio::spawn(driver.run(stopped.clone()));
        first_step.await;
        let server = AdminServer {
            registry: Arc::new(registry),
            gitops: crate::gitops::Gitops::new(
                proxy.clone(),
                handle.clone(),
                Some(driver_handle.clone()),
            ),
            proxy,
            reloader: handle,
            driver: Some(driver_handle),
            auth,
            audit: Audit::open(Some(dir.join("audit.log"))).expect("audit file"),
            notes: OperatorNotes::default(),
            pause_store: crate::breakglass::PauseStore::default(),
            sync_pause_approvers,
            protect_reads,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(serve_admin(listener, server, stopped));
        Fixture { base, dir, stop }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
        let auth = token.map(|t| (AUTHORIZATION.as_str(), format!("Bearer {t}")));
        self.call_with(method, path, auth.as_slice(), body).await
    }

    /// A call with these headers.
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Answer {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = client.request(req).await.expect("answer");
        let status = resp.status();
        let challenge =
            (resp.headers().get(WWW_AUTHENTICATE)).map(|v| v.to_str().expect("ascii").to_owned());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            challenge,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn json(&self, path: &str) -> Value {
        let a = self.call("GET", path, None, "").await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        serde_json::from_str(&a.body).expect("JSON")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Nothing left to stop (the runtime may be gone) is fine, as is a directory gone.
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tokens() -> AdminAuth {
    AdminAuth::new(ADMIN)
        .with("ci", CI, &[Role::Read])
        .with("ops", OPS, &[Role::Operate])
}

/// What shows the gateway's state, and `POST /reload`: behind a `read` token when protected.
const READS: [(&str, &str); 7] = [
    ("GET", "/metrics"),
    ("GET", "/status"),
    ("GET", "/status?model=a"),
    ("GET", "/status/models/a"),
    ("GET", "/rollouts"),
    ("GET", "/gitops/argo-rollouts/a"),
    ("POST", "/reload"),
];

#[tokio::test]
async fn protected_reads_need_a_valid_token_and_every_token_reads() {
    let gw = Fixture::start("protected", true, Some(tokens())).await;
    for (method, path) in READS {
        let near = format!("{CI}x");
        for token in [None, Some("wrong"), Some(near.as_str())] {
            let a = gw.call(method, path, token, "").await;
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(a.challenge.as_deref(), Some("Bearer"), "{method} {path}");
            let body: Value = serde_json::from_str(&a.body).expect("JSON error");
            assert_eq!(
                body,
                serde_json::json!({ "error": "missing or wrong bearer token" })
            );
        }
        // `read`, and the tokens with other roles: every token may read.
        for token in [CI, OPS, ADMIN] {
            let a = gw.call(method, path, Some(token), "").await;
            assert_eq!(a.status, StatusCode::OK, "{method} {path}: {}", a.body);
        }
    }
}

#[tokio::test]
async fn open_endpoints_stay_open_and_operator_roles_still_apply() {
    let gw = Fixture::start("open", true, Some(tokens())).await;
    let a = gw.call("GET", "/healthz", None, "").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok\n"));
    // Not a Git source here: refused for that, not for a missing token.
    let a = gw.call("POST", "/hooks/git", None, "{}").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    // Flagger sends no headers: its webhooks answer without a token (200 passes, 412 holds).
    let payload = r#"{"name":"a","namespace":"models","phase":"Progressing","checksum":"1"}"#;
    let a = gw.call("POST", "/gitops/flagger/confirm-rollout", None, payload);
    let a = a.await;
    assert!(
        matches!(a.status.as_u16(), 200 | 412),
        "{}: {}",
        a.status,
        a.body
    );
    // A `read` token is not an operator's.
    let cases = [
        ("POST", "/rollouts/a/pause", CI, StatusCode::FORBIDDEN),
        ("POST", "/sync/pause", CI, StatusCode::FORBIDDEN),
        ("GET", "/live-config", "wrong", StatusCode::UNAUTHORIZED),
        ("GET", "/live-config", CI, StatusCode::OK),
    ];
    for (method, path, token, want) in cases {
        let a = gw
            .call(method, path, Some(token), r#"{"reason":"r"}"#)
            .await;
        assert_eq!(a.status, want, "{method} {path}: {}", a.body);
    }
}

#[tokio::test]
async fn reads_are_open_by_default_and_closed_without_any_token_when_protected() {
    let open = Fixture::start("default", false, Some(tokens())).await;
    for (method, path) in READS {
        let a = open.call(method, path, None, "").await;
        assert_eq!(a.status, StatusCode::OK, "{method} {path}: {}", a.body);
        // A token that is wrong does not matter where none is asked for.
        let a = open.call(method, path, Some("wrong"), "").await;
        assert_eq!(a.status, StatusCode::OK, "{method} {path}: {}", a.body);
    }
    let none = Fixture::start("no-tokens", true, None).await;
    for (method, path) in READS {
        let a = none.call(method, path, Some(ADMIN), "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let a = none.call("GET", "/healthz", None, "").await;
    assert_eq!(a.status, StatusCode::OK);
}

/// `/status` keeping only `model`'s entries: what `?model=` answered before it was built alone.
fn filtered(mut full: Value, model: &str) -> Value {
    let keep = |v: &mut Value, key: &str, field: &str| {
        let list = v[key].as_array_mut().expect(key);
        list.retain(|e| e[field] == model);
    };
    keep(&mut full, "models", "name");
    keep(&mut full, "rollouts", "model");
    let kstatus = full["kstatus"].as_object_mut().expect("kstatus");
    kstatus.retain(|name, _| name == model);
    full
}

#[tokio::test]
async fn status_of_one_model_is_the_full_status_filtered() {
    let gw = Fixture::start("one", false, Some(tokens())).await;
    // A pin on `a`: its drift is in `a`'s entry and, as a reason, in `sync` for every model.
    let pin = r#"{"reason":"hold","weight":"40%"}"#;
    let a = gw.call("POST", "/rollouts/a/pin", Some(OPS), pin).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let full = gw.json("/status").await;
    assert_eq!(full["models"].as_array().map(Vec::len), Some(3), "{full:#}");
    let reasons = full["sync"]["reasons"].to_string();
    assert!(reasons.contains("model a: weight 40% live"), "{reasons}");
    for (model, query) in [
        ("a", "a"),
        ("org/b:tag 2", "org%2Fb%3Atag%202"),
        ("org/b:tag 2", "org/b:tag%202"),
        ("c", "c"),
    ] {
        let one = gw.json(&format!("/status?model={query}")).await;
        assert_eq!(one, filtered(full.clone(), model), "{model}");
        assert_eq!(one["models"].as_array().map(Vec::len), Some(1), "{one:#}");
        assert_eq!(one["kstatus"].as_object().map(|k| k.len()), Some(1));
    }
    let a = gw.call("GET", "/status?model=nope", None, "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.body.contains("no model `nope` in the serving config"),
        "{}",
        a.body
    );
    let a = gw.call("GET", "/status?model=%zz", None, "").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    // And the full report again: nothing of it was changed by the single builds.
    assert_eq!(gw.json("/status").await, full);
}

#[test]
fn counters_get_their_total_names_and_eof_goes() {
    let om =
        "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
              # HELP b_inflight In flight.\n# TYPE b_inflight gauge\nb_inflight 2\n# EOF\n";
    let text = to_prometheus_text(om);
    assert_eq!(
        text,
        "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
         # HELP b_inflight In flight.\n# TYPE b_inflight gauge\nb_inflight 2\n"
    );
}
