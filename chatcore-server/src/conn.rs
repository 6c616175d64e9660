//! Connections: hyper-util's auto builder (HTTP/1.1 and HTTP/2) under the
//! axum router, with what keeps a slow or silent client from holding a
//! connection:
//!
//! - a header-read timeout (hyper's, HTTP/1: the whole head must arrive in
//!   time; hyper also runs it while a kept-alive connection waits for its
//!   next request, so it bounds those too);
//! - a body timeout (a tower-http layer in [`crate::routes`]: a body that
//!   pauses longer is a 408, and the connection closes after it);
//! - an idle timeout: a connection on which no byte moves either way for
//!   that long is shut down gracefully (the reply in progress, if any, is
//!   finished first; HTTP/2 gets a GOAWAY);
//! - a cap on open connections: beyond it, the listener is not polled
//!   until one closes (the kernel's backlog holds the rest).
//!
//! Shutdown: [`Server::drain`] asks every connection to finish gracefully
//! and waits until all have closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::Config;

/// The connection settings (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Header-read timeout.
    pub header_read_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

impl Settings {
    /// The settings of a configuration.
    pub fn of(c: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(c.header_read_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(c.idle_timeout_secs.max(1)),
            max_connections: c.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        }
    }
}

/// Accepts and serves connections; see the module docs.
pub struct Server {
    settings: Settings,
    builder: auto::Builder<TokioExecutor>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
}

impl Server {
    /// A server with these settings.
    pub fn new(settings: Settings) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        Self {
            settings,
            builder,
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            stop: CancellationToken::new(),
        }
    }

    /// Accepts connections until `shutdown` completes.
    pub async fn accept_until(
        &self,
        listener: &TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = &mut shutdown => return,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // E.g. out of file descriptors: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let _ = stream.set_nodelay(true);
            let conn = self.serve(stream, peer, router.clone());
            tokio::spawn(async move {
                let _permit = permit;
                conn.await;
            });
        }
    }

    fn serve(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        router: Router,
    ) -> impl Future<Output = ()> + Send + 'static {
        let activity = Arc::new(Activity::new());
        let io = Tracked {
            inner: TokioIo::new(stream),
            activity: activity.clone(),
        };
        let svc = TowerToHyperService::new(router.map_request(
            move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let conn = self
            .builder
            .serve_connection_with_upgrades(io, svc)
            .into_owned();
        let stop = self.stop.clone();
        let idle = self.settings.idle_timeout;
        async move {
            tokio::pin!(conn);
            let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
            let mut closing = false;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    _ = stop.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ = tick.tick(), if !closing => {
                        if activity.idle_for() >= idle {
                            tracing::debug!(%peer, "closing an idle connection");
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        }
    }

    /// Asks every open connection to finish (each completes the reply in
    /// progress) and waits until all have closed.
    pub async fn drain(&self) {
        self.stop.cancel();
        let all = self.settings.max_connections as u32;
        let _ = self.permits.acquire_many(all).await;
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Relaxed)))
    }
}

/// An IO that records its activity.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }
}
