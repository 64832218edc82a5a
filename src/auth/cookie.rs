//! The session cookie: a signed, expiring statement "this browser signed in as this user".
//!
//! Value format (all ASCII, no `;`, `,`, space or quote):
//!
//! ```text
//! v2.<kind>.<expiry>.<payload>.<mac>
//! kind    = "t" (signed in with the token) or "p" (with the identity provider)
//! expiry  = seconds since the Unix epoch, decimal
//! payload = base64url_nopad(JSON {"i": session id, "t": issued at (Unix milliseconds),
//!                                 "n": name, "e": email, "g": [groups], "c": {claims}})
//! mac     = base64url_nopad(HMAC-SHA256(key, "marimo-rs/session/v2\0"
//!                                            || binding           (32 bytes)
//!                                            || kind              (1 byte)
//!                                            || expiry            (u64, big-endian)
//!                                            || payload))
//! binding = SHA-256(token) for "t"; for "p", SHA-256 of the provider's issuer and the client
//!           id (see the auth layer's OpenID Connect sign-in)
//! ```
//!
//! The cookie holds no token; because the MAC covers the binding, changing the token (or the
//! identity provider) invalidates every cookie made with the old one. The session id (16
//! random bytes) is what a sign-out revokes. The payload is signed, not encrypted: the
//! browser that holds the cookie may read its own name, email and groups; the cookie is
//! `HttpOnly`, so the page's scripts cannot. A value is at most [`MAX_SESSION_LEN`] bytes, so
//! that name and value stay under the 4096 bytes browsers keep per cookie: what does not fit
//! is left out (see [`CookieKeys::mint_session`]).
//!
//! Cookies of the first format, `v1.<expiry>.base64url(username).<mac>` (the MAC over
//! `"marimo-rs/session/v1\0" || SHA-256(token) || expiry || username`), are still accepted,
//! as token sessions without a session id, so an upgrade signs nobody out.
//!
//! Keys are a list: the first signs, all verify (for rotation). The cookie's name is
//! `marimo_rs_session_` and 8 hex digits of `HMAC-SHA256(key, "marimo-rs/cookie-name/v1")`:
//! each key names its cookies. A rotated list looks for cookies under the name of every key
//! it accepts, so a cookie signed by an old key (and named after it) still counts, and strips
//! them all.
//!
//! A key derived from a server secret (shared by replicas) is
//! `HMAC-SHA256(key = secret, "marimo-rs/cookie-key/v1\0")`: see [`key_from_secret`].

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::revoke::Presented;
use crate::User;

type HmacSha256 = Hmac<Sha256>;

const SESSION_DOMAIN: &[u8] = b"marimo-rs/session/v1\0";
const SESSION_V2_DOMAIN: &[u8] = b"marimo-rs/session/v2\0";
const COOKIE_NAME_DOMAIN: &[u8] = b"marimo-rs/cookie-name/v1";
/// Domain separation for cookie keys derived from a server secret (run tokens use
/// `marimo-rs/run-token/v1\0`, so the two never share an input).
const COOKIE_KEY_DOMAIN: &[u8] = b"marimo-rs/cookie-key/v1\0";
const COOKIE_NAME_PREFIX: &str = "marimo_rs_session_";
const VERSION: &str = "v1";
const VERSION_2: &str = "v2";

/// Longest first-format cookie value looked at; anything longer is not ours.
const MAX_VALUE_LEN: usize = 1024;
/// Longest session cookie value made or looked at: with the name (26 bytes) and `=`, well
/// under the 4096 bytes browsers keep per cookie.
pub(crate) const MAX_SESSION_LEN: usize = 3900;
/// How many cookies with our name are tried per request.
const MAX_CANDIDATES: usize = 4;

/// The session cookie key a server secret stands for:
/// `HMAC-SHA256(key = secret, "marimo-rs/cookie-key/v1\0")`, 32 bytes.
pub(crate) fn key_from_secret(secret: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(COOKIE_KEY_DOMAIN);
    mac.finalize().into_bytes().into()
}

/// The signing keys, newest first, each already loaded into an HMAC state.
#[derive(Clone)]
pub(crate) struct CookieKeys {
    keys: Vec<HmacSha256>,
    /// The cookie name of each key, the signing key's first, without repeats.
    names: Vec<String>,
}

