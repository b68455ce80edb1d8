//! The mirror pipeline: a sampled request is teed, chunk by chunk as it arrives, into a bounded
//! queue read by a shadow exchange with the candidate. The primary never waits on it: when the
//! queue is full the mirror is abandoned and the drop counted. Both answers are captured
//! (bounded) and kept as a pair for scoring, unless the scorer's queue of pairs is already full
//! when the mirror starts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, HOST};
use hyper::Request;
use rollgate_config::Shadow;
use tokio::time::Instant;

use crate::body::{BodyError, UpstreamBody};
use crate::endpoint::{EndpointSet, Outcome};
use crate::handle::Shared;
use crate::observe::{ModelStats, ShadowDrop, StatusClass, StreamFailure};
use crate::pool::Pool;
use crate::split::Variant;
use crate::sse::SseObserver;

/// Chunks queued per mirrored request, on top of the byte budget (`shadow.buffer`).
const QUEUE_CHUNKS: usize = 256;

/// What the two sides of one mirror share on their worker: the request body queued from the
/// primary to the shadow, and the pair being assembled. One allocation per mirror (the queue's
/// storage aside), no channel: both sides run on the same thread.
struct Link {
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes in `queue`.
    queued: Cell<usize>,
    /// The shadow side waiting for a chunk.
    waker: Cell<Option<Waker>>,
    /// The primary body is complete: after the queued chunks, the end of the body.
    done: Cell<bool>,
    /// The tee was dropped before the end: after the queued chunks, an abandoned mirror.
    abandoned: Cell<bool>,
    /// The shadow side no longer reads (its exchange ended).
    closed: Cell<bool>,
    why: Cell<Option<ShadowDrop>>,
    pair: RefCell<PairSlot>,
}

/// The primary side of a mirror: pushes request chunks into the shadow's queue.
pub(crate) struct ShadowTee {
    link: Rc<Link>,
    sent: u64,
    max_body: u64,
    buffer: usize,
    ended: bool,
}

/// The shadow side: the mirrored request body.
pub(crate) struct ShadowBody {
    link: Rc<Link>,
    ended: bool,
}

/// A bounded copy of a response body.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    buf: BytesMut,
    limit: usize,
    overflow: bool,
    /// Keeps nothing and never overflows: the pair is not kept (unlike `shadow.capture: 0`,
    /// whose every non-empty answer overflows and is not comparable).
    off: bool,
}

/// One side's handle on the pair being assembled; whichever side completes second publishes it.
pub(crate) struct PairSide {
    link: Rc<Link>,
    primary: bool,
    pairs: Arc<ShadowPairs>,
}

struct PairSlot {
    model: Arc<str>,
    /// The request's path; `None` when the pair is not kept (the scorer's queue was full when
    /// the mirror started): nothing is captured, and the pair is counted as unscored.
    path: Option<Arc<str>>,
    streamed: bool,
    primary: Option<Side>,
    shadow: Option<Side>,
}

/// One side of a completed pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    pub status: u16,
    /// Up to `shadow.capture` bytes of the response body.
    pub body: Bytes,
    /// The body was longer than the capture limit.
    pub overflow: bool,
    /// The stream broke (error event, truncated, reset, timeout).
    pub failed: bool,
}

/// The stable (primary) and candidate (shadow) answers to the same request.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowPair {
    pub model: Arc<str>,
    pub path: Arc<str>,
    /// The request asked for a stream (SSE bodies are compared after reassembly).
    pub streamed: bool,
    pub primary: Side,
    pub shadow: Side,
}

/// Completed pairs, bounded; the oldest are dropped, and counted, and while the queue is full
/// new mirrors capture nothing ([`ShadowPairs::wanted`]).
#[derive(Debug)]
pub(crate) struct ShadowPairs {
    pairs: Mutex<VecDeque<ShadowPair>>,
    cap: usize,
    /// `pairs.len()`, read without the lock by [`ShadowPairs::wanted`].
    len: AtomicUsize,
    /// Pairs dropped before the scorer took them, or not captured because the queue was full
    /// when their mirror started (`rollgate_proxy_shadow_pairs_unscored_total`).
    pub(crate) unscored: AtomicU64,
}

