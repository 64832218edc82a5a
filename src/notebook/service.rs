//! [`NotebookService`]: what a `with_app` mount is — readiness gate, then proxy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Method, Request, Response, StatusCode};

use super::memory;
use super::page::HidePaths;
use super::process::{Backend, Status};
use super::sessions::{self, Full, Sessions};
use super::Mode;
use crate::mount::{IntoMountService as _, MountService};
use crate::origin;
use crate::proxy::ProxyError;
use crate::request::{is_local_client, is_page_load, is_websocket_handshake};
use crate::response::{html, plain, unavailable};
use crate::sync::lock;
use crate::Body;
use tower_layer::Layer as _;

/// Serves one notebook: waits for (or starts) its backend, then proxies to it.
#[derive(Clone, Debug)]
pub(crate) struct NotebookService {
    /// The backend, and through it the options it runs with.
    backend: Backend,
    /// Hides the notebook's location in its run-mode page.
    hide_paths: Arc<HidePaths>,
    /// The marimo sessions whose WebSockets this service tunnels.
    sessions: Arc<Sessions>,
}

impl NotebookService {
    /// The service for `backend`'s notebook.
    pub(crate) fn new(backend: Backend) -> Self {
        // marimo's session_ttl: 120 s by default in run mode, for ever in the editor.
        let ttl = match (backend.options().marimo.session_ttl, backend.mode()) {
            (Some(secs), _) => Some(Duration::from_secs(secs)),
            (None, Mode::Run) => Some(Duration::from_secs(120)),
            (None, Mode::Edit) => None,
        };
        let max_sessions = backend.options().run.max_sessions;
        Self {
            hide_paths: Arc::new(HidePaths::new(backend.notebook())),
            backend,
            sessions: Sessions::new(ttl, max_sessions),
        }
    }

    /// The mount service: this one behind response compression (gzip/brotli by
    /// `Accept-Encoding`, only when the backend did not compress).
    pub(crate) fn into_mount_service(self) -> MountService {
        let service = tower::service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        tower_http::compression::CompressionLayer::new()
            .layer(service)
            .into_mount_service()
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
        let offloaded = self.backend.assets().serve(
            req.method(),
            req.uri().path(),
            req.headers(),
            options.python.as_deref(),
        );
        if let Some(response) = offloaded.await {
            return response;
        }
        let page = is_page_load(&req);
        let wait = if page {
            Duration::ZERO
        } else {
            options.startup_wait
        };
        match self.backend.ready_within(wait).await {
            Status::Ready => {}
            Status::Idle | Status::Starting => return not_yet(page, "Starting notebook…", 1),
            Status::Failed {
                reason,
                stderr,
                retry_at,
            } => {
                let detail = options.marimo.show_tracebacks || is_local_client(&req);
                let shown = detail.then_some((&*reason, &*stderr));
                return failed(page, shown, retry_at);
            }
            Status::OutOfMemory { message, .. } => return out_of_memory(page, &message),
            Status::Stopped => return not_yet(false, "The notebook server is shutting down.", 5),
        }
        if is_websocket_handshake(req.headers()) {
            // The session is recorded once the backend accepted the socket; the tunnel holds
            // the record (through `slot`) for as long as it is open.
            let session = sessions::from_query(&req);
            // Only the kernel socket opens a session (not `/ws_sync`, `/terminal/ws`, `/lsp/…`).
            let seat = if req.uri().path() == "/ws" {
                match self.sessions.admit(session.as_deref(), self.backend.pid()) {
                    Ok(seat) => seat,
                    Err(full) => return too_many_sessions(false, &full),
                }
            } else {
                None
            };
            let user = req
                .extensions()
                .get::<crate::User>()
                .map(|user| user.name().to_owned());
            let slot = Arc::new(std::sync::Mutex::new(None));
            let response = match self.backend.tunnel(req, Arc::clone(&slot)).await {
                Ok(response) => response,
                Err(error) => return self.proxy_failed(error),
            };
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(id) = session {
                    let record = self.sessions.open(&id, self.backend.pid());
                    let label = self.backend.label();
                    *lock(&slot) = record.map(|guard| guard.audited(user.as_deref(), label));
                }
            }
            drop(seat);
            return response;
        }
        // A call for a marimo session whose WebSocket is not here (another replica has it) is
        // refused with a retryable error rather than forwarded to a backend that lacks it.
        if let Some(id) = sessions::from_api_call(&req) {
            let pid = self.backend.pid();
            if !self.sessions.knows_within(id, pid, sessions::GRACE).await {
                tracing::debug!(
                    backend = %self.backend.label(),
                    session = id,
                    "API call for a marimo session this server does not hold"
                );
                return sessions::elsewhere();
            }
        }
        // The run-mode page, whoever asks for it (a browser, or `curl` with `Accept: */*`), is
        // rewritten to hide where the notebook lives. The editor needs the real path: it sends
        // it back when saving.
        let rewrite = (req.method() == Method::GET || req.method() == Method::HEAD)
            && req.uri().path() == "/"
            && self.backend.mode() == Mode::Run;
        let head = req.method() == Method::HEAD;
        // The notebook's page opens a session: over the cap, its WebSocket would be refused.
        // Checked on the backend's answer, which says first if the backend is stopping.
        let opens_session = page && req.uri().path() == "/";
        if rewrite {
            // The page is rewritten as text below: ask the backend not to compress it. A HEAD
            // asks for the page itself, so that it announces the rewritten page's length.
            req.headers_mut().remove(header::ACCEPT_ENCODING);
            *req.method_mut() = Method::GET;
        }
        match self.backend.forward(req).await {
            // The backend is stopping for lack of memory (see `memory`): say so, as the
            // gateway does once it has stopped.
            Ok(response) if memory::ran_out_answer(&response) => {
                let message = self.backend.out_of_memory_message().unwrap_or_default();
                out_of_memory(page, &message)
            }
            Ok(response) if opens_session && response.status().is_success() => {
                match self.sessions.full() {
                    Some(full) => too_many_sessions(true, &full),
                    None if rewrite => self.page(response, head).await,
                    None => response,
                }
            }
            Ok(response) if rewrite => self.page(response, head).await,
            Ok(response) => response,
            Err(error) => self.proxy_failed(error),
        }
    }

    /// The run-mode page, rewritten to hide where the notebook lives; bodiless for a `HEAD`.
    async fn page(&self, response: Response<Body>, head: bool) -> Response<Body> {
        let response = self.hide_paths.rewrite(response).await;
        if head {
            response.map(|_| Body::empty())
        } else {
            response
        }
    }

    fn proxy_failed(&self, error: ProxyError) -> Response<Body> {
        tracing::warn!(backend = %self.backend.label(), %error, "proxy error");
        if matches!(error, ProxyError::Unreachable) {
            // The process may have just died: let the supervisor notice and restart it.
            self.backend.demand();
        }
        error.into_response()
    }
}

