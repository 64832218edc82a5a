//! [`NotebookService`]: what a `with_app` mount is — readiness gate, then proxy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};

use super::memory;
use super::page::Page;
use super::process::{Backend, Status};
use super::sessions::{self, Full, Sessions};
use super::stored::FromMemory;
use super::Mode;
use crate::mount::{IntoMountService as _, MountService};
use crate::origin;
use crate::proxy::ProxyError;
use crate::request::{is_local_client, is_page_load, is_websocket_handshake};
use crate::response::{html, plain, unavailable};
use crate::sync::lock;
use crate::Body;
use tower_layer::Layer as _;

/// How long a page load waits for a starting backend before it gets the self-refreshing
/// "starting" page: a start from the warm pool takes a fraction of it.
const PAGE_WAIT: Duration = Duration::from_secs(1);
/// Proxied responses smaller than this are sent as they are: compressing a short JSON answer
/// costs more than the bytes it saves.
const COMPRESS_MIN: u16 = 1024;

/// Serves one notebook: waits for (or starts) its backend, then proxies to it.
#[derive(Clone, Debug)]
pub(crate) struct NotebookService {
    /// The backend, and through it the options it runs with.
    backend: Backend,
    /// The run-mode page: kept in memory, the notebook's location hidden.
    page: Arc<Page>,
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
            page: Arc::new(Page::new(backend.notebook())),
            backend,
            sessions: Sessions::new(ttl, max_sessions),
        }
    }

    /// The mount service: this one behind response compression (gzip/brotli by
    /// `Accept-Encoding`) of what the backend sent, uncompressed and over [`COMPRESS_MIN`]
    /// bytes. Event streams are never compressed (a compressor holds data back until it has
    /// enough), nor images, nor what the gateway answers from memory (compressed already).
    pub(crate) fn into_mount_service(self) -> MountService {
        use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
        let this = Arc::new(self);
        let service = tower::service_fn(move |req| {
            let this = Arc::clone(&this);
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let proxied = |_: StatusCode,
                       _: http::Version,
                       _: &http::HeaderMap,
                       extensions: &http::Extensions| {
            extensions.get::<FromMemory>().is_none()
        };
        let predicate = SizeAbove::new(COMPRESS_MIN)
            .and(NotForContentType::GRPC)
            .and(NotForContentType::IMAGES)
            .and(NotForContentType::SSE)
            .and(proxied);
        tower_http::compression::CompressionLayer::new()
            .compress_when(predicate)
            .layer(service)
            .into_mount_service()
    }

    /// The origin guard (unless an outer one already judged the request), then
    /// [`respond`](Self::respond), then CORS headers for an allowed origin.
    async fn handle(&self, mut req: Request<Body>) -> Response<Body> {
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

    async fn respond(&self, req: Request<Body>) -> Response<Body> {
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
            PAGE_WAIT.min(options.startup_wait)
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
        // served from memory with the notebook's location hidden. The editor needs the real
        // path (it sends it back when saving), and its page is never kept.
        let run_page = (req.method() == Method::GET || req.method() == Method::HEAD)
            && req.uri().path() == "/"
            && self.backend.mode() == Mode::Run;
        // The notebook's page opens a session: over the cap, its WebSocket would be refused.
        // Then the backend is asked all the same, as it says first if it is stopping.
        let full = if page && req.uri().path() == "/" {
            self.sessions.full()
        } else {
            None
        };
        let response = if run_page && full.is_none() {
            self.page.serve(&self.backend, req).await
        } else {
            self.backend.forward(req).await
        };
        match response {
            // The backend is stopping for lack of memory (see `memory`): say so, as the
            // gateway does once it has stopped.
            Ok(response) if memory::ran_out_answer(&response) => {
                let message = self.backend.out_of_memory_message().unwrap_or_default();
                out_of_memory(page, &message)
            }
            Ok(response) => match full {
                Some(full) if response.status().is_success() => too_many_sessions(true, &full),
                _ => response,
            },
            Err(error) => self.proxy_failed(error),
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