/// Everything the shadow task needs.
pub(crate) struct Mirror {
    pub(crate) parts: hyper::http::request::Parts,
    pub(crate) endpoints: Arc<crate::snapshot::ModelRoute>,
    pub(crate) key: Option<u64>,
    pub(crate) pool: Rc<Pool>,
    pub(crate) shared: Arc<Shared>,
}

// === impl Link ===

impl Link {
    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

// === impl ShadowTee ===

impl ShadowTee {
    /// Queues a chunk; false when the mirror was abandoned (the tee should be dropped).
    pub(crate) fn send(&mut self, data: Bytes) -> bool {
        let link = &*self.link;
        if link.closed.get() {
            // The exchange has ended (and counted its outcome): nothing more to send.
            return false;
        }
        self.sent += data.len() as u64;
        if self.sent > self.max_body {
            link.why.set(Some(ShadowDrop::BodyTooLarge));
            return false;
        }
        let mut queue = link.queue.borrow_mut();
        if link.queued.get() + data.len() > self.buffer || queue.len() >= QUEUE_CHUNKS {
            link.why.set(Some(ShadowDrop::Backpressure));
            return false;
        }
        link.queued.set(link.queued.get() + data.len());
        queue.push_back(data);
        drop(queue);
        link.wake();
        true
    }

    /// The mirror's queue is over half full (bytes or chunks): the primary should let the
    /// shadow task run before reading more (a bounded yield, never a wait).
    pub(crate) fn pressed(&self) -> bool {
        self.link.queued.get() > self.buffer / 2
            || self.link.queue.borrow().len() > QUEUE_CHUNKS / 2
    }

    pub(crate) fn end(mut self) {
        self.ended = true;
        self.link.done.set(true);
        self.link.wake();
    }
}

impl Drop for ShadowTee {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let link = &*self.link;
        if link.why.get().is_none() {
            // Dropped without `end()` and without a reason: the primary body was abandoned.
            link.why.set(Some(ShadowDrop::PrimaryAborted));
        }
        link.abandoned.set(true);
        link.wake();
    }
}

impl std::fmt::Debug for ShadowTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowTee")
            .field("sent", &self.sent)
            .field("queued", &self.link.queued.get())
            .finish_non_exhaustive()
    }
}

// === impl ShadowBody ===

impl ShadowBody {
    /// A chunk (or the end) is at hand: reading it now will not wait.
    pub(crate) fn has_queued(&self) -> bool {
        let link = &*self.link;
        !link.queue.borrow().is_empty() || link.done.get() || link.abandoned.get()
    }
}

impl Drop for ShadowBody {
    fn drop(&mut self) {
        self.link.closed.set(true);
        let mut queue = self.link.queue.borrow_mut();
        queue.clear();
        self.link.queued.set(0);
    }
}

