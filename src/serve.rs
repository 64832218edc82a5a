//! [`serve`]: run a service on a TCP listener with hyper, WebSocket upgrades included.

use std::convert::Infallible;
use std::future::{Future, IntoFuture, Pending};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;
use tower_service::Service;

use crate::request::{LocalAddr, RemoteAddr};
use crate::BoxError;

/// Default for [`Serve::max_connections`].
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for [`Serve::max_header_bytes`]: 64 KiB.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// The smallest header limit hyper accepts.
const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Bytes hyper reads to tell HTTP/2 (its connection preface) from HTTP/1.
const PREFACE_LEN: usize = 24;

#[doc = include_str!("../docs/serve.md")]
pub fn serve<S>(listener: TcpListener, service: S) -> Serve<S> {
    Serve {
        listener,
        service,
        signal: std::future::pending(),
        header_read_timeout: Duration::from_secs(30),
        grace_period: Duration::from_secs(10),
        max_connections: DEFAULT_MAX_CONNECTIONS,
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
    }
}

/// A server being configured; `.await` it to run. Created by [`serve`].
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<S, F = Pending<()>> {
    listener: TcpListener,
    service: S,
    signal: F,
    header_read_timeout: Duration,
    grace_period: Duration,
    max_connections: usize,
    max_header_bytes: usize,
}

impl<S, F> std::fmt::Debug for Serve<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("grace_period", &self.grace_period)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish_non_exhaustive()
    }
}

impl<S, F> Serve<S, F> {
    /// Stops the server gracefully when `signal` completes (see [`shutdown_signal`]).
    pub fn with_graceful_shutdown<F2>(self, signal: F2) -> Serve<S, F2>
    where
        F2: Future<Output = ()> + Send + 'static,
    {
        Serve {
            listener: self.listener,
            service: self.service,
            signal,
            header_read_timeout: self.header_read_timeout,
            grace_period: self.grace_period,
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// How long a client may take to send a request's headers before the connection is closed
    /// (default 30 s). Defends against slow-header (slowloris) clients. It also bounds how long
    /// a new connection may stay silent and how long an idle HTTP/1 keep-alive connection is
    /// kept.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most connections open at once (default 10,000; at least 1). WebSocket connections
    /// count for as long as they are open. At the limit the server stops accepting: new
    /// connections wait in the operating system's listen queue (and time out there if nothing
    /// closes), rather than being accepted and dropped.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The largest request head (request line and headers) read, in bytes (default 64 KiB;
    /// values below 8 KiB are raised to 8 KiB). A larger HTTP/1 head is answered `431 Request
    /// Header Fields Too Large` and the connection closed. For HTTP/2 this is the
    /// `SETTINGS_MAX_HEADER_LIST_SIZE` announced to clients.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// How long open requests may run after the shutdown signal (default 10 s).
    pub fn grace_period(mut self, period: Duration) -> Self {
        self.grace_period = period;
        self
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl<S, B, F> IntoFuture for Serve<S, F>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = futures_util::future::BoxFuture<'static, io::Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Serve {
                listener,
                service,
                signal,
                header_read_timeout,
                grace_period,
                max_connections,
                max_header_bytes,
            } = self;
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(max_header_bytes);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(20));
            let local = listener.local_addr().ok().map(LocalAddr);
            let graceful = GracefulShutdown::new();
            let slots = Arc::new(Semaphore::new(max_connections));
            tokio::pin!(signal);
            // Whether the limit was hit and logged, so that a server kept at the limit logs it once.
            let mut saturated = false;

            loop {
                let permit = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        saturated = false;
                        permit
                    }
                    Err(_) => {
                        if !saturated {
                            saturated = true;
                            tracing::warn!(
                                max_connections,
                                "connection limit reached; not accepting until a connection closes"
                            );
                        }
                        tokio::select! {
                            permit = Arc::clone(&slots).acquire_owned() => {
                                permit.expect("the semaphore is never closed")
                            }
                            () = &mut signal => break,
                        }
                    }
                };
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) if is_connection_error(&error) => continue,
                        Err(error) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::error!(%error, "accept failed; retrying in 100 ms");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = &mut signal => break,
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let hyper_service =
                    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                        req.extensions_mut().insert(RemoteAddr(peer));
                        if let Some(local) = local {
                            req.extensions_mut().insert(local);
                        }
                        service.clone().oneshot(req)
                    });
                let io = ServerIo::new(stream, permit, header_read_timeout);
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), hyper_service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%peer, error = %error, "connection closed with an error");
                    }
                });
            }

            drop(listener);
            tracing::debug!("shutting down: waiting for open connections");
            tokio::select! {
                () = graceful.shutdown() => {}
                () = tokio::time::sleep(grace_period) => {
                    tracing::warn!(?grace_period, "connections still open after the grace period; closing");
                }
            }
            Ok(())
        })
    }
}

pin_project_lite::pin_project! {
    /// An accepted connection: holds its slot under [`Serve::max_connections`] for as long as
    /// it lives (an upgraded connection keeps it in the tunnel), and fails reads that wait past
    /// the header read timeout before the first [`PREFACE_LEN`] bytes have come. hyper-util
    /// reads those bytes to choose between HTTP/1 and HTTP/2 without any timeout of its own;
    /// after them hyper's HTTP/1 header timeout (or HTTP/2 keep-alive) takes over.
    struct ServerIo<T> {
        #[pin]
        inner: T,
        first_bytes_deadline: Option<Pin<Box<Sleep>>>,
        read: usize,
        _slot: OwnedSemaphorePermit,
    }
}

impl<T> ServerIo<T> {
    fn new(inner: T, slot: OwnedSemaphorePermit, timeout: Duration) -> Self {
        Self {
            inner,
            first_bytes_deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            read: 0,
            _slot: slot,
        }
    }
}

impl<T: AsyncRead> AsyncRead for ServerIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(result) => {
                *this.read += buf.filled().len() - before;
                if *this.read >= PREFACE_LEN {
                    *this.first_bytes_deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let expired = this
                    .first_bytes_deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                *this.first_bytes_deadline = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent too little within the header read timeout",
                )))
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for ServerIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM: the usual signal for
/// [`Serve::with_graceful_shutdown`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
