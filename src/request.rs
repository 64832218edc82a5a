//! What the gateway reads from a request and records in it: the extensions it inserts
//! ([`RemoteAddr`], [`LocalAddr`], [`OriginalUri`], [`MountPrefix`]), the questions every
//! layer asks the same way (a page load? a WebSocket?), and the one rewrite that moves a
//! request into a mount.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};

/// The address of the client at the other end of the connection, inserted into every request's
/// extensions by [`serve`](crate::serve()).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// The address of the listener that accepted the connection (as it was bound: `127.0.0.1:2718`,
/// `0.0.0.0:2718`), inserted into every request's extensions by [`serve`](crate::serve()).
///
/// A [`MarimoService`](crate::MarimoService) that sees a loopback address here answers only
/// the loopback names (`localhost`, IP addresses) and
/// [allowed hosts](crate::AppBuilder::allowed_hosts), against DNS rebinding. A host serving
/// the service with its own accept loop can insert it too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The request URI as the client sent it to this service, before any mount prefix was stripped.
///
/// Inserted by the first (outermost) marimo_rs router a request passes through; inner routers
/// keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalUri(pub Uri);

/// The path prefix stripped from a request before it reached the current mount.
///
/// `""` for the root mount, `/dashboard` for a mount at `/dashboard`. When marimo_rs services
/// are nested, and for the notebooks of a directory mount, prefixes add up
/// (`/outer/inner`, `/apps/team/q3`). Only the gateway sets it: the proxy maps a backend's
/// `Location` and cookie paths under it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MountPrefix(pub(crate) String);

impl MountPrefix {
    /// The prefix, `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A browser loading a page, rather than a script calling an API or opening a WebSocket:
/// `GET`/`HEAD`, an `Accept` header that names `text/html` (media types ignore case), no
/// `/api/` anywhere in the path, and not [asking for a WebSocket](asks_for_websocket).
///
/// Page loads are answered for a person: a redirect to the login form, a self-refreshing
/// "starting" page. Everything else gets an answer a program can act on.
pub(crate) fn is_page_load<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.uri().path().contains("/api/")
        && !asks_for_websocket(req.headers())
        && accepts_html(req.headers())
}

/// Whether an `Accept` field names `text/html` (any case): a browser wants a page back.
pub(crate) fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|accept| contains_ignore_case(accept.as_bytes(), b"text/html"))
}

/// Whether the request asks for a WebSocket: an `Upgrade` header naming `websocket`
/// (any case, alone or in a list). What a guard refuses without credentials, whether or not
/// the request could be upgraded.
pub(crate) fn asks_for_websocket(headers: &HeaderMap) -> bool {
    names_token(headers, header::UPGRADE, b"websocket")
}

/// A WebSocket handshake that can be tunnelled: it [asks for a WebSocket](asks_for_websocket)
/// and its `Connection` header names `upgrade`, without which the server would not hand the
/// connection over.
pub(crate) fn is_websocket_handshake(headers: &HeaderMap) -> bool {
    asks_for_websocket(headers) && names_token(headers, header::CONNECTION, b"upgrade")
}

/// Whether a comma-separated header `name` lists `token` (ASCII case-insensitive).
fn names_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Whether `needle` occurs in `haystack`, ignoring ASCII case.
pub(crate) fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// A client on this machine: a loopback peer ([`RemoteAddr`]) whose request no proxy forwarded
/// (a reverse proxy on the same machine relays everyone's requests from loopback). Without
/// `RemoteAddr` nobody is local.
pub(crate) fn is_local_client<B>(req: &Request<B>) -> bool {
    let Some(RemoteAddr(addr)) = req.extensions().get() else {
        return false;
    };
    let ip = match addr.ip() {
        IpAddr::V6(ip) => ip.to_canonical(),
        ip @ IpAddr::V4(_) => ip,
    };
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| req.headers().contains_key(*name));
    ip.is_loopback() && !forwarded
}

/// Replaces the path and query of `uri`, keeping its scheme and authority. `query` is the
/// text after `?` (`Some("")` keeps a bare `?`), `None` for no query. On error (a path or query
/// that is not URI text) `uri` is left as `/`: callers answer `400`.
pub(crate) fn set_path_and_query(
    uri: &mut Uri,
    path: &str,
    query: Option<&str>,
) -> Result<(), http::Error> {
    let path_and_query = match query {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}"))?,
        None => PathAndQuery::try_from(path)?,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(path_and_query);
    *uri = Uri::from_parts(parts)?;
    Ok(())
}

