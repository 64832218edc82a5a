//! The `Host` check against DNS rebinding: [`HostPolicy`].
//!
//! A page on `http://evil.test` whose name the attacker later points at 127.0.0.1 is, for the
//! browser, still `evil.test`: same-origin with itself, so it may read every answer of a
//! server on the loopback address, and its WebSocket `Origin` matches its `Host`. The only
//! trace is the `Host` header, which names the attacker's domain. A server bound to a loopback
//! address therefore answers only the names of the loopback address (and names its user
//! allows).

use std::net::IpAddr;

use http::header::HOST;
use http::{Request, Response, StatusCode};

use crate::origin::{request_host, split_host_port, Policy};
use crate::request::LocalAddr;
use crate::response::{no_store, plain};
use crate::Body;

/// Which `Host` names a built service answers.
///
/// Enforced when the request came through a listener bound to a loopback address (the
/// [`LocalAddr`] extension that [`serve`](crate::serve()) inserts) or when names were
/// allowed. Then the host (`X-Forwarded-Host` when forwarded headers are trusted, else `Host`,
/// else the HTTP/2 authority) must be `localhost`, an IP address literal, or an allowed name;
/// any port. IP literals pass because rebinding needs a DNS name: a page whose URL holds an
/// IP address is served by that address. A request without any host (HTTP/1.0 without
/// `Host`) passes: browsers always send one, so it is not a browser fooled by DNS.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPolicy {
    /// Lowercase names, no port.
    names: Vec<String>,
    /// For `X-Forwarded-Host`.
    forwarded: Policy,
}

impl HostPolicy {
    /// `names` must have been checked with [`check_name`].
    pub(crate) fn new(names: Vec<String>, forwarded: Policy) -> Self {
        Self { names, forwarded }
    }

    /// `Some(403)` when `req` names a host this service does not answer.
    pub(crate) fn refuse<B>(&self, req: &Request<B>) -> Option<Response<Body>> {
        let loopback = req
            .extensions()
            .get::<LocalAddr>()
            .is_some_and(|local| local.0.ip().is_loopback());
        if !loopback && self.names.is_empty() {
            return None;
        }
        let host = match self.forwarded.forwarded(req.headers(), "x-forwarded-host") {
            Some(forwarded) => forwarded,
            // A `Host` that is not text names no host this service answers.
            None if req.headers().contains_key(HOST) => {
                request_host(req.headers(), req.uri()).unwrap_or_default()
            }
            None => request_host(req.headers(), req.uri())?,
        };
        if self.answers(host) {
            return None;
        }
        tracing::debug!("request for an unknown Host refused (DNS rebinding guard)");
        Some(no_store(plain(
            StatusCode::FORBIDDEN,
            "Forbidden: this server does not answer to the Host this request names (a DNS \
             rebinding guard). Reach it as localhost or by IP address, or allow the name \
             (--allow-host NAME, AppBuilder::allowed_hosts).\n",
        )))
    }

    /// Whether `authority` (`host[:port]`) is a name this service answers.
    fn answers(&self, authority: &str) -> bool {
        let Some((host, _port)) = split_host_port(authority) else {
            return false;
        };
        host == "localhost" || is_ip_literal(&host) || self.names.contains(&host)
    }
}

