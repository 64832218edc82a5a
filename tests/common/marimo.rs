//! Real notebooks behind the gateway: an app with its backends started and served
//! ([`Gateway`]), the pages marimo serves, and kernel sessions over the WebSocket, as marimo's
//! frontend drives them (marimo-facts: "The frontend behind a path prefix").

use std::ops::Deref;
use std::time::Duration;

use http::{Method, StatusCode};
use marimo_rs::{create_app, AppBuilder, MarimoService};
use serde_json::Value;

use super::{
    eventually, example_notebook, get, send, ws_connect, ws_until, Reply, Site, TestServer, Ws,
    HTML, JSON,
};

/// How long finding (or installing) Python with marimo and starting backends may take.
pub const START: Duration = Duration::from_secs(180);
/// How long a kernel may take to say `kernel-ready`: its backend may start on that request.
pub const KERNEL_WAIT: Duration = Duration::from_secs(120);
/// How long a ready kernel may take to send an output.
pub const OUTPUT_WAIT: Duration = Duration::from_secs(60);

/// The example notebook's first output for its slider, at the value it starts with.
pub const SLIDER_AT_3: &str = "Slider value is <strong>3</strong>";

/// `create_app()` with the example notebook (a title, a slider, the signed-in user) at
/// `mount`.
pub fn intro_at(mount: &str) -> AppBuilder {
    create_app().with_app(mount, example_notebook("intro.py"))
}

/// Finds Python with marimo (installing the managed virtualenv if needed) and starts the
/// app's backends, before any timing-sensitive step.
pub async fn start_backends(app: &MarimoService) {
    tokio::time::timeout(START, app.start())
        .await
        .expect("provisioning Python and starting backends timed out")
        .expect("no Python with marimo");
}

/// The interpreter of the managed virtualenv (installed first if needed, by the library,
/// under its file lock): read from the command line of a backend the library starts, so the
/// tests need not know where the cache directory is.
pub async fn managed_python() -> std::path::PathBuf {
    let app = intro_at("/").warm_pool(0).build().unwrap();
    start_backends(&app).await;
    let pid = app.backend_pids()[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    app.shutdown().await;
    let python = cmdline.split(|&b| b == 0).next().unwrap();
    std::path::PathBuf::from(String::from_utf8(python.to_vec()).unwrap())
}

/// A built app served on a loopback port; dereferences to its [`TestServer`].
pub struct Gateway {
    pub app: MarimoService,
    pub server: TestServer,
}

impl Gateway {
    /// Builds `builder`, starts its backends (see [`start_backends`]) and serves it.
    pub async fn start(builder: AppBuilder) -> Self {
        let app = builder.build().unwrap();
        start_backends(&app).await;
        Self::serve(app).await
    }

    /// Serves `app` as it is: its backends start on their first request.
    pub async fn serve(app: MarimoService) -> Self {
        let server = TestServer::start(app.clone()).await;
        Self { app, server }
    }

    /// Stops the server, then the backends (and removes their sockets).
    pub async fn stop(self) {
        self.server.stop().await;
        self.app.shutdown().await;
    }
}

impl Site for Gateway {
    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }
}

