//! Identity from a trusted front proxy: [`ProxyIdentity`], read from the requests of the
//! [trusted proxies](crate::AuthLayer::trusted_proxies) only, and removed from every request.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::header::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use super::cookie::unix_now;
use crate::oidc::{Asserted, AssertionConfig, Assertions, OidcError};
use crate::sync::lock;
use crate::User;

/// Most verified assertions remembered (a proxy sends the same one with every request of a
/// session, and verifying a signature costs far more than a lookup).
const MAX_CACHED: usize = 4096;
/// Longest identity header value looked at.
const MAX_HEADER_LEN: usize = 8192;

/// Who the user is, as a trusted front proxy states it: oauth2-proxy's headers, or a signed
/// JWT assertion (Pomerium's).
///
/// Given to [`AuthLayer::proxy_identity`](crate::AuthLayer::proxy_identity). The identity is
/// believed only from requests whose peer address is one of the layer's
/// [trusted proxies](crate::AuthLayer::trusted_proxies); from any other client the headers are
/// ignored. They are removed from every request either way, and never reach a notebook
/// backend. A request a trusted proxy sends without them is authenticated the other ways
/// (session cookie, token).
///
/// ```
/// use marimo_rs::{AuthLayer, ProxyIdentity, Token};
///
/// // oauth2-proxy (`--set-xauthrequest` / `--pass-user-headers`) on 10.0.0.2:
/// let auth = AuthLayer::new(Token::random())
///     .trusted_proxies(["10.0.0.2"])
///     .proxy_identity(ProxyIdentity::headers());
///
/// // Pomerium: the assertion is verified against its keys.
/// let pomerium = ProxyIdentity::jwt_assertion("https://marimo.example.com/.well-known/pomerium/jwks.json")
///     .audience("marimo.example.com");
/// # let _ = (auth, pomerium);
/// ```
#[derive(Clone)]
pub struct ProxyIdentity {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Headers {
        user: HeaderName,
        email: HeaderName,
        groups: HeaderName,
        preferred_username: HeaderName,
    },
    Jwt {
        header: HeaderName,
        config: AssertionConfig,
    },
}

impl ProxyIdentity {
    /// oauth2-proxy's headers: `X-Forwarded-User` (the name, unless
    /// `X-Forwarded-Preferred-Username` gives one), `X-Forwarded-Email`, `X-Forwarded-Groups`
    /// (comma-separated).
    pub fn headers() -> Self {
        Self {
            source: Source::Headers {
                user: HeaderName::from_static("x-forwarded-user"),
                email: HeaderName::from_static("x-forwarded-email"),
                groups: HeaderName::from_static("x-forwarded-groups"),
                preferred_username: HeaderName::from_static("x-forwarded-preferred-username"),
            },
        }
    }

    /// A signed JWT in `X-Pomerium-Jwt-Assertion`, verified against the keys at `jwks_url`
    /// (asymmetric algorithms only, `exp` and `nbf` with 60 s leeway, a `sub`): the name from
    /// `preferred_username`, `name` or `sub`, the email from `email`, the groups from
    /// `groups`. Set [`issuer`](Self::issuer) and [`audience`](Self::audience) to what the
    /// proxy puts there (Pomerium: the route's host for both), so that an assertion for
    /// another service is refused.
    pub fn jwt_assertion(jwks_url: impl Into<String>) -> Self {
        Self {
            source: Source::Jwt {
                header: HeaderName::from_static("x-pomerium-jwt-assertion"),
                config: AssertionConfig::new(jwks_url),
            },
        }
    }

    /// The header that carries the assertion (for [`jwt_assertion`](Self::jwt_assertion)).
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name.
    pub fn header(mut self, name: &str) -> Self {
        if let Source::Jwt { header, .. } = &mut self.source {
            *header = HeaderName::try_from(name)
                .unwrap_or_else(|_| panic!("ProxyIdentity::header: {name:?} is not a header name"));
        }
        self
    }

