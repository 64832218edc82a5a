//! Helpers shared by the integration tests: a real server on a loopback port and a real HTTP
//! client.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;

/// A server running on 127.0.0.1 with a random port; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start<S, B>(service: S) -> Self
    where
        S: tower::Service<
                Request<hyper::body::Incoming>,
                Response = Response<B>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<marimo_rs::BoxError>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = marimo_rs::serve(listener, service).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(server.into_future());
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the server task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

use std::future::IntoFuture;

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request with the given method, headers and body.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    reply(client().request(request).await.expect("request failed")).await
}

/// Reads a response in full.
pub async fn reply(response: Response<hyper::body::Incoming>) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], "").await
}

/// Writes raw bytes on a fresh TCP connection and reads until the server closes it or
/// `timeout` passes; returns what was read.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A notebook shipped with the crate's examples.
pub fn example_notebook(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/notebooks")
        .join(name)
}

/// Whether a process is still alive (not gone and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is gone, up to `timeout`.
pub async fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    !process_alive(pid)
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket with extra request headers; returns the socket or the refusal status.
pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, StatusCode> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(other) => panic!("WebSocket connection failed: {other}"),
    }
}

/// Reads JSON messages until one satisfies `want`; fails after `timeout`.
pub async fn ws_until(
    ws: &mut Ws,
    timeout: std::time::Duration,
    mut want: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a WebSocket message");
        let message = next.expect("WebSocket closed").expect("WebSocket error");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            if std::env::var_os("WS_DEBUG").is_some() {
                eprintln!("WS {}", &text[..text.len().min(300)]);
            }
            if want(&value) {
                return value;
            }
        }
    }
}

/// Runs one of the project's install scripts (`.ci/install-chromium`, `.ci/install-haproxy`)
/// so that `cargo test` sets up what a test needs by itself, as `.ci/run` does. Serialised
/// across test threads and binaries by the script's idempotence and a file lock. Returns
/// whether the script succeeded (it fails without root when the tool is missing).
pub fn run_install_script(script: &str) -> bool {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock_path = std::env::temp_dir().join("marimo-rs-test-install.lock");
    let lock = std::fs::File::create(&lock_path).and_then(|file| file.lock().map(|()| file));
    let status = std::process::Command::new("bash")
        .arg(root.join(".ci").join(script))
        .status();
    drop(lock);
    matches!(status, Ok(status) if status.success())
}

/// Sends `signal` to a process this test started.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// Every process below `pid` (backends and the kernels they started), from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // `pid (comm) state ppid …`: the command name may contain spaces.
            let after = stat.rsplit_once(')')?.1;
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut found = Vec::new();
    let mut pending = vec![pid];
    while let Some(parent) = pending.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                pending.push(child);
            }
        }
    }
    found
}

/// The `Accept` header of a browser loading a page.
pub fn html() -> [(&'static str, &'static str); 1] {
    [("accept", "text/html,application/xhtml+xml")]
}

/// How long finding (or installing) Python with marimo and starting backends may take.
pub const START: std::time::Duration = std::time::Duration::from_secs(180);

/// Finds Python with marimo (installing the managed virtualenv if needed) and starts the
/// app's backends, before any timing-sensitive step.
pub async fn start_backends(app: &marimo_rs::MarimoService) {
    tokio::time::timeout(START, app.start())
        .await
        .expect("provisioning Python and starting backends timed out")
        .expect("no Python with marimo");
}

/// Whether a WebSocket message is a cell output containing `text`.
pub fn output_contains(message: &serde_json::Value, text: &str) -> bool {
    message["op"] == "cell-op"
        && message["data"]["output"]["data"]
            .as_str()
            .is_some_and(|data| data.contains(text))
}

/// The object id of the slider, from the cell output that renders it.
pub fn slider_id(message: &serde_json::Value) -> Option<String> {
    let html = message["data"]["output"]["data"].as_str()?;
    if !html.contains("marimo-slider") {
        return None;
    }
    let start = html.find("object-id='")? + "object-id='".len();
    let end = start + html[start..].find('\'')?;
    Some(html[start..end].to_owned())
}

/// The first script a marimo page loads (`assets/index-….js`), relative to the page.
pub fn first_script(page: &str) -> String {
    page.split("src=\"./")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script from ./assets")
        .to_owned()
}
