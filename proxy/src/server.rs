//! Listeners and workers: one thread per worker, each with its own current-thread runtime, its
//! own `SO_REUSEPORT` listener on the shared port and its own upstream pool. A downstream
//! connection is one task that drives its requests' upstream exchanges inline.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::LocalSet;

use rollgate_config::DataPlane;

use crate::handle::ProxyHandle;
use crate::pool::Pool;
use crate::service::Worker;

mod tls;

pub use tls::{load_tls, TlsError};

/// How often each worker closes upstream connections idle past `pool_idle_timeout`.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Slack above the configured header limits for hyper's own parser, so that our check (which
/// answers an OpenAI-shaped 431) sees moderately oversized heads first.
const HEAD_BUF_SLACK: usize = 16 * 1024;

/// Bound, not yet serving, data-plane listeners (one per worker).
#[derive(Debug)]
pub struct Listeners {
    sockets: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
}

/// The running data plane.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

/// Hyper executor for HTTP/2 streams: they run on the worker's `LocalSet`, never crossing
/// threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalExec;

// === impl Listeners ===

impl Listeners {
    /// Binds `workers` sockets on `addr`, one per worker; port 0 picks one port for all.
    ///
    /// The address is this process's alone: an address another process listens on fails with
    /// `AddrInUse`. Several workers share it through `SO_REUSEPORT`, which would also let a
    /// second process of the same user join the group and silently take a share of the
    /// connections (a second `rollgate run` with the same `listen`, serving another config).
    /// So one worker binds without it, and several first bind a plain probe socket, which the
    /// kernel refuses while anything listens there.
    pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Listeners> {
        let workers = workers.max(1);
        if workers > 1 && addr.port() != 0 {
            drop(socket_on(addr, false)?);
        }
        let first = listener(socket_on(addr, workers > 1)?)?;
        let local_addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(listener(socket_on(local_addr, true)?)?);
        }
        Ok(Listeners {
            sockets,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts one worker thread per listener.
    pub fn serve(
        self,
        handle: ProxyHandle,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Running> {
        let (shutdown, rx) = watch::channel(false);
        let mut done = Vec::new();
        for (i, sock) in self.sockets.into_iter().enumerate() {
            let (tx, d) = tokio::sync::oneshot::channel();
            done.push(d);
            let (handle, tls, rx) = (handle.clone(), tls.clone(), rx.clone());
            std::thread::Builder::new()
                .name(format!("rollgate-worker-{i}"))
                .spawn(move || {
                    if let Err(e) = run_worker(sock, handle, tls, rx) {
                        tracing::error!(worker = i, error = %e, "worker failed");
                    }
                    // The receiver may be gone if the process is already exiting.
                    let _ = tx.send(());
                })?;
        }
        Ok(Running {
            local_addr: self.local_addr,
            shutdown,
            done,
        })
    }
}

/// A socket bound to `addr`. `SO_REUSEADDR` lets a restart bind while the last run's
/// connections sit in `TIME_WAIT`; it never admits a second listener.
fn socket_on(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn listener(sock: Socket) -> io::Result<std::net::TcpListener> {
    sock.set_nonblocking(true)?;
    sock.listen(4096)?;
    Ok(sock.into())
}

// === impl Running ===

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests and streams finish, and waits up to `deadline`.
    /// Returns false when some were still running at the deadline.
    pub async fn drain(self, deadline: Duration) -> bool {
        // Receivers live in the workers; an error means they have all stopped already.
        let _ = self.shutdown.send(true);
        let all = futures_join(self.done);
        tokio::time::timeout(deadline, all).await.is_ok()
    }
}

async fn futures_join(done: Vec<tokio::sync::oneshot::Receiver<()>>) {
    for d in done {
        // A dropped sender means the worker thread ended: that is done too.
        let _ = d.await;
    }
}

fn run_worker(
    sock: std::net::TcpListener,
    handle: ProxyHandle,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = LocalSet::new();
    local.block_on(&rt, accept_loop(sock, handle, tls, shutdown))
}

async fn accept_loop(
    sock: std::net::TcpListener,
    handle: ProxyHandle,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(sock)?;
    let cfg = handle.snapshot().config().clone();
    let up = &cfg.upstream;
    let pool = Pool::new(up.pool_max_idle, up.pool_idle_timeout, up.connect_timeout);
    let fast = Rc::new(crate::h1::FastPool::new(
        up.pool_max_idle,
        up.pool_idle_timeout,
        up.connect_timeout,
    ));
    let worker = Rc::new(Worker {
        shared: handle.shared.clone(),
        pool: pool.clone(),
        fast: fast.clone(),
        last_path: std::cell::RefCell::new(None),
    });
    // hyper's connection settings, rebuilt when a reload changes `limits` (new connections
    // get them; the fast path reads them from the snapshot per request).
    let mut builder = (cfg.limits.clone(), Rc::new(http_builder(&cfg)));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let open = Rc::new((Cell::new(0usize), Notify::new()));
    tokio::task::spawn_local(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            pool.sweep();
            fast.sweep();
        }
    });
    loop {
        let (stream, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let snap = worker.shared.snapshot.load();
        if snap.config().limits != builder.0 {
            builder = (
                snap.config().limits.clone(),
                Rc::new(http_builder(snap.config())),
            );
        }
        let fast = snap.config().data_plane == DataPlane::Fast;
        drop(snap);
        let (worker, builder, shutdown, open) = (
            worker.clone(),
            builder.1.clone(),
            shutdown.clone(),
            open.clone(),
        );
        let tls = tls.clone();
        open.0.set(open.0.get() + 1);
        if tls.is_none() && fast {
            // Its own task, so that the task is sized for the fast path's future, not for
            // hyper's or the TLS handshake's (memory per idle connection).
            tokio::task::spawn_local(async move {
                crate::h1::serve(stream, worker, &builder, shutdown).await;
                open.0.set(open.0.get() - 1);
                open.1.notify_one();
            });
            continue;
        }
        tokio::task::spawn_local(async move {
            match tls {
                None => serve_conn(stream, worker, &builder, shutdown).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => serve_conn(s, worker, &builder, shutdown).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                },
            }
            open.0.set(open.0.get() - 1);
            open.1.notify_one();
        });
    }
    drop(listener);
    while open.0.get() > 0 {
        open.1.notified().await;
    }
    Ok(())
}

fn http_builder(cfg: &rollgate_config::Config) -> auto::Builder<LocalExec> {
    let limits = &cfg.limits;
    let mut b = auto::Builder::new(LocalExec);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes * 2 + HEAD_BUF_SLACK).max(8192))
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
    b.http2().timer(TokioTimer::new()).max_header_list_size(
        u32::try_from(limits.max_header_bytes * 2 + HEAD_BUF_SLACK).unwrap_or(u32::MAX),
    );
    b
}

