//! The provider's signing keys (its JWKS), cached; refetched when an ID token names a key the
//! cache does not have, at most once per interval, so a stream of tokens with made-up `kid`s
//! cannot turn into a stream of requests to the provider.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use super::http::HttpClient;
use super::id_token::{Header, IdTokenError};
use super::OidcError;

/// One usable signing key.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) kid: Option<String>,
    /// The algorithm the key is for, when the JWK says.
    alg: Option<KeyAlgorithm>,
    pub(super) key: DecodingKey,
}

/// The signature keys of one fetch of the JWKS.
#[derive(Clone, Default)]
pub(super) struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| &key.kid))
            .finish()
    }
}

impl KeySet {
    /// The signature keys of a JWKS document. Keys this crate cannot use (encryption keys,
    /// symmetric keys, unknown types or curves) are skipped rather than failing the set:
    /// providers such as Keycloak publish encryption keys next to signing keys.
    pub(super) fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|error| format!("not a JWK set: {error}"))?;
        let keys = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    alg: jwk.common.key_algorithm,
                    key,
                })
            })
            .collect();
        Ok(Self { keys })
    }

    /// The keys that may have signed a token with this header: the one named by `kid` (or
    /// every key when the token names none), of the algorithm's family, and of that very
    /// algorithm when the key says which it is for.
    pub(super) fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&Key> {
        self.keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .filter(|key| key.key.family() == alg.family())
            .filter(|key| {
                key.alg
                    .is_none_or(|key_alg| key_alg == KeyAlgorithm::from(alg))
            })
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The cached key set and the refetch limit.
pub(super) struct KeyCache {
    uri: String,
    keys: RwLock<Arc<KeySet>>,
    /// When the last refetch for an unknown key happened; held while one is under way so
    /// concurrent sign-ins wait for it instead of fetching again.
    last_refetch: Mutex<Option<Instant>>,
    interval: Duration,
    fetches: AtomicUsize,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("uri", &self.uri)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// Fetches the key set once. The first fetch does not count against the refetch limit.
    pub(super) async fn load(
        http: &HttpClient,
        uri: String,
        interval: Duration,
    ) -> Result<Self, OidcError> {
        let keys = fetch(http, &uri).await?;
        Ok(Self {
            uri,
            keys: RwLock::new(Arc::new(keys)),
            last_refetch: Mutex::new(None),
            interval,
            fetches: AtomicUsize::new(1),
        })
    }

    /// The keys as last fetched.
    async fn current(&self) -> Arc<KeySet> {
        self.keys.read().await.clone()
    }

    /// The keys as last fetched, without waiting: `None` only while a refetch is storing new
    /// ones.
    pub(super) fn try_current(&self) -> Option<Arc<KeySet>> {
        self.keys.try_read().ok().map(|keys| keys.clone())
    }

    /// The keys to verify a token with `header` with, at least one of them a candidate: the
    /// cached ones, or those of a [refetch](Self::refetch) when none of the cached ones is.
    /// [`IdTokenError::UnknownKey`] when the refetch is rate-limited or its keys have no
    /// candidate either.
    pub(super) async fn keys_for(
        &self,
        http: &HttpClient,
        header: &Header,
    ) -> Result<Arc<KeySet>, OidcError> {
        let kid = header.kid.as_deref();
        let keys = self.current().await;
        if !keys.candidates(kid, header.alg).is_empty() {
            return Ok(keys);
        }
        match self.refetch(http, kid, header.alg).await? {
            Some(fresh) if !fresh.candidates(kid, header.alg).is_empty() => Ok(fresh),
            _ => Err(IdTokenError::unknown_key(header).into()),
        }
    }

    /// Refetches the key set because a token names a key it lacks, unless a refetch happened
    /// within the interval. Returns the keys to try again with, or `None` when rate-limited
    /// (the caller reports the unknown key). A sign-in that waited for another's refetch gets
    /// that refetch's keys without fetching again.
    async fn refetch(
        &self,
        http: &HttpClient,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<Arc<KeySet>>, OidcError> {
        let mut last = self.last_refetch.lock().await;
        let current = self.current().await;
        if !current.candidates(kid, alg).is_empty() {
            return Ok(Some(current));
        }
        if let Some(at) = *last {
            if at.elapsed() < self.interval {
                tracing::warn!(
                    target: "marimo_rs::oidc",
                    kid = kid.unwrap_or(""),
                    "an ID token names a key the provider's key set lacks; not refetching \
                     the key set: it was refetched less than {:?} ago",
                    self.interval
                );
                return Ok(None);
            }
        }
        *last = Some(Instant::now());
        tracing::info!(
            target: "marimo_rs::oidc",
            kid = kid.unwrap_or(""),
            uri = %self.uri,
            "refetching the provider's key set for an unknown key"
        );
        let keys = Arc::new(fetch(http, &self.uri).await?);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        *self.keys.write().await = keys.clone();
        Ok(Some(keys))
    }

    /// How many times the key set was fetched, the first time included.
    #[cfg(test)]
    pub(super) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }
}

async fn fetch(http: &HttpClient, uri: &str) -> Result<KeySet, OidcError> {
    let response = http.get(uri, None).await?;
    if response.status != StatusCode::OK {
        return Err(OidcError::status(uri, &response));
    }
    let keys = KeySet::parse(&response.body).map_err(|reason| OidcError::BadResponse {
        url: uri.to_owned(),
        reason,
    })?;
    if keys.len() == 0 {
        return Err(OidcError::BadResponse {
            url: uri.to_owned(),
            reason: "the key set has no signature key marimo-rs can use".into(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = r#"{"kty":"RSA","use":"sig","kid":"r1","alg":"RS256","e":"AQAB","n":"ye83EM8ewTRu5y1RjjGGcUfCnZL_8NKcI9CSWOs7Bc3fvfBXBkwoLacgFNjN-EUCCUAnbHKG5oGcb4Xb2q2K6fgzXCJCwDDYEP_GfhGzfrHkmb_UECmn_YMont-fjAP9fUpbcxVP32iHKroDy8_JDyGMCjT1pgV9m7kcghgBzpFfmq_teIuxtiUYl4HaxY7FPLPaPIx8ufZpcOQcfpZBjfe7jA-d4VFp4U_3nhI3dkadmj3mwRhmAt0_j67TkDrZOJLl430C6XZHZRHTraFh4pSi1pjyO1eS3Btpcgb77gwCWBpqQq7LGoQKaJa0u2AHjveCBPFvm1gqpHYSEgjRRQ"}"#;
    const EC: &str = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn keeps_signature_keys_and_skips_the_rest() {
        let body = format!(
            r#"{{"keys":[{RSA},{EC},
                {{"kty":"RSA","kid":"enc","use":"enc","alg":"RSA-OAEP","e":"AQAB","n":"ye83EM8ewTRu5y1R"}},
                {{"kty":"oct","kid":"h","k":"c2VjcmV0"}},
                {{"kty":"weird","kid":"w"}}]}}"#
        );
        let keys = KeySet::parse(body.as_bytes()).unwrap();
        let kids: Vec<_> = keys.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("r1"), Some("e1")]);
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\": 1}").is_err());
    }

    #[test]
    fn candidates_match_kid_family_and_algorithm() {
        let keys = KeySet::parse(format!(r#"{{"keys":[{RSA},{EC}]}}"#).as_bytes()).unwrap();
        let kids = |kid, alg| -> Vec<Option<String>> {
            keys.candidates(kid, alg)
                .iter()
                .map(|k| k.kid.clone())
                .collect()
        };
        assert_eq!(kids(Some("r1"), Algorithm::RS256), [Some("r1".to_owned())]);
        // The key says RS256: not for PS256, and never for HMAC (alg confusion).
        assert!(kids(Some("r1"), Algorithm::PS256).is_empty());
        assert!(kids(Some("r1"), Algorithm::HS256).is_empty());
        assert!(kids(Some("r1"), Algorithm::ES256).is_empty());
        assert_eq!(kids(None, Algorithm::ES256), [Some("e1".to_owned())]);
        assert!(kids(Some("nope"), Algorithm::RS256).is_empty());
    }
}
