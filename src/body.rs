//! The body type of every request and response the crate's services handle.

/// A boxed error, as bodies and services of this crate carry them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The request and response body of the services built by this crate: axum's body type.
///
/// A boxed [`http_body::Body`] of [`Bytes`](bytes::Bytes): streaming bodies (a proxied `/sse`
/// event stream, a large asset) pass through without being buffered, and a body that already
/// is one is not boxed again. Being axum's own type, a request or response moves between
/// axum and this crate as it is: `axum::middleware::from_fn` wraps a single
/// [`Mount`](crate::Mount), and an axum handler's response is a mount's response.
///
/// ```
/// use marimo_rs::Body;
///
/// let empty = Body::empty();
/// let text = Body::from("Not Found");
/// let axum_body: axum::body::Body = text; // the same type
/// # let _ = (empty, axum_body);
/// ```
pub type Body = axum_core::body::Body;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn wrapping_a_body_again_keeps_its_bytes() {
        let twice = Body::new(Body::new(Body::from("marimo")));
        assert_eq!(twice.collect().await.unwrap().to_bytes(), "marimo");
        let other = Body::new(Full::new(Bytes::from_static(b"rs")));
        assert_eq!(http_body::Body::size_hint(&other).exact(), Some(2));
    }
}
