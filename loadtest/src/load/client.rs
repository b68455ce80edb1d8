//! The real exchange: hyper 1 client connections (HTTP/1.1 or h2c prior knowledge) driven
//! directly on the thread's runtime, one request in flight per worker, reconnecting after a
//! failure; the body is read frame by frame so SSE events are timed as they arrive, and the
//! token counts are read from a stream's events or from the end of a whole answer.

use std::{rc::Rc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, time::Instant};

use super::{
    engine::Exchange,
    request::Template,
    sse::{self, Event, SseScanner},
    stats::{ErrorKind, Sample, REFUSAL_BYTES},
    Target,
};

/// Choices with their own inter-token clock: the simulator's bound on `n`. A token of a choice
/// past it still counts for TTFT but gives no gap, rather than a gap measured against another
/// choice's token.
const CHOICE_SLOTS: usize = 128;

/// How much of the end of a whole answer is searched for its `usage`: OpenAI, vLLM, SGLang, TGI
/// and the simulator write it last, or followed only by a few short keys (`service_tier`,
/// `system_fingerprint`, `prompt_logprobs`); OpenAI's usage with its details is about 300 bytes.
pub(super) const USAGE_TAIL: usize = 1024;

/// A ready-to-use connection to one target.
pub(crate) enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// What every worker of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub targets: Vec<Target>,
    pub template: Template,
    pub h2c: bool,
    pub timeout: Duration,
}

/// One worker's exchange: a connection per target and its own SSE scanner and token clocks.
pub(crate) struct HttpExchange {
    shared: Rc<Shared>,
    conns: [Option<Conn>; 2],
    /// Index of the next body in `template.bodies`.
    next_body: usize,
    scanner: SseScanner,
    end: StreamEnd,
    /// The end of a whole answer, for its `usage`.
    tail: Tail,
}

/// The last [`USAGE_TAIL`] bytes of a whole answer, copied frame by frame (holding hyper's
/// frames instead would keep its read buffer from being reused), to read its `usage` at the end.
#[derive(Debug, Default)]
pub(super) struct Tail(Vec<u8>);

/// How a stream went, as the scanner saw it: its end, and when each choice's last token came.
#[derive(Debug)]
pub(crate) struct StreamEnd {
    pub done: bool,
    pub error_event: bool,
    /// By choice index: a gap is the time since the same choice's previous token, since with
    /// `n` > 1 the choices' chunks arrive back to back at each step.
    last_token: [Option<Instant>; CHOICE_SLOTS],
    /// Slots below this may be set (reset clears only those).
    used: usize,
}

// === impl Conn ===

impl Conn {
    /// Connects and handshakes; the connection's driver runs as a local task.
    pub async fn open(target: &Target, h2c: bool) -> std::io::Result<Self> {
        let stream = TcpStream::connect(target.addr).await?;
        // Small requests and SSE events must not wait for Nagle.
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        if h2c {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::task::spawn_local(async move {
                // The connection ends when the peer closes it or every sender is gone.
                let _ = conn.await;
            });
            Ok(Self::H2(send))
        } else {
            let (send, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
            tokio::task::spawn_local(async move {
                // As above: its end is seen by the sender.
                let _ = conn.await;
            });
            Ok(Self::H1(send))
        }
    }

    /// Another handle on the same connection: HTTP/2 multiplexes, HTTP/1.1 cannot be shared.
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
        }
    }

    /// Waits until it can take a request; `false` when the connection is gone.
    async fn ready(&mut self) -> bool {
        match self {
            Self::H1(s) => s.ready().await.is_ok(),
            Self::H2(s) => s.ready().await.is_ok(),
        }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Self::H1(s) => s.send_request(req).await,
            Self::H2(s) => s.send_request(req).await,
        }
    }
}

// === impl HttpExchange ===

impl HttpExchange {
    /// A worker using already-open connections (`conns[i]` for target `i`).
    pub fn new(shared: Rc<Shared>, conns: [Option<Conn>; 2], first_body: usize) -> Self {
        Self {
            shared,
            conns,
            next_body: first_body,
            scanner: SseScanner::default(),
            end: StreamEnd::default(),
            tail: Tail::default(),
        }
    }

    fn request(&mut self, target: usize) -> Request<Full<Bytes>> {
        let shared = &*self.shared;
        let t = &shared.targets[target];
        let tpl = &shared.template;
        let body = tpl.bodies[self.next_body % tpl.bodies.len()].clone();
        self.next_body = self.next_body.wrapping_add(1);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = tpl.method.clone();
        *req.uri_mut() = if shared.h2c {
            t.absolute.clone()
        } else {
            t.origin.clone()
        };
        // hyper takes the header map by value: this clone is the one allocation per request.
        *req.headers_mut() = tpl.headers.clone();
        if !shared.h2c && !tpl.headers.contains_key(http::header::HOST) {
            req.headers_mut().insert(http::header::HOST, t.host.clone());
        }
        req
    }

    /// A connection to `target` that can take a request now, reconnecting if the old one
    /// closed (a server may close an idle keep-alive connection at any time).
    async fn ready(&mut self, target: usize) -> Result<&mut Conn, ErrorKind> {
        let usable = match &mut self.conns[target] {
            Some(conn) => conn.ready().await,
            None => false,
        };
        if !usable {
            self.conns[target] = None;
            let shared = &*self.shared;
            let mut conn = Conn::open(&shared.targets[target], shared.h2c)
                .await
                .map_err(|_| ErrorKind::Connect)?;
            if !conn.ready().await {
                return Err(ErrorKind::Connect);
            }
            self.conns[target] = Some(conn);
        }
        self.conns[target].as_mut().ok_or(ErrorKind::Connect)
    }

