//! OpenID Connect sign-in: the relying party (the "client") side of the authorization-code
//! flow with PKCE, against any OpenID Provider (Google, Entra ID, Okta, Keycloak, …).
//!
//! # How a sign-in goes
//!
//! 1. **Discovery**, once, at start-up ([`Client::discover`]): `GET
//!    {issuer}/.well-known/openid-configuration`. The document's `issuer` must equal the
//!    configured issuer exactly (a mismatch is an error naming both), every endpoint must be
//!    HTTPS (plain HTTP only on loopback addresses, or with `allow_http` for development), the
//!    provider must offer the code flow, PKCE with S256 (when it lists methods) and an
//!    asymmetric ID token algorithm. The provider's key set (JWKS) is fetched too, so a
//!    provider that is down or misconfigured is reported at start-up, not at the first sign-in.
//! 2. **The redirect** ([`Client::begin`]): a fresh random `state`, `nonce` and PKCE verifier
//!    (32 bytes each) are sealed into a short-lived **flow cookie** (HMAC-SHA256 with the
//!    caller's key, 10 minutes by default, together with `next`), and the browser is sent to
//!    the provider's authorization endpoint with `state`, `nonce` and the S256 challenge.
//! 3. **The callback** ([`Client::finish`]): the flow cookie must verify and not have expired,
//!    the callback's `state` must equal the cookie's (constant-time), and when the provider
//!    adds `iss` to its answers (RFC 9207) it must be the issuer. A provider error
//!    (`error=access_denied`, …) is reported as such.
//! 4. **The code exchange** at the token endpoint, with the PKCE verifier and the client
//!    secret (`client_secret_basic`; `client_secret_post` when the provider offers only that).
//!    A code works once: a replay is refused by the provider and reported as such.
//! 5. **The ID token** is verified: its `alg` must be asymmetric (RS256/384/512, PS256/384/512,
//!    ES256/384, EdDSA: `none` and HMAC are refused before any key is looked at); its
//!    signature must verify with the provider's key named by `kid`, of that algorithm's key
//!    type; `iss` must be the issuer; `aud` must contain the client id, and with several
//!    audiences `azp` must be the client id (and any `azp` must be); `exp`, `nbf` and `iat` are
//!    checked with a leeway (60 s by default); `nonce` must be this sign-in's.
//! 6. **Userinfo** (optional, on by default): claims from the userinfo endpoint fill in what the
//!    ID token lacks (many providers put only `sub` there); its `sub` must be the ID token's.
//! 7. **The identity**: name, email (dropped when `email_verified` is `false`), groups and the
//!    extra claims the configuration names ([`Identity`]).
//!
//! **Keys**: the JWKS is cached. An ID token naming a key the cache lacks (the provider rotated
//! its keys) triggers one refetch; further refetches wait out an interval (30 s by default), so
//! made-up `kid`s cannot make the gateway hammer the provider.
//!
//! **What talks to the provider**: discovery, sign-in (token, userinfo) and key refetches. A
//! signed-in user's requests never do: the session lives in the gateway's own signed cookie.
//! Every exchange is bounded (10 s by default, connect included) and answers are read up to
//! 1 MiB; redirects are not followed.
//!
//! **Secrets**: the client secret, codes, tokens, the PKCE verifier and cookie values appear in
//! no error message, log line or `Debug` output. Errors ([`OidcError`]) say what to do.
//!
//! **Sign-out**: [`Client::logout_url`] builds the provider's RP-initiated logout URL
//! (`id_token_hint`, `client_id`, `post_logout_redirect_uri`, `state`) when it has an
//! `end_session_endpoint`.

mod assertion;
mod claims;
mod client;
mod config;
mod discovery;
mod flow;
mod http;
mod id_token;
mod jwks;
#[cfg(test)]
mod tests;

use std::time::Duration;

use jsonwebtoken::Algorithm;

pub(crate) use self::assertion::{Asserted, AssertionConfig, Assertions};
pub(crate) use self::client::Client;
#[cfg(test)]
use self::client::SignedIn;
pub(crate) use self::config::{ClaimNames, ClientSecret, Config};
pub(crate) use self::flow::FlowKey;
pub(crate) use self::id_token::IdTokenError;

