//! The fast HTTP/1.1 path (`data_plane: fast`): a specialised relay for plain HTTP/1.1
//! connections, behind the same routing, split, model resolution, shadow, observation, limits,
//! timeouts and OpenAI-shaped errors as the hyper path.
//!
//! One task per downstream connection parses each request head with `httparse` into a stack
//! array (no header map), writes the upstream head and the first body bytes in one `send`, and
//! relays the response inline: no spawn, channel or lock per request, and the only per-request
//! heap work is what the shared routing code does. Upstream connections are raw TCP streams in a
//! per-worker pool. Response bodies are relayed as they arrive (each read is written at once;
//! SSE events are never batched).
//!
//! Parsing is strict (see [`parse`]): ambiguous framing is answered 400 and the connection
//! closed. Anything the relay does not implement — HTTP/1.0, `Upgrade`, an `Expect` other
//! than `100-continue` (answered here), CONNECT, absolute-form targets, the h2c preface — is
//! handed to hyper together with the bytes already read, and hyper serves the rest of that
//! connection.

mod mirror;
pub mod parse;
mod pool;
mod rewind;

use std::io::{self, Write as _};
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::StatusCode;
use hyper_util::server::conn::auto;
use rollgate_config::{Cohort, Config};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use self::parse::{trim, ChunkedDecoder, Framing, HeadError};
pub(crate) use self::pool::FastPool;
use self::pool::UpConn;
use crate::access_log::Entry;
use crate::body::{Exchange, Observer};
use crate::endpoint::{EndpointSet, Outcome};
use crate::error::{Reject, UpstreamError};
use crate::observe::StreamFailure;
use crate::scan::{JsonPrefixScanner, Progress, ScanError};
use crate::server::LocalExec;
use crate::service::Worker;
use crate::shadow::ShadowTee;
use crate::snapshot::{ModelRoute, Snapshot};
use crate::split::{cohort_of_hash, hash64, is_candidate, random_cohort, Variant};

/// Slack above `limits.max_header_bytes` for a head still being read (the limit itself counts
/// names and values only).
const HEAD_SLACK: usize = 16 * 1024;
/// Bounds on discarding the unread body of a rejected request before the next one.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);
/// Connect attempts on different endpoints before answering 502.
const CONNECT_ATTEMPTS: usize = 3;
/// Most yields per body chunk while a mirror's queue is over half full.
const SHADOW_YIELDS: usize = 64;
/// Largest read of a request body with a known length (the pool keeps buffers up to this size).
const BODY_READ: usize = 64 * 1024;
/// What the fast path does with a header, by name. Found with one dispatch on the name's length
/// and a case-insensitive compare or two: it runs for every header of every request and
/// response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hdr {
    /// Relayed as received.
    Forward,
    /// Hop-by-hop or replaced by the gateway's own framing: never relayed.
    HopByHop,
    Connection,
    ContentLength,
    ContentType,
    Authorization,
    ApiKey,
    /// `x-gateway-model-name` or `x-ai-eg-model`: the routing header.
    Model,
    /// `x-rollgate-variant`: the override on requests, the gateway's own on responses.
    Variant,
    /// `x-rollgate-shadow`: a client must not pose as a mirror.
    Shadow,
    Host,
    /// Relayed; a response without one gets the gateway's.
    Date,
}

fn classify(name: &[u8]) -> Hdr {
    let is = |n: &[u8]| eq_lower(name, n);
    match name.len() {
        2 if is(b"te") => Hdr::HopByHop,
        4 if is(b"host") => Hdr::Host,
        4 if is(b"date") => Hdr::Date,
        // Answered by the gateway (`100 Continue`), not forwarded.
        6 if is(b"expect") => Hdr::HopByHop,
        7 if is(b"trailer") || is(b"upgrade") => Hdr::HopByHop,
        9 if is(b"x-api-key") => Hdr::ApiKey,
        10 if is(b"connection") => Hdr::Connection,
        10 if is(b"keep-alive") => Hdr::HopByHop,
        12 if is(b"content-type") => Hdr::ContentType,
        13 if is(b"authorization") => Hdr::Authorization,
        13 if is(b"x-ai-eg-model") => Hdr::Model,
        14 if is(b"content-length") => Hdr::ContentLength,
        16 if is(b"proxy-connection") => Hdr::HopByHop,
        17 if is(b"transfer-encoding") => Hdr::HopByHop,
        17 if is(b"x-rollgate-shadow") => Hdr::Shadow,
        18 if is(b"proxy-authenticate") => Hdr::HopByHop,
        18 if is(b"x-rollgate-variant") => Hdr::Variant,
        20 if is(b"x-gateway-model-name") => Hdr::Model,
        _ => Hdr::Forward,
    }
}

/// `name` equals `lower` (lowercase letters and `-` only) ignoring ASCII case, compared eight
/// bytes at a time. Exact for header names, which httparse has checked are tokens: setting bit
/// 0x20 turns only an uppercase letter into a lowercase one, and only CR (never in a token)
/// into `-`.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    name.chunks(8)
        .zip(lower.chunks(8))
        .all(|(a, b)| word(a) | 0x2020_2020_2020_2020 == word(b) | 0x2020_2020_2020_2020)
}

/// The header names a `Connection` header lists (hop-by-hop too), up to eight.
struct Listed<'a> {
    names: [&'a [u8]; 8],
    n: usize,
}

impl<'a> Listed<'a> {
    fn of(headers: &[httparse::Header<'a>]) -> Self {
        let mut l = Listed {
            names: [&[]; 8],
            n: 0,
        };
        for h in headers {
            if h.name.len() == 10 && h.name.eq_ignore_ascii_case("connection") {
                for t in h.value.split(|&b| b == b',') {
                    let t = trim(t);
                    if !t.is_empty() && l.n < l.names.len() {
                        l.names[l.n] = t;
                        l.n += 1;
                    }
                }
            }
        }
        l
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.names[..self.n]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
    }
}

/// The gateway's own answers under `GET /v1/models`.
#[derive(Debug)]
enum Models {
    No,
    /// `GET /v1/models`: every configured model.
    List,
    /// `GET /v1/models/{id}`: the path (in the head), for one model or a 404.
    One(Range<usize>),
}

/// What a request head tells the relay (ranges index the head's bytes).
#[derive(Debug)]
struct Digest {
    len: usize,
    framing: Framing,
    close: bool,
    /// The client waits for `100 Continue` before sending the body.
    expect_continue: bool,
    head_method: bool,
    models: Models,
    model: Option<Range<usize>>,
    variant: Option<Range<usize>>,
    api_key: Option<Range<usize>>,
    json: bool,
    /// Bytes of `out` holding the upstream request line and forwarded headers.
    upstream_head: usize,
}

enum HeadRead {
    Request(Digest),
    /// Hand the connection to hyper.
    Unusual,
}

/// The request body still to be read from the client.
#[derive(Debug)]
enum BodyIn {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
}

/// The downstream connection.
struct Down<'w> {
    io: TcpStream,
    /// Bytes read; `buf[..pos]` are consumed. Empty (no capacity) while idle.
    buf: Vec<u8>,
    pos: usize,
    /// The upstream request head, then the response head, as written.
    out: Vec<u8>,
    worker: &'w Worker,
    fast: &'w FastPool,
    /// When the last answer was written: the wait for the next request starts then (one
    /// clock read per request serves the answer's observation, the pool and this deadline).
    answered_at: Option<Instant>,
    /// The request's access log line until an exchange takes it or a rejection ends it.
    log: Option<Box<Entry>>,
}

enum Fill {
    Data,
    Eof,
    Timeout,
}

