//! Bodies on the request path. Nothing here buffers a stream: the request body replays the few
//! chunks read to find the model and then streams the rest; the response body passes frames
//! through as they arrive while observing them.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

mod observed;

pub(crate) use observed::{Exchange, ObservedBody, Observer};

use crate::shadow::{ShadowBody, ShadowTee};

/// Errors a request body yields to the upstream client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    #[error("the primary request was abandoned; mirror cancelled")]
    MirrorAbandoned,
    #[error("downstream body: {0}")]
    Downstream(#[from] hyper::Error),
}

/// The downstream request body as sent upstream: the chunks already read (to find the model),
/// then the rest of the stream, counted against the body limit and teed to a shadow.
#[derive(Debug)]
pub(crate) struct RequestBody {
    prefix: std::collections::VecDeque<Frame<Bytes>>,
    rest: Option<Incoming>,
    received: u64,
    limit: u64,
    tee: Option<ShadowTee>,
}

/// What upstream connections carry: a primary request body or a mirrored copy.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    Primary(RequestBody),
    Shadow(ShadowBody),
}

/// What the gateway sends downstream.
// Boxing the upstream variant would cost an allocation on every proxied response to save
// memory only on locally answered errors.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum ResponseBody {
    Full(Option<Bytes>),
    Upstream(ObservedBody),
}

// === impl RequestBody ===

impl RequestBody {
    pub(crate) fn new(
        prefix: std::collections::VecDeque<Frame<Bytes>>,
        received: u64,
        rest: Option<Incoming>,
        limit: u64,
    ) -> Self {
        RequestBody {
            prefix,
            rest,
            received,
            limit,
            tee: None,
        }
    }

    pub(crate) fn set_tee(&mut self, tee: ShadowTee) {
        self.tee = Some(tee);
    }

    fn tee_frame(&mut self, frame: &Frame<Bytes>) {
        if let (Some(tee), Some(data)) = (self.tee.as_mut(), frame.data_ref()) {
            if !tee.send(data.clone()) {
                self.tee = None;
            }
        }
    }

    fn tee_end(&mut self) {
        if let Some(tee) = self.tee.take() {
            tee.end();
        }
    }

    /// Ends the tee with the body's last frame: hyper stops polling a body of known length once
    /// it has all of it, and a tee dropped without `end` would tell the shadow (and its
    /// metrics) that the primary was abandoned.
    fn tee_end_if_done(&mut self) {
        if self.tee.is_some() && self.is_end_stream() {
            self.tee_end();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.prefix.pop_front() {
            self.tee_frame(&frame);
            self.tee_end_if_done();
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            self.tee_end();
            return Poll::Ready(None);
        };
        match ready!(Pin::new(rest).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    self.received += d.len() as u64;
                    if self.received > self.limit {
                        // Dropping the tee tells the shadow the primary was abandoned.
                        self.tee = None;
                        return Poll::Ready(Some(Err(BodyError::TooLarge(self.limit))));
                    }
                }
                self.tee_frame(&frame);
                self.tee_end_if_done();
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                self.tee = None;
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                self.rest = None;
                self.tee_end();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        // Upper before lower: `set_lower` asserts lower <= upper.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint.set_lower(rest.lower().saturating_add(buffered));
        hint
    }
}

// === impl UpstreamBody ===

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Primary(b) => Pin::new(b).poll_frame(cx),
            UpstreamBody::Shadow(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Primary(b) => b.is_end_stream(),
            UpstreamBody::Shadow(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Primary(b) => b.size_hint(),
            UpstreamBody::Shadow(b) => b.size_hint(),
        }
    }
}

// === impl ResponseBody ===

impl ResponseBody {
    pub(crate) fn full(b: Bytes) -> Self {
        ResponseBody::Full(Some(b))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Upstream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream(b) => b.size_hint(),
        }
    }
}