    /// The `iss` an assertion must carry.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        if let Source::Jwt { config, .. } = &mut self.source {
            config.issuer = Some(issuer.into());
        }
        self
    }

    /// The `aud` an assertion must carry.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        if let Source::Jwt { config, .. } = &mut self.source {
            config.audience = Some(audience.into());
        }
        self
    }

    /// The claims with the user's groups (`groups` by default). Replaces the list.
    pub fn group_claims<I, T>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        if let Source::Jwt { config, .. } = &mut self.source {
            config.claims.groups = claims.into_iter().map(Into::into).collect();
        }
        self
    }

    /// Accepts a plain `http://` JWKS URL on hosts other than loopback ones (development).
    pub fn allow_http(mut self, allow: bool) -> Self {
        if let Source::Jwt { config, .. } = &mut self.source {
            config.allow_http = allow;
        }
        self
    }

    /// The headers this source reads (all removed from every request).
    fn header_names(&self) -> Vec<HeaderName> {
        match &self.source {
            Source::Headers {
                user,
                email,
                groups,
                preferred_username,
            } => vec![
                user.clone(),
                email.clone(),
                groups.clone(),
                preferred_username.clone(),
            ],
            Source::Jwt { header, .. } => vec![header.clone()],
        }
    }
}

impl fmt::Debug for ProxyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Headers { user, .. } => f
                .debug_struct("ProxyIdentity")
                .field("headers", &user.as_str())
                .finish(),
            Source::Jwt { header, config } => f
                .debug_struct("ProxyIdentity")
                .field("jwt_header", &header.as_str())
                .field("jwks_url", &config.jwks_url)
                .field("issuer", &config.issuer)
                .field("audience", &config.audience)
                .finish(),
        }
    }
}

/// A [`ProxyIdentity`] in use by one auth layer (shared by its clones).
#[derive(Debug)]
pub(crate) struct Front {
    identity: ProxyIdentity,
    /// Every header any source reads, and the defaults of both, to remove.
    strip: Vec<HeaderName>,
    jwt: Option<Jwt>,
}

struct Jwt {
    /// `Err`: the JWKS URL is unusable (reported on every assertion).
    assertions: Result<Assertions, Arc<str>>,
    /// SHA-256 of a verified assertion → the user, until its `exp`.
    cache: Mutex<HashMap<[u8; 32], (User, u64)>>,
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt").finish_non_exhaustive()
    }
}

/// What a request's identity headers say.
pub(crate) enum Found {
    /// Nothing to go by (not from a trusted proxy, or no header).
    Nothing,
    /// The proxy's user.
    User(User),
    /// An assertion whose keys must be fetched first.
    Verify(String),
    /// The proxy's statement does not hold (a bad assertion); the reason, for the log.
    Invalid(String),
}

impl Front {
    pub(crate) fn new(identity: ProxyIdentity) -> Self {
        let mut strip: Vec<HeaderName> = crate::user::IDENTITY_HEADERS
            .iter()
            .map(|name| HeaderName::from_static(name))
            .collect();
        for name in identity.header_names() {
            if !strip.contains(&name) {
                strip.push(name);
            }
        }
        let jwt = match &identity.source {
            Source::Jwt { config, .. } => Some(Jwt {
                assertions: Assertions::new(config.clone())
                    .map_err(|error| Arc::from(error.to_string())),
                cache: Mutex::default(),
            }),
            Source::Headers { .. } => None,
        };
        Self {
            identity,
            strip,
            jwt,
        }
    }

    /// Reads the identity (only when `trusted`: the peer is a trusted proxy) and removes the
    /// identity headers from `headers`.
    pub(crate) fn take(
        &self,
        headers: &mut HeaderMap,
        trusted: bool,
        peer: Option<IpAddr>,
    ) -> Found {
        let found = if trusted {
            self.read(headers)
        } else {
            if self.strip.iter().any(|name| headers.contains_key(name)) {
                tracing::debug!(
                    target: "marimo_rs::auth",
                    peer = ?peer,
                    "identity headers from a client that is not a trusted proxy: ignored"
                );
            }
            Found::Nothing
        };
        for name in &self.strip {
            headers.remove(name);
        }
        found
    }

