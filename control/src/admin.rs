//! The admin listener: `/metrics`, `/healthz`, `/status`, `POST /reload`, the rollout API and
//! the GitOps endpoints (`/status/models/{model}`, `/gitops/...`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use rollgate_proxy::ProxyHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::operator::{AdminAuth, Audit, CommandRequest, Refused};
use crate::reload::{ReloadTrigger, ReloaderHandle};
use crate::rollout::DriverHandle;
use crate::status::StatusReport;

/// Classic Prometheus text exposition, for scrapers that do not ask for OpenMetrics.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminServer {
    pub registry: Arc<Registry>,
    pub proxy: ProxyHandle,
    pub reloader: ReloaderHandle,
    pub driver: Option<DriverHandle>,
    pub auth: Option<AdminAuth>,
    pub audit: Audit,
    /// Model statuses and the Argo Rollouts / Flagger endpoints.
    pub gitops: crate::gitops::Gitops,
}

/// Largest operator command body read.
const MAX_COMMAND_BODY: usize = 64 * 1024;

/// Serves the admin API until `shutdown` flips to true.
pub async fn serve_admin(
    listener: TcpListener,
    admin: AdminServer,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let admin = Arc::new(admin);
    loop {
        let (stream, _) = tokio::select! {
            res = listener.accept() => res?,
            _ = shutdown.changed() => return Ok(()),
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let res = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = res {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// The listen address actually bound (for logs and tests).
pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

// === impl AdminServer ===

impl AdminServer {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                metrics_response(&self.registry, req.headers().get(hyper::header::ACCEPT))
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/status") => {
                let mut report =
                    StatusReport::build(&self.proxy, &self.reloader, self.driver.as_ref());
                report.kstatus = self.gitops.statuses();
                json(StatusCode::OK, &report)
            }
            (&Method::POST, "/reload") => {
                match self.reloader.reload_now(ReloadTrigger::Admin).await {
                    Some(outcome) => json(StatusCode::OK, &crate::status::outcome_json(&outcome)),
                    None => text(StatusCode::SERVICE_UNAVAILABLE, "reloader not running\n"),
                }
            }
            (&Method::GET, "/rollouts") => {
                let statuses = self
                    .driver
                    .as_ref()
                    .map(DriverHandle::status)
                    .unwrap_or_default();
                json(StatusCode::OK, &statuses)
            }
            (&Method::POST, path) if path.starts_with("/rollouts/") => self.command(req).await,
            (_, path) if path.starts_with("/status/models/") || path.starts_with("/gitops/") => {
                match self.gitops.handle(req).await {
                    Some(resp) => resp,
                    None => text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            (_, "/metrics" | "/healthz" | "/status" | "/reload" | "/rollouts") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `POST /rollouts/{model}/{action}` with `{"reason": "...", "weight": "25%"}`.
    async fn command(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let mut parts = path.trim_start_matches("/rollouts/").splitn(2, '/');
        let (Some(model), Some(action)) = (parts.next(), parts.next()) else {
            return text(
                StatusCode::NOT_FOUND,
                "use POST /rollouts/{model}/{action}\n",
            );
        };
        let Some(driver) = &self.driver else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no rollout driver\n");
        };
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let actor = req
            .headers()
            .get("x-rollgate-actor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match http_body_util::Limited::new(req.into_body(), MAX_COMMAND_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body: {e}\n")),
        };
        let req = CommandRequest {
            authorization: authorization.as_deref(),
            actor: actor.as_deref(),
            model,
            action,
            body: &body,
        };
        let result = crate::operator::execute(driver, self.auth.as_ref(), &self.audit, req).await;
        match result {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => {
                let status = match e {
                    Refused::Unauthorized => StatusCode::UNAUTHORIZED,
                    Refused::BadRequest(_) => StatusCode::BAD_REQUEST,
                    Refused::UnknownModel(_) => StatusCode::NOT_FOUND,
                    Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
                };
                let mut resp = json(status, &serde_json::json!({ "error": e.to_string() }));
                if status == StatusCode::UNAUTHORIZED {
                    resp.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer"),
                    );
                }
                resp
            }
        }
    }
}

/// `/metrics` for a registry: OpenMetrics when the scraper asks for it in `Accept`, else the
/// classic Prometheus text. Shared by the admin listener and the gpu-agent.
pub(crate) fn metrics_response(
    registry: &Registry,
    accept: Option<&HeaderValue>,
) -> Response<Full<Bytes>> {
    let openmetrics = accept.is_some_and(|a| a.as_bytes().windows(11).any(|w| w == b"openmetrics"));
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
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

/// Rewrites OpenMetrics text into the classic Prometheus format: counter families are named
/// with their `_total` suffix in `# HELP`/`# TYPE` (as the samples are), and `# UNIT`/`# EOF`
/// lines are dropped. Samples are already identical in both formats.
pub(crate) fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest.strip_suffix(" counter");
            if let Some(h) = help.take() {
                match counter {
                    Some(name) => {
                        let text = h
                            .strip_prefix("# HELP ")
                            .and_then(|r| r.strip_prefix(name))
                            .unwrap_or("");
                        out.push_str(&format!("# HELP {name}_total{text}\n"));
                    }
                    None => {
                        out.push_str(h);
                        out.push('\n');
                    }
                }
            }
            match counter {
                Some(name) => out.push_str(&format!("# TYPE {name}_total counter\n")),
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
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
            &format!("encoding JSON: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::to_prometheus_text;

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
}
