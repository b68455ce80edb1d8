//! Acceptance 4 (status back to GitOps): the Argo Rollouts `web` metric and the Flagger
//! webhooks answer as both projects document, replayed with their documented payloads, in each
//! state of a real rollout (Canary, paused, Full, invalid config, rolled back); the kstatus object
//! and the Flux events follow.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rollgate_loadtest::sim::Sim;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::support::*;

/// Flagger's documented webhook payload, verbatim from
/// https://github.com/fluxcd/flagger/blob/main/docs/gitbook/usage/webhooks.md
/// ("Webhook payload (HTTP POST)"). `name` is the canary, here also the model.
const FLAGGER_PAYLOAD: &str = r#"{
    "name": "podinfo",
    "namespace": "test",
    "phase": "Progressing", 
    "metadata": {
        "test":  "all",
        "token":  "16688eb5e9f289f1991c"
    }
}"#;

/// Flagger's documented event payload, verbatim from the same page ("Event payload").
const FLAGGER_EVENT: &str = r#"{
  "name": "string (canary name)",
  "namespace": "string (canary namespace)",
  "phase": "string (canary phase)",
  "metadata": {
    "eventMessage": "string (canary event message)",
    "eventType": "string (canary event type)",
    "timestamp": "string (unix timestamp ms)"
  }
}"#;

/// The payload with Flagger's `checksum` and the model named in `metadata.model` (the canary
/// is named differently from the model).
const FLAGGER_WITH_MODEL: &str = r#"{"name":"podinfo-canary","namespace":"test","phase":"Progressing","checksum":"6d9bc8f2c7","metadata":{"model":"podinfo"}}"#;

/// The POST body of the Argo Rollouts docs' "Optional web methods" example, verbatim from
/// https://github.com/argoproj/argo-rollouts/blob/master/docs/analysis/web.md
const ARGO_POST_BODY: &str = "{\"key\": \"string value\"}";

const TOKEN: &str = "gitops-operator-token";
const HOOKS: [&str; 8] = [
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "rollback",
    "event",
];
const DEADLINE: Duration = Duration::from_secs(30);

fn gitops_config(
    stable: &Sim,
    candidate: &Sim,
    revision: &str,
    dir: &std::path::Path,
    flux: &str,
) -> String {
    format!(
        "listen: 127.0.0.1:0\nworkers: 1\nadmin: {{ listen: 127.0.0.1:0, token_file: {:?} }}\n\
         gitops: {{ flux_events_url: \"{flux}\", kubernetes: null }}\n\
         models:\n  - name: podinfo\n    stable: {{ endpoints: [\"{}\"], engine: vllm }}\n    \
         candidate: {{ endpoints: [\"{}\"], engine: vllm, revision: {revision} }}\n    \
         rollout: {{ steps: [{{ weight: 10%, for: 60s }}], gates: {{ error_rate: {{ max: 1% }} }}, min_samples: 1000 }}\n",
        dir.join("token"),
        stable.url(),
        candidate.url()
    )
}

/// A Flux notification-controller stand-in on loopback: every event body, parsed.
async fn flux_receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, rx)
}

