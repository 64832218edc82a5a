//! The `Origin` check for WebSocket upgrades (cross-site WebSocket hijacking).

use std::fmt;

use http::header::{HeaderMap, HOST, ORIGIN};
use http::Uri;

/// A normalised web origin: lowercase scheme and host, port made explicit when the scheme has
/// a default.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated). `null`, paths, user info
    /// and anything else are refused.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host_port(rest.strip_suffix('/').unwrap_or(rest))?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Self { scheme, host, port })
    }

    /// Whether this origin names `authority` (a `Host` header: `host[:port]`).
    fn is_host(&self, authority: &str) -> bool {
        let Some((host, port)) = split_host_port(authority) else {
            return false;
        };
        self.host == host
            && match port {
                Some(port) => self.port == Some(port),
                None => self.port == default_port(&self.scheme),
            }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        match self.port {
            Some(port) if Some(port) != default_port(&self.scheme) => write!(f, ":{port}"),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` → lowercase host and port. IPv6 literals keep their brackets.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let bad = |b: u8| !b.is_ascii_graphic() || matches!(b, b'/' | b'?' | b'#' | b'@' | b'\\');
    if authority.is_empty() || authority.bytes().any(bad) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        match &authority[end + 1..] {
            "" => (&authority[..=end], None),
            rest => (&authority[..=end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    let port = match port {
        None => None,
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(port.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Marks a request whose `Origin` an [`AuthLayer`](crate::AuthLayer) has already checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginChecked;

/// Whether a WebSocket upgrade may proceed as far as its `Origin` goes: no `Origin` (not a
/// browser), or one `Origin` naming the request's own host (`Host`, or the URI authority for
/// HTTP/2, or `X-Forwarded-Host` when `trust_forwarded`), or one in `allowed`.
pub(crate) fn upgrade_allowed(
    headers: &HeaderMap,
    uri: &Uri,
    allowed: &[Origin],
    trust_forwarded: bool,
) -> bool {
    let mut values = headers.get_all(ORIGIN).iter();
    let Some(value) = values.next() else {
        return true;
    };
    if values.next().is_some() {
        return false;
    }
    let Some(origin) = value.to_str().ok().and_then(Origin::parse) else {
        return false;
    };
    if allowed.contains(&origin) {
        return true;
    }
    let host = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()));
    if host.is_some_and(|host| origin.is_host(host)) {
        return true;
    }
    trust_forwarded
        && headers
            .get("x-forwarded-host")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .is_some_and(|host| origin.is_host(host.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(origin: &[u8], host: &str, allowed: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_bytes(origin).unwrap());
        headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        let allowed: Vec<Origin> = allowed.iter().map(|o| Origin::parse(o).unwrap()).collect();
        upgrade_allowed(&headers, &Uri::from_static("/ws"), &allowed, false)
    }

    #[test]
    fn same_host_origins_pass() {
        assert!(check(b"http://127.0.0.1:2718", "127.0.0.1:2718", &[]));
        assert!(check(b"http://LOCALHOST:2718", "localhost:2718", &[]));
        assert!(check(b"https://example.com", "example.com", &[]));
        assert!(check(b"https://example.com", "example.com:443", &[]));
        assert!(check(b"http://example.com:80", "example.com", &[]));
        assert!(check(b"http://[::1]:8080", "[::1]:8080", &[]));
    }

    #[test]
    fn foreign_and_malformed_origins_fail() {
        assert!(!check(b"http://evil.com", "example.com", &[]));
        assert!(!check(b"http://127.0.0.1:9999", "127.0.0.1:2718", &[]));
        assert!(!check(b"https://example.com", "example.com:8443", &[]));
        assert!(!check(b"http://example.com:8080", "example.com", &[]));
        assert!(!check(b"http://example.com.evil.com", "example.com", &[]));
        for bad in [
            &b"null"[..],
            b"",
            b"example.com",
            b"http://",
            b"http://user@example.com",
            b"http://example.com/path",
            b"http://example.com:",
            b"http://example.com:99999",
            b"http://a:b:c",
            b"http://exa\xffmple.com",
            b"://example.com",
        ] {
            assert!(
                !check(bad, "example.com", &[]),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn allow_list_matches_whole_origins() {
        assert!(check(
            b"https://app.example.com",
            "gateway:2718",
            &["https://app.example.com"]
        ));
        assert!(check(
            b"https://app.example.com",
            "gateway:2718",
            &["HTTPS://App.Example.com:443/"]
        ));
        assert!(!check(
            b"http://app.example.com",
            "gateway:2718",
            &["https://app.example.com"]
        ));
        assert_eq!(
            Origin::parse("HTTPS://App.Example.com:443/")
                .unwrap()
                .to_string(),
            "https://app.example.com"
        );
        assert_eq!(
            Origin::parse("http://h:8080").unwrap().to_string(),
            "http://h:8080"
        );
    }

    #[test]
    fn no_origin_passes_and_two_origins_fail() {
        let uri = Uri::from_static("/ws");
        assert!(upgrade_allowed(&HeaderMap::new(), &uri, &[], false));
        let mut two = HeaderMap::new();
        two.insert(HOST, HeaderValue::from_static("h"));
        two.append(ORIGIN, HeaderValue::from_static("http://h"));
        two.append(ORIGIN, HeaderValue::from_static("http://h"));
        assert!(!upgrade_allowed(&two, &uri, &[], false));
    }

    #[test]
    fn forwarded_host_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_static("https://public.example"));
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:2718"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("public.example"),
        );
        let uri = Uri::from_static("/ws");
        assert!(!upgrade_allowed(&headers, &uri, &[], false));
        assert!(upgrade_allowed(&headers, &uri, &[], true));
    }
}
