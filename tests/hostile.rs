//! Hostile input over real TCP: malformed and malicious requests sent as raw bytes to a served
//! `create_app()` with token auth, whose mounts count what reaches them.
//!
//! Every row states the answer (a status, several for pipelining, or "connection closed") and
//! how many requests may reach each mount. After the table a normal request must still work,
//! and a summary line gives the counts. The slow-client tests measure when the server cuts
//! the connection.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{counter, raw, TestServer};
use marimo_rs::{create_app, AuthLayer, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "sup3rs3cr3t";
const AUTH: &str = "Authorization: Bearer sup3rs3cr3t\r\n";

struct Target {
    server: TestServer,
    app: Arc<AtomicUsize>,
    admin: Arc<AtomicUsize>,
}

/// `/app` and `/admin` counters behind token auth (no login limit: this table is about
/// parsing; tests/auth.rs covers the limit), served with a short header read timeout.
async fn target(header_timeout: Duration) -> Target {
    let app = Arc::new(AtomicUsize::new(0));
    let admin = Arc::new(AtomicUsize::new(0));
    let service = create_app()
        .with_service("/app", counter(app.clone()))
        .with_service("/admin", counter(admin.clone()))
        .auth(AuthLayer::new(Token::new(TOKEN)).no_login_limit())
        // The rows name the gateway `gw`; bound to loopback, it answers that name only when
        // allowed (DNS rebinding guard).
        .allowed_hosts(["gw"])
        .build()
        .unwrap();
    let server =
        TestServer::start_with(service, |serve| serve.header_read_timeout(header_timeout)).await;
    Target { server, app, admin }
}

/// What a row must get back.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status first (the connection may stay open).
    Status(u16),
    /// This status, or the connection closed without an HTTP/1 response (the server may close
    /// before the client has finished writing, and the reset can swallow the answer).
    StatusOrClosed(u16),
    /// This status, then the server closes the connection without reading another request.
    StatusThenClosed(u16),
    /// No HTTP/1 response; the connection closed.
    Closed,
    /// These statuses, in order (pipelining).
    Statuses(&'static [u16]),
}

struct Row {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
    /// Requests that may reach `/app`.
    app: usize,
    /// Requests that may reach `/admin`.
    admin: usize,
}

fn row(name: &str, bytes: impl Into<Vec<u8>>, expect: Expect, app: usize) -> Row {
    Row {
        name: name.to_owned(),
        bytes: bytes.into(),
        expect,
        app,
        admin: 0,
    }
}

/// `METHOD target HTTP/1.1` with a Host header, `extra` header lines and an empty line.
fn req(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n").into_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn basic(userpass: &[u8]) -> String {
    format!("Authorization: Basic {}\r\n", STANDARD.encode(userpass))
}

fn table() -> Vec<Row> {
    use Expect::*;
    let smuggled = format!("GET /admin/ HTTP/1.1\r\nHost: gw\r\n{AUTH}\r\n");
    let big = "a".repeat(70 * 1024);
    let under = "a".repeat(60 * 1024);
    let many = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let mut rows = vec![
        // Baseline.
        row("valid bearer", req("GET", "/app/", AUTH), Status(200), 1),
        row("no credentials", req("GET", "/app/", ""), Status(401), 0),
        Row {
            admin: 1,
            ..row("valid admin", req("GET", "/admin/", AUTH), Status(200), 0)
        },
        row("bare mount redirects", req("GET", "/app", AUTH), Status(307), 0),
        row("bare mount with query", req("GET", "/app?x=1", AUTH), Status(307), 0),
        row("unknown path", req("GET", "/nope/", AUTH), Status(404), 0),
        row("access_token query", req("GET", &format!("/app/?access_token={TOKEN}"), ""), Status(200), 1),
        // Request smuggling: ambiguous framing must never let the tail through as a request.
        row(
            "CL then TE chunked",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n")), b"0\r\n\r\n", smuggled.as_bytes()]), StatusThenClosed(200), 1),
        row(
            "TE chunked then CL",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: chunked\r\nContent-Length: 40\r\n")), b"0\r\n\r\n", smuggled.as_bytes()]), StatusThenClosed(200), 1),
        row(
            "CL 0 with TE chunked, smuggled in the chunk",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n")), format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len()).as_bytes()]), StatusThenClosed(200), 1),
        row(
            "duplicate Content-Length, different",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 5\r\nContent-Length: 6\r\n")), b"hello!"]),
            StatusOrClosed(400),
            0,
        ),
        row(
            "Content-Length list, different",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 5, 6\r\n")), b"hello!"]),
            StatusOrClosed(400),
            0,
        ),
        row("Transfer-Encoding: chunked, identity", cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: chunked, identity\r\n")), b"0\r\n\r\n"]), StatusOrClosed(400), 0),
        row("Transfer-Encoding: identity", cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: identity\r\n")), b"hello"]), StatusOrClosed(400), 0),
        row("Transfer-Encoding: xchunked", cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: xchunked\r\n")), b"0\r\n\r\n"]), StatusOrClosed(400), 0),
        row("Transfer-Encoding: gzip", cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: gzip\r\n")), b"0\r\n\r\n"]), StatusOrClosed(400), 0),
        row("space before colon in Transfer-Encoding", cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding : chunked\r\n")), b"0\r\n\r\n", smuggled.as_bytes()]), StatusOrClosed(400), 0),
        row(
            "chunked on HTTP/1.0",
            format!("POST /app/ HTTP/1.0\r\nHost: gw\r\n{AUTH}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            StatusOrClosed(400),
            0,
        ),
        row("negative Content-Length", req("POST", "/app/", &format!("{AUTH}Content-Length: -1\r\n")), StatusOrClosed(400), 0),
        row("plus-signed Content-Length", cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: +5\r\n")), b"hello"]), StatusOrClosed(400), 0),
        row("hex Content-Length", cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 0x5\r\n")), b"hello"]), StatusOrClosed(400), 0),
        row("overflowing Content-Length", req("POST", "/app/", &format!("{AUTH}Content-Length: 99999999999999999999999\r\n")), StatusOrClosed(400), 0),
        row("empty Content-Length", req("POST", "/app/", &format!("{AUTH}Content-Length:\r\n")), StatusOrClosed(400), 0),
        row(
            "chunk size overflow",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: chunked\r\n")), b"fffffffffffffffffffff\r\n", smuggled.as_bytes()]), StatusThenClosed(200), 1),
        row(
            "bad chunk size, request tail smuggled",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Transfer-Encoding: chunked\r\n")), b"zz\r\n", smuggled.as_bytes()]), StatusThenClosed(200), 1),
        row(
            "body longer than Content-Length: the rest is a request",
            cat(&[&req("POST", "/app/", &format!("{AUTH}Content-Length: 5\r\n")), b"hello", smuggled.as_bytes()]),
            Statuses(&[200, 200]),
            1,
        ),
        // Line endings, folding, malformed headers.
        row("bare LF line endings", format!("GET /app/ HTTP/1.1\nHost: gw\n{}\n", AUTH.replace("\r\n", "\n")).into_bytes(), Status(200), 1),
        row("bare CR in a header", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nX: a\rb\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("obs-fold header", req("GET", "/app/", &format!("{AUTH}X-Folded: a\r\n b\r\n")), StatusOrClosed(400), 0),
        row("obs-fold continuing Authorization", req("GET", "/app/", "Authorization: Bearer\r\n sup3rs3cr3t\r\n"), StatusOrClosed(400), 0),
        row("obs-fold with a tab", req("GET", "/app/", &format!("{AUTH}X-Folded: a\r\n\tb\r\n")), StatusOrClosed(400), 0),
        row("space in a header name", req("GET", "/app/", &format!("{AUTH}Bad Header: x\r\n")), StatusOrClosed(400), 0),
        row("header without a colon", req("GET", "/app/", &format!("{AUTH}NoColon\r\n")), StatusOrClosed(400), 0),
        row("empty header name", req("GET", "/app/", &format!("{AUTH}: x\r\n")), StatusOrClosed(400), 0),
        row("header line starting with a space", req("GET", "/app/", &format!(" X: y\r\n{AUTH}")), StatusOrClosed(400), 0),
        // NUL and non-UTF-8 bytes.
        row("NUL in the path", cat(&[b"GET /app/\0x HTTP/1.1\r\nHost: gw\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("NUL in a header value", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nX: a\0b\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("NUL in a header name", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nX\0Y: a\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("NUL in the method", cat(&[b"G\0T /app/ HTTP/1.1\r\nHost: gw\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("NUL in the token", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sup3r\0s3cr3t\r\n\r\n"]), StatusOrClosed(400), 0),
        row("non-UTF-8 path", cat(&[b"GET /app/\xff\xfe HTTP/1.1\r\nHost: gw\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        row("non-UTF-8 header value", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nX: caf\xe9\r\n", AUTH.as_bytes(), b"\r\n"]), Status(200), 1),
        row("non-UTF-8 token", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"]), Status(401), 0),
        row("non-UTF-8 cookie", cat(&[b"GET /app/ HTTP/1.1\r\nHost: gw\r\nCookie: a=\xff\r\n\r\n"]), Status(401), 0),
        row("DEL in the path", cat(&[b"GET /app/\x7f HTTP/1.1\r\nHost: gw\r\n", AUTH.as_bytes(), b"\r\n"]), StatusOrClosed(400), 0),
        // Percent-encoding and traversal: matching is on the raw path, nothing is decoded.
        row("invalid percent-encoding reaches the mount raw", req("GET", "/app/%zz%", AUTH), Status(200), 1),
        row("invalid percent-encoding, no credentials", req("GET", "/app/%zz", ""), Status(401), 0),
        row("encoded slash is not a separator", req("GET", "/app%2fx", AUTH), Status(404), 0),
        row("encoded mount name is another path", req("GET", "/%61pp/", AUTH), Status(404), 0),
        row("mount names are case-sensitive", req("GET", "/APP/", AUTH), Status(404), 0),
        row("dot-dot out of a mount stays in it", req("GET", "/app/../admin/", AUTH), Status(200), 1),
        row("encoded dot-dot stays in the mount", req("GET", "/app/%2e%2e/admin/", AUTH), Status(200), 1),
        row("upper-case encoded dot-dot", req("GET", "/app/%2E%2E%2Fadmin/", AUTH), Status(200), 1),
        row("dot-dot with encoded slash", req("GET", "/app/..%2fadmin/", AUTH), Status(200), 1),
        row("dot-dot before a mount is not that mount", req("GET", "/x/../admin/", AUTH), Status(404), 0),
        row("leading dot-dot", req("GET", "/../admin/", AUTH), Status(404), 0),
        row("dot segment before a mount", req("GET", "/./admin/", AUTH), Status(404), 0),
        row("double slash before a mount", req("GET", "//admin/", AUTH), Status(404), 0),
        row("backslash traversal", req("GET", "/app\\..\\admin\\", AUTH), StatusOrClosed(404), 0),
        row("backslash inside a mount", req("GET", "/app/..\\..\\admin", AUTH), StatusOrClosed(200), 1),
        row("encoded backslash", req("GET", "/app%5c..%5cadmin/", AUTH), Status(404), 0),
        row("traversal without credentials", req("GET", "/admin/../app/", ""), Status(401), 0),
        row("overlong UTF-8 dot", req("GET", "/app/%c0%ae%c0%ae/admin/", AUTH), Status(200), 1),
        row("semicolon path parameter", req("GET", "/app;x=1/", AUTH), Status(404), 0),
        row("fragment in the target", req("GET", "/app/#frag", AUTH), Status(200), 1),
        // Request-target forms and methods.
        row("absolute-form", req("GET", "http://evil.example/app/", AUTH), Status(200), 1),
        row("absolute-form to another mount, no credentials", req("GET", "http://gw/admin/", ""), Status(401), 0),
        row("absolute-form with userinfo", req("GET", "http://user:pass@gw/app/", AUTH), Status(200), 1),
        row("authority-form GET", req("GET", "gw:443", AUTH), Status(404), 0),
        row("asterisk-form OPTIONS", req("OPTIONS", "*", AUTH), Status(404), 0),
        row("asterisk-form GET", req("GET", "*", AUTH), Status(404), 0),
        row("CONNECT", req("CONNECT", "evil.example:443", AUTH), Status(404), 0),
        row("CONNECT without credentials", req("CONNECT", "evil.example:443", ""), Status(401), 0),
        row("TRACE reaches the mount, which decides", req("TRACE", "/app/", AUTH), Status(200), 1),
        row("TRACE without credentials", req("TRACE", "/app/", ""), Status(401), 0),
        row("extension method", req("PURGE", "/app/", AUTH), Status(200), 1),
        row("invalid method characters", req("G@T", "/app/", AUTH), StatusOrClosed(400), 0),
        row("empty method", req("", "/app/", AUTH), StatusOrClosed(400), 0),
        row("target without a slash", req("GET", "app/", AUTH), StatusOrClosed(400), 0),
        row("two spaces in the request line", format!("GET  /app/ HTTP/1.1\r\nHost: gw\r\n{AUTH}\r\n").into_bytes(), StatusOrClosed(400), 0),
        row("HTTP/0.9 request", b"GET /app/\r\n".to_vec(), StatusOrClosed(400), 0),
        row("HTTP/2.0 in an HTTP/1 request line", format!("GET /app/ HTTP/2.0\r\nHost: gw\r\n{AUTH}\r\n").into_bytes(), StatusOrClosed(400), 0),
        row("HTTP/1.2", format!("GET /app/ HTTP/1.2\r\nHost: gw\r\n{AUTH}\r\n").into_bytes(), StatusOrClosed(400), 0),
        row("HTTP/1.0 keeps working", format!("GET /app/ HTTP/1.0\r\n{AUTH}\r\n").into_bytes(), Status(200), 1),
        row("lower-case protocol", format!("GET /app/ http/1.1\r\nHost: gw\r\n{AUTH}\r\n").into_bytes(), StatusOrClosed(400), 0),
        row("no Host header", format!("GET /app/ HTTP/1.1\r\n{AUTH}\r\n").into_bytes(), Status(200), 1),
        row("leading empty lines", cat(&[b"\r\n\r\n", &req("GET", "/app/", AUTH)]), Status(200), 1),
        row("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), StatusOrClosed(400), 0),
        row("HTTP/2 preface then garbage", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage-garbage".to_vec(), Closed, 0),
        // Size limits: 64 KiB of request head, 100 header fields.
        row("70 KiB header value", req("GET", "/app/", &format!("{AUTH}X-Big: {big}\r\n")), StatusOrClosed(431), 0),
        row("70 KiB header name", req("GET", "/app/", &format!("{AUTH}X-{big}: v\r\n")), StatusOrClosed(431), 0),
        row("70 KiB request target", req("GET", &format!("/app/{big}"), AUTH), StatusOrClosed(431), 0),
        row("70 KiB cookie", req("GET", "/app/", &format!("{AUTH}Cookie: a={big}\r\n")), StatusOrClosed(431), 0),
        row("60 KiB header fits", req("GET", "/app/", &format!("{AUTH}X-Big: {under}\r\n")), Status(200), 1),
        row("100 header fields fit", req("GET", "/app/", &format!("{AUTH}{}", many(98))), Status(200), 1),
        row("101 header fields", req("GET", "/app/", &format!("{AUTH}{}", many(99))), StatusOrClosed(431), 0),
        row("5,000 header fields", req("GET", "/app/", &format!("{AUTH}{}", many(5_000))), StatusOrClosed(431), 0),
        // Credentials.
        row("lower-case bearer scheme", req("GET", "/app/", "authorization: bearer sup3rs3cr3t\r\n"), Status(200), 1),
        row("Basic with any user", req("GET", "/app/", &basic(b"ada:sup3rs3cr3t")), Status(200), 1),
        row("bad base64", req("GET", "/app/", "Authorization: Basic !!!not-base64!!!\r\n"), Status(401), 0),
        row("base64 with no colon", req("GET", "/app/", &basic(b"sup3rs3cr3t")), Status(401), 0),
        row("empty Basic user", req("GET", "/app/", &basic(b":sup3rs3cr3t")), Status(401), 0),
        row("non-UTF-8 Basic user", req("GET", "/app/", &basic(b"\xff:sup3rs3cr3t")), Status(401), 0),
        row("token with a suffix", req("GET", "/app/", "Authorization: Bearer sup3rs3cr3tX\r\n"), Status(401), 0),
        row("token with trailing junk", req("GET", "/app/", "Authorization: Bearer sup3rs3cr3t x\r\n"), Status(401), 0),
        row("two Authorization headers", req("GET", "/app/", &format!("{AUTH}{AUTH}")), Status(401), 0),
        row("10 KiB Authorization", req("GET", "/app/", &format!("Authorization: Bearer {}\r\n", "a".repeat(10_240))), Status(401), 0),
        row("Basic of 1,000 colons", req("GET", "/app/", &basic(&[b':'; 1000])), Status(401), 0),
        row("Digest scheme", req("GET", "/app/", "Authorization: Digest sup3rs3cr3t\r\n"), Status(401), 0),
        row("forged session cookie", req("GET", "/app/", "Cookie: marimo_rs_session_00000000=v1.99999999999.dXNlcg.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"), Status(401), 0),
        row("200 cookies", req("GET", "/app/", &format!("Cookie: {}\r\n", (0..200).map(|i| format!("c{i}=v")).collect::<Vec<_>>().join("; "))), Status(401), 0),
        row("identity header cannot be injected without credentials", req("GET", "/app/", "X-Marimo-Rs-User: admin\r\n"), Status(401), 0),
        row("empty access_token", req("GET", "/app/?access_token=", ""), Status(401), 0),
        row("access_token with bad percent-encoding", req("GET", "/app/?access_token=%zz", ""), Status(401), 0),
        // WebSocket upgrades.
        row("upgrade without credentials", req("GET", "/app/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"), Status(403), 0),
        row("upgrade without Connection, no credentials", req("GET", "/app/ws", "Upgrade: websocket\r\n"), Status(403), 0),
        row("upgrade from a foreign origin", req("GET", "/app/ws", &format!("{AUTH}Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://evil.example\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")), Status(403), 0),
        row("upgrade with two origins", req("GET", "/app/ws", &format!("{AUTH}Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://gw\r\nOrigin: http://gw\r\n")), Status(403), 0),
        row("upgrade with Origin null", req("GET", "/app/ws", &format!("{AUTH}Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: null\r\n")), Status(403), 0),
        // Cross-site requests and DNS rebinding: refused whatever the credentials.
        row("POST from a foreign origin", req("POST", "/app/", &format!("{AUTH}Origin: http://evil.example\r\nContent-Length: 0\r\n")), Status(403), 0),
        row("POST from another port of the same host", req("POST", "/app/", &format!("{AUTH}Origin: http://gw:9999\r\nContent-Length: 0\r\n")), Status(403), 0),
        row("POST with Sec-Fetch-Site: same-site", req("POST", "/app/", &format!("{AUTH}Sec-Fetch-Site: same-site\r\nContent-Length: 0\r\n")), Status(403), 0),
        row("event stream for a foreign origin", req("GET", "/app/sse?session_id=s", &format!("{AUTH}Accept: text/event-stream\r\nOrigin: http://evil.example\r\n")), Status(403), 0),
        row("POST from the gateway's own origin", req("POST", "/app/", &format!("{AUTH}Origin: http://gw\r\nContent-Length: 0\r\n")), Status(200), 1),
        row("Host naming another site (DNS rebinding)", format!("GET /app/ HTTP/1.1\r\nHost: evil.test\r\n{AUTH}\r\n").into_bytes(), Status(403), 0),
        row("upgrade in a list, no credentials", req("GET", "/app/ws", "Upgrade: h2c, WebSocket\r\nConnection: Upgrade\r\n"), Status(403), 0),
        row("upgrade missing the key reaches the mount, which decides", req("GET", "/app/ws", &format!("{AUTH}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n")), Status(200), 1),
        row("upgrade with the wrong version reaches the mount", req("GET", "/app/ws", &format!("{AUTH}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n")), Status(200), 1),
        row("h2c upgrade is not served", req("GET", "/app/", &format!("{AUTH}Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")), Status(200), 1),
        // The login form.
        row("login form", req("GET", "/auth/login?next=//evil.example", ""), Status(200), 0),
        row("login with a declared 20 KB body", cat(&[&req("POST", "/auth/login", "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 20000\r\n"), b"password=x"]), Status(413), 0),
        row("login with a 20 KB chunked body", cat(&[&req("POST", "/auth/login", "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"), format!("4e20\r\npassword={}\r\n0\r\n\r\n", "x".repeat(20_000 - 9)).as_bytes()]), Status(413), 0),
        row("login with another content type", cat(&[&req("POST", "/auth/login", "Content-Type: application/json\r\nContent-Length: 2\r\n"), b"{}"]), Status(415), 0),
        row("login with bad percent-encoding", cat(&[&req("POST", "/auth/login", "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 12\r\n"), b"password=%zz"]), Status(200), 0),
        row("login with PUT", req("PUT", "/auth/login", ""), Status(405), 0),
        row("login, then a smuggled request in the body", cat(&[&req("POST", "/auth/login", "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\n"), b"password=x", smuggled.as_bytes()]), Statuses(&[200, 200]), 0),
        // Pipelining.
        row("two pipelined requests", cat(&[&req("GET", "/app/", AUTH), &req("GET", "/app/", AUTH)]), Statuses(&[200, 200]), 2),
        row("pipelined, second without credentials", cat(&[&req("GET", "/app/", AUTH), &req("GET", "/admin/", "")]), Statuses(&[200, 401]), 1),
        row("pipelined, then garbage", cat(&[&req("GET", "/app/", AUTH), b"garbage\r\n\r\n"]), Statuses(&[200, 400]), 1),
        row("nothing after Connection: close", cat(&[&req("GET", "/app/", &format!("{AUTH}Connection: close\r\n")), &req("GET", "/app/", AUTH)]), Statuses(&[200]), 1),
        row("50 pipelined requests", req("GET", "/app/", AUTH).repeat(50), Statuses(&[200; 50]), 50),
        row("GET body without a length is the next request", cat(&[&req("GET", "/app/", AUTH), b"XYZ\r\n\r\n"]), Statuses(&[200, 400]), 1),
        row("Expect: 100-continue", cat(&[&req("POST", "/app/", &format!("{AUTH}Expect: 100-continue\r\nContent-Length: 2\r\n")), b"hi"]), Status(200), 1),
        row("unknown Expect", cat(&[&req("POST", "/app/", &format!("{AUTH}Expect: the-unexpected\r\nContent-Length: 2\r\n")), b"hi"]), Status(200), 1),
    ];
    // Pipelined smuggling must count admin only where a full, valid request was sent.
    for row in &mut rows {
        if row.name.starts_with("body longer than Content-Length")
            || row.name.starts_with("login, then a smuggled")
        {
            row.admin = 1;
        }
    }
    rows
}

/// How a row went, for the summary.
#[derive(Default)]
struct Tally {
    by_status: std::collections::BTreeMap<u16, usize>,
    statuses: usize,
    closed: usize,
    reached: usize,
    refused: usize,
}

/// Sends one row; returns what went wrong, if anything.
async fn run_row(target: &Target, row: &Row, tally: &mut Tally) -> Option<String> {
    let want = match row.expect {
        Expect::Statuses(statuses) => statuses.len(),
        Expect::Closed | Expect::StatusThenClosed(_) => usize::MAX,
        _ => 1,
    };
    let (app_before, admin_before) = (
        target.app.load(Ordering::SeqCst),
        target.admin.load(Ordering::SeqCst),
    );
    let outcome = raw::exchange(target.server.addr, &row.bytes, want, Duration::from_secs(4)).await;
    let statuses: Vec<u16> = outcome.responses.iter().map(|r| r.status).collect();
    let answered = match row.expect {
        Expect::Status(status) => statuses.first() == Some(&status),
        Expect::StatusOrClosed(status) => {
            statuses.first() == Some(&status) || (statuses.is_empty() && outcome.closed)
        }
        Expect::StatusThenClosed(status) => statuses == [status] && outcome.closed,
        Expect::Closed => statuses.is_empty() && outcome.closed,
        Expect::Statuses(expected) => statuses == expected,
    };
    if statuses.is_empty() {
        tally.closed += 1;
    } else {
        tally.statuses += statuses.len();
    }
    for status in &statuses {
        *tally.by_status.entry(*status).or_default() += 1;
    }
    // Give the mounts a moment to have counted everything sent their way.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let app = target.app.load(Ordering::SeqCst) - app_before;
    let admin = target.admin.load(Ordering::SeqCst) - admin_before;
    tally.reached += app + admin;
    if app + admin == 0 {
        tally.refused += 1;
    }
    let reached = app == row.app && admin == row.admin;
    (!answered || !reached).then(|| {
        format!(
            "{}: expected {:?} reaching /app {} /admin {}; got {statuses:?} (closed: {}) reaching /app {app} /admin {admin}; left over {:?}",
            row.name,
            row.expect,
            row.app,
            row.admin,
            outcome.closed,
            String::from_utf8_lossy(&outcome.leftover[..outcome.leftover.len().min(80)]),
        )
    })
}

#[tokio::test]
async fn hostile_requests_get_the_documented_answer_and_never_reach_the_mounts() {
    let target = target(Duration::from_secs(2)).await;
    let rows = table();
    assert!(rows.len() >= 100, "only {} rows", rows.len());
    let mut tally = Tally::default();
    let start = Instant::now();
    let mut wrong = Vec::new();
    for row in &rows {
        wrong.extend(run_row(&target, row, &mut tally).await);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows went wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
    // The server survived all of it: a normal request still works.
    let after = raw::exchange(
        target.server.addr,
        &req("GET", "/app/", AUTH),
        1,
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(after.responses.first().map(|r| r.status), Some(200));
    let expected_reach: usize = rows.iter().map(|row| row.app + row.admin).sum();
    println!(
        "hostile: {} rows in {:.1} s: {} responses, {} closed without a response, {} rows reached no mount, \
         {} requests reached a mount (expected {expected_reach}); by status {:?}; server still serving",
        rows.len(),
        start.elapsed().as_secs_f64(),
        tally.statuses,
        tally.closed,
        tally.refused,
        tally.reached,
        tally.by_status,
    );
}

/// Sends `bytes` one byte at a time, `every` apart, until the server closes; returns when the
/// connection closed, measured from connecting, and whether any response came.
async fn trickle(addr: SocketAddr, bytes: &[u8], every: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in bytes.iter().cycle().take(60) {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (start.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    // Wait for the close after the last byte (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (start.elapsed(), got)
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_read_timeout() {
    let timeout = Duration::from_secs(1);
    let target = target(timeout).await;
    let addr = target.server.addr;
    let within = |what: &str, elapsed: Duration| {
        assert!(
            elapsed >= timeout.mul_f32(0.9) && elapsed < timeout * 3,
            "{what}: closed after {elapsed:?} with a {timeout:?} header read timeout"
        );
    };

    // Slowloris: one header byte per second.
    let request = req(
        "GET",
        "/app/",
        &format!("{AUTH}X-Slow: {}\r\n", "s".repeat(40)),
    );
    let (slowloris, got) = trickle(addr, &request, Duration::from_secs(1)).await;
    within("slowloris", slowloris);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // A connection that never says anything.
    let start = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    let silent_closed = start.elapsed();
    within("silent connection", silent_closed);

    // The HTTP/2 preface, slowly: hyper-util reads it with no timeout of its own.
    let (preface, _) = trickle(
        addr,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    within("slow HTTP/2 preface", preface);

    // An idle keep-alive connection after one request.
    let start = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(&req("GET", "/app/", AUTH)).await.unwrap();
    let outcome = raw::read_responses(&mut idle, 1, start, start + Duration::from_secs(4)).await;
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(200));
    let answered = start.elapsed();
    let closed = raw::read_responses(&mut idle, 1, start, start + Duration::from_secs(5)).await;
    assert!(closed.closed && closed.responses.is_empty());
    let idle_closed = start.elapsed() - answered;
    within("idle keep-alive", idle_closed);

    println!(
        "slow clients ({timeout:?} header read timeout): slowloris (1 byte/s) cut after {:.2} s, \
         silent connection after {:.2} s, slow HTTP/2 preface after {:.2} s, idle keep-alive after {:.2} s",
        slowloris.as_secs_f64(),
        silent_closed.as_secs_f64(),
        preface.as_secs_f64(),
        idle_closed.as_secs_f64(),
    );
}

#[tokio::test]
async fn a_slow_login_body_is_cut_off() {
    let target = target(Duration::from_secs(30)).await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(target.server.addr).await.unwrap();
    stream
        .write_all(&req(
            "POST",
            "/auth/login",
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n",
        ))
        .await
        .unwrap();
    stream.write_all(b"password=").await.unwrap();
    // Then nothing more: the form read times out.
    let outcome = raw::read_responses(&mut stream, 1, start, start + Duration::from_secs(15)).await;
    let elapsed = start.elapsed();
    assert_eq!(
        outcome.responses.first().map(|r| r.status),
        Some(408),
        "{outcome:?}"
    );
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(13),
        "{elapsed:?}"
    );
    println!("slow login body: 408 after {:.2} s", elapsed.as_secs_f64());
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let app = Arc::new(AtomicUsize::new(0));
    let service = create_app()
        .with_service("/app", counter(app.clone()))
        .build()
        .unwrap();
    let server = TestServer::start_with(service, |serve| serve.max_connections(2)).await;
    let addr = server.addr;
    // Two connections hold both slots.
    let mut first = raw::KeepAlive::new(TcpStream::connect(addr).await.unwrap());
    let mut second = raw::KeepAlive::new(TcpStream::connect(addr).await.unwrap());
    let request = b"GET /app/ HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(first.send(request).await.map(|r| r.status), Some(200));
    assert_eq!(second.send(request).await.map(|r| r.status), Some(200));
    // A third connects (the kernel queues it) but is not served while they are open.
    let start = Instant::now();
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let waiting =
        raw::read_responses(&mut third, 1, start, start + Duration::from_millis(500)).await;
    assert!(
        waiting.responses.is_empty() && !waiting.closed,
        "{waiting:?}"
    );
    // Closing one frees a slot: the third is served.
    drop(first);
    let served = raw::read_responses(&mut third, 1, start, start + Duration::from_secs(4)).await;
    assert_eq!(
        served.responses.first().map(|r| r.status),
        Some(200),
        "{served:?}"
    );
    println!(
        "max_connections(2): third connection waited, served {:.0} ms after a slot freed",
        (start.elapsed() - Duration::from_millis(500)).as_secs_f64() * 1000.0
    );
    assert_eq!(app.load(Ordering::SeqCst), 3);
    drop(second);
}