impl Deref for Gateway {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

/// Whether a reply is marimo's notebook page.
pub fn is_notebook_page(reply: &Reply) -> bool {
    reply.status == StatusCode::OK && reply.body.contains("__MARIMO_MOUNT_CONFIG__")
}

/// Loads the page at `path` as a browser does, every 100 ms, until `done` says so (within
/// `limit`); returns that page.
pub async fn page_until(
    server: &impl Site,
    path: &str,
    limit: Duration,
    done: impl FnMut(&Reply) -> bool,
) -> Reply {
    eventually(
        limit,
        Duration::from_millis(100),
        async || server.get(path, &[HTML]).await,
        done,
    )
    .await
}

/// Loads the notebook page at `path` (ending in `/`) as a browser does with `headers`, then
/// the first script it loads, relative to it: both must be served. Returns the page.
pub async fn load_page(server: &impl Site, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut page_headers = vec![HTML];
    page_headers.extend_from_slice(headers);
    let page = server.get(path, &page_headers).await;
    assert!(is_notebook_page(&page), "{path}: {}", page.brief());
    // Every frontend URL in the page is relative, so it resolves under the page's path.
    let asset = first_script(&page.body);
    let script = server.get(&format!("{path}{asset}"), headers).await;
    assert_eq!(script.status, StatusCode::OK, "{path}{asset}");
    assert!(
        script
            .header("content-type")
            .unwrap()
            .contains("javascript"),
        "{path}{asset}: {:?}",
        script.header("content-type")
    );
    page
}

/// The first script a marimo page loads (`assets/index-….js`), relative to the page.
pub fn first_script(page: &str) -> String {
    page.split("src=\"./")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script from ./assets")
        .to_owned()
}

/// marimo's skew-protection token, from the page (`"serverToken": "…"`).
pub fn server_token(page: &str) -> String {
    page.split("\"serverToken\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries marimo's server token")
        .to_owned()
}

/// `ws://…` for an `http://…` URL.
pub fn ws_url(http_url: &str) -> String {
    http_url.replacen("http", "ws", 1)
}

/// Opens the kernel WebSocket at `url` (`…/ws?session_id=…`) with `headers` and waits for
/// `kernel-ready`; returns the socket and that message.
pub async fn kernel_ready(url: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
    let mut ws = ws_connect(url, headers)
        .await
        .unwrap_or_else(|status| panic!("WebSocket to {url} refused: {status}"));
    let ready = ws_until(&mut ws, KERNEL_WAIT, |m| m["op"] == "kernel-ready").await;
    (ws, ready)
}

/// Opens the kernel WebSocket at `url` with `headers` and waits for `kernel-ready`.
pub async fn kernel(url: &str, headers: &[(&str, &str)]) -> Ws {
    kernel_ready(url, headers).await.0
}

/// Waits for a cell output containing `text`; returns that message.
pub async fn until_output(ws: &mut Ws, text: &str) -> Value {
    ws_until(ws, OUTPUT_WAIT, |m| output_contains(m, text)).await
}

/// Waits until the example notebook's slider has rendered at its first value; returns the
/// slider's object id.
pub async fn until_slider(ws: &mut Ws) -> String {
    let mut slider = None;
    ws_until(ws, KERNEL_WAIT, |m| {
        if let Some(id) = slider_id(m) {
            slider = Some(id);
        }
        output_contains(m, SLIDER_AT_3)
    })
    .await;
    slider.expect("the slider's cell output arrived")
}

/// The example notebook's output for its slider at `value`.
pub fn slider_at(value: u32) -> String {
    format!("Slider value is <strong>{value}</strong>")
}

/// `POST {base}/api/kernel/set_ui_element_value`, as marimo's frontend sends it: moves
/// `slider` of kernel session `session` to `value`. `headers` adds credentials and the like.
pub async fn set_slider(
    base: &str,
    session: &str,
    slider: &str,
    value: u32,
    headers: &[(&str, &str)],
) -> Reply {
    let body = serde_json::json!({ "objectIds": [slider], "values": [value] }).to_string();
    let mut all = vec![JSON, ("marimo-session-id", session)];
    all.extend_from_slice(headers);
    send(
        Method::POST,
        &format!("{base}/api/kernel/set_ui_element_value"),
        &all,
        &body,
    )
    .await
}

/// `GET {base}/api/version` (an API call waits for the backend): whether marimo answers.
pub async fn version(base: &str) -> Reply {
    get(&format!("{base}/api/version")).await
}

/// Whether a WebSocket message is a cell output containing `text`.
pub fn output_contains(message: &Value, text: &str) -> bool {
    message["op"] == "cell-op"
        && message["data"]["output"]["data"]
            .as_str()
            .is_some_and(|data| data.contains(text))
}

/// The object id of the slider, from the cell output that renders it.
pub fn slider_id(message: &Value) -> Option<String> {
    let html = message["data"]["output"]["data"].as_str()?;
    if !html.contains("marimo-slider") {
        return None;
    }
    let start = html.find("object-id='")? + "object-id='".len();
    let end = start + html[start..].find('\'')?;
    Some(html[start..end].to_owned())
}

/// Moves `slider` of kernel session `session` at `base` to `value` and waits, on that
/// session's socket `ws`, for the example notebook's output to follow.
pub async fn move_slider(ws: &mut Ws, base: &str, session: &str, slider: &str, value: u32) {
    let moved = set_slider(base, session, slider, value, &[]).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.brief());
    until_output(ws, &slider_at(value)).await;
}

/// A notebook that holds as many MiB as its slider says (0 at first): `holding N MiB`.
pub fn hog_notebook(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("hog.py");
    std::fs::write(
        &path,
        r#"import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    mib = mo.ui.slider(0, 4096, value=0, label="MiB")
    mib
    return mib, mo


@app.cell
def _(mib, mo):
    block = bytearray(mib.value << 20)
    mo.md(f"holding {len(block) >> 20} MiB")
    return
"#,
    )
    .unwrap();
    path
}

/// Waits on `ws` (kernel session `session` of a [`hog_notebook`] at `base`) for its first
/// output, then asks it to hold `mib` MiB; returns marimo's answer to that call.
pub async fn feed_hog(ws: &mut Ws, base: &str, session: &str, mib: u32) -> Reply {
    let mut slider = None;
    super::ws_until(ws, KERNEL_WAIT, |m| {
        if let Some(id) = slider_id(m) {
            slider = Some(id);
        }
        output_contains(m, "holding 0 MiB")
    })
    .await;
    let slider = slider.expect("the hog's slider");
    set_slider(base, session, &slider, mib, &[]).await
}
