//! The body type used by every service this crate builds.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// A boxed error, as used by [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The request and response body of the services built by this crate.
///
/// A thin wrapper over a boxed [`http_body::Body`] of [`Bytes`]: streaming bodies (a proxied
/// `/sse` event stream, a large asset) pass through without being buffered.
///
/// ```
/// use marimo_rs::Body;
///
/// let empty = Body::empty();
/// let text = Body::from("Not Found");
/// # let _ = (empty, text);
/// ```
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

impl Body {
    /// Wraps any body whose chunks are [`Bytes`].
    pub fn new<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Already a `Body` (the common case between this crate's own layers): don't box twice.
        let mut slot = Some(body);
        if let Some(body) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Body>>() {
            return body.take().expect("just put there");
        }
        let body = slot.expect("just put there");
        Self(body.map_err(Into::into).boxed_unsync())
    }

    /// A body with no bytes.
    pub fn empty() -> Self {
        Self::new(Empty::new())
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

macro_rules! body_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Body {
            fn from(value: $ty) -> Self {
                Self::new(Full::from(value))
            }
        }
    )*};
}
body_from!(&'static str, String, Bytes, Vec<u8>, &'static [u8]);

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wrapping_a_body_again_keeps_its_bytes() {
        let twice = Body::new(Body::new(Body::from("marimo")));
        assert_eq!(twice.collect().await.unwrap().to_bytes(), "marimo");
        let other = Body::new(Full::new(Bytes::from_static(b"rs")));
        assert_eq!(http_body::Body::size_hint(&other).exact(), Some(2));
    }
}
