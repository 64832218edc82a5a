//! A hyper-util connector that always dials one Unix socket, so the pooled legacy client can
//! reuse connections to a notebook backend. Each connection counts what it has carried
//! ([`Usage`]), so that a request lost on a dead pooled connection can be told apart from one
//! the backend may have acted on.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

/// Connects to `path`, whatever the request URI says.
#[derive(Clone, Debug)]
pub(crate) struct UdsConnector {
    path: Arc<PathBuf>,
}

impl UdsConnector {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path: Arc::new(path),
        }
    }

    /// A fresh, unpooled connection (WebSocket tunnels own theirs).
    pub(crate) async fn connect(&self) -> io::Result<UdsStream> {
        UnixStream::connect(&*self.path)
            .await
            .map(|stream| UdsStream {
                inner: TokioIo::new(Counted {
                    stream,
                    usage: Arc::default(),
                }),
            })
    }
}

impl tower_service::Service<http::Uri> for UdsConnector {
    type Response = UdsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UdsStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect().await })
    }
}

/// What one connection has carried, as HTTP/1.1 without pipelining uses it: exchanges (a
/// request written, then its response read; a write that follows a read starts the next one)
/// and how many response bytes the current exchange has read. The pool hands it to the proxy
/// through the connection's extras ([`Connected::extra`]), on errors too.
#[derive(Debug)]
pub(crate) struct Usage {
    exchanges: AtomicU64,
    response_bytes: AtomicU64,
    /// The last thing done was a read (or nothing yet): the next write starts an exchange.
    reading: AtomicBool,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            exchanges: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            reading: AtomicBool::new(true),
        }
    }
}

impl Usage {
    fn wrote(&self) {
        if self.reading.swap(false, Ordering::Relaxed) {
            self.exchanges.fetch_add(1, Ordering::Relaxed);
            self.response_bytes.store(0, Ordering::Relaxed);
        }
    }

    fn read(&self, bytes: usize) {
        if bytes > 0 {
            self.response_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            self.reading.store(true, Ordering::Relaxed);
        }
    }

    /// The connection had carried an earlier exchange (it came from the pool) and has not
    /// read one byte of the current answer.
    pub(crate) fn reused_and_unanswered(&self) -> bool {
        self.exchanges.load(Ordering::Relaxed) > 1
            && self.response_bytes.load(Ordering::Relaxed) == 0
    }
}

pin_project_lite::pin_project! {
    /// A Unix stream that counts into its [`Usage`].
    #[derive(Debug)]
    struct Counted {
        #[pin]
        stream: UnixStream,
        usage: Arc<Usage>,
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.stream.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.usage.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        // Counted whatever the outcome: a write that fails on a connection the backend has
        // closed still belongs to the new exchange.
        this.usage.wrote();
        this.stream.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.usage.wrote();
        this.stream.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A Unix stream speaking hyper's IO traits.
    #[derive(Debug)]
    pub(crate) struct UdsStream {
        #[pin]
        inner: TokioIo<Counted>,
    }
}

impl Connection for UdsStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(Arc::clone(&self.inner.inner().usage))
    }
}

impl Read for UdsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl Write for UdsStream {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_tells_a_reused_unanswered_connection() {
        let usage = Usage::default();
        usage.wrote();
        usage.wrote();
        assert!(!usage.reused_and_unanswered(), "a fresh connection");
        usage.read(120);
        usage.read(0);
        usage.wrote();
        assert!(
            usage.reused_and_unanswered(),
            "second request, no answer yet"
        );
        usage.read(1);
        assert!(!usage.reused_and_unanswered(), "the answer has begun");
        usage.wrote();
        assert!(usage.reused_and_unanswered(), "third request");
    }
}