impl CookieKeys {
    /// One fresh random 32-byte key.
    #[cfg(test)]
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        super::token::fill_random(&mut key);
        Self::from_keys(&[&key])
    }

    /// `keys[0]` signs, every key verifies. `keys` must not be empty.
    pub(crate) fn from_keys(keys: &[&[u8]]) -> Self {
        let keys: Vec<HmacSha256> = keys
            .iter()
            .map(|key| HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
            .collect();
        let mut names: Vec<String> = Vec::with_capacity(keys.len());
        for key in &keys {
            let name = name_of(key);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Self { keys, names }
    }

    /// `marimo_rs_session_` and 8 hex digits of HMAC(signing key, "marimo-rs/cookie-name/v1").
    pub(crate) fn name(&self) -> &str {
        &self.names[0]
    }

    /// The names cookies are looked for under: the signing key's, then the other keys'.
    #[cfg(test)]
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// A first-format cookie value for `username`, valid until `expiry` (Unix seconds): no
    /// longer made, but accepted (see the module's documentation).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn mint(&self, token_digest: &[u8; 32], username: &str, expiry: u64) -> String {
        let mut state = self.keys[0].clone();
        feed(&mut state, token_digest, username, expiry);
        let mac = state.finalize().into_bytes();
        format!(
            "{VERSION}.{expiry}.{}.{}",
            URL_SAFE_NO_PAD.encode(username.as_bytes()),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The username of a valid, unexpired cookie value, or `None`.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn verify(&self, token_digest: &[u8; 32], value: &[u8], now: u64) -> Option<String> {
        self.verify_any(&[token_digest], value, now)
    }

    /// Like `verify`, for a cookie bound to any of `token_digests` (the token
    /// and the old tokens still accepted during a rotation).
    pub(crate) fn verify_any(
        &self,
        token_digests: &[&[u8; 32]],
        value: &[u8],
        now: u64,
    ) -> Option<String> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        let mut parts = value.split('.');
        let (version, expiry, user, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != VERSION || parts.next().is_some() {
            return None;
        }
        let expiry = unexpired(expiry, now)?;
        let tag = decode_tag(mac)?;
        let username = URL_SAFE_NO_PAD.decode(user).ok()?;
        let username = String::from_utf8(username).ok()?;
        let valid = self.keys.iter().any(|key| {
            token_digests.iter().any(|token_digest| {
                let mut state = key.clone();
                feed(&mut state, token_digest, &username, expiry);
                state.verify_slice(&tag).is_ok()
            })
        });
        valid.then_some(username)
    }

    /// The username of the first valid session cookie among the `Cookie` headers.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn find_valid(
        &self,
        headers: &HeaderMap,
        token_digest: &[u8; 32],
        now: u64,
    ) -> Option<String> {
        self.find_valid_any(headers, &[token_digest], now)
    }

    /// Like `find_valid`, for cookies bound to any of `token_digests`.
    /// Cookies are looked for under every accepted key's name.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn find_valid_any(
        &self,
        headers: &HeaderMap,
        token_digests: &[&[u8; 32]],
        now: u64,
    ) -> Option<String> {
        self.session_values(headers)
            .find_map(|value| self.verify_any(token_digests, value, now))
    }

    /// The value of a cookie piece named after one of our keys.
    fn our_value<'a>(&self, piece: &'a [u8]) -> Option<&'a [u8]> {
        self.names
            .iter()
            .find_map(|name| value_named(piece, name.as_bytes()))
    }

    /// Removes every cookie with one of our names from the `Cookie` headers, keeping the others.
    pub(crate) fn strip(&self, headers: &mut HeaderMap) {
        let ours = |piece: &[u8]| self.our_value(piece).is_some();
        let mut found = false;
        let mut kept: Vec<HeaderValue> = Vec::new();
        for header in headers.get_all(COOKIE) {
            let bytes = header.as_bytes();
            if !cookie_pieces(bytes).any(ours) {
                kept.push(header.clone());
                continue;
            }
            found = true;
            let mut rest = Vec::new();
            for piece in cookie_pieces(bytes).filter(|piece| !ours(piece)) {
                if !rest.is_empty() {
                    rest.extend_from_slice(b"; ");
                }
                rest.extend_from_slice(piece);
            }
            if !rest.is_empty() {
                if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(rest)) {
                    kept.push(value);
                }
            }
        }
        if found {
            headers.remove(COOKIE);
            for value in kept {
                headers.append(COOKIE, value);
            }
        }
    }
}

