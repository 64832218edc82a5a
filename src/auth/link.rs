//! One-time sign-in links, `{base}/auth/sign-in?code=…`: what a program opens in a browser
//! instead of a URL with the token, which would stay in the opener's command line (visible in
//! `ps`) and in the browser's history.
//!
//! A code is 256 random bits, valid once and for at most a minute; only its SHA-256 digest is
//! kept, and at most [`MAX_PENDING`] codes wait at once (minting one more forgets the oldest).
//! A `GET` with a pending code is answered with a `303` to the page the link was made for,
//! setting the session cookie, so the code leaves the address bar at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::layer::Config;
use super::login;
use super::service::too_many_requests;
use super::token::random_b64url;
use crate::response::{method_not_allowed, no_store};
use crate::sync::lock;
use crate::{audit, Body};

/// The path of the sign-in link, relative to the service root.
pub(crate) const SIGN_IN_PATH: &str = "/auth/sign-in";

/// The longest a link stays valid.
pub(crate) const MAX_VALID: Duration = Duration::from_secs(60);

/// Most links waiting to be used at once.
pub(crate) const MAX_PENDING: usize = 16;

/// Random bytes in a code: 256 bits, 43 base64 characters.
const CODE_BYTES: usize = 32;

/// The query parameter that carries the code.
const CODE_PARAM: &str = "code";

/// The links minted and not yet used or expired, shared by every clone of one layer.
#[derive(Default)]
pub(crate) struct SignInLinks {
    pending: Mutex<Vec<Pending>>,
}

struct Pending {
    digest: [u8; 32],
    expires: Instant,
    /// Where the link leads: a path checked by [`login::is_safe_next`].
    next: String,
}

impl SignInLinks {
    /// A new code leading to `next`, valid for `valid_for` (at most [`MAX_VALID`]) from `now`.
    pub(crate) fn mint(&self, next: &str, valid_for: Duration, now: Instant) -> String {
        let code = random_b64url::<CODE_BYTES>();
        let mut pending = lock(&self.pending);
        pending.retain(|link| link.expires > now);
        if pending.len() >= MAX_PENDING {
            pending.remove(0);
        }
        pending.push(Pending {
            digest: Sha256::digest(code.as_bytes()).into(),
            expires: now + valid_for.min(MAX_VALID),
            next: next.to_owned(),
        });
        code
    }

    /// Where the link with `code` leads, if it is pending at `now`; it is used up either way.
    pub(crate) fn redeem(&self, code: &[u8], now: Instant) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(code).into();
        let mut pending = lock(&self.pending);
        pending.retain(|link| link.expires > now);
        // Every pending digest is compared, in constant time each.
        let mut found = None;
        for (index, link) in pending.iter().enumerate() {
            if bool::from(link.digest.ct_eq(&digest)) {
                found = Some(index);
            }
        }
        found.map(|index| pending.remove(index).next)
    }

    /// How many links are waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// Serves `{base}/auth/sign-in`.
pub(crate) fn handle(config: &Config, req: &Request<Body>) -> Response<Body> {
    if req.method() != Method::GET {
        // Not even `HEAD`: a link checker must not use the link up.
        return no_store(method_not_allowed("GET"));
    }
    let code = req.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == CODE_PARAM)
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty())
    });
    let Some(code) = code else {
        return refused();
    };
    let redeemed = config.attempt(config.client_ip(req), audit::Method::SignInLink, || {
        config.links.redeem(code.as_bytes(), Instant::now())
    });
    let next = match redeemed {
        Ok(Some(next)) => next,
        Ok(None) => {
            tracing::debug!("a sign-in link that is used, expired or unknown");
            return refused();
        }
        Err(wait) => return too_many_requests(wait),
    };
    config.signed_in_redirect(req, config.location(&next), audit::Method::SignInLink)
}

/// `403` with the login form: the link cannot be used (any more).
fn refused() -> Response<Body> {
    let mut response = login::page(
        "/",
        Some("This sign-in link has expired or was already used: sign in with the access token."),
    );
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_only_within_its_validity() {
        let links = SignInLinks::default();
        let start = Instant::now();
        let code = links.mint("/a/", Duration::from_secs(60), start);
        assert_eq!(code.len(), 43);
        assert_eq!(links.redeem(b"not-a-code", start), None);
        assert_eq!(
            links.redeem(code.as_bytes(), start + Duration::from_secs(59)),
            Some("/a/".to_owned())
        );
        assert_eq!(links.redeem(code.as_bytes(), start), None, "used up");

        let code = links.mint("/b/", Duration::from_secs(60), start);
        assert_eq!(
            links.redeem(code.as_bytes(), start + Duration::from_secs(60)),
            None,
            "expired after 60 s"
        );
        assert_eq!(links.len(), 0, "expired links are forgotten");

        let capped = links.mint("/c/", Duration::from_secs(3600), start);
        assert_eq!(
            links.redeem(capped.as_bytes(), start + Duration::from_secs(61)),
            None,
            "never valid for more than 60 s"
        );
        let short = links.mint("/d/", Duration::from_millis(10), start);
        assert_eq!(
            links.redeem(short.as_bytes(), start + Duration::from_millis(10)),
            None
        );
    }

    #[test]
    fn codes_are_distinct_and_bounded_in_number() {
        let links = SignInLinks::default();
        let now = Instant::now();
        let codes: Vec<String> = (0..MAX_PENDING + 4)
            .map(|i| links.mint(&format!("/{i}"), MAX_VALID, now))
            .collect();
        assert_eq!(links.len(), MAX_PENDING);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
        // The oldest were forgotten; the newest still work.
        assert_eq!(links.redeem(codes[0].as_bytes(), now), None);
        let last = MAX_PENDING + 3;
        assert_eq!(
            links.redeem(codes[last].as_bytes(), now),
            Some(format!("/{last}"))
        );
    }
}
