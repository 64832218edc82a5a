//! The relying party: one discovered provider, the sign-in's two halves (`begin` and
//! `finish`), and the logout URL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use http::header::HeaderValue;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::claims::{merge, Identity};
use super::config::Config;
use super::discovery::{check_url, ProviderMetadata, TokenAuth};
use super::flow::{Flow, FlowKey, Rejected};
use super::http::{HttpClient, Response};
use super::id_token::{self, Expected};
use super::jwks::KeyCache;
use super::{printable, OidcError};
use crate::auth::unix_now;

/// A relying party bound to one discovered provider. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    provider: ProviderMetadata,
    token_endpoint: String,
    token_auth: TokenAuth,
    http: HttpClient,
    keys: KeyCache,
    flow_key: FlowKey,
}

/// The first half of a sign-in: where to send the browser, and the flow cookie to set.
pub(crate) struct SignIn {
    /// The provider's authorization URL with this sign-in's parameters.
    pub(crate) url: String,
    /// The flow cookie's value; set it `HttpOnly`, `SameSite=Lax` (the provider's redirect
    /// back is a cross-site top-level navigation), `Secure` on HTTPS, with this `max_age`.
    pub(crate) cookie: String,
    /// How long the sign-in may take (the cookie's lifetime).
    pub(crate) max_age: Duration,
}

impl fmt::Debug for SignIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignIn")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// A verified sign-in.
#[derive(Debug)]
pub(crate) struct SignedIn {
    /// Who signed in.
    pub(crate) identity: Identity,
    /// Where the user was going (`/` unless a safe path was given to `begin`).
    pub(crate) next: String,
    /// The raw ID token, for `id_token_hint` at sign-out.
    #[allow(
        dead_code,
        reason = "the auth layer keeps no ID token (its cookie has no room for one); the tests read it"
    )]
    pub(crate) id_token: IdToken,
    /// The ID token's `exp` (Unix seconds).
    #[allow(
        dead_code,
        reason = "the auth layer bounds sessions by its own lifetime, not the token's; the tests read it"
    )]
    pub(crate) expires_at: u64,
}

/// A raw ID token. `Debug` shows nothing of it.
#[derive(Clone)]
pub(crate) struct IdToken(String);

impl IdToken {
    /// The compact JWT.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken([redacted])")
    }
}

/// The token endpoint's answer (deliberately without `Debug`: it holds tokens).
#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    access_token: Option<String>,
}

/// An OAuth 2.0 error answer (RFC 6749 §4.1.2.1 and §5.2).
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    error_description: Option<String>,
}

/// The callback's query parameters.
#[derive(Default)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Callback {
    fn parse(query: &str) -> Result<Self, OidcError> {
        let mut callback = Self::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match &*name {
                "code" => &mut callback.code,
                "state" => &mut callback.state,
                "iss" => &mut callback.iss,
                "error" => &mut callback.error,
                "error_description" => &mut callback.error_description,
                _ => continue,
            };
            // RFC 6749 §3.1: a parameter must not appear more than once.
            if slot.replace(value.into_owned()).is_some() {
                return Err(OidcError::BadCallback(format!("{name} appears twice")));
            }
        }
        Ok(callback)
    }
}