impl std::fmt::Debug for ShadowBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowBody")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Body for ShadowBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let link = &*self.link;
        let next = link.queue.borrow_mut().pop_front();
        if let Some(b) = next {
            link.queued.set(link.queued.get().saturating_sub(b.len()));
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if link.done.get() {
            self.ended = true;
            return Poll::Ready(None);
        }
        if link.abandoned.get() {
            return Poll::Ready(Some(Err(BodyError::MirrorAbandoned)));
        }
        link.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

// === impl Capture ===

impl Capture {
    pub(crate) fn new(limit: usize) -> Self {
        Capture {
            limit,
            ..Capture::default()
        }
    }

    /// A capture that keeps nothing, for a pair that is not kept.
    fn off() -> Self {
        Capture {
            off: true,
            ..Capture::default()
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.off {
            return;
        }
        let room = self.limit.saturating_sub(self.buf.len());
        if data.len() > room {
            self.overflow = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

// === impl PairSide ===

impl PairSide {
    /// What this side of the pair captures of its response body: up to `limit` bytes, or
    /// nothing when the pair is not kept.
    pub(crate) fn capture(&self, limit: usize) -> Capture {
        if self.link.pair.borrow().path.is_some() {
            Capture::new(limit)
        } else {
            Capture::off()
        }
    }

    pub(crate) fn complete(self, status: u16, cap: Capture, failed: bool, sse: bool) {
        let side = Side {
            status,
            body: cap.buf.freeze(),
            overflow: cap.overflow,
            failed,
        };
        let mut slot = self.link.pair.borrow_mut();
        slot.streamed |= sse;
        if self.primary {
            slot.primary = Some(side);
        } else {
            slot.shadow = Some(side);
        }
        // Only when both sides are in: taking one side alone would lose it.
        if slot.primary.is_none() || slot.shadow.is_none() {
            return;
        }
        let Some(path) = slot.path.clone() else {
            self.pairs.unscored.fetch_add(1, Relaxed);
            return;
        };
        if let (Some(p), Some(s)) = (slot.primary.take(), slot.shadow.take()) {
            self.pairs.push(ShadowPair {
                model: slot.model.clone(),
                path,
                streamed: slot.streamed,
                primary: p,
                shadow: s,
            });
        }
    }
}

impl std::fmt::Debug for PairSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairSide")
            .field("primary", &self.primary)
            .finish_non_exhaustive()
    }
}

// === impl ShadowPairs ===

impl ShadowPairs {
    pub(crate) fn new(cap: usize) -> Self {
        ShadowPairs {
            pairs: Mutex::new(VecDeque::new()),
            cap,
            len: AtomicUsize::new(0),
            unscored: AtomicU64::new(0),
        }
    }

    /// Whether a mirror starting now should capture its pair: not while the queue is full, as
    /// the pair would only push out an older one. Against a slow shadow at the default bound
    /// about half the pairs are beyond what the scorer takes (`SHADOW_PAIRS_KEPT`); their
    /// mirrors still count the shadow's status and latency, but copy no body.
    pub(crate) fn wanted(&self) -> bool {
        self.len.load(Relaxed) < self.cap
    }

    fn push(&self, pair: ShadowPair) {
        let mut pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        if pairs.len() >= self.cap {
            pairs.pop_front();
            self.unscored.fetch_add(1, Relaxed);
        }
        pairs.push_back(pair);
        self.len.store(pairs.len(), Relaxed);
    }

    pub(crate) fn take(&self) -> Vec<ShadowPair> {
        let mut pairs = self.pairs.lock().unwrap_or_else(PoisonError::into_inner);
        self.len.store(0, Relaxed);
        pairs.drain(..).collect()
    }
}

// === impl Mirror ===

impl Mirror {
    /// Spawns an admitted mirror's exchange on hyper's client (see [`spawn`]).
    pub(crate) fn start(
        self,
        admitted: Admitted,
        path: Option<Arc<str>>,
        cfg: &Shadow,
    ) -> (ShadowTee, PairSide) {
        let route = self.endpoints.clone();
        let shared = self.shared.clone();
        let shadow = cfg.clone();
        spawn(
            admitted,
            &route,
            path,
            &shared,
            cfg,
            move |body, side| async move {
                match tokio::time::timeout(shadow.timeout, self.exchange(body, &shadow, side)).await
                {
                    Ok(res) => res.map_err(|()| ShadowDrop::UpstreamError),
                    Err(_) => Err(ShadowDrop::Timeout),
                }
            },
        )
    }

    async fn exchange(self, body: ShadowBody, cfg: &Shadow, side: PairSide) -> Result<u16, ()> {
        let Some(candidate) = self.endpoints.candidate.as_ref() else {
            return Err(());
        };
        let start = Instant::now();
        let key = self.key.map(u64::to_le_bytes);
        let ep = pick(&candidate.endpoints, key.as_ref().map(<[u8; 8]>::as_slice)).ok_or(())?;
        let _outstanding = ep.acquire();
        let Ok(mut conn) = self.pool.get(ep).await else {
            // Shadow exchanges go to candidate endpoints: a down one is ejected.
            let policy = self.shared.snapshot.load().config().ejection.clone();
            self.endpoints
                .stats
                .record(ep, Outcome::Failure, &policy, true);
            return Err(());
        };
        let mut parts = self.parts;
        parts.headers.insert(HOST, ep.host_header.clone());
        parts
            .headers
            .insert("x-rollgate-shadow", HeaderValue::from_static("1"));
        let req = Request::from_parts(parts, UpstreamBody::Shadow(body));
        let resp = conn.sender.send_request(req).await.map_err(|_| ())?;
        let status = resp.status().as_u16();
        let sse = is_sse(resp.headers());
        let mut body = resp.into_body();
        let mut cap = side.capture(cfg.capture);
        let mut obs = sse.then(SseObserver::new);
        let vs = self.endpoints.stats.variant(Variant::Shadow);
        let mut first_byte = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ())?;
            if let Some(d) = frame.data_ref() {
                cap.push(d);
                // The shadow is observed like a primary, so gates can judge it in Shadow.
                if std::mem::take(&mut first_byte) {
                    vs.ttfb.observe(start.elapsed());
                }
                if obs.as_mut().is_some_and(|o| o.feed(d).first_data) {
                    vs.ttft.observe(start.elapsed());
                }
            }
        }
        let failed = obs.as_ref().is_some_and(|o| o.error() || !o.done());
        if failed && (200..300).contains(&status) {
            let error_event = obs.as_ref().is_some_and(SseObserver::error);
            let why = if error_event {
                StreamFailure::ErrorEvent
            } else {
                StreamFailure::Truncated
            };
            vs.stream_failure(why);
        }
        let outcome = Outcome::of(status);
        let policy = self.shared.snapshot.load().config().ejection.clone();
        // Shadow exchanges go to candidate endpoints: their failures eject them too.
        self.endpoints.stats.record(ep, outcome, &policy, true);
        self.pool.put(conn);
        side.complete(status, cap, failed, sse);
        Ok(status)
    }
}

/// A mirror admitted under the model's in-flight bound; dropping it releases the slot.
pub(crate) struct Admitted {
    _slot: InflightGuard,
}

/// Takes an in-flight slot for a mirror of `route`, or counts the drop: the first thing a
/// sampled request does. Against a slow shadow most sampled requests are refused, so a full
/// bound refuses on a plain load (no atomic read-modify-write) and a refusal reads no clock
/// when the caller has one: `now` is the request's clock reading, or `None` to read the clock
/// only when the pace needs it (the bound refuses or is more than half used).
/// Whether a stable-bound request is mirrored: `shadow.sample` of requests, or
/// `shadow.saturated_sample` of them while this worker is saturated (`load`), the rest of the
/// sample counted as `saturated` drops. `now` is asked for only when the answer hangs on it.
#[inline]
pub(crate) fn sampled(
    cfg: &Shadow,
    stats: &ModelStats,
    now: impl FnOnce() -> std::time::Instant,
) -> bool {
    let r = fastrand::u32(..rollgate_config::PPM_MAX);
    if r >= cfg.sample.get() {
        return false;
    }
    if r < cfg.saturated_sample.get() || !crate::load::saturated(now()) {
        return true;
    }
    stats.shadow_dropped(ShadowDrop::Saturated);
    false
}

pub(crate) fn admit(
    route: &crate::snapshot::ModelRoute,
    cfg: &Shadow,
    now: Option<Instant>,
) -> Option<Admitted> {
    let stats = &route.stats;
    let max = cfg.max_inflight as i64;
    let now = || now.unwrap_or_else(Instant::now);
    let full = || {
        stats.shadow_pace.refused(now());
        stats.shadow_dropped(ShadowDrop::Inflight);
        None
    };
    if stats.shadow_inflight.load(Relaxed) >= max {
        return full();
    }
    let inflight = stats.shadow_inflight.fetch_add(1, Relaxed);
    if inflight >= max {
        // Another worker took the last slot since the load.
        stats.shadow_inflight.fetch_sub(1, Relaxed);
        return full();
    }
    if inflight.saturating_mul(2) >= max && !stats.shadow_pace.admit(cfg.max_inflight, now()) {
        stats.shadow_inflight.fetch_sub(1, Relaxed);
        stats.shadow_dropped(ShadowDrop::Paced);
        return None;
    }
    Some(Admitted {
        _slot: InflightGuard(route.stats.clone()),
    })
}

/// Spreads a model's mirrors while more are sampled than its in-flight bound sustains. A shadow
/// slower than the mirror rate frees its slots together (its answers come together, since the
/// mirrors started together), and a bound alone re-admits them in one burst, so the bursts
/// never dissolve: against the comparison's 50 ms shadow (64 in flight, 1,200 mirrors a second)
/// 60 % of mirrors started within a millisecond of at least 8 others, and up to 50 answers came
/// back within one millisecond, each a wake-up, a read and a pair on the worker while the
/// primaries waited. Once the bound has refused a mirror, and for as long as one was refused
/// within a mean exchange time, mirrors start at least `2/3 × mean exchange time /
/// max_inflight` apart: spread evenly, and a little faster than the bound sustains, so that
/// the bound still sets the rate. Below the bound nothing is paced. Lock-free and approximate
/// across workers (a lost update starts one mirror early or late); the bound stays exact.
#[derive(Debug)]
pub(crate) struct Pace {
    epoch: Instant,
    /// When the next mirror may start while paced, nanoseconds since `epoch`.
    next: AtomicU64,
    /// When a mirror was last refused (by the bound or the pace), nanoseconds since `epoch`;
    /// zero for never.
    refused: AtomicU64,
    /// Mean time of a mirror's exchange, nanoseconds: a moving average weighting each new
    /// exchange 1/8; zero until the first ends (no pacing without it).
    mean: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            mean: AtomicU64::new(0),
        }
    }
}

