//! Sign-in with an OpenID Connect identity provider, in the auth layer: [`OidcConfig`] (what a
//! host configures), the provider's lazily discovered client, and the two routes of a sign-in,
//! `{base}/auth/oidc` (start: the flow cookie, then the provider) and `{base}/auth/callback`
//! (finish: the session cookie, then where the user was going).
//!
//! The protocol work (discovery, PKCE, the flow cookie, the code exchange, the ID token and
//! its keys) is `crate::oidc`'s; this file turns its results into the gateway's session and
//! pages. Only these routes and sign-out talk to the provider: a signed-in request is checked
//! against the session cookie alone.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use super::cookie::{cookie_pieces, Kind};
use super::future::ResponseFuture;
use super::layer::Config;
use super::login::{is_safe_next, query_next};
use crate::audit;
use crate::html::escape;
use crate::oidc::{self, ClaimNames, ClientSecret, FlowKey};
use crate::response::{method_not_allowed, no_store, page, redirect, retry_after};
use crate::{Body, User};

/// The path that starts a sign-in with the identity provider, relative to the service root.
pub(crate) const START_PATH: &str = "/auth/oidc";
/// The path the provider sends the browser back to.
pub(crate) const CALLBACK_PATH: &str = "/auth/callback";
/// The prefix of flow cookie names (one cookie per sign-in in progress, so that several tabs
/// can sign in at once).
const FLOW_COOKIE_PREFIX: &str = "marimo_rs_flow_";
/// How many flow cookies a callback looks at.
const MAX_FLOW_COOKIES: usize = 8;
/// How long a failed discovery is reported as it is before the provider is asked again.
const RETRY_DISCOVERY: Duration = Duration::from_secs(5);
/// How long a signed-in session lasts unless [`OidcConfig::session_lifetime`] says otherwise.
const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Sign-in with an OpenID Connect identity provider (Google, Microsoft Entra ID, Okta,
/// Keycloak, …): what [`AuthLayer::oidc`](crate::AuthLayer::oidc) and
/// [`AppBuilder::oidc`](crate::AppBuilder::oidc) take.
///
/// Register a confidential web client with the provider, with the redirect URI
/// `{public_url}/auth/callback` and the post-logout redirect URI
/// `{public_url}/auth/signed-out`, and give its issuer URL, client id and secret here. The
/// defaults: scopes `openid profile email`, the name from `preferred_username`, else `name`,
/// else `sub`; the email from `email` (dropped when the provider marks it unverified); the
/// groups from `groups`; userinfo asked for what the ID token lacks; sessions of 8 hours;
/// sign-out continues at the provider when it offers RP-initiated logout.
///
/// `Debug` never shows the client secret.
///
/// ```
/// use std::time::Duration;
///
/// use marimo_rs::OidcConfig;
///
/// let keycloak = OidcConfig::new(
///     "https://id.example.com/realms/analytics",
///     "marimo",
///     std::env::var("OIDC_CLIENT_SECRET").unwrap_or_default(),
///     "https://marimo.example.com",
/// )
/// .scopes(["openid", "profile", "email", "roles"])
/// .group_claims(["realm_access.roles"])
/// .session_lifetime(Duration::from_secs(4 * 60 * 60));
/// assert_eq!(keycloak.redirect_uri(), "https://marimo.example.com/auth/callback");
/// ```
#[derive(Clone)]
pub struct OidcConfig {
    inner: oidc::Config,
    /// Where browsers reach the service root, without a trailing `/`.
    public_url: String,
    session_lifetime: Duration,
    label: String,
    provider_logout: bool,
}

impl OidcConfig {
    /// The client registered with the provider at `issuer` (exactly as its discovery document
    /// states it), and `public_url`, where browsers reach the service root
    /// (`https://marimo.example.com`, or `https://example.com/marimo` under a prefix): the
    /// redirect URI is `{public_url}/auth/callback`.
    ///
    /// Nothing is checked or fetched here: the provider is discovered on the first sign-in, or
    /// by [`AuthLayer::discover`](crate::AuthLayer::discover), which reports a wrong URL or an
    /// unreachable provider.
    pub fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<Vec<u8>>,
        public_url: impl Into<String>,
    ) -> Self {
        let public_url = public_url.into().trim_end_matches('/').to_owned();
        let redirect_uri = format!("{public_url}{CALLBACK_PATH}");
        Self {
            inner: oidc::Config::new(
                issuer,
                client_id,
                ClientSecret::new(client_secret),
                redirect_uri,
            ),
            public_url,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            label: "Sign in with your identity provider".into(),
            provider_logout: true,
        }
    }

    /// The scopes to ask for (`openid` is always sent): `profile` and `email` by default; add
    /// the one your provider needs for groups (`groups` for Okta and many others, `roles`…).
    /// Replaces the list.
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.inner.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The claims tried in order for the user's name (the first non-empty string wins, else
    /// `sub`): `preferred_username`, `name` by default. Replaces the list.
    pub fn name_claims<I, T>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.inner.claims.name = claims.into_iter().map(Into::into).collect();
        self.inner.claims.name.push("sub".into());
        self
    }

    /// The claim with the email address (`email` by default).
    pub fn email_claim(mut self, claim: impl Into<String>) -> Self {
        self.inner.claims.email = claim.into();
        self
    }

    /// The claims with the user's groups (`groups` by default; `roles`, Keycloak's
    /// `realm_access.roles`: a dotted name looks into nested objects; an array of strings or
    /// one string each). Replaces the list.
    pub fn group_claims<I, T>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.inner.claims.groups = claims.into_iter().map(Into::into).collect();
        self
    }

    /// Further claims to keep for the notebooks ([`User::claims`]), as the provider gives
    /// them. They travel in the session cookie, so keep them few and small. Replaces the
    /// list.
    pub fn extra_claims<I, T>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.inner.claims.extra = claims.into_iter().map(Into::into).collect();
        self
    }

    /// Whether to ask the userinfo endpoint for claims the ID token lacks (on by default).
    pub fn userinfo(mut self, on: bool) -> Self {
        self.inner.userinfo = on;
        self
    }

    /// How long a signed-in session lasts at most, whatever the ID token's own lifetime
    /// (8 hours by default; whole seconds). After that the browser goes through the provider
    /// again (often without a prompt, while its session there lasts).
    pub fn session_lifetime(mut self, lifetime: Duration) -> Self {
        self.session_lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// The bound on each exchange with the provider (10 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout = timeout;
        self
    }

    /// Accepts plain `http://` provider URLs on hosts other than loopback ones (a development
    /// Keycloak at `http://keycloak:8080`). Off by default: loopback addresses only.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.inner.allow_http = allow;
        self
    }

    /// The text of the sign-in button on the login page, when the token can be used too
    /// ("Sign in with your identity provider" by default; "Sign in with Google"…).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Whether sign-out continues at the provider (RP-initiated logout), when it offers it,
    /// ending the browser's session there too (on by default).
    pub fn provider_logout(mut self, on: bool) -> Self {
        self.provider_logout = on;
        self
    }

    /// The redirect URI to register with the provider: `{public_url}/auth/callback`.
    pub fn redirect_uri(&self) -> &str {
        &self.inner.redirect_uri
    }

    /// The post-logout redirect URI to register with the provider:
    /// `{public_url}/auth/signed-out`.
    pub fn post_logout_redirect_uri(&self) -> String {
        format!("{}{}", self.public_url, super::logout::SIGNED_OUT_PATH)
    }

    /// The path part of the public URL (`""` for a host root), if it is a URL.
    pub(crate) fn public_path(&self) -> Option<String> {
        let uri: http::Uri = self.public_url.parse().ok()?;
        uri.authority()?;
        Some(uri.path().trim_end_matches('/').to_owned())
    }

    pub(crate) fn provider_logout_enabled(&self) -> bool {
        self.provider_logout
    }

    /// The label of the sign-in button.
    pub(crate) fn button_label(&self) -> &str {
        &self.label
    }

    pub(crate) fn session_lifetime_secs(&self) -> u64 {
        self.session_lifetime.as_secs()
    }

    #[cfg(test)]
    pub(crate) fn for_tests(issuer: &str) -> Self {
        Self::new(issuer, "marimo", "secret", "http://127.0.0.1:1")
    }
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let claims: &ClaimNames = &self.inner.claims;
        f.debug_struct("OidcConfig")
            .field("issuer", &self.inner.issuer)
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &self.inner.client_secret)
            .field("redirect_uri", &self.inner.redirect_uri)
            .field("scopes", &self.inner.scopes)
            .field("claims", claims)
            .field("userinfo", &self.inner.userinfo)
            .field("session_lifetime", &self.session_lifetime)
            .finish_non_exhaustive()
    }
}

