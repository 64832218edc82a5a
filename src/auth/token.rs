//! [`Token`]: the shared secret that opens a marimo_rs server.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Domain separation for tokens derived from a notebook's code.
const RUN_TOKEN_DOMAIN: &[u8] = b"marimo-rs/run-token/v1\0";

/// How many digest bytes a derived token keeps: 24 bytes, 32 base64 characters, 192 bits.
const DERIVED_BYTES: usize = 24;

/// How many random bytes [`Token::random`] draws: 24 bytes, 32 base64 characters, 192 bits.
const RANDOM_BYTES: usize = 24;

/// The environment variable [`Token::from_code_env`] reads.
pub(crate) const SECRET_ENV: &str = "MARIMO_RS_SECRET";

/// The secret that opens a server protected by [`AuthLayer`](crate::AuthLayer), like
/// `marimo edit/run --token`.
///
/// A client presents it as the `access_token` query parameter, as a Bearer token, as the
/// password of HTTP Basic auth (any non-empty username) or in the login form.
///
/// `Debug` and `Display` print `Token(<redacted>)`; only
/// [`expose_secret`](Token::expose_secret) shows the value. The token is kept next to its
/// SHA-256 digest, and a presented credential is checked by hashing it and comparing the two
/// fixed-length digests in constant time, so neither the content nor the length of the token
/// leaks through timing. An empty credential never matches, so an empty token opens nothing.
///
/// ```
/// use marimo_rs::Token;
///
/// let fixed = Token::new("sup3rs3cr3t");
/// assert_eq!(fixed.expose_secret(), "sup3rs3cr3t");
/// assert_eq!(format!("{fixed:?}"), "Token(<redacted>)");
///
/// // `marimo edit`: a fresh random token per process.
/// let edit = Token::random();
/// assert_eq!(edit.expose_secret().len(), 32);
///
/// // `marimo run`: derived from the notebook, the same on every machine and restart.
/// let code = "import marimo\napp = marimo.App()\n";
/// assert_eq!(
///     Token::from_code(code).expose_secret(),
///     Token::from_code(code).expose_secret(),
/// );
/// ```
#[derive(Clone)]
pub struct Token {
    value: String,
    digest: [u8; 32],
}