impl Pace {
    fn nanos(&self, now: Instant) -> u64 {
        let t = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }

    /// The in-flight bound refused a mirror at `now`.
    pub(crate) fn refused(&self, now: Instant) {
        self.refused.store(self.nanos(now), Relaxed);
    }

    /// Whether a mirror may start at `now`. While paced, the next one is then due a spacing
    /// after this one was due (so that starting late, at the first sampled request after it,
    /// does not lower the rate), or a spacing after now when this one was more than a spacing
    /// late (no credit for a lull: a burst is what pacing prevents).
    pub(crate) fn admit(&self, max_inflight: usize, now: Instant) -> bool {
        let mean = self.mean.load(Relaxed);
        // Half again as fast as the bound sustains, so that the bound, not the pace, mostly
        // sets the mirror rate; the pace only spreads the starts. (Paced at exactly the bound's
        // rate, every late start was a lost slot: 23 % fewer mirrors at 256 in flight against
        // a 50 ms shadow; at 9/8 of it 15 % fewer, at 3/2 6 %.)
        let spacing = mean.saturating_mul(2) / (max_inflight.max(1) as u64 * 3);
        let t = self.nanos(now);
        let refused = self.refused.load(Relaxed);
        if spacing == 0 || refused == 0 || t.saturating_sub(refused) >= mean {
            return true;
        }
        let next = self.next.load(Relaxed);
        let due = if t < next {
            None
        } else if t - next < spacing {
            Some(next + spacing)
        } else {
            Some(t.saturating_add(spacing))
        };
        match due {
            Some(due)
                if self
                    .next
                    .compare_exchange(next, due, Relaxed, Relaxed)
                    .is_ok() =>
            {
                true
            }
            _ => {
                self.refused.store(t, Relaxed);
                false
            }
        }
    }

