//! [`Token`]: the shared secret that opens a marimo_rs server.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secret::{self, SecretError};

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
/// // `marimo run`: derived from the notebook and a secret, the same on every restart.
/// let code = "import marimo\napp = marimo.App()\n";
/// assert_eq!(
///     Token::from_code_with_secret(code, b"server secret").expose_secret(),
///     Token::from_code_with_secret(code, b"server secret").expose_secret(),
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
        Self::new(random_b64url::<RANDOM_BYTES>())
    }

    /// A token derived from a notebook's source code alone: **public knowledge** wherever the
    /// code is (a repository, a shared folder), so it protects nothing that the code does not.
    ///
    /// Deterministic and stable across processes, machines and releases. The derivation is:
    ///
    /// ```text
    /// base64url_nopad( SHA-256( "marimo-rs/run-token/v1\0" || code )[..24] )
    /// ```
    ///
    /// that is, the first 24 bytes of the digest as 32 URL-safe base64 characters. To protect
    /// a notebook, key the derivation with a secret: [`from_code_env`](Token::from_code_env)
    /// (what `marimo-rs run --token` uses) or
    /// [`from_code_with_secret`](Token::from_code_with_secret).
    pub fn from_code(code: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(RUN_TOKEN_DOMAIN);
        hasher.update(code.as_bytes());
        Self::from_derived(&hasher.finalize())
    }

    /// The token of a notebook in run mode: derived from its code and keyed by a server
    /// secret, so that knowing the code is not enough to compute it:
    ///
    /// ```text
    /// base64url_nopad( HMAC-SHA256(key = secret, "marimo-rs/run-token/v1\0" || code)[..24] )
    /// ```
    ///
    /// The same code and secret give the same token, on every restart and on every server
    /// that shares the secret.
    pub fn from_code_with_secret(code: &str, secret: &[u8]) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(RUN_TOKEN_DOMAIN);
        mac.update(code.as_bytes());
        Self::from_derived(&mac.finalize().into_bytes())
    }

    /// The token `marimo-rs run --token` uses: [`from_code_with_secret`] keyed by
    ///
    /// - the `MARIMO_RS_SECRET` environment variable when it is set and not empty (replicas
    ///   share it, and so derive the same token), otherwise
    /// - the **installation secret**: 32 random bytes in the file `installation-secret` of the
    ///   cache directory (`$MARIMO_RS_CACHE_DIR`, else `$XDG_CACHE_HOME/marimo-rs`, else
    ///   `~/.cache/marimo-rs`, where the managed Python environment lives), made with mode
    ///   0600 by the first call on this machine and read by every later one, also by
    ///   concurrent first starts.
    ///
    /// So the token stays the same across restarts of one installation, and cannot be computed
    /// from the code by someone who cannot read the secret. Which key was used is logged (at
    /// `info`), never its value. The library reads `MARIMO_RS_SECRET` nowhere else, and the
    /// cache directory variables otherwise only to find the managed Python environment.
    ///
    /// # Errors
    ///
    /// [`SecretError`] when the installation secret is needed but cannot be read or made:
    /// there is no cache directory, the file is not a regular file, other users may read it,
    /// or it does not hold 32 bytes. A bad file is never replaced (tokens derived from it
    /// would change): the error says how to fix it.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes for a new secret.
    ///
    /// [`from_code_with_secret`]: Token::from_code_with_secret
    /// [`SecretError`]: crate::SecretError
    pub fn from_code_env(code: &str) -> Result<Self, SecretError> {
        Self::from_code_keyed(
            code,
            std::env::var_os(SECRET_ENV),
            crate::notebook::python::cache_dir(),
        )
    }

    /// [`from_code_env`](Token::from_code_env) with the environment read by the caller.
    fn from_code_keyed(
        code: &str,
        env_secret: Option<std::ffi::OsString>,
        cache_dir: Option<std::path::PathBuf>,
    ) -> Result<Self, SecretError> {
        if let Some(secret) = env_secret.filter(|secret| !secret.is_empty()) {
            tracing::info!("run token derived from the code, keyed by {SECRET_ENV}");
            return Ok(Self::from_code_with_secret(code, secret.as_encoded_bytes()));
        }
        let dir = cache_dir.ok_or(SecretError::NoCacheDir)?;
        let secret = secret::load_or_create(&dir)?;
        tracing::info!(
            path = %dir.join(secret::FILE_NAME).display(),
            "run token derived from the code, keyed by the installation secret"
        );
        Ok(Self::from_code_with_secret(code, &secret))
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

/// `N` random bytes (see [`fill_random`]), as URL-safe base64 without padding.
///
/// # Panics
///
/// If the operating system cannot provide random bytes.
pub(crate) fn random_b64url<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
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
    fn env_tokens_use_the_given_secret_else_the_installation_secret() {
        let code = "import marimo\n";
        let cache = tempfile::tempdir().unwrap();
        let keyed = |env: Option<&str>| {
            Token::from_code_keyed(code, env.map(Into::into), Some(cache.path().to_owned()))
                .unwrap()
                .expose_secret()
                .to_owned()
        };
        assert_eq!(
            keyed(Some("server-secret")),
            Token::from_code_with_secret(code, b"server-secret").expose_secret()
        );
        assert!(
            !cache.path().join(secret::FILE_NAME).exists(),
            "no installation secret is made when a secret is given"
        );
        let installation = keyed(None);
        let secret = std::fs::read(cache.path().join(secret::FILE_NAME)).unwrap();
        assert_eq!(
            installation,
            Token::from_code_with_secret(code, &secret).expose_secret()
        );
        assert_ne!(installation, Token::from_code(code).expose_secret());
        assert_eq!(
            keyed(Some("")),
            installation,
            "an empty secret is no secret"
        );
        assert_eq!(keyed(None), installation, "stable");
        assert!(matches!(
            Token::from_code_keyed(code, None, None),
            Err(SecretError::NoCacheDir)
        ));
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
