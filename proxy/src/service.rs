//! One request, start to finish: limits, model resolution, split, endpoint pick, mirror,
//! upstream exchange, observed response. Runs inline in the downstream connection's task.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::error::Error as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use rollgate_config::{Cohort, Config};
use tokio::time::Instant;

use crate::access_log::Entry;
use crate::body::{BodyError, Exchange, ObservedBody, RequestBody, ResponseBody, UpstreamBody};
use crate::endpoint::Outcome;
use crate::error::{error_response, Reject, UpstreamError};
use crate::handle::Shared;
use crate::observe::ModelStats;
use crate::pool::Pool;
use crate::scan::{JsonPrefixScanner, Progress, ScanError};
use crate::shadow::{is_sse, Mirror};
use crate::snapshot::{ModelRoute, Snapshot};
use crate::split::{cohort_of_hash, hash64, is_candidate, random_cohort, Variant};

/// Routing headers naming the model (Gateway API Inference Extension, Envoy AI Gateway);
/// pre-parsed so a lookup does not validate the name on every request.
pub(crate) static MODEL_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-gateway-model-name"),
    HeaderName::from_static("x-ai-eg-model"),
];
static VARIANT_HEADER: HeaderName = HeaderName::from_static("x-rollgate-variant");
static SHADOW_HEADER: HeaderName = HeaderName::from_static("x-rollgate-shadow");
static API_KEY_HEADER: HeaderName = HeaderName::from_static("x-api-key");
/// Bounds on reading the unread body of a rejected request (see `drain_later`).
const DRAIN_MAX_BYTES: usize = 64 << 20;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Connect attempts on different endpoints before answering 502.
const CONNECT_ATTEMPTS: usize = 3;

/// Per-worker request handler state; owned by one thread (no locks).
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Rc<Pool>,
    /// The fast HTTP/1.1 path's upstream pool and buffers.
    pub(crate) fast: Rc<crate::h1::FastPool>,
    /// The path of the last mirrored request, shared by the pairs that have the same one (most
    /// do: a gateway in front of a model server sees a handful of paths).
    pub(crate) last_path: std::cell::RefCell<Option<Arc<str>>>,
}

/// What resolution found in the request.
struct Resolved {
    route: Arc<ModelRoute>,
    /// Hash of the cohort key (the key itself is never kept: it may be an API key).
    key: Option<u64>,
    /// Body frames already read to find the model; replayed upstream first.
    prefix: VecDeque<http_body::Frame<bytes::Bytes>>,
    received: u64,
}

// === impl Worker ===

impl Worker {
    /// `path` as the `Arc` a shadow pair keeps, without an allocation when it is the last one.
    pub(crate) fn pair_path(&self, path: &str) -> Arc<str> {
        let mut last = self.last_path.borrow_mut();
        match last.as_ref() {
            Some(p) if **p == *path => p.clone(),
            _ => last.insert(Arc::from(path)).clone(),
        }
    }

    pub(crate) async fn handle(
        self: Rc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let snap = self.shared.snapshot.load();
        let mut log = self.shared.access.entry(snap.config(), Instant::now());
        if let Some(l) = log.as_mut() {
            let id = req.headers().get("x-request-id").map(HeaderValue::as_bytes);
            l.begin(
                SystemTime::now(),
                req.method().as_str(),
                req.uri().path(),
                id,
            );
        }
        match self.route(&snap, req, &mut log).await {
            Ok(resp) => {
                // Answered here (a model listing): the exchange took the line otherwise.
                if let Some(mut l) = log {
                    l.finish_here(None, resp.status().as_u16(), None, None);
                }
                Ok(resp)
            }
            Err(rej) => {
                tracing::debug!(error = %rej, "request rejected");
                self.shared.stats.rejected(rej.reason());
                if let Some(mut l) = log {
                    l.finish_here(None, rej.status().as_u16(), Some(rej.reason_str()), None);
                }
                Ok(rej.response())
            }
        }
    }