    /// A mirror's exchange ended (any outcome) after `took`.
    pub(crate) fn exchanged(&self, took: std::time::Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let mean = self.mean.load(Relaxed);
        let mean = if mean == 0 {
            took
        } else {
            mean - mean / 8 + took / 8
        };
        self.mean.store(mean, Relaxed);
    }
}

/// Makes an admitted mirror's queue and pair, and spawns `exchange` on this worker, counting
/// its outcome. Returns the tee for the primary body and the primary's side of the pair.
/// `exchange` sends the request with the queued body to the candidate within `shadow.timeout`,
/// completes the shadow side of the pair and returns the status, or why there is none
/// (`Timeout`, or `UpstreamError`, for which an abandoned body's reason is counted). `path` is
/// the request's path, or `None` for a pair not kept (see [`ShadowPairs::wanted`]).
pub(crate) fn spawn<F, Fut>(
    admitted: Admitted,
    route: &Arc<crate::snapshot::ModelRoute>,
    path: Option<Arc<str>>,
    shared: &Arc<Shared>,
    cfg: &Shadow,
    exchange: F,
) -> (ShadowTee, PairSide)
where
    F: FnOnce(ShadowBody, PairSide) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<u16, ShadowDrop>> + 'static,
{
    let stats = route.stats.clone();
    let (link, tee, body) = queue(route.name.clone(), path, cfg);
    let primary = PairSide {
        link: link.clone(),
        primary: true,
        pairs: shared.pairs.clone(),
    };
    let shadow = PairSide {
        link: link.clone(),
        primary: false,
        pairs: shared.pairs.clone(),
    };
    // Boxed once here: the task's own future stays small, so the runtime's moves of it (into
    // the task cell, between its stages) copy a few words, not the exchange's whole state.
    let exchange = Box::pin(exchange(body, shadow));
    tokio::task::spawn_local(async move {
        let _inflight = admitted;
        let start = Instant::now();
        let res = exchange.await;
        let took = start.elapsed();
        stats.shadow_pace.exchanged(took);
        match (res, link.why.get()) {
            (Ok(status), _) => {
                let vs = stats.variant(Variant::Shadow);
                vs.start();
                vs.finish(StatusClass::of(status), took);
            }
            // A body given up (backpressure, too large, the primary aborted) is why the
            // exchange failed: the primary's side, not the candidate.
            (Err(ShadowDrop::UpstreamError), Some(why)) => stats.shadow_dropped(why),
            // The candidate failed the mirror (no connection, a reset, a cut answer) or never
            // finished it within `shadow.timeout`: the shadow's `error`, as a primary's would
            // be, so that a candidate that is down or broken in Shadow is judged (and rolled
            // back) instead of waiting for samples that never come.
            (Err(why @ (ShadowDrop::UpstreamError | ShadowDrop::Timeout)), _) => {
                let vs = stats.variant(Variant::Shadow);
                vs.start();
                vs.finish(StatusClass::Error, took);
                stats.shadow_dropped(why);
            }
            (Err(why), _) => stats.shadow_dropped(why),
        }
    });
    (tee, primary)
}