/// `127.0.0.1`, `[::1]`: an IP address as a URL carries it.
fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// A host name to allow, lowercased; `Err(reason)` when it is not a plain DNS name.
pub(crate) fn check_name(name: &str) -> Result<String, &'static str> {
    if name.parse::<IpAddr>().is_ok() {
        return Err("IP addresses are always answered; allow names only");
    }
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if labels_ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err("expected a DNS name such as marimo.example.com, without scheme or port")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, forwarded: Option<&str>, local: &str) -> Request<()> {
        let mut req = Request::get("/");
        if let Some(host) = host {
            req = req.header("host", host);
        }
        if let Some(forwarded) = forwarded {
            req = req.header("x-forwarded-host", forwarded);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert(LocalAddr(local.parse().unwrap()));
        req
    }

    fn refused(policy: &HostPolicy, host: Option<&str>, local: &str) -> bool {
        policy.refuse(&request(host, None, local)).is_some()
    }

    #[test]
    fn on_loopback_only_loopback_names_and_ip_literals_pass() {
        let policy = HostPolicy::default();
        for local in ["127.0.0.1:2718", "[::1]:2718"] {
            for host in [
                "localhost:2718",
                "LOCALHOST",
                "127.0.0.1:2718",
                "127.0.0.1",
                "[::1]:2718",
                "[::1]",
                "192.168.1.5:80",
            ] {
                assert!(!refused(&policy, Some(host), local), "{host} at {local}");
            }
            for host in [
                "evil.test:2718",
                "evil.test",
                "localhost.:2718",
                "localhost.evil.test",
                "127.0.0.1.evil.test",
                "[::1",
                "",
                "a b",
                "localhost:x",
            ] {
                assert!(refused(&policy, Some(host), local), "{host:?} at {local}");
            }
            let mut binary = request(None, None, local);
            binary.headers_mut().insert(
                HOST,
                http::HeaderValue::from_bytes(b"localhost\xff").unwrap(),
            );
            assert!(policy.refuse(&binary).is_some(), "a Host that is not text");
            assert!(!refused(&policy, None, local), "no Host at all (HTTP/1.0)");
        }
    }

    #[test]
    fn elsewhere_the_check_is_opt_in() {
        let open = HostPolicy::default();
        assert!(!refused(&open, Some("evil.test"), "0.0.0.0:2718"));
        assert!(!refused(&open, Some("evil.test"), "192.168.1.5:2718"));
        assert!(open
            .refuse(
                &Request::get("/")
                    .header("host", "evil.test")
                    .body(())
                    .unwrap()
            )
            .is_none());

        let names = vec![check_name("Marimo.Example.com").unwrap()];
        let allowing = HostPolicy::new(names, Policy::default());
        for local in ["0.0.0.0:2718", "127.0.0.1:2718"] {
            assert!(!refused(&allowing, Some("marimo.example.com:443"), local));
            assert!(!refused(&allowing, Some("MARIMO.example.com"), local));
            assert!(!refused(&allowing, Some("localhost"), local));
            assert!(refused(&allowing, Some("evil.test"), local));
            assert!(refused(&allowing, Some("example.com"), local));
        }
        // Without `serve`'s LocalAddr, an allow-list is still enforced.
        let bare = Request::get("/")
            .header("host", "evil.test")
            .body(())
            .unwrap();
        assert!(allowing.refuse(&bare).is_some());
    }

    #[test]
    fn the_forwarded_host_counts_only_when_trusted() {
        let mut trusting = Policy::default();
        trusting.set_trust_forwarded(true);
        let trusted = HostPolicy::new(Vec::new(), trusting);
        let untrusted = HostPolicy::default();
        let rebound = request(Some("127.0.0.1:2718"), Some("evil.test"), "127.0.0.1:2718");
        assert!(trusted.refuse(&rebound).is_some());
        assert!(untrusted.refuse(&rebound).is_none());
        let local = request(Some("evil.test"), Some("localhost:8080"), "127.0.0.1:2718");
        assert!(trusted.refuse(&local).is_none());
        assert!(untrusted.refuse(&local).is_some());
    }

    #[test]
    fn allowed_names_are_plain_dns_names() {
        assert_eq!(
            check_name("Marimo.Example.COM").unwrap(),
            "marimo.example.com"
        );
        assert_eq!(check_name("gw").unwrap(), "gw");
        assert_eq!(check_name("my_host").unwrap(), "my_host");
        for bad in [
            "",
            "http://x",
            "x:80",
            "a..b",
            "-a",
            "a-",
            "127.0.0.1",
            "::1",
            "a b",
            "*.example.com",
            "x/",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
