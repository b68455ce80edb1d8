//! The admin listener: `/metrics`, `/healthz`, `/status`, `POST /reload`, `POST /hooks/git`,
//! the rollout commands, the break-glass sync endpoints (`POST /sync/pause`,
//! `POST /sync/resume`, `GET /live-config`) and the GitOps endpoints
//! (`/status/models/{model}`, `/gitops/...`). A model in a path is percent-encoded (see
//! [`path`]). With `admin.protect_reads` the read endpoints need a `read` token too.

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
use rollgate_config::Role;
use rollgate_proxy::ProxyHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::breakglass::{OperatorNotes, PauseStore, SyncRequest};
use crate::operator::{AdminAuth, Audit, CommandRequest, Refused};
use crate::reload::{ReloadTrigger, ReloaderHandle};
use crate::rollout::DriverHandle;
use crate::status::StatusReport;

pub(crate) mod path;

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
    /// Who pinned or paused what, for drift reasons.
    pub notes: OperatorNotes,
    /// Where a sync pause is saved to outlast a restart (`state_dir`).
    pub pause_store: PauseStore,
    /// `admin.sync_pause_approvers` (1 or 2).
    pub sync_pause_approvers: u32,
    /// Model statuses and the Argo Rollouts / Flagger endpoints.
    pub gitops: crate::gitops::Gitops,
    /// `admin.protect_reads`: the read endpoints and `POST /reload` need a `read` token (see
    /// [`is_read`]).
    pub protect_reads: bool,
}

/// Largest operator command body read.
const MAX_COMMAND_BODY: usize = 64 * 1024;
/// Largest webhook body read (GitHub caps push payloads at 25 MB; the body is only hashed).
const MAX_HOOK_BODY: usize = 25 * 1024 * 1024;

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
        if self.protect_reads && is_read(req.uri().path()) {
            if let Err(e) = self.authorize(&req, Role::Read) {
                return refused(&e);
            }
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                metrics_response(&self.registry, req.headers().get(hyper::header::ACCEPT))
            }
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/status") => self.status(req.uri().query()),
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
            (&Method::POST, "/sync/pause" | "/sync/resume") => self.sync(req).await,
            (&Method::GET, "/live-config") => self.live_config(&req),
            (&Method::POST, "/hooks/git") => self.git_hook(req).await,
            (_, path) if path.starts_with("/status/models/") || path.starts_with("/gitops/") => {
                match self.gitops.handle(req).await {
                    Some(resp) => resp,
                    None => text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            (
                _,
                "/metrics" | "/healthz" | "/status" | "/reload" | "/rollouts" | "/sync/pause"
                | "/sync/resume" | "/live-config" | "/hooks/git",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `POST /hooks/git`: a signed (or token-bearing) push notification; 202 and a fetch now.
    async fn git_hook(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let error =
            |status: StatusCode, msg: &str| json(status, &serde_json::json!({ "error": msg }));
        let Some(git) = self.reloader.git() else {
            return error(StatusCode::NOT_FOUND, "the config source is not Git");
        };
        let Some(secret) = git.webhook_secret() else {
            return error(
                StatusCode::FORBIDDEN,
                "webhook disabled: start with --webhook-secret-file",
            );
        };
        let headers = req.headers().clone();
        let body = match read_body(req.into_body(), MAX_HOOK_BODY).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        if let Err(refused) = crate::git::hook::verify(secret, &headers, &body) {
            tracing::warn!(reason = %refused, "git webhook refused");
            let mut resp = error(StatusCode::UNAUTHORIZED, &refused.to_string());
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
        // A full queue means a reload is already pending, and it fetches too.
        let queued = self.reloader.trigger(ReloadTrigger::Webhook);
        tracing::info!(queued, "git webhook accepted; fetching now");
        json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true, "source": git.describe() }),
        )
    }

    /// `POST /rollouts/{model}/{action}` with `{"reason": "...", "weight": "25%"}`; the model
    /// is percent-encoded and may hold `/` (the action is the last segment).
    async fn command(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let full = req.uri().path().to_owned();
        let rest = full.strip_prefix("/rollouts/").unwrap_or_default();
        let path::Command { model, action } = match path::command(rest) {
            Ok(c) => c,
            Err(e) => return json(e.status(), &serde_json::json!({ "error": e.to_string() })),
        };
        let Some(driver) = &self.driver else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "no rollout driver\n");
        };
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let actor = actor_header(&req);
        let body = match read_body(req.into_body(), MAX_COMMAND_BODY).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let req = CommandRequest {
            authorization: authorization.as_deref(),
            actor: actor.as_deref(),
            model: &model,
            action: &action,
            body: &body,
        };
        let result =
            crate::operator::execute(driver, self.auth.as_ref(), &self.audit, &self.notes, req)
                .await;
        match result {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => refused(&e),
        }
    }

    /// `POST /sync/pause` (`{"reason": "..."}`, approver header) and `POST /sync/resume`
    /// (`{"release_pins": true}` optional).
    async fn sync(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let pause = req.uri().path() == "/sync/pause";
        let header = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| v.as_bytes().to_vec())
        };
        let authorization = header(hyper::header::AUTHORIZATION.as_str());
        let approver = header("x-rollgate-approver");
        let actor = actor_header(&req);
        let body = match read_body(req.into_body(), MAX_COMMAND_BODY).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        let req = SyncRequest {
            authorization: authorization.as_deref(),
            approver: approver.as_deref(),
            actor: actor.as_deref(),
            body: &body,
        };
        let auth = self.auth.as_ref();
        let result = if pause {
            crate::breakglass::pause_sync(
                &self.reloader,
                auth,
                self.sync_pause_approvers,
                &self.audit,
                &self.pause_store,
                req,
            )
        } else {
            let driver = self.driver.as_ref();
            crate::breakglass::resume_sync(
                &self.reloader,
                driver,
                auth,
                &self.audit,
                &self.pause_store,
                &self.notes,
                req,
            )
            .await
        };
        match result {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => refused(&e),
        }
    }

    /// `GET /status[?model=NAME]`: every model's entries, or (built alone) one model's.
    fn status(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let (proxy, reloader, driver) = (&self.proxy, &self.reloader, self.driver.as_ref());
        let report = match status_model(query) {
            Ok(None) => {
                let mut report =
                    StatusReport::build_with_notes(proxy, reloader, driver, &self.notes);
                report.kstatus = self.gitops.statuses();
                report
            }
            Ok(Some(model)) => {
                let Some(mut report) =
                    StatusReport::build_one(proxy, reloader, driver, &self.notes, &model)
                else {
                    let error = format!("no model `{model}` in the serving config");
                    return json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({ "error": error }),
                    );
                };
                report
                    .kstatus
                    .extend(self.gitops.status(&model).map(|s| (model, s)));
                report
            }
            Err(e) => {
                let error = e.to_string();
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": error }),
                );
            }
        };
        json(StatusCode::OK, &report)
    }

    /// A valid token with `role` in the request's `Authorization` header (401, 403 otherwise;
    /// 401 when no token is configured at all).
    fn authorize(&self, req: &Request<Incoming>, role: Role) -> Result<(), Refused> {
        let authorization = (req.headers())
            .get(hyper::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        match &self.auth {
            Some(auth) => auth.authorize(authorization, role).map(drop),
            None => Err(Refused::Unauthorized),
        }
    }

    /// `GET /live-config`: the live state as a config file (any valid token).
    fn live_config(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(e) = self.authorize(req, Role::Read) {
            return refused(&e);
        }
        match crate::status::live_config(
            &self.proxy,
            &self.reloader,
            self.driver.as_ref(),
            &self.notes,
        ) {
            Ok(yaml) => {
                let mut resp = text(StatusCode::OK, &yaml);
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml; charset=utf-8"),
                );
                resp
            }
            Err(e) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "error": e }),
            ),
        }
    }
}

