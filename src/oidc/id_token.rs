//! ID token verification (OpenID Connect Core 1.0, §3.1.3.7): the signature against the
//! provider's keys with an asymmetric algorithm, then `iss`, `aud`, `azp`, `exp`, `nbf`,
//! `iat` and `nonce`. The JOSE work (parsing, signature, `exp`/`nbf`/`iss`/`aud`) is
//! `jsonwebtoken`'s; what OpenID Connect adds on top is here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::flow::same_secret;
use super::jwks::Key;
use super::ACCEPTED_ALGORITHMS;

/// Why an ID token was refused. Messages follow "the ID token …" and never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdTokenError {
    /// Not three base64url parts with a JSON header and claims.
    #[error("is not a signed JWT ({0})")]
    Malformed(String),
    /// `none`, HMAC or anything else outside the accepted list.
    #[error("is signed with {alg:?}, which is refused (accepted: {accepted})")]
    Algorithm {
        /// The header's `alg`.
        alg: String,
        /// The accepted algorithms.
        accepted: String,
    },
    /// No key of the provider's set (after a refetch, or with the refetch rate-limited)
    /// matches the token's `kid` and `alg`.
    #[error(
        "is signed with a key the provider does not publish (kid {kid:?}, alg {alg}); if the \
         provider just rotated its keys, sign in again in a moment"
    )]
    UnknownKey {
        /// The header's `kid`.
        kid: Option<String>,
        /// The header's `alg`.
        alg: String,
    },
    /// The signature does not verify with the provider's key.
    #[error("has an invalid signature")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("is from another issuer (iss={0})")]
    Issuer(String),
    /// `aud` does not contain the client id.
    #[error("is for another client (aud={0})")]
    Audience(String),
    /// Several audiences and no `azp`, or an `azp` that is not the client id.
    #[error("was issued to another party (azp={0})")]
    AuthorizedParty(String),
    /// `exp` is past (beyond the leeway).
    #[error("has expired; check that this machine's clock is right, then sign in again")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("is not valid yet (nbf or iat is in the future); check this machine's clock")]
    NotYetValid,
    /// `nonce` is missing or is not this sign-in's.
    #[error("does not carry this sign-in's nonce (a replayed or injected token)")]
    Nonce,
    /// A required claim is missing or has the wrong type.
    #[error("lacks a valid {0:?} claim")]
    Claim(String),
}

impl IdTokenError {
    /// No key of the provider's set matches `header`.
    pub(super) fn unknown_key(header: &Header) -> Self {
        Self::UnknownKey {
            kid: header.kid.as_deref().map(super::printable),
            alg: format!("{:?}", header.alg),
        }
    }
}

/// What the token must say.
pub(super) struct Expected<'a> {
    pub(super) issuer: &'a str,
    pub(super) client_id: &'a str,
    pub(super) nonce: &'a str,
    pub(super) leeway_secs: u64,
    pub(super) now: u64,
}

/// The token's header as far as key selection needs it.
pub(super) struct Header {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
}

/// Reads the header and refuses any algorithm outside [`ACCEPTED_ALGORITHMS`] (so `none` and
/// `HS*`, whose "key" would be public, never get as far as a key).
pub(super) fn header(token: &str) -> Result<Header, IdTokenError> {
    match jsonwebtoken::decode_header(token) {
        Ok(header) if ACCEPTED_ALGORITHMS.contains(&header.alg) => Ok(Header {
            alg: header.alg,
            kid: header.kid,
        }),
        Ok(header) => Err(refused_algorithm(format!("{:?}", header.alg))),
        // jsonwebtoken knows no `none`: name what the header says, if it says anything.
        Err(error) => match header_alg(token) {
            Some(alg) => Err(refused_algorithm(alg)),
            None => Err(IdTokenError::Malformed(error.to_string())),
        },
    }
}

fn refused_algorithm(alg: String) -> IdTokenError {
    IdTokenError::Algorithm {
        alg,
        accepted: super::accepted_algorithms(),
    }
}

/// The `alg` string of a header jsonwebtoken cannot parse, for the error message only.
fn header_alg(token: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(token.split('.').next()?).ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    Some(header.get("alg")?.as_str()?.to_owned())
}

/// Verifies `token` with one of `keys` (the candidates for its header) and returns its claims.
pub(super) fn verify(
    token: &str,
    header: &Header,
    keys: &[&Key],
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let mut validation = Validation::new(header.alg);
    validation.leeway = expected.leeway_secs;
    validation.validate_nbf = true;
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = decode(token, keys, &validation)?;
    check_oidc_claims(claims, expected)
}

/// What a front proxy's signed assertion (Pomerium's `X-Pomerium-Jwt-Assertion`) must say:
/// its issuer and audience when configured (a proxy names its own), and an unexpired `exp`.
pub(super) struct ExpectedAssertion<'a> {
    pub(super) issuer: Option<&'a str>,
    pub(super) audience: Option<&'a str>,
    pub(super) leeway_secs: u64,
}

/// Verifies a front proxy's assertion with one of `keys` and returns its claims: the
/// signature (asymmetric algorithms only, as for ID tokens), `exp` and `nbf` with the leeway,
/// `iss` and `aud` when expected, and a non-empty `sub`.
pub(super) fn verify_assertion(
    token: &str,
    header: &Header,
    keys: &[&Key],
    expected: &ExpectedAssertion<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let mut validation = Validation::new(header.alg);
    validation.leeway = expected.leeway_secs;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = expected.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match expected.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    let claims = decode(token, keys, &validation)?;
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(IdTokenError::Claim("sub".into()));
    }
    Ok(claims)
}

