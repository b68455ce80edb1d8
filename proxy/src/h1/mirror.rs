//! Mirrors on the fast path. The shadow request goes to the candidate over this worker's raw
//! upstream pool, the same way a primary exchange does (no hyper client, no connection task),
//! with its body read from the tee's bounded queue (see `crate::shadow`). Half the
//! instructions of a mirror on hyper's client, which matters at 100 % sampling.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http_body_util::BodyExt;
use rollgate_config::Shadow;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};

use super::parse::{ChunkedDecoder, Framing};
use super::pool::FastPool;
use super::{chunk, fill, push_decimal, read_ready, read_response_head, Fill, HeadFail};
use crate::endpoint::{EndpointState, Outcome};
use crate::handle::Shared;
use crate::observe::{ShadowDrop, StreamFailure};
use crate::shadow::{self, PairSide, ShadowBody, ShadowTee};
use crate::snapshot::ModelRoute;
use crate::split::Variant;
use crate::sse::SseObserver;

/// Bytes of request body gathered before a write to the shadow when more is already queued.
const WRITE_BATCH: usize = 64 * 1024;

/// A sampled request, ready to be mirrored.
pub(super) struct FastMirror {
    /// The request as it goes to the shadow: head, and the body when it was all at hand.
    out: Vec<u8>,
    /// The candidate endpoint, picked when the mirror was made.
    ep: Option<Arc<EndpointState>>,
    /// More body comes through the tee, in chunked framing.
    chunked: bool,
    /// The whole request is in `out` (the tee is not used): it can be sent again.
    whole: bool,
    head_request: bool,
    route: Arc<ModelRoute>,
    fast: Rc<FastPool>,
    shared: Arc<Shared>,
}

/// What [`FastMirror::new`] needs of the primary request.
pub(super) struct Sampled<'a> {
    /// The request line and forwarded headers as sent to the primary (no Host, no framing).
    pub(super) head: &'a [u8],
    /// The request body's framing as the client sent it.
    pub(super) framing: Framing,
    /// The whole body, when it is already in the buffer: it goes out with the head and the
    /// tee is not used.
    pub(super) body: Option<&'a [u8]>,
    pub(super) head_request: bool,
    pub(super) key: Option<u64>,
}

