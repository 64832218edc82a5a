//! What the integration tests share, so that each test reads as its scenario.
//!
//! - here: a real server on a loopback port ([`TestServer`]), a real HTTP client ([`send`],
//!   [`Reply`]), WebSockets ([`ws_connect`], [`ws_until`]), waiting ([`eventually`]) and the
//!   processes a test started ([`wait_gone`], [`descendants`]);
//! - [`marimo`]: real notebooks behind the gateway ([`marimo::Gateway`]) and their kernel
//!   sessions;
//! - [`process`]: the `marimo-rs` binary and the examples run as processes;
//! - [`balancer`]: haproxy and nginx in front of replicas;
//! - [`raw`]: HTTP/1.1 written by hand; [`cdp`]: headless Chromium.
#![allow(dead_code, unreachable_pub)]

pub mod balancer;
pub mod cdp;
pub mod marimo;
pub mod process;
pub mod raw;

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use marimo_rs::{Body, MarimoService, Serve};
use tokio::sync::oneshot;

/// The `Accept` header of a browser loading a page.
pub const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");
/// The `Content-Type` of a posted HTML form.
pub const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
/// The `Content-Type` of a JSON body.
pub const JSON: (&str, &str) = ("content-type", "application/json");

/// A service that `create_app().with_service(…)` and `Mount::service` take: what the tests'
/// stand-in mounts return, named once instead of spelled out at each of them.
pub trait Endpoint:
    tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Endpoint for S where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A mount that counts the requests it gets in `hits` and answers `200 ok`.
pub fn counter(hits: Arc<AtomicUsize>) -> impl Endpoint {
    tower::service_fn(move |_req: Request<Body>| {
        hits.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>(Response::new(Body::from("ok"))))
    })
}

/// A server running on 127.0.0.1 with a random port; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Serves `service` with [`marimo_rs::serve`]'s defaults.
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
        Self::serving(|listener, stopped| {
            marimo_rs::serve(listener, service)
                .with_graceful_shutdown(stopped)
                .into_future()
        })
        .await
    }

    /// Serves `service` on `listener`, bound by the caller (who needed its port first: an
    /// identity provider's redirect URI names it).
    pub async fn start_on(listener: tokio::net::TcpListener, service: MarimoService) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            marimo_rs::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves `service` with the options `configure` sets (timeouts, connection limits).
    pub async fn start_with(
        service: MarimoService,
        configure: impl FnOnce(Serve<MarimoService>) -> Serve<MarimoService>,
    ) -> Self {
        Self::serving(|listener, stopped| {
            configure(marimo_rs::serve(listener, service))
                .with_graceful_shutdown(stopped)
                .into_future()
        })
        .await
    }

    /// Binds a loopback port and runs the server `serve` makes on it, until `stop`.
    async fn serving<F>(
        serve: impl FnOnce(tokio::net::TcpListener, BoxFuture<'static, ()>) -> F,
    ) -> Self
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(listener, stopped));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT`: what a page served here sends as its `Origin`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
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

impl Site for TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A server the tests talk to over HTTP at its own origin: a [`TestServer`], a process
/// started by the test, a load balancer.
pub trait Site {
    /// `http://HOST:PORT{path}` (the path with its query).
    fn url(&self, path: &str) -> String;

    /// `ws://HOST:PORT{path}`.
    fn ws_url(&self, path: &str) -> String {
        self.url(path).replacen("http", "ws", 1)
    }

    /// `GET {path}` with `headers`.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> impl Future<Output = Reply> {
        self.send(Method::GET, path, headers, "")
    }

    /// `{method} {path}` with `headers` and `body`.
    fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> impl Future<Output = Reply> {
        let url = self.url(path);
        async move { send(method, &url, headers, body).await }
    }
}

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

    /// The body starts with `prefix` (what an echoing service saw, say).
    #[track_caller]
    pub fn assert_body_starts_with(&self, prefix: &str) {
        assert!(
            self.body.starts_with(prefix),
            "expected a body starting with {prefix:?}: {}",
            self.body
        );
    }

    /// `name=value` of the (first) cookie the response sets, as a `Cookie` header value.
    pub fn cookie(&self) -> String {
        let set_cookie = self
            .header("set-cookie")
            .unwrap_or_else(|| panic!("a Set-Cookie header: {}", self.brief()));
        name_value(set_cookie)
    }

    /// `name=value` of every cookie the response sets.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|value| name_value(value.to_str().unwrap()))
            .collect()
    }

    /// `name=value` of the cookie called `name` the response sets.
    pub fn cookie_named(&self, name: &str) -> String {
        self.cookies()
            .into_iter()
            .find(|cookie| cookie.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {self:?}"))
    }

    /// Status and the start of the body, for assertion messages (pages are long).
    pub fn brief(&self) -> String {
        let end = self
            .body
            .char_indices()
            .nth(120)
            .map_or(self.body.len(), |(i, _)| i);
        format!("{} {:?}", self.status, &self.body[..end])
    }
}

/// A browser without credentials is sent to the gateway's login form.
pub fn assert_sent_to_login(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{reply:?}");
    let location = reply.header("location").unwrap_or_default();
    assert!(location.contains("auth/login"), "{reply:?}");
}

/// `name=value` of a `Set-Cookie` value.
fn name_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
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

/// Resolves a `Location` against the URL path it came from, as a browser does.
pub fn resolve(base: &str, reference: &str) -> String {
    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (reference, None),
    };
    let base_path = base.split('?').next().unwrap();
    let merged = if ref_path.starts_with('/') {
        ref_path.to_owned()
    } else if ref_path.is_empty() {
        base_path.to_owned()
    } else {
        format!("{}{ref_path}", &base_path[..=base_path.rfind('/').unwrap()])
    };
    // RFC 3986 remove_dot_segments, for the `.` and `..` segments our redirects use.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = merged.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    let path = format!("/{}", out.join("/"));
    match ref_query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// Calls `attempt` every `every` until what it returns is `done`, and returns that; fails
/// with the last result when `limit` has passed.
pub async fn eventually<T: Debug>(
    limit: Duration,
    every: Duration,
    mut attempt: impl AsyncFnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = attempt().await;
        if done(&last) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {last:?}"
        );
        tokio::time::sleep(every).await;
    }
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
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !process_alive(pid)
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
    timeout: Duration,
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
