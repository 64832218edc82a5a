//! The HTTP client that talks to the identity provider: HTTPS (rustls, the system's CA store)
//! or plain HTTP where the configuration allows it, every exchange bounded in time and size.
//!
//! Only sign-in and key refreshes come here, never a request of a signed-in user. Redirects are
//! not followed: a provider's endpoints are the URLs its discovery document names, and a
//! redirect elsewhere is a misconfiguration to report rather than a hop to take silently.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::OidcError;

/// The largest answer read from the provider. Discovery documents and key sets are a few KiB;
/// this leaves room for large key sets while a broken or hostile endpoint cannot fill memory.
pub(crate) const MAX_RESPONSE: usize = 1024 * 1024;

const USER_AGENT_VALUE: &str = concat!("marimo-rs/", env!("CARGO_PKG_VERSION"));

/// A response read in full.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: Bytes,
}

/// A pooled client for one provider.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client whose every exchange (connect, TLS, request, whole answer) ends within
    /// `timeout`. `need_tls`: the provider's URLs are HTTPS, so the system's CA certificates
    /// must load; for a plain-HTTP provider (tests, loopback) an empty store will do.
    pub(crate) fn new(timeout: Duration, need_tls: bool) -> Result<Self, OidcError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        // Explicitly ring: with rustls's process-wide default, another crate in the program
        // that enables aws-lc-rs would make the choice ambiguous and the builder panic.
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) if need_tls => return Err(OidcError::NoRootCertificates(error.to_string())),
            Err(_) => {
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| OidcError::NoRootCertificates(error.to_string()))?
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client, timeout })
    }

    /// `GET url` with `Accept: application/json` (and a bearer token for userinfo).
    pub(crate) async fn get(&self, url: &str, bearer: Option<&str>) -> Result<Response, OidcError> {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json");
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|error| OidcError::bad_url(url, error))?;
        self.send(url, request).await
    }

    /// `POST url` with a form body and optional `Authorization` header value.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        authorization: Option<HeaderValue>,
        form: String,
    ) -> Result<Response, OidcError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(form)))
            .map_err(|error| OidcError::bad_url(url, error))?;
        self.send(url, request).await
    }

    async fn send(
        &self,
        url: &str,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response, OidcError> {
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|error| OidcError::Unreachable {
                        url: url.to_owned(),
                        reason: error_chain(&error),
                    })?;
            let status = response.status();
            let content_type = response.headers().get(CONTENT_TYPE).cloned();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        OidcError::BadResponse {
                            url: url.to_owned(),
                            reason: format!("the answer is larger than {MAX_RESPONSE} bytes"),
                        }
                    } else {
                        OidcError::Unreachable {
                            url: url.to_owned(),
                            reason: format!("the answer broke off: {error}"),
                        }
                    }
                })?
                .to_bytes();
            Ok(Response {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| OidcError::Timeout {
                url: url.to_owned(),
                timeout: self.timeout,
            })?
    }
}

/// An error and its sources, `": "`-joined: hyper-util's own message ("client error
/// (Connect)") says nothing without them.
fn error_chain(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
