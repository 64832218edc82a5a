//! Credentials other than the session cookie: `Authorization` headers and `?access_token=`.
//!
//! Everything here reads hostile input: no panics, no allocation proportional to anything but
//! the (bounded) header, and every value that does not parse is simply "no credential".

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::header::{HeaderMap, AUTHORIZATION};

use super::token::Token;

/// The name of the query parameter that carries the token.
pub(crate) const ACCESS_TOKEN: &str = "access_token";

/// The identity given to credentials that carry no username.
pub(crate) const DEFAULT_USER: &str = "user";

/// Longest `Authorization` header looked at.
const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// Standard base64, padding optional (some clients drop it).
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The identity proven by the `Authorization` header, if it holds the token.
///
/// `Bearer TOKEN` proves [`DEFAULT_USER`]; `Basic base64(name:TOKEN)` proves `name`, which
/// must be non-empty UTF-8. Scheme names are case-insensitive. A request with several
/// `Authorization` headers proves nothing: which one a server or proxy reads varies.
pub(crate) fn from_authorization(headers: &HeaderMap, token: &Token) -> Option<String> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.as_bytes();
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return token.matches(rest).then(|| DEFAULT_USER.to_owned());
    }
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = BASIC_BASE64.decode(rest).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let (username, password) = (&decoded[..colon], &decoded[colon + 1..]);
    // Check the password first and unconditionally, so a bad username costs the same time.
    let password_ok = token.matches(password);
    if username.is_empty() || !password_ok {
        return None;
    }
    String::from_utf8(username.to_vec()).ok()
}

/// The first `access_token` value of a query string (decoded as a form would be).
pub(crate) fn access_token(query: &str) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == ACCESS_TOKEN)
        .map(|(_, value)| value)
}

/// The query string without any `access_token` parameter, other parameters byte for byte;
/// `None` if there was none to remove. An empty result means "no query".
pub(crate) fn strip_access_token(query: &str) -> Option<String> {
    let is_token = |piece: &&str| {
        form_urlencoded::parse(piece.as_bytes())
            .next()
            .is_some_and(|(key, _)| key == ACCESS_TOKEN)
    };
    if !query.split('&').any(|piece| is_token(&piece)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|piece| !is_token(piece)).collect();
    Some(kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use http::HeaderValue;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    fn basic(userpass: &[u8]) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(userpass)).into_bytes()
    }

    #[test]
    fn basic_and_bearer_prove_identities() {
        let token = Token::new("s3cret");
        let check = |value: &[u8]| from_authorization(&with(&[value]), &token);
        assert_eq!(check(&basic(b"ada:s3cret")), Some("ada".into()));
        assert_eq!(check(&basic(b"a:b:s3cret")), None, "first colon splits");
        assert_eq!(check(&basic(b"ada:s3c:ret")), None);
        assert_eq!(check(b"basic YWRhOnMzY3JldA=="), Some("ada".into()));
        assert_eq!(
            check(b"BASIC YWRhOnMzY3JldA"),
            Some("ada".into()),
            "no padding"
        );
        assert_eq!(check(b"Bearer s3cret"), Some("user".into()));
        assert_eq!(check(b"bearer   s3cret  "), Some("user".into()));
    }

    #[test]
    fn bad_authorization_headers_prove_nothing() {
        let token = Token::new("s3cret");
        let check = |value: &[u8]| from_authorization(&with(&[value]), &token);
        let huge = [b"Bearer ".as_slice(), &[b'a'; 9000]].concat();
        for bad in [
            basic(b"ada:wrong"),
            basic(b":s3cret"),
            basic(b"ada s3cret"),
            basic(b"\xff\xfe:s3cret"),
            basic(b"ada:"),
            b"Basic !!!notbase64".to_vec(),
            b"Basic".to_vec(),
            b"Basic ".to_vec(),
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            b"Bearer wrong".to_vec(),
            b"Digest s3cret".to_vec(),
            b"s3cret".to_vec(),
            b"Bearer s3cret\xff".to_vec(),
            huge,
        ] {
            assert_eq!(check(&bad), None, "{:?}", String::from_utf8_lossy(&bad));
        }
        let twice = with(&[b"Bearer s3cret", b"Bearer s3cret"]);
        assert_eq!(from_authorization(&twice, &token), None);
        assert_eq!(from_authorization(&HeaderMap::new(), &token), None);
    }

    #[test]
    fn access_token_is_read_like_a_form() {
        assert_eq!(access_token("access_token=a%2Bb").as_deref(), Some("a+b"));
        assert_eq!(access_token("x=1&access%5Ftoken=t").as_deref(), Some("t"));
        assert_eq!(
            access_token("access_token=1&access_token=2").as_deref(),
            Some("1")
        );
        assert_eq!(access_token("access_tokens=1"), None);
        assert_eq!(access_token(""), None);
    }

    #[test]
    fn strip_keeps_other_parameters_byte_for_byte() {
        assert_eq!(strip_access_token("a=1&b=two%20words"), None);
        assert_eq!(
            strip_access_token("a=1&access_token=t&b=two%20words&c").as_deref(),
            Some("a=1&b=two%20words&c")
        );
        assert_eq!(strip_access_token("access_token=t").as_deref(), Some(""));
        assert_eq!(
            strip_access_token("access%5ftoken=t&access_token&z=%FF").as_deref(),
            Some("z=%FF")
        );
    }
}