/// A mirror's shared state, with its primary (tee) and shadow (body) ends.
fn queue(
    model: Arc<str>,
    path: Option<Arc<str>>,
    cfg: &Shadow,
) -> (Rc<Link>, ShadowTee, ShadowBody) {
    let link = Rc::new(Link {
        queue: RefCell::new(VecDeque::new()),
        queued: Cell::new(0),
        waker: Cell::new(None),
        done: Cell::new(false),
        abandoned: Cell::new(false),
        closed: Cell::new(false),
        why: Cell::new(None),
        pair: RefCell::new(PairSlot {
            model,
            path,
            streamed: false,
            primary: None,
            shadow: None,
        }),
    });
    let tee = ShadowTee {
        link: link.clone(),
        sent: 0,
        max_body: cfg.max_body,
        buffer: cfg.buffer,
        ended: false,
    };
    let body = ShadowBody {
        link: link.clone(),
        ended: false,
    };
    (link, tee, body)
}

pub(crate) fn pick<'a>(
    set: &'a EndpointSet,
    key: Option<&[u8]>,
) -> Option<&'a Arc<crate::endpoint::EndpointState>> {
    set.pick(key, Instant::now())
}

pub(crate) fn is_sse(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

struct InflightGuard(Arc<ModelStats>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.shadow_inflight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests;
