//! The agent's HTTP listener: `/metrics`, `/gpus`, `/healthz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::snapshot::GpuSnapshot;
use crate::admin::to_prometheus_text;

/// Classic Prometheus text exposition, for scrapers that do not ask for OpenMetrics.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Pause after a failed accept, so a full fd table does not spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the endpoints read: an immutable registry of atomics, and the latest snapshot.
#[derive(Debug)]
pub(crate) struct AgentHttp {
    pub(crate) registry: Registry,
    pub(crate) snapshot: watch::Receiver<Arc<GpuSnapshot>>,
}

/// Accepts forever; the caller stops it by dropping this future. Accept errors (out of file
/// descriptors, an aborted handshake) are waited out, never fatal: the agent keeps serving.
pub(crate) async fn accept_loop(listener: TcpListener, http: Arc<AgentHttp>) -> Infallible {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "gpu-agent accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let http = http.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let http = http.clone();
                async move { Ok::<_, Infallible>(http.handle(&req)) }
            });
            let res = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = res {
                tracing::debug!(error = %e, "gpu-agent connection ended with an error");
            }
        });
    }
}

// === impl AgentHttp ===

impl AgentHttp {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                let om = req
                    .headers()
                    .get(ACCEPT)
                    .is_some_and(|a| a.as_bytes().windows(11).any(|w| w == b"openmetrics"));
                self.metrics(om)
            }
            (&Method::GET, "/gpus") => {
                // Clone the Arc so the watch lock is not held while encoding.
                let snap = self.snapshot.borrow().clone();
                json(StatusCode::OK, &*snap)
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (_, "/metrics" | "/gpus" | "/healthz") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn metrics(&self, openmetrics: bool) -> Response<Full<Bytes>> {
        let mut out = String::with_capacity(4 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("encoding metrics: {e}\n"),
            );
        }
        let (body, ctype) = if openmetrics {
            (out, OPENMETRICS_CONTENT_TYPE)
        } else {
            (to_prometheus_text(&out), PROMETHEUS_CONTENT_TYPE)
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        resp
    }
}

/// Rewrites OpenMetrics text into the classic Prometheus format: counter families are named
/// with their `_total` suffix in `# HELP`/`# TYPE` (as the samples are), and `# UNIT`/`# EOF`
/// lines are dropped. Samples are already identical in both formats.
///
fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("encoding gpus: {e}\n"),
        ),
    }
}