impl FastMirror {
    /// Picks the candidate endpoint and writes the shadow request's head (and its body when it
    /// is at hand), so that a small request is one write with no queue in between.
    pub(super) fn new(
        req: Sampled<'_>,
        route: Arc<ModelRoute>,
        fast: Rc<FastPool>,
        shared: Arc<Shared>,
    ) -> Self {
        let key = req.key.map(u64::to_le_bytes);
        let ep = route.candidate.as_ref().and_then(|c| {
            shadow::pick(&c.endpoints, key.as_ref().map(<[u8; 8]>::as_slice)).cloned()
        });
        let body_len = req.body.map_or(0, <[u8]>::len);
        let mut out = Vec::with_capacity(req.head.len() + 160 + body_len);
        out.extend_from_slice(req.head);
        if let Some(ep) = ep.as_ref() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(ep.host_header.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-rollgate-shadow: 1\r\n");
        let mut chunked = false;
        match (req.framing, req.body) {
            (Framing::Length(n), _) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(&mut out, n);
                out.extend_from_slice(b"\r\n\r\n");
            }
            // Fully read while the model was resolved: sent with a length.
            (Framing::Chunked, Some(b)) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(&mut out, b.len() as u64);
                out.extend_from_slice(b"\r\n\r\n");
            }
            (Framing::Chunked, None) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                chunked = true;
            }
            (Framing::Empty | Framing::Close, _) => out.extend_from_slice(b"\r\n"),
        }
        if let Some(b) = req.body {
            out.extend_from_slice(b);
        }
        FastMirror {
            out,
            ep,
            chunked,
            whole: req.body.is_some(),
            head_request: req.head_request,
            route,
            fast,
            shared,
        }
    }

    /// Spawns an admitted mirror's exchange on this worker.
    pub(super) fn start(
        self,
        admitted: shadow::Admitted,
        path: Option<Arc<str>>,
        cfg: &Shadow,
    ) -> (ShadowTee, PairSide) {
        let route = self.route.clone();
        let shared = self.shared.clone();
        let shadow = cfg.clone();
        shadow::spawn(admitted, &route, path, &shared, cfg, move |body, side| {
            self.exchange(body, shadow, side)
        })
    }

    /// The exchange, within `shadow.timeout` (one timer, registered only if something waits).
    async fn exchange(
        self,
        mut body: ShadowBody,
        cfg: Shadow,
        side: PairSide,
    ) -> Result<u16, ShadowDrop> {
        let ep = self.ep.as_ref().ok_or(UP)?;
        let start = Instant::now();
        let _outstanding = ep.acquire();
        let chunked = self.chunked;
        let mut out = self.out;
        let deadline = start + cfg.timeout;
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        // Taken once the answer has begun to arrive (below), not while the mirror waits for it.
        let mut ubuf = Vec::new();
        let mut retried = false;
        let (up, rh) = loop {
            // The exchange's start serves the first take; a retry reads the clock again.
            let now = if retried { Instant::now() } else { start };
            let Ok(mut up) = within(&mut sleep, self.fast.get(ep, now)).await? else {
                // Shadow exchanges go to candidate endpoints: a down one is ejected.
                let policy = self.shared.snapshot.load().config().ejection.clone();
                let stats = &self.route.stats;
                stats.record(ep, Outcome::Failure, &policy, true);
                return Err(UP);
            };
            // A pooled connection the shadow closed while it was idle fails at once. When the
            // whole request is in `out` it goes again on a fresh connection, once, as a
            // primary does.
            let replay = up.reused && self.whole && !retried;
            if self.whole {
                if within(&mut sleep, up.io.write_all(&out)).await?.is_err() {
                    if replay {
                        retried = true;
                        continue;
                    }
                    return Err(UP);
                }
            } else {
                // The body as it is queued: what is queued goes out with the head, the rest as
                // it arrives. An abandoned mirror ends in an error here and its connection is
                // dropped, never pooled half-written.
                let sent = async {
                    while let Some(frame) = body.frame().await {
                        let frame = frame.map_err(|_| ())?;
                        if let Ok(data) = frame.into_data() {
                            if chunked {
                                chunk(&mut out, &data);
                            } else {
                                out.extend_from_slice(&data);
                            }
                        }
                        if !body.has_queued() || out.len() >= WRITE_BATCH {
                            up.io.write_all(&out).await.map_err(|_| ())?;
                            out.clear();
                        }
                    }
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    if !out.is_empty() {
                        up.io.write_all(&out).await.map_err(|_| ())?;
                    }
                    Ok::<(), ()>(())
                };
                within(&mut sleep, sent).await?.map_err(|()| UP)?;
            }
            if ubuf.capacity() == 0 {
                // A mirror to a slow shadow waits long for its answer, holding no buffer: it takes
                // one from the free list once the answer has begun to arrive (1,024 mirrors in
                // flight to a 50 ms shadow: ≈ 5 MB less peak RSS than holding one each).
                within(&mut sleep, read_ready(&up.io))
                    .await?
                    .map_err(|_| UP)?;
                ubuf = self.fast.buf();
            }
            let head = read_response_head(
                &up.io,
                &mut ubuf,
                &mut sleep,
                deadline,
                self.head_request,
                None,
                &[],
            );
            match head.await {
                Ok(rh) => break (up, rh),
                Err(HeadFail::Closed) if replay => {
                    retried = true;
                    ubuf.clear();
                }
                Err(HeadFail::Timeout) => return Err(ShadowDrop::Timeout),
                Err(_) => return Err(UP),
            }
        };
        drop(body);
        drop(out);
        // With the in-flight bound more than half used, the shadow is slower than the mirror
        // rate: unpaced mirrors would start together when slots free up and, against a shadow
        // with a steady latency, answer together. `shadow::Pace` spreads them once the bound
        // refuses one; until then (and for answers that still coincide) let the primaries that
        // are ready go first, so that a burst of answers is interleaved with them instead of
        // queued in front of them. (Not otherwise: a yield costs the runtime an extra event-loop
        // poll.)
        let inflight = self.route.stats.shadow_inflight.load(Relaxed);
        if inflight.saturating_mul(2) >= cfg.max_inflight as i64 {
            tokio::task::yield_now().await;
        }
        let vs = self.route.stats.variant(Variant::Shadow);
        let mut cap = side.capture(cfg.capture);
        let mut obs = rh.sse.then(SseObserver::new);
        let mut first_byte = true;
        let mut on_data = |d: &[u8]| {
            cap.push(d);
            // The shadow is observed like a primary, so gates can judge it in Shadow.
            if std::mem::take(&mut first_byte) {
                vs.ttfb.observe(start.elapsed());
            }
            if obs.as_mut().is_some_and(|o| o.feed(d).first_data) {
                vs.ttft.observe(start.elapsed());
            }
        };
        let mut upos = rh.len;
        let reusable = match rh.framing {
            Framing::Empty => upos == ubuf.len(),
            Framing::Length(mut n) => loop {
                let avail = (ubuf.len() - upos).min(usize::try_from(n).unwrap_or(usize::MAX));
                if avail > 0 {
                    on_data(&ubuf[upos..upos + avail]);
                }
                upos += avail;
                n -= avail as u64;
                if n == 0 {
                    break upos == ubuf.len();
                }
                ubuf.clear();
                upos = 0;
                filled(fill(&up.io, &mut ubuf, &mut sleep, deadline).await)?;
            },
            Framing::Chunked | Framing::Close => {
                let mut dec = (rh.framing == Framing::Chunked).then(ChunkedDecoder::new);
                'body: loop {
                    while upos < ubuf.len() {
                        let Some(dec) = dec.as_mut() else {
                            on_data(&ubuf[upos..]);
                            break;
                        };
                        let step = dec.step(&ubuf[upos..]).map_err(|_| UP)?;
                        if !step.data.is_empty() {
                            on_data(&ubuf[upos..][step.data]);
                        }
                        upos += step.consumed;
                        if step.done {
                            break 'body upos == ubuf.len();
                        }
                    }
                    ubuf.clear();
                    upos = 0;
                    match fill(&up.io, &mut ubuf, &mut sleep, deadline).await {
                        // Delimited by close: the end of the body.
                        Ok(Fill::Eof) if dec.is_none() => break false,
                        r => filled(r)?,
                    }
                }
            }
        };
        self.fast.give(ubuf);
        let failed = obs.as_ref().is_some_and(|o| o.error() || !o.done());
        if failed && (200..300).contains(&rh.status) {
            let error_event = obs.as_ref().is_some_and(SseObserver::error);
            vs.stream_failure(if error_event {
                StreamFailure::ErrorEvent
            } else {
                StreamFailure::Truncated
            });
        }
        let outcome = Outcome::of(rh.status);
        let policy = self.shared.snapshot.load().config().ejection.clone();
        // Shadow exchanges go to candidate endpoints: their failures eject them too.
        // One reading for the outcome's time and the connection's idle start.
        let end = Instant::now();
        self.route.stats.record_at(ep, outcome, &policy, true, end);
        if reusable && !rh.close {
            self.fast.put(up, end);
        }
        side.complete(rh.status, cap, failed, rh.sse);
        Ok(rh.status)
    }
}

/// Why a mirror failed, unless the deadline or an abandoned body says otherwise.
const UP: ShadowDrop = ShadowDrop::UpstreamError;

/// `fut`, unless the mirror's deadline passes first (polled first: nothing that is ready waits
/// on the timer, and the timer is registered only when something does wait).
async fn within<T>(
    sleep: &mut Pin<&mut Sleep>,
    fut: impl Future<Output = T>,
) -> Result<T, ShadowDrop> {
    tokio::select! {
        biased;
        r = fut => Ok(r),
        () = sleep.as_mut() => Err(ShadowDrop::Timeout),
    }
}

/// More of the answer arrived, or why the mirror ends.
fn filled(r: std::io::Result<Fill>) -> Result<(), ShadowDrop> {
    match r {
        Ok(Fill::Data) => Ok(()),
        Ok(Fill::Timeout) => Err(ShadowDrop::Timeout),
        Ok(Fill::Eof) | Err(_) => Err(UP),
    }
}
