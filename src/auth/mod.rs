//! Token authentication, marimo's `--token` done as a tower layer: [`AuthLayer`], [`Auth`] and
//! [`Token`].
//!
//! A request is let through when it carries, checked in this order:
//!
//! 1. a valid session cookie (set by the login form or an `access_token` link);
//! 2. `?access_token=TOKEN`;
//! 3. `Authorization: Bearer TOKEN`;
//! 4. `Authorization: Basic base64(username:TOKEN)`, any non-empty username;
//!
//! or it is the login form itself (`{base}/auth/login`), a one-time sign-in link
//! (`{base}/auth/sign-in?code=…`, minted by [`AuthLayer::sign_in_link`]), or a health probe:
//! `GET /health`/`/healthz`, and `{mount}/health`/`{mount}/healthz` of a notebook mount of the
//! app the layer guards, as marimo leaves them open. The credentials are removed before the
//! request goes in (the `Authorization` header, the session cookie, the `access_token`
//! parameter) and a [`User`] extension is added instead.
//!
//! Every `Location` header is relative to the request path unless a base path is configured,
//! so redirects stay right when the service is mounted under a prefix it does not know about.
//!
//! Failed credential checks are limited per client address (`limit`, on by default): once an
//! address has used up its allowance, its credential attempts get `429` unchecked, while
//! requests with a valid session cookie still pass.

mod cookie;
mod credentials;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod limit;
mod link;
mod login;
pub(crate) mod origin;
mod secret;
mod token;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Extensions, Method, Request, Response, StatusCode, Uri};
use tower_layer::Layer;
use tower_service::Service;

use self::cookie::{unix_now, CookieKeys};
use self::credentials::{access_token, from_authorization, strip_access_token, DEFAULT_USER};
use self::limit::{client_key, retry_after_secs, IpNet, Limiter, Permit};
use self::link::{SignInLinks, SIGN_IN_PATH};
use self::login::{LoginFuture, LOGIN_PATH};
use self::origin::Origin;
pub use self::secret::SecretError;
pub use self::token::Token;
// Shared with the OpenID Connect sign-in (src/oidc): one rule for a safe `next`, one source of
// random bytes.
pub(crate) use self::login::is_safe_next;
pub(crate) use self::token::fill_random;
use crate::health::{is_health_path, is_mount_health_path};
use crate::router::MountPath;
use crate::{Body, MountPrefix, OriginalUri, RemoteAddr, User};

/// How long a session cookie lasts unless [`AuthLayer::cookie_max_age`] says otherwise.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The body of every `401`, as marimo sends it.
const UNAUTHORIZED_BODY: &str = r#"{"detail":"Authorization header required"}"#;

/// Puts token authentication in front of a service.
///
/// [`AppBuilder::token`](crate::AppBuilder::token) and
/// [`AppBuilder::auth`](crate::AppBuilder::auth) apply it to a whole built app; it also works
/// on its own around any `Service<Request<Body>, Response = Response<Body>, Error =
/// Infallible>`. See the [`Auth`] service for what it does to each request.
///
/// The defaults: browsers that are not signed in are sent to the login form; session cookies
/// last 14 days, are signed with a random key made when the layer is created (so they do not
/// survive a restart and other replicas reject them: see [`secret`](AuthLayer::secret)), get `Path=/` unless a base path is known, and are `Secure` when the
/// request came over HTTPS. `Debug` shows the options but never the token or the key.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::convert::Infallible;
/// use std::time::Duration;
///
/// use http::{Request, Response, StatusCode};
/// use marimo_rs::{AuthLayer, Body, Token, User};
/// use tower::{Layer, ServiceExt};
///
/// let hello = tower::service_fn(|req: Request<Body>| async move {
///     let user = req.extensions().get::<User>().map(|user| user.name().to_owned());
///     Ok::<_, Infallible>(Response::new(Body::from(format!("hello {user:?}"))))
/// });
/// let auth = AuthLayer::new(Token::new("sup3rs3cr3t"))
///     .cookie_max_age(Duration::from_secs(8 * 60 * 60))
///     .allowed_origins(["https://app.example.com"]);
/// let service = auth.layer(hello);
///
/// let anonymous = Request::get("/api/status").body(Body::empty()).unwrap();
/// let response = service.clone().oneshot(anonymous).await.unwrap();
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
///
/// let bearer = Request::get("/api/status")
///     .header("authorization", "Bearer sup3rs3cr3t")
///     .body(Body::empty())
///     .unwrap();
/// let response = service.oneshot(bearer).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    config: Arc<Config>,
}

/// Everything an [`Auth`] service needs, shared by all its clones.
#[derive(Clone)]
pub(crate) struct Config {
    token: Token,
    keys: CookieKeys,
    /// The key that signs session cookies (random, given, or derived from the secret).
    signing_key: Vec<u8>,
    /// Keys that still verify session cookies (derived from the old secrets).
    old_keys: Vec<Vec<u8>>,
    /// Tokens that are still accepted besides `token`, during a rotation.
    old_tokens: Vec<Token>,
    max_age: u64,
    /// Where browsers reach the service root, `""` for the host root; `None` if unknown.
    base_path: Option<String>,
    secure_cookie: Option<bool>,
    basic_challenge: bool,
    /// Allowed origins and whether forwarded headers are trusted: the same policy the
    /// notebook services of a built app apply.
    origin: origin::Policy,
    /// The failed-login limiter, shared by every service made from this layer.
    limiter: Option<Arc<Limiter>>,
    trusted_proxies: Vec<IpNet>,
    /// One-time sign-in links, shared by every clone of the layer.
    links: Arc<SignInLinks>,
    /// Mount paths of the notebooks behind this layer, whose `/health` and `/healthz` are
    /// open like the root's (filled in by `AppBuilder::build`).
    health_mounts: Vec<String>,
}

