//! Cross-site requests and DNS rebinding against real marimo backends over real sockets.
//!
//! A page on another site (or on another port of the same host, which is "same-site") must not
//! be able to make a signed-in browser write files through the editor, drive a kernel over a
//! WebSocket or read an event stream; and a DNS name rebound to the loopback address must not
//! reach a gateway bound there. Each case is tried against edit and run mounts, with and
//! without the gateway's auth, behind a host's own middleware, and on a directory mount.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::marimo::{
    intro_at, kernel, server_token, set_slider, slider_at, until_output, until_slider, Gateway,
};
use common::{example_notebook, send, ws_connect, Reply, Site, TestServer, Ws, HTML, JSON};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use marimo_rs::{create_app, AppBuilder, AuthLayer, Mount, Token};

const TOKEN: &str = "cross-site-token";
/// `TOKEN` as an API client sends it.
const BEARER: (&str, &str) = ("authorization", "Bearer cross-site-token");
const WS: Duration = Duration::from_secs(30);
const EVIL: &str = "http://evil.example";

/// A notebook with one cell, for the editor.
const NOTEBOOK: &str = "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    x = 1\n    return (x,)\n\n\nif __name__ == \"__main__\":\n    app.run()\n";

/// Sends a request and returns the status and headers without reading the body (event
/// streams never end).
async fn head_of(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(WS, common::client().request(request))
        .await
        .expect("response headers in time")
        .expect("request failed");
    let status = response.status();
    let headers = response.headers().clone();
    // The first chunk of the body, if one comes soon (an event stream's first event).
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .ok()
        .flatten()
        .and_then(Result::ok)
        .and_then(|frame| frame.into_data().ok())
        .unwrap_or_default();
    (status, headers, first)
}

/// A `multipart/form-data` body as an HTML form sends it: `(content type, body)`.
fn multipart(fields: &[(&str, &str)]) -> (String, String) {
    let boundary = "----marimoRsBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A folder with the editor's notebook and a file the attacker wants to overwrite.
struct EditFixture {
    dir: tempfile::TempDir,
    notebook: PathBuf,
    victim: PathBuf,
}

fn edit_fixture() -> EditFixture {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("notes.py");
    std::fs::write(&notebook, NOTEBOOK).unwrap();
    let victim = dir.path().join("victim.py");
    std::fs::write(&victim, "original\n").unwrap();
    EditFixture {
        dir,
        notebook,
        victim,
    }
}

/// The writes a page on another site would try against an editor; none may succeed.
async fn cross_site_writes_are_refused(
    server: &TestServer,
    fixture: &EditFixture,
    credentials: &[(&str, &str)],
    foreign_origin: &str,
) {
    let update = serde_json::json!({
        "path": fixture.victim.to_str().unwrap(),
        "contents": "pwned",
    })
    .to_string();
    let url = server.url("/api/files/update");
    // A `fetch(…, {mode: "no-cors", credentials: "include"})` from the other page: a simple
    // request (text/plain), so no preflight. Some requests carry no Origin but say where they
    // come from.
    let text_plain = ("content-type", "text/plain;charset=UTF-8");
    for (what, from) in [
        ("foreign Origin", ("origin", foreign_origin)),
        ("same-site", ("sec-fetch-site", "same-site")),
        ("cross-site", ("sec-fetch-site", "cross-site")),
    ] {
        let mut headers = vec![text_plain, from];
        headers.extend_from_slice(credentials);
        let reply = send(Method::POST, &url, &headers, &update).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{what}: {}",
            reply.brief()
        );
        assert!(!reply.body.is_empty(), "a short reason: {}", reply.brief());
    }
    assert_eq!(
        std::fs::read_to_string(&fixture.victim).unwrap(),
        "original\n",
        "the file was overwritten"
    );

    // A plain HTML form can post multipart: it must not create a file either.
    let (content_type, body) = multipart(&[
        ("path", fixture.dir.path().to_str().unwrap()),
        ("type", "file"),
        ("name", "dropped.py"),
    ]);
    let mut form = vec![
        ("content-type", content_type.as_str()),
        ("origin", foreign_origin),
    ];
    form.extend_from_slice(credentials);
    let reply = server
        .send(Method::POST, "/api/files/create", &form, &body)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "multipart: {}",
        reply.brief()
    );
    assert!(
        !fixture.dir.path().join("dropped.py").exists(),
        "a file was created"
    );
}