/// Whether `path` is one of the endpoints that `admin.protect_reads` puts behind a `read`
/// token: what shows the gateway's state (`/metrics`, `/status`, `/status/models/{model}`,
/// `/rollouts`, the Argo Rollouts metric) and `POST /reload`, whatever the method. Open still:
/// `/healthz` (probes), `POST /hooks/git` (signed), `/gitops/flagger/{hook}` (Flagger's
/// webhooks send no headers); the operator endpoints check their own roles.
fn is_read(path: &str) -> bool {
    matches!(path, "/metrics" | "/status" | "/rollouts" | "/reload")
        || path.starts_with("/status/models/")
        || path.starts_with("/gitops/argo-rollouts/")
}

/// A request body of at most `limit` bytes; past it 413, a body that could not be read 400,
/// each with a JSON error.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": format!("body over {}", size(limit)) }),
        )),
        Err(e) => Err(json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": format!("body: {e}") }),
        )),
    }
}

/// A body limit in the unit it was written in: `64 KiB`, `25 MiB`.
fn size(bytes: usize) -> String {
    match bytes {
        b if b % (1024 * 1024) == 0 => format!("{} MiB", b / (1024 * 1024)),
        b if b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// `x-rollgate-actor`, when it is visible ASCII (who is acting, for the audit log).
fn actor_header(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get("x-rollgate-actor")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A refused call as `{"error": "..."}` with its status (401 carries `WWW-Authenticate`).
fn refused(e: &Refused) -> Response<Full<Bytes>> {
    let status = match e {
        Refused::Unauthorized => StatusCode::UNAUTHORIZED,
        Refused::Forbidden(_) => StatusCode::FORBIDDEN,
        Refused::BadRequest(_) => StatusCode::BAD_REQUEST,
        Refused::UnknownModel(_) => StatusCode::NOT_FOUND,
        Refused::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Refused::Conflict(_) => StatusCode::CONFLICT,
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

/// `?model=NAME` (percent-encoded) of `GET /status`: one model's entries instead of every
/// model's (a 50,000-model status is 180 MB of JSON).
fn status_model(query: Option<&str>) -> Result<Option<String>, rollgate_config::PercentError> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("model="))
    else {
        return Ok(None);
    };
    rollgate_config::percent_decode(raw).map(|m| Some(m.into_owned()))
}

#[cfg(test)]
mod tests;
