//! The login form at `{base}/auth/login` and the `next` parameter.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::cookie::Kind;
use super::credentials::DEFAULT_USER;
use super::future::ResponseFuture;
use super::layer::Config;
use super::limit::retry_after_secs;
use super::provider;
use crate::html::escape;
use crate::response::{bad_request, method_not_allowed, no_store, plain, redirect, retry_after};
use crate::{audit, Body, User};

/// The path of the login page, relative to the service root.
pub(crate) const LOGIN_PATH: &str = "/auth/login";

/// Largest login form body read.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// How long a client may take to send the login form's body (slow-body clients).
pub(crate) const FORM_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `{base}/auth/login`: the form for `GET`/`HEAD` (offering the identity provider
/// too when there is one; with the provider alone, straight to it), the check for `POST`.
pub(crate) fn handle<F>(config: Arc<Config>, req: Request<Body>) -> ResponseFuture<F> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            let next = query_next(req.uri())
                .filter(|next| is_safe_next(next))
                .map_or_else(|| "/".to_owned(), |next| next.into_owned());
            match (&config.token, &config.provider) {
                (None, Some(_)) => {
                    ResponseFuture::boxed(Box::pin(provider::start(Arc::clone(&config), req, next)))
                }
                (_, Some(provider)) => {
                    let start: String = form_urlencoded::Serializer::new(String::from("oidc?"))
                        .append_pair("next", &next)
                        .finish();
                    let label = provider.settings.button_label();
                    ResponseFuture::ready(form_page(&next, None, Some((label, &start))))
                }
                (_, None) => ResponseFuture::ready(page(&next, None)),
            }
        }
        Method::POST if config.token.is_some() => {
            ResponseFuture::boxed(Box::pin(post(config, req)))
        }
        Method::POST => ResponseFuture::ready(no_store(method_not_allowed("GET"))),
        _ => ResponseFuture::ready(no_store(method_not_allowed("GET, POST"))),
    }
}

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
    let checked = config.attempt(
        config.client_ip_of(&parts.headers, &parts.extensions),
        audit::Method::LoginForm,
        || config.token_matches(password.as_bytes()).then_some(()),
    );
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
        let user = User::new(DEFAULT_USER);
        let cookie = config.start_session(
            &parts,
            user,
            Kind::Token,
            config.max_age,
            audit::Method::LoginForm,
        );
        response.headers_mut().insert(header::SET_COOKIE, cookie);
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
pub(crate) fn query_next(uri: &http::Uri) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == "next")
        .map(|(_, value)| value)
}

/// The login page, with `next` in the form and an optional error message; with a
/// "sign in with the identity provider" link when `provider` names one (its start path,
/// relative to the login page).
pub(crate) fn page(next: &str, error: Option<&str>) -> Response<Body> {
    form_page(next, error, None)
}

/// [`page`], offering the identity provider at `provider` (`(label, href)`) as well.
pub(crate) fn form_page(
    next: &str,
    error: Option<&str>,
    provider: Option<(&str, &str)>,
) -> Response<Body> {
    let error = error
        .map(|message| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message)))
        .unwrap_or_default();
    let provider = provider
        .map(|(label, href)| {
            format!(
                "<a class=\"button\" href=\"{}\">{}</a><p>or, with the access token:</p>",
                escape(href),
                escape(label)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<form method=\"post\" action=\"login\"><h1>Sign in to marimo</h1>{error}{provider}\
<label for=\"password\">Access token</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" \
autofocus required>\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<button type=\"submit\">Sign in</button></form>",
        next = escape(next),
    );
    no_store(crate::response::page(StatusCode::OK, "sign in", &body))
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
}