/// Why the identity provider cannot be used: discovery failed (a wrong issuer URL, a provider
/// that is down or lacks what the sign-in needs). The message says what to do and never
/// contains a secret.
#[derive(Debug, thiserror::Error)]
#[error("sign-in with the identity provider is unavailable: {message}")]
pub struct OidcError {
    message: Arc<str>,
}

/// The identity provider of one auth layer: its configuration, and its client once
/// discovered (shared by every clone of the layer).
pub(crate) struct Provider {
    pub(crate) settings: OidcConfig,
    client: tokio::sync::OnceCell<oidc::Client>,
    /// The last failed discovery and when it happened: reported as it is for a while, so a
    /// provider that is down is not asked again on every request.
    failure: Mutex<Option<(Instant, Arc<str>)>>,
    /// What provider sessions are bound to: SHA-256 of the issuer and client id.
    pub(crate) binding: [u8; 32],
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("settings", &self.settings)
            .field("discovered", &self.client.initialized())
            .finish_non_exhaustive()
    }
}

impl Provider {
    pub(crate) fn new(settings: OidcConfig) -> Self {
        let mut binding = Sha256::new();
        binding.update(b"marimo-rs/oidc-session/v1\0");
        binding.update(settings.inner.issuer.as_bytes());
        binding.update(b"\0");
        binding.update(settings.inner.client_id.as_bytes());
        Self {
            settings,
            client: tokio::sync::OnceCell::new(),
            failure: Mutex::new(None),
            binding: binding.finalize().into(),
        }
    }

