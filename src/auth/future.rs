//! [`ResponseFuture`]: what [`Auth`](super::Auth) returns, whether it answered itself or
//! called the inner service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::header::HeaderValue;
use http::{Request, Response};

use crate::origin;
use crate::Body;

/// Calls the inner service with a request that was let in.
type Call<F> = Box<dyn FnOnce(Request<Body>) -> F + Send>;

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
        // The layer's own pages that wait on something (a form body, the identity provider).
        Boxed { future: BoxFuture<'static, Response<Body>> },
        // A check that must wait (a proxy's keys) before the request goes in or is refused.
        Deferred {
            check: BoxFuture<'static, Result<Request<Body>, Response<Body>>>,
            call: Option<Call<F>>,
        },
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

    /// A response that takes waiting for.
    pub(super) fn boxed(future: BoxFuture<'static, Response<Body>>) -> Self {
        Self {
            kind: Kind::Boxed { future },
            cors: None,
        }
    }

    /// The inner service's answer once `check` lets the request in (`call` calls it), or
    /// `check`'s refusal.
    pub(super) fn deferred(
        check: BoxFuture<'static, Result<Request<Body>, Response<Body>>>,
        call: Call<F>,
    ) -> Self {
        Self {
            kind: Kind::Deferred {
                check,
                call: Some(call),
            },
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
        let mut this = self.project();
        let mut response = loop {
            match this.kind.as_mut().project() {
                KindProj::Ready { response } => {
                    break response
                        .take()
                        .expect("ResponseFuture polled after completion")
                }
                KindProj::Boxed { future } => break std::task::ready!(future.as_mut().poll(cx)),
                KindProj::Deferred { check, call } => {
                    match std::task::ready!(check.as_mut().poll(cx)) {
                        Ok(req) => {
                            let call = call.take().expect("ResponseFuture polled after completion");
                            this.kind.set(Kind::Inner { future: call(req) });
                        }
                        Err(response) => break response,
                    }
                }
                KindProj::Inner { future } => match std::task::ready!(future.poll(cx)) {
                    Ok(response) => break response,
                    Err(never) => match never {},
                },
            }
        };
        if let Some(origin) = this.cors.take() {
            origin::allow_cors(&mut response, origin);
        }
        Poll::Ready(Ok(response))
    }
}
