//! A front proxy's signed assertion of who the user is (Pomerium's `X-Pomerium-Jwt-Assertion`
//! shape): a JWT signed with the proxy's key, verified against its JWKS URL with the same key
//! cache and JOSE checks as ID tokens.
//!
//! The key set is fetched on the first assertion (the proxy may start after the gateway), then
//! kept; an assertion naming a key the set lacks triggers one refetch, rate-limited as for ID
//! tokens. An assertion whose key is in the cache is verified without waiting
//! ([`Assertions::verify_now`]), so the requests of a signed-in user never wait on the network.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::claims::Identity;
use super::config::ClaimNames;
use super::discovery::check_url;
use super::http::HttpClient;
use super::id_token::{self, ExpectedAssertion};
use super::jwks::{Key, KeyCache};
use super::OidcError;

/// What an assertion is checked against.
#[derive(Clone, Debug)]
pub(crate) struct AssertionConfig {
    /// Where the proxy publishes its signing keys.
    pub(crate) jwks_url: String,
    /// The `iss` it must carry, when set.
    pub(crate) issuer: Option<String>,
    /// The `aud` it must carry, when set.
    pub(crate) audience: Option<String>,
    /// Which claims make the identity.
    pub(crate) claims: ClaimNames,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub(crate) leeway: Duration,
    /// The bound on fetching the keys.
    pub(crate) timeout: Duration,
    /// At most one refetch for an unknown `kid` per this interval.
    pub(crate) refetch_interval: Duration,
    /// Accept a plain `http://` JWKS URL on hosts other than loopback ones.
    pub(crate) allow_http: bool,
}

impl AssertionConfig {
    /// Keys at `jwks_url`; no issuer or audience required; default claims; 60 s leeway; 10 s
    /// per fetch; one refetch per 30 s.
    pub(crate) fn new(jwks_url: impl Into<String>) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: None,
            audience: None,
            claims: ClaimNames::default(),
            leeway: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            refetch_interval: Duration::from_secs(30),
            allow_http: false,
        }
    }
}

/// A verified assertion.
#[derive(Debug)]
pub(crate) struct Asserted {
    /// Who it names.
    pub(crate) identity: Identity,
    /// When it stops being valid: its `exp`, Unix seconds (for caching it).
    pub(crate) expires: Option<u64>,
}

/// Verifies assertions of one proxy.
pub(crate) struct Assertions {
    config: AssertionConfig,
    http: HttpClient,
    keys: tokio::sync::OnceCell<KeyCache>,
}

impl fmt::Debug for Assertions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Assertions")
            .field("config", &self.config)
            .field("keys_loaded", &self.keys.initialized())
            .finish_non_exhaustive()
    }
}

impl Assertions {
    /// Checks the JWKS URL; fetches nothing yet.
    pub(crate) fn new(config: AssertionConfig) -> Result<Self, OidcError> {
        check_url("JWKS", &config.jwks_url, config.allow_http)?;
        let http = HttpClient::new(config.timeout, config.jwks_url.starts_with("https:"))?;
        Ok(Self {
            config,
            http,
            keys: tokio::sync::OnceCell::new(),
        })
    }

    /// The assertion `token` if it can be decided without fetching keys: `None` when the key
    /// set is not loaded yet or lacks the token's key (then [`verify`](Self::verify)).
    pub(crate) fn verify_now(&self, token: &str) -> Option<Result<Asserted, OidcError>> {
        let header = match id_token::header(token) {
            Ok(header) => header,
            Err(error) => return Some(Err(error.into())),
        };
        let keys = self.keys.get()?.try_current()?;
        let candidates = keys.candidates(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            return None;
        }
        Some(self.check(token, &header, &candidates))
    }

    /// The assertion `token`, fetching the key set first if needed (and refetching it once
    /// for a key it lacks).
    pub(crate) async fn verify(&self, token: &str) -> Result<Asserted, OidcError> {
        let header = id_token::header(token)?;
        let cache = self
            .keys
            .get_or_try_init(|| {
                KeyCache::load(
                    &self.http,
                    self.config.jwks_url.clone(),
                    self.config.refetch_interval,
                )
            })
            .await?;
        let keys = cache.keys_for(&self.http, &header).await?;
        let candidates = keys.candidates(header.kid.as_deref(), header.alg);
        self.check(token, &header, &candidates)
    }

    /// Verifies `token` with `candidates`, the keys that may have signed it (at least one).
    fn check(
        &self,
        token: &str,
        header: &id_token::Header,
        candidates: &[&Key],
    ) -> Result<Asserted, OidcError> {
        let expected = ExpectedAssertion {
            issuer: self.config.issuer.as_deref(),
            audience: self.config.audience.as_deref(),
            leeway_secs: self.config.leeway.as_secs(),
        };
        let claims = id_token::verify_assertion(token, header, candidates, &expected)?;
        Ok(Asserted {
            identity: Identity::from_claims(&claims, &self.config.claims),
            expires: claims.get("exp").and_then(Value::as_u64),
        })
    }
}