    /// The same provider, not yet discovered (its flow cookies are signed with another key).
    pub(crate) fn fresh(&self) -> Self {
        Self::new(self.settings.clone())
    }

    /// The discovered client, discovering it now if needed (`flow_key`: the session cookie
    /// key, which also signs flow cookies). A failure is remembered for a few seconds, and
    /// logged.
    pub(crate) async fn client(&self, flow_key: &[u8]) -> Result<&oidc::Client, OidcError> {
        self.client_reporting(flow_key, true).await
    }

    /// [`client`](Self::client), logging a failure only if `log` (a caller that reports it
    /// itself, such as the CLI at start-up, says no).
    pub(crate) async fn client_reporting(
        &self,
        flow_key: &[u8],
        log: bool,
    ) -> Result<&oidc::Client, OidcError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        self.client
            .get_or_try_init(|| async {
                if let Some(message) = self.recent_failure() {
                    return Err(message);
                }
                let discovered =
                    oidc::Client::discover(self.settings.inner.clone(), FlowKey::new(flow_key))
                        .await;
                discovered.map_err(|error| {
                    let message: Arc<str> = error.to_string().into();
                    if log {
                        tracing::warn!(
                            target: "marimo_rs::auth",
                            "sign-in with the identity provider is unavailable: {message}"
                        );
                    }
                    *crate::sync::lock(&self.failure) = Some((Instant::now(), message.clone()));
                    message
                })
            })
            .await
            .map_err(|message| OidcError { message })
    }

    fn recent_failure(&self) -> Option<Arc<str>> {
        let failure = crate::sync::lock(&self.failure);
        match &*failure {
            Some((at, message)) if at.elapsed() < RETRY_DISCOVERY => Some(message.clone()),
            _ => None,
        }
    }
}

