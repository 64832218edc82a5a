//! The origin guard against cross-site request forgery and cross-site WebSocket hijacking,
//! and the gateway's own CORS answers: [`Policy`].

use std::fmt;

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, HOST,
    ORIGIN, UPGRADE, VARY,
};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::response::{no_store, plain};
use crate::Body;

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
pub(crate) fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
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

/// Marks a request that an origin guard (the [`AuthLayer`](crate::AuthLayer)'s or a notebook
/// service's) has judged and let in; that guard also answers CORS for it, so inner guards
/// stand aside.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OriginChecked;

/// The cross-origin policy shared by the auth layer and every notebook service of a built
/// app: which requests a page on another origin may make, and which origins get CORS
/// answers.
///
/// A request is *checked* when it can change something or stream data back: any method but
/// `GET`, `HEAD` and `OPTIONS`, any upgrade (WebSocket), and event streams (`Accept:
/// text/event-stream`, or marimo's `/sse`). A checked request passes when it has
///
/// - one `Origin` naming the request's own origin (scheme, host and port as the request
///   reached this server: `Host`, or the HTTP/2 authority, and `X-Forwarded-Proto/-Host` when
///   forwarded headers are trusted), or an allowed origin; or
/// - no `Origin` and no `Sec-Fetch-Site` saying `cross-site` or `same-site` (curl, scripts,
///   other servers: not a browser acting for a page on another site).
///
/// Everything else is refused: a foreign origin, `Origin: null` (sandboxed frames, some
/// redirects), several or malformed `Origin` headers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    allowed: Vec<Origin>,
    trust_forwarded: bool,
}

/// What a [`Policy`] decides about one request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Let it in. `cors` is the allowed foreign origin whose page may read the response: add
    /// the CORS headers for it ([`allow_cors`]).
    Pass { cors: Option<HeaderValue> },
    /// A CORS preflight from an allowed origin, answered by the gateway.
    Preflight(Response<Body>),
    /// `403` with this reason.
    Refuse(&'static str),
}

impl Policy {
    /// The origins allowed besides the request's own.
    pub(crate) fn allowed(&self) -> &[Origin] {
        &self.allowed
    }

    /// Adds `origins` to the allowed ones (each once).
    pub(crate) fn allow(&mut self, origins: impl IntoIterator<Item = Origin>) {
        for origin in origins {
            if !self.allowed.contains(&origin) {
                self.allowed.push(origin);
            }
        }
    }

    /// Replaces the allowed origins.
    pub(crate) fn set_allowed(&mut self, origins: Vec<Origin>) {
        self.allowed = origins;
    }

    /// Whether `X-Forwarded-Proto` and `X-Forwarded-Host` are believed.
    pub(crate) fn trust_forwarded(&self) -> bool {
        self.trust_forwarded
    }

    pub(crate) fn set_trust_forwarded(&mut self, trust: bool) {
        self.trust_forwarded = trust;
    }

    /// Decides about `req` (see [`Policy`]).
    pub(crate) fn judge<B>(&self, req: &Request<B>) -> Verdict {
        let headers = req.headers();
        let mut values = headers.get_all(ORIGIN).iter();
        let origin = values.next();
        let several = values.next().is_some();
        let parsed = origin
            .filter(|_| !several)
            .and_then(|value| value.to_str().ok())
            .and_then(Origin::parse);
        let cors = parsed
            .as_ref()
            .filter(|parsed| self.allowed.contains(parsed))
            .and(origin)
            .cloned();
        if req.method() == Method::OPTIONS && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            if let Some(origin) = cors {
                return Verdict::Preflight(preflight(origin, headers));
            }
        }
        if !is_checked(req) || cors.is_some() {
            return Verdict::Pass { cors };
        }
        let Some(origin) = origin else {
            let site = headers
                .get("sec-fetch-site")
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
                return Verdict::Refuse("Forbidden: cross-site request (Sec-Fetch-Site) refused\n");
            }
            return Verdict::Pass { cors: None };
        };
        if several || (parsed.is_none() && origin.as_bytes() != b"null") {
            return Verdict::Refuse("Forbidden: malformed or repeated Origin header\n");
        }
        match parsed {
            Some(parsed) if self.is_own(&parsed, req) => Verdict::Pass { cors: None },
            _ => Verdict::Refuse(
                "Forbidden: cross-origin request refused (the Origin is neither this server \
                 nor an allowed origin)\n",
            ),
        }
    }

    /// Whether `origin` is the origin `req` was sent to.
    fn is_own<B>(&self, origin: &Origin, req: &Request<B>) -> bool {
        let scheme = self
            .forwarded(req.headers(), "x-forwarded-proto")
            .or_else(|| req.uri().scheme_str());
        // Without a known scheme (HTTP/1 in origin-form, no trusted proxy), host and port
        // decide: one port speaks one protocol, and a port-less `Host` defaults by the
        // Origin's scheme.
        if scheme.is_some_and(|scheme| !scheme.eq_ignore_ascii_case(&origin.scheme)) {
            return false;
        }
        request_host(req.headers(), req.uri()).is_some_and(|host| origin.is_host(host))
            || self
                .forwarded(req.headers(), "x-forwarded-host")
                .is_some_and(|host| origin.is_host(host))
    }

    /// The first value of a forwarding header, when such headers are trusted.
    pub(crate) fn forwarded<'a>(&self, headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        if !self.trust_forwarded {
            return None;
        }
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }
}

