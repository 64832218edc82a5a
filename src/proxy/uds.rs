//! A hyper-util connector that always dials one Unix socket, so the pooled legacy client can
//! reuse connections to a notebook backend.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
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
                inner: TokioIo::new(stream),
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

pin_project_lite::pin_project! {
    /// A Unix stream speaking hyper's IO traits.
    #[derive(Debug)]
    pub(crate) struct UdsStream {
        #[pin]
        inner: TokioIo<UnixStream>,
    }
}

impl Connection for UdsStream {
    fn connected(&self) -> Connected {
        Connected::new()
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