/// How many old secrets or old tokens a layer accepts: each one multiplies the work of
/// checking a forged cookie.
const MAX_OLD: usize = 4;

impl AuthLayer {
    /// Authentication with `token` and the default options.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes for the cookie key.
    pub fn new(token: Token) -> Self {
        let mut signing_key = vec![0u8; 32];
        token::fill_random(&mut signing_key);
        Self {
            config: Arc::new(Config {
                token,
                keys: CookieKeys::from_keys(&[&signing_key]),
                signing_key,
                old_keys: Vec::new(),
                old_tokens: Vec::new(),
                max_age: DEFAULT_MAX_AGE.as_secs(),
                base_path: None,
                secure_cookie: None,
                basic_challenge: false,
                origin: origin::Policy::default(),
                limiter: Some(Arc::new(Limiter::new(
                    limit::DEFAULT_BURST,
                    limit::DEFAULT_PER,
                    limit::DEFAULT_MAX_TRACKED,
                ))),
                trusted_proxies: Vec::new(),
                links: Arc::default(),
                health_mounts: Vec::new(),
            }),
        }
    }

    /// The path at which browsers reach this service's root (what it sees as `/`), such as
    /// `"/marimo"` when a host mounts it with `nest_service("/marimo", …)`.
    ///
    /// Used for the session cookie's `Path` and for redirects, which then use absolute paths
    /// under it instead of relative ones. Without it the cookie path is the
    /// [`MountPrefix`] of the request if an outer marimo_rs router set one, else `/`. Set it
    /// when the host also serves the service at its bare prefix (`/marimo` as well as
    /// `/marimo/`), since a relative redirect cannot be right for both.
    ///
    /// # Panics
    ///
    /// If `path` is not `""`, `"/"` or `/segment[/segment…]` of plain URL characters (the
    /// rules of mount paths), or contains `;` or `,`.
    pub fn base_path(mut self, path: &str) -> Self {
        let parsed = match MountPath::parse(path) {
            Ok(parsed) => parsed,
            Err(error) => panic!("AuthLayer::base_path: {error}"),
        };
        assert!(
            !path.contains([';', ',']),
            "AuthLayer::base_path: {path:?} contains `;` or `,`, which cookies cannot carry"
        );
        self.config_mut().base_path = Some(parsed.as_str().to_owned());
        self
    }

    /// Answers browsers that are not signed in with `401` and a Basic challenge (the browser's
    /// own password prompt, as `marimo` did before it had a login page) instead of a redirect
    /// to the login form. Off by default.
    pub fn basic_challenge(mut self, enabled: bool) -> Self {
        self.config_mut().basic_challenge = enabled;
        self
    }

    /// Signs session cookies with `key` instead of a random per-layer key, so that they survive
    /// restarts and replicas sharing the key accept each other's cookies. Use at least 32
    /// random bytes. The cookie name is derived from the key.
    ///
    /// # Panics
    ///
    /// If `key` is empty.
    pub fn cookie_key(mut self, key: &[u8]) -> Self {
        assert!(!key.is_empty(), "AuthLayer::cookie_key: the key is empty");
        if key.len() < 32 {
            tracing::warn!(
                length = key.len(),
                "the session cookie key is shorter than 32 bytes"
            );
        }
        let config = self.config_mut();
        config.signing_key = key.to_vec();
        config.rebuild_keys();
        self
    }