/// `503` for a backend that could not start. The reason and the backend's stderr tail
/// (`shown`) may name files, settings and secrets of the server: they are always in the log,
/// and on the page only for a client on this machine or with `show_tracebacks`.
fn failed(page: bool, shown: Option<(&str, &str)>, retry_at: Instant) -> Response<Body> {
    let retry = retry_at
        .saturating_duration_since(Instant::now())
        .as_secs()
        .clamp(1, 3600);
    let detail = match shown {
        Some((reason, "")) => reason.to_owned(),
        Some((reason, stderr)) => format!("{reason}\n{stderr}"),
        None => "The server's log says why.".to_owned(),
    };
    not_yet(
        page,
        &format!("The notebook could not start.\n\n{detail}"),
        retry,
    )
}

/// `503` for a notebook that ran out of memory and is restarting: `message` (with the limit)
/// is for everyone.
fn out_of_memory(page: bool, message: &str) -> Response<Body> {
    not_yet(
        page,
        &format!("{message}\n\nIt is restarting; try again in a moment."),
        5,
    )
}

/// `503` for a session over [`AppBuilder::max_sessions`](crate::AppBuilder::max_sessions).
fn too_many_sessions(page: bool, full: &Full) -> Response<Body> {
    let sessions = if full.max == 1 { "session" } else { "sessions" };
    not_yet(
        page,
        &format!(
            "This notebook has reached its limit of {} concurrent {sessions}.\n\nTry again \
             in a little while.",
            full.max
        ),
        10,
    )
}

/// `503` with `Retry-After`: a small self-refreshing HTML page for browsers, text otherwise.
fn not_yet(page: bool, message: &str, retry_after: u64) -> Response<Body> {
    let response = if page {
        let (title, detail) = message.split_once("\n\n").unwrap_or((message, ""));
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
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
            ),
        )
    } else {
        plain(StatusCode::SERVICE_UNAVAILABLE, message.to_owned())
    };
    unavailable(response, retry_after)
}
