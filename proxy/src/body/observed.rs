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
}

#[derive(Debug)]
pub(crate) struct ObservedBody {
    inner: Incoming,
    ex: Exchange,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    sse: Option<SseObserver>,
    first_byte: bool,
    capture: Option<(Capture, PairSide)>,
    finished: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}")]
struct IdleTimeout(Duration);

// === impl ObservedBody ===

impl ObservedBody {
    pub(crate) fn new(
        inner: Incoming,
        ex: Exchange,
        idle_timeout: Duration,
        sse: bool,
        capture: Option<(Capture, PairSide)>,
    ) -> Self {
        ObservedBody {
            inner,
            ex,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            sse: sse.then(SseObserver::new),
            first_byte: false,
            capture,
            finished: false,
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        let now = Instant::now();
        let vs = self.ex.stats.variant(self.ex.variant);
        if !self.first_byte {
            self.first_byte = true;
            vs.ttfb.observe(now - self.ex.start);
        }
        if let Some(sse) = self.sse.as_mut() {
            if sse.feed(data).first_data {
                vs.ttft.observe(now - self.ex.start);
            }
        }
        if let Some((cap, _)) = self.capture.as_mut() {
            cap.push(data);
        }
        self.idle.as_mut().reset(now + self.idle_timeout);
    }

    /// Ends the exchange: `failure` is set when the stream broke.
    fn finish(&mut self, failure: Option<StreamFailure>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ok_head = (200..300).contains(&self.ex.status);
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
        let vs = self.ex.stats.variant(self.ex.variant);
        if let Some(f) = failure.filter(|_| ok_head) {
            vs.stream_failure(f);
        }
        vs.finish(StatusClass::of(self.ex.status), self.ex.start.elapsed());
        if self.ex.variant == Variant::Candidate && (self.ex.status >= 500 || failure.is_some()) {
            self.ex.stats.candidate_failed();
        }
        let broken = matches!(
            failure,
            Some(StreamFailure::IdleTimeout | StreamFailure::UpstreamReset)
        );
        if broken {
            let ep = self.ex.outstanding.endpoint();
            let candidate = self.ex.variant == Variant::Candidate;
            self.ex
                .stats
                .record(ep, Outcome::Failure, &self.ex.ejection, candidate);
            self.ex.conn = None;
        } else if let Some(conn) = self.ex.conn.take() {
            self.ex.pool.put(conn);
        }
        if let Some((cap, side)) = self.capture.take() {
            side.complete(self.ex.status, cap, failure.is_some(), self.sse.is_some());
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
        if !self.finished && self.inner.is_end_stream() {
            self.finish(None);
        } else if !self.finished {
            // The client went away (or hyper stopped polling): the upstream connection is
            // dropped with us, which cancels the upstream request.
            self.finished = true;
            self.ex.stats.variant(self.ex.variant).cancelled();
        }
    }
}