/// How a session was signed in, which decides what its MAC is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// With the token (login form, `access_token`, a one-time link): bound to the token.
    Token,
    /// With the identity provider: bound to the provider and client.
    Provider,
}

impl Kind {
    fn letter(self) -> &'static str {
        match self {
            Kind::Token => "t",
            Kind::Provider => "p",
        }
    }
}

/// A signed-in session, as its cookie carries it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Session {
    /// 16 random bytes, base64url (22 characters); empty for a first-format cookie.
    pub(crate) id: String,
    /// When it was signed in, Unix milliseconds (0 when unknown: a first-format cookie).
    pub(crate) issued_ms: u64,
    /// When it ends, Unix seconds.
    pub(crate) expiry: u64,
    pub(crate) kind: Kind,
    pub(crate) user: User,
}

impl Session {
    /// The session as the revocations check it.
    pub(crate) fn presented(&self) -> Presented<'_> {
        Presented {
            id: &self.id,
            user: self.user.name(),
            issued_ms: self.issued_ms,
        }
    }
}

/// The JSON inside a session cookie (short keys: the cookie's room is small).
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "t")]
    issued_ms: u64,
    #[serde(rename = "n")]
    name: String,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Map::is_empty")]
    claims: Map<String, Value>,
}

/// What [`CookieKeys::mint_session`] had to leave out to stay within [`MAX_SESSION_LEN`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LeftOut {
    /// Every extra claim (they go first).
    pub(crate) claims: bool,
    /// How many groups (those the access rules name are kept longest).
    pub(crate) groups: usize,
}

impl CookieKeys {
    /// A cookie value for `session`, bound to `binding`. When the user's groups and claims do
    /// not fit in [`MAX_SESSION_LEN`], the claims are left out first, then groups from the
    /// end of the list, those in `keep` (the groups access rules name) last; the
    /// name and email always stay (a name or email too long to fit is cut short instead, in
    /// the absurd case that they are). Says what was left out.
    pub(crate) fn mint_session(
        &self,
        binding: &[u8; 32],
        session: &Session,
        keep: &[String],
    ) -> (String, LeftOut) {
        let user = &session.user;
        let mut payload = Payload {
            id: session.id.clone(),
            issued_ms: session.issued_ms,
            name: user.name().to_owned(),
            email: user.email().map(str::to_owned),
            groups: user.groups().to_vec(),
            claims: user.claims().clone(),
        };
        let mut left_out = LeftOut::default();
        loop {
            let value = self.seal_v2(binding, session.kind, session.expiry, &payload);
            if value.len() <= MAX_SESSION_LEN {
                return (value, left_out);
            }
            if !payload.claims.is_empty() {
                payload.claims.clear();
                left_out.claims = true;
            } else if !payload.groups.is_empty() {
                // The last group no rule names, else the last one: the order stays the
                // provider's.
                let last = payload
                    .groups
                    .iter()
                    .rposition(|group| !keep.contains(group))
                    .unwrap_or(payload.groups.len() - 1);
                payload.groups.remove(last);
                left_out.groups += 1;
            } else {
                // Only a name or email of kilobytes gets here: cut them to fit.
                truncate_chars(&mut payload.name, 256);
                if let Some(email) = &mut payload.email {
                    truncate_chars(email, 256);
                }
                return (
                    self.seal_v2(binding, session.kind, session.expiry, &payload),
                    left_out,
                );
            }
        }
    }

    fn seal_v2(&self, binding: &[u8; 32], kind: Kind, expiry: u64, payload: &Payload) -> String {
        let json = serde_json::to_vec(payload).expect("a session payload always serializes");
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut state = self.keys[0].clone();
        feed_v2(&mut state, binding, kind, expiry, &payload);
        let mac = URL_SAFE_NO_PAD.encode(state.finalize().into_bytes());
        format!("{VERSION_2}.{}.{expiry}.{payload}.{mac}", kind.letter())
    }

