//! The reverse proxy from the gateway to one notebook backend over its Unix socket.
//!
//! - HTTP goes through hyper-util's pooled client ([`uds::UdsConnector`]) as HTTP/1.1, whatever
//!   the client spoke (HTTP/2 requests included); bodies stream both ways (`/sse` is an event
//!   stream, never buffered), except request bodies of at most [`REPLAY_LIMIT`] bytes with a
//!   known length, which are held so that the request can be sent again.
//! - A request whose reused pooled connection turns out to be dead before any byte of the
//!   answer (the backend closed it while it sat idle, e.g. right after an error response) is
//!   sent once more on a fresh connection, if its body was held or it has none.
//! - Hop-by-hop headers (RFC 9110 §7.6.1, plus those named in `Connection`) are dropped in
//!   both directions; `X-Forwarded-For/-Proto/-Host/-Prefix` are set; multi-valued headers such
//!   as `Set-Cookie` are kept as separate fields.
//! - `Location` and cookie `Path` from the backend (which thinks it is at `/`) are rewritten to
//!   the mount prefix.
//! - WebSocket upgrades are tunnelled by [`websocket`].

pub(crate) mod uds;
mod websocket;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::request::{MountPrefix, RemoteAddr};
use crate::response::plain;
use crate::{Body, User};

/// The header on which the gateway tells the backend who the user is. Clients can never set
/// it: it is removed from every incoming request before the gateway (maybe) sets it.
pub(crate) const USER_HEADER: HeaderName = HeaderName::from_static("x-marimo-rs-user");

// Named once, not parsed from a string on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// How long an idle pooled connection to a backend is kept. The backend's keep-alive
/// (`KEEP_ALIVE_SECS` in the launcher config) is far longer, so the gateway always closes first
/// and never sends on a connection the backend is closing.
pub(crate) const POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per backend: enough for bursts, bounded so a load spike does not
/// leave hundreds of open sockets behind.
pub(crate) const POOL_MAX_IDLE: usize = 32;
/// The authority of upstream URIs: a placeholder, since every connection goes to the backend's
/// socket.
const BACKEND_AUTHORITY: &str = "backend";
/// uvicorn's keep-alive for gateway connections.
pub(crate) const BACKEND_KEEP_ALIVE_SECS: u64 = 600;
/// The largest request body held in memory so that the request can be replayed on a fresh
/// connection (64 KiB, with a length known up front: `Content-Length`, or no body). marimo's
/// API calls are small JSON documents; uploads and streamed bodies pass through unheld and are
/// never replayed.
pub(crate) const REPLAY_LIMIT: u64 = 64 * 1024;

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("the notebook backend is not accepting connections")]
    Unreachable,
    #[error("the notebook backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the notebook backend closed the connection: {0}")]
    Broken(String),
    #[error("the client's request body could not be read: {0}")]
    RequestBody(String),
}

impl From<hyper_util::client::legacy::Error> for ProxyError {
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        if error.is_connect() {
            return ProxyError::Unreachable;
        }
        // The legacy client's own message names only its step ("SendRequest"): add hyper's.
        match std::error::Error::source(&error) {
            Some(cause) => ProxyError::Broken(format!("{error}: {cause}")),
            None => ProxyError::Broken(error.to_string()),
        }
    }
}

impl ProxyError {
    pub(crate) fn into_response(self) -> Response<Body> {
        let (status, text) = match self {
            ProxyError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "Notebook backend timed out"),
            ProxyError::RequestBody(_) => {
                (StatusCode::BAD_REQUEST, "Could not read the request body")
            }
            _ => (StatusCode::BAD_GATEWAY, "Notebook backend unavailable"),
        };
        plain(status, text)
    }
}