/// The request's own authority: `Host`, or the URI's (HTTP/2 `:authority`, absolute-form).
pub(crate) fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> Option<&'a str> {
    headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(|authority| authority.as_str()))
}

/// Whether the origin rule applies to `req`: it can change state or stream data back.
fn is_checked<B>(req: &Request<B>) -> bool {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    let event_stream = path == "/sse"
        || path.ends_with("/sse")
        || req.headers().get_all(ACCEPT).iter().any(|accept| {
            accept
                .as_bytes()
                .windows(b"text/event-stream".len())
                .any(|window| window.eq_ignore_ascii_case(b"text/event-stream"))
        });
    !safe || req.headers().contains_key(UPGRADE) || event_stream
}

/// `403` with `reason` as plain text.
pub(crate) fn refuse(reason: &'static str) -> Response<Body> {
    tracing::debug!(
        reason = reason.trim_end(),
        "request refused by the origin guard"
    );
    no_store(plain(StatusCode::FORBIDDEN, reason))
}

/// Lets the page at `origin` (an allowed one) read `response`, with credentials.
pub(crate) fn allow_cors(response: &mut Response<Body>, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(VARY, HeaderValue::from_static("Origin"));
}

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// `204` to a preflight from the allowed `origin`: the method and headers it asked for.
fn preflight(origin: HeaderValue, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    allow_cors(&mut response, origin);
    let headers = response.headers_mut();
    let method = request
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .filter(|method| Method::from_bytes(method.as_bytes()).is_ok());
    if let Some(method) = method {
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    }
    // Only a list of header names is echoed.
    let asked = request.get(ACCESS_CONTROL_REQUEST_HEADERS).filter(|names| {
        names.to_str().is_ok_and(|names| {
            names
                .split(',')
                .all(|name| HeaderName::from_bytes(name.trim().as_bytes()).is_ok())
        })
    });
    if let Some(names) = asked {
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, names.clone());
    }
    headers.insert(
        ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    headers.append(
        VARY,
        HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the tables expect.
    #[derive(Debug, PartialEq)]
    enum Want {
        Pass,
        /// Passes, with CORS headers for the request's Origin.
        Cors,
        Preflight,
        Refuse,
    }
    use Want::*;

    fn policy(allowed: &[&str], trust_forwarded: bool) -> Policy {
        let mut policy = Policy::default();
        policy.allow(allowed.iter().map(|o| Origin::parse(o).unwrap()));
        policy.set_trust_forwarded(trust_forwarded);
        policy
    }

    /// Request headers as the tables write them.
    type Headers<'a> = [(&'a str, &'a [u8])];

    fn judge(policy: &Policy, method: &str, uri: &str, headers: &Headers<'_>) -> Want {
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            req = req.header(*name, HeaderValue::from_bytes(value).unwrap());
        }
        match policy.judge(&req.body(()).unwrap()) {
            Verdict::Pass { cors: None } => Pass,
            Verdict::Pass { cors: Some(_) } => Cors,
            Verdict::Preflight(_) => Preflight,
            Verdict::Refuse(reason) => {
                assert!(reason.starts_with("Forbidden: "), "{reason}");
                Refuse
            }
        }
    }

    #[test]
    fn methods_upgrades_and_event_streams_are_checked_and_reads_are_not() {
        let policy = policy(&[], false);
        let evil = [
            ("host", &b"127.0.0.1:2718"[..]),
            ("origin", b"http://evil.example"),
        ];
        let cases: &[(&str, &str, &Headers<'_>, Want)] = &[
            ("GET", "/", &evil, Pass),
            ("HEAD", "/", &evil, Pass),
            ("OPTIONS", "/", &evil, Pass),
            ("POST", "/api/files/update", &evil, Refuse),
            ("PUT", "/x", &evil, Refuse),
            ("DELETE", "/x", &evil, Refuse),
            ("PATCH", "/x", &evil, Refuse),
            ("PROPFIND", "/x", &evil, Refuse),
            ("GET", "/sse?session_id=s", &evil, Refuse),
            ("GET", "/app/sse", &evil, Refuse),
            ("GET", "/ssex", &evil, Pass),
        ];
        for (method, uri, headers, want) in cases {
            assert_eq!(
                &judge(&policy, method, uri, headers),
                want,
                "{method} {uri}"
            );
        }
        let with = |extra: (&'static str, &'static [u8])| {
            let mut headers = evil.to_vec();
            headers.push(extra);
            judge(&policy, "GET", "/x", &headers)
        };
        assert_eq!(with(("upgrade", b"websocket")), Refuse);
        assert_eq!(with(("upgrade", b"h2c")), Refuse);
        assert_eq!(with(("accept", b"Text/Event-Stream")), Refuse);
        assert_eq!(with(("accept", b"text/html")), Pass);
    }

    #[test]
    fn origins_are_compared_by_scheme_host_and_port() {
        let policy = policy(&[], false);
        let post = |origin: &[u8], host: &str, uri: &str| {
            judge(
                &policy,
                "POST",
                uri,
                &[("origin", origin), ("host", host.as_bytes())],
            )
        };
        let cases: &[(&[u8], &str, &str, Want)] = &[
            (b"http://127.0.0.1:2718", "127.0.0.1:2718", "/", Pass),
            (b"http://LOCALHOST:2718", "localhost:2718", "/", Pass),
            (b"https://example.com", "example.com", "/", Pass),
            (b"https://example.com", "example.com:443", "/", Pass),
            (b"http://example.com:80", "example.com", "/", Pass),
            (b"http://[::1]:8080", "[::1]:8080", "/", Pass),
            (b"http://[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", "/", Refuse),
            // Another port of the same host is same-site, not same-origin.
            (b"http://127.0.0.1:9999", "127.0.0.1:2718", "/", Refuse),
            (b"https://example.com", "example.com:8443", "/", Refuse),
            (b"http://example.com:8080", "example.com", "/", Refuse),
            (b"http://example.com.evil.com", "example.com", "/", Refuse),
            (b"http://evil.example", "127.0.0.1:2718", "/", Refuse),
            // A known scheme must match (HTTP/2 and absolute-form carry it).
            (b"https://h:2718", "h:2718", "http://h:2718/", Refuse),
            (b"http://h:2718", "h:2718", "http://h:2718/", Pass),
        ];
        for (origin, host, uri, want) in cases {
            let shown = String::from_utf8_lossy(origin);
            assert_eq!(&post(origin, host, uri), want, "{shown} at {host} {uri}");
        }
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
            let shown = String::from_utf8_lossy(bad);
            assert_eq!(post(bad, "example.com", "/"), Refuse, "{shown:?}");
        }
    }

    #[test]
    fn without_origin_sec_fetch_site_decides() {
        let policy = policy(&[], false);
        let post = |site: &[u8]| judge(&policy, "POST", "/x", &[("sec-fetch-site", site)]);
        assert_eq!(post(b"cross-site"), Refuse);
        assert_eq!(post(b"Same-Site"), Refuse);
        assert_eq!(post(b"same-origin"), Pass);
        assert_eq!(post(b"none"), Pass);
        // curl and scripts send neither.
        assert_eq!(judge(&policy, "POST", "/x", &[]), Pass);
        assert_eq!(
            judge(&policy, "GET", "/x", &[("upgrade", b"websocket")]),
            Pass
        );
        // An Origin decides over Sec-Fetch-Site.
        let both = [
            ("origin", &b"http://h"[..]),
            ("host", b"h"),
            ("sec-fetch-site", b"cross-site"),
        ];
        assert_eq!(judge(&policy, "POST", "/x", &both), Pass);
    }

    #[test]
    fn two_origins_are_refused() {
        let policy = policy(&["http://h"], false);
        let two = [
            ("host", &b"h"[..]),
            ("origin", b"http://h"),
            ("origin", b"http://h"),
        ];
        assert_eq!(judge(&policy, "POST", "/x", &two), Refuse);
        assert_eq!(
            judge(&policy, "GET", "/x", &two),
            Pass,
            "not checked, no CORS"
        );
    }

    #[test]
    fn allowed_origins_pass_and_get_cors() {
        let policy = policy(&["https://app.example.com", "http://localhost:3000"], false);
        let from = |origin: &'static [u8], method: &str| {
            judge(
                &policy,
                method,
                "/api/x",
                &[("host", b"gateway:2718"), ("origin", origin)],
            )
        };
        assert_eq!(from(b"https://app.example.com", "POST"), Cors);
        assert_eq!(from(b"https://app.example.com:443", "POST"), Cors);
        assert_eq!(from(b"https://app.example.com", "GET"), Cors);
        assert_eq!(from(b"http://localhost:3000", "POST"), Cors);
        assert_eq!(from(b"http://app.example.com", "POST"), Refuse);
        assert_eq!(from(b"http://localhost:3001", "POST"), Refuse);
        assert_eq!(from(b"http://evil.example", "GET"), Pass);
        assert_eq!(
            from(b"http://gateway:2718", "POST"),
            Pass,
            "own origin: no CORS"
        );
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
    fn preflights_from_allowed_origins_are_answered() {
        let policy = policy(&["https://app.example.com"], false);
        let mut req = Request::builder()
            .method("OPTIONS")
            .uri("/api/kernel/run")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type, marimo-session-id",
            )
            .body(())
            .unwrap();
        let Verdict::Preflight(response) = policy.judge(&req) else {
            panic!("a preflight answer");
        };
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let headers = response.headers();
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(
            headers[ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, marimo-session-id"
        );
        assert_eq!(headers[ACCESS_CONTROL_MAX_AGE], PREFLIGHT_MAX_AGE);
        assert!(headers.get_all(VARY).iter().any(|v| v == "Origin"));
        // A foreign origin's preflight is not answered with CORS: it goes on like any OPTIONS.
        req.headers_mut()
            .insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(matches!(policy.judge(&req), Verdict::Pass { cors: None }));
        // Header lists that are not header names are not echoed.
        req.headers_mut()
            .insert(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        req.headers_mut().insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("a b"),
        );
        let Verdict::Preflight(response) = policy.judge(&req) else {
            panic!("a preflight answer");
        };
        assert!(!response
            .headers()
            .contains_key(ACCESS_CONTROL_ALLOW_HEADERS));
    }

    #[test]
    fn forwarded_headers_count_only_when_trusted() {
        let headers: [(&str, &[u8]); 4] = [
            ("origin", b"https://public.example"),
            ("host", b"127.0.0.1:2718"),
            ("x-forwarded-host", b"public.example"),
            ("x-forwarded-proto", b"https"),
        ];
        assert_eq!(judge(&policy(&[], false), "POST", "/x", &headers), Refuse);
        assert_eq!(judge(&policy(&[], true), "POST", "/x", &headers), Pass);
        // The forwarded scheme must match too.
        let http = [
            ("origin", &b"https://public.example"[..]),
            ("host", b"127.0.0.1:2718"),
            ("x-forwarded-host", b"public.example"),
            ("x-forwarded-proto", b"http"),
        ];
        assert_eq!(judge(&policy(&[], true), "POST", "/x", &http), Refuse);
    }

    #[test]
    fn http2_requests_use_the_authority() {
        let policy = policy(&[], false);
        let req = Request::post("http://127.0.0.1:2718/api/x")
            .header("origin", "http://127.0.0.1:2718")
            .body(())
            .unwrap();
        assert!(matches!(policy.judge(&req), Verdict::Pass { cors: None }));
    }
}