/// ID token algorithms accepted: asymmetric only. `none` is not an `Algorithm` at all, and
/// HMAC would verify with a "key" anyone can read (the client secret, or worse, the public key).
pub(crate) const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn accepted_algorithms() -> String {
    ACCEPTED_ALGORITHMS
        .iter()
        .map(|alg| format!("{alg:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why discovery or a sign-in failed. Each message says what went wrong and what to do; none
/// contains a code, token, secret or cookie value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum OidcError {
    /// The configuration cannot work.
    #[error("the OpenID Connect configuration is not usable: {0}")]
    Config(String),
    /// A configured or discovered URL breaks the rules (HTTPS, absolute, no fragment).
    #[error("the OpenID Connect {what} URL {url:?} is not usable: {reason}")]
    BadUrl {
        /// Which URL.
        what: &'static str,
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// HTTPS needs CA certificates and the system has none.
    #[error(
        "no trusted CA certificates could be loaded for HTTPS to the identity provider \
         (install the system's CA certificates, e.g. Debian's ca-certificates): {0}"
    )]
    NoRootCertificates(String),
    /// Connecting or talking to the provider failed.
    #[error("the identity provider at {url} is not reachable: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The provider did not answer in time.
    #[error("the identity provider at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The configured bound.
        timeout: Duration,
    },
    /// An unexpected HTTP status.
    #[error("the identity provider answered {status} at {url}{detail}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status.
        status: ::http::StatusCode,
        /// The provider's OAuth error, or advice.
        detail: String,
    },
    /// An answer that is not what the protocol says.
    #[error("the identity provider's answer at {url} is not usable: {reason}")]
    BadResponse {
        /// The URL asked.
        url: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The discovery document is another issuer's.
    #[error(
        "the discovery document at {url} names the issuer {found:?}, not the configured \
         {expected:?}: configure the issuer exactly as the provider states it"
    )]
    IssuerMismatch {
        /// The discovery URL.
        url: String,
        /// The configured issuer.
        expected: String,
        /// The document's issuer.
        found: String,
    },
    /// The provider lacks something the sign-in needs.
    #[error("the identity provider cannot be used: {0}")]
    Unsupported(String),
    /// No flow cookie that this key signed came with the callback.
    #[error(
        "no sign-in is in progress in this browser (its sign-in cookie is missing or not \
         valid: cookies blocked, or the sign-in began at another address); start again"
    )]
    NoFlow,
    /// The flow cookie outlived the sign-in lifetime.
    #[error("the sign-in took longer than {0:?}; start again")]
    FlowExpired(Duration),
    /// The callback's `state` is not the flow cookie's: a forged or crossed callback.
    #[error(
        "this sign-in answer does not belong to the sign-in this browser started (state \
         mismatch); start again"
    )]
    StateMismatch,
    /// The callback's `iss` (RFC 9207) is not the issuer: a mix-up between providers.
    #[error("this sign-in answer comes from another issuer (iss={0})")]
    CallbackIssuer(String),
    /// The callback's parameters are malformed.
    #[error("the sign-in answer is malformed: {0}")]
    BadCallback(String),
    /// The provider sent the browser back with an error (the user declined, …).
    #[error("the identity provider refused the sign-in: {error}{description}")]
    Refused {
        /// The OAuth error code.
        error: String,
        /// The provider's description, if any.
        description: String,
    },
    /// The token endpoint refused the code exchange.
    #[error("the identity provider refused the sign-in code ({error}{description}){hint}")]
    TokenRefused {
        /// The OAuth error code.
        error: String,
        /// The provider's description, if any (never containing the code).
        description: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// The ID token failed verification.
    #[error("the ID token {0}")]
    IdToken(#[from] IdTokenError),
    /// Userinfo answered for someone else.
    #[error("the userinfo answer is for another user (sub={found}, the ID token's is {expected})")]
    UserinfoSubject {
        /// The ID token's `sub`.
        expected: String,
        /// Userinfo's `sub`.
        found: String,
    },
}

impl OidcError {
    fn bad_url(url: &str, error: impl std::fmt::Display) -> Self {
        Self::BadUrl {
            what: "request",
            url: url.to_owned(),
            reason: error.to_string(),
        }
    }
}

/// Text from the provider or a token, made safe for one log line: control characters
/// dropped, at most 200 characters.
fn printable(text: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if text.chars().filter(|c| !c.is_control()).nth(MAX).is_some() {
        out.push('…');
    }
    out
}