/// Starts a sign-in: the flow cookie, and a `303` to the provider. `next` is where to go
/// afterwards (a path under the service root).
pub(crate) async fn start(config: Arc<Config>, req: Request<Body>, next: String) -> Response<Body> {
    let Some(provider) = &config.provider else {
        return no_store(crate::response::not_found());
    };
    let client = match provider.client(&config.signing_key).await {
        Ok(client) => client,
        Err(error) => return unavailable(&error),
    };
    let sign_in = client.begin(&next);
    let mut response = no_store(redirect(StatusCode::SEE_OTHER, sign_in.url));
    if response.status() != StatusCode::SEE_OTHER {
        return response;
    }
    let name = flow_cookie_name(&sign_in.cookie);
    let cookie = config.cookie_header(
        &req,
        &name,
        &sign_in.cookie,
        CALLBACK_PATH,
        sign_in.max_age.as_secs(),
    );
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// Serves `{base}/auth/oidc`: `GET` starts a sign-in (`next` from the query).
pub(crate) fn handle_start<F>(config: Arc<Config>, req: Request<Body>) -> ResponseFuture<F> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return ResponseFuture::ready(no_store(method_not_allowed("GET")));
    }
    let next = query_next(req.uri())
        .filter(|next| is_safe_next(next))
        .map_or_else(|| "/".to_owned(), |next| next.into_owned());
    ResponseFuture::boxed(Box::pin(start(config, req, next)))
}

/// Serves `{base}/auth/callback`: finishes the sign-in whose flow cookie matches, sets the
/// session cookie and answers `303` to where the user was going; clears the flow cookies it
/// was given, whatever the outcome.
pub(crate) fn handle_callback<F>(config: Arc<Config>, req: Request<Body>) -> ResponseFuture<F> {
    if req.method() != Method::GET {
        return ResponseFuture::ready(no_store(method_not_allowed("GET")));
    }
    ResponseFuture::boxed(Box::pin(callback(config, req)))
}

