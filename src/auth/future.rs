//! [`ResponseFuture`]: what [`Auth`](super::Auth) returns, whether it answered itself or
//! called the inner service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::HeaderValue;
use http::Response;

use super::login::LoginFuture;
use crate::origin;
use crate::Body;

pin_project_lite::pin_project! {
    /// Response future of [`Auth`](super::Auth).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        // The allowed foreign origin whose page may read the response.
        cors: Option<HeaderValue>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Ready { response: Option<Response<Body>> },
        Login { future: LoginFuture },
        Inner { #[pin] future: F },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn ready(response: Response<Body>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
            cors: None,
        }
    }

    pub(super) fn login(future: LoginFuture) -> Self {
        Self {
            kind: Kind::Login { future },
            cors: None,
        }
    }

    /// The inner service's answer.
    pub(super) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
            cors: None,
        }
    }

    /// Lets the allowed foreign origin `cors` (if any) read the response.
    pub(super) fn with_cors(mut self, cors: Option<HeaderValue>) -> Self {
        self.cors = cors;
        self
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.kind.project() {
            KindProj::Ready { response } => response
                .take()
                .expect("ResponseFuture polled after completion"),
            KindProj::Login { future } => std::task::ready!(future.as_mut().poll(cx)),
            KindProj::Inner { future } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            },
        };
        if let Some(origin) = this.cors.take() {
            origin::allow_cors(&mut response, origin);
        }
        Poll::Ready(Ok(response))
    }
}