    /// `log`: the request's access log line; the exchange takes it, or a failed exchange
    /// ends it here.
    async fn route(
        &self,
        snap: &Arc<Snapshot>,
        req: Request<Incoming>,
        log: &mut Option<Box<Entry>>,
    ) -> Result<Response<ResponseBody>, Reject> {
        let mut start = Instant::now();
        let cfg = snap.config();
        check_headers(req.headers(), cfg)?;
        if req.method() == Method::GET {
            let path = req.uri().path();
            let listing = match crate::snapshot::model_id_in(path) {
                _ if path == "/v1/models" => Some(snap.models_json.clone()),
                Some(id) => Some(snap.model_json(&id)?),
                // Not percent-decodable: named as sent, without the path around it.
                None if path.starts_with("/v1/models/") => {
                    let id = path.trim_start_matches("/v1/models/");
                    return Err(Reject::UnknownModel(id.to_owned()));
                }
                None => None,
            };
            if let Some(json) = listing {
                let mut resp = error_response(StatusCode::OK, json);
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return Ok(resp);
            }
        }
        let (mut parts, mut body) = req.into_parts();
        if content_length(&parts.headers).is_some_and(|n| n > cfg.limits.max_body) {
            drain_later(body);
            return Err(Reject::BodyTooLarge(cfg.limits.max_body));
        }
        let mut r = match resolve(snap, &parts.headers, &mut body).await {
            Ok(r) => r,
            Err(rej) => {
                drain_later(body);
                return Err(rej);
            }
        };
        let mut rest = (!body.is_end_stream()).then_some(body);
        let mut prefix = std::mem::take(&mut r.prefix);
        if let Some(l) = log.as_mut() {
            l.model(&r.route.name);
        }
        let mut variant = pick_variant(&r, &parts.headers, cfg)?;
        if let Some(l) = log.as_mut() {
            l.variant = Some(variant);
        }
        // A tester's pinned variant gets the candidate's own failure.
        let fallback = variant == Variant::Candidate
            && cfg.routing.candidate_fallback
            && r.route.candidate.is_some()
            && !(cfg.routing.allow_override && parts.headers.contains_key(&VARIANT_HEADER));
        // The candidate's answer may be replaced by stable's (`candidate_fallback_status`):
        // keep a copy of the whole request when its body is small enough.
        let mut replay = None;
        if fallback && !cfg.routing.candidate_fallback_status.is_empty() {
            if let Some(frames) = read_whole(&mut prefix, &mut r.received, &mut rest).await? {
                replay = Some((clone_parts(&parts), frames));
            }
        }
        let body = RequestBody::new(prefix, r.received, rest, cfg.limits.max_body);
        let backend = match variant {
            Variant::Candidate => r.route.candidate.as_ref().unwrap_or(&r.route.stable),
            _ => &r.route.stable,
        };
        prepare_upstream(&mut parts);
        let mut body = body;
        let mut pair = None;
        if let Some(shadow) = r
            .route
            .shadow
            .as_ref()
            .filter(|_| variant == Variant::Stable)
        {
            if crate::shadow::sampled(shadow, &r.route.stats, std::time::Instant::now) {
                if let Some(admitted) = crate::shadow::admit(&r.route, shadow, None) {
                    let mirror = Mirror {
                        parts: clone_parts(&parts),
                        endpoints: r.route.clone(),
                        key: r.key,
                        pool: self.pool.clone(),
                        shared: self.shared.clone(),
                    };
                    let path = self
                        .shared
                        .pairs
                        .wanted()
                        .then(|| self.pair_path(parts.uri.path()));
                    let (tee, side) = mirror.start(admitted, path, shadow);
                    body.set_tee(tee);
                    pair = Some((side.capture(shadow.capture), side));
                }
            }
        }
        let stats = r.route.stats.clone();
        let mut vs = stats.variant(variant);
        vs.start();
        let key = r.key.map(u64::to_le_bytes);
        let key = key.as_ref().map(<[u8; 8]>::as_slice);
        let req = Request::from_parts(parts, UpstreamBody::Primary(body));
        let candidate = variant == Variant::Candidate;
        let sent = self
            .exchange(
                &backend.endpoints,
                key,
                req,
                cfg,
                (&stats, candidate),
                fallback,
            )
            .await;
        let (mut sent, again) = match sent {
            // Nothing reached the candidate.
            Err(Failed::Unreached(rej, Some(req))) => (Err(Failed::Reject(rej)), Some(*req)),
            // The candidate answered with a status the fallback replaces: its answer is
            // dropped unread (with its connection), the kept copy goes to stable.
            Ok((resp, out, conn))
                if replay.is_some()
                    && cfg
                        .routing
                        .candidate_fallback_status
                        .contains(&resp.status().as_u16()) =>
            {
                let status = resp.status().as_u16();
                let outcome = Outcome::of(status);
                stats.record(out.endpoint(), outcome, &cfg.ejection, true);
                drop((resp, conn, out));
                let (parts, frames) = replay.take().expect("checked");
                let received = frames.iter().map(|b| b.len() as u64).sum();
                let frames = frames.into_iter().map(http_body::Frame::data).collect();
                let body = RequestBody::new(frames, received, None, cfg.limits.max_body);
                let rej = Reject::Upstream(UpstreamError::Connect(std::io::Error::other(format!(
                    "the candidate answered {status}"
                ))));
                let req = Request::from_parts(parts, UpstreamBody::Primary(body));
                (Err(Failed::Reject(rej)), Some(req))
            }
            other => (other, None),
        };
        if let Some(req) = again {
            // The candidate failed it: charge it the failure (its gates see an error), then
            // let the stable backend answer the request whole.
            stats.fell_back(start.elapsed());
            // Stable's latency is its own, not the wait for the candidate.
            start = Instant::now();
            variant = Variant::Stable;
            if let Some(l) = log.as_mut() {
                (l.fell_back, l.variant) = (true, Some(variant));
            }
            vs = stats.variant(variant);
            vs.start();
            sent = self
                .exchange(
                    &r.route.stable.endpoints,
                    key,
                    req,
                    cfg,
                    (&stats, false),
                    false,
                )
                .await;
        }
        let (resp, ep_out, conn) = match sent {
            Ok(x) => x,
            Err(Failed::Reject(rej) | Failed::Unreached(rej, _)) => {
                stats.gateway_answered(variant, rej.is_client_fault(), start.elapsed());
                // Said like its answers are: who failed it.
                tracing::debug!(error = %rej, "request rejected");
                self.shared.stats.rejected(rej.reason());
                if let Some(mut l) = log.take() {
                    let status = rej.status().as_u16();
                    l.finish_here(Some(variant), status, Some(rej.reason_str()), None);
                }
                let mut resp = rej.response();
                if cfg.routing.variant_header {
                    resp.headers_mut().insert(
                        VARIANT_HEADER.clone(),
                        HeaderValue::from_static(variant.as_str()),
                    );
                }
                return Ok(resp);
            }
        };
        let status = resp.status().as_u16();
        let ep = ep_out.endpoint();
        let outcome = Outcome::of(status);
        stats.record(ep, outcome, &cfg.ejection, variant == Variant::Candidate);
        let (mut head, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut head.headers);
        if cfg.routing.variant_header {
            head.headers.insert(
                VARIANT_HEADER.clone(),
                HeaderValue::from_static(variant.as_str()),
            );
        }
        let sse = is_sse(&head.headers);
        let ex = Exchange {
            stats,
            variant,
            start,
            status,
            outstanding: ep_out,
            conn: Some(conn),
            pool: self.pool.clone(),
            ejection: cfg.ejection.clone(),
            log: log.take(),
        };
        let body = ObservedBody::new(incoming, ex, cfg.upstream.idle_timeout, sse, pair);
        Ok(Response::from_parts(head, ResponseBody::Upstream(body)))
    }