async fn callback(config: Arc<Config>, req: Request<Body>) -> Response<Body> {
    let Some(provider) = &config.provider else {
        return no_store(crate::response::not_found());
    };
    let flows = flow_cookies(req.headers());
    let client_ip = config.client_ip(&req);
    let client = match provider.client(&config.signing_key).await {
        Ok(client) => client,
        Err(error) => return unavailable(&error),
    };
    let query = req.uri().query().unwrap_or_default();
    let finished = client
        .finish(query, flows.iter().map(|(_, value)| value.as_bytes()))
        .await;
    let mut response = match finished {
        Ok(signed_in) => {
            let user = User::from(signed_in.identity);
            let next = config.location(&signed_in.next);
            let lifetime = provider.settings.session_lifetime_secs();
            let cookie =
                config.start_session(&req, user, Kind::Provider, lifetime, audit::Method::Oidc);
            let mut response = no_store(redirect(StatusCode::SEE_OTHER, next));
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(error) => {
            let reason = error.to_string();
            config.sign_in_failed(audit::Method::Oidc, client_ip, &reason);
            failed(&config, &error, &reason)
        }
    };
    for (name, _) in &flows {
        let clear = config.cookie_header(&req, name, "", CALLBACK_PATH, 0);
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// The page of a failed callback: `400` and "start again" for what a new sign-in fixes,
/// `403` when the provider or its token refused, `502` when it misbehaved.
fn failed(config: &Config, error: &oidc::OidcError, reason: &str) -> Response<Body> {
    use oidc::OidcError as E;
    let (status, title) = match error {
        E::NoFlow
        | E::FlowExpired(_)
        | E::StateMismatch
        | E::BadCallback(_)
        | E::CallbackIssuer(_) => (StatusCode::BAD_REQUEST, "Sign-in interrupted"),
        E::Refused { .. } | E::TokenRefused { .. } | E::IdToken(_) | E::UserinfoSubject { .. } => {
            (StatusCode::FORBIDDEN, "Sign-in failed")
        }
        _ => (StatusCode::BAD_GATEWAY, "Sign-in failed"),
    };
    // From `{base}/auth/callback`, the service root.
    let again = config.location("/");
    let body = format!(
        "<main><h1>{title}</h1><p class=\"error\" role=\"alert\">{}</p>\
         <a class=\"button\" href=\"{}\">Start again</a></main>",
        escape(&capitalized(reason)),
        escape(&again)
    );
    no_store(page(status, title, &body))
}

/// `503` with `Retry-After`: the provider cannot be discovered now.
pub(crate) fn unavailable(error: &OidcError) -> Response<Body> {
    let body = format!(
        "<main><h1>Sign-in is unavailable</h1><p class=\"error\" role=\"alert\">{}</p>\
         <p>Try again in a moment.</p></main>",
        escape(&capitalized(&error.to_string()))
    );
    let response = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "sign-in unavailable",
        &body,
    );
    no_store(retry_after(response, RETRY_DISCOVERY.as_secs()))
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `marimo_rs_flow_` and 8 hex digits of the value's SHA-256: a name per sign-in.
fn flow_cookie_name(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{FLOW_COOKIE_PREFIX}{hex}")
}

/// The flow cookies of a request, `(name, value)`, at most [`MAX_FLOW_COOKIES`].
fn flow_cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| cookie_pieces(value.as_bytes()))
        // Visible ASCII, as the header was.
        .filter_map(|piece| std::str::from_utf8(piece).ok()?.split_once('='))
        .filter(|(name, _)| {
            name.strip_prefix(FLOW_COOKIE_PREFIX)
                .is_some_and(|hex| hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .take(MAX_FLOW_COOKIES)
        .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
        .collect()
}

/// `Set-Cookie` for a flow or session cookie can be built only from visible ASCII.
pub(crate) fn header_value(cookie: String) -> HeaderValue {
    HeaderValue::try_from(cookie).expect("cookie names, values and paths are visible ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_cookies_are_found_by_their_prefix_and_bounded() {
        let mut headers = HeaderMap::new();
        let mut cookie = String::from("a=1; marimo_rs_flow_zzzzzzzz=bad; marimo_rs_flow_1=short");
        for i in 0..10 {
            cookie.push_str(&format!("; {}=v{i}", flow_cookie_name(&i.to_string())));
        }
        headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let found = flow_cookies(&headers);
        assert_eq!(found.len(), MAX_FLOW_COOKIES);
        assert_eq!(found[0].1, "v0");
        assert!(found[0].0.starts_with(FLOW_COOKIE_PREFIX));
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let config = OidcConfig::new("https://id.example", "marimo", "sup3rs3cr3t", "https://m/");
        let shown = format!("{config:?}");
        assert!(!shown.contains("sup3rs3cr3t"), "{shown}");
        assert_eq!(config.redirect_uri(), "https://m/auth/callback");
        assert_eq!(
            config.post_logout_redirect_uri(),
            "https://m/auth/signed-out"
        );
        assert_eq!(config.public_path().as_deref(), Some(""));
        let nested = OidcConfig::new("https://id", "c", "s", "https://h/marimo/");
        assert_eq!(nested.public_path().as_deref(), Some("/marimo"));
    }

    #[test]
    fn name_claims_always_end_with_sub() {
        let config = OidcConfig::for_tests("https://id").name_claims(["email"]);
        assert_eq!(config.inner.claims.name, ["email", "sub"]);
    }
}