    /// The session of a valid, unexpired cookie value: a `v2` cookie whose MAC one of the keys
    /// made over one of the `bindings(kind)`, or a first-format cookie bound to one of
    /// `bindings(Kind::Token)`.
    pub(crate) fn open_session<'b>(
        &self,
        value: &[u8],
        bindings: impl Fn(Kind) -> &'b [[u8; 32]],
        now: u64,
    ) -> Option<Session> {
        if value.len() > MAX_SESSION_LEN {
            return None;
        }
        if !value.starts_with(b"v2.") {
            let digests: Vec<&[u8; 32]> = bindings(Kind::Token).iter().collect();
            let name = self.verify_any(&digests, value, now)?;
            return Some(Session {
                id: String::new(),
                issued_ms: 0,
                expiry: 0,
                kind: Kind::Token,
                user: User::new(name),
            });
        }
        let value = std::str::from_utf8(value).ok()?;
        let mut parts = value.split('.');
        let (Some(VERSION_2), Some(kind), Some(expiry), Some(payload), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        let kind = match kind {
            "t" => Kind::Token,
            "p" => Kind::Provider,
            _ => return None,
        };
        let expiry = unexpired(expiry, now)?;
        let tag = decode_tag(mac)?;
        let valid = self.keys.iter().any(|key| {
            bindings(kind).iter().any(|binding| {
                let mut state = key.clone();
                feed_v2(&mut state, binding, kind, expiry, payload);
                state.verify_slice(&tag).is_ok()
            })
        });
        if !valid {
            return None;
        }
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let payload: Payload = serde_json::from_slice(&json).ok()?;
        let mut user = User::new(payload.name);
        if let Some(email) = payload.email {
            user = user.with_email(email);
        }
        if !payload.groups.is_empty() {
            user = user.with_groups(payload.groups);
        }
        if !payload.claims.is_empty() {
            user = user.with_claims(payload.claims);
        }
        Some(Session {
            id: payload.id,
            issued_ms: payload.issued_ms,
            expiry,
            kind,
            user,
        })
    }

    /// The values of the session cookies among the `Cookie` headers (under any accepted
    /// key's name), at most [`MAX_CANDIDATES`].
    pub(crate) fn session_values<'h>(
        &'h self,
        headers: &'h HeaderMap,
    ) -> impl Iterator<Item = &'h [u8]> + 'h {
        headers
            .get_all(COOKIE)
            .iter()
            .flat_map(|header| cookie_pieces(header.as_bytes()))
            .filter_map(|piece| self.our_value(piece))
            .take(MAX_CANDIDATES)
    }
}

/// Session cookies verified already, by their exact value: a signed-in browser sends the same
/// cookie with every request, and comparing it with one that verified costs far less than
/// checking its MAC and reading its payload again. Only values [`CookieKeys::open_session`]
/// accepted go in (so filling it takes valid sessions), at most [`VERIFIED_PER_SHARD`] per
/// shard (a full shard is emptied); an entry is used only until its session expires, and
/// revocation is checked on every request whether the session came from here or not.
///
/// Each configuration of the auth layer has its own (a changed key or token starts empty).
#[derive(Default)]
pub(crate) struct Verified {
    shards: [std::sync::Mutex<HashMap<[u8; 32], (Box<[u8]>, std::sync::Arc<Session>)>>; 16],
}

/// Most sessions remembered per shard of [`Verified`].
const VERIFIED_PER_SHARD: usize = 256;