/// A connection pool to one backend socket.
#[derive(Clone, Debug)]
pub(crate) struct Upstream {
    client: Client<uds::UdsConnector, Body>,
    /// Responses received from the backend so far: proof of life for the watchdog when the
    /// backend is too busy to answer `/health` in time.
    answered: Arc<AtomicU64>,
    connector: uds::UdsConnector,
    response_timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(socket: PathBuf, response_timeout: Duration) -> Self {
        let connector = uds::UdsConnector::new(socket);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        Self {
            client,
            answered: Arc::default(),
            connector,
            response_timeout,
        }
    }

    /// How many responses the backend has sent through this pool (any status).
    pub(crate) fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// `GET /health` answered `200`, within `timeout`.
    pub(crate) async fn is_healthy(&self, timeout: Duration) -> bool {
        let request = Request::get("http://backend/health")
            .body(Body::empty())
            .expect("static request");
        matches!(
            tokio::time::timeout(timeout, self.client.request(request)).await,
            Ok(Ok(response)) if response.status() == StatusCode::OK
        )
    }

    /// Forwards `req` (already stripped of the mount prefix) and returns the backend's answer.
    pub(crate) async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let prefix = mount_prefix(&req);
        let outgoing = Outgoing::new(prepare_request(req, &prefix, Via::Pool)).await?;
        let response = tokio::time::timeout(self.response_timeout, self.send(outgoing))
            .await
            .map_err(|_| ProxyError::Timeout(self.response_timeout))??;
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(prepare_response(response.map(Body::new), &prefix))
    }

    /// Sends `outgoing`, and once more on a fresh connection if a reused pooled connection
    /// died under a replayable request before answering anything. hyper-util retries by itself
    /// only a request it could not start writing; this covers one the backend closed the
    /// connection on without reading (uvicorn closes a connection after an application error,
    /// sometimes right after the error response, which carries no `Connection: close`).
    async fn send(
        &self,
        outgoing: Outgoing,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        let (head, body) = match outgoing {
            Outgoing::Streamed(req) => return Ok(self.client.request(req).await?),
            Outgoing::Held(head, body) => (head, body),
        };
        match self.client.request(head.with_body(body.clone())).await {
            Err(error) if died_unanswered(&error) => {
                tracing::debug!(%error, "a pooled backend connection was closed; sending the request again");
                Ok(self.client.request(head.with_body(body)).await?)
            }
            result => Ok(result?),
        }
    }

    /// Tunnels a WebSocket handshake; `guard` lives as long as the tunnel does.
    pub(crate) async fn tunnel<G: Send + 'static>(
        &self,
        req: Request<Body>,
        guard: G,
    ) -> Result<Response<Body>, ProxyError> {
        // The handshake gets the same bound as any response's headers; the tunnel that
        // follows has none (an idle kernel socket is normal).
        let handshake = websocket::tunnel(&self.connector, req, guard);
        tokio::time::timeout(self.response_timeout, handshake)
            .await
            .map_err(|_| ProxyError::Timeout(self.response_timeout))?
    }
}

/// A request ready for the pool: held (head and a small body, so it can be sent twice) or
/// streamed (sent once).
enum Outgoing {
    Held(Head, Bytes),
    Streamed(Request<Body>),
}

impl Outgoing {
    /// Holds the body if its length is known and at most [`REPLAY_LIMIT`].
    async fn new(req: Request<Body>) -> Result<Self, ProxyError> {
        let small = req
            .body()
            .size_hint()
            .exact()
            .is_some_and(|length| length <= REPLAY_LIMIT);
        if !small {
            return Ok(Outgoing::Streamed(req));
        }
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, REPLAY_LIMIT as usize)
            .collect()
            .await
            .map_err(|error| ProxyError::RequestBody(error.to_string()))?
            .to_bytes();
        Ok(Outgoing::Held(Head(parts), body))
    }
}

/// The parts of a held request (the pool's request needs none of its extensions).
struct Head(http::request::Parts);

impl Head {
    fn with_body(&self, body: Bytes) -> Request<Body> {
        let mut req = Request::new(Body::from(body));
        *req.method_mut() = self.0.method.clone();
        *req.uri_mut() = self.0.uri.clone();
        *req.version_mut() = self.0.version;
        *req.headers_mut() = self.0.headers.clone();
        req
    }
}