    /// Derives the session cookie key from a server secret shared by every replica, so that
    /// replicas given the same secret accept each other's cookies and a restart keeps everyone
    /// signed in. Replaces [`cookie_key`](Self::cookie_key). Use at least 32 random bytes
    /// (`openssl rand -base64 32`).
    ///
    /// The key is `HMAC-SHA256(key = secret, "marimo-rs/cookie-key/v1\0")`; run-mode tokens
    /// derived from the same secret ([`Token::from_code_with_secret`]) use another domain
    /// string, `"marimo-rs/run-token/v1\0"`, so neither value tells anything about the other.
    /// The [cookie name](Self::cookie_name) follows from the key.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, Token};
    ///
    /// let one = AuthLayer::new(Token::new("t")).secret("a shared secret of 32 bytes or more");
    /// let two = AuthLayer::new(Token::new("t")).secret("a shared secret of 32 bytes or more");
    /// assert_eq!(one.cookie_name(), two.cookie_name());
    /// ```
    ///
    /// # Panics
    ///
    /// If `secret` is empty.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        assert!(!secret.is_empty(), "AuthLayer::secret: the secret is empty");
        if secret.len() < 32 {
            tracing::warn!(
                length = secret.len(),
                "the server secret is shorter than 32 bytes"
            );
        }
        let config = self.config_mut();
        config.signing_key = cookie::key_from_secret(secret).to_vec();
        config.rebuild_keys();
        self
    }

    /// Secrets that [`secret`](Self::secret) replaced and whose session cookies are still
    /// accepted, for rotating the secret without signing everyone out: the current secret
    /// signs, every listed one verifies. A cookie is named after the key that signed it, so
    /// cookies are looked for under each accepted key's name. Keep an old secret for as long as
    /// its cookies last ([`cookie_max_age`](Self::cookie_max_age), 14 days by default), then
    /// drop it. Replaces the list given before; at most 4.
    ///
    /// Run-mode tokens derived from the old secrets are not accepted by this alone: pass them
    /// to [`old_tokens`](Self::old_tokens) (the `marimo-rs` command does).
    ///
    /// # Panics
    ///
    /// If a secret is empty, or more than 4 are given.
    pub fn old_secrets<I, T>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let old_keys: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|secret| {
                let secret = secret.as_ref();
                assert!(
                    !secret.is_empty(),
                    "AuthLayer::old_secrets: an old secret is empty"
                );
                cookie::key_from_secret(secret).to_vec()
            })
            .collect();
        assert!(
            old_keys.len() <= MAX_OLD,
            "AuthLayer::old_secrets: at most {MAX_OLD} old secrets"
        );
        let config = self.config_mut();
        config.old_keys = old_keys;
        config.rebuild_keys();
        self
    }

    /// Tokens that still open the service besides the layer's own, during a rotation: they
    /// are accepted as credentials (`access_token`, Bearer, Basic, the login form) and the
    /// session cookies signed while they were the token stay valid. New cookies are bound to
    /// the layer's own token. Replaces the list given before; at most 4.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, Token};
    ///
    /// let code = "import marimo\napp = marimo.App()\n";
    /// let layer = AuthLayer::new(Token::from_code_with_secret(code, b"new secret"))
    ///     .secret(b"new secret")
    ///     .old_secrets([b"old secret"])
    ///     .old_tokens([Token::from_code_with_secret(code, b"old secret")]);
    /// # let _ = layer;
    /// ```
    ///
    /// # Panics
    ///
    /// If more than 4 tokens are given.
    pub fn old_tokens<I>(mut self, tokens: I) -> Self
    where
        I: IntoIterator<Item = Token>,
    {
        let tokens: Vec<Token> = tokens.into_iter().collect();
        assert!(
            tokens.len() <= MAX_OLD,
            "AuthLayer::old_tokens: at most {MAX_OLD} old tokens"
        );
        self.config_mut().old_tokens = tokens;
        self
    }

    /// How long a session cookie lasts (`Max-Age`, and the expiry signed into the cookie).
    /// 14 days by default; whole seconds.
    pub fn cookie_max_age(mut self, max_age: Duration) -> Self {
        self.config_mut().max_age = max_age.as_secs();
        self
    }

    /// Always (`true`) or never (`false`) marks the session cookie `Secure`, instead of
    /// deciding per request (`Secure` when the request URI, or the [`OriginalUri`] recorded by
    /// an outer marimo_rs router, is `https`, or when `X-Forwarded-Proto: https` and
    /// [`trust_forwarded_headers`](Self::trust_forwarded_headers) is on).
    pub fn secure_cookie(mut self, secure: bool) -> Self {
        self.config_mut().secure_cookie = Some(secure);
        self
    }

    /// Believes `X-Forwarded-Proto` (for the `Secure` cookie attribute and the origin check)
    /// and `X-Forwarded-Host` (for the origin check, and for the `Host` check of a built app).
    /// Turn it on only behind a reverse proxy that sets these headers itself. Off by default.
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.config_mut().origin.set_trust_forwarded(trust);
        self
    }

    /// Origins (`https://app.example.com`, `http://localhost:3000`) whose pages may send
    /// state-changing requests, open WebSockets and read event streams, besides pages of the
    /// service's own origin; their pages may also read the answers (CORS, with credentials).
    /// Replaces the list given before.
    ///
    /// Every other origin is refused such requests with `403` (see [`Auth`]). In a built app,
    /// [`AppBuilder::allowed_origins`](crate::AppBuilder::allowed_origins) adds to this list,
    /// and the notebook services use the same one.
    ///
    /// # Panics
    ///
    /// If an entry is not `scheme://host[:port]`.
    pub fn allowed_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let parsed = origins
            .into_iter()
            .map(|origin| {
                let origin = origin.as_ref();
                Origin::parse(origin).unwrap_or_else(|| {
                    panic!("AuthLayer::allowed_origins: {origin:?} is not scheme://host[:port]")
                })
            })
            .collect();
        self.config_mut().origin.set_allowed(parsed);
        self
    }

    /// Limits failed credential checks per client address: `burst` failures in a row, then the
    /// allowance refills at `burst` per `per` (`login_limit(10, Duration::from_secs(60))`, the
    /// default, is 10 failures a minute: one more every 6 s).
    ///
    /// Every wrong credential counts: a login form `POST` with a wrong password, a wrong
    /// `Bearer` token, a `Basic` password or an `Authorization` header that does not parse, a
    /// wrong `?access_token=`. A session cookie never counts and is checked first: a browser
    /// that is signed in is never slowed or refused, even from a limited address. Once the
    /// allowance is used up, credential attempts from that address get `429 Too Many
    /// Requests` with `Retry-After` (seconds) *without the credential being checked*, right
    /// or wrong, until it refills (the login form shows the same as a page). `GET`/`HEAD`
    /// `/health` and `/healthz` are never refused.
    ///
    /// The address is the connection's peer, from the [`RemoteAddr`] extension that
    /// [`serve`](crate::serve()) inserts, keyed by the whole IPv4 address or the IPv6 `/64`
    /// prefix; behind a reverse proxy, see [`trusted_proxies`](Self::trusted_proxies). A host
    /// that serves the service itself without inserting [`RemoteAddr`] puts every client in
    /// one shared bucket (insert `RemoteAddr` with a layer to avoid that). At most 100,000
    /// addresses are tracked (about 3 MiB); beyond that, new addresses share one bucket
    /// until the least active ones refill and are forgotten.
    ///
    /// # Panics
    ///
    /// If `burst` is 0 or `per` is zero.
    pub fn login_limit(mut self, burst: u32, per: Duration) -> Self {
        assert!(
            burst > 0,
            "AuthLayer::login_limit: the burst must be at least 1"
        );
        assert!(
            !per.is_zero(),
            "AuthLayer::login_limit: the period must not be zero"
        );
        self.config_mut().limiter = Some(Arc::new(Limiter::new(
            burst,
            per,
            limit::DEFAULT_MAX_TRACKED,
        )));
        self
    }

    /// Turns the failed-login limit off (see [`login_limit`](Self::login_limit)): every
    /// credential is checked, however many wrong ones came before.
    pub fn no_login_limit(mut self) -> Self {
        self.config_mut().limiter = None;
        self
    }

    /// Reverse proxies (IP addresses or CIDR networks such as `"10.0.0.0/8"`, `"::1"`) whose
    /// `X-Forwarded-For` header is believed by the [login limit](Self::login_limit).
    ///
    /// For a request whose peer address is in the list, the client is the right-most
    /// `X-Forwarded-For` entry that is not in the list (a proxy appends the address it got the
    /// request from, so everything left of that may be forged). From any other peer the
    /// header is ignored. None by default: without it, every client behind a proxy shares the
    /// proxy's bucket.
    ///
    /// # Panics
    ///
    /// If an entry is not an IP address or `address/prefix-length`.
    pub fn trusted_proxies<I, T>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let parsed = proxies
            .into_iter()
            .map(|proxy| {
                let proxy = proxy.as_ref();
                IpNet::parse(proxy).unwrap_or_else(|| {
                    panic!("AuthLayer::trusted_proxies: {proxy:?} is not an IP address or CIDR network")
                })
            })
            .collect();
        self.config_mut().trusted_proxies = parsed;
        self
    }

    /// A one-time sign-in link to open in a browser instead of a URL with the token: `GET` on
    /// it sets the session cookie and answers `303` to `next` (a path under the service root,
    /// as the login form's `next`), once, within `valid_for` (at most 60 s; longer is cut to
    /// 60 s). After that, or a second time, it shows the login form (`403`). A wrong or used
    /// code counts against the [login limit](Self::login_limit) like a wrong password.
    ///
    /// Returns `{base}/auth/sign-in?code=CODE`, with the [base path](Self::base_path) when one
    /// is set, else relative to the service root (put the mount point in front). `CODE` is 256
    /// random bits; only its SHA-256 digest is kept, and at most 16 links wait at once (making
    /// another forgets the oldest). Links are shared by every clone of the layer, so mint them
    /// on a clone of the layer given to the app. `marimo-rs` opens the browser this way: the
    /// token never reaches the opener's command line (`ps`) or the browser's history.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use marimo_rs::{AuthLayer, Token};
    ///
    /// let auth = AuthLayer::new(Token::random()).base_path("/marimo");
    /// // Leads to /marimo/dashboard/ once the browser is signed in.
    /// let link = auth.sign_in_link("/dashboard/", Duration::from_secs(60));
    /// assert!(link.starts_with("/marimo/auth/sign-in?code="));
    /// ```
    ///
    /// # Panics
    ///
    /// If `next` is not a path on this site (one leading `/`, visible ASCII, not `//…`).
    pub fn sign_in_link(&self, next: &str, valid_for: Duration) -> String {
        assert!(
            login::is_safe_next(next),
            "AuthLayer::sign_in_link: {next:?} is not a path on this site"
        );
        let code = self
            .config
            .links
            .mint(next, valid_for, std::time::Instant::now());
        let base = self.config.base_path.as_deref().unwrap_or_default();
        format!("{base}{SIGN_IN_PATH}?code={code}")
    }

    /// Opens `GET`/`HEAD` `{mount}/health` and `{mount}/healthz` of these notebook mounts to
    /// requests without credentials, as marimo does (load balancers probe each app).
    pub(crate) fn health_mounts(mut self, mounts: Vec<String>) -> Self {
        self.config_mut().health_mounts = mounts;
        self
    }

    /// The name of the session cookie: `marimo_rs_session_` and 8 hex digits derived from the
    /// signing key (not from the token), so that gateways with different keys on one host keep
    /// their cookies apart. Each [old secret](Self::old_secrets) names its own cookies, and
    /// cookies are looked for under all these names, so a rotation signs nobody out.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, Token};
    ///
    /// let one = AuthLayer::new(Token::new("t")).cookie_key(&[7; 32]);
    /// let two = AuthLayer::new(Token::new("other")).cookie_key(&[7; 32]);
    /// assert!(one.cookie_name().starts_with("marimo_rs_session_"));
    /// assert_eq!(one.cookie_name(), two.cookie_name());
    /// ```
    pub fn cookie_name(&self) -> &str {
        self.config.keys.name()
    }

    /// The origin policy (allowed origins, trust in forwarded headers), for a built app's
    /// notebook services.
    pub(crate) fn origin_policy(&self) -> &origin::Policy {
        &self.config.origin
    }

    /// Replaces the origin policy with a built app's.
    pub(crate) fn with_origin_policy(mut self, policy: origin::Policy) -> Self {
        self.config_mut().origin = policy;
        self
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.config, f)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("token", &self.token)
            .field("cookie_name", &self.keys.name())
            .field("cookie_max_age", &Duration::from_secs(self.max_age))
            .field("base_path", &self.base_path)
            .field("secure_cookie", &self.secure_cookie)
            .field("trust_forwarded_headers", &self.origin.trust_forwarded())
            .field("basic_challenge", &self.basic_challenge)
            .field("allowed_origins", &self.origin.allowed())
            .field("login_limit", &self.limiter)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("health_mounts", &self.health_mounts)
            .field("old_cookie_keys", &self.old_keys.len())
            .field("old_tokens", &self.old_tokens.len())
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service made by [`AuthLayer`].
///
/// For each request, in this order:
///
/// - The origin guard, whatever the credentials: a request that can change state or stream
///   data back (any method but `GET`/`HEAD`/`OPTIONS`, an upgrade such as a WebSocket, an
///   event stream: `Accept: text/event-stream` or a path ending in `/sse`) gets `403` with a
///   short reason when its `Origin` is neither the request's own origin (scheme, host, port)
///   nor an [allowed origin](AuthLayer::allowed_origins), including `Origin: null`; or when
///   it has no `Origin` but `Sec-Fetch-Site: cross-site` or `same-site`. Requests without
///   either header (curl, scripts) pass. A CORS preflight (`OPTIONS` with
///   `Access-Control-Request-Method`) from an allowed origin is answered `204` here, and
///   responses to an allowed origin carry `Access-Control-Allow-Origin: <that origin>` with
///   credentials; no other response gets CORS headers from this layer.
/// - `{base}/auth/login` is the login form: `GET` shows it, `POST` (a form with `password`
///   and `next`, at most 16 KiB; `next` may also come from the query string, as marimo's
///   login page sends it) sets the session cookie and answers `302` to `next` when the
///   password is the token, other methods get `405`.
/// - `{base}/auth/sign-in?code=…` is a [one-time sign-in link](AuthLayer::sign_in_link).
/// - A request whose client has used up its [login limit](AuthLayer::login_limit) and that
///   carries a credential other than a valid session cookie gets `429 Too Many Requests` with
///   `Retry-After`, without the credential being checked (so does a login `POST`).
/// - A request with valid credentials goes to the inner service with a [`User`] extension
///   (the Basic username, the name stored in the cookie, otherwise `"user"`) and without its
///   credentials. A browser page load authenticated by `?access_token=` is instead redirected
///   (`303`) to the same URL without the token, with the session cookie set.
/// - Otherwise: `GET`/`HEAD` `/health` and `/healthz` (and `{mount}/health`,
///   `{mount}/healthz` of the app's notebook mounts) go in anyway; WebSocket upgrades get
///   `403`; browser page loads (`GET`/`HEAD` accepting `text/html`, outside `/api/`) are
///   redirected (`303`) to the login form with `next` set to the page; everything else gets
///   `401` `{"detail":"Authorization header required"}` with `WWW-Authenticate: Basic
///   realm="marimo"`.
pub struct Auth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: Clone> Clone for Auth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let cors = match self.config.origin.judge(&req) {
            origin::Verdict::Pass { cors } => cors,
            origin::Verdict::Preflight(response) => return ResponseFuture::ready(response),
            origin::Verdict::Refuse(reason) => {
                return ResponseFuture::ready(origin::refuse(reason))
            }
        };
        // Inner notebook services need not judge again (and must not refuse an origin this
        // layer's list allows).
        req.extensions_mut().insert(origin::OriginChecked);
        let mut future = if req.uri().path() == LOGIN_PATH {
            login::handle(Arc::clone(&self.config), req)
        } else if req.uri().path() == SIGN_IN_PATH {
            ResponseFuture::ready(link::handle(&self.config, &req))
        } else if let Some(response) = self.config.check(&mut req) {
            ResponseFuture::ready(response)
        } else {
            // Call the instance that `poll_ready` prepared, leaving a fresh clone in its place.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            ResponseFuture {
                kind: Kind::Inner {
                    future: inner.call(req),
                },
                cors: None,
            }
        };
        future.cors = cors;
        future
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`Auth`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
        // The allowed foreign origin whose page may read the response.
        cors: Option<HeaderValue>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Ready { response: Option<Response<Body>> },
        Login { future: LoginFuture },
        Inner { #[pin] future: F },
    }
}

