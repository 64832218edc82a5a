//! The gateway's operator endpoints: the admin page at `{base}/_admin` ([`Admin`]) and the
//! Prometheus metrics at `{base}/metrics`, answered before the auth layer with credentials of
//! their own.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/metrics` | `GET`, `HEAD` | the metrics, to a client on this machine or with the metrics token |
//! | `/_admin/` | `GET`, `HEAD` | the admin page (HTML) |
//! | `/_admin/state` | `GET`, `HEAD` | the same as JSON |
//! | `/_admin/backends/{id}/restart`, `…/stop` | `POST` (same origin) | the action |
//!
//! Two services place them: [`Gate`], outside the auth layer, answers `/metrics` and admins
//! with the admin token (`Authorization: Bearer TOKEN`, or Basic with the token as password, so
//! that a browser asks for it); [`UserGate`], inside the auth layer, answers signed-in
//! [admin users](Admin::users), whose requests `Gate` lets through without a token.

mod page;

use std::convert::Infallible;
use std::fmt;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tower_service::Service;

use crate::access::Access;
use crate::auth::{from_authorization, retry_after_secs, LimitState};
use crate::metrics::observe::{is_admin_path, ADMIN_PATH, METRICS_PATH};
use crate::metrics::{group_usage, BackendSample, BackendSource, Metrics};
use crate::mount::{MountFuture, MountService};
use crate::notebook::{Backend, Backends};
use crate::origin::{self, OriginChecked};
use crate::request::{accepts_html, is_local_client};
use crate::response::{
    json, method_not_allowed, no_store, not_found, plain, redirect, retry_after,
};
use crate::{AuthLayer, Body, Token, User};

/// The admin page: mounts, backends (pid, state, uptime, restarts, memory, CPU, open
/// sessions, last failure) and the login limiter, as HTML at `{base}/_admin/` and as JSON at
/// `{base}/_admin/state`, with buttons (`POST`s) that restart or stop one backend.
///
/// Off unless given to [`AppBuilder::admin`](crate::AppBuilder::admin), and then open only to
/// who it names: the holder of its [token](Admin::token) (sent as `Authorization: Bearer
/// TOKEN`, or as the password of HTTP Basic, which is what a browser asks for), and signed-in
/// [users](Admin::users) or members of admin [groups](Admin::groups). A request without them gets `401` (with a Basic challenge when a
/// token is set); a wrong token `401`, counted by the login limit like any wrong credential
/// (`429` once the allowance is used up); a signed-in user who is not an admin `403`. Actions
/// are `POST`s, refused (`403`) from another origin. The page shows no secret: no token,
/// cookie, address of a client, backend stderr, or path outside a notebook's name.
///
/// "Stop" ends the backend's process as an idle timeout would: the next request to the
/// notebook starts it again. "Restart" stops it and starts a new one at once.
///
/// ```
/// # fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::{create_app, Admin, Token};
///
/// let app = create_app()
///     .with_app("/intro", "examples/notebooks/intro.py")
///     .admin(Admin::new().token(Token::random()))
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    token: Option<Token>,
    /// Admin users and groups; no rule means no signed-in admin.
    users: Access,
}

impl Admin {
    /// An admin page nobody may open yet: give it a [token](Admin::token),
    /// [users](Admin::users) or [groups](Admin::groups).
    pub fn new() -> Self {
        Self {
            token: None,
            users: Access::signed_in(),
        }
    }

    /// Opens the page to requests carrying `token` (`Authorization: Bearer TOKEN`, or Basic
    /// with any user name and `TOKEN` as the password). Use another token than the one that
    /// opens the notebooks.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// Opens the page to the signed-in users with these names (the [`User`] the gateway's
    /// auth, or a layer given to [`AppBuilder::layer`](crate::AppBuilder::layer), attached).
    /// Adds to the names given before.
    ///
    /// With a [token](Admin::token) too, a request that carries an `Authorization` header is
    /// judged by the token alone: admin users come with their session cookie.
    pub fn users<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.users = self.users.users(names);
        self
    }

    /// Opens the page to the signed-in members of these groups (the groups of the
    /// [`User`], e.g. from the identity provider's `groups` claim). Adds to the groups given
    /// before; a user named by [`users`](Admin::users) or in one of these groups is an admin.
    ///
    /// ```
    /// use marimo_rs::Admin;
    ///
    /// let admin = Admin::new().users(["ada"]).groups(["platform-team"]);
    /// # let _ = admin;
    /// ```
    pub fn groups<I, T>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.users = self.users.groups(groups);
        self
    }

    /// Whether signed-in users may be admins (the inner [`UserGate`] is needed).
    pub(crate) fn has_users(&self) -> bool {
        !self.users.is_open()
    }

    /// Whether `user` is an admin.
    fn is_admin(&self, user: &User) -> bool {
        self.has_users() && self.users.allows(user)
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("token", &self.token)
            .field("users", &self.users)
            .finish()
    }
}