/// Moves a request into the mount at `prefix` (a router's mount, or one notebook of a
/// directory mount), which the request's path starts with: the path loses `prefix` (`/a/x`
/// becomes `/x`), the query stays byte for byte, `prefix` is appended to the [`MountPrefix`],
/// and the [`OriginalUri`] is recorded unless an outer router did. An empty `prefix` leaves
/// the URI as it is.
pub(crate) fn enter_mount<B>(req: &mut Request<B>, prefix: &str) -> Result<(), http::Error> {
    let original = req.uri().clone();
    if !prefix.is_empty() {
        let rest = original.path().get(prefix.len()..).unwrap_or_default();
        set_path_and_query(req.uri_mut(), rest, original.query())?;
    }
    let extensions = req.extensions_mut();
    let outer = extensions
        .get::<MountPrefix>()
        .map(MountPrefix::as_str)
        .unwrap_or_default();
    let combined = MountPrefix(format!("{outer}{prefix}"));
    extensions.insert(combined);
    if extensions.get::<OriginalUri>().is_none() {
        extensions.insert(OriginalUri(original));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request(method: Method, path: &str, headers: &[(&str, &'static str)]) -> Request<()> {
        let mut req = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, HeaderValue::from_static(value));
        }
        req.body(()).unwrap()
    }

    #[test]
    fn page_loads_are_browser_navigations_outside_the_api() {
        let page = |method: Method, path: &str, accept: &'static str| {
            is_page_load(&request(method, path, &[("accept", accept)]))
        };
        assert!(page(Method::GET, "/x", "TEXT/HTML,*/*"));
        assert!(page(Method::HEAD, "/", "text/html"));
        assert!(!page(Method::POST, "/x", "text/html"));
        assert!(!page(Method::GET, "/api/x", "text/html"));
        assert!(!page(Method::GET, "/dash/api/x", "text/html"));
        assert!(!page(Method::GET, "/x", "application/json"));
        assert!(!page(Method::GET, "/x", "*/*"));
        let socket = request(
            Method::GET,
            "/ws",
            &[("accept", "text/html"), ("upgrade", "websocket")],
        );
        assert!(!is_page_load(&socket));
    }

    #[test]
    fn websocket_requests_and_handshakes() {
        let headers = |pairs: &[(&str, &'static str)]| {
            request(Method::GET, "/", pairs).into_parts().0.headers
        };
        let listed = headers(&[("upgrade", "h2c, WebSocket")]);
        assert!(asks_for_websocket(&listed));
        assert!(!is_websocket_handshake(&listed), "no Connection: upgrade");
        let handshake = headers(&[
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
        ]);
        assert!(is_websocket_handshake(&handshake));
        assert!(!asks_for_websocket(&headers(&[("upgrade", "websocketx")])));
        assert!(!asks_for_websocket(&headers(&[("connection", "upgrade")])));
    }

    #[test]
    fn entering_a_mount_strips_its_prefix_and_adds_it_up() {
        let mut req = Request::get("http://gw.example/a/b/x?q=%2F")
            .body(())
            .unwrap();
        enter_mount(&mut req, "/a").unwrap();
        enter_mount(&mut req, "/b").unwrap();
        assert_eq!(*req.uri(), "http://gw.example/x?q=%2F");
        let extensions = req.extensions();
        assert_eq!(extensions.get::<MountPrefix>().unwrap().as_str(), "/a/b");
        assert_eq!(
            extensions.get::<OriginalUri>().unwrap().0,
            "http://gw.example/a/b/x?q=%2F"
        );

        let mut root = Request::get("/x?y").body(()).unwrap();
        enter_mount(&mut root, "").unwrap();
        assert_eq!(*root.uri(), "/x?y");
        assert_eq!(root.extensions().get::<MountPrefix>().unwrap().as_str(), "");
    }

    #[test]
    fn the_query_can_be_replaced_or_dropped() {
        let mut uri: Uri = "/p?access_token=t&a=1".parse().unwrap();
        set_path_and_query(&mut uri, "/p", Some("a=1")).unwrap();
        assert_eq!(uri, "/p?a=1");
        set_path_and_query(&mut uri, "/p", None).unwrap();
        assert_eq!(uri, "/p");
        assert!(set_path_and_query(&mut uri, "/p q", None).is_err());
    }
}
