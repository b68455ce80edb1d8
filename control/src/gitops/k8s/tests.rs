//! The status patch against a fake Kubernetes API server on loopback, and the committed CRD.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::gitops::{build, Context};
use crate::rollout::{Phase, RolloutStatus};

/// One request the fake API server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Bytes,
}

/// A fake API server: GET answers a `ModelRollout` with `metadata.generation: 7` (404 for
/// other names), PATCH echoes the object. Every request is recorded.
async fn fake_api() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
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
                        let path = parts.uri.path().to_owned();
                        log.lock().expect("log").push(Seen {
                            method: parts.method.to_string(),
                            path: path.clone(),
                            query: parts.uri.query().unwrap_or("").to_owned(),
                            content_type: parts
                                .headers
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned(),
                            body,
                        });
                        let name = path
                            .trim_end_matches("/status")
                            .rsplit('/')
                            .next()
                            .unwrap_or("")
                            .to_owned();
                        let (status, body) = if name == "m" {
                            (
                                200,
                                serde_json::json!({
                                    "apiVersion": "rollgate.dev/v1alpha1", "kind": "ModelRollout",
                                    "metadata": { "name": "m", "namespace": "ml", "generation": 7, "resourceVersion": "12" },
                                    "spec": { "model": "m" }
                                }),
                            )
                        } else {
                            (
                                404,
                                serde_json::json!({
                                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "message": format!("modelrollouts.rollgate.dev \"{name}\" not found"),
                                    "reason": "NotFound", "code": 404
                                }),
                            )
                        };
                        let mut resp =
                            hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
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
    (url, seen)
}

fn canary_change(model: &str) -> Change {
    let r = RolloutStatus {
        started_revision: None,
        change: None,
        model: model.to_owned(),
        candidate: Some("v2@abc".to_owned()),
        phase: Phase::Canary(1),
        paused: None,
        pinned: None,
        weight: "30%".to_owned(),
        mirror: "0%".to_owned(),
        reason: "gates passed".to_owned(),
        since_unix_ms: 0,
        gates: None,
        transition_gates: None,
        conditions: Vec::new(),
    };
    let cx = Context {
        serving: "0123abcd",
        latest: None,
        has_candidate: true,
        generation: 1,
    };
    let mut status = build(&r, cx);
    let mut clock = crate::gitops::ConditionClock::default();
    clock.stamp(model, &mut status, std::time::SystemTime::UNIX_EPOCH);
    Change {
        model: model.to_owned(),
        status,
        previous: None,
    }
}

fn client(url: &str) -> Client {
    let config = kube::Config::new(url.parse().expect("url"));
    Client::try_from(config).expect("client")
}

#[tokio::test]
async fn status_is_server_side_applied_to_the_status_subresource() {
    let (url, seen) = fake_api().await;
    let api: Api<ModelRollout> = Api::namespaced(client(&url), "ml");
    apply_status(&api, "ml", canary_change("m"))
        .await
        .expect("patched");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        (
            "GET",
            "/apis/rollgate.dev/v1alpha1/namespaces/ml/modelrollouts/m"
        )
    );
    let patch = &seen[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/rollgate.dev/v1alpha1/namespaces/ml/modelrollouts/m/status"
    );
    let mut query: Vec<&str> = patch.query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort_unstable();
    assert_eq!(query, ["fieldManager=rollgate", "force=true"]);
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    let body: serde_json::Value = serde_yaml_ng::from_slice(&patch.body).expect("YAML (JSON) body");
    assert_eq!(body["apiVersion"], "rollgate.dev/v1alpha1");
    assert_eq!(body["kind"], "ModelRollout");
    let status = &body["status"];
    assert_eq!(
        status["observedGeneration"], 7,
        "the object's generation, read first"
    );
    assert_eq!(status["observedRevision"], "0123abcd");
    assert_eq!(
        (status["phase"].as_str(), status["step"].as_u64()),
        (Some("Canary"), Some(1))
    );
    let conds = status["conditions"].as_array().expect("conditions");
    let kinds: Vec<&str> = conds.iter().filter_map(|c| c["type"].as_str()).collect();
    assert_eq!(kinds, ["Ready", "Reconciling", "Stalled"]);
    assert_eq!(conds[1]["status"], "True");
    assert_eq!(conds[1]["reason"], "Canary");
    assert_eq!(conds[1]["lastTransitionTime"], "1970-01-01T00:00:00Z");
}

#[tokio::test]
async fn a_missing_object_is_an_error_that_names_it_and_nothing_is_patched() {
    let (url, seen) = fake_api().await;
    let api: Api<ModelRollout> = Api::namespaced(client(&url), "ml");
    let err = apply_status(&api, "ml", canary_change("other"))
        .await
        .expect_err("missing");
    assert!(
        err.contains("ModelRollout ml/other does not exist"),
        "{err}"
    );
    assert!(seen.lock().expect("log").iter().all(|s| s.method == "GET"));
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let committed = include_str!("../../../../deploy/base/crd.yaml");
    let generated = crd_yaml().expect("yaml");
    assert_eq!(
        committed, generated,
        "run `rollgate crd > deploy/base/crd.yaml`"
    );
    let crd: serde_json::Value = serde_yaml_ng::from_str(&generated).expect("yaml");
    assert_eq!(crd["spec"]["group"], "rollgate.dev");
    assert_eq!(crd["spec"]["names"]["plural"], "modelrollouts");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for key in [
        "observedGeneration",
        "observedRevision",
        "phase",
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
            status[key].is_object(),
            "status.{key} missing from the schema"
        );
    }
    assert_eq!(
        status["gates"]["x-kubernetes-preserve-unknown-fields"],
        true
    );
}