impl Token {
    /// A token with this exact value.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        let digest = Sha256::digest(value.as_bytes()).into();
        Self { value, digest }
    }

    /// A random token, as `marimo edit` makes: 192 bits from the operating system's random
    /// number generator, encoded as URL-safe base64 without padding (32 characters).
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes.
    pub fn random() -> Self {
        let mut bytes = [0u8; RANDOM_BYTES];
        fill_random(&mut bytes);
        Self::new(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The token of a notebook in run mode, derived from its source code.
    ///
    /// Deterministic and stable across processes, machines and releases (unlike marimo's own,
    /// which uses Python's salted `hash()` and changes on every restart). The derivation is:
    ///
    /// ```text
    /// base64url_nopad( SHA-256( "marimo-rs/run-token/v1\0" || code )[..24] )
    /// ```
    ///
    /// that is, the first 24 bytes of the digest as 32 URL-safe base64 characters. Anyone who
    /// can read the code can compute the token: when the code is not secret, use
    /// [`from_code_with_secret`](Token::from_code_with_secret).
    pub fn from_code(code: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(RUN_TOKEN_DOMAIN);
        hasher.update(code.as_bytes());
        Self::from_derived(&hasher.finalize())
    }

    /// Like [`from_code`](Token::from_code), but keyed by a server secret, so that knowing
    /// the code is not enough to compute the token:
    ///
    /// ```text
    /// base64url_nopad( HMAC-SHA256(key = secret, "marimo-rs/run-token/v1\0" || code)[..24] )
    /// ```
    ///
    /// Servers that share the secret derive the same token for the same code.
    pub fn from_code_with_secret(code: &str, secret: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(RUN_TOKEN_DOMAIN);
        mac.update(code.as_bytes());
        Self::from_derived(&mac.finalize().into_bytes())
    }

    /// [`from_code_with_secret`](Token::from_code_with_secret) keyed by the
    /// `MARIMO_RS_SECRET` environment variable when it is set and not empty, otherwise
    /// [`from_code`](Token::from_code).
    ///
    /// This is the only place the library reads that variable, and only when called.
    pub fn from_code_env(code: &str) -> Self {
        match std::env::var_os(SECRET_ENV) {
            Some(secret) if !secret.is_empty() => {
                Self::from_code_with_secret(code, secret.as_encoded_bytes())
            }
            _ => Self::from_code(code),
        }
    }

    /// The token itself, to print once at start-up or put in a URL. Handle with care.
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// The SHA-256 digest of the token: what session cookies are bound to.
    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Whether `candidate` is the token, in time independent of both values. Empty never
    /// matches.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        if candidate.is_empty() {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        bool::from(digest.ct_eq(&self.digest))
    }

    fn from_derived(digest: &[u8]) -> Self {
        Self::new(URL_SAFE_NO_PAD.encode(&digest[..DERIVED_BYTES]))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Fills `bytes` from the operating system's random number generator.
///
/// # Panics
///
/// If the operating system cannot provide random bytes: there is no safe fallback for a secret.
pub(crate) fn fill_random(bytes: &mut [u8]) {
    if let Err(error) = getrandom::fill(bytes) {
        panic!("the operating system's random number generator failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let token = Token::new("sup3rs3cr3t");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        assert_eq!(token.to_string(), "Token(<redacted>)");
        assert_eq!(format!("{token:#?}"), "Token(<redacted>)");
        assert_eq!(token.expose_secret(), "sup3rs3cr3t");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let token = Token::new("sup3rs3cr3t");
        assert!(token.matches(b"sup3rs3cr3t"));
        for wrong in [
            &b""[..],
            b"sup3rs3cr3",
            b"sup3rs3cr3tt",
            b"SUP3RS3CR3T",
            b"\xff\xfe",
        ] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!Token::new("").matches(b""), "an empty token opens nothing");
    }

    #[test]
    fn random_tokens_are_long_url_safe_and_distinct() {
        let a = Token::random();
        let b = Token::random();
        assert_eq!(a.expose_secret().len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a
            .expose_secret()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn code_tokens_follow_the_documented_derivation() {
        let code = "import marimo\n";
        let mut hasher = Sha256::new();
        hasher.update(b"marimo-rs/run-token/v1\0");
        hasher.update(code.as_bytes());
        let expected = URL_SAFE_NO_PAD.encode(&hasher.finalize()[..24]);
        assert_eq!(Token::from_code(code).expose_secret(), expected);
        assert_eq!(expected.len(), 32);
        // Pinned: this value must never change between releases.
        assert_eq!(
            Token::from_code("").expose_secret(),
            URL_SAFE_NO_PAD.encode(&Sha256::digest(b"marimo-rs/run-token/v1\0")[..24])
        );
        assert_ne!(
            Token::from_code(code).expose_secret(),
            Token::from_code("import marimo\n\n").expose_secret()
        );
    }

    #[test]
    fn from_code_env_uses_the_secret_only_when_set() {
        // The only test that touches MARIMO_RS_SECRET.
        let code = "import marimo\n";
        std::env::remove_var(SECRET_ENV);
        assert_eq!(
            Token::from_code_env(code).expose_secret(),
            Token::from_code(code).expose_secret()
        );
        std::env::set_var(SECRET_ENV, "");
        assert_eq!(
            Token::from_code_env(code).expose_secret(),
            Token::from_code(code).expose_secret()
        );
        std::env::set_var(SECRET_ENV, "server-secret");
        let keyed = Token::from_code_env(code);
        std::env::remove_var(SECRET_ENV);
        assert_eq!(
            keyed.expose_secret(),
            Token::from_code_with_secret(code, b"server-secret").expose_secret()
        );
    }

    #[test]
    fn secret_keyed_code_tokens_depend_on_the_secret() {
        let code = "import marimo\n";
        let plain = Token::from_code(code);
        let a = Token::from_code_with_secret(code, b"secret-a");
        let a_again = Token::from_code_with_secret(code, b"secret-a");
        let b = Token::from_code_with_secret(code, b"secret-b");
        assert_eq!(a.expose_secret(), a_again.expose_secret());
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), plain.expose_secret());
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"secret-a").unwrap();
        mac.update(b"marimo-rs/run-token/v1\0import marimo\n");
        let expected = URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..24]);
        assert_eq!(a.expose_secret(), expected);
    }
}
