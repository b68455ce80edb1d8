//! Events for Flux's notification-controller: the `github.com/fluxcd/pkg/apis/event` v1beta1
//! `Event` JSON, POSTed to `gitops.flux_events_url` on every phase change, off the driver's
//! path through the bounded publisher queue.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::status::{condition, object_name};
use super::Change;
use crate::clock::rfc3339;

/// Longest wait for notification-controller before an event counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// A Flux event (v1beta1).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub involved_object: ObjectReference,
    /// `info` or `error`.
    pub severity: &'static str,
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    pub reporting_controller: &'static str,
    pub metadata: BTreeMap<String, String>,
}

/// The Kubernetes object an event is about: the model's `ModelRollout`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub api_version: &'static str,
}

/// Posts events to one URL.
#[derive(Clone, Debug)]
pub(crate) struct FluxPoster {
    url: hyper::Uri,
    namespace: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The event for a change of one model's status.
pub fn event(change: &Change, namespace: &str, now: SystemTime) -> Event {
    let s = &change.status;
    let stalled = condition(s, "Stalled").filter(|c| c.status == "True");
    let error = matches!(s.phase.as_str(), "Rollback" | "Previous")
        || stalled.is_some_and(|c| c.reason == "InvalidConfig");
    let reason = stalled.map_or(s.phase.clone(), |c| c.reason.clone());
    let at = |st: &super::ModelStatus| match st.step {
        Some(i) => format!("{} step {} at {}", st.phase, i + 1, st.weight),
        None => format!("{} at {}", st.phase, st.weight),
    };
    let mut message = format!("model {}: {}", change.model, at(s));
    if let Some(prev) = change.previous.as_ref().map(at).filter(|p| *p != at(s)) {
        message.push_str(&format!(" (was {prev})"));
    }
    if !s.reason.is_empty() {
        message.push_str(&format!(": {}", s.reason));
    }
    if let Some(c) = stalled {
        message.push_str(&format!("; {}: {}", c.reason, c.message));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("revision".to_owned(), s.observed_revision.clone());
    if let Some(c) = &s.candidate {
        metadata.insert("candidate".to_owned(), c.clone());
    }
    Event {
        involved_object: ObjectReference {
            kind: super::KIND,
            namespace: namespace.to_owned(),
            name: object_name(&change.model),
            api_version: super::API_VERSION,
        },
        severity: if error { "error" } else { "info" },
        timestamp: rfc3339(now),
        message,
        reason,
        reporting_controller: "rollgate",
        metadata,
    }
}

// === impl FluxPoster ===

impl FluxPoster {
    pub(crate) fn new(url: &str, namespace: &str) -> Result<FluxPoster, String> {
        let url: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
        Ok(FluxPoster {
            url,
            namespace: namespace.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Posts the event for a change; an error says why it was not accepted.
    pub(crate) async fn post(&self, change: &Change) -> Result<(), String> {
        let event = event(change, &self.namespace, SystemTime::now());
        let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let req = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(POST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {POST_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        // The body only matters for the error message.
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        if status.is_success() {
            return Ok(());
        }
        let text = body.map(|b| {
            String::from_utf8_lossy(&b)
                .chars()
                .take(200)
                .collect::<String>()
        });
        Err(format!("HTTP {status}: {}", text.unwrap_or_default()))
    }
}
