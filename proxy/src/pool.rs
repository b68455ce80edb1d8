//! Per-worker upstream connection pool. Each worker thread owns one; nothing is shared between
//! threads, so taking and returning a connection is a `RefCell` borrow, not a lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::UpstreamBody;
use crate::endpoint::EndpointState;
use crate::error::UpstreamError;

/// How long a pooled connection may take to flag itself ready. One whose response just ended is
/// ready after a poll of its driver; one still sending a request body the upstream stopped
/// reading (an early error response) may never be, and is dropped instead of waited on.
const READY_WAIT: Duration = Duration::from_millis(20);

pub(crate) type Sender = http1::SendRequest<UpstreamBody>;

/// A connection checked out of the pool for one exchange. Returned with [`Pool::put`] once the
/// response body has ended; dropped (closing the connection) otherwise.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) endpoint: u64,
    pub(crate) sender: Sender,
    /// True when this connection came from the pool (the exchange may find it closed).
    pub(crate) reused: bool,
}

#[derive(Debug)]
pub(crate) struct Pool {
    idle: RefCell<HashMap<u64, Vec<Idle>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Debug)]
struct Idle {
    sender: Sender,
    since: Instant,
}

// === impl Pool ===

impl Pool {
    pub(crate) fn new(
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Rc<Pool> {
        Rc::new(Pool {
            idle: RefCell::new(HashMap::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        })
    }

    /// A ready pooled connection to the endpoint, or a new one.
    pub(crate) async fn get(&self, ep: &EndpointState) -> Result<Conn, UpstreamError> {
        while let Some(mut sender) = self.take(ep.id) {
            // A connection whose previous response just ended may not have flagged itself ready
            // yet; waiting for it is a poll of its driver task, not a network round trip.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                ep.exchanges_pooled.fetch_add(1, Relaxed);
                return Ok(Conn {
                    endpoint: ep.id,
                    sender,
                    reused: true,
                });
            }
        }
        self.connect(ep).await
    }

    fn take(&self, id: u64) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        let now = Instant::now();
        // Most recently used first: it is the least likely to have been closed by the peer.
        while let Some(c) = list.pop() {
            if !c.sender.is_closed() && now.saturating_duration_since(c.since) < self.idle_timeout {
                return Some(c.sender);
            }
        }
        None
    }

    /// A new connection, handshaken, its driver task spawned on this worker.
    pub(crate) async fn connect(&self, ep: &EndpointState) -> Result<Conn, UpstreamError> {
        let connect = TcpStream::connect(&*ep.authority);
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        // Latency over batching: SSE events must leave as soon as they arrive.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Handshake)?;
        ep.exchanges_new.fetch_add(1, Relaxed);
        tokio::task::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            endpoint: ep.id,
            sender,
            reused: false,
        })
    }

    /// Returns a connection whose exchange completed cleanly.
    pub(crate) fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.endpoint).or_default();
        if list.len() < self.max_idle {
            list.push(Idle {
                sender: conn.sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle past the timeout. Run periodically by the worker.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| {
                !c.sender.is_closed() && now.saturating_duration_since(c.since) < self.idle_timeout
            });
        }
        idle.retain(|_, l| !l.is_empty());
    }
}