impl<F> ResponseFuture<F> {
    fn ready(response: Response<Body>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
            cors: None,
        }
    }

    fn login(future: LoginFuture) -> Self {
        Self {
            kind: Kind::Login { future },
            cors: None,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.kind.project() {
            KindProj::Ready { response } => response
                .take()
                .expect("ResponseFuture polled after completion"),
            KindProj::Login { future } => std::task::ready!(future.as_mut().poll(cx)),
            KindProj::Inner { future } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            },
        };
        if let Some(origin) = this.cors.take() {
            origin::allow_cors(&mut response, origin);
        }
        Poll::Ready(Ok(response))
    }
}

impl Config {
    /// Whether `candidate` is the token or one of the old tokens still accepted.
    pub(crate) fn token_matches(&self, candidate: &[u8]) -> bool {
        // Every token is checked, so the time taken does not tell which one matched.
        let mut matched = self.token.matches(candidate);
        for old in &self.old_tokens {
            matched |= old.matches(candidate);
        }
        matched
    }

    /// `keys` from `signing_key` and `old_keys`.
    fn rebuild_keys(&mut self) {
        let mut keys: Vec<&[u8]> = vec![&self.signing_key];
        keys.extend(self.old_keys.iter().map(Vec::as_slice));
        self.keys = CookieKeys::from_keys(&keys);
    }

