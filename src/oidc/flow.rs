//! The state of one sign-in between the redirect to the provider and the callback, kept in a
//! short-lived signed cookie in the browser that started it.
//!
//! Value format (ASCII, no `;`, `,`, space or quote):
//!
//! ```text
//! o1.<payload>.<mac>
//! payload = base64url_nopad(JSON {"s": state, "n": nonce, "v": PKCE verifier,
//!                                 "t": next, "e": expiry (Unix seconds)})
//! mac     = base64url_nopad(HMAC-SHA256(key, "marimo-rs/oidc-flow/v1\0" || payload))
//! ```
//!
//! `state`, `nonce` and the verifier are 32 random bytes each, base64url (43 characters). The
//! cookie is signed, not encrypted: it goes only to the browser that signs in, which learns
//! nothing it could not already use, and a changed value fails the MAC. The domain string
//! keeps these MACs apart from any other use of the caller's key (session cookies use
//! `marimo-rs/session/v1\0`).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{decode_tag, random_b64url};

type HmacSha256 = Hmac<Sha256>;

const DOMAIN: &[u8] = b"marimo-rs/oidc-flow/v1\0";
const VERSION: &str = "o1";
/// Random bytes in each of `state`, `nonce` and the PKCE verifier (43 base64url characters).
const RANDOM_BYTES: usize = 32;
/// Longest cookie value looked at: browsers keep 4 KiB per cookie, name included.
const MAX_VALUE_LEN: usize = 4000;
/// Longest `next` carried; a longer one is replaced by `/` (the login form's rule for unsafe
/// values) so the cookie always fits.
pub(super) const MAX_NEXT_LEN: usize = 2048;

/// The key flow cookies are signed with (the caller's cookie key).
#[derive(Clone)]
pub(crate) struct FlowKey(HmacSha256);

impl FlowKey {
    /// A key of any length; the caller's session-cookie key is the natural choice.
    pub(crate) fn new(key: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlowKey([redacted])")
    }
}

/// One sign-in in progress.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Flow {
    #[serde(rename = "s")]
    pub(super) state: String,
    #[serde(rename = "n")]
    pub(super) nonce: String,
    #[serde(rename = "v")]
    pub(super) verifier: String,
    #[serde(rename = "t")]
    pub(super) next: String,
    #[serde(rename = "e")]
    pub(super) expiry: u64,
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("next", &self.next)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Why a flow cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// Not ours: malformed, or the MAC does not match.
    Invalid,
    /// Ours, but older than the sign-in lifetime.
    Expired,
}

impl Flow {
    /// A fresh sign-in with random `state`, `nonce` and PKCE verifier.
    pub(super) fn new(next: &str, expiry: u64) -> Self {
        let next = if next.len() <= MAX_NEXT_LEN && crate::auth::is_safe_next(next) {
            next
        } else {
            "/"
        };
        Self {
            state: random_b64url::<RANDOM_BYTES>(),
            nonce: random_b64url::<RANDOM_BYTES>(),
            verifier: random_b64url::<RANDOM_BYTES>(),
            next: next.to_owned(),
            expiry,
        }
    }

    /// The PKCE `code_challenge` for `code_challenge_method=S256` (RFC 7636 §4.2):
    /// `BASE64URL(SHA256(ASCII(verifier)))`.
    pub(super) fn code_challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// The cookie value.
    pub(super) fn seal(&self, key: &FlowKey) -> String {
        let json = serde_json::to_vec(self).expect("a flow always serializes");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = key.0.clone();
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{VERSION}.{payload}.{tag}")
    }

    /// The flow a cookie value carries, if `key` signed it and it has not expired at `now`.
    pub(super) fn open(key: &FlowKey, value: &[u8], now: u64) -> Result<Self, Rejected> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Rejected::Invalid);
        }
        let value = std::str::from_utf8(value).map_err(|_| Rejected::Invalid)?;
        let mut parts = value.split('.');
        let (Some(VERSION), Some(payload), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejected::Invalid);
        };
        let tag = decode_tag(tag).ok_or(Rejected::Invalid)?;
        let mut mac = key.0.clone();
        mac.update(DOMAIN);
        mac.update(payload.as_bytes());
        mac.verify_slice(&tag).map_err(|_| Rejected::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Rejected::Invalid)?;
        let flow: Self = serde_json::from_slice(&json).map_err(|_| Rejected::Invalid)?;
        if flow.expiry <= now {
            return Err(Rejected::Expired);
        }
        Ok(flow)
    }

    /// Whether `state` (from the callback) is this flow's, compared in constant time over
    /// fixed-length digests.
    pub(super) fn has_state(&self, state: &str) -> bool {
        same_secret(&self.state, state)
    }
}