    fn read(&self, headers: &HeaderMap) -> Found {
        let value = |name: &HeaderName| {
            let mut values = headers.get_all(name).iter();
            let first = values.next()?;
            // Two values: a client's and the proxy's; believe neither.
            if values.next().is_some() || first.len() > MAX_HEADER_LEN {
                return None;
            }
            first.to_str().ok().map(str::trim).filter(|v| !v.is_empty())
        };
        match &self.identity.source {
            Source::Headers {
                user,
                email,
                groups,
                preferred_username,
            } => {
                let Some(name) = value(preferred_username).or_else(|| value(user)) else {
                    return Found::Nothing;
                };
                let mut found = User::new(name);
                if let Some(email) = value(email) {
                    found = found.with_email(email);
                }
                if let Some(groups) = value(groups) {
                    found = found.with_groups(groups.split(',').map(str::trim));
                }
                Found::User(found)
            }
            Source::Jwt { header, .. } => match value(header) {
                Some(token) => self.assertion(token),
                None => Found::Nothing,
            },
        }
    }

    /// An assertion verified now from the cache or the cached keys, or to verify later.
    fn assertion(&self, token: &str) -> Found {
        let Some(jwt) = &self.jwt else {
            return Found::Nothing;
        };
        let assertions = match &jwt.assertions {
            Ok(assertions) => assertions,
            Err(reason) => return Found::Invalid(reason.to_string()),
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some((user, exp)) = lock(&jwt.cache).get(&digest) {
            if *exp > now {
                return Found::User(user.clone());
            }
        }
        match assertions.verify_now(token) {
            Some(verified) => self.verified(digest, verified),
            None => Found::Verify(token.to_owned()),
        }
    }

    /// Verifies an assertion, fetching the proxy's keys if needed.
    pub(crate) async fn verify(&self, token: &str) -> Found {
        let Some(Jwt {
            assertions: Ok(assertions),
            ..
        }) = &self.jwt
        else {
            return Found::Nothing;
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = assertions.verify(token).await;
        self.verified(digest, verified)
    }

    fn verified(&self, digest: [u8; 32], verified: Result<Asserted, OidcError>) -> Found {
        let Asserted { identity, expires } = match verified {
            Ok(asserted) => asserted,
            Err(error) => return Found::Invalid(format!("the proxy's assertion: {error}")),
        };
        let user = User::from(identity);
        if let (Some(jwt), Some(exp)) = (&self.jwt, expires) {
            let mut cache = lock(&jwt.cache);
            if cache.len() >= MAX_CACHED {
                let now = unix_now();
                cache.retain(|_, (_, exp)| *exp > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(digest, (user.clone(), exp));
        }
        Found::User(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::try_from(*name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn oauth2_proxy_headers_make_a_user_only_when_trusted_and_are_always_removed() {
        let front = Front::new(ProxyIdentity::headers());
        let sent = [
            ("x-forwarded-user", "u-1"),
            ("x-forwarded-preferred-username", "ada"),
            ("x-forwarded-email", "ada@example.com"),
            ("x-forwarded-groups", "analysts, admins,,"),
            ("x-pomerium-jwt-assertion", "x.y.z"),
            ("x-other", "kept"),
        ];
        let mut trusted = headers(&sent);
        let Found::User(user) = front.take(&mut trusted, true, None) else {
            panic!("a user")
        };
        assert_eq!(user.name(), "ada");
        assert_eq!(user.email(), Some("ada@example.com"));
        assert_eq!(user.groups(), ["analysts", "admins"]);
        assert_eq!(trusted.len(), 1, "{trusted:?}");

        let mut untrusted = headers(&sent);
        assert!(matches!(
            front.take(&mut untrusted, false, None),
            Found::Nothing
        ));
        assert_eq!(untrusted.len(), 1, "{untrusted:?}");

        // Two values of one header: neither is believed.
        let mut doubled = headers(&[("x-forwarded-user", "eve"), ("x-forwarded-user", "ada")]);
        assert!(matches!(
            front.take(&mut doubled, true, None),
            Found::Nothing
        ));
    }
}