    /// Decides about a request that is not for the login form: `Some(response)` to answer it
    /// here, `None` to send it in (then credentials are stripped and a [`User`] is attached).
    fn check(&self, req: &mut Request<Body>) -> Option<Response<Body>> {
        let upgrade = is_websocket(req.headers());
        let (user, by_query) = match self.authenticate(req) {
            Ok(Some(found)) => found,
            Ok(None) => return self.unauthenticated(req, upgrade),
            Err(wait) if !self.is_health_check(req) => return Some(too_many_requests(wait)),
            Err(_) => return self.unauthenticated(req, upgrade),
        };
        if by_query && !upgrade && is_navigation(req) {
            return Some(self.drop_token_redirect(req));
        }
        if strip_credentials(&self.keys, req).is_err() {
            return Some(plain(StatusCode::BAD_REQUEST, "Bad Request"));
        }
        req.extensions_mut().insert(User::new(user));
        None
    }

    /// The identity proven by the request's credentials, and whether it was `access_token`;
    /// `Err(wait)` when the client's login limit is used up (the credential was not checked).
    fn authenticate(&self, req: &Request<Body>) -> Result<Option<(String, bool)>, Duration> {
        let headers = req.headers();
        if headers.contains_key(header::COOKIE) {
            let mut digests = Vec::with_capacity(1 + self.old_tokens.len());
            digests.push(self.token.digest());
            digests.extend(self.old_tokens.iter().map(Token::digest));
            if let Some(user) = self.keys.find_valid_any(headers, &digests, unix_now()) {
                return Ok(Some((user, false)));
            }
        }
        // Each credential presented spends its own allowance: a request carrying both kinds
        // tests no more guesses than it pays for.
        if let Some(candidate) = req.uri().query().and_then(access_token) {
            let checked = self.attempt(req.extensions(), headers, || {
                self.token_matches(candidate.as_bytes()).then_some(())
            })?;
            if checked.is_some() {
                return Ok(Some((DEFAULT_USER.to_owned(), true)));
            }
        }
        if !headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        let user = self.attempt(req.extensions(), headers, || {
            std::iter::once(&self.token)
                .chain(&self.old_tokens)
                .find_map(|token| from_authorization(headers, token))
        })?;
        Ok(user.map(|user| (user, false)))
    }

