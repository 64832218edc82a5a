//! [`NotebookService`]: what a `with_app` mount is — readiness gate, then proxy.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use super::process::{Backend, Status};
use super::sessions::{self, Sessions};
use super::Mode;
use crate::auth::origin;
use crate::builder::box_service;
use crate::proxy::{is_upgrade_request, ProxyError};
use crate::router::MountService;
use crate::Body;
use tower_layer::Layer as _;

/// The largest notebook page the gateway rewrites (to hide absolute paths); larger pages are
/// passed through untouched.
const PAGE_REWRITE_LIMIT: usize = 4 * 1024 * 1024;

/// Serves one notebook: waits for (or starts) its backend, then proxies to it.
#[derive(Clone, Debug)]
pub(crate) struct NotebookService {
    backend: Backend,
    notebook: Arc<PathBuf>,
    api_wait: Duration,
    /// The marimo sessions whose WebSockets this service tunnels.
    sessions: Arc<Sessions>,
}

impl NotebookService {
    pub(crate) fn new(backend: Backend, notebook: PathBuf, api_wait: Duration) -> Self {
        // marimo's session_ttl: 120 s by default in run mode, for ever in the editor.
        let ttl = match (backend.options().marimo.session_ttl, backend.core().mode) {
            (Some(secs), _) => Some(Duration::from_secs(secs)),
            (None, Mode::Run) => Some(Duration::from_secs(120)),
            (None, Mode::Edit) => None,
        };
        Self {
            backend,
            notebook: Arc::new(notebook),
            api_wait,
            sessions: Sessions::new(ttl),
        }
    }

    /// The mount service: this one behind response compression (gzip/brotli by
    /// `Accept-Encoding`, only when the backend did not compress).
    pub(crate) fn into_mount_service(self) -> MountService {
        box_service(tower_http::compression::CompressionLayer::new().layer(self))
    }

    /// The origin guard (unless an outer one already judged the request), then
    /// [`respond`](Self::respond), then CORS headers for an allowed origin.
    async fn handle(self, mut req: Request<Body>) -> Response<Body> {
        let mut cors = None;
        if req.extensions().get::<origin::OriginChecked>().is_none() {
            // Mounts without the gateway's auth (open, or behind the host's own) are guarded
            // here: a page on another site must not drive a kernel, write files in the
            // editor or read an event stream as this browser's user.
            match self.backend.options().origin.judge(&req) {
                origin::Verdict::Pass { cors: allowed } => cors = allowed,
                origin::Verdict::Preflight(response) => return response,
                origin::Verdict::Refuse(reason) => return origin::refuse(reason),
            }
            req.extensions_mut().insert(origin::OriginChecked);
        }
        let mut response = self.respond(req).await;
        if let Some(origin) = cors {
            origin::allow_cors(&mut response, origin);
        }
        response
    }