/// The claims of `token` if one of `keys` verifies it under `validation`.
fn decode(
    token: &str,
    keys: &[&Key],
    validation: &Validation,
) -> Result<Map<String, Value>, IdTokenError> {
    let mut failure = IdTokenError::Signature;
    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
            Ok(data) => return Ok(data.claims),
            // Without a `kid`, several keys may be tried: only a signature failure moves on.
            Err(error) if *error.kind() == ErrorKind::InvalidSignature => {}
            Err(error) => {
                failure = from_jsonwebtoken(token, error.kind());
                break;
            }
        }
    }
    Err(failure)
}

/// What OpenID Connect requires beyond a JWT's own checks.
fn check_oidc_claims(
    claims: Map<String, Value>,
    expected: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(IdTokenError::Claim("sub".into()));
    }
    // §3.1.3.7 items 4 and 5: with several audiences `azp` must be present; when present it
    // must be this client.
    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|aud| aud.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == expected.client_id => {}
        None if !several_audiences => {}
        Some(other) => return Err(IdTokenError::AuthorizedParty(display_value(other))),
        None => return Err(IdTokenError::AuthorizedParty("absent".into())),
    }
    let Some(iat) = claims.get("iat").and_then(Value::as_u64) else {
        return Err(IdTokenError::Claim("iat".into()));
    };
    if iat > expected.now.saturating_add(expected.leeway_secs) {
        return Err(IdTokenError::NotYetValid);
    }
    match claims.get("nonce").and_then(Value::as_str) {
        Some(nonce) if same_secret(nonce, expected.nonce) => Ok(claims),
        _ => Err(IdTokenError::Nonce),
    }
}

fn from_jsonwebtoken(token: &str, kind: &ErrorKind) -> IdTokenError {
    // `decode` verifies the signature before it validates claims, so for the claim errors
    // the claims are the provider's own and can be quoted.
    let claim = |name: &str| {
        jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)
            .ok()
            .and_then(|data| data.claims.get(name).map(display_value))
            .unwrap_or_else(|| "absent".into())
    };
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => IdTokenError::Signature,
        ErrorKind::ExpiredSignature => IdTokenError::Expired,
        ErrorKind::ImmatureSignature => IdTokenError::NotYetValid,
        ErrorKind::InvalidIssuer => IdTokenError::Issuer(claim("iss")),
        ErrorKind::InvalidAudience => IdTokenError::Audience(claim("aud")),
        ErrorKind::MissingRequiredClaim(name) | ErrorKind::InvalidClaimFormat(name) => {
            IdTokenError::Claim(name.clone())
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            refused_algorithm(header_alg(token).unwrap_or_default())
        }
        other => IdTokenError::Malformed(format!("{other:?}")),
    }
}

/// A claim value for a message: strings bare, anything else as JSON, at most 200 characters.
fn display_value(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    super::printable(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey};
    use serde_json::json;

    #[test]
    fn none_and_hmac_headers_are_refused_before_any_key() {
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"ada"}"#)
        );
        let error = header(&none).err().unwrap();
        assert!(
            matches!(&error, IdTokenError::Algorithm { alg, .. } if alg == "none"),
            "{error}"
        );
        assert!(error.to_string().contains("accepted: RS256"), "{error}");

        let hs = encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &json!({"sub": "ada"}),
            &EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert!(matches!(header(&hs), Err(IdTokenError::Algorithm { alg, .. }) if alg == "HS256"));
        assert!(matches!(header("garbage"), Err(IdTokenError::Malformed(_))));
        assert!(matches!(header("a.b.c"), Err(IdTokenError::Malformed(_))));
    }

    fn expected(nonce: &str) -> Expected<'_> {
        Expected {
            issuer: "https://id.example",
            client_id: "marimo",
            nonce,
            leeway_secs: 60,
            now: 10_000,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut claims = json!({"sub": "ada", "aud": "marimo", "iat": 10_000, "nonce": "n"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims.as_object().unwrap().clone()
    }

    #[test]
    fn oidc_claim_checks() {
        let check = |extra: Value| check_oidc_claims(claims(extra), &expected("n"));
        assert!(check(json!({})).is_ok());
        assert!(check(json!({"azp": "marimo", "aud": ["marimo", "other"]})).is_ok());
        assert_eq!(
            check(json!({"aud": ["marimo", "other"]})).unwrap_err(),
            IdTokenError::AuthorizedParty("absent".into())
        );
        assert_eq!(
            check(json!({"azp": "other"})).unwrap_err(),
            IdTokenError::AuthorizedParty("other".into())
        );
        assert_eq!(
            check(json!({"nonce": "m"})).unwrap_err(),
            IdTokenError::Nonce
        );
        assert_eq!(
            check(json!({"nonce": null})).unwrap_err(),
            IdTokenError::Nonce
        );
        assert_eq!(check(json!({"nonce": 5})).unwrap_err(), IdTokenError::Nonce);
        assert_eq!(
            check(json!({"iat": 10_061})).unwrap_err(),
            IdTokenError::NotYetValid
        );
        assert!(check(json!({"iat": 10_060})).is_ok(), "within the leeway");
        assert_eq!(
            check(json!({"iat": null})).unwrap_err(),
            IdTokenError::Claim("iat".into())
        );
        assert_eq!(
            check(json!({"sub": ""})).unwrap_err(),
            IdTokenError::Claim("sub".into())
        );
    }

    #[test]
    fn messages_name_the_problem_without_the_token() {
        assert_eq!(
            format!(
                "the ID token {}",
                IdTokenError::Audience("other-client".into())
            ),
            "the ID token is for another client (aud=other-client)"
        );
        assert_eq!(
            display_value(&json!(["a", "b"])),
            r#"["a","b"]"#,
            "non-strings as JSON"
        );
    }
}