impl Client {
    /// Discovers the provider (`{issuer}/.well-known/openid-configuration`), checks it, and
    /// fetches its keys. `flow_key` signs the flow cookies (the caller's cookie key).
    pub(crate) async fn discover(config: Config, flow_key: FlowKey) -> Result<Self, OidcError> {
        if config.client_id.is_empty() {
            return Err(OidcError::Config("the client id is empty".into()));
        }
        check_url("redirect URI", &config.redirect_uri, true)?;
        let http = HttpClient::new(config.timeout, config.issuer.starts_with("https:"))?;
        let provider = ProviderMetadata::discover(&http, &config.issuer, config.allow_http).await?;
        let token_auth = provider.token_auth()?;
        let token_endpoint = provider
            .token_endpoint
            .clone()
            .expect("discovery checked the token endpoint");
        let keys = KeyCache::load(
            &http,
            provider.jwks_uri.clone(),
            config.jwks_refetch_interval,
        )
        .await?;
        tracing::info!(
            target: "marimo_rs::oidc",
            issuer = %provider.issuer,
            ?token_auth,
            userinfo = provider.userinfo_endpoint.is_some() && config.userinfo,
            end_session = provider.end_session_endpoint.is_some(),
            "discovered the identity provider"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                provider,
                token_endpoint,
                token_auth,
                http,
                keys,
                flow_key,
            }),
        })
    }

    /// The provider's metadata.
    #[cfg(test)]
    pub(crate) fn provider(&self) -> &ProviderMetadata {
        &self.inner.provider
    }

    /// Starts a sign-in: fresh `state`, `nonce` and PKCE verifier, sealed in the flow cookie,
    /// and the authorization URL to redirect the browser to. `next` (where to go afterwards)
    /// is kept if it is a safe local path of at most 2 KiB, else replaced by `/`.
    pub(crate) fn begin(&self, next: &str) -> SignIn {
        let config = &self.inner.config;
        let max_age = config.flow_lifetime;
        let expiry = unix_now().saturating_add(max_age.as_secs());
        let flow = Flow::new(next, expiry);
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", &config.redirect_uri)
            .append_pair("scope", &config.scope())
            .append_pair("state", &flow.state)
            .append_pair("nonce", &flow.nonce)
            .append_pair("code_challenge", &flow.code_challenge())
            .append_pair("code_challenge_method", "S256")
            .finish();
        SignIn {
            url: with_query(&self.inner.provider.authorization_endpoint, &query),
            cookie: flow.seal(&self.inner.flow_key),
            max_age,
        }
    }

    /// Finishes a sign-in at the callback: `query` is the callback's query string,
    /// `flow_cookies` the values of the flow cookies the browser sent (the one whose `state`
    /// matches is used). Checks the flow cookie and `state` (and `iss`, RFC 9207), exchanges
    /// the code with the PKCE verifier, verifies the ID token, merges userinfo, and reads the
    /// identity.
    pub(crate) async fn finish<'a>(
        &self,
        query: &str,
        flow_cookies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<SignedIn, OidcError> {
        let callback = Callback::parse(query)?;
        let flow = self.flow_for(&callback, flow_cookies)?;
        self.check_callback_issuer(&callback)?;
        if let Some(error) = callback.error {
            return Err(OidcError::Refused {
                error: printable(&error),
                description: describe(callback.error_description.as_deref()),
            });
        }
        let code = callback
            .code
            .filter(|code| !code.is_empty())
            .ok_or_else(|| OidcError::BadCallback("it has no code".into()))?;
        let tokens = self.exchange(&code, &flow.verifier).await?;
        let Some(raw) = tokens.id_token else {
            return Err(OidcError::BadResponse {
                url: self.inner.token_endpoint.clone(),
                reason: "the answer has no id_token (is the client allowed the openid scope?)"
                    .into(),
            });
        };
        let mut claims = self.verify_id_token(&raw, &flow.nonce).await?;
        let expires_at = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if let (true, Some(access_token)) = (self.inner.config.userinfo, &tokens.access_token) {
            if let Some(url) = &self.inner.provider.userinfo_endpoint {
                let sub = claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let userinfo = self.userinfo(url, access_token, sub).await?;
                merge(&mut claims, userinfo);
            }
        }
        let identity = Identity::from_claims(&claims, &self.inner.config.claims);
        tracing::debug!(
            target: "marimo_rs::oidc",
            subject = %identity.subject,
            name = %identity.name,
            "verified a sign-in"
        );
        Ok(SignedIn {
            identity,
            next: flow.next,
            id_token: IdToken(raw),
            expires_at,
        })
    }

    /// The flow among the cookies whose `state` is the callback's.
    fn flow_for<'a>(
        &self,
        callback: &Callback,
        flow_cookies: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Flow, OidcError> {
        let now = unix_now();
        let (mut expired, mut other_state) = (false, false);
        for value in flow_cookies {
            match Flow::open(&self.inner.flow_key, value, now) {
                Ok(flow) => match &callback.state {
                    Some(state) if flow.has_state(state) => return Ok(flow),
                    _ => other_state = true,
                },
                Err(Rejected::Expired) => expired = true,
                Err(Rejected::Invalid) => {}
            }
        }
        Err(if other_state {
            OidcError::StateMismatch
        } else if expired {
            OidcError::FlowExpired(self.inner.config.flow_lifetime)
        } else {
            OidcError::NoFlow
        })
    }

    /// RFC 9207: a provider that says it adds `iss` to its answers must have added this one.
    fn check_callback_issuer(&self, callback: &Callback) -> Result<(), OidcError> {
        let provider = &self.inner.provider;
        match &callback.iss {
            Some(iss) if *iss == provider.issuer => Ok(()),
            Some(iss) => Err(OidcError::CallbackIssuer(printable(iss))),
            None if provider.authorization_response_iss_parameter_supported => {
                Err(OidcError::CallbackIssuer("absent".into()))
            }
            None => Ok(()),
        }
    }

    /// The code for tokens, at the token endpoint, with the PKCE verifier.
    async fn exchange(&self, code: &str, verifier: &str) -> Result<TokenResponse, OidcError> {
        let config = &self.inner.config;
        let url = &self.inner.token_endpoint;
        // Built in a block: the serializer is not `Send` and must not live across the await.
        let (authorization, form) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &config.redirect_uri)
                .append_pair("code_verifier", verifier);
            match self.inner.token_auth {
                TokenAuth::Basic => (
                    Some(basic_authorization(
                        &config.client_id,
                        config.client_secret.expose(),
                    )),
                    form.finish(),
                ),
                TokenAuth::Post => {
                    form.append_pair("client_id", &config.client_id);
                    // The secret is bytes: encoded as such, not through a lossy `str`.
                    let mut form = form.finish();
                    form.push_str("&client_secret=");
                    form.extend(form_urlencoded::byte_serialize(
                        config.client_secret.expose(),
                    ));
                    (None, form)
                }
            }
        };
        let response = self.inner.http.post_form(url, authorization, form).await?;
        match response.status {
            StatusCode::OK => {
                serde_json::from_slice(&response.body).map_err(|error| OidcError::BadResponse {
                    url: url.clone(),
                    reason: format!("not a token response: {error}"),
                })
            }
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => {
                match serde_json::from_slice::<ErrorResponse>(&response.body) {
                    Ok(refusal) => Err(OidcError::TokenRefused {
                        hint: token_hint(&refusal.error),
                        error: printable(&refusal.error),
                        // A provider that quotes the code back must not put it in our logs.
                        description: describe(refusal.error_description.as_deref())
                            .replace(code, "[code]"),
                    }),
                    Err(_) => Err(OidcError::status(url, &response)),
                }
            }
            _ => Err(OidcError::status(url, &response)),
        }
    }

    /// Verifies an ID token against the provider's keys and this client's expectations; an
    /// unknown key triggers one key-set refetch (rate-limited per the configuration).
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let inner = &self.inner;
        let header = id_token::header(token)?;
        let expected = Expected {
            issuer: &inner.provider.issuer,
            client_id: &inner.config.client_id,
            nonce,
            leeway_secs: inner.config.leeway.as_secs(),
            now: unix_now(),
        };
        let keys = inner.keys.keys_for(&inner.http, &header).await?;
        let candidates = keys.candidates(header.kid.as_deref(), header.alg);
        Ok(id_token::verify(token, &header, &candidates, &expected)?)
    }

    /// Userinfo claims for an access token; `sub` must be the ID token's (Core §5.3.2).
    async fn userinfo(
        &self,
        url: &str,
        access_token: &str,
        sub: &str,
    ) -> Result<Map<String, Value>, OidcError> {
        let response = self.inner.http.get(url, Some(access_token)).await?;
        if response.status != StatusCode::OK {
            return Err(OidcError::status(url, &response));
        }
        let is_jwt = response
            .content_type
            .as_ref()
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with("application/jwt"));
        if is_jwt {
            return Err(OidcError::Unsupported(
                "its userinfo endpoint answers with signed JWTs for this client; turn off \
                 userinfo signing for the client, or turn userinfo off here"
                    .into(),
            ));
        }
        let claims: Map<String, Value> =
            serde_json::from_slice(&response.body).map_err(|error| OidcError::BadResponse {
                url: url.to_owned(),
                reason: format!("not a JSON object of claims: {error}"),
            })?;
        match claims.get("sub").and_then(Value::as_str) {
            Some(found) if found == sub => Ok(claims),
            found => Err(OidcError::UserinfoSubject {
                expected: printable(sub),
                found: printable(found.unwrap_or("absent")),
            }),
        }
    }

    /// The provider's RP-initiated logout URL (OpenID Connect RP-Initiated Logout 1.0), or
    /// `None` when the provider has no `end_session_endpoint`. `client_id` is always sent;
    /// `post_logout_redirect_uri` must be registered with the provider.
    pub(crate) fn logout_url(
        &self,
        id_token_hint: Option<&IdToken>,
        post_logout_redirect_uri: Option<&str>,
        state: Option<&str>,
    ) -> Option<String> {
        let endpoint = self.inner.provider.end_session_endpoint.as_deref()?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(hint) = id_token_hint {
            query.append_pair("id_token_hint", hint.as_str());
        }
        query.append_pair("client_id", &self.inner.config.client_id);
        if let Some(uri) = post_logout_redirect_uri {
            query.append_pair("post_logout_redirect_uri", uri);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        Some(with_query(endpoint, &query.finish()))
    }

    /// How many times the key set was fetched.
    #[cfg(test)]
    pub(crate) fn key_fetches(&self) -> usize {
        self.inner.keys.fetches()
    }
}