    /// Runs one credential check, `check`, against the client's login allowance: takes one
    /// attempt first and gives it back if the credential was right. `Err(wait)` without
    /// running `check` when the allowance is used up.
    pub(crate) fn attempt<T>(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Duration> {
        let permit = self.take_attempt(extensions, headers)?;
        let found = check();
        if found.is_some() {
            self.refund_attempt(permit);
        }
        Ok(found)
    }

    /// Takes one credential check from the client's login allowance; `Err(wait)` when it is
    /// used up. `Ok(None)` when there is no limit.
    fn take_attempt(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
    ) -> Result<Option<Permit>, Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let peer = extensions.get::<RemoteAddr>().map(|addr| addr.0.ip());
        let key = client_key(peer, headers, &self.trusted_proxies);
        match limiter.acquire(key, limiter.now()) {
            Ok(permit) => Ok(Some(permit)),
            Err(wait) => {
                tracing::debug!(client = ?key, ?wait, "credential attempt refused: login limit reached");
                Err(wait)
            }
        }
    }

    /// Gives back the allowance taken by a credential that turned out right.
    fn refund_attempt(&self, permit: Option<Permit>) {
        if let (Some(limiter), Some(permit)) = (&self.limiter, permit) {
            limiter.refund(permit);
        }
    }

    /// `GET`/`HEAD` of a health endpoint: `/health`, `/healthz`, or the same under one of the
    /// notebook mounts (exactly: no other spelling of the path, nothing below it).
    fn is_health_check(&self, req: &Request<Body>) -> bool {
        let path = req.uri().path();
        matches!(*req.method(), Method::GET | Method::HEAD)
            && (is_health_path(path) || is_mount_health_path(path, &self.health_mounts))
    }

    /// Where to send a browser after it signed in, for `next` (a checked path): under the
    /// base path when known, else relative to `{root}/auth/`.
    fn location(&self, next: &str) -> String {
        match &self.base_path {
            Some(base) => format!("{base}{next}"),
            None => format!("..{next}"),
        }
    }

    fn unauthenticated(&self, req: &mut Request<Body>, upgrade: bool) -> Option<Response<Body>> {
        if self.is_health_check(req) {
            return strip_credentials(&self.keys, req)
                .err()
                .map(|_| plain(StatusCode::BAD_REQUEST, "Bad Request"));
        }
        tracing::debug!(upgrade, "unauthenticated request refused");
        if upgrade {
            return Some(forbidden());
        }
        if !self.basic_challenge && is_navigation(req) {
            return Some(self.login_redirect(req.uri()));
        }
        Some(unauthorized())
    }