    async fn respond(self, mut req: Request<Body>) -> Response<Body> {
        let options = self.backend.options();
        let offloaded = options.assets.serve(
            req.method(),
            req.uri().path(),
            req.headers(),
            options.python.as_deref(),
        );
        if let Some(response) = offloaded.await {
            return response;
        }
        let page = is_page_request(&req);
        let wait = if page { Duration::ZERO } else { self.api_wait };
        match self.backend.ready_within(wait).await {
            Status::Ready => {}
            Status::Idle | Status::Starting => return starting(page),
            Status::Failed { reason, retry_at } => return failed(page, &reason, retry_at),
            Status::Stopped => {
                return unavailable(false, "The notebook server is shutting down.", 5)
            }
        }
        let upstream = &self.backend.core().upstream;
        if is_upgrade_request(&req) {
            // The session is recorded once the backend accepted the socket; the tunnel holds
            // the record (through `slot`) for as long as it is open.
            let session = sessions::from_query(&req);
            let slot = Arc::new(std::sync::Mutex::new(None));
            let guard = (self.backend.tunnel_guard(), Arc::clone(&slot));
            let response = match upstream.tunnel(req, guard).await {
                Ok(response) => response,
                Err(error) => return self.proxy_failed(error),
            };
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(id) = session {
                    let record = self.sessions.open(&id, self.backend.pid());
                    *slot.lock().expect("session slot") = record;
                }
            }
            return response;
        }
        // A call for a marimo session whose WebSocket is not here (another replica has it) is
        // refused with a retryable error rather than forwarded to a backend that lacks it.
        if let Some(id) = sessions::from_api_call(&req) {
            let pid = self.backend.pid();
            if !self.sessions.knows_within(id, pid, sessions::GRACE).await {
                tracing::debug!(
                    backend = %self.backend.core().label,
                    session = id,
                    "API call for a marimo session this server does not hold"
                );
                return sessions::elsewhere();
            }
        }
        // The editor needs the real path: it sends it back when saving.
        let rewrite = page
            && req.method() == Method::GET
            && req.uri().path() == "/"
            && self.backend.core().mode == Mode::Run;
        if rewrite {
            // The page is rewritten as text below: ask the backend not to compress it.
            req.headers_mut().remove(header::ACCEPT_ENCODING);
        }
        match upstream.forward(req).await {
            Ok(response) if rewrite => hide_paths(response, &self.notebook).await,
            Ok(response) => response,
            Err(error) => self.proxy_failed(error),
        }
    }

    fn proxy_failed(&self, error: ProxyError) -> Response<Body> {
        tracing::warn!(backend = %self.backend.core().label, %error, "proxy error");
        if matches!(error, ProxyError::Unreachable) {
            // The process may have just died: let the supervisor notice and restart it.
            self.backend.demand();
        }
        error.into_response()
    }
}

impl Service<Request<Body>> for NotebookService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// A browser loading a page (rather than the frontend calling the API).
fn is_page_request<B>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && !is_upgrade_request(req)
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
}

fn starting(page: bool) -> Response<Body> {
    unavailable(page, "Starting notebook…", 1)
}

fn failed(page: bool, reason: &str, retry_at: Instant) -> Response<Body> {
    let retry = retry_at
        .saturating_duration_since(Instant::now())
        .as_secs()
        .clamp(1, 3600);
    let message = format!("The notebook could not start.\n\n{reason}");
    unavailable(page, &message, retry)
}

/// `503` with `Retry-After`: a small self-refreshing HTML page for browsers, text otherwise.
fn unavailable(page: bool, message: &str, retry_after: u64) -> Response<Body> {
    let (content_type, body) = if page {
        let (title, detail) = message.split_once("\n\n").unwrap_or((message, ""));
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{retry_after}\">\
             <title>{title}</title><style>body{{font-family:system-ui,sans-serif;margin:3rem;\
             color:#333}}pre{{background:#f5f5f5;padding:1rem;overflow:auto}}</style></head>\
             <body><h1>{title}</h1>{pre}<p>This page reloads by itself.</p></body></html>",
            title = crate::html::escape(title),
            pre = if detail.is_empty() {
                String::new()
            } else {
                format!("<pre>{}</pre>", crate::html::escape(detail))
            },
        );
        ("text/html; charset=utf-8", html)
    } else {
        ("text/plain; charset=utf-8", message.to_owned())
    };
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::RETRY_AFTER, retry_after)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body))
        .expect("valid 503 response")
}

/// marimo embeds the notebook's absolute path (and its directory) in the page; browsers only
/// need the file name. Rewrites `200 text/html` pages up to [`PAGE_REWRITE_LIMIT`].
async fn hide_paths(response: Response<Body>, notebook: &Path) -> Response<Body> {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let encoded = response.headers().contains_key(header::CONTENT_ENCODING);
    let (Some(dir), true, false, StatusCode::OK) = (
        notebook.parent().and_then(Path::to_str),
        is_html,
        encoded,
        response.status(),
    ) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let bytes = match Limited::new(body, PAGE_REWRITE_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "could not read the notebook page");
            return crate::router::plain_response(StatusCode::BAD_GATEWAY, "Bad Gateway");
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let page = text
        .replace(&format!("{dir}/"), "")
        .replace(&format!("\"{dir}\""), "\".\"")
        .replace(&format!("file://{dir}\""), "file://.\"");
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Ok(length) = HeaderValue::try_from(page.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, length);
    }
    Response::from_parts(parts, Body::from(page))
}