impl Verified {
    /// The key of a value: its last 32 bytes (the end of its MAC, for a `v2` value).
    fn key(value: &[u8]) -> Option<[u8; 32]> {
        value.len().checked_sub(32).map(|at| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&value[at..]);
            key
        })
    }

    fn shard(
        &self,
        key: &[u8; 32],
    ) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Box<[u8]>, std::sync::Arc<Session>)>> {
        crate::sync::lock(&self.shards[usize::from(key[0]) % self.shards.len()])
    }

    /// The session of `value` if it verified before and has not expired at `now`.
    pub(crate) fn get(&self, value: &[u8], now: u64) -> Option<std::sync::Arc<Session>> {
        let key = Self::key(value)?;
        let shard = self.shard(&key);
        let (known, session) = shard.get(&key)?;
        (**known == *value && session.expiry > now).then(|| session.clone())
    }

    /// Remembers that `value` verified as `session`.
    pub(crate) fn insert(&self, value: &[u8], session: std::sync::Arc<Session>) {
        let Some(key) = Self::key(value) else {
            return;
        };
        let mut shard = self.shard(&key);
        if shard.len() >= VERIFIED_PER_SHARD {
            shard.clear();
        }
        shard.insert(key, (value.into(), session));
    }
}

impl fmt::Debug for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified").finish_non_exhaustive()
    }
}

/// Cuts `text` to at most `max` characters.
fn truncate_chars(text: &mut String, max: usize) {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
    }
}

/// A cookie's expiry (1 to 20 decimal digits), if it is after `now`.
fn unexpired(text: &str, now: u64) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&expiry| expiry > now)
}

/// A cookie's MAC: 43 base64url characters, 32 bytes (also the OpenID Connect flow cookie's).
pub(crate) fn decode_tag(mac: &str) -> Option<[u8; 32]> {
    // The spare room lets longer input fail cleanly.
    let mut tag = [0u8; 48];
    match URL_SAFE_NO_PAD.decode_slice(mac, &mut tag) {
        Ok(32) => {
            let mut exact = [0u8; 32];
            exact.copy_from_slice(&tag[..32]);
            Some(exact)
        }
        _ => None,
    }
}

fn feed_v2(state: &mut HmacSha256, binding: &[u8; 32], kind: Kind, expiry: u64, payload: &str) {
    state.update(SESSION_V2_DOMAIN);
    state.update(binding);
    state.update(kind.letter().as_bytes());
    state.update(&expiry.to_be_bytes());
    state.update(payload.as_bytes());
}

/// `marimo_rs_session_` and 8 hex digits of HMAC(key, "marimo-rs/cookie-name/v1").
fn name_of(key: &HmacSha256) -> String {
    let mut mac = key.clone();
    mac.update(COOKIE_NAME_DOMAIN);
    let tag = mac.finalize().into_bytes();
    let mut name = String::with_capacity(COOKIE_NAME_PREFIX.len() + 8);
    name.push_str(COOKIE_NAME_PREFIX);
    for byte in &tag[..4] {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

fn feed(state: &mut HmacSha256, token_digest: &[u8; 32], username: &str, expiry: u64) {
    state.update(SESSION_DOMAIN);
    state.update(token_digest);
    state.update(&expiry.to_be_bytes());
    state.update(username.as_bytes());
}

/// The `name=value` pieces of one `Cookie` header, trimmed, empty ones skipped.
pub(super) fn cookie_pieces(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    header
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|piece| !piece.is_empty())
}

/// The value of a cookie piece whose name is `name` (spaces around `=` allowed).
fn value_named<'a>(piece: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = piece.strip_prefix(name)?.trim_ascii_start();
    rest.strip_prefix(b"=").map(<[u8]>::trim_ascii)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), from one reading of the
