//! Per-worker state of the fast path: idle upstream TCP connections per endpoint, and a free
//! list of I/O buffers (an idle keep-alive connection holds no buffer at all). Owned by one
//! thread; a `RefCell` borrow, never a lock.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::endpoint::EndpointState;
use crate::error::UpstreamError;
use crate::fasthash::FastMap;

/// Bytes of a fresh I/O buffer.
pub(crate) const BUF_SIZE: usize = 8 * 1024;
/// Buffers kept on the free list; more are freed.
const FREE_BUFS: usize = 256;
/// A buffer that grew past this (a large head or body prefix) is freed, not kept. Room for a
/// head and a 64 KiB body read ahead (`Down::read_ahead`).
const KEEP_BUF_MAX: usize = 96 * 1024;

/// One upstream connection of the fast path.
#[derive(Debug)]
pub(crate) struct UpConn {
    pub(crate) io: TcpStream,
    pub(crate) endpoint: u64,
    /// Came from the pool (may have been closed by the peer meanwhile).
    pub(crate) reused: bool,
}

#[derive(Debug)]
pub(crate) struct FastPool {
    idle: RefCell<FastMap<u64, Vec<(TcpStream, Instant)>>>,
    bufs: RefCell<Vec<Vec<u8>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl FastPool {
    pub(crate) fn new(max_idle: usize, idle_timeout: Duration, connect_timeout: Duration) -> Self {
        FastPool {
            idle: RefCell::new(FastMap::default()),
            bufs: RefCell::new(Vec::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    /// An empty buffer with at least [`BUF_SIZE`] capacity.
    pub(crate) fn buf(&self) -> Vec<u8> {
        self.bufs
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUF_SIZE))
    }

    /// Returns a buffer to the free list.
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < BUF_SIZE || buf.capacity() > KEEP_BUF_MAX {
            return;
        }
        let mut bufs = self.bufs.borrow_mut();
        if bufs.len() < FREE_BUFS {
            buf.clear();
            bufs.push(buf);
        }
    }

    /// A pooled connection that has not been closed, else a new one; counted in
    /// `rollgate_proxy_upstream_exchanges_total` like the hyper path's pool.
    /// `now`: the caller's clock reading, for the idle connections' age.
    pub(crate) async fn get(
        &self,
        ep: &EndpointState,
        now: Instant,
    ) -> Result<UpConn, UpstreamError> {
        if let Some(io) = self.take(ep.id, now) {
            ep.exchanges_pooled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(UpConn {
                io,
                endpoint: ep.id,
                reused: true,
            });
        }
        let conn = self.connect(ep).await?;
        ep.exchanges_new
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(conn)
    }

    fn take(&self, id: u64, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&id)?;
        while let Some((io, since)) = list.pop() {
            if !flagged_readable(&io) && now.saturating_duration_since(since) < self.idle_timeout {
                return Some(io);
            }
        }
        None
    }

    pub(crate) async fn connect(&self, ep: &EndpointState) -> Result<UpConn, UpstreamError> {
        let connect = TcpStream::connect(&*ep.authority);
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout),
        };
        // Latency over batching: SSE events must leave as soon as they arrive.
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        Ok(UpConn {
            io,
            endpoint: ep.id,
            reused: false,
        })
    }

    /// Returns a connection whose exchange ended cleanly at `now` (its idle time starts then).
    pub(crate) fn put(&self, conn: UpConn, now: Instant) {
        // The last read took the whole response without seeing `WouldBlock`, so the runtime
        // still flags the socket readable. Clear that flag (no system call): from now on,
        // readiness means the peer closed the idle connection (or broke protocol).
        let _ = conn.io.try_io(Interest::READABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.endpoint).or_default();
        if list.len() < self.max_idle {
            list.push((conn.io, now));
        }
    }

    /// Closes connections idle past the timeout or closed by the peer.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|(io, since)| {
                !flagged_readable(io) && now.saturating_duration_since(*since) < self.idle_timeout
            });
        }
        idle.retain(|_, l| !l.is_empty());
    }
}

/// Whether the event loop has flagged an idle connection readable (no system call, no waker
/// registered). An idle connection has nothing to read, so it means the peer closed it or sent
/// garbage.
fn flagged_readable(io: &TcpStream) -> bool {
    io.try_io(Interest::READABLE, || Ok(())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooled connection is handed out while its peer keeps it open, and not once the event
    /// loop has seen the peer close it (detected from the runtime's readiness flag alone).
    #[tokio::test]
    async fn a_connection_the_peer_closed_is_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = FastPool::new(4, Duration::from_secs(60), Duration::from_secs(1));
        let put = |io| {
            let conn = UpConn {
                io,
                endpoint: 7,
                reused: false,
            };
            pool.put(conn, Instant::now());
        };
        put(TcpStream::connect(addr).await.unwrap());
        let (peer, _) = listener.accept().await.unwrap();
        let io = pool.take(7, Instant::now());
        put(io.expect("an open connection is handed out"));
        drop(peer);
        // The close reaches the runtime's readiness flag once the event loop has run.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::task::yield_now().await;
            match pool.take(7, Instant::now()) {
                None => break,
                Some(io) => put(io),
            }
            assert!(
                Instant::now() < deadline,
                "the closed connection is still handed out"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            pool.take(7, Instant::now()).is_none(),
            "and it is gone from the pool"
        );
    }
}