/// A request failed on a connection the pool had used before, and not one byte of the answer
/// had arrived: the backend closed the connection without reading the request.
fn died_unanswered(error: &hyper_util::client::legacy::Error) -> bool {
    let Some(connected) = error.connect_info() else {
        return false;
    };
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    extras
        .get::<Arc<uds::Usage>>()
        .is_some_and(|usage| usage.reused_and_unanswered())
}

/// The request's [`MountPrefix`], read once per request: it goes into `X-Forwarded-Prefix` and
/// under the response's `Location` and cookie paths.
fn mount_prefix<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<MountPrefix>()
        .map(|prefix| prefix.as_str().to_owned())
        .unwrap_or_default()
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop fields and every field named in `Connection`. `Upgrade` is removed too
/// unless this message is a WebSocket handshake being tunnelled.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// How a request travels to the backend, which decides the form of its URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The pooled client, which wants the absolute form (`http://backend/path?query`); the
    /// authority is a placeholder, the connector always dials the backend's socket.
    Pool,
    /// A WebSocket handshake on a connection of its own, which sends the URI as given: the
    /// origin form (`/ws?…`), with `Upgrade` kept and a `Host` always present.
    Tunnel,
}

/// Turns the client's request into the backend's: HTTP/1.1, the URI form `via` needs,
/// hop-by-hop fields out, forwarding fields (`prefix` is the request's [`MountPrefix`]) and
/// the gateway-only identity header in.
fn prepare_request(req: Request<Body>, prefix: &str, via: Via) -> Request<Body> {
    let (mut parts, body) = req.into_parts();
    let scheme_is_https = parts.uri.scheme_str() == Some("https");
    // The backend speaks HTTP/1.1 whatever the client spoke: the pool refuses an HTTP/2
    // request on an HTTP/1 connection, and HTTP/1.0 would cost keep-alive.
    parts.version = http::Version::HTTP_11;
    // An HTTP/2 request names its host in the URI (`:authority`), not in a `Host` field: the
    // backend (and X-Forwarded-Host below) gets it as from an HTTP/1.1 client.
    if !parts.headers.contains_key(header::HOST) {
        // Host and port only: never a `user:password@` prefix.
        let host = parts
            .uri
            .authority()
            .map(|authority| match authority.port() {
                Some(port) => format!("{}:{port}", authority.host()),
                None => authority.host().to_owned(),
            });
        if let Some(host) = host.and_then(|host| HeaderValue::try_from(host).ok()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    // Built from parts: no re-parsing of the path.
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = match via {
        Via::Pool => {
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(http::uri::Authority::from_static(BACKEND_AUTHORITY));
            uri.path_and_query = Some(path_and_query);
            Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("http://backend/"))
        }
        Via::Tunnel => Uri::from(path_and_query),
    };
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, via == Via::Tunnel);
    headers.remove(&USER_HEADER);
    // What a trusted front proxy says about the user is the gateway's to read, never the
    // notebook's: a backend must not take a client's word for who it is.
    for name in crate::user::IDENTITY_HEADERS {
        headers.remove(*name);
    }

    if let Some(RemoteAddr(addr)) = parts.extensions.get::<RemoteAddr>() {
        let ip = addr.ip().to_string();
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip,
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if scheme_is_https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    } else if via == Via::Tunnel {
        // HTTP/1.1 needs a `Host`; the pooled client would set this one from the URI.
        headers.insert(header::HOST, HeaderValue::from_static(BACKEND_AUTHORITY));
    }
    if let Ok(prefix) = HeaderValue::try_from(if prefix.is_empty() { "/" } else { prefix }) {
        headers.insert(X_FORWARDED_PREFIX, prefix);
    }
    if let Some(user) = parts.extensions.get::<User>() {
        if let Ok(value) = HeaderValue::try_from(encode_user(user)) {
            headers.insert(USER_HEADER, value);
        }
    }
    Request::from_parts(parts, body)
}