/// clock.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    fn session(user: User, kind: Kind) -> Session {
        Session {
            id: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
            issued_ms: 1_999_000,
            expiry: 2_000,
            kind,
            user,
        }
    }

    fn open(
        keys: &CookieKeys,
        value: &str,
        token: &[u8; 32],
        provider: &[u8; 32],
        now: u64,
    ) -> Option<Session> {
        let (token, provider) = ([*token], [*provider]);
        keys.open_session(
            value.as_bytes(),
            |kind| match kind {
                Kind::Token => &token[..],
                Kind::Provider => &provider[..],
            },
            now,
        )
    }

    #[test]
    fn sessions_round_trip_with_email_groups_and_claims() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let mut claims = Map::new();
        claims.insert("department".into(), Value::from("R&D"));
        let user = User::new("ada")
            .with_email("ada@example.com")
            .with_groups(["analysts", "admins"])
            .with_claims(claims);
        let minted = session(user, Kind::Provider);
        let (value, left_out) = keys.mint_session(&digest("p"), &minted, &[]);
        assert_eq!(left_out, LeftOut::default());
        assert!(value.starts_with("v2.p.2000."), "{value}");
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        let opened = open(&keys, &value, &digest("t"), &digest("p"), 1_999).unwrap();
        assert_eq!(opened, minted);
        // Expired, another binding, another key, or the kind swapped: refused.
        assert_eq!(open(&keys, &value, &digest("t"), &digest("p"), 2_000), None);
        assert_eq!(open(&keys, &value, &digest("t"), &digest("q"), 1), None);
        let other = CookieKeys::from_keys(&[b"k2"]);
        assert_eq!(open(&other, &value, &digest("t"), &digest("p"), 1), None);
        let swapped = value.replacen("v2.p.", "v2.t.", 1);
        assert_eq!(open(&keys, &swapped, &digest("p"), &digest("p"), 1), None);
        // Every single-character change breaks it.
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(
                open(&keys, &changed, &digest("t"), &digest("p"), 1),
                None,
                "{i}"
            );
        }
    }

    #[test]
    fn what_does_not_fit_is_left_out_claims_first_then_unnamed_groups() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let mut claims = Map::new();
        claims.insert("big".into(), Value::from("x".repeat(500)));
        let mut groups: Vec<String> = (0..300).map(|i| format!("group-number-{i:04}")).collect();
        groups.push("finance".into());
        let user = User::new("ada")
            .with_email("ada@example.com")
            .with_groups(groups)
            .with_claims(claims);
        let minted = session(user, Kind::Provider);
        let (value, left_out) = keys.mint_session(&digest("p"), &minted, &["finance".into()]);
        assert!(value.len() <= MAX_SESSION_LEN, "{}", value.len());
        assert!(left_out.claims);
        assert!(left_out.groups > 100, "{left_out:?}");
        let opened = open(&keys, &value, &digest("t"), &digest("p"), 1).unwrap();
        assert_eq!(opened.user.name(), "ada");
        assert_eq!(opened.user.email(), Some("ada@example.com"));
        assert!(opened.user.claims().is_empty());
        assert!(
            opened.user.in_group("finance"),
            "a group the rules name is kept"
        );
        assert_eq!(
            opened.user.groups()[0],
            "group-number-0000",
            "the first ones stay"
        );
        assert_eq!(
            opened.user.groups().last().map(String::as_str),
            Some("finance")
        );
        assert_eq!(opened.user.groups().len(), 301 - left_out.groups);
        // Absurdly long names are cut rather than making a cookie browsers drop.
        let huge = session(User::new("n".repeat(10_000)), Kind::Token);
        let (value, _) = keys.mint_session(&digest("t"), &huge, &[]);
        assert!(value.len() <= MAX_SESSION_LEN);
        assert_eq!(
            open(&keys, &value, &digest("t"), &digest("p"), 1)
                .unwrap()
                .user
                .name()
                .len(),
            256
        );
    }

    #[test]
    fn verified_values_are_remembered_exactly_and_until_they_expire() {
        let verified = Verified::default();
        let value = b"v2.p.2000.payload.0123456789abcdef0123456789abcdefXYZ";
        let session = std::sync::Arc::new(session(User::new("ada"), Kind::Provider));
        assert!(verified.get(value, 1).is_none());
        verified.insert(value, session.clone());
        assert_eq!(verified.get(value, 1_999).as_deref(), Some(&*session));
        assert!(verified.get(value, 2_000).is_none(), "expired");
        // Same end (the shard key), other bytes: not the value that verified.
        let forged = b"v2.p.9999.PAYLOAD.0123456789abcdef0123456789abcdefXYZ";
        assert!(verified.get(forged, 1).is_none());
        assert!(verified.get(b"short", 1).is_none());
        // Bounded: a full shard is emptied.
        for i in 0..VERIFIED_PER_SHARD * 16 * 2 {
            let other = format!("v2.p.2000.x.{i:0>40}");
            verified.insert(other.as_bytes(), session.clone());
        }
        let held: usize = verified
            .shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum();
        assert!(held <= VERIFIED_PER_SHARD * 16, "{held}");
    }

    #[test]
    fn first_format_cookies_open_as_token_sessions_without_an_id() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let value = keys.mint(&digest("t"), "ada", 2_000);
        let opened = open(&keys, &value, &digest("t"), &digest("p"), 1).unwrap();
        assert_eq!(opened.user.name(), "ada");
        assert_eq!(
            (opened.id.as_str(), opened.issued_ms, opened.kind),
            ("", 0, Kind::Token)
        );
        assert_eq!(open(&keys, &value, &digest("other"), &digest("t"), 1), None);
    }

    #[test]
    fn mint_then_verify_round_trips_the_username() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let value = keys.mint(&digest("t"), "ada", 2_000);
        assert!(value.starts_with("v1.2000.YWRh."), "{value}");
        assert_eq!(
            keys.verify(&digest("t"), value.as_bytes(), 1_999),
            Some("ada".to_owned())
        );
    }

    #[test]
    fn expired_tampered_foreign_and_other_token_cookies_fail() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let value = keys.mint(&digest("t"), "user", 2_000);
        assert_eq!(keys.verify(&digest("t"), value.as_bytes(), 2_000), None);
        assert_eq!(keys.verify(&digest("other"), value.as_bytes(), 1_000), None);
        let other = CookieKeys::from_keys(&[b"k2"]);
        assert_eq!(other.verify(&digest("t"), value.as_bytes(), 1_000), None);
        // A longer expiry or another user with the old MAC.
        let longer = value.replacen("2000", "9000", 1);
        assert_eq!(keys.verify(&digest("t"), longer.as_bytes(), 1_000), None);
        let admin = value.replacen(".dXNlcg.", ".YWRtaW4.", 1);
        assert_ne!(admin, value);
        assert_eq!(keys.verify(&digest("t"), admin.as_bytes(), 1_000), None);
        // Every single-character change breaks it.
        for i in 0..value.len() {
            let mut bytes = value.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(keys.verify(&digest("t"), &bytes, 1_000), None, "{i}");
        }
    }

    #[test]
    fn malformed_values_are_rejected() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let good = keys.mint(&digest("t"), "user", 2_000);
        let long = "v".repeat(5000);
        for bad in [
            "",
            "v1",
            "v1.",
            "v1.2000",
            "v1.2000.dXNlcg",
            "v2.2000.dXNlcg.AAAA",
            "v1.-5.dXNlcg.AAAA",
            "v1.+5.dXNlcg.AAAA",
            "v1.99999999999999999999999.dXNlcg.AAAA",
            "v1.2000.!!!.AAAA",
            "v1.2000.dXNlcg.!!!",
            &format!("{good}.extra"),
            &long,
        ] {
            assert_eq!(
                keys.verify(&digest("t"), bad.as_bytes(), 1_000),
                None,
                "{bad}"
            );
        }
        assert_eq!(keys.verify(&digest("t"), b"v1.\xff.\x00.\x80", 1_000), None);
    }

    #[test]
    fn every_key_verifies_and_the_first_signs() {
        let old = CookieKeys::from_keys(&[b"old"]);
        let rotated = CookieKeys::from_keys(&[b"new", b"old"]);
        let from_old = old.mint(&digest("t"), "user", 2_000);
        assert!(rotated
            .verify(&digest("t"), from_old.as_bytes(), 1)
            .is_some());
        let from_new = rotated.mint(&digest("t"), "user", 2_000);
        assert!(old.verify(&digest("t"), from_new.as_bytes(), 1).is_none());
        assert_eq!(
            rotated.name(),
            CookieKeys::from_keys(&[b"new"]).name(),
            "the signing key names the cookie"
        );
    }

    #[test]
    fn rotated_keys_find_cookies_under_every_accepted_name() {
        let old = CookieKeys::from_keys(&[b"old"]);
        let rotated = CookieKeys::from_keys(&[b"new", b"old", b"new"]);
        assert_eq!(
            rotated.names(),
            [rotated.name(), old.name()],
            "one name per key"
        );
        assert_ne!(rotated.name(), old.name());
        let from_old = old.mint(&digest("t"), "ada", 2_000);
        let mut headers = HeaderMap::new();
        let cookie = format!("a=1; {}={from_old}; b=2", old.name());
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        assert_eq!(
            rotated.find_valid(&headers, &digest("t"), 1_000),
            Some("ada".to_owned()),
            "a cookie named after an old key is still found"
        );
        let only_new = CookieKeys::from_keys(&[b"new"]);
        assert_eq!(only_new.find_valid(&headers, &digest("t"), 1_000), None);
        let from_new = rotated.mint(&digest("t"), "bob", 2_000);
        headers.append(
            COOKIE,
            HeaderValue::from_str(&format!("{}={from_new}", rotated.name())).unwrap(),
        );
        rotated.strip(&mut headers);
        let left: Vec<&str> = headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            left,
            ["a=1; b=2"],
            "cookies under every accepted name are stripped"
        );
    }

    #[test]
    fn cookies_bound_to_an_old_token_verify_when_it_is_listed() {
        let keys = CookieKeys::from_keys(&[b"k"]);
        let old_token = keys.mint(&digest("old"), "ada", 2_000);
        assert_eq!(keys.verify(&digest("new"), old_token.as_bytes(), 1), None);
        assert_eq!(
            keys.verify_any(&[&digest("new"), &digest("old")], old_token.as_bytes(), 1),
            Some("ada".to_owned())
        );
        assert_eq!(keys.verify_any(&[], old_token.as_bytes(), 1), None);
    }

    #[test]
    fn keys_from_secrets_follow_the_documented_derivation() {
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(b"marimo-rs/cookie-key/v1\0");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key_from_secret(b"s3cret"), expected);
        assert_ne!(key_from_secret(b"s3cret"), key_from_secret(b"other"));
        // Not the run token's derivation: the domains differ.
        let mut run = HmacSha256::new_from_slice(b"s3cret").unwrap();
        run.update(b"marimo-rs/run-token/v1\0");
        assert_ne!(run.finalize().into_bytes()[..], expected[..]);
        // Pinned (computed independently): replicas of different releases must agree.
        let pinned = key_from_secret(b"marimo-rs");
        let hex: String = pinned.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "876cd1be454e4ce21bbf7861c21841d44b6d2f404d7f138fe51031dd733bfa42"
        );
        assert_eq!(
            CookieKeys::from_keys(&[&pinned]).name(),
            "marimo_rs_session_f84eb422"
        );
    }

    #[test]
    fn names_depend_on_the_key_only() {
        let a = CookieKeys::from_keys(&[b"k1"]);
        let b = CookieKeys::from_keys(&[b"k2"]);
        assert_ne!(a.name(), b.name());
        assert_eq!(a.name(), CookieKeys::from_keys(&[b"k1"]).name());
        assert!(a.name().starts_with("marimo_rs_session_"));
        assert_eq!(a.name().len(), "marimo_rs_session_".len() + 8);
        assert_ne!(CookieKeys::random().name(), CookieKeys::random().name());
    }

    #[test]
    fn finds_and_strips_only_our_cookie() {
        let keys = CookieKeys::from_keys(&[b"k1"]);
        let value = keys.mint(&digest("t"), "user", 2_000);
        let name = keys.name().to_owned();
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        headers.append(
            COOKIE,
            HeaderValue::from_str(&format!(
                "b=2; {name}=garbage; {name}x=longer; {name} = {value};c=3"
            ))
            .unwrap(),
        );
        assert_eq!(
            keys.find_valid(&headers, &digest("t"), 1_000),
            Some("user".to_owned())
        );
        keys.strip(&mut headers);
        let left: Vec<&str> = headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1", format!("b=2; {name}x=longer; c=3").as_str()]);

        let mut only_ours = HeaderMap::new();
        only_ours.insert(COOKIE, HeaderValue::from_str(&format!("{name}=x")).unwrap());
        keys.strip(&mut only_ours);
        assert!(only_ours.get(COOKIE).is_none());

        let mut untouched = HeaderMap::new();
        untouched.insert(COOKIE, HeaderValue::from_bytes(b"z=\xff; y").unwrap());
        keys.strip(&mut untouched);
        assert_eq!(untouched.get(COOKIE).unwrap().as_bytes(), b"z=\xff; y");
    }
}