    /// Sends the request to an endpoint of the backend, retrying other endpoints on connect
    /// failures (the body is untouched until a connection exists) and on pooled connections
    /// found closed (hyper hands the unsent request back). With `fallback` (another backend
    /// can take the request), an ejected pick means every endpoint is ejected: give up at once
    /// instead of trying one anyway; the unsent request comes back in [`Failed::Unreached`].
    async fn exchange(
        &self,
        set: &crate::endpoint::EndpointSet,
        key: Option<&[u8]>,
        mut req: Request<UpstreamBody>,
        cfg: &Config,
        (stats, candidate): (&ModelStats, bool),
        fallback: bool,
    ) -> Result<
        (
            Response<Incoming>,
            crate::endpoint::Outstanding,
            crate::pool::Conn,
        ),
        Failed,
    > {
        let mut last = None;
        // Endpoints whose connect failed in this request.
        let (mut tried, mut failed) = ([0u64; CONNECT_ATTEMPTS], 0);
        // With somewhere else to go, trying the same endpoint again is only more waiting (a
        // candidate that times out connects would cost `connect_timeout` per try).
        let tries = if fallback {
            CONNECT_ATTEMPTS.min(set.endpoints.len())
        } else {
            CONNECT_ATTEMPTS
        };
        for _ in 0..tries {
            let now = Instant::now();
            let Some(ep) = set.pick_untried(key, now, &tried[..failed]) else {
                break;
            };
            if fallback && ep.is_ejected(now) {
                break;
            }
            let out = ep.acquire();
            let mut conn = match self.pool.get(ep).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(endpoint = %ep.url, error = %e, "upstream connect failed");
                    stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                    // The next try goes to another endpoint while one is left.
                    if let Some(t) = tried.get_mut(failed) {
                        *t = ep.id;
                        failed += 1;
                    }
                    last = Some(e);
                    continue;
                }
            };
            req.headers_mut()
                .insert(header::HOST, ep.host_header.clone());
            let send = conn.sender.try_send_request(req);
            match tokio::time::timeout(cfg.upstream.response_timeout, send).await {
                Ok(Ok(resp)) => return Ok((resp, out, conn)),
                Ok(Err(mut e)) => match e.take_message() {
                    Some(back) if conn.reused => {
                        req = back;
                        continue;
                    }
                    _ => {
                        let err = e.into_error();
                        if let Some(rej) = client_body_fault(&err) {
                            // The client's body, not the backend, failed the exchange.
                            return Err(Failed::Reject(rej));
                        }
                        stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                        return Err(Failed::Reject(Reject::Upstream(UpstreamError::Exchange(
                            err,
                        ))));
                    }
                },
                Err(_) => {
                    stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                    return Err(Failed::Reject(Reject::UpstreamTimeout(
                        cfg.upstream.response_timeout,
                    )));
                }
            }
        }
        let rej = match last {
            Some(e) => Reject::Upstream(e),
            None => Reject::NoEndpoint(String::new()),
        };
        Err(Failed::Unreached(rej, fallback.then(|| Box::new(req))))
    }
}