/// Serves one downstream connection with hyper (HTTP/1.1 or h2c, sniffed).
pub(crate) async fn serve_conn<I>(
    io: I,
    worker: Rc<Worker>,
    builder: &auto::Builder<LocalExec>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let svc = service_fn(move |req| worker.clone().handle(req));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

// === impl LocalExec ===

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener as another process with `SO_REUSEPORT` would hold it (a second rollgate).
    fn held_with_reuseport() -> (Socket, SocketAddr) {
        let sock = socket_on("127.0.0.1:0".parse().unwrap(), true).unwrap();
        sock.listen(16).unwrap();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        (sock, addr)
    }

    #[test]
    fn an_address_another_listener_holds_is_refused_with_one_worker_or_several() {
        let (_held, addr) = held_with_reuseport();
        for workers in [1, 4] {
            let err = Listeners::bind(addr, workers).err();
            assert_eq!(
                err.map(|e| e.kind()),
                Some(io::ErrorKind::AddrInUse),
                "{workers} workers joined a listener they do not own"
            );
        }
    }

    #[test]
    fn workers_share_one_port_that_a_second_gateway_cannot_join() {
        let ours = Listeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = ours.local_addr();
        assert_eq!(ours.sockets.len(), 3);
        for s in &ours.sockets {
            assert_eq!(s.local_addr().unwrap(), addr);
        }
        assert_eq!(
            Listeners::bind(addr, 3).err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
        drop(ours);
        // Free again once ours are closed (no connection was made, so no TIME_WAIT either).
        assert!(Listeners::bind(addr, 2).is_ok());
    }
}