/// A mount as the admin page lists it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct MountInfo {
    pub(crate) path: String,
    /// `app`, `edit`, `directory` or `service`.
    pub(crate) kind: &'static str,
}

/// What the operator endpoints of one built app read.
pub(crate) struct Ops {
    pub(crate) admin: Option<Admin>,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) metrics_token: Option<Token>,
    pub(crate) backends: Option<Arc<Backends>>,
    pub(crate) mounts: Vec<MountInfo>,
    /// The gateway's auth layer (its login limit is shown on the page).
    pub(crate) auth: Option<AuthLayer>,
    /// Whose login limit counts wrong admin and metrics tokens: the gateway's auth layer, or
    /// without one a layer of their own, only for its limit.
    pub(crate) limit: AuthLayer,
    pub(crate) origin: origin::Policy,
}

impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ops")
            .field("admin", &self.admin)
            .field("metrics", &self.metrics.is_some())
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

/// What a request's `Authorization` header proved about a token.
enum Presented {
    Right,
    Wrong,
    Absent,
    /// Not checked: the client's login allowance is used up for this long.
    Limited(Duration),
}

impl Ops {
    /// Whether `req` carries `token`, checked against the client's login allowance.
    fn presented<B>(&self, req: &Request<B>, token: &Token) -> Presented {
        let headers = req.headers();
        if !headers.contains_key(header::AUTHORIZATION) {
            return Presented::Absent;
        }
        match self.limit.attempt(req.extensions(), headers, || {
            from_authorization(headers, token)
        }) {
            Ok(Some(_)) => Presented::Right,
            Ok(None) => Presented::Wrong,
            Err(wait) => Presented::Limited(wait),
        }
    }

    /// `GET /metrics`: to a client on this machine (a loopback peer no proxy forwarded), or
    /// with the metrics token.
    fn metrics(&self, metrics: &Metrics, req: &Request<Body>) -> Response<Body> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return no_store(method_not_allowed("GET, HEAD"));
        }
        let allowed = is_local_client(req)
            || match &self.metrics_token {
                Some(token) => match self.presented(req, token) {
                    Presented::Right => true,
                    Presented::Limited(wait) => return too_many(wait),
                    Presented::Wrong | Presented::Absent => {
                        return challenge("Bearer realm=\"marimo-rs metrics\"")
                    }
                },
                None => false,
            };
        if !allowed {
            return no_store(plain(
                StatusCode::FORBIDDEN,
                "The metrics are served to clients on this machine only (or with the metrics \
                 token).",
            ));
        }
        let mut response = plain(StatusCode::OK, metrics.render());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(Metrics::CONTENT_TYPE),
        );
        no_store(response)
    }

    /// Everything the admin page shows, now.
    fn snapshot(&self) -> Snapshot {
        let backends = self
            .backends
            .as_ref()
            .map(|backends| backends.snapshot())
            .unwrap_or_default();
        let usage = group_usage(backends.iter().filter_map(Backend::pid));
        let backends = backends
            .iter()
            .map(|backend| {
                let stats = backend.stats();
                let history = stats.history();
                let pid = backend.pid();
                let used = pid.and_then(|pid| usage.get(&pid));
                BackendInfo {
                    id: backend.id(),
                    mount: stats.mount().to_string(),
                    path: stats.path().to_string(),
                    notebook: backend
                        .notebook()
                        .file_name()
                        .map(|name| name.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    mode: backend.mode().as_str(),
                    state: backend.state().as_str(),
                    pid,
                    uptime_seconds: history.uptime.map(|uptime| uptime.as_secs()),
                    starts: history.starts,
                    restarts: history.restarts,
                    rss_bytes: used.map(|used| used.resident_bytes),
                    cpu_seconds: used.map(|used| (used.cpu_seconds * 100.0).round() / 100.0),
                    sessions: backend.open_tunnels(),
                    last_failure: history.last_failure.map(|(at, reason)| FailureInfo {
                        at: humantime::format_rfc3339_seconds(at).to_string(),
                        reason: reason.to_string(),
                    }),
                }
            })
            .collect();
        let limit = self
            .auth
            .as_ref()
            .and_then(AuthLayer::limit_state)
            .map(LimitInfo::from);
        Snapshot {
            mounts: self.mounts.clone(),
            backends,
            login_limit: limit,
        }
    }

    /// Serves an admin request whose credential was accepted (its origin was judged by
    /// [`Gate`] before any credential was looked at).
    async fn admin(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        let rest = req
            .uri()
            .path()
            .strip_prefix(ADMIN_PATH)
            .unwrap_or_default();
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        match rest {
            "" => redirect(StatusCode::TEMPORARY_REDIRECT, "_admin/"),
            "/" if read => no_store(page::render(&self.snapshot())),
            "/state" if read => {
                let document = serde_json::to_string(&self.snapshot()).unwrap_or_default();
                no_store(json(StatusCode::OK, document))
            }
            "/" | "/state" => no_store(method_not_allowed("GET, HEAD")),
            _ => match action(rest) {
                Some(_) if req.method() != Method::POST => no_store(method_not_allowed("POST")),
                Some((id, verb)) => self.act(id, verb, is_html(&req)).await,
                None => not_found(),
            },
        }
    }

    /// Restarts or stops backend `id`.
    async fn act(&self, id: usize, verb: Verb, html: bool) -> Response<Body> {
        let backend = self
            .backends
            .as_ref()
            .and_then(|backends| backends.snapshot().into_iter().find(|b| b.id() == id));
        let Some(backend) = backend else {
            return detail(StatusCode::NOT_FOUND, &format!("no backend {id}"));
        };
        let stopped = backend.recycle().await;
        tracing::info!(backend = %backend.label(), action = verb.as_str(), "admin action");
        match verb {
            Verb::Restart => backend.demand(),
            Verb::Stop if !stopped => {
                return detail(
                    StatusCode::CONFLICT,
                    &format!("backend {id} is not running"),
                )
            }
            Verb::Stop => {}
        }
        if html {
            // Back to the page, from `_admin/backends/{id}/{verb}`.
            return no_store(redirect(StatusCode::SEE_OTHER, "../../"));
        }
        let document = serde_json::json!({
            "id": id,
            "action": verb.as_str(),
            "state": backend.state().as_str(),
            "pid": backend.pid(),
        });
        no_store(json(StatusCode::OK, document.to_string()))
    }
}