/// Why [`Worker::exchange`] returned no response.
enum Failed {
    Reject(Reject),
    /// No endpoint could be reached: nothing was sent, and the request comes back (when the
    /// caller has somewhere else to send it).
    Unreached(Reject, Option<Box<Request<UpstreamBody>>>),
}

/// Largest request body kept whole for `routing.candidate_fallback_status` (the fast path's
/// too: what it reads in one go).
const REPLAY_MAX: u64 = 64 * 1024;

/// Reads the rest of a body of at most [`REPLAY_MAX`] bytes into `prefix` and returns its data,
/// to be sent again. `None` (and the body left to stream as usual) when it is larger, or has
/// trailers.
async fn read_whole(
    prefix: &mut VecDeque<http_body::Frame<bytes::Bytes>>,
    received: &mut u64,
    rest: &mut Option<Incoming>,
) -> Result<Option<Vec<bytes::Bytes>>, Reject> {
    while let Some(body) = rest {
        if body.is_end_stream() {
            *rest = None;
            break;
        }
        if body
            .size_hint()
            .upper()
            .is_some_and(|n| *received + n > REPLAY_MAX)
        {
            return Ok(None);
        }
        let Some(frame) = body.frame().await else {
            *rest = None;
            break;
        };
        let frame = frame.map_err(|e| Reject::Framing(format!("reading the body: {e}")))?;
        let data = frame.data_ref().map_or(0, |d| d.len() as u64);
        *received += data;
        prefix.push_back(frame);
        if *received > REPLAY_MAX {
            return Ok(None);
        }
    }
    if prefix.iter().any(|f| !f.is_data()) {
        return Ok(None);
    }
    Ok(Some(
        prefix
            .iter()
            .filter_map(|f| f.data_ref().cloned())
            .collect(),
    ))
}

