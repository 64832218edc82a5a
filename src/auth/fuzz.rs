//! The credential parsers under fuzzing (see `crate::__fuzz`; not API).
//!
//! [`credentials`] feeds one input to every parser that reads credentials or client addresses
//! and checks what each promises against a separate, naive statement of the rule. It panics
//! when a promise is broken; the fuzz target `credentials` and the proptest below call it.

use std::net::IpAddr;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, COOKIE, HOST, ORIGIN};
use http::Request;

use super::client_ip::{client_ip, parse_hop, TrustedProxy};
use super::cookie::CookieKeys;
use super::credentials::{access_token, from_authorization, strip_access_token, DEFAULT_USER};
use super::limit::ClientKey;
use super::login::is_safe_next;
use super::Token;
use crate::origin::{Origin, Policy, Verdict};

const TOKEN: &str = "s3cret";

/// Runs the `Authorization`, session cookie, `access_token`, `next`, `Origin`, `Host`,
/// `X-Forwarded-For` and CIDR parsers over `data`; panics if one accepts what it must not.
pub fn credentials(data: &[u8]) {
    let token = Token::new(TOKEN);
    let keys = CookieKeys::from_keys(&[b"fuzz-key"]);
    let digest = token.digest();

    // A minted cookie verifies to its user, until it expires; raw input never verifies (it
    // would need the HMAC key).
    let username = String::from_utf8_lossy(data);
    let minted = keys.mint(digest, &username, 1_000);
    if minted.len() <= 1024 {
        assert_eq!(
            keys.verify(digest, minted.as_bytes(), 999).as_deref(),
            Some(&*username)
        );
    }
    assert_eq!(keys.verify(digest, minted.as_bytes(), 1_000), None);
    assert_eq!(keys.verify(digest, data, 0), None);

    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.clone());
        if let Some(user) = from_authorization(&headers, &token) {
            assert!(
                presents_token(data, &user),
                "accepted {:?} as {user:?}",
                String::from_utf8_lossy(data)
            );
        }
        headers.append(AUTHORIZATION, value.clone());
        assert_eq!(from_authorization(&headers, &token), None, "two headers");

        let mut cookies = HeaderMap::new();
        cookies.insert(COOKIE, value.clone());
        let ours = format!("{}={minted}", keys.name());
        cookies.append(COOKIE, HeaderValue::from_str(&ours).expect("ASCII cookie"));
        assert_eq!(keys.find_valid(&cookies, digest, 2_000), None, "expired");
        keys.strip(&mut cookies);
        for header in cookies.get_all(COOKIE) {
            for piece in header.as_bytes().split(|&b| b == b';') {
                let rest = piece.trim_ascii().strip_prefix(keys.name().as_bytes());
                assert!(
                    !rest.is_some_and(|rest| rest.trim_ascii_start().starts_with(b"=")),
                    "our cookie survived stripping: {:?}",
                    String::from_utf8_lossy(header.as_bytes())
                );
            }
        }

        let mut upgrade = Request::get("/ws")
            .header("upgrade", "websocket")
            .header(HOST, "gateway.example:2718")
            .body(())
            .expect("a request");
        upgrade.headers_mut().insert(ORIGIN, value.clone());
        if matches!(Policy::default().judge(&upgrade), Verdict::Pass { .. }) {
            // Only an origin naming the gateway's own host and port passes.
            let shown = origin_string(value.as_bytes()).expect("an accepted Origin parses");
            assert!(
                shown.ends_with("://gateway.example:2718"),
                "{:?} passed as {shown:?}",
                String::from_utf8_lossy(value.as_bytes())
            );
        }
        check_host(value.clone());

        check_forwarded_for(value);
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if is_safe_next(text) {
        let bytes = text.as_bytes();
        assert_eq!(bytes[0], b'/');
        assert!(!matches!(bytes.get(1), Some(b'/' | b'\\')), "{text:?}");
        assert!(bytes
            .iter()
            .all(|&b| (0x21..0x7f).contains(&b) && b != b'\\'));
    }
    if let Some(rest) = strip_access_token(text) {
        assert!(access_token(&rest).is_none(), "{text:?} -> {rest:?}");
        assert!(rest.len() < text.len());
    } else {
        assert!(access_token(text).is_none(), "{text:?}");
    }
    if let Some(origin) = Origin::parse(text) {
        let shown = origin.to_string();
        assert_eq!(Origin::parse(&shown), Some(origin), "{text:?} -> {shown:?}");
    }
    if let Ok(net) = TrustedProxy::parse(text) {
        let address = text.split('/').next().unwrap_or_default();
        let address: IpAddr = address.parse().expect("a parsed network has an address");
        assert!(
            net.contains(address),
            "{text:?} does not contain its own address"
        );
    }
}