/// `Authorization: Basic` for the token endpoint: id and secret each form-urlencoded first
/// (RFC 6749 §2.3.1), so a `:` in either cannot shift the split.
fn basic_authorization(client_id: &str, secret: &[u8]) -> HeaderValue {
    let mut credentials: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    credentials.push(':');
    credentials.extend(form_urlencoded::byte_serialize(secret));
    let mut value = HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials)))
        .expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// What to do about a token endpoint refusal, by its error code.
fn token_hint(error: &str) -> &'static str {
    match error {
        "invalid_grant" => {
            ": the sign-in code was already used, has expired, or was issued for another \
             sign-in; sign in again"
        }
        "invalid_client" | "unauthorized_client" => ": check the client id and secret",
        _ => "",
    }
}

/// `": description"` from a provider's optional `error_description`, made printable.
fn describe(description: Option<&str>) -> String {
    description
        .filter(|text| !text.is_empty())
        .map(|text| format!(" ({})", printable(text)))
        .unwrap_or_default()
}

/// `url` with `query` appended (`?` or `&`: an endpoint may carry its own parameters, such
/// as Azure AD B2C's `p=`).
fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

impl OidcError {
    /// An unexpected status from the provider, with its OAuth error if it sent one.
    pub(super) fn status(url: &str, response: &Response) -> Self {
        let detail = if response.status.is_redirection() {
            " (redirects are not followed: configure the URL it redirects to)".to_owned()
        } else {
            serde_json::from_slice::<ErrorResponse>(&response.body)
                .map(|refusal| {
                    format!(
                        " ({}{})",
                        printable(&refusal.error),
                        refusal
                            .error_description
                            .as_deref()
                            .map(|text| format!(": {}", printable(text)))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default()
        };
        Self::Status {
            url: url.to_owned(),
            status: response.status,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_parameters_must_not_repeat() {
        let callback = Callback::parse("code=c&state=s&iss=https%3A%2F%2Fi&x=1").unwrap();
        assert_eq!(callback.code.as_deref(), Some("c"));
        assert_eq!(callback.iss.as_deref(), Some("https://i"));
        for twice in ["code=a&code=b", "state=a&state=a", "state=a&iss=x&iss=x"] {
            let error = Callback::parse(twice).err().unwrap();
            assert!(error.to_string().contains("appears twice"), "{error}");
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        let value = basic_authorization("my:client", b"p@ss word");
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "my%3Aclient:p%40ss+word");
    }

    #[test]
    fn queries_are_appended_to_endpoints_with_or_without_their_own() {
        assert_eq!(with_query("https://i/auth", "a=1"), "https://i/auth?a=1");
        assert_eq!(
            with_query("https://i/auth?p=x", "a=1"),
            "https://i/auth?p=x&a=1"
        );
    }

    #[test]
    fn debug_shows_no_token() {
        let token = IdToken("eyJhbGciOi.secret.sig".into());
        assert_eq!(format!("{token:?}"), "IdToken([redacted])");
        let sign_in = SignIn {
            url: "https://i/auth?state=abc".into(),
            cookie: "o1.cookie".into(),
            max_age: Duration::from_secs(600),
        };
        let debug = format!("{sign_in:?}");
        assert!(
            !debug.contains("abc") && !debug.contains("o1.cookie"),
            "{debug}"
        );
    }
}