/// `base64url(json)` of the user, decoded by the launcher's `Identity` middleware.
fn encode_user(user: &User) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.to_backend_json())
}

/// Cleans the backend's response and maps its absolute paths under the mount prefix.
pub(crate) fn prepare_response(mut response: Response<Body>, prefix: &str) -> Response<Body> {
    let upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    strip_cors(headers);
    if prefix.is_empty() {
        return response;
    }
    if let Some(location) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        if location.starts_with('/') && !location.starts_with("//") {
            if let Ok(value) = HeaderValue::try_from(format!("{prefix}{location}")) {
                headers.insert(header::LOCATION, value);
            }
        }
    }
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|value| rewrite_cookie_path(value, prefix))
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for cookie in cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// Removes every `Access-Control-*` field: marimo answers `Access-Control-Allow-Origin: *`
/// (pages, `/sse`), which would let any site read them. The gateway answers CORS itself, for
/// allowed origins only.
fn strip_cors(headers: &mut HeaderMap) {
    let cors: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        headers.remove(name);
    }
}

/// `Path=/x` becomes `Path={prefix}/x`; other attributes are kept byte for byte.
fn rewrite_cookie_path(value: &HeaderValue, prefix: &str) -> HeaderValue {
    let Ok(text) = value.to_str() else {
        return value.clone();
    };
    let rewritten: Vec<String> = text
        .split(';')
        .map(|attribute| {
            let trimmed = attribute.trim_start();
            match trimmed.split_once('=') {
                Some((name, path))
                    if name.eq_ignore_ascii_case("path") && path.starts_with('/') =>
                {
                    let leading = &attribute[..attribute.len() - trimmed.len()];
                    format!("{leading}{name}={prefix}{path}")
                }
                _ => attribute.to_owned(),
            }
        })
        .collect();
    HeaderValue::try_from(rewritten.join(";")).unwrap_or_else(|_| value.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrade_is_kept_for_websocket_handshakes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }

    #[test]
    fn backend_cors_headers_are_removed() {
        for prefix in ["", "/app"] {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            headers.insert(
                "Access-Control-Allow-Credentials",
                HeaderValue::from_static("true"),
            );
            headers.insert(
                "access-control-expose-headers",
                HeaderValue::from_static("Content-Disposition"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            let response = prepare_response(response, prefix);
            let names: Vec<&str> = response.headers().keys().map(|n| n.as_str()).collect();
            assert_eq!(names, ["vary"], "{prefix:?}");
        }
    }

    #[test]
    fn set_cookie_paths_and_locations_move_under_the_prefix() {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Path=/; HttpOnly"),
        );
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("b=2; path=/x; SameSite=Lax"),
        );
        headers.append(header::SET_COOKIE, HeaderValue::from_static("c=3"));
        headers.insert(
            header::LOCATION,
            HeaderValue::from_static("/auth/login?next=%2F"),
        );
        let response = prepare_response(response, "/dash");
        let cookies: Vec<&str> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            [
                "a=1; Path=/dash/; HttpOnly",
                "b=2; path=/dash/x; SameSite=Lax",
                "c=3"
            ]
        );
        assert_eq!(
            response.headers()[header::LOCATION],
            "/dash/auth/login?next=%2F"
        );
    }

    #[test]
    fn upstream_requests_are_http_1_1_with_the_clients_host() {
        let req = Request::get("http://user:pw@notebooks.example:8443/nb/?x=1")
            .version(http::Version::HTTP_2)
            .body(Body::empty())
            .unwrap();
        let req = prepare_request(req, "/nb", Via::Pool);
        assert_eq!(req.version(), http::Version::HTTP_11);
        assert_eq!(req.uri(), "http://backend/nb/?x=1");
        assert_eq!(req.headers()[header::HOST], "notebooks.example:8443");
        assert_eq!(req.headers()["x-forwarded-host"], "notebooks.example:8443");

        let req = Request::get("/")
            .version(http::Version::HTTP_10)
            .header(header::HOST, "given")
            .body(Body::empty())
            .unwrap();
        let req = prepare_request(req, "", Via::Pool);
        assert_eq!(req.version(), http::Version::HTTP_11);
        assert_eq!(req.headers()[header::HOST], "given");
    }

    #[test]
    fn tunnelled_handshakes_keep_the_origin_form_and_upgrade() {
        let req = Request::get("/ws?session_id=s1")
            .version(http::Version::HTTP_10)
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        let req = prepare_request(req, "/nb", Via::Tunnel);
        assert_eq!(req.version(), http::Version::HTTP_11);
        assert_eq!(req.uri(), "/ws?session_id=s1");
        assert_eq!(req.headers()[header::UPGRADE], "websocket");
        assert_eq!(req.headers()[header::CONNECTION], "upgrade");
        assert_eq!(req.headers()[header::HOST], "backend");
        assert!(req.headers().get("x-forwarded-host").is_none());
        assert_eq!(req.headers()["x-forwarded-prefix"], "/nb");

        let pooled = Request::get("/ws").body(Body::empty()).unwrap();
        let pooled = prepare_request(pooled, "", Via::Pool);
        assert_eq!(pooled.uri(), "http://backend/ws");
        assert_eq!(pooled.headers()["x-forwarded-prefix"], "/");
    }

    #[tokio::test]
    async fn only_small_bodies_of_known_length_are_held_for_a_replay() {
        let held = |body: Body| async move {
            match Outgoing::new(Request::post("/").body(body).unwrap()).await {
                Ok(Outgoing::Held(_, bytes)) => Some(bytes.len()),
                Ok(Outgoing::Streamed(_)) => None,
                Err(error) => panic!("{error}"),
            }
        };
        assert_eq!(held(Body::empty()).await, Some(0));
        assert_eq!(held(Body::from("{}")).await, Some(2));
        let limit = REPLAY_LIMIT as usize;
        assert_eq!(held(Body::from(vec![b'x'; limit])).await, Some(limit));
        assert_eq!(held(Body::from(vec![b'x'; limit + 1])).await, None);
        // A stream of unknown length is never held, however short.
        let stream = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<
            _,
            std::convert::Infallible,
        >(
            http_body::Frame::data(Bytes::from_static(b"x")),
        )]));
        assert_eq!(held(Body::new(stream)).await, None);
    }

    #[test]
    fn client_cannot_forge_the_identity_header() {
        let mut req = Request::get("/x").body(Body::empty()).unwrap();
        req.headers_mut()
            .insert(USER_HEADER, HeaderValue::from_static("forged"));
        let req = prepare_request(req, "", Via::Pool);
        assert!(req.headers().get(&USER_HEADER).is_none());

        let mut req = Request::get("/x").body(Body::empty()).unwrap();
        req.headers_mut()
            .insert(USER_HEADER, HeaderValue::from_static("forged"));
        req.extensions_mut().insert(User::new("ada"));
        let req = prepare_request(req, "", Via::Pool);
        assert_ne!(req.headers()[&USER_HEADER], "forged");
    }

    #[test]
    fn front_proxy_identity_headers_never_reach_a_backend() {
        for via in [Via::Pool, Via::Tunnel] {
            let mut req = Request::get("/x").body(Body::empty()).unwrap();
            for name in [
                "x-forwarded-user",
                "x-forwarded-email",
                "x-forwarded-groups",
                "x-forwarded-preferred-username",
                "x-pomerium-jwt-assertion",
            ] {
                req.headers_mut()
                    .insert(name, HeaderValue::from_static("admin"));
            }
            let req = prepare_request(req, "", via);
            let left: Vec<&str> = req
                .headers()
                .keys()
                .map(|name| name.as_str())
                .filter(|name| {
                    name.contains("user")
                        || name.contains("pomerium")
                        || name.contains("email")
                        || name.contains("groups")
                })
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}
