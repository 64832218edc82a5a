//! The responses the gateway writes itself, built one way: plain text, JSON and HTML bodies,
//! the common refusals, redirects, and the headers several of them share (`no-store`,
//! `Retry-After`).

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::Body;

/// `status` with `body` of `content_type`.
fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `status` with `text` as `text/plain; charset=utf-8`.
pub(crate) fn plain(status: StatusCode, text: impl Into<Body>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", text.into())
}

/// `status` with a JSON document.
pub(crate) fn json(status: StatusCode, document: impl Into<Body>) -> Response<Body> {
    with_type(status, "application/json", document.into())
}

/// `status` with an HTML page.
pub(crate) fn html(status: StatusCode, page: impl Into<Body>) -> Response<Body> {
    with_type(status, "text/html; charset=utf-8", page.into())
}

/// `404 Not Found`.
pub(crate) fn not_found() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "Not Found")
}

/// `400 Bad Request`.
pub(crate) fn bad_request() -> Response<Body> {
    plain(StatusCode::BAD_REQUEST, "Bad Request")
}

/// `405 Method Not Allowed`, naming the methods that are (`"GET, HEAD"`).
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A redirect (`status` is a `3xx`) to `location`, or `400` if it cannot be a header value.
pub(crate) fn redirect(status: StatusCode, location: impl Into<bytes::Bytes>) -> Response<Body> {
    let Ok(location) = HeaderValue::from_maybe_shared(location.into()) else {
        return bad_request();
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// Marks `response` `Cache-Control: no-store`: it answers this request only (a refusal, a
/// page that depends on credentials or on a backend's state).
pub(crate) fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Adds `Retry-After: secs` to `response`.
pub(crate) fn retry_after(mut response: Response<Body>, secs: u64) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// `503 Service Unavailable` with `Retry-After: secs`, not to be cached: `response` says why
/// (its body and content type are kept).
pub(crate) fn unavailable(mut response: Response<Body>, secs: u64) -> Response<Body> {
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    no_store(retry_after(response, secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_status_type_and_shared_headers() {
        let response = unavailable(json(StatusCode::OK, "{}"), 5);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::RETRY_AFTER], "5");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");

        let refused = method_not_allowed("GET, HEAD");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(
            refused.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );

        let moved = redirect(StatusCode::SEE_OTHER, "../auth/login?next=%2F");
        assert_eq!(moved.headers()[header::LOCATION], "../auth/login?next=%2F");
        assert_eq!(
            redirect(StatusCode::SEE_OTHER, "/a\nb").status(),
            StatusCode::BAD_REQUEST
        );
    }
}