/// The actions of the admin page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    Restart,
    Stop,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Restart => "restart",
            Verb::Stop => "stop",
        }
    }
}

/// `/backends/{id}/{restart|stop}`.
fn action(rest: &str) -> Option<(usize, Verb)> {
    let (id, verb) = rest.strip_prefix("/backends/")?.split_once('/')?;
    let verb = match verb {
        "restart" => Verb::Restart,
        "stop" => Verb::Stop,
        _ => return None,
    };
    // Digits only: `+1` or ` 1` name nothing.
    let id = id
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| id.parse().ok())??;
    Some((id, verb))
}

/// A form posted from the page (it wants the page back), rather than a script.
fn is_html<B>(req: &Request<B>) -> bool {
    accepts_html(req.headers())
}

fn detail(status: StatusCode, text: &str) -> Response<Body> {
    no_store(json(
        status,
        serde_json::json!({ "detail": text }).to_string(),
    ))
}

/// `401` with a challenge.
fn challenge(scheme: &'static str) -> Response<Body> {
    let mut response = detail(StatusCode::UNAUTHORIZED, "Authorization required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    response
}

fn too_many(wait: Duration) -> Response<Body> {
    retry_after(
        detail(StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts"),
        retry_after_secs(wait),
    )
}

const ADMIN_REALM: &str = "Basic realm=\"marimo-rs admin\"";

/// The operator endpoints outside the auth layer: `/metrics`, and `/_admin` for the admin
/// token. Everything else (and admin requests without a token, when admin users are named)
/// goes on to `inner`.
#[derive(Clone)]
pub(crate) struct Gate {
    ops: Arc<Ops>,
    inner: MountService,
}

impl Gate {
    pub(crate) fn new(ops: Arc<Ops>, inner: MountService) -> Self {
        Self { ops, inner }
    }
}

/// What [`Gate`] and [`UserGate`] answer with: the admin page, or the inner service's answer.
type GateFuture = Either<BoxFuture<'static, Result<Response<Body>, Infallible>>, MountFuture>;

/// `req` (with an accepted credential) served by the admin page.
fn serve_admin(ops: &Arc<Ops>, req: Request<Body>) -> GateFuture {
    let ops = Arc::clone(ops);
    Either::Left(Box::pin(async move { Ok(ops.admin(req).await) }))
}

impl Service<Request<Body>> for Gate {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = GateFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let ops = &self.ops;
        let path = req.uri().path();
        if let Some(metrics) = ops.metrics.as_ref().filter(|_| path == METRICS_PATH) {
            return ready(ops.metrics(metrics, &req));
        }
        let Some(admin) = ops.admin.as_ref().filter(|_| is_admin_path(path)) else {
            return Either::Right(self.inner.call(req));
        };
        // Refused before any credential is looked at.
        match ops.origin.judge(&req) {
            origin::Verdict::Pass { .. } => {}
            origin::Verdict::Preflight(response) => return ready(response),
            origin::Verdict::Refuse(reason) => return ready(origin::refuse(reason)),
        }
        req.extensions_mut().insert(OriginChecked);
        let presented = match &admin.token {
            Some(token) => ops.presented(&req, token),
            None => Presented::Absent,
        };
        match presented {
            Presented::Right => serve_admin(ops, req),
            Presented::Limited(wait) => ready(too_many(wait)),
            // Admin users sign in like everyone: through the auth layer, to `UserGate`.
            Presented::Absent if admin.has_users() => Either::Right(self.inner.call(req)),
            Presented::Absent | Presented::Wrong => {
                tracing::debug!("admin page refused: no or wrong admin token");
                ready(challenge(ADMIN_REALM))
            }
        }
    }
}

fn ready(response: Response<Body>) -> GateFuture {
    Either::Right(MountFuture::ready(response))
}

/// The admin page for signed-in [admin users](Admin::users), inside the auth layer.
#[derive(Clone)]
pub(crate) struct UserGate {
    ops: Arc<Ops>,
    inner: MountService,
}

impl UserGate {
    pub(crate) fn new(ops: Arc<Ops>, inner: MountService) -> Self {
        Self { ops, inner }
    }
}

impl Service<Request<Body>> for UserGate {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = GateFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let ops = &self.ops;
        let Some(admin) = ops
            .admin
            .as_ref()
            .filter(|_| is_admin_path(req.uri().path()))
        else {
            return Either::Right(self.inner.call(req));
        };
        match req.extensions().get::<User>() {
            Some(user) if admin.is_admin(user) => serve_admin(ops, req),
            Some(_) => ready(detail(StatusCode::FORBIDDEN, "Not an admin")),
            None => ready(challenge(ADMIN_REALM)),
        }
    }
}