async fn kstatus(gw: &Gateway) -> Value {
    let r = get(&client(), &gw.admin_url("/status/models/podinfo")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn until(gw: &Gateway, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = kstatus(gw).await;
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}; now {s:#}; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cond<'a>(s: &'a Value, kind: &str) -> &'a Value {
    s["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// `(status, reason)` of a condition.
fn cs(s: &Value, kind: &str) -> (String, String) {
    let c = cond(s, kind);
    (
        c["status"].as_str().unwrap_or("missing").to_owned(),
        c["reason"].as_str().unwrap_or("").to_owned(),
    )
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

/// The Argo Rollouts measurement: GET as in the docs' first example (query string and an
/// Authorization header) and POST with the documented body; both must answer 200 with the
/// same `{$.verdict}`.
async fn argo(gw: &Gateway) -> String {
    let url = gw.admin_url("/gitops/argo-rollouts/podinfo?service=podinfo");
    let req = hyper::Request::get(&url)
        .header("authorization", "Bearer api-token")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let got: Value = serde_json::from_slice(&body).expect("json");
    let post = send(&client(), &url, &[], ARGO_POST_BODY).await;
    assert_eq!(post.status, 200, "{}", post.text());
    assert_eq!(post.json()["verdict"], got["verdict"]);
    for key in ["phase", "revision", "reason"] {
        assert!(got[key].is_string(), "{key} missing: {got:#}");
    }
    got["verdict"].as_str().expect("verdict").to_owned()
}

/// Status code of every hook, replaying the documented payload (and the event payload for
/// `event`), in [`HOOKS`] order.
async fn flagger(gw: &Gateway) -> Vec<u16> {
    let mut codes = Vec::new();
    for hook in HOOKS {
        let body = if hook == "event" {
            FLAGGER_EVENT
        } else {
            FLAGGER_PAYLOAD
        };
        let r = send(
            &client(),
            &gw.admin_url(&format!("/gitops/flagger/{hook}")),
            &[],
            body,
        )
        .await;
        let with_model = send(
            &client(),
            &gw.admin_url(&format!("/gitops/flagger/{hook}")),
            &[],
            FLAGGER_WITH_MODEL,
        )
        .await;
        assert_eq!(
            r.status, with_model.status,
            "{hook}: metadata.model names the same model"
        );
        codes.push(r.status);
    }
    codes
}

async fn command(gw: &Gateway, action: &str) {
    let url = gw.admin_url(&format!("/rollouts/podinfo/{action}"));
    let bearer = format!("Bearer {TOKEN}");
    let r = send(
        &client(),
        &url,
        &[("authorization", &bearer)],
        r#"{"reason":"checking p99"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{action}: {}", r.text());
}

/// Reads Flux events (bounded) until one with `reason` arrives, checking each; records reasons.
async fn flux_until(
    events: &mut mpsc::UnboundedReceiver<Value>,
    reasons: &mut Vec<String>,
    want: &str,
) {
    let deadline = Instant::now() + DEADLINE;
    while !reasons.iter().any(|r| r == want) {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {want} Flux event in time; got {reasons:?}"))
            .expect("event");
        assert_eq!(e["involvedObject"]["kind"], "ModelRollout", "{e:#}");
        assert_eq!(e["involvedObject"]["name"], "podinfo");
        assert_eq!(e["involvedObject"]["namespace"], "default");
        assert_eq!(e["involvedObject"]["apiVersion"], "rollgate.dev/v1alpha1");
        assert_eq!(e["reportingController"], "rollgate");
        assert!(e["metadata"]["revision"].is_string(), "{e:#}");
        let reason = e["reason"].as_str().expect("reason").to_owned();
        let error = ["RolledBack", "InvalidConfig"].contains(&reason.as_str());
        assert_eq!(e["severity"], if error { "error" } else { "info" }, "{e:#}");
        reasons.push(reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_and_flagger_contracts_hold_in_every_state_and_flux_hears_each_change() {
    let stable = start_sim("stable", "podinfo", |_| {}).await;
    let candidate = start_sim("candidate", "podinfo", |_| {}).await;
    let (flux, mut events) = flux_receiver().await;
    let dir = temp_dir("gitops");
    std::fs::write(dir.join("token"), TOKEN).expect("token");
    let gw = Gateway::start(&gitops_config(&stable, &candidate, "v2", &dir, &flux));
    let mut reasons = Vec::new();

    // Canary: hold; gates that Flagger retries stay open except promotion.
    let canary = until(&gw, "Canary", |s| s["phase"] == "Canary").await;
    assert_eq!(canary["step"], 0);
    assert_eq!(cs(&canary, "Reconciling"), pair("True", "Canary"));
    assert_eq!(cs(&canary, "Ready"), pair("False", "Canary"));
    assert_eq!(cs(&canary, "Stalled"), pair("False", "Healthy"));
    assert_eq!(argo(&gw).await, "hold");
    assert_eq!(flagger(&gw).await, [200, 200, 200, 200, 412, 200, 412, 202]);

    // Paused: still hold; confirm gates close, checks that count toward Flagger's rollback
    // threshold do not fail.
    command(&gw, "pause").await;
    let paused = until(&gw, "paused", |s| cs(s, "Stalled").1 == "Paused").await;
    assert_eq!(cs(&paused, "Reconciling"), pair("False", "Held"));
    assert!(cond(&paused, "Stalled")["message"]
        .as_str()
        .unwrap_or("")
        .contains("checking p99"));
    assert_eq!(
        cond(&paused, "Ready")["lastTransitionTime"],
        cond(&canary, "Ready")["lastTransitionTime"],
        "Ready did not flip, so its transition time stays"
    );
    assert_eq!(argo(&gw).await, "hold");
    assert_eq!(flagger(&gw).await, [412, 200, 200, 412, 412, 200, 412, 202]);

    // Full: promote.
    command(&gw, "resume").await;
    command(&gw, "promote").await;
    let full = until(&gw, "Full", |s| s["phase"] == "Full").await;
    assert_eq!(cs(&full, "Ready"), pair("True", "Full"));
    assert_eq!(full["weight"], "100%");
    assert_eq!(argo(&gw).await, "promote");
    assert_eq!(flagger(&gw).await, [200, 200, 200, 200, 200, 200, 412, 202]);

    // An invalid config: the last good keeps serving, Stalled names the revision and every
    // error, the verdict holds.
    let serving = full["observedRevision"]
        .as_str()
        .expect("revision")
        .to_owned();
    let good = gitops_config(&stable, &candidate, "v3", &dir, &flux);
    let bad = good
        .replace("workers: 1", "workers: 1\nbogus_key: 1")
        .replace("weight: 10%", "weight: 120%");
    gw.write_config(&bad);
    let outcome = gw.reload().await;
    assert_eq!(outcome["result"], "invalid", "{outcome}");
    let stalled = until(&gw, "InvalidConfig", |s| {
        cs(s, "Stalled").1 == "InvalidConfig"
    })
    .await;
    let message = cond(&stalled, "Stalled")["message"]
        .as_str()
        .expect("message")
        .to_owned();
    let bad_revision = outcome["revision"].as_str().expect("revision");
    assert!(message.contains(bad_revision), "{message}");
    for error in outcome["errors"].as_array().expect("errors") {
        assert!(
            message.contains(error.as_str().expect("error")),
            "{error} not in {message}"
        );
    }
    assert!(
        outcome["errors"].as_array().expect("errors").len() >= 2,
        "{outcome}"
    );
    assert_eq!(stalled["observedRevision"], serving.as_str());
    assert_eq!(argo(&gw).await, "hold");
    let whole = gw.status().await;
    assert_eq!(whole["kstatus"]["podinfo"]["phase"], "Full", "{whole:#}");
    assert!(
        whole["rollouts"].is_array() && whole["models"].is_array(),
        "existing keys stay"
    );

    // Flux hears of it (the publisher looks at least once a second).
    flux_until(&mut events, &mut reasons, "InvalidConfig").await;

    // A new candidate, aborted: rollback; Flagger's inverted rollback hook says "now".
    let outcome = gw.apply_config(&good).await;
    assert_eq!(outcome["result"], "success", "{outcome}");
    until(&gw, "Canary of v3", |s| {
        s["phase"] == "Canary"
            && s["candidate"]
                .as_str()
                .is_some_and(|c| c.starts_with("v3@"))
    })
    .await;
    command(&gw, "abort").await;
    let rolled = until(&gw, "rolled back", |s| s["phase"] == "Previous").await;
    assert_eq!(cs(&rolled, "Stalled"), pair("True", "RolledBack"));
    assert_eq!(argo(&gw).await, "rollback");
    assert_eq!(flagger(&gw).await, [412, 412, 412, 412, 412, 200, 200, 202]);

    // Every change reached Flux, as Flux events about the ModelRollout.
    flux_until(&mut events, &mut reasons, "RolledBack").await;
    for want in ["Canary", "Paused", "Full", "InvalidConfig", "RolledBack"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
    let metrics = gw.metrics().await;
    let sent = metric(
        &metrics,
        "rollgate_gitops_events_total{sink=\"flux\",result=\"sent\"}",
    );
    assert!(
        sent.is_some_and(|n| n >= reasons.len() as f64),
        "{sent:?} for {reasons:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_hooks_and_bad_payloads_are_clear_errors() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let gw = Gateway::start(&config(&stable, None, "", ""));
    let c = client();
    let s = get(&c, &gw.admin_url("/status/models/m")).await;
    assert_eq!(s.status, 200);
    let s = s.json();
    assert_eq!(s["phase"], "Idle");
    assert_eq!(cs(&s, "Ready"), pair("True", "Stable"));
    assert_eq!(s["observedGeneration"], 1);

    // A candidate without a rollout plan: Idle at the configured split.
    let cand = start_sim("candidate", "m", |_| {}).await;
    let reload = gw
        .apply_config(&config(&stable, Some(&cand), "    weight: 20%\n", ""))
        .await;
    assert_eq!(reload["result"], "success", "{reload}");
    let s = get(&c, &gw.admin_url("/status/models/m")).await.json();
    assert_eq!(
        (s["phase"].as_str(), s["weight"].as_str()),
        (Some("Idle"), Some("20%")),
        "{s:#}"
    );
    assert_eq!(cs(&s, "Ready"), pair("True", "Idle"));
    assert_eq!(s["observedGeneration"], 2, "one applied reload");

    let r = get(&c, &gw.admin_url("/gitops/argo-rollouts/nope")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = get(&c, &gw.admin_url("/status/models/nope")).await;
    assert_eq!(r.status, 404);
    let r = get(&c, &gw.admin_url("/gitops/argo-rollouts/m")).await;
    assert_eq!(
        (r.status, r.json()["verdict"].as_str()),
        (200, Some("hold")),
        "Idle: hold"
    );

    // Flagger's payload names canary `podinfo`; no such model here.
    let r = send(
        &c,
        &gw.admin_url("/gitops/flagger/confirm-rollout"),
        &[],
        FLAGGER_PAYLOAD,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send(
        &c,
        &gw.admin_url("/gitops/flagger/event"),
        &[],
        FLAGGER_PAYLOAD,
    )
    .await;
    assert_eq!(r.status, 202, "events are always accepted");
    let r = send(
        &c,
        &gw.admin_url("/gitops/flagger/confirm"),
        &[],
        FLAGGER_PAYLOAD,
    )
    .await;
    assert_eq!(r.status, 404);
    let msg = r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(
        msg.contains("confirm-traffic-increase"),
        "lists the known hooks: {msg}"
    );
    for bad in ["{not json", r#"{"namespace":"test"}"#] {
        let r = send(&c, &gw.admin_url("/gitops/flagger/rollout"), &[], bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["code"], "invalid_payload");
    }
    let r = get(&c, &gw.admin_url("/gitops/flagger/rollout")).await;
    assert_eq!(r.status, 405);
}

/// With `gitops.kubernetes` set, a build without the `k8s` feature (or one with no cluster to
/// talk to) refuses to start and says why, instead of silently not publishing.
#[tokio::test]
async fn kubernetes_publishing_that_cannot_work_refuses_to_start() {
    let stable = start_sim("stable", "m", |_| {}).await;
    let dir = temp_dir("gitops-k8s");
    let path = dir.join("rollgate.yaml");
    std::fs::write(
        &path,
        config(
            &stable,
            None,
            "",
            "gitops: { kubernetes: { namespace: ml } }\n",
        ),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env("HOME", &dir)
        .output()
        .expect("run");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("gitops.kubernetes"), "{stderr}");
    // Without the feature the refusal says both ways out.
    if !cfg!(feature = "k8s") {
        assert!(
            stderr.contains("remove the `gitops.kubernetes` key")
                && stderr.contains("--features k8s"),
            "{stderr}"
        );
    }
}

/// The whole chain with the `k8s` build: rollout driver → publisher → kube client → a fake
/// Kubernetes API server on loopback, found through `KUBECONFIG`.
#[cfg(feature = "k8s")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_phase_reaches_the_fake_api_server_as_a_status_apply() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    /// `(path, query, content type, body)` of each PATCH.
    type Patches = Arc<Mutex<Vec<(String, String, String, Value)>>>;
    let patches: Patches = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    let log = patches.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        if parts.method == hyper::Method::PATCH {
                            let ctype = parts
                                .headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            log.lock().expect("log").push((
                                parts.uri.path().to_owned(),
                                parts.uri.query().unwrap_or("").to_owned(),
                                ctype,
                                body,
                            ));
                        }
                        let object = serde_json::json!({
                            "apiVersion": "rollgate.dev/v1alpha1", "kind": "ModelRollout",
                            "metadata": { "name": "m", "namespace": "ml", "generation": 7 },
                            "spec": { "model": "m" }
                        });
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from(object.to_string())));
                        resp.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let stable = start_sim("stable", "m", |_| {}).await;
    let candidate = start_sim("candidate", "m", |_| {}).await;
    let dir = temp_dir("gitops-kube");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{ name: fake, cluster: {{ server: \"{api}\" }} }}]\n\
         users: [{{ name: u, user: {{}} }}]\ncontexts: [{{ name: c, context: {{ cluster: fake, user: u }} }}]\ncurrent-context: c\n"
    )).expect("kubeconfig");
    let plan = "    rollout: { steps: [{ weight: 10%, for: 60s }], gates: { error_rate: { max: 1% } }, min_samples: 1000 }\n";
    let path = dir.join("rollgate.yaml");
    std::fs::write(
        &path,
        config(
            &stable,
            Some(&candidate),
            plan,
            "gitops: { kubernetes: { namespace: ml } }\n",
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollgate"))
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready line");
    assert!(ready.starts_with("rollgate ready"), "{ready:?}");

    let deadline = Instant::now() + DEADLINE;
    let canary = loop {
        let found = patches
            .lock()
            .expect("log")
            .iter()
            .find(|p| p.3["status"]["phase"] == "Canary")
            .cloned();
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no Canary status patch; got {:?}",
            patches.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (path, query, ctype, body) = canary;
    assert_eq!(
        path,
        "/apis/rollgate.dev/v1alpha1/namespaces/ml/modelrollouts/m/status"
    );
    let mut query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort_unstable();
    assert_eq!(query, ["fieldManager=rollgate", "force=true"]);
    assert_eq!(ctype, "application/apply-patch+yaml");
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 7);
    assert!(
        status["observedRevision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body:#}"
    );
    assert_eq!(cs(status, "Reconciling"), pair("True", "Canary"));
}