/// Serves one plain downstream connection.
pub(crate) async fn serve(
    io: TcpStream,
    worker: Rc<Worker>,
    builder: &auto::Builder<LocalExec>,
    shutdown: watch::Receiver<bool>,
) {
    let fast = worker.fast.clone();
    let mut down = Down {
        io,
        buf: Vec::new(),
        pos: 0,
        out: Vec::new(),
        worker: &worker,
        fast: &fast,
        answered_at: None,
        log: None,
    };
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    // One wait for shutdown for the connection's life, on its own receiver (`shutdown` stays
    // free to read and to hand to hyper): a `changed()` made per request would register and
    // unregister a waiter under the channel's lock every time.
    let mut stop_rx = shutdown.clone();
    let stopped = stop_rx.changed();
    tokio::pin!(stopped);
    let mut first = true;
    loop {
        let wait = worker
            .shared
            .snapshot
            .load()
            .config()
            .limits
            .header_read_timeout;
        // Between requests the connection holds no buffer.
        if down.pos == down.buf.len() {
            let buf = std::mem::take(&mut down.buf);
            fast.give(buf);
            let out = std::mem::take(&mut down.out);
            fast.give(out);
            down.pos = 0;
            if *shutdown.borrow() {
                return;
            }
            let since = down.answered_at.take().unwrap_or_else(Instant::now);
            let idle_until = since + wait;
            arm(&mut sleep, idle_until);
            loop {
                tokio::select! {
                    biased;
                    r = read_ready(&down.io) => if r.is_err() { return },
                    () = &mut sleep => if expired(&mut sleep, idle_until) { return } else { continue },
                    _ = stopped.as_mut() => return,
                }
                // Readiness may be left over from the last request: a buffer is taken only
                // once bytes of the next one are really there.
                let mut buf = fast.buf();
                match read_now(&down.io, &mut buf) {
                    Ok(0) => return,
                    Ok(_) => {
                        down.buf = buf;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => fast.give(buf),
                    Err(_) => return,
                }
            }
        }
        if down.out.capacity() == 0 {
            down.out = fast.buf();
        }
        // Loaded once the request has begun to arrive: a reload while the connection was idle
        // applies to this request.
        let snap = worker.shared.snapshot.load_full();
        let cfg = snap.config();
        let head = match down.read_head(cfg, first, &mut sleep).await {
            Ok(Some(HeadRead::Request(d))) => d,
            Ok(Some(HeadRead::Unusual)) => {
                let pre = down.buf.split_off(down.pos);
                let io = rewind::Rewind::new(pre, down.io);
                // Boxed: hyper's connection future is large and rare here.
                Box::pin(crate::server::serve_conn(
                    io,
                    worker.clone(),
                    builder,
                    shutdown,
                ))
                .await;
                return;
            }
            Ok(None) => return,
            Err(rej) => {
                // Malformed or oversized head: answer and close.
                worker.shared.stats.rejected(rej.reason());
                let _ = down.write_reject(&rej, None, true).await;
                return;
            }
        };
        first = false;
        let close = head.close || *shutdown.borrow();
        // Boxed, so that an idle connection's task holds only this loop's small state; the
        // request's own state lives only while a request does.
        match Box::pin(down.request(head, &snap, close, &mut sleep)).await {
            Ok(true) if !close => {}
            _ => {
                let _ = down.io.shutdown().await;
                return;
            }
        }
        // Keep unread pipelined bytes; drop the consumed ones.
        if down.pos > 0 && down.pos < down.buf.len() {
            down.buf.drain(..down.pos);
            down.pos = 0;
        }
    }
}

impl Down<'_> {
    /// Reads until a complete head. `Ok(None)`: the client closed or went quiet.
    ///
    /// `header_read_timeout` runs from the first wait for more of the head: a head that came
    /// whole (the usual case) costs no clock read.
    async fn read_head(
        &mut self,
        cfg: &Config,
        first: bool,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<Option<HeadRead>, Reject> {
        let limit = cfg.limits.max_header_bytes * 2 + HEAD_SLACK;
        let mut deadline = None;
        loop {
            let avail = &self.buf[self.pos..];
            if first && avail.starts_with(b"PRI ") {
                return Ok(Some(HeadRead::Unusual));
            }
            if !avail.is_empty() {
                match digest(avail, cfg, &mut self.out) {
                    Ok(Some(d)) => return Ok(Some(HeadRead::Request(d))),
                    Ok(None) => {}
                    Err(Digested::Unusual) => return Ok(Some(HeadRead::Unusual)),
                    Err(Digested::Bad(e)) => return Err(Reject::Framing(format!("{e}"))),
                    Err(Digested::TooLarge(rej)) => return Err(rej),
                }
                if avail.len() > limit {
                    return Err(Reject::HeadersTooLarge {
                        limit: cfg.limits.max_header_bytes,
                        what: "bytes",
                    });
                }
            }
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + cfg.limits.header_read_timeout);
            match fill(&self.io, &mut self.buf, sleep, deadline).await {
                Ok(Fill::Data) => {}
                Ok(Fill::Eof | Fill::Timeout) | Err(_) => return Ok(None),
            }
        }
    }

    /// One request, start to finish. Returns whether the connection can carry another.
    async fn request(
        &mut self,
        d: Digest,
        snap: &Arc<Snapshot>,
        close: bool,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<bool, ()> {
        let mut start = Instant::now();
        // Bytes in hand at the start: if none arrive before the request goes upstream, nothing
        // was waited for and `start` is still the time.
        let arrived = self.buf.len();
        let cfg = snap.config();
        let head_at = self.pos;
        self.log = self.worker.shared.access.entry(cfg, start);
        if let Some(log) = self.log.as_mut() {
            let line = &self.out[..d.upstream_head];
            let method = line.split(|&b| b == b' ').next().unwrap_or_default();
            log.begin(
                SystemTime::now(),
                std::str::from_utf8(method).unwrap_or_default(),
                path_of(target_of(line)),
                find_header(&self.buf[head_at..head_at + d.len], b"x-request-id"),
            );
        }
        self.pos += d.len;
        let mut body = match d.framing {
            Framing::Length(0) => BodyIn::Done,
            Framing::Length(n) => BodyIn::Length(n),
            Framing::Chunked => BodyIn::Chunked(ChunkedDecoder::new()),
            Framing::Empty | Framing::Close => BodyIn::Done,
        };
        // `Expect: 100-continue` with no body bytes yet: the client waits for `100 Continue`
        // (the upstream never sees the expectation). A final answer before that closes the
        // connection, since the body may never come, or come after all.
        let waiting =
            d.expect_continue && !matches!(body, BodyIn::Done) && self.pos == self.buf.len();
        let listing = match &d.models {
            Models::No => None,
            Models::List => Some(Ok(snap.models_json.clone())),
            Models::One(r) => {
                let path = String::from_utf8_lossy(&self.buf[head_at..][r.clone()]);
                Some(match crate::snapshot::model_id_in(&path) {
                    Some(id) => snap.model_json(&id),
                    // Not percent-decodable: named as sent, without the path around it.
                    None => Err(Reject::UnknownModel(
                        path.trim_start_matches("/v1/models/").to_owned(),
                    )),
                })
            }
        };
        match listing {
            None => {}
            Some(Err(rej)) => return self.reject(rej, body, close || waiting, sleep).await,
            Some(Ok(json)) => {
                let mut resp = Vec::with_capacity(json.len() + 128);
                full_head(&mut resp, StatusCode::OK, json.len(), close || waiting);
                // `full_head` ends with the blank line; insert the cache header before it.
                resp.truncate(resp.len() - 2);
                resp.extend_from_slice(b"cache-control: no-store\r\n\r\n");
                resp.extend_from_slice(&json);
                self.io.write_all(&resp).await.map_err(drop)?;
                if let Some(mut log) = self.log.take() {
                    log.finish_here(None, 200, None, None);
                }
                if waiting {
                    return Ok(false);
                }
                return self.drain(body, sleep).await;
            }
        }
        if let Framing::Length(n) = d.framing {
            if n > cfg.limits.max_body {
                return self
                    .reject(
                        Reject::BodyTooLarge(cfg.limits.max_body),
                        body,
                        close || waiting,
                        sleep,
                    )
                    .await;
            }
        }
        if waiting {
            self.io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(drop)?;
        }
        let head = head_at..head_at + d.len;
        let mut prefix = Vec::new();
        let resolved = self
            .resolve(snap, &d, head.clone(), &mut body, &mut prefix, sleep)
            .await;
        let (route, key) = match resolved {
            Ok(x) => x,
            Err(None) => {
                self.log_cancelled(None);
                return Err(());
            }
            Err(Some(rej)) => return self.reject(rej, body, close, sleep).await,
        };
        if let Some(log) = self.log.as_mut() {
            log.model(&route.name);
        }
        let variant = match pick_variant(
            &route,
            key,
            d.variant
                .as_ref()
                .map(|r| &self.buf[head.start..][r.clone()]),
            cfg,
        ) {
            Ok(v) => v,
            Err(rej) => return self.reject(rej, body, close, sleep).await,
        };
        if let Some(log) = self.log.as_mut() {
            log.variant = Some(variant);
        }
        let backend = match variant {
            Variant::Candidate => route.candidate.as_ref().unwrap_or(&route.stable),
            _ => &route.stable,
        };
        // The clock reading the upstream exchange starts from (and a mirror's admission): the
        // request's start when no byte arrived since, so nothing was waited for.
        let now = if self.buf.len() == arrived {
            start
        } else {
            Instant::now()
        };
        let mut tee = None;
        let mut pair = None;
        if let Some(shadow) = route.shadow.as_ref().filter(|_| variant == Variant::Stable) {
            if crate::shadow::sampled(shadow, &route.stats, || now.into_std()) {
                if let Some(admitted) = crate::shadow::admit(&route, shadow, Some(now)) {
                    // A body already in the buffer goes out with the mirror's head; the tee
                    // carries the rest of a body still to be read.
                    let at_hand = match &body {
                        BodyIn::Length(n) if (self.buf.len() - self.pos) as u64 >= *n => {
                            Some(&self.buf[self.pos..self.pos + *n as usize])
                        }
                        BodyIn::Done => Some(prefix.as_slice()),
                        _ => None,
                    };
                    let mirror = mirror::FastMirror::new(
                        mirror::Sampled {
                            head: &self.out[..d.upstream_head],
                            framing: d.framing,
                            body: at_hand,
                            head_request: d.head_method,
                            key,
                        },
                        route.clone(),
                        self.worker.fast.clone(),
                        self.worker.shared.clone(),
                    );
                    let whole = at_hand.is_some();
                    let path = self
                        .worker
                        .shared
                        .pairs
                        .wanted()
                        .then(|| self.worker.pair_path(path_of(target_of(&self.out))));
                    let (t, side) = mirror.start(admitted, path, shadow);
                    if whole {
                        t.end();
                    } else {
                        tee = Some(t);
                    }
                    pair = Some((side.capture(shadow.capture), side));
                }
            }
        }
        let stats = route.stats.clone();
        let mut variant = variant;
        let mut candidate = variant == Variant::Candidate;
        // A tester's pinned variant gets the candidate's own failure.
        let fallback = candidate
            && cfg.routing.candidate_fallback
            && route.candidate.is_some()
            && !(cfg.routing.allow_override && d.variant.is_some());
        let mut vs = stats.variant(variant);
        vs.start();
        let key_bytes = key.map(u64::to_le_bytes);
        let key_bytes = key_bytes.as_ref().map(<[u8; 8]>::as_slice);
        let mut sent = self
            .send(
                &backend.endpoints,
                key_bytes,
                &d,
                &mut body,
                &prefix,
                &mut tee,
                (&stats, candidate),
                RespOut {
                    variant,
                    cfg,
                    close,
                },
                now,
                fallback,
                sleep,
            )
            .await;
        if fallback && matches!(sent, Err(SendError::Unreached(_))) {
            // Nothing reached the candidate, or it answered a status the fallback replaces:
            // charge it the failure (its gates see an error), then let the stable backend
            // answer the request whole.
            stats.fell_back(start.elapsed());
            // Stable's latency is its own, not the wait for the candidate.
            start = Instant::now();
            (variant, candidate) = (Variant::Stable, false);
            if let Some(log) = self.log.as_mut() {
                (log.fell_back, log.variant) = (true, Some(variant));
            }
            vs = stats.variant(variant);
            vs.start();
            let out = RespOut {
                variant,
                cfg,
                close,
            };
            sent = self
                .send(
                    &route.stable.endpoints,
                    key_bytes,
                    &d,
                    &mut body,
                    &prefix,
                    &mut tee,
                    (&stats, false),
                    out,
                    start,
                    false,
                    sleep,
                )
                .await;
        }
        let (mut up, out, mut ubuf, rh) = match sent {
            Ok(x) => x,
            Err(SendError::Reject(rej) | SendError::Unreached(rej)) => {
                stats.gateway_answered(variant, rej.is_client_fault(), start.elapsed());
                let by = cfg.routing.variant_header.then_some(variant);
                return self.reject_by(rej, by, body, close, sleep).await;
            }
            Err(SendError::Client) => {
                vs.cancelled();
                self.log_cancelled(Some(variant));
                return Err(());
            }
        };
        let refused = rh.body_refused;
        if let Some(t) = tee.take() {
            if refused {
                // The mirror would get a cut body: drop it (counted as abandoned).
                drop(t);
            } else {
                t.end();
            }
        }
        let ep = out.endpoint();
        let outcome = Outcome::of(rh.status);
        // The response head's arrival, to a few µs: the outcome's time and the first body
        // bytes' (read with the head).
        let resp_at = Instant::now();
        stats.record_at(ep, outcome, &cfg.ejection, candidate, resp_at);
        // `out` holds the response head as rewritten when it was read.
        let sse = rh.sse;
        let ex = Exchange {
            stats: stats.clone(),
            variant,
            start,
            status: rh.status,
            outstanding: out,
            conn: None,
            pool: self.worker.pool.clone(),
            ejection: cfg.ejection.clone(),
            log: self.log.take(),
        };
        let (mut obs, _, _) = Observer::new(ex, sse, pair);
        let relayed = self
            .relay(&mut up, &mut ubuf, rh, &mut obs, resp_at, cfg, sleep)
            .await;
        self.fast.give(ubuf);
        match relayed {
            Ok(reusable) => {
                let end = Instant::now();
                if obs.finish_at(None, end) && reusable {
                    self.fast.put(up, end);
                }
                self.answered_at = Some(end);
                if refused {
                    // The answer said `connection: close`. Read (a bounded amount of) the
                    // rest of the body first, so that closing does not reset a client still
                    // sending it before it has read the answer.
                    let _ = self.drain(body, sleep).await;
                    return Ok(false);
                }
                Ok(!close)
            }
            Err(RelayError::Upstream(f)) => {
                obs.finish(Some(f));
                Err(())
            }
            Err(RelayError::Client) => {
                obs.cancel();
                Err(())
            }
        }
    }

    /// Finds the route and the cohort key: routing header, else the JSON body's prefix. Body
    /// bytes read for it stay in `buf` (Content-Length) or are decoded into `prefix` (chunked).
    /// `Err(None)`: the client went away.
    async fn resolve(
        &mut self,
        snap: &Snapshot,
        d: &Digest,
        head: Range<usize>,
        body: &mut BodyIn,
        prefix: &mut Vec<u8>,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<(Arc<ModelRoute>, Option<u64>), Option<Reject>> {
        let cfg = snap.config();
        let header_route = match &d.model {
            Some(r) => {
                let v = &self.buf[head.start..][r.clone()];
                let name = std::str::from_utf8(v).map_err(|_| {
                    Some(Reject::UnknownModel(
                        String::from_utf8_lossy(v).into_owned(),
                    ))
                })?;
                Some(
                    snap.model(name)
                        .ok_or_else(|| Some(Reject::UnknownModel(name.to_owned())))?
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
        let mut scanner = None;
        if scan_needed && !matches!(body, BodyIn::Done) && d.json {
            let mut sc = JsonPrefixScanner::new(field, cfg.limits.model_prefix);
            let outcome = self.scan(&mut sc, body, prefix, cfg, sleep).await?;
            match outcome {
                Ok(()) => scanner = Some(sc),
                Err(ScanError::NotAnObject) if header_route.is_none() => {}
                Err(ScanError::LimitReached { .. }) if sc.model().is_some() => scanner = Some(sc),
                Err(e) if header_route.is_none() => return Err(Some(Reject::from(e))),
                Err(_) => {}
            }
        }
        let route = match (header_route, scanner.as_ref().and_then(|s| s.model())) {
            (Some(r), _) => r,
            (None, Some(name)) => snap
                .model(name)
                .ok_or_else(|| Some(Reject::UnknownModel(name.to_owned())))?
                .clone(),
            (None, None) => snap.default_model().ok_or(Some(Reject::NoModel))?.clone(),
        };
        let head_bytes = &self.buf[head];
        let key = match &route.cohort {
            Cohort::Random => None,
            Cohort::Header(h) => find_header(head_bytes, h.as_bytes()).map(hash64),
            Cohort::ApiKey => d
                .api_key
                .as_ref()
                .map(|r| hash64(strip_bearer(&head_bytes[r.clone()]))),
            Cohort::BodyField(_) => scanner
                .as_ref()
                .and_then(|s| s.field())
                .map(|f| hash64(f.as_bytes())),
        };
        Ok((route, key))
    }

    /// Feeds the body to the scanner until it is done, fails, or the body ends. Content-Length
    /// bytes are left unconsumed in `buf`; chunked data is decoded into `prefix`.
    async fn scan(
        &mut self,
        sc: &mut JsonPrefixScanner,
        body: &mut BodyIn,
        prefix: &mut Vec<u8>,
        cfg: &Config,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<Result<(), ScanError>, Option<Reject>> {
        let mut scanned = 0usize;
        loop {
            match body {
                BodyIn::Length(n) => {
                    let avail =
                        (self.buf.len() - self.pos).min(usize::try_from(*n).unwrap_or(usize::MAX));
                    if avail > scanned {
                        let fed = sc.feed(&self.buf[self.pos + scanned..self.pos + avail]);
                        scanned = avail;
                        match fed {
                            Ok(Progress::Done) => return Ok(Ok(())),
                            Ok(Progress::NeedMore) => {}
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    if avail as u64 == *n {
                        return Ok(sc.finish());
                    }
                    // Room for all the scan may still read, in one allocation: growing by
                    // doubling would copy a 64 KiB prompt four times over on its way in.
                    let rest = usize::try_from(*n - avail as u64).unwrap_or(usize::MAX);
                    let want = rest.min(cfg.limits.model_prefix.saturating_sub(scanned));
                    if self.buf.capacity() - self.buf.len() < want {
                        self.buf.reserve(want);
                    }
                }
                BodyIn::Chunked(dec) => {
                    while self.pos < self.buf.len() {
                        let step = dec
                            .step(&self.buf[self.pos..])
                            .map_err(|e| Some(Reject::Framing(format!("chunked body: {e}"))))?;
                        let data = &self.buf[self.pos..][step.data.clone()];
                        self.pos += step.consumed;
                        if !data.is_empty() {
                            prefix.extend_from_slice(data);
                            if prefix.len() as u64 > cfg.limits.max_body {
                                return Err(Some(Reject::BodyTooLarge(cfg.limits.max_body)));
                            }
                            match sc.feed(data) {
                                Ok(Progress::Done) => return Ok(Ok(())),
                                Ok(Progress::NeedMore) => {}
                                Err(e) => return Ok(Err(e)),
                            }
                        }
                        if step.done {
                            *body = BodyIn::Done;
                            return Ok(sc.finish());
                        }
                    }
                }
                BodyIn::Done => return Ok(sc.finish()),
            }
            // The buffer is never compacted here: the head (read again for the cohort key and
            // the mirror) and the unconsumed body prefix stay where they are.
            match fill(&self.io, &mut self.buf, sleep, body_deadline(cfg)).await {
                Ok(Fill::Data) => {}
                _ => return Err(None),
            }
        }
    }

    /// Connects (or reuses) and sends the head, the body prefix and the rest of the body, then
    /// reads the response head. Retries another endpoint on connect failures, and a fresh
    /// connection when a pooled one turns out closed before anything was streamed. With
    /// `fallback` (another backend can take the request), an ejected pick means every endpoint
    /// is ejected: give up at once instead of trying one anyway.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        set: &EndpointSet,
        key: Option<&[u8]>,
        d: &Digest,
        body: &mut BodyIn,
        prefix: &[u8],
        tee: &mut Option<ShadowTee>,
        (stats, candidate): (&crate::observe::ModelStats, bool),
        resp: RespOut<'_>,
        now: Instant,
        fallback: bool,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<(UpConn, crate::endpoint::Outstanding, Vec<u8>, RespInfo), SendError> {
        let cfg = resp.cfg;
        let mut last = None;
        // Endpoints whose connect failed in this request.
        let (mut tried, mut failed) = ([0u64; CONNECT_ATTEMPTS], 0);
        let mut attempts = 0;
        let mut teed = tee.is_none();
        if let BodyIn::Length(n) = body {
            let n = *n;
            if fallback
                && !cfg.routing.candidate_fallback_status.is_empty()
                && n <= BODY_READ as u64
            {
                // The candidate's answer may be replaced by stable's: keep the whole body.
                self.read_whole(n as usize, cfg, sleep).await?;
            } else {
                self.read_ahead(n);
            }
        }
        // With somewhere else to go, trying the same endpoint again is only more waiting (a
        // candidate that times out connects would cost `connect_timeout` per try).
        let tries = if fallback {
            CONNECT_ATTEMPTS.min(set.endpoints.len())
        } else {
            CONNECT_ATTEMPTS
        };
        while attempts < tries {
            attempts += 1;
            // `now` (the caller's reading, taken when the request was ready to go) serves the
            // first choice; a retry reads the clock again.
            let now = if attempts == 1 { now } else { Instant::now() };
            let Some(ep) = set.pick_untried(key, now, &tried[..failed]) else {
                break;
            };
            if fallback && ep.is_ejected(now) {
                break;
            }
            let out = ep.acquire();
            let mut up = match self.fast.get(ep, now).await {
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
            // The head: forwarded part, then Host and framing, then body bytes at hand.
            self.out.truncate(d.upstream_head);
            self.out.extend_from_slice(b"host: ");
            self.out.extend_from_slice(ep.host_header.as_bytes());
            self.out.extend_from_slice(b"\r\n");
            let at_hand = match body {
                BodyIn::Length(n) => {
                    self.out.extend_from_slice(b"content-length: ");
                    push_decimal(&mut self.out, *n);
                    self.out.extend_from_slice(b"\r\n\r\n");
                    (self.buf.len() - self.pos).min(usize::try_from(*n).unwrap_or(usize::MAX))
                }
                BodyIn::Chunked(_) => {
                    self.out
                        .extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    if !prefix.is_empty() {
                        chunk(&mut self.out, prefix);
                    }
                    0
                }
                BodyIn::Done if !prefix.is_empty() => {
                    // A chunked body fully read while scanning: send it with a length.
                    self.out.extend_from_slice(b"content-length: ");
                    push_decimal(&mut self.out, prefix.len() as u64);
                    self.out.extend_from_slice(b"\r\n\r\n");
                    self.out.extend_from_slice(prefix);
                    0
                }
                BodyIn::Done => {
                    if d.framing != Framing::Empty {
                        self.out.extend_from_slice(b"content-length: 0\r\n");
                    }
                    self.out.extend_from_slice(b"\r\n");
                    0
                }
            };
            // The whole request is in memory: it can be sent again on a fresh connection.
            let replayable = match body {
                BodyIn::Length(n) => at_hand as u64 == *n,
                BodyIn::Chunked(_) => false,
                BodyIn::Done => true,
            };
            let at = self.pos;
            let n0 = match body {
                BodyIn::Length(n) => Some(*n),
                _ => None,
            };
            let wrote = write2(&mut up.io, &self.out, &self.buf[at..at + at_hand]).await;
            if let Err(e) = wrote {
                if up.reused && replayable {
                    attempts -= 1;
                    continue;
                }
                stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                return Err(SendError::Reject(Reject::Upstream(UpstreamError::Connect(
                    e,
                ))));
            }
            if !teed {
                teed = true;
                if let BodyIn::Length(_) = body {
                    tee_send(tee, &self.buf[at..at + at_hand]);
                } else {
                    tee_send(tee, prefix);
                }
            }
            self.pos += at_hand;
            if let BodyIn::Length(n) = body {
                *n -= at_hand as u64;
                if *n == 0 {
                    *body = BodyIn::Done;
                }
            }
            // An upstream may answer before it has read the whole body (a 413, a failed
            // authorisation) and close: the write fails, but its answer is in the socket.
            let refused = self
                .stream_body(&mut up, body, tee, cfg, sleep, prefix.len() as u64)
                .await?;
            // The rest of the request body is not sent: the client connection closes after
            // this answer.
            let resp = RespOut {
                close: resp.close || refused.is_some(),
                ..resp
            };
            let mut ubuf = self.fast.buf();
            let deadline = Instant::now() + cfg.upstream.response_timeout;
            // Answers the fallback may replace, while the whole request is in hand (bodies up
            // to BODY_READ: larger ones are sometimes whole in the buffer too, but not always).
            let small = n0.unwrap_or(prefix.len() as u64) <= BODY_READ as u64;
            let refuse: &[u16] = if fallback && replayable && small {
                &cfg.routing.candidate_fallback_status
            } else {
                &[]
            };
            let read = read_response_head(
                &up.io,
                &mut ubuf,
                sleep,
                deadline,
                d.head_method,
                Some((&mut self.out, resp)),
                refuse,
            );
            let head = read.await;
            if let Some(e) = refused {
                return match head {
                    Ok(rh) => Ok((
                        up,
                        out,
                        ubuf,
                        RespInfo {
                            close: true,
                            body_refused: true,
                            ..rh
                        },
                    )),
                    // No answer after all: the write error is the story.
                    Err(_) => {
                        self.fast.give(ubuf);
                        Err(upstream_err(e))
                    }
                };
            }
            match head {
                Ok(rh) => return Ok((up, out, ubuf, rh)),
                Err(HeadFail::Closed) if up.reused && replayable => {
                    // A pooled connection the upstream had closed: send it again, fresh.
                    self.fast.give(ubuf);
                    self.pos = at;
                    if let Some(n) = n0 {
                        *body = BodyIn::Length(n);
                    }
                    attempts -= 1;
                    continue;
                }
                Err(HeadFail::Closed) if fallback && replayable => {
                    // A fresh connection closed or reset before a byte of an answer (a server
                    // going down): the whole request is in hand, so the fallback takes it.
                    stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                    self.fast.give(ubuf);
                    self.pos = at;
                    if let Some(n) = n0 {
                        *body = BodyIn::Length(n);
                    }
                    return Err(SendError::Unreached(Reject::Upstream(
                        UpstreamError::Connect(io::Error::other(
                            "upstream closed without a response",
                        )),
                    )));
                }
                Err(HeadFail::Refused(rh)) => {
                    // The candidate answered with a status the fallback replaces
                    // (`routing.candidate_fallback_status`): nothing of it has been sent, and
                    // the whole request is in hand, so stable takes it. The answer is dropped
                    // unread; its connection is kept when the answer is whole in the buffer.
                    let outcome = Outcome::of(rh.status);
                    stats.record(ep, outcome, &cfg.ejection, candidate);
                    let whole = match rh.framing {
                        Framing::Empty => ubuf.len() == rh.len,
                        Framing::Length(n) => (ubuf.len() - rh.len) as u64 == n,
                        Framing::Chunked | Framing::Close => false,
                    };
                    self.fast.give(ubuf);
                    if whole && !rh.close {
                        self.fast.put(up, Instant::now());
                    }
                    self.pos = at;
                    if let Some(n) = n0 {
                        *body = BodyIn::Length(n);
                    }
                    return Err(SendError::Unreached(Reject::Upstream(
                        UpstreamError::Connect(io::Error::other(format!(
                            "the candidate answered {}",
                            rh.status
                        ))),
                    )));
                }
                Err(HeadFail::Timeout) => {
                    stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                    return Err(SendError::Reject(Reject::UpstreamTimeout(
                        cfg.upstream.response_timeout,
                    )));
                }
                Err(fail) => {
                    stats.record(ep, Outcome::Failure, &cfg.ejection, candidate);
                    let e = match fail {
                        HeadFail::Bad(e) => io::Error::other(format!("invalid response head: {e}")),
                        HeadFail::Io(e) => e,
                        _ => io::Error::other("upstream closed without a response"),
                    };
                    return Err(SendError::Reject(Reject::Upstream(UpstreamError::Connect(
                        e,
                    ))));
                }
            }
        }
        Err(SendError::Unreached(match last {
            Some(e) => Reject::Upstream(e),
            None => Reject::NoEndpoint(String::new()),
        }))
    }

    /// Reads until `n` body bytes are in the buffer (a body the fallback may send again).
    async fn read_whole(
        &mut self,
        n: usize,
        cfg: &Config,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<(), SendError> {
        if self.buf.capacity() - self.pos < n {
            self.buf.reserve(n - (self.buf.len() - self.pos));
        }
        while self.buf.len() - self.pos < n {
            self.read_body(cfg, sleep).await?;
        }
        Ok(())
    }

    /// One read of request body bytes into the buffer; the client's silence for the idle
    /// timeout (or the head timeout, if longer), its end or an error is [`SendError::Client`].
    async fn read_body(
        &mut self,
        cfg: &Config,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<(), SendError> {
        match fill(&self.io, &mut self.buf, sleep, body_deadline(cfg)).await {
            Ok(Fill::Data) => Ok(()),
            _ => Err(SendError::Client),
        }
    }

    /// Takes body bytes that have already arrived (one read, no wait) before the head goes
    /// upstream, so that the head and a body of up to [`BODY_READ`] leave in one write: a
    /// 64 KiB body otherwise arrives in the 8 KiB first read plus one more, and went upstream
    /// in two writes. `n`: body bytes still expected, some of them in the buffer already.
    fn read_ahead(&mut self, n: u64) {
        let have = self.buf.len() - self.pos;
        let missing = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_sub(have);
        if missing == 0 {
            return;
        }
        let want = missing.min(BODY_READ);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        // Errors and end of stream are met again (and answered) by the next real read.
        let _ = read_now(&self.io, &mut self.buf);
    }

    /// Streams the rest of the request body upstream, counted against the body limit with
    /// the `decoded` bytes of a chunked body already sent (the prefix read to find the model).
    /// `Ok(Some(e))`: the upstream stopped taking the body (it may have answered already).
    async fn stream_body(
        &mut self,
        up: &mut UpConn,
        body: &mut BodyIn,
        tee: &mut Option<ShadowTee>,
        cfg: &Config,
        sleep: &mut Pin<&mut Sleep>,
        decoded: u64,
    ) -> Result<Option<io::Error>, SendError> {
        let mut sent = decoded;
        let idle = cfg.upstream.idle_timeout;
        loop {
            match body {
                BodyIn::Done => return Ok(None),
                BodyIn::Length(n) => {
                    let avail =
                        (self.buf.len() - self.pos).min(usize::try_from(*n).unwrap_or(usize::MAX));
                    if avail > 0 {
                        let data = &self.buf[self.pos..self.pos + avail];
                        if let Err(e) = write_within(&mut up.io, data, sleep, idle).await {
                            return Ok(Some(e));
                        }
                        tee_send(tee, data);
                        yield_to_shadow(tee).await;
                        self.pos += avail;
                        *n -= avail as u64;
                        if *n == 0 {
                            *body = BodyIn::Done;
                            return Ok(None);
                        }
                    }
                }
                BodyIn::Chunked(dec) => {
                    self.out.clear();
                    let mut done = false;
                    while self.pos < self.buf.len() {
                        let step = dec.step(&self.buf[self.pos..]).map_err(|e| {
                            SendError::Reject(Reject::Framing(format!("chunked body: {e}")))
                        })?;
                        let data = &self.buf[self.pos..][step.data.clone()];
                        if !data.is_empty() {
                            sent += data.len() as u64;
                            if sent > cfg.limits.max_body {
                                return Err(SendError::Reject(Reject::BodyTooLarge(
                                    cfg.limits.max_body,
                                )));
                            }
                            chunk(&mut self.out, data);
                            tee_send(tee, data);
                        }
                        self.pos += step.consumed;
                        if step.done {
                            done = true;
                            break;
                        }
                    }
                    if done {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    if !self.out.is_empty() {
                        if let Err(e) = write_within(&mut up.io, &self.out, sleep, idle).await {
                            return Ok(Some(e));
                        }
                    }
                    yield_to_shadow(tee).await;
                    if done {
                        *body = BodyIn::Done;
                        return Ok(None);
                    }
                }
            }
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            }
            // A large body with a known length is read in reads of up to BODY_READ (one
            // system call and one write upstream per 64 KiB instead of eight); the buffer goes
            // back to the free list after the request, so idle connections still hold none.
            // Not while mirroring: 8 KiB reads pace the primary so that a shadow reading a
            // little slower stays within `shadow.buffer` instead of being abandoned.
            if let (BodyIn::Length(n), None) = (&*body, &*tee) {
                let want = usize::try_from(*n).unwrap_or(usize::MAX).min(BODY_READ);
                if self.buf.capacity() - self.buf.len() < want {
                    self.buf.reserve(want);
                }
            }
            self.read_body(cfg, sleep).await?;
        }
    }

    /// Writes the rewritten response head (in `out`) with the first body bytes, then relays
    /// the body read by read. Returns whether the upstream connection can be reused.
    /// `head_at`: when the response head was read (the time of the body bytes read with it).
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &mut self,
        up: &mut UpConn,
        ubuf: &mut Vec<u8>,
        rh: RespInfo,
        obs: &mut Observer,
        head_at: Instant,
        cfg: &Config,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<bool, RelayError> {
        let mut upos = rh.len;
        // The bytes read with the head arrived with it; later reads are timed as they come.
        let mut read_at = Some(head_at);
        let idle = cfg.upstream.idle_timeout;
        match rh.framing {
            Framing::Empty => {
                self.io
                    .write_all(&self.out)
                    .await
                    .map_err(|_| RelayError::Client)?;
                Ok(!rh.close && upos == ubuf.len())
            }
            Framing::Length(mut n) => loop {
                let avail = (ubuf.len() - upos).min(usize::try_from(n).unwrap_or(usize::MAX));
                let at = read_at.take();
                if avail > 0 {
                    obs.on_data(&ubuf[upos..upos + avail], at.unwrap_or_else(Instant::now));
                }
                let wrote = if self.out.is_empty() {
                    self.io.write_all(&ubuf[upos..upos + avail]).await
                } else {
                    let r = write2(&mut self.io, &self.out, &ubuf[upos..upos + avail]).await;
                    self.out.clear();
                    r
                };
                wrote.map_err(|_| RelayError::Client)?;
                upos += avail;
                n -= avail as u64;
                if n == 0 {
                    return Ok(!rh.close && upos == ubuf.len());
                }
                ubuf.clear();
                upos = 0;
                let deadline = Instant::now() + idle;
                if upstream_eof(fill(&up.io, ubuf, sleep, deadline).await)? {
                    return Err(RelayError::Upstream(StreamFailure::UpstreamReset));
                }
            },
            Framing::Chunked | Framing::Close => {
                let mut dec = (rh.framing == Framing::Chunked).then(ChunkedDecoder::new);
                loop {
                    let now = read_at.take().unwrap_or_else(Instant::now);
                    let mut done = false;
                    while upos < ubuf.len() {
                        let (data, consumed, end) = match dec.as_mut() {
                            Some(dec) => {
                                let step = dec.step(&ubuf[upos..]).map_err(|_| {
                                    RelayError::Upstream(StreamFailure::UpstreamReset)
                                })?;
                                (
                                    upos + step.data.start..upos + step.data.end,
                                    step.consumed,
                                    step.done,
                                )
                            }
                            None => (upos..ubuf.len(), ubuf.len() - upos, false),
                        };
                        if !data.is_empty() {
                            obs.on_data(&ubuf[data.clone()], now);
                            chunk(&mut self.out, &ubuf[data]);
                        }
                        upos += consumed;
                        if end {
                            done = true;
                            break;
                        }
                    }
                    if done {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    if !self.out.is_empty() {
                        self.io
                            .write_all(&self.out)
                            .await
                            .map_err(|_| RelayError::Client)?;
                        self.out.clear();
                    }
                    if done {
                        return Ok(!rh.close && upos == ubuf.len());
                    }
                    ubuf.clear();
                    upos = 0;
                    let deadline = Instant::now() + idle;
                    if upstream_eof(fill(&up.io, ubuf, sleep, deadline).await)? {
                        if dec.is_some() {
                            return Err(RelayError::Upstream(StreamFailure::UpstreamReset));
                        }
                        // A close-delimited body ended: end our chunked framing.
                        self.io
                            .write_all(b"0\r\n\r\n")
                            .await
                            .map_err(|_| RelayError::Client)?;
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Answers a rejected request and discards its unread body (bounded) so the client reads
    /// the answer, not a reset. Returns whether the connection can carry another request.
    async fn reject(
        &mut self,
        rej: Reject,
        body: BodyIn,
        close: bool,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<bool, ()> {
        self.reject_by(rej, None, body, close, sleep).await
    }

    /// [`Self::reject`] of a request a variant's backend failed, said in `x-rollgate-variant`
    /// (when `by` is given: `routing.variant_header`), as its answers are.
    async fn reject_by(
        &mut self,
        rej: Reject,
        by: Option<Variant>,
        body: BodyIn,
        close: bool,
        sleep: &mut Pin<&mut Sleep>,
    ) -> Result<bool, ()> {
        tracing::debug!(error = %rej, "request rejected");
        self.worker.shared.stats.rejected(rej.reason());
        if let Some(mut log) = self.log.take() {
            log.finish_here(by, rej.status().as_u16(), Some(rej.reason_str()), None);
        }
        // A broken chunked body cannot be skipped: close.
        let close = close
            || matches!(rej, Reject::Malformed(_) | Reject::Framing(_))
                && matches!(body, BodyIn::Chunked(_));
        self.write_reject(&rej, by, close).await.map_err(drop)?;
        if close {
            return Ok(false);
        }
        self.drain(body, sleep).await
    }

    /// Ends the access log line of a request whose client went away before an answer.
    fn log_cancelled(&mut self, variant: Option<Variant>) {
        if let Some(mut log) = self.log.take() {
            log.finish_here(variant, 0, None, Some("cancelled"));
        }
    }

    async fn write_reject(
        &mut self,
        rej: &Reject,
        by: Option<Variant>,
        close: bool,
    ) -> io::Result<()> {
        let body = rej.json();
        let mut resp = Vec::with_capacity(body.len() + 160);
        full_head(&mut resp, rej.status(), body.len(), close);
        if let Some(v) = by {
            // `full_head` ends with the blank line; the header goes before it.
            resp.truncate(resp.len() - 2);
            resp.extend_from_slice(b"x-rollgate-variant: ");
            resp.extend_from_slice(v.as_str().as_bytes());
            resp.extend_from_slice(b"\r\n\r\n");
        }
        resp.extend_from_slice(body.as_bytes());
        self.io.write_all(&resp).await
    }

    /// Discards the rest of the request body. Ok(true): the next request can be read.
    async fn drain(&mut self, mut body: BodyIn, sleep: &mut Pin<&mut Sleep>) -> Result<bool, ()> {
        let deadline = Instant::now() + DRAIN_MAX_TIME;
        let mut seen = 0u64;
        loop {
            match &mut body {
                BodyIn::Done => return Ok(true),
                BodyIn::Length(n) => {
                    let avail =
                        (self.buf.len() - self.pos).min(usize::try_from(*n).unwrap_or(usize::MAX));
                    self.pos += avail;
                    *n -= avail as u64;
                    seen += avail as u64;
                    if *n == 0 {
                        return Ok(true);
                    }
                }
                BodyIn::Chunked(dec) => {
                    while self.pos < self.buf.len() {
                        let Ok(step) = dec.step(&self.buf[self.pos..]) else {
                            return Ok(false);
                        };
                        self.pos += step.consumed;
                        seen += step.consumed as u64;
                        if step.done {
                            return Ok(true);
                        }
                    }
                }
            }
            if seen > DRAIN_MAX_BYTES {
                return Ok(false);
            }
            self.buf.clear();
            self.pos = 0;
            match fill(&self.io, &mut self.buf, sleep, deadline).await {
                Ok(Fill::Data) => {}
                _ => return Ok(false),
            }
        }
    }
}

/// Why sending the request did not produce a response head.
enum SendError {
    Reject(Reject),
    /// No endpoint of the set answered and another backend can take the request whole: none
    /// could be reached (or, with `fallback`, every one is ejected), or, with `fallback`, a
    /// fresh connection closed before a byte of an answer while the whole request was in hand,
    /// or the answer's status is one `routing.candidate_fallback_status` replaces.
    Unreached(Reject),
    /// The client went away mid-body.
    Client,
}

enum RelayError {
    Upstream(StreamFailure),
    Client,
}

fn upstream_err(e: io::Error) -> SendError {
    SendError::Reject(Reject::Upstream(UpstreamError::Connect(e)))
}

/// The framing facts of a response head (the head itself stays in the upstream buffer).
#[derive(Clone, Copy, Debug)]
struct RespInfo {
    status: u16,
    len: usize,
    framing: Framing,
    close: bool,
    /// The body is an event stream.
    sse: bool,
    /// The upstream answered without taking the whole request body: the client connection
    /// closes after this answer.
    body_refused: bool,
}

/// How the downstream response head is rewritten (see [`response_head`]); it is written as
/// soon as the upstream head is parsed, so that the head is parsed once.
#[derive(Clone, Copy)]
struct RespOut<'c> {
    variant: Variant,
    cfg: &'c Config,
    /// The downstream connection closes after this response.
    close: bool,
}

enum HeadFail {
    /// Closed before a single byte of a response.
    Closed,
    /// A final head with one of the statuses the caller refuses (`routing.
    /// candidate_fallback_status`); nothing of it was written anywhere.
    Refused(RespInfo),
    Timeout,
    Bad(HeadError),
    Io(io::Error),
}

/// Reads a final response head (informational 1xx heads are skipped). A final head whose
/// status is in `refuse` is [`HeadFail::Refused`], before `rewrite` touches anything.
async fn read_response_head(
    io: &TcpStream,
    ubuf: &mut Vec<u8>,
    sleep: &mut Pin<&mut Sleep>,
    deadline: Instant,
    head_request: bool,
    rewrite: Option<(&mut Vec<u8>, RespOut<'_>)>,
    refuse: &[u16],
) -> Result<RespInfo, HeadFail> {
    let mut start = 0;
    loop {
        if ubuf.len() > start {
            let mut hdrs = parse::headers();
            match parse::parse_response(&ubuf[start..], &mut hdrs, head_request) {
                Ok(Some(h)) if (100..200).contains(&h.status) => {
                    if h.status == 101 {
                        return Err(HeadFail::Bad(HeadError::Syntax("unexpected 101")));
                    }
                    start += h.len;
                    continue;
                }
                Ok(Some(h)) if refuse.contains(&h.status) => {
                    let info = RespInfo {
                        status: h.status,
                        len: h.len,
                        framing: h.framing,
                        close: h.close,
                        sse: false,
                        body_refused: false,
                    };
                    if start > 0 {
                        ubuf.drain(..start);
                    }
                    return Err(HeadFail::Refused(info));
                }
                Ok(Some(h)) => {
                    let sse = match rewrite {
                        Some((out, w)) => {
                            // The request head in `out` is not needed again: a response came.
                            out.clear();
                            response_head(out, &h, w.variant, w.cfg, w.close)
                        }
                        None => h.headers.iter().any(|h| {
                            classify(h.name.as_bytes()) == Hdr::ContentType
                                && h.value.starts_with(b"text/event-stream")
                        }),
                    };
                    let info = RespInfo {
                        status: h.status,
                        len: h.len,
                        framing: h.framing,
                        close: h.close,
                        sse,
                        body_refused: false,
                    };
                    if start > 0 {
                        ubuf.drain(..start);
                    }
                    return Ok(info);
                }
                Ok(None) => {}
                Err(e) => return Err(HeadFail::Bad(e)),
            }
            if ubuf.len() - start > 256 * 1024 {
                return Err(HeadFail::Bad(HeadError::TooManyHeaders));
            }
        }
        let before = ubuf.len();
        match fill(io, ubuf, sleep, deadline).await {
            Ok(Fill::Data) => {}
            Ok(Fill::Timeout) => return Err(HeadFail::Timeout),
            Ok(Fill::Eof) if before == 0 => return Err(HeadFail::Closed),
            Ok(Fill::Eof) => return Err(HeadFail::Bad(HeadError::Syntax("truncated head"))),
            Err(e) if before == 0 && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(HeadFail::Closed)
            }
            Err(e) => return Err(HeadFail::Io(e)),
        }
    }
}

/// One read of a response body: `Ok(true)` at end of stream; a silent upstream is an idle
/// timeout and a read error a reset.
fn upstream_eof(read: io::Result<Fill>) -> Result<bool, RelayError> {
    match read {
        Ok(Fill::Data) => Ok(false),
        Ok(Fill::Eof) => Ok(true),
        Ok(Fill::Timeout) => Err(RelayError::Upstream(StreamFailure::IdleTimeout)),
        Err(_) => Err(RelayError::Upstream(StreamFailure::UpstreamReset)),
    }
}

/// Makes the connection's one timer fire no later than `deadline`.
///
/// The timer is only ever moved earlier here, never later: each request waits for its head,
/// then its response (a later deadline), then the next head (later again), and moving a tokio
/// timer earlier re-registers it (a lock and a wheel removal and insertion), so keeping it at
/// the earliest deadline still ahead saves that per request. It then fires early now and then
/// (once per `header_read_timeout` on a busy connection); [`expired`] tells a real deadline from
/// an early one and re-arms it.
fn arm(sleep: &mut Pin<&mut Sleep>, deadline: Instant) {
    if sleep.deadline() > deadline {
        sleep.as_mut().reset(deadline);
    }
}

/// The timer fired: whether `deadline` has passed. If not (it was armed for an earlier one),
/// it is re-armed for `deadline` and the wait goes on.
fn expired(sleep: &mut Pin<&mut Sleep>, deadline: Instant) -> bool {
    if Instant::now() >= deadline {
        return true;
    }
    sleep.as_mut().reset(deadline);
    false
}

/// Reads what is available (waiting until `deadline` when nothing is).
async fn fill(
    io: &TcpStream,
    buf: &mut Vec<u8>,
    sleep: &mut Pin<&mut Sleep>,
    deadline: Instant,
) -> io::Result<Fill> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(pool::BUF_SIZE);
    }
    loop {
        match read_now(io, buf) {
            Ok(0) => return Ok(Fill::Eof),
            Ok(_) => return Ok(Fill::Data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        arm(sleep, deadline);
        tokio::select! {
            biased;
            r = read_ready(io) => r?,
            () = sleep.as_mut() => if expired(sleep, deadline) { return Ok(Fill::Timeout) },
        }
    }
}

/// How long a request body may go silent: the idle timeout, or the head timeout if longer.
fn body_deadline(cfg: &Config) -> Instant {
    Instant::now()
        + cfg
            .upstream
            .idle_timeout
            .max(cfg.limits.header_read_timeout)
}

/// Waits until the event loop has seen `io` readable. The poll form: the task's waker sits in
/// the socket's one reader slot, where `readable()`'s future would link a waiter node into the
/// socket's list and unlink it again (≈ 230 instructions more per wait, two waits per request).
/// One task per socket reads it, so the single slot is enough.
///
/// Readiness already flagged (the usual case once the task is woken) is read from the flag alone,
/// without the cooperative-budget bookkeeping of a poll; reads that follow are `try_read`s,
/// which do not use the budget either, and each wait that finds nothing yields.
fn read_ready(io: &TcpStream) -> impl std::future::Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(move |cx| {
        if io.try_io(Interest::READABLE, || Ok(())).is_ok() {
            return std::task::Poll::Ready(Ok(()));
        }
        io.poll_read_ready(cx)
    })
}

/// Reads what has arrived into `buf`'s spare room, without waiting (`WouldBlock` if nothing).
/// A read that leaves room over emptied the socket, so the runtime's readiness flag is cleared.
fn read_now(io: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let spare = buf.capacity() - buf.len();
    let n = io.try_read_buf(buf)?;
    if n > 0 && n < spare {
        drained(io);
    }
    Ok(n)
}

/// After a read that did not fill the space offered, the socket is empty: clear the runtime's
/// readiness flag (no system call) so that the next read waits for the event loop instead of
/// first making a `recv` that fails with `EAGAIN`. Safe with edge-triggered epoll: bytes that
/// arrive later raise a new event, and tokio ignores the clear if an event came meanwhile.
fn drained(io: &TcpStream) {
    let _ = io.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}

/// Writes request body bytes upstream. An upstream that takes none of them for `idle` fails
/// the write (`TimedOut`): a server that stopped reading cannot hold the exchange forever.
/// A write the socket takes at once costs no clock read and no timer.
async fn write_within(
    io: &mut TcpStream,
    data: &[u8],
    sleep: &mut Pin<&mut Sleep>,
    idle: Duration,
) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let n = match io.try_write(&data[done..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let deadline = Instant::now() + idle;
                arm(sleep, deadline);
                // `write`, not `writable()`: a second use of tokio's generic readiness future
                // made the compiler stop inlining it into every read (~280 instructions per
                // request, callgrind).
                tokio::select! {
                    biased;
                    r = io.write(&data[done..]) => r?,
                    () = sleep.as_mut() => if expired(sleep, deadline) {
                        return Err(io::ErrorKind::TimedOut.into());
                    } else {
                        continue;
                    },
                }
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// Writes `a` then `b`, as one `writev` when possible.
async fn write2(io: &mut TcpStream, a: &[u8], b: &[u8]) -> io::Result<()> {
    if b.is_empty() {
        return io.write_all(a).await;
    }
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let n = if done < a.len() {
            let bufs = [io::IoSlice::new(&a[done..]), io::IoSlice::new(b)];
            io.write_vectored(&bufs).await?
        } else {
            io.write(&b[done - a.len()..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

/// The shadow task runs on this worker's thread: when its queue is over half full, yield (a
/// bounded number of times) so it can drain before the primary reads more. A client sending faster
/// than the loop would otherwise yield outruns a healthy shadow and abandons the mirror; a stalled
/// shadow costs only these bounded yields until its queue overflows.
async fn yield_to_shadow(tee: &Option<ShadowTee>) {
    for _ in 0..SHADOW_YIELDS {
        match tee {
            Some(t) if t.pressed() => tokio::task::yield_now().await,
            _ => return,
        }
    }
}

fn tee_send(tee: &mut Option<ShadowTee>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if let Some(t) = tee.as_mut() {
        if !t.send(Bytes::copy_from_slice(data)) {
            *tee = None;
        }
    }
}

/// Appends `n` in decimal (`write!` goes through the formatting machinery: several hundred
/// instructions for each number of each head).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends one chunk (size line, data, CRLF).
fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let (mut i, mut n) = (digits.len(), data.len());
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Head of a response the gateway answers itself.
fn full_head(out: &mut Vec<u8>, status: StatusCode, len: usize, close: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    push_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `date: <IMF-fixdate>` for now. The text is made at most once a second per thread
/// (as hyper does); only answers the gateway makes itself and upstream answers without a date
/// need it.
fn push_date(out: &mut Vec<u8>) {
    const LEN: usize = 29; // "Sun, 06 Nov 1994 08:49:37 GMT"
    thread_local! {
        static DATE: std::cell::Cell<(u64, [u8; LEN])> =
            const { std::cell::Cell::new((u64::MAX, [0; LEN])) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (at, mut text) = DATE.get();
    if at != secs {
        let made = httpdate::fmt_http_date(now);
        if made.len() != LEN {
            return;
        }
        text.copy_from_slice(made.as_bytes());
        DATE.set((secs, text));
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(&text);
    out.extend_from_slice(b"\r\n");
}

enum Digested {
    Unusual,
    Bad(HeadError),
    TooLarge(Reject),
}

/// Parses a request head, applies the header limits, notes what routing needs, and writes the
/// upstream request line and forwarded headers into `out`.
fn digest(buf: &[u8], cfg: &Config, out: &mut Vec<u8>) -> Result<Option<Digest>, Digested> {
    let mut hdrs = parse::headers();
    let head = match parse::parse_request(buf, &mut hdrs) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(HeadError::TooManyHeaders) => {
            return Err(Digested::TooLarge(Reject::HeadersTooLarge {
                limit: cfg.limits.max_headers,
                what: "headers",
            }))
        }
        Err(e) => return Err(Digested::Bad(e)),
    };
    if head.unusual {
        return Err(Digested::Unusual);
    }
    let headers = head.headers;
    let limits = &cfg.limits;
    if headers.len() > limits.max_headers {
        return Err(Digested::TooLarge(Reject::HeadersTooLarge {
            limit: limits.max_headers,
            what: "headers",
        }));
    }
    let bytes: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    if bytes > limits.max_header_bytes {
        return Err(Digested::TooLarge(Reject::HeadersTooLarge {
            limit: limits.max_header_bytes,
            what: "bytes",
        }));
    }
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let s = v.as_ptr() as usize - base;
        s..s + v.len()
    };
    // Headers named in `Connection` are hop-by-hop too.
    let listed = Listed::of(headers);
    let mut d = Digest {
        len: head.len,
        framing: head.framing,
        close: head.close,
        expect_continue: head.expect_continue,
        head_method: head.method == "HEAD",
        // Only GETs look at the path here (inference requests are POSTs).
        models: match head.method {
            "GET" => match path_of(head.target) {
                "/v1/models" => Models::List,
                p if p.starts_with("/v1/models/") => Models::One(range(p.as_bytes())),
                _ => Models::No,
            },
            _ => Models::No,
        },
        model: None,
        variant: None,
        api_key: None,
        json: true,
        upstream_head: 0,
    };
    out.clear();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut authorization = None;
    let mut x_api_key = None;
    // Forwarded header lines are copied as they came, a run of adjacent ones at a time: the
    // lines are contiguous in `buf` (obs-fold and bare LF were refused), each from its name to
    // the next one's, the last to the head's final CRLF.
    let mut run: Option<usize> = None;
    for h in headers {
        let name = h.name.as_bytes();
        let at = name.as_ptr() as usize - base;
        let forward = match classify(name) {
            Hdr::Model if d.model.is_none() => {
                d.model = Some(range(h.value));
                true
            }
            Hdr::Variant => {
                if cfg.routing.allow_override && d.variant.is_none() {
                    d.variant = Some(range(h.value));
                }
                false
            }
            Hdr::Authorization => {
                authorization.get_or_insert(range(h.value));
                true
            }
            Hdr::ApiKey => {
                x_api_key.get_or_insert(range(h.value));
                true
            }
            Hdr::ContentType => {
                d.json = !(h.value.starts_with(b"multipart/")
                    || h.value.starts_with(b"application/octet-stream"));
                true
            }
            Hdr::HopByHop | Hdr::Connection | Hdr::ContentLength | Hdr::Host | Hdr::Shadow => false,
            Hdr::Model | Hdr::Forward | Hdr::Date => true,
        };
        if forward && !(listed.n > 0 && listed.contains(name)) {
            run.get_or_insert(at);
        } else if let Some(start) = run.take() {
            out.extend_from_slice(&buf[start..at]);
        }
    }
    if let Some(start) = run {
        out.extend_from_slice(&buf[start..head.len - 2]);
    }
    d.api_key = authorization.or(x_api_key);
    d.upstream_head = out.len();
    Ok(Some(d))
}

/// The fast path's per-request head work, for the criterion benchmarks (`bench_api`).
pub(crate) mod bench {
    use super::*;

    /// Digests a request head as a request does: parse, limits, routing notes, the upstream
    /// head written into `out`. Returns the upstream head's length (0 when not a whole head).
    pub(crate) fn request(buf: &[u8], cfg: &Config, out: &mut Vec<u8>) -> usize {
        match digest(buf, cfg, out) {
            Ok(Some(d)) => d.upstream_head,
            _ => 0,
        }
    }

    /// Parses an upstream response head and writes the downstream head into `out`, as an
    /// exchange does. Returns the downstream head's length (0 when not a whole head).
    pub(crate) fn response(buf: &[u8], cfg: &Config, out: &mut Vec<u8>) -> usize {
        let mut hdrs = parse::headers();
        let Ok(Some(head)) = parse::parse_response(buf, &mut hdrs, false) else {
            return 0;
        };
        out.clear();
        response_head(out, &head, Variant::Stable, cfg, false);
        out.len()
    }
}

/// Writes the downstream response head into `out`. Returns whether the body is SSE.
fn response_head(
    out: &mut Vec<u8>,
    head: &parse::ResponseHead<'_, '_>,
    variant: Variant,
    cfg: &Config,
    close: bool,
) -> bool {
    let headers = head.headers;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let listed = Listed::of(headers);
    let mut sse = false;
    let mut dated = false;
    for h in headers {
        let name = h.name.as_bytes();
        match classify(name) {
            Hdr::HopByHop | Hdr::Connection => continue,
            Hdr::Date => dated = true,
            Hdr::ContentLength if head.framing != Framing::Empty => continue,
            Hdr::Variant if cfg.routing.variant_header => continue,
            Hdr::ContentType if h.value.starts_with(b"text/event-stream") => sse = true,
            _ => {}
        }
        if listed.n > 0 && listed.contains(name) {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        // RFC 9110 6.6.1: a response forwarded without a date gets the time it was received.
        push_date(out);
    }
    if cfg.routing.variant_header {
        out.extend_from_slice(b"x-rollgate-variant: ");
        out.extend_from_slice(variant.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked | Framing::Close => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        Framing::Empty => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    sse
}

fn pick_variant(
    route: &ModelRoute,
    key: Option<u64>,
    override_value: Option<&[u8]>,
    cfg: &Config,
) -> Result<Variant, Reject> {
    if cfg.routing.allow_override {
        if let Some(v) = override_value {
            return match Variant::from_override(v) {
                Some(Variant::Candidate) if route.candidate.is_none() => Err(Reject::BadOverride),
                Some(v) => Ok(v),
                None => Err(Reject::BadOverride),
            };
        }
    }
    if route.weight.get() == 0 {
        return Ok(Variant::Stable);
    }
    let cohort = key.map_or_else(random_cohort, cohort_of_hash);
    Ok(if is_candidate(cohort, route.weight) {
        Variant::Candidate
    } else {
        Variant::Stable
    })
}

/// The target of the request line at the start of `head` (`METHOD SP target SP ...`; `""`
/// when it cannot be read).
fn target_of(head: &[u8]) -> &str {
    let Some(sp) = memchr::memchr(b' ', head) else {
        return "";
    };
    let rest = &head[sp + 1..];
    let target = memchr::memchr2(b' ', b'\r', rest).map_or(rest, |end| &rest[..end]);
    std::str::from_utf8(target).unwrap_or_default()
}

fn path_of(target: &str) -> &str {
    memchr::memchr(b'?', target.as_bytes()).map_or(target, |q| &target[..q])
}

fn strip_bearer(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"Bearer ").unwrap_or(v)
}

/// The first value of header `name` in a validated request head (CRLF lines, `name:value`).
fn find_header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut lines = head.split(|&b| b == b'\n').skip(1);
    lines.find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| trim(&line[colon + 1..]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_pair_keeps_the_path_of_the_request_line() {
        let head = b"POST /v1/chat/completions?api-version=2 HTTP/1.1\r\nhost: a\r\n";
        assert_eq!(target_of(head), "/v1/chat/completions?api-version=2");
        assert_eq!(path_of(target_of(head)), "/v1/chat/completions");
        assert_eq!(target_of(b"GET / HTTP/1.1\r\n"), "/");
        assert_eq!(path_of(target_of(b"GET /v1/models HTTP/1.1")), "/v1/models");
        assert_eq!(path_of("?x"), "");
        assert_eq!(target_of(b"nothing"), "");
    }

    #[test]
    fn answers_are_dated_with_the_current_second() {
        for _ in 0..2 {
            // The second call takes the cached text.
            let mut out = Vec::new();
            push_date(&mut out);
            let text = std::str::from_utf8(&out).expect("ascii");
            let value = text
                .strip_prefix("date: ")
                .and_then(|t| t.strip_suffix("\r\n"))
                .expect("one header line");
            let at = httpdate::parse_http_date(value).expect("IMF-fixdate");
            let off = std::time::SystemTime::now()
                .duration_since(at)
                .expect("not in the future");
            assert!(off < Duration::from_secs(3), "{value}: {off:?} ago");
        }
    }

    #[test]
    fn header_names_are_classified_in_any_case_and_nothing_else_matches() {
        let cases: [(&[u8], Hdr); 14] = [
            (b"Content-Length", Hdr::ContentLength),
            (b"CONTENT-TYPE", Hdr::ContentType),
            (b"connection", Hdr::Connection),
            (b"Transfer-Encoding", Hdr::HopByHop),
            (b"TE", Hdr::HopByHop),
            (b"X-Gateway-Model-Name", Hdr::Model),
            (b"x-ai-eg-model", Hdr::Model),
            (b"X-Rollgate-Variant", Hdr::Variant),
            (b"x-rollgate-SHADOW", Hdr::Shadow),
            (b"Authorization", Hdr::Authorization),
            (b"X-Api-Key", Hdr::ApiKey),
            (b"Host", Hdr::Host),
            (b"Expect", Hdr::HopByHop),
            (b"DATE", Hdr::Date),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name), want, "{}", String::from_utf8_lossy(name));
        }
        // Near misses: one byte off at the same length (`_` for `-`, a digit for a letter), a
        // longer name, and a common header that shares a length with a known one.
        for name in [
            &b"content_length"[..],
            b"content-lengti",
            b"x-gateway-model-nam3",
            b"hosts",
            b"tf",
            b"x-api_key",
            b"user-agent",
        ] {
            assert_eq!(
                classify(name),
                Hdr::Forward,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn forwarded_header_lines_go_upstream_as_they_came_and_the_rest_are_dropped() {
        let cfg = rollgate_config::parse(
            "listen: 127.0.0.1:0\nmodels:\n  - name: m\n    stable: { endpoints: [\"http://127.0.0.1:9\"] }\n",
        )
        .expect("config");
        let head = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nA:b\r\n\
C:  d e  \r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nx-gateway-model-name: m\r\n\
Content-Length: 2\r\nTE: trailers\r\nLast: z\r\n\r\n{}";
        let mut out = Vec::new();
        let d = digest(head, &cfg, &mut out)
            .ok()
            .flatten()
            .expect("a whole head");
        assert_eq!(
            String::from_utf8_lossy(&out[..d.upstream_head]),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nA:b\r\nC:  d e  \r\n\
x-gateway-model-name: m\r\nLast: z\r\n"
        );
        assert_eq!(d.len, head.len() - 2);
        assert_eq!(&head[d.model.expect("model header")], b"m");
        // A head that ends with a dropped header leaves no run open.
        let head = b"GET /v1/models HTTP/1.1\r\nA: b\r\nHost: gw\r\n\r\n";
        let d = digest(head, &cfg, &mut out)
            .ok()
            .flatten()
            .expect("a whole head");
        assert_eq!(
            &out[..d.upstream_head],
            b"GET /v1/models HTTP/1.1\r\nA: b\r\n"
        );
    }

    #[test]
    fn numbers_are_written_like_format_would() {
        for n in [0u64, 7, 10, 200, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for len in [1usize, 15, 16, 255, 4096, 65_537] {
            let mut out = Vec::new();
            chunk(&mut out, &vec![b'x'; len]);
            let expect = format!("{len:x}\r\n");
            assert!(out.starts_with(expect.as_bytes()), "{len}");
            assert_eq!(out.len(), expect.len() + len + 2);
        }
    }
}