    /// `303` to the login form, `next` = this page (without any `access_token`).
    fn login_redirect(&self, uri: &Uri) -> Response<Body> {
        let path = uri.path();
        let query = uri
            .query()
            .map(|query| strip_access_token(query).unwrap_or_else(|| query.to_owned()))
            .filter(|query| !query.is_empty());
        let next = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let location = match &self.base_path {
            Some(base) => format!("{base}{LOGIN_PATH}?next={next}"),
            None => format!("{}{}?next={next}", to_root(path), &LOGIN_PATH[1..]),
        };
        redirect(StatusCode::SEE_OTHER, location.into_bytes())
    }

    /// `303` to this URL without `access_token`, setting the session cookie.
    fn drop_token_redirect(&self, req: &Request<Body>) -> Response<Body> {
        let uri = req.uri();
        let path = uri.path();
        let query = uri.query().and_then(strip_access_token).unwrap_or_default();
        let mut location = match &self.base_path {
            Some(base) if !path.starts_with("//") => format!("{base}{path}"),
            _ => format!("./{}", path.rsplit('/').next().unwrap_or_default()),
        };
        if !query.is_empty() {
            location.push('?');
            location.push_str(&query);
        }
        self.signed_in_redirect(req, location)
    }

    /// `303` to `location`, setting a session cookie: the browser is signed in and the
    /// credential it used leaves the address bar.
    fn signed_in_redirect(&self, req: &Request<Body>, location: String) -> Response<Body> {
        let mut response = redirect(StatusCode::SEE_OTHER, location.into_bytes());
        if response.status() == StatusCode::SEE_OTHER {
            let cookie =
                self.session_cookie(req.uri(), req.headers(), req.extensions(), DEFAULT_USER);
            let headers = response.headers_mut();
            headers.insert(header::SET_COOKIE, cookie);
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }

    /// A `Set-Cookie` value with a fresh session for `username`.
    fn session_cookie(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
        username: &str,
    ) -> HeaderValue {
        let expiry = unix_now().saturating_add(self.max_age);
        let value = self.keys.mint(self.token.digest(), username, expiry);
        let mut cookie = format!(
            "{}={value}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax",
            self.keys.name(),
            self.cookie_path(extensions),
            self.max_age
        );
        if self.is_secure(uri, headers, extensions) {
            cookie.push_str("; Secure");
        }
        HeaderValue::try_from(cookie).expect("cookie name, value and path are visible ASCII")
    }

    fn cookie_path<'a>(&'a self, extensions: &'a Extensions) -> &'a str {
        let path = self
            .base_path
            .as_deref()
            .or_else(|| extensions.get::<MountPrefix>().map(MountPrefix::as_str))
            .unwrap_or_default();
        let usable = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
        if usable {
            path
        } else {
            "/"
        }
    }

    fn is_secure(&self, uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> bool {
        if let Some(secure) = self.secure_cookie {
            return secure;
        }
        let https = |uri: &Uri| uri.scheme() == Some(&Scheme::HTTPS);
        https(uri)
            || extensions
                .get::<OriginalUri>()
                .is_some_and(|original| https(&original.0))
            || self
                .origin
                .forwarded(headers, "x-forwarded-proto")
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
    }
}

/// Removes the credentials a request carried: every `Authorization` header, the session
/// cookie, and `access_token` from the query.
fn strip_credentials(keys: &CookieKeys, req: &mut Request<Body>) -> Result<(), http::Error> {
    let headers = req.headers_mut();
    headers.remove(header::AUTHORIZATION);
    keys.strip(headers);
    let Some(query) = req.uri().query().and_then(strip_access_token) else {
        return Ok(());
    };
    let path = req.uri().path();
    let path_and_query = if query.is_empty() {
        PathAndQuery::try_from(path)?
    } else {
        PathAndQuery::try_from(format!("{path}?{query}"))?
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    *req.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

/// The relative reference from `path` to the service root: `./` for `/x`, `../` for `/a/x`.
fn to_root(path: &str) -> String {
    let depth = path
        .bytes()
        .filter(|&b| b == b'/')
        .count()
        .saturating_sub(1);
    if depth == 0 {
        "./".to_owned()
    } else {
        "../".repeat(depth)
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|protocol| protocol.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    })
}

/// A browser loading a page: `GET`/`HEAD` accepting `text/html`, outside any `/api/`.
fn is_navigation(req: &Request<Body>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.uri().path().contains("/api/")
        && req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|accept| contains_ignore_case(accept.as_bytes(), b"text/html"))
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = crate::router::plain_response(status, text);
    no_store(response.headers_mut());
    response
}

fn forbidden() -> Response<Body> {
    plain(StatusCode::FORBIDDEN, "Forbidden")
}

/// `429` with `Retry-After`: the client's login limit is used up.
pub(crate) fn too_many_requests(wait: Duration) -> Response<Body> {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    );
    response
}

fn unauthorized() -> Response<Body> {
    let mut response = Response::new(Body::from(UNAUTHORIZED_BODY));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"marimo\""),
    );
    no_store(headers);
    response
}

