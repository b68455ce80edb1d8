//! The upstream response body as sent downstream: frames pass through untouched while the
//! exchange is observed (first byte, first SSE event, stream failures, idle timeout).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use rollgate_config::Ejection;
use tokio::time::{Instant, Sleep};

use crate::access_log::{End, Entry};
use crate::endpoint::{Outcome, Outstanding};
use crate::observe::{ModelStats, StatusClass, StreamFailure};
use crate::pool::{Conn, Pool};
use crate::shadow::{Capture, PairSide};
use crate::split::Variant;
use crate::sse::SseObserver;

/// One upstream exchange's bookkeeping, finished exactly once (end, error or drop).
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) stats: Arc<ModelStats>,
    pub(crate) variant: Variant,
    pub(crate) start: Instant,
    pub(crate) status: u16,
    pub(crate) outstanding: Outstanding,
    pub(crate) conn: Option<Conn>,
    pub(crate) pool: Rc<Pool>,
    pub(crate) ejection: Ejection,
    /// The request's access log line (`access_log`), finished with the exchange.
    pub(crate) log: Option<Box<Entry>>,
}

/// What is observed of one response body, whichever HTTP implementation carries it: first
/// byte, first SSE event, stream failures, the shadow capture; finished exactly once.
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) stats: Arc<ModelStats>,
    pub(crate) variant: Variant,
    pub(crate) start: Instant,
    pub(crate) status: u16,
    pub(crate) outstanding: Outstanding,
    pub(crate) ejection: Ejection,
    sse: Option<SseObserver>,
    first_byte: bool,
    capture: Option<(Capture, PairSide)>,
    finished: bool,
    log: Option<Box<Entry>>,
}

#[derive(Debug)]
pub(crate) struct ObservedBody {
    inner: Incoming,
    obs: Observer,
    conn: Option<Conn>,
    pool: Rc<Pool>,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
struct IdleTimeout(Duration);

// === impl Observer ===

impl Observer {
    pub(crate) fn new(
        ex: Exchange,
        sse: bool,
        capture: Option<(Capture, PairSide)>,
    ) -> (Self, Option<Conn>, Rc<Pool>) {
        let obs = Observer {
            stats: ex.stats,
            variant: ex.variant,
            start: ex.start,
            status: ex.status,
            outstanding: ex.outstanding,
            ejection: ex.ejection,
            sse: sse.then(SseObserver::new),
            first_byte: false,
            capture,
            finished: false,
            log: ex.log,
        };
        (obs, ex.conn, ex.pool)
    }

    /// A chunk of the response body arrived at `now`.
    pub(crate) fn on_data(&mut self, data: &[u8], now: Instant) {
        let vs = self.stats.variant(self.variant);
        let first_byte = !self.first_byte;
        if first_byte {
            self.first_byte = true;
            vs.ttfb.observe(now - self.start);
        }
        let mut first_event = false;
        if let Some(sse) = self.sse.as_mut() {
            if sse.feed(data).first_data {
                first_event = true;
                vs.ttft.observe(now - self.start);
            }
        }
        if let Some(log) = self.log.as_mut() {
            log.on_data(data.len(), first_byte, first_event, now);
        }
        if let Some((cap, _)) = self.capture.as_mut() {
            cap.push(data);
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Ends the exchange: `failure` is set when the stream broke. Returns true when the
    /// upstream connection may be reused (the stream was not broken), false otherwise.
    pub(crate) fn finish(&mut self, failure: Option<StreamFailure>) -> bool {
        self.finish_at(failure, Instant::now())
    }

    /// [`Self::finish`] with the caller's clock reading as the exchange's end.
    pub(crate) fn finish_at(&mut self, failure: Option<StreamFailure>, now: Instant) -> bool {
        if self.finished {
            return false;
        }
        self.finished = true;
        let ok_head = (200..300).contains(&self.status);
        let failure = failure.or_else(|| {
            let sse = self.sse.as_ref()?;
            if sse.error() {
                Some(StreamFailure::ErrorEvent)
            } else if ok_head && !sse.done() {
                Some(StreamFailure::Truncated)
            } else {
                None
            }
        });
        let vs = self.stats.variant(self.variant);
        if let Some(f) = failure.filter(|_| ok_head) {
            vs.stream_failure(f);
        }
        vs.finish(
            StatusClass::of(self.status),
            now.saturating_duration_since(self.start),
        );
        self.log_end(now, failure.map(StreamFailure::as_str));
        if self.variant == Variant::Candidate && (self.status >= 500 || failure.is_some()) {
            self.stats.candidate_failed();
        }
        let broken = matches!(
            failure,
            Some(StreamFailure::IdleTimeout | StreamFailure::UpstreamReset)
        );
        if broken {
            let ep = self.outstanding.endpoint();
            let candidate = self.variant == Variant::Candidate;
            self.stats
                .record(ep, Outcome::Failure, &self.ejection, candidate);
        }
        if let Some((cap, side)) = self.capture.take() {
            side.complete(self.status, cap, failure.is_some(), self.sse.is_some());
        }
        !broken
    }

    /// The client went away before the end: counted as cancelled, not as a failure.
    pub(crate) fn cancel(&mut self) {
        if !self.finished {
            self.finished = true;
            self.stats.variant(self.variant).cancelled();
            self.log_end(Instant::now(), Some("cancelled"));
        }
    }

    /// Completes and queues the access log line, if the request has one.
    fn log_end(&mut self, now: Instant, failure: Option<&'static str>) {
        if let Some(mut entry) = self.log.take() {
            entry.finish(&End {
                variant: Some(self.variant),
                status: self.status,
                endpoint: Some(&self.outstanding.endpoint().url),
                end: now,
                failure,
                error: None,
            });
        }
    }
}

// === impl ObservedBody ===

impl ObservedBody {
    pub(crate) fn new(
        inner: Incoming,
        ex: Exchange,
        idle_timeout: Duration,
        sse: bool,
        capture: Option<(Capture, PairSide)>,
    ) -> Self {
        let (obs, conn, pool) = Observer::new(ex, sse, capture);
        ObservedBody {
            inner,
            obs,
            conn,
            pool,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        let now = Instant::now();
        self.obs.on_data(data, now);
        self.idle.as_mut().reset(now + self.idle_timeout);
    }

    fn finish(&mut self, failure: Option<StreamFailure>) {
        if self.obs.is_finished() {
            return;
        }
        if self.obs.finish(failure) {
            if let Some(conn) = self.conn.take() {
                self.pool.put(conn);
            }
        } else {
            self.conn = None;
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.on_data(d);
                }
                // hyper stops polling once the body says it has ended (Content-Length reached),
                // so the exchange must be finished here, not on a later `None`.
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(StreamFailure::UpstreamReset));
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.finish(Some(StreamFailure::IdleTimeout));
                    return Poll::Ready(Some(Err(Box::new(IdleTimeout(this.idle_timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if !self.obs.is_finished() && self.inner.is_end_stream() {
            self.finish(None);
        } else {
            // The client went away (or hyper stopped polling): the upstream connection is
            // dropped with us, which cancels the upstream request.
            self.obs.cancel();
        }
    }
}