/// The naive rule for an `Authorization` value: `Bearer TOKEN` proves `user`, and `Basic`
/// with `user:TOKEN` in base64 proves `user`.
fn presents_token(value: &[u8], user: &str) -> bool {
    let value = value.trim_ascii();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = (&value[..space], value[space + 1..].trim_ascii());
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return rest == TOKEN.as_bytes() && user == DEFAULT_USER;
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    scheme.eq_ignore_ascii_case(b"basic")
        && !user.is_empty()
        && engine.decode(rest).ok() == Some(format!("{user}:{TOKEN}").into_bytes())
}

/// An `Origin` header as the parser normalises it.
fn origin_string(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    Origin::parse(text).map(|origin| origin.to_string())
}

/// On loopback, only `localhost`, IP literals and allowed names pass the `Host` check.
fn check_host(value: HeaderValue) {
    let names = vec![crate::host::check_name("gw.example").expect("a name")];
    let policy = crate::host::HostPolicy::new(names, Policy::default());
    let mut req = Request::get("/").body(()).expect("a request");
    req.headers_mut().insert(HOST, value.clone());
    req.extensions_mut()
        .insert(crate::request::LocalAddr(([127, 0, 0, 1], 2718).into()));
    if policy.refuse(&req).is_none() {
        let text = value
            .to_str()
            .expect("a passing Host is text")
            .to_ascii_lowercase();
        let host = match text.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
            None => text
                .rsplit_once(':')
                .map_or(text.clone(), |(h, _)| h.to_owned()),
        };
        assert!(
            host == "localhost" || host == "gw.example" || host.parse::<IpAddr>().is_ok(),
            "{text:?} passed the Host check"
        );
    }
}

/// `X-Forwarded-For` is believed only from a trusted peer, and then only as far as it parses.
fn check_forwarded_for(value: HeaderValue) {
    let trusted = [
        TrustedProxy::parse("10.0.0.0/8").expect("valid"),
        TrustedProxy::parse("fd00::/8").expect("valid"),
    ];
    let proxy: IpAddr = "10.0.0.1".parse().expect("valid");
    let outsider: IpAddr = "198.51.100.7".parse().expect("valid");
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", value.clone());
    assert_eq!(
        client_ip(Some(outsider), &headers, &trusted),
        Some(outsider)
    );
    assert_eq!(client_ip(None, &headers, &trusted), None);
    let found = client_ip(Some(proxy), &headers, &trusted).expect("a peer was given");
    let hops: Vec<IpAddr> = value
        .as_bytes()
        .split(|&b| b == b',')
        .filter_map(|hop| parse_hop(hop.trim_ascii()))
        .collect();
    assert!(
        found == proxy || hops.contains(&found),
        "{found} is neither the proxy nor in {:?}",
        String::from_utf8_lossy(value.as_bytes())
    );
    // Whatever it is, it has a bucket key of its own kind.
    match (found, ClientKey::of(found)) {
        (IpAddr::V4(_), ClientKey::V4(_)) | (IpAddr::V6(_), ClientKey::V6(_)) => {}
        (ip, key) => panic!("{ip} has key {key:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass() {
        for seed in [
            &b"Bearer s3cret"[..],
            b"Basic YWRhOnMzY3JldA==",
            b"Basic YWRhOnMzY3JldA",
            b"http://gateway.example:2718",
            b"access_token=s3cret&x=1",
            b"/next?x=1",
            b"10.0.0.0/8",
            b"203.0.113.9, 10.0.0.2",
            b"[2001:db8::1]:443, fd00::1",
            b"\xff\xfe\x00",
            b"",
        ] {
            credentials(seed);
        }
        assert!(presents_token(b"Bearer s3cret", "user"));
        assert!(presents_token(b"basic YWRhOnMzY3JldA", "ada"));
        assert!(!presents_token(b"Bearer wrong", "user"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2_000))]
        #[test]
        fn credential_parsers_keep_their_promises(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            credentials(&data);
        }

        #[test]
        fn credential_parsers_keep_their_promises_on_likely_text(
            data in "(Bearer |Basic |http://|access_token=|/|10\\.|\\[fd00::|, |s3cret|[a-zA-Z0-9+/=:%.\\[\\] ]){0,12}",
        ) {
            credentials(data.as_bytes());
        }
    }
}