    async fn attempt(&mut self, target: usize, s: &mut Sample) -> Result<(), ErrorKind> {
        let req = self.request(target);
        let conn = self.ready(target).await?;
        let resp = conn.send(req).await.map_err(|_| ErrorKind::Io)?;
        s.head = Some(Instant::now());
        let status = resp.status();
        let failed = if status.is_client_error() {
            Some(ErrorKind::Status4xx)
        } else if status.is_success() || status.is_redirection() || status.is_informational() {
            None
        } else {
            Some(ErrorKind::Status5xx)
        };
        let event_stream = is_event_stream(resp.headers());
        if failed.is_some() {
            s.status = status.as_u16();
        }
        let mut body = resp.into_body();
        let sse = self.shared.template.sse && failed.is_none();
        self.scanner.reset();
        self.tail.reset();
        let end = &mut self.end;
        end.reset();
        while let Some(frame) = body.frame().await {
            // A body error after the head: the stream or body was cut.
            let frame = frame.map_err(|_| failed.unwrap_or(ErrorKind::Cut))?;
            match (sse, frame.into_data()) {
                (true, Ok(data)) => {
                    let now = Instant::now();
                    self.scanner.feed(&data, |e| end.on_event(e, now, s));
                }
                // A refusal's body says why; the start of it is kept for the report.
                (false, Ok(data)) if failed.is_some() => {
                    let room = REFUSAL_BYTES.saturating_sub(s.error_body.len());
                    s.error_body
                        .extend_from_slice(&data[..data.len().min(room)]);
                }
                (false, Ok(data)) => self.tail.push(&data),
                // Trailers: nothing to count.
                (_, Err(_)) => {}
            }
        }
        if let Some(kind) = failed {
            return Err(kind);
        }
        if sse {
            s.streamed = true;
            let now = Instant::now();
            self.scanner.finish(|e| end.on_event(e, now, s));
            return end.outcome(event_stream);
        }
        s.usage = self.tail.usage();
        Ok(())
    }
}

impl Exchange for HttpExchange {
    async fn exchange(&mut self, target: usize, s: &mut Sample) {
        let timeout = self.shared.timeout;
        let outcome = match tokio::time::timeout(timeout, self.attempt(target, s)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ErrorKind::Timeout),
        };
        if let Err(kind) = outcome {
            s.error = Some(kind);
            // After a cut, a timeout or a broken exchange the connection's state is unknown;
            // status errors and a whole answer that was not a stream leave it usable.
            if !matches!(
                kind,
                ErrorKind::Status4xx | ErrorKind::Status5xx | ErrorKind::NotAStream
            ) {
                self.conns[target] = None;
            }
        }
    }
}

/// The answer says it is an event stream, or says nothing: a `--stream` request answered
/// `application/json` (the server was not asked for, or ignored, `"stream": true`) is not one.
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::CONTENT_TYPE) else {
        return true;
    };
    let media = value.as_bytes().split(|&b| b == b';').next().unwrap_or(b"");
    media
        .trim_ascii()
        .eq_ignore_ascii_case(b"text/event-stream")
}

// === impl Tail ===

impl Tail {
    pub(super) fn reset(&mut self) {
        self.0.clear();
    }

    /// Keeps the end of `data` after what was kept: a copy of at most [`USAGE_TAIL`] bytes per
    /// frame (the whole of a small answer, which is one frame), and the buffer keeps its
    /// capacity, so no allocation once it has grown.
    pub(super) fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(USAGE_TAIL)..];
        let room = USAGE_TAIL - data.len();
        let excess = self.0.len().saturating_sub(room);
        self.0.drain(..excess);
        self.0.extend_from_slice(data);
    }

    /// The `usage` of the answer: one search of at most [`USAGE_TAIL`] bytes per request.
    pub(super) fn usage(&self) -> Option<sse::Usage> {
        sse::usage(&self.0)
    }
}

// === impl StreamEnd ===

impl Default for StreamEnd {
    fn default() -> Self {
        Self {
            done: false,
            error_event: false,
            last_token: [None; CHOICE_SLOTS],
            used: 0,
        }
    }
}

impl StreamEnd {
    /// Ready for the next stream.
    pub fn reset(&mut self) {
        self.done = false;
        self.error_event = false;
        self.last_token[..self.used].fill(None);
        self.used = 0;
    }

    /// Notes one event that arrived (in a chunk read) at `now`. TTFT is the first token of
    /// any choice; a gap is the time since the previous token of the same choice. Token events
    /// are counted, and a usage chunk's counts kept (the last one wins).
    pub fn on_event(&mut self, event: Event, now: Instant, s: &mut Sample) {
        match event {
            Event::Token(choice) => {
                if s.first_token.is_none() {
                    s.first_token = Some(now);
                }
                s.token_events += 1;
                let Some(slot) = self.last_token.get_mut(choice as usize) else {
                    return;
                };
                match slot.replace(now) {
                    Some(last) => s.gaps.push(now - last),
                    None => s.choices += 1,
                }
                self.used = self.used.max(choice as usize + 1);
            }
            Event::Usage(usage) => s.usage = Some(usage),
            Event::Done => self.done = true,
            Event::Error => self.error_event = true,
            Event::Other => {}
        }
    }

    /// How a stream that reached its end counts: an error event wins, then a missing
    /// `[DONE]`, which is a cut stream when the answer was one and `not_a_stream` when its
    /// content type says it was something else.
    pub fn outcome(&self, event_stream: bool) -> Result<(), ErrorKind> {
        if self.error_event {
            Err(ErrorKind::ErrorEvent)
        } else if self.done {
            Ok(())
        } else if event_stream {
            Err(ErrorKind::Cut)
        } else {
            Err(ErrorKind::NotAStream)
        }
    }
}