/// The editor's own page can still write (same Origin, marimo's server token).
async fn same_origin_write_works(
    server: &TestServer,
    fixture: &EditFixture,
    credentials: &[(&str, &str)],
) {
    let mut page_headers = vec![HTML];
    page_headers.extend_from_slice(credentials);
    let page = server.get("/", &page_headers).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.brief());
    let token = server_token(&page.body);
    let own = server.origin();
    let mut headers = vec![
        JSON,
        ("origin", own.as_str()),
        ("sec-fetch-site", "same-origin"),
        ("marimo-server-token", token.as_str()),
    ];
    headers.extend_from_slice(credentials);
    let update = serde_json::json!({
        "path": fixture.victim.to_str().unwrap(),
        "contents": "edited by its owner\n",
    })
    .to_string();
    let reply = server
        .send(Method::POST, "/api/files/update", &headers, &update)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.brief());
    assert!(reply.body.contains("\"success\":true"), "{}", reply.brief());
    assert_eq!(
        std::fs::read_to_string(&fixture.victim).unwrap(),
        "edited by its owner\n"
    );
}

/// The editor of the fixture's notebook at `/`, with `auth` applied to the builder.
async fn editor(fixture: &EditFixture, auth: impl FnOnce(AppBuilder) -> AppBuilder) -> Gateway {
    Gateway::start(auth(
        create_app().mount("/", Mount::edit(&fixture.notebook)),
    ))
    .await
}

#[tokio::test]
async fn a_signed_in_editor_refuses_cross_site_writes() {
    let fixture = edit_fixture();
    let server = editor(&fixture, |app| app.token(Token::new(TOKEN))).await;
    // Signed in the way a browser is: a SameSite=Lax session cookie.
    let signed_in = server
        .get(&format!("/?access_token={TOKEN}"), &[HTML])
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{signed_in:?}");
    let cookie = signed_in.cookie();
    let credentials = [("cookie", cookie.as_str())];

    // Another port of the same host is same-site: the Lax cookie goes along.
    let port = server.addr.port().wrapping_add(1);
    let neighbour = format!("http://127.0.0.1:{port}");
    cross_site_writes_are_refused(&server, &fixture, &credentials, &neighbour).await;
    same_origin_write_works(&server, &fixture, &credentials).await;
    server.stop().await;
}

#[tokio::test]
async fn an_editor_without_auth_refuses_cross_site_writes() {
    let fixture = edit_fixture();
    let server = editor(&fixture, |app| app).await;
    cross_site_writes_are_refused(&server, &fixture, &[], EVIL).await;
    same_origin_write_works(&server, &fixture, &[]).await;
    server.stop().await;
}

/// Where a run-mode notebook is reached, and with what credentials.
struct RunTarget<'a> {
    server: &'a TestServer,
    /// `/app` or `/apps/intro`: the notebook page is at `{mount}/`.
    mount: &'a str,
    credentials: &'a [(&'a str, &'a str)],
}

impl<'a> RunTarget<'a> {
    fn new(server: &'a TestServer, mount: &'a str, credentials: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            server,
            mount,
            credentials,
        }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(&format!("{}{path}", self.mount))
    }

    fn own_origin(&self) -> String {
        self.server.origin()
    }

    fn with<'h>(&'h self, extra: &[(&'h str, &'h str)]) -> Vec<(&'h str, &'h str)> {
        let mut headers = extra.to_vec();
        headers.extend_from_slice(self.credentials);
        headers
    }

    async fn ws(&self, session: &str, origin: &str) -> Result<Ws, StatusCode> {
        let url = self
            .server
            .ws_url(&format!("{}/ws?session_id={session}", self.mount));
        ws_connect(&url, &self.with(&[("origin", origin)])).await
    }

    /// A kernel session opened from `origin`: its WebSocket, once the slider has rendered,
    /// and the slider's object id.
    async fn kernel(&self, session: &str, origin: &str) -> (Ws, String) {
        let mount = self.mount;
        let mut ws = self
            .ws(session, origin)
            .await
            .unwrap_or_else(|status| panic!("{mount}: WebSocket from {origin} refused: {status}"));
        let slider = until_slider(&mut ws).await;
        (ws, slider)
    }

    /// Moves the slider of `session` to `value`, with `headers` and the credentials.
    async fn set_slider(
        &self,
        session: &str,
        slider: &str,
        value: u32,
        headers: &[(&str, &str)],
    ) -> Reply {
        set_slider(&self.url(""), session, slider, value, &self.with(headers)).await
    }
}