/// Constant-time equality of two strings that hold random values, via their SHA-256 digests
/// so the comparison's length is fixed whatever the input.
pub(super) fn same_secret(a: &str, b: &str) -> bool {
    let a: [u8; 32] = Sha256::digest(a.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(b.as_bytes()).into();
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey::new(b"flow key for tests")
    }

    #[test]
    fn seal_then_open_round_trips() {
        let flow = Flow::new("/dash/?x=1", 2_000);
        assert_eq!(flow.state.len(), 43);
        assert_ne!(flow.state, flow.nonce);
        assert_ne!(flow.nonce, flow.verifier);
        let value = flow.seal(&key());
        assert!(value.starts_with("o1."), "{value}");
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "cookie-safe: {value}"
        );
        assert_eq!(Flow::open(&key(), value.as_bytes(), 1_999), Ok(flow));
    }

    #[test]
    fn expired_tampered_and_foreign_values_are_refused() {
        let flow = Flow::new("/", 2_000);
        let value = flow.seal(&key());
        assert_eq!(
            Flow::open(&key(), value.as_bytes(), 2_000),
            Err(Rejected::Expired)
        );
        assert_eq!(
            Flow::open(&FlowKey::new(b"another key"), value.as_bytes(), 1_000),
            Err(Rejected::Invalid)
        );
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                Flow::open(&key(), &bytes, 1_000),
                Err(Rejected::Invalid),
                "byte {i}"
            );
        }
        // A payload re-signed by nobody: a later expiry with the old MAC.
        let mut later = flow.clone();
        later.expiry = 9_000;
        let forged_payload = later.seal(&key());
        let old_tag = value.rsplit('.').next().unwrap();
        let forged = format!("{}.{old_tag}", forged_payload.rsplit_once('.').unwrap().0);
        assert_eq!(
            Flow::open(&key(), forged.as_bytes(), 1_000),
            Err(Rejected::Invalid)
        );
        for bad in [
            "",
            "o1",
            "o1..",
            "o2.e30.AAAA",
            &format!("{value}.x"),
            &"o".repeat(5000),
        ] {
            assert_eq!(
                Flow::open(&key(), bad.as_bytes(), 1_000),
                Err(Rejected::Invalid),
                "{bad}"
            );
        }
    }

    #[test]
    fn unsafe_or_long_next_becomes_root() {
        for next in [
            "//evil.example/",
            "https://evil.example/",
            "/a\\b",
            "no-slash",
        ] {
            assert_eq!(Flow::new(next, 1).next, "/", "{next}");
        }
        let long = format!("/{}", "a".repeat(MAX_NEXT_LEN));
        assert_eq!(Flow::new(&long, 1).next, "/");
        let fits = format!("/{}", "a".repeat(MAX_NEXT_LEN - 1));
        let flow = Flow::new(&fits, 1);
        assert_eq!(flow.next, fits);
        assert!(
            flow.seal(&key()).len() <= MAX_VALUE_LEN,
            "the longest next still fits"
        );
    }

    #[test]
    fn pkce_challenge_follows_rfc_7636_appendix_b() {
        let mut flow = Flow::new("/", 1);
        flow.verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into();
        assert_eq!(
            flow.code_challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn state_comparison() {
        let flow = Flow::new("/", 1);
        assert!(flow.has_state(&flow.state.clone()));
        assert!(!flow.has_state(&flow.nonce));
        assert!(!flow.has_state(""));
        assert!(!flow.has_state(&flow.state[..42]));
    }

    #[test]
    fn debug_hides_the_flow_secrets() {
        let flow = Flow::new("/x", 1);
        let debug = format!("{flow:?} {:?}", key());
        for secret in [&flow.state, &flow.nonce, &flow.verifier] {
            assert!(!debug.contains(secret.as_str()), "{debug}");
        }
        assert!(!debug.contains("flow key for tests"), "{debug}");
    }
}
