//! Response bodies: whole ones, and SSE streams written one event per token at the token pace.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::{
    sync::mpsc,
    time::{sleep_until, Instant},
};

use super::{
    metrics::Injected,
    openai,
    reply::Reply,
    state::{Running, State},
};

/// Events the producer may run ahead of a slow reader.
const STREAM_BUFFER: usize = 4;

/// The simulator's response body.
pub(super) enum SimBody {
    Full(Option<Bytes>),
    /// Ends with an error (the connection is cut) when the producer sends one.
    Stream(mpsc::Receiver<io::Result<Bytes>>),
}

/// The timing and faults of one stream, drawn before it starts.
pub(super) struct Plan {
    pub reply: Reply,
    /// When the request arrived, for TTFT and end-to-end latency.
    pub arrived: Instant,
    /// When the first token is due (queue, extra latency and TTFT already added).
    pub first_token: Instant,
    pub tpot: Duration,
    pub stall_first_event: Duration,
    pub cut: Option<Cut>,
}

/// How a stream fails part-way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// The connection ends without the final events or `[DONE]`.
    Truncate,
    /// A `data: {"error":...}` event, then `[DONE]`.
    ErrorEvent,
}

/// The reader went away.
struct Gone;

// === impl SimBody ===

impl SimBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// Starts the stream's producer and returns the body that carries its events.
    pub fn stream(state: Arc<State>, running: Running, plan: Plan) -> Self {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let (arrived, prompt) = (plan.arrived, plan.reply.prompt_tokens);
            let mut sent = 0;
            // `Gone`: the reader left (a client that disconnected, or a gateway cancelling
            // upstream): counted as vLLM counts an aborted request, with the tokens sent.
            if produce(&state, &tx, plan, &mut sent).await.is_err() {
                let e2e = arrived.elapsed();
                state
                    .metrics
                    .finished(super::metrics::Finish::Abort, e2e, prompt, sent);
            }
            drop(running);
        });
        Self::Stream(rx)
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx
                .poll_recv(cx)
                .map(|event| event.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

/// Writes the events of one stream at their due times.
async fn produce(
    state: &State,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    plan: Plan,
    sent: &mut u64,
) -> Result<(), Gone> {
    let reply = &plan.reply;
    let n = reply.steps();
    // Cut after half the tokens, and after at least one, so a 200 and some events went out.
    let cut_at = (n / 2).clamp(1, n.max(1));
    pause_until(tx, plan.first_token).await?;
    state.metrics.observe_ttft(plan.first_token - plan.arrived);
    let mut due = plan.first_token;
    for i in 0..=n {
        // The engine fails while making token `cut_at`, so the tokens before it are out.
        let cut = plan.cut.filter(|_| i == cut_at);
        if i > 0 && (i < n || cut.is_some()) {
            due += plan.tpot;
            pause_until(tx, due).await?;
        }
        if let Some(cut) = cut {
            return cut_stream(state, tx, cut).await;
        }
        if i == n {
            break;
        }
        send(tx, reply.step_events(i)).await?;
        *sent += reply.tokens_at(i);
        if i == 0 && !plan.stall_first_event.is_zero() {
            due += plan.stall_first_event;
            pause_until(tx, due).await?;
        }
    }
    send(tx, reply.finish_events()).await?;
    if reply.include_usage {
        send(tx, reply.usage_event()).await?;
    }
    send(tx, Bytes::from_static(openai::DONE)).await?;
    let e2e = plan.arrived.elapsed();
    let generated = reply.completion_tokens();
    state
        .metrics
        .finished(reply.finish, e2e, reply.prompt_tokens, generated);
    Ok(())
}

async fn cut_stream(
    state: &State,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    cut: Cut,
) -> Result<(), Gone> {
    state.metrics.failed();
    match cut {
        Cut::Truncate => {
            state.metrics.injected(Injected::Truncate);
            let err = io::Error::new(io::ErrorKind::ConnectionAborted, "simulated truncation");
            tx.send(Err(err)).await.map_err(|_| Gone)
        }
        Cut::ErrorEvent => {
            state.metrics.injected(Injected::ErrorEvent);
            send(
                tx,
                openai::error_event("simulated engine failure mid-stream"),
            )
            .await?;
            send(tx, Bytes::from_static(openai::DONE)).await
        }
    }
}

async fn send(tx: &mpsc::Sender<io::Result<Bytes>>, event: Bytes) -> Result<(), Gone> {
    tx.send(Ok(event)).await.map_err(|_| Gone)
}

/// Sleeps until `due`, returning early if the reader leaves.
async fn pause_until(tx: &mpsc::Sender<io::Result<Bytes>>, due: Instant) -> Result<(), Gone> {
    if due <= Instant::now() {
        return Ok(());
    }
    tokio::select! {
        () = sleep_until(due) => Ok(()),
        () = tx.closed() => Err(Gone),
    }
}