/// Reads and discards the unread rest of a rejected request's body (bounded in bytes and time)
/// so that the client receives the error instead of a reset from closing with unread data.
fn drain_later(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    tokio::task::spawn_local(async move {
        let drain = async {
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len());
                if n > DRAIN_MAX_BYTES {
                    break;
                }
            }
        };
        // Timing out just means the client was slow; the connection then closes.
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
    });
}

/// A failed exchange whose cause was the client's request body (over `limits.max_body`, or
/// broken: a bad chunk, a reset), as the gateway's own 4xx.
fn client_body_fault(err: &hyper::Error) -> Option<Reject> {
    let mut src = err.source();
    while let Some(e) = src {
        match e.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge(limit)) => return Some(Reject::BodyTooLarge(*limit)),
            Some(BodyError::Downstream(e)) => {
                return Some(Reject::Framing(format!("reading the body: {e}")))
            }
            _ => {}
        }
        src = e.source();
    }
    None
}

/// Finds the model (routing header, else the JSON body's prefix) and the cohort key.
async fn resolve(
    snap: &Snapshot,
    headers: &HeaderMap,
    body: &mut Incoming,
) -> Result<Resolved, Reject> {
    let cfg = snap.config();
    let header_model = MODEL_HEADERS.iter().find_map(|h| headers.get(h));
    let header_route = match header_model {
        Some(v) => {
            let name = v.to_str().map_err(|_| {
                Reject::UnknownModel(String::from_utf8_lossy(v.as_bytes()).into_owned())
            })?;
            Some(
                snap.model(name)
                    .ok_or_else(|| Reject::UnknownModel(name.to_owned()))?
                    .clone(),
            )
        }
        None => None,
    };
    let field = match header_route.as_ref().map(|r| &r.cohort) {
        Some(Cohort::BodyField(f)) => Some(f.as_str()),
        Some(_) => None,
        None => snap.body_field(),
    };
    let scan_needed = header_route.is_none() || field.is_some();
    let mut prefix = VecDeque::new();
    let mut received = 0u64;
    let mut scanner = None;
    if scan_needed && has_body(headers, body) && may_be_json(headers) {
        let mut sc = JsonPrefixScanner::new(field, cfg.limits.model_prefix);
        let mut outcome = Ok(());
        loop {
            let Some(frame) = body.frame().await else {
                outcome = sc.finish();
                break;
            };
            let frame = frame.map_err(|e| Reject::Framing(format!("reading the body: {e}")))?;
            if let Some(d) = frame.data_ref() {
                received += d.len() as u64;
                if received > cfg.limits.max_body {
                    return Err(Reject::BodyTooLarge(cfg.limits.max_body));
                }
                let fed = sc.feed(d);
                prefix.push_back(frame);
                match fed {
                    Ok(Progress::Done) => break,
                    Ok(Progress::NeedMore) => continue,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            } else {
                prefix.push_back(frame);
            }
        }
        match outcome {
            Ok(()) => scanner = Some(sc),
            // Not JSON at all (plain HTTP traffic): the request names no model.
            Err(ScanError::NotAnObject) if header_route.is_none() => {}
            // The model was found; only the cohort field lies past the prefix.
            Err(ScanError::LimitReached { .. }) if sc.model().is_some() => scanner = Some(sc),
            // With the model from a header, the body is the model server's business.
            Err(e) if header_route.is_none() => return Err(Reject::from(e)),
            Err(_) => {}
        }
    }
    let route = match (header_route, scanner.as_ref().and_then(|s| s.model())) {
        (Some(r), _) => r,
        (None, Some(name)) => snap
            .model(name)
            .ok_or_else(|| Reject::UnknownModel(name.to_owned()))?
            .clone(),
        (None, None) => snap.default_model().ok_or(Reject::NoModel)?.clone(),
    };
    let key = match &route.cohort {
        Cohort::Random => None,
        Cohort::Header(h) => headers.get(h.as_str()).map(|v| hash64(v.as_bytes())),
        Cohort::ApiKey => api_key(headers).map(hash64),
        Cohort::BodyField(_) => scanner
            .as_ref()
            .and_then(|s| s.field())
            .map(|f| hash64(f.as_bytes())),
    };
    Ok(Resolved {
        route,
        key,
        prefix,
        received,
    })
}

fn pick_variant(r: &Resolved, headers: &HeaderMap, cfg: &Config) -> Result<Variant, Reject> {
    if cfg.routing.allow_override {
        if let Some(v) = headers.get(&VARIANT_HEADER) {
            return match Variant::from_override(v.as_bytes()) {
                Some(Variant::Candidate) if r.route.candidate.is_none() => Err(Reject::BadOverride),
                Some(v) => Ok(v),
                None => Err(Reject::BadOverride),
            };
        }
    }
    if r.route.weight.get() == 0 {
        return Ok(Variant::Stable);
    }
    let cohort = r.key.map_or_else(random_cohort, cohort_of_hash);
    Ok(if is_candidate(cohort, r.route.weight) {
        Variant::Candidate
    } else {
        Variant::Stable
    })
}

fn check_headers(headers: &HeaderMap, cfg: &Config) -> Result<(), Reject> {
    let limits = &cfg.limits;
    if headers.len() > limits.max_headers {
        return Err(Reject::HeadersTooLarge {
            limit: limits.max_headers,
            what: "headers",
        });
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Reject::HeadersTooLarge {
            limit: limits.max_header_bytes,
            what: "bytes",
        });
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn has_body(headers: &HeaderMap, body: &Incoming) -> bool {
    !body.is_end_stream() && content_length(headers) != Some(0)
}

/// Bodies worth scanning for a model: anything but multipart uploads and octet streams (curl's
/// `-d` labels JSON as a form, and many clients send no content type). A body that does not
/// start with `{` then simply names no model.
fn may_be_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_none_or(|v| {
        let v = v.as_bytes();
        !(v.starts_with(b"multipart/") || v.starts_with(b"application/octet-stream"))
    })
}

fn api_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let b = v.as_bytes();
        return Some(b.strip_prefix(b"Bearer ").unwrap_or(b));
    }
    headers.get(&API_KEY_HEADER).map(HeaderValue::as_bytes)
}

/// Origin-form URI, HTTP/1.1, no hop-by-hop or rollgate control headers.
pub(crate) fn prepare_upstream(parts: &mut hyper::http::request::Parts) {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(&VARIANT_HEADER);
    parts.headers.remove(&SHADOW_HEADER);
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.remove(header::CONNECTION) {
        if let Ok(list) = conn.to_str() {
            for name in list.split(',') {
                headers.remove(name.trim());
            }
        }
    }
    for h in [
        &header::TE,
        &header::TRAILER,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn clone_parts(p: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts
}

#[cfg(test)]
mod tests;
