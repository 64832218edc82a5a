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

/// The style of the gateway's own pages (login, sign-in, sign-out, refusals): one card in
/// the middle of the page.
const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f6f7;color:#111;\
display:flex;align-items:center;justify-content:center;min-height:100vh;margin:0}\
main,form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);\
display:flex;flex-direction:column;gap:.75rem;min-width:18rem;max-width:32rem}\
main form{box-shadow:none;padding:0;min-width:0}\
h1{font-size:1.25rem;margin:0}input,button,a.button{font:inherit;padding:.5rem}\
a.button{text-align:center;border:1px solid #888;border-radius:3px;color:inherit;\
text-decoration:none;background:#eee}.error{color:#b00020;margin:0}p{margin:0}";

/// `Content-Security-Policy` of the gateway's own pages.
static PAGE_CSP: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| style_csp(STYLE));

/// A `Content-Security-Policy` allowing nothing but the inline `style` (by its hash) and forms
/// posting to this origin: the gateway's own pages and the admin page.
pub(crate) fn style_csp(style: &str) -> HeaderValue {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::try_from(policy).expect("the policy is ASCII")
}

/// `response` (one of the gateway's HTML pages) with `csp` and the fields that keep it out of
/// frames and other sites' referrers, and its type from being guessed.
pub(crate) fn hardened(mut response: Response<Body>, csp: &HeaderValue) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// One of the gateway's own HTML pages: `title`, and `body` (HTML, escaped by the caller)
/// in the page's card, with headers that keep it out of frames and scripts out of it.
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let document = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>marimo \u{2014} {title}</title><style>{STYLE}</style></head><body>{body}</body></html>\n",
        title = crate::html::escape(title),
    );
    hardened(html(status, document), &PAGE_CSP)
}

/// The body of `response` as text (for the unit tests).
#[cfg(test)]
pub(crate) async fn body_text(response: Response<Body>) -> String {
    use http_body_util::BodyExt as _;
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
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

        let page = page(StatusCode::OK, "t", "<p>x</p>");
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{policy}"
        );
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");

        let moved = redirect(StatusCode::SEE_OTHER, "../auth/login?next=%2F");
        assert_eq!(moved.headers()[header::LOCATION], "../auth/login?next=%2F");
        assert_eq!(
            redirect(StatusCode::SEE_OTHER, "/a\nb").status(),
            StatusCode::BAD_REQUEST
        );
    }
}
