//! The login form at `{base}/auth/login` and the `next` parameter.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use sha2::{Digest, Sha256};

use super::credentials::DEFAULT_USER;
use super::future::ResponseFuture;
use super::layer::Config;
use super::limit::retry_after_secs;
use crate::html::escape;
use crate::response::{
    bad_request, html, method_not_allowed, no_store, plain, redirect, retry_after,
};
use crate::Body;

/// The path of the login page, relative to the service root.
pub(crate) const LOGIN_PATH: &str = "/auth/login";

/// Largest login form body read.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// How long a client may take to send the login form's body (slow-body clients).
pub(crate) const FORM_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f6f7;color:#111;\
display:flex;align-items:center;justify-content:center;min-height:100vh;margin:0}\
form{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);\
display:flex;flex-direction:column;gap:.75rem;min-width:18rem}\
h1{font-size:1.25rem;margin:0}input,button{font:inherit;padding:.5rem}\
.error{color:#b00020;margin:0}";

/// `Content-Security-Policy` of the login page: nothing but its own inline style and a form
/// posting to this origin.
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    let policy = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::try_from(policy).expect("the policy is ASCII")
});

/// Serves `{base}/auth/login`: the form for `GET`/`HEAD`, the check for `POST`.
pub(crate) fn handle<F>(config: Arc<Config>, req: Request<Body>) -> ResponseFuture<F> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let next = query_next(req.uri()).filter(|next| is_safe_next(next));
            ResponseFuture::ready(page(next.as_deref().unwrap_or("/"), None))
        }
        Method::POST => ResponseFuture::login(Box::pin(post(config, req))),
        _ => ResponseFuture::ready(no_store(method_not_allowed("GET, POST"))),
    }
}

/// The future of a login `POST` (it reads the body).
pub(crate) type LoginFuture = BoxFuture<'static, Response<Body>>;

async fn post(config: Arc<Config>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return no_store(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
        ));
    }
    let declared_too_long = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .is_some_and(|length| length > MAX_FORM_BYTES as u64);
    if declared_too_long {
        return too_large();
    }
    let read = Limited::new(body, MAX_FORM_BYTES).collect();
    // The deadline needs Tokio's timer; a host polling this elsewhere gets no deadline.
    let read = if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::timeout(FORM_READ_TIMEOUT, read).await
    } else {
        Ok(read.await)
    };
    let form: Bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(_)) => return no_store(bad_request()),
        Err(_) => {
            let mut response = no_store(plain(StatusCode::REQUEST_TIMEOUT, "Request Timeout"));
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let (mut password, mut next) = (None, None);
    for (key, value) in form_urlencoded::parse(&form) {
        match &*key {
            "password" if password.is_none() => password = Some(value),
            "next" if next.is_none() => next = Some(value),
            _ => {}
        }
    }
    // The form's `next`, else the query's: marimo's login page and tests post it that way.
    let next = next
        .or_else(|| query_next(&parts.uri))
        .filter(|next| is_safe_next(next));
    let next = next.as_deref().unwrap_or("/");
    let password = password.unwrap_or_default();
    if password.is_empty() {
        return page(next, Some("Password is required"));
    }
    let checked = config.attempt(&parts.extensions, &parts.headers, || {
        config.token_matches(password.as_bytes()).then_some(())
    });
    match checked {
        Ok(Some(())) => {}
        Ok(None) => {
            tracing::debug!("login with a wrong password");
            return page(next, Some("Invalid password"));
        }
        Err(wait) => return limited(next, wait),
    }
    let mut response = no_store(redirect(StatusCode::FOUND, config.location(next)));
    if response.status() == StatusCode::FOUND {
        response.headers_mut().insert(
            header::SET_COOKIE,
            config.session_cookie(&parts.uri, &parts.headers, &parts.extensions, DEFAULT_USER),
        );
    }
    response
}

/// The login page with `429` and `Retry-After`: too many wrong passwords from this client.
fn limited(next: &str, wait: std::time::Duration) -> Response<Body> {
    let seconds = retry_after_secs(wait);
    let message = format!("Too many failed sign-in attempts. Try again in {seconds} s.");
    let mut response = page(next, Some(&message));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    retry_after(response, seconds)
}

fn too_large() -> Response<Body> {
    no_store(plain(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large"))
}

/// Whether `next` is a path on this site: one leading `/` and nothing a browser could read as
/// another host (`//h`, `/\h`, `\\h`, `https:h`, control or space characters that browsers
/// drop). Only visible ASCII is allowed: real paths are percent-encoded.
pub(crate) fn is_safe_next(next: &str) -> bool {
    let bytes = next.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'\\')
}

/// The `next` parameter of a request's query string, decoded.
fn query_next(uri: &http::Uri) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == "next")
        .map(|(_, value)| value)
}

/// The login page, with `next` in the form and an optional error message.
pub(crate) fn page(next: &str, error: Option<&str>) -> Response<Body> {
    let error = error
        .map(|message| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)))
        .unwrap_or_default();
    let document = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\">\
<title>marimo \u{2014} sign in</title><style>{STYLE}</style></head><body>\
<form method=\"post\" action=\"login\"><h1>Sign in to marimo</h1>{error}\
<label for=\"password\">Access token</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" \
autofocus required>\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<button type=\"submit\">Sign in</button></form></body></html>\n",
        next = escape(next),
    );
    let mut response = html(StatusCode::OK, document);
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    no_store(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_safe() {
        for good in [
            "/",
            "/dashboard/x?y=1",
            "/a%2F%2Fb",
            "/a//b",
            "/a:b",
            "/..",
            "/?next=//x",
        ] {
            assert!(is_safe_next(good), "{good}");
        }
        for bad in [
            "",
            "dashboard",
            "//evil.com",
            "///evil.com",
            "\\\\evil.com",
            "/\\evil.com",
            "/a\\b",
            "https:evil.com",
            "https://evil.com/",
            "javascript:alert(1)",
            "/\t/evil.com",
            "/\n/evil.com",
            "/a b",
            "/\u{0}",
            "/\u{7f}",
            "/caf\u{e9}",
        ] {
            assert!(!is_safe_next(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_style_hash_in_the_policy_matches_the_page() {
        let policy = CSP.to_str().unwrap();
        let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{policy}"
        );
        let response = page("/", None);
        assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], *CSP);
    }
}
