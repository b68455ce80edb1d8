//! The agent's HTTP listener: `/metrics`, `/gpus`, `/healthz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::ACCEPT;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::snapshot::GpuSnapshot;
use crate::admin::{json, metrics_response, text};

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
                metrics_response(&self.registry, req.headers().get(ACCEPT))
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
}