/// The admin page's content.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) mounts: Vec<MountInfo>,
    pub(crate) backends: Vec<BackendInfo>,
    pub(crate) login_limit: Option<LimitInfo>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BackendInfo {
    pub(crate) id: usize,
    pub(crate) mount: String,
    pub(crate) path: String,
    /// The notebook's file name (not where it lives).
    pub(crate) notebook: String,
    pub(crate) mode: &'static str,
    pub(crate) state: &'static str,
    pub(crate) pid: Option<u32>,
    pub(crate) uptime_seconds: Option<u64>,
    pub(crate) starts: u64,
    pub(crate) restarts: u64,
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) sessions: usize,
    pub(crate) last_failure: Option<FailureInfo>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FailureInfo {
    pub(crate) at: String,
    pub(crate) reason: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct LimitInfo {
    pub(crate) burst: u32,
    pub(crate) per_seconds: u64,
    pub(crate) tracked_addresses: usize,
    pub(crate) limited_addresses: usize,
}

impl From<LimitState> for LimitInfo {
    fn from(state: LimitState) -> Self {
        Self {
            burst: state.burst,
            per_seconds: state.per.as_secs(),
            tracked_addresses: state.tracked,
            limited_addresses: state.limited,
        }
    }
}

/// The backends of a built app, sampled at each scrape.
impl BackendSource for Backends {
    fn sample(&self, into: &mut Vec<BackendSample>) {
        into.extend(self.snapshot().iter().map(|backend| BackendSample {
            mount: Arc::clone(backend.stats().mount()),
            path: Arc::clone(backend.stats().path()),
            state: backend.state(),
            pid: backend.pid(),
            sessions: backend.open_tunnels(),
        }));
    }
}

/// Lets `metrics` sample `backends` at each scrape, while they live.
pub(crate) fn watch_backends(metrics: &Metrics, backends: &Arc<Backends>) {
    let weak: Weak<dyn BackendSource> = Arc::downgrade(backends) as Weak<Backends>;
    metrics.watch(weak);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_name_a_backend_by_its_digits() {
        assert_eq!(action("/backends/3/restart"), Some((3, Verb::Restart)));
        assert_eq!(action("/backends/12/stop"), Some((12, Verb::Stop)));
        for bad in [
            "/backends/3/kill",
            "/backends/+3/stop",
            "/backends//stop",
            "/backends/3",
            "/backends/3/stop/",
            "/x/3/stop",
            "/backends/99999999999999999999999/stop",
        ] {
            assert_eq!(action(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let admin = Admin::new()
            .token(Token::new("adm1n-s3cret"))
            .users(["ada"]);
        let shown = format!("{admin:?}");
        assert!(!shown.contains("adm1n-s3cret"), "{shown}");
        assert!(shown.contains("ada"), "{shown}");
    }
}