/// A foreign page can neither open the kernel's WebSocket, nor post to the kernel, nor read
/// its event stream; the notebook's own page can do all three; no response says
/// `Access-Control-Allow-Origin: *`.
async fn run_mount_refuses_foreign_origins(target: &RunTarget<'_>) {
    let mount = target.mount;
    let own = target.own_origin();
    assert_eq!(
        target.ws("foreign-ws", EVIL).await.err(),
        Some(StatusCode::FORBIDDEN),
        "{mount}: foreign WebSocket"
    );
    let session = format!("s{}", mount.replace('/', "-"));
    let (mut ws, slider) = target.kernel(&session, &own).await;

    let set =
        |value: u32| serde_json::json!({ "objectIds": [&slider], "values": [value] }).to_string();
    let api = target.url("/api/kernel/set_ui_element_value");
    for (what, headers) in [
        (
            "foreign Origin",
            vec![
                ("content-type", "text/plain;charset=UTF-8"),
                ("origin", EVIL),
            ],
        ),
        ("Origin null", vec![JSON, ("origin", "null")]),
        (
            "Sec-Fetch-Site: cross-site",
            vec![JSON, ("sec-fetch-site", "cross-site")],
        ),
    ] {
        let mut headers = target.with(&headers);
        headers.push(("marimo-session-id", &session));
        let reply = send(Method::POST, &api, &headers, &set(9)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{mount}: {what}: {}",
            reply.brief()
        );
    }
    let reply = target
        .set_slider(
            &session,
            &slider,
            7,
            &[("origin", &own), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{mount}: same origin: {}",
        reply.brief()
    );
    until_output(&mut ws, &slider_at(7)).await;
    drop(ws);
    event_stream_and_reads_refuse_foreign_origins(target, &session).await;
}

/// The event stream (marimo's SSE transport, which carries the kernel's outputs) is refused
/// to a foreign page; reads are not refused, but nothing invites another site to read them.
async fn event_stream_and_reads_refuse_foreign_origins(target: &RunTarget<'_>, session: &str) {
    let mount = target.mount;
    let own = target.own_origin();
    let sse = target.url(&format!("/sse?session_id={session}-sse"));
    let (status, headers, _) = head_of(
        &sse,
        &target.with(&[("accept", "text/event-stream"), ("origin", EVIL)]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{mount}: foreign /sse");
    assert!(!headers.contains_key("access-control-allow-origin"));
    let (status, headers, first) = head_of(
        &sse,
        &target.with(&[("accept", "text/event-stream"), ("origin", &own)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{mount}: same-origin /sse");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{mount}: {headers:?}"
    );
    assert!(!first.is_empty(), "{mount}: the stream sends events");
    assert_no_cors(mount, "/sse", &headers);
    for path in ["/", "/api/version"] {
        let reply = send(
            Method::GET,
            &target.url(path),
            &target.with(&[("accept", "text/html"), ("origin", EVIL)]),
            "",
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{mount}{path}: {}",
            reply.brief()
        );
        assert_no_cors(mount, path, &reply.headers);
    }
}

/// Not one `Access-Control-*` header (there is no allow-list).
fn assert_no_cors(mount: &str, path: &str, headers: &HeaderMap) {
    let cors: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors.is_empty(), "{mount}{path}: CORS headers {cors:?}");
}

/// A directory holding a copy of the example notebook as `intro.py`.
fn notebook_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example_notebook("intro.py"), dir.path().join("intro.py")).unwrap();
    dir
}

/// `/app` (one notebook) and `/apps` (a directory with `intro.py`), no auth.
fn open_app(directory: &Path) -> AppBuilder {
    intro_at("/app").with_dynamic_directory("/apps", directory)
}

/// The example notebook at `/app`, with `configure` applied to the builder, served.
async fn app_at(configure: impl FnOnce(AppBuilder) -> AppBuilder) -> Gateway {
    Gateway::start(configure(intro_at("/app"))).await
}

#[tokio::test]
async fn run_mounts_without_auth_refuse_foreign_origins() {
    let directory = notebook_directory();
    let server = Gateway::start(open_app(directory.path())).await;
    for mount in ["/app", "/apps/intro"] {
        run_mount_refuses_foreign_origins(&RunTarget::new(&server, mount, &[])).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_page_cannot_read_the_event_stream() {
    let server = app_at(|app| app).await;
    let target = RunTarget::new(&server, "/app", &[]);
    event_stream_and_reads_refuse_foreign_origins(&target, "s_x").await;
    server.stop().await;
}

#[tokio::test]
async fn run_mounts_with_token_auth_refuse_foreign_origins() {
    let server = app_at(|app| app.token(Token::new(TOKEN))).await;
    run_mount_refuses_foreign_origins(&RunTarget::new(&server, "/app", &[BEARER])).await;
    server.stop().await;
}

/// A host that authenticates with its own middleware in front of the built service, the way
/// `examples/axum_custom_login.rs` does: marimo_rs's auth is not involved at all.
#[tokio::test]
async fn run_mounts_behind_a_hosts_own_middleware_refuse_foreign_origins() {
    async fn host_auth(
        request: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let signed_in = request
            .headers()
            .get("cookie")
            .is_some_and(|cookie| cookie.as_bytes() == b"host_session=ada");
        if signed_in {
            next.run(request).await
        } else {
            axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED)
        }
    }
    let directory = notebook_directory();
    let app = open_app(directory.path()).build().unwrap();
    common::marimo::start_backends(&app).await;
    let host = axum::Router::new()
        .fallback_service(app.clone())
        .layer(axum::middleware::from_fn(host_auth));
    let server = TestServer::start(host).await;
    for mount in ["/app", "/apps/intro"] {
        run_mount_refuses_foreign_origins(&RunTarget::new(
            &server,
            mount,
            &[("cookie", "host_session=ada")],
        ))
        .await;
    }
    server.stop().await;
    app.shutdown().await;
}

/// `Host: {name}` requests against a gateway bound to 127.0.0.1.
async fn with_host(server: &TestServer, path: &str, host: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = vec![("host", host), HTML];
    headers.extend_from_slice(extra);
    server.get(path, &headers).await
}

#[tokio::test]
async fn a_rebound_dns_name_is_refused_on_loopback() {
    let directory = notebook_directory();
    let server = Gateway::start(open_app(directory.path())).await;
    let port = server.addr.port();
    let evil = format!("evil.test:{port}");
    let evil_origin = format!("http://{evil}");

    for path in ["/app/", "/app/api/version", "/apps/intro/", "/health"] {
        let reply = with_host(&server, path, &evil, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {}",
            reply.brief()
        );
        assert!(reply.body.contains("Host"), "says why: {}", reply.brief());
    }
    // The attacker's page is same-origin with itself: Host and Origin agree.
    for path in ["/app/ws", "/apps/intro/ws"] {
        let url = server.ws_url(&format!("{path}?session_id=rebound"));
        let refused = ws_connect(&url, &[("host", &evil), ("origin", &evil_origin)]).await;
        assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN), "{path}");
    }

    // The names of the loopback address itself pass, whatever the port.
    for (n, host) in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LOCALHOST".to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = with_host(&server, "/app/", &host, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.brief());
        let origin = format!("http://{host}");
        let url = server.ws_url(&format!("/apps/intro/ws?session_id=local-{n}"));
        kernel(&url, &[("host", &host), ("origin", &origin)]).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_host_is_checked() {
    let server = app_at(|app| {
        app.auth(AuthLayer::new(Token::new(TOKEN)).trust_forwarded_headers(true))
            .allowed_hosts(["marimo.test"])
    })
    .await;
    let local = server.addr.to_string();
    // Whatever the proxy forwards is checked; the Host the proxy sent no longer decides once
    // the public name the proxy forwards is allowed.
    for (host, forwarded, status) in [
        (local.as_str(), "evil.test", StatusCode::FORBIDDEN),
        (local.as_str(), "localhost", StatusCode::OK),
        (local.as_str(), "marimo.test:443", StatusCode::OK),
        ("evil.test", "marimo.test", StatusCode::OK),
        (local.as_str(), "other.test", StatusCode::FORBIDDEN),
    ] {
        let reply = with_host(
            &server,
            "/app/",
            host,
            &[("x-forwarded-host", forwarded), BEARER],
        )
        .await;
        assert_eq!(
            reply.status,
            status,
            "{host} / {forwarded}: {}",
            reply.brief()
        );
    }
    server.stop().await;
}

const ALLOWED: &str = "https://app.example.com";

/// A page at the allowed origin may use the notebook: its preflight is answered, its
/// WebSocket and POSTs go through, and every answer says that origin (never `*`) with
/// credentials.
async fn allowed_origin_is_served_with_cors(target: &RunTarget<'_>) {
    let mount = target.mount;
    let api = target.url("/api/kernel/set_ui_element_value");
    // Browsers send no credentials with a preflight.
    let preflight = send(
        Method::OPTIONS,
        &api,
        &[
            ("origin", ALLOWED),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, marimo-session-id",
            ),
        ],
        "",
    )
    .await;
    let (status, headers) = (preflight.status, preflight.headers);
    assert_eq!(status, StatusCode::NO_CONTENT, "{mount}: preflight");
    assert_cors_for(mount, "preflight", &headers);
    assert_eq!(headers["access-control-allow-methods"], "POST");
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type, marimo-session-id"
    );
    assert!(headers.contains_key("access-control-max-age"));

    let session = format!("allowed{}", mount.replace('/', "-"));
    let (mut ws, slider) = target.kernel(&session, ALLOWED).await;
    let reply = target
        .set_slider(&session, &slider, 5, &[("origin", ALLOWED)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{mount}: {}", reply.brief());
    assert_cors_for(mount, "POST", &reply.headers);
    until_output(&mut ws, &slider_at(5)).await;
    drop(ws);
    let page = send(
        Method::GET,
        &target.url("/"),
        &target.with(&[("accept", "text/html"), ("origin", ALLOWED)]),
        "",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{mount}: {}", page.brief());
    assert_cors_for(mount, "page", &page.headers);
}

/// `Access-Control-Allow-Origin` is the allowed origin (once), with credentials.
fn assert_cors_for(mount: &str, what: &str, headers: &HeaderMap) {
    let origins: Vec<_> = headers
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(origins, [ALLOWED], "{mount}: {what}: {headers:?}");
    assert_eq!(
        headers["access-control-allow-credentials"], "true",
        "{mount}: {what}"
    );
    assert!(
        headers.get_all("vary").iter().any(|v| v == "Origin"),
        "{mount}: {what}: {headers:?}"
    );
}

#[tokio::test]
async fn allowed_origins_are_served_with_cors_with_and_without_auth() {
    let directory = notebook_directory();
    let open = app_at(|app| {
        app.with_dynamic_directory("/apps", directory.path())
            .allowed_origins([ALLOWED])
    })
    .await;
    // The auth layer's own list reaches the notebook services too.
    let guarded =
        app_at(|app| app.auth(AuthLayer::new(Token::new(TOKEN)).allowed_origins([ALLOWED]))).await;
    for mount in ["/app", "/apps/intro"] {
        let target = RunTarget::new(&open, mount, &[]);
        allowed_origin_is_served_with_cors(&target).await;
        // Other origins are still refused.
        assert_eq!(
            target.ws("still-foreign", EVIL).await.err(),
            Some(StatusCode::FORBIDDEN)
        );
    }
    allowed_origin_is_served_with_cors(&RunTarget::new(&guarded, "/app", &[BEARER])).await;
    open.stop().await;
    guarded.stop().await;
}

#[tokio::test]
async fn allowed_host_names_pass_on_loopback() {
    let server = app_at(|app| app.allowed_hosts(["marimo.test"])).await;
    let port = server.addr.port();
    let named = format!("marimo.test:{port}");
    let reply = with_host(&server, "/app/", &named, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.brief());
    let origin = format!("http://{named}");
    kernel(
        &server.ws_url("/app/ws?session_id=named"),
        &[("host", &named), ("origin", &origin)],
    )
    .await;
    let other = with_host(&server, "/app/", &format!("other.test:{port}"), &[]).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.brief());
    server.stop().await;
}