/// A redirect to `location`, or `400` if it cannot be a header value.
fn redirect(status: StatusCode, location: Vec<u8>) -> Response<Body> {
    let Ok(location) = HeaderValue::from_maybe_shared(bytes::Bytes::from(location)) else {
        return plain(StatusCode::BAD_REQUEST, "Bad Request");
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    no_store(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_root_climbs_one_level_per_directory() {
        assert_eq!(to_root("/"), "./");
        assert_eq!(to_root("/x"), "./");
        assert_eq!(to_root("/a/"), "../");
        assert_eq!(to_root("/a/x"), "../");
        assert_eq!(to_root("/a/b/c"), "../../");
        assert_eq!(to_root(""), "./");
    }

    #[test]
    fn websocket_and_navigation_detection() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("h2c, WebSocket"));
        assert!(is_websocket(&headers));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocketx"));
        assert!(!is_websocket(&headers));

        let page = |method: Method, path: &str, accept: &'static str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::ACCEPT, accept)
                .body(Body::empty())
                .unwrap();
            is_navigation(&req)
        };
        assert!(page(Method::GET, "/x", "TEXT/HTML,*/*"));
        assert!(page(Method::HEAD, "/", "text/html"));
        assert!(!page(Method::POST, "/x", "text/html"));
        assert!(!page(Method::GET, "/api/x", "text/html"));
        assert!(!page(Method::GET, "/dash/api/x", "text/html"));
        assert!(!page(Method::GET, "/x", "application/json"));
    }

    #[test]
    fn debug_shows_options_not_secrets() {
        let layer = AuthLayer::new(Token::new("sup3rs3cr3t"))
            .cookie_key(b"k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!");
        let shown = format!("{layer:?} {:?}", layer.layer(()));
        assert!(!shown.contains("sup3rs3cr3t"), "{shown}");
        assert!(!shown.contains("k3y"), "{shown}");
        assert!(shown.contains("Token(<redacted>)"), "{shown}");
        assert!(shown.contains(layer.cookie_name()), "{shown}");
    }

    #[test]
    #[should_panic(expected = "AuthLayer::base_path")]
    fn base_path_must_be_a_mount_path() {
        let _ = AuthLayer::new(Token::new("t")).base_path("marimo");
    }

    #[test]
    #[should_panic(expected = "cookies cannot carry")]
    fn base_path_must_not_break_the_cookie() {
        let _ = AuthLayer::new(Token::new("t")).base_path("/a;b");
    }

    #[test]
    #[should_panic(expected = "not a path on this site")]
    fn sign_in_links_lead_only_to_this_site() {
        let _ = AuthLayer::new(Token::new("t")).sign_in_link("//evil.example/", MAX_LINK);
    }

    const MAX_LINK: Duration = link::MAX_VALID;

    #[test]
    #[should_panic(expected = "not scheme://host[:port]")]
    fn allowed_origins_must_parse() {
        let _ = AuthLayer::new(Token::new("t")).allowed_origins(["example.com"]);
    }

    proptest::proptest! {
        /// The parsers never panic on any input, and what they accept has the promised shape.
        #[test]
        fn parsers_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            text in "\\PC{0,200}",
        ) {
            let token = Token::new("s3cret");
            let keys = CookieKeys::from_keys(&[b"k"]);
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.insert(header::AUTHORIZATION, value.clone());
                headers.insert(header::COOKIE, value.clone());
                headers.insert(header::ORIGIN, value);
            }
            proptest::prop_assert_eq!(from_authorization(&headers, &token), None);
            proptest::prop_assert_eq!(keys.verify(token.digest(), &bytes, 0), None);
            proptest::prop_assert_eq!(keys.find_valid(&headers, token.digest(), 0), None);
            keys.strip(&mut headers);
            let mut trusting = origin::Policy::default();
            trusting.set_trust_forwarded(true);
            let mut req = Request::post("/").body(()).expect("a request");
            *req.headers_mut() = headers.clone();
            let _ = trusting.judge(&req);
            let _ = Origin::parse(&text);
            if login::is_safe_next(&text) {
                proptest::prop_assert!(text.starts_with('/') && !text.starts_with("//"));
                proptest::prop_assert!(!text.contains('\\'));
            }
            if let Some(rest) = strip_access_token(&text) {
                proptest::prop_assert!(access_token(&rest).is_none(), "{}", rest);
            }
            let _ = access_token(&text);
            let _ = to_root(&text);
        }
    }

    #[test]
    fn base_path_is_normalised() {
        let layer = AuthLayer::new(Token::new("t")).base_path("/marimo/");
        assert_eq!(layer.config.base_path.as_deref(), Some("/marimo"));
        let root = AuthLayer::new(Token::new("t")).base_path("/");
        assert_eq!(root.config.base_path.as_deref(), Some(""));
        assert_eq!(root.config.cookie_path(&Extensions::new()), "/");
        assert_eq!(layer.config.cookie_path(&Extensions::new()), "/marimo");
        let mut extensions = Extensions::new();
        extensions.insert(MountPrefix("/dash".into()));
        assert_eq!(layer.config.cookie_path(&extensions), "/marimo");
        let plain = AuthLayer::new(Token::new("t"));
        assert_eq!(plain.config.cookie_path(&extensions), "/dash");
        extensions.insert(MountPrefix("/a;b".into()));
        assert_eq!(plain.config.cookie_path(&extensions), "/");
    }
}
