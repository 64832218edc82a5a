//! [`AuthLayer`]: the options of authentication (token, identity provider, front proxy), and
//! the layer that applies them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::client_ip::TrustedProxy;
use super::cookie::{self, CookieKeys, Verified};
use super::front::{Front, ProxyIdentity};
use super::limit::{self, LimitState, Limiter};
use super::link::{SignInLinks, SIGN_IN_PATH};
use super::login;
use super::provider::{OidcConfig, OidcError, Provider};
use super::revoke::Revocations;
use super::service::Auth;
use super::token::{self, Token};
use crate::access::Access;
use crate::metrics::AuthCounters;
use crate::mount::MountPath;
use crate::origin::{self, Origin};

/// How long a session cookie lasts unless [`AuthLayer::cookie_max_age`] says otherwise.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Puts authentication in front of a service: marimo's token ([`new`](AuthLayer::new)),
/// sign-in with an identity provider ([`oidc`](AuthLayer::oidc)), or both, and optionally a
/// trusted front proxy's identity ([`proxy_identity`](AuthLayer::proxy_identity)) and
/// whole-server access rules ([`access`](AuthLayer::access)).
///
/// [`AppBuilder::token`](crate::AppBuilder::token), [`AppBuilder::oidc`](crate::AppBuilder::oidc)
/// and [`AppBuilder::auth`](crate::AppBuilder::auth) apply it to a whole built app; it also
/// works on its own around any `Service<Request<Body>, Response = Response<Body>, Error =
/// Infallible> + Clone + Send + 'static`. See the [`Auth`] service for what it does to each
/// request.
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
    pub(super) config: Arc<Config>,
}

/// Everything an [`Auth`] service needs, shared by all its clones.
#[derive(Clone)]
pub(crate) struct Config {
    /// The token, when the token methods are on (`None`: sign-in with the provider only).
    pub(super) token: Option<Token>,
    /// SHA-256 of the token and of the old tokens: what token sessions are bound to.
    pub(super) token_bindings: Vec<[u8; 32]>,
    pub(super) keys: CookieKeys,
    /// The key that signs session cookies (random, given, or derived from the secret).
    pub(super) signing_key: Vec<u8>,
    /// Keys that still verify session cookies (derived from the old secrets).
    pub(super) old_keys: Vec<Vec<u8>>,
    /// Tokens that are still accepted besides `token`, during a rotation.
    pub(super) old_tokens: Vec<Token>,
    pub(super) max_age: u64,
    /// Where browsers reach the service root, `""` for the host root; `None` if unknown.
    pub(super) base_path: Option<String>,
    pub(super) secure_cookie: Option<bool>,
    pub(super) basic_challenge: bool,
    /// Allowed origins and whether forwarded headers are trusted: the same policy the
    /// notebook services of a built app apply.
    pub(super) origin: origin::Policy,
    /// The failed-login limiter, shared by every service made from this layer.
    pub(super) limiter: Option<Arc<Limiter>>,
    pub(super) trusted_proxies: Vec<TrustedProxy>,
    /// One-time sign-in links, shared by every clone of the layer.
    pub(super) links: Arc<SignInLinks>,
    /// Mount paths of the notebooks behind this layer, whose `/health` and `/healthz` are
    /// open like the root's (filled in by `AppBuilder::build`).
    pub(super) health_mounts: Vec<String>,
    /// Sign-in with an identity provider.
    pub(super) provider: Option<Arc<Provider>>,
    /// Identity from a trusted front proxy.
    pub(super) front: Option<Arc<Front>>,
    /// Who may use the server at all (`None`: any signed-in user).
    pub(super) access: Option<Arc<Access>>,
    /// Who may sign other users out (besides requests with the token).
    pub(super) admins: Option<Access>,
    /// Sessions and users signed out, shared by every clone of the layer.
    pub(super) revocations: Arc<Revocations>,
    /// Groups that access rules name: kept first when a session cookie cannot hold them all.
    pub(super) rule_groups: Vec<String>,
    /// Whether any mount has access rules (see [`rules`](Self::rules)).
    pub(super) mount_rules: bool,
    /// Session cookies verified with this configuration.
    pub(super) verified: Arc<Verified>,
    /// Sign-ins, wrong credentials and limited attempts, when the app has metrics.
    pub(super) metrics: Option<AuthCounters>,
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
        Self::with_token(Some(token))
    }

    /// Sign-in with an OpenID Connect identity provider, and the default options: browsers
    /// that are not signed in go to the provider, and come back to `{base}/auth/callback`
    /// signed in for [`OidcConfig::session_lifetime`]; the token methods are off (turn them
    /// on for scripts with [`token`](Self::token)). The [base path](Self::base_path) is the
    /// path of the configuration's public URL unless set otherwise.
    ///
    /// The provider is discovered on the first sign-in, not here; until it answers, sign-in
    /// pages are `503` "sign-in is unavailable: …" (retried every few seconds), while the
    /// sessions already signed in keep working. Call [`discover`](Self::discover) at start-up
    /// to find out at once.
    ///
    /// Besides the routes of [`Auth`]: `{base}/auth/oidc?next=PATH` starts a sign-in;
    /// `{base}/auth/callback` finishes it (the flow cookie's `state` and the PKCE verifier,
    /// the code exchange, the ID token's signature, issuer, audience, expiry and nonce);
    /// `{base}/auth/logout` signs out (`POST`; `GET` asks first) and continues to the
    /// provider's end-session endpoint. The session cookie carries the user's name, email
    /// and groups (see [`User`](crate::User)); no request of a signed-in user talks to the
    /// provider.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, OidcConfig, Token};
    ///
    /// let auth = AuthLayer::oidc(OidcConfig::new(
    ///     "https://accounts.google.com",
    ///     "1234.apps.googleusercontent.com",
    ///     "client secret",
    ///     "https://marimo.example.com",
    /// ))
    /// // Scripts may keep using the token (Bearer, Basic, access_token).
    /// .token(Token::new("for scripts"));
    /// # let _ = auth;
    /// ```
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes for the cookie key.
    pub fn oidc(config: OidcConfig) -> Self {
        let mut layer = Self::with_token(None);
        let inner = layer.config_mut();
        inner.base_path = config.public_path();
        inner.provider = Some(Arc::new(Provider::new(config)));
        layer
    }

    fn with_token(token: Option<Token>) -> Self {
        let mut signing_key = vec![0u8; 32];
        token::fill_random(&mut signing_key);
        let mut config = Config {
            token,
            token_bindings: Vec::new(),
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
            provider: None,
            front: None,
            access: None,
            admins: None,
            revocations: Arc::default(),
            rule_groups: Vec::new(),
            mount_rules: false,
            verified: Arc::default(),
            metrics: None,
        };
        config.rebuild_bindings();
        Self {
            config: Arc::new(config),
        }
    }

    /// Turns the token methods on with `token` (or replaces the token): `?access_token=`,
    /// `Bearer`, Basic and the login form, for scripts next to an identity provider's
    /// sign-in. With both on, the login page offers both.
    pub fn token(mut self, token: Token) -> Self {
        let config = self.config_mut();
        config.token = Some(token);
        config.rebuild_bindings();
        self
    }

    /// Who may use the server at all, whatever the mount: a signed-in user the rules refuse
    /// gets `403` and a page naming them with a sign-out button, for every page but the
    /// sign-in and sign-out ones (see [`Access`]). Any signed-in user by default.
    pub fn access(mut self, access: Access) -> Self {
        let config = self.config_mut();
        config.access = (!access.is_open()).then(|| Arc::new(access));
        self
    }

    /// Who may sign other users out everywhere over HTTP
    /// (`POST {base}/auth/sign-out-everywhere?user=NAME`), besides requests that present the
    /// token (scripts, and browsers signed in with it). Nobody else by default.
    pub fn admins(mut self, admins: Access) -> Self {
        self.config_mut().admins = Some(admins);
        self
    }

    /// Believes who the user is when a [trusted proxy](Self::trusted_proxies) says so (see
    /// [`ProxyIdentity`]): oauth2-proxy's `X-Forwarded-User`/`-Email`/`-Groups`, or a signed
    /// assertion such as Pomerium's `X-Pomerium-Jwt-Assertion`. The headers are removed from
    /// every request, trusted or not; from other clients they are ignored.
    pub fn proxy_identity(mut self, identity: ProxyIdentity) -> Self {
        self.config_mut().front = Some(Arc::new(Front::new(identity)));
        self
    }

    /// Signs `user` (a [`User::name`](crate::User::name)) out everywhere: every session of
    /// theirs issued until now is refused from now on, on this replica (revocations are kept
    /// in memory, per process; see `SECURITY.md`). Shared by every clone of the layer, so call
    /// it on a clone of the layer given to the app. Logged as a `sign_out` audit event.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, Token};
    ///
    /// let auth = AuthLayer::new(Token::random());
    /// let app_auth = auth.clone(); // give this one to the app
    /// auth.sign_out_everywhere("ada");
    /// # let _ = app_auth;
    /// ```
    pub fn sign_out_everywhere(&self, user: &str) {
        self.config.sign_out_everywhere(user, None, "library call");
    }

    /// Contacts the identity provider now (discovery and its keys) instead of at the first
    /// sign-in, and says whether sign-in can work. `Ok` at once without a provider.
    ///
    /// # Errors
    ///
    /// [`OidcError`] naming what is wrong: the provider is unreachable, the issuer URL is
    /// not the one its discovery document states, it lacks what the sign-in needs.
    pub async fn discover(&self) -> Result<(), OidcError> {
        match &self.config.provider {
            // The caller reports the error.
            Some(provider) => provider
                .client_reporting(&self.config.signing_key, false)
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether mounts have access rules (`rules`), and the groups they name, kept first in
    /// session cookies (filled in by `AppBuilder::build`).
    pub(crate) fn rule_groups(mut self, rules: bool, groups: Vec<String>) -> Self {
        let config = self.config_mut();
        config.mount_rules |= rules;
        if let Some(access) = &config.access {
            let named = access.named_groups().to_vec();
            config.rule_groups = named;
        }
        for group in groups {
            if !config.rule_groups.contains(&group) {
                config.rule_groups.push(group);
            }
        }
        self
    }

    /// The path at which browsers reach this service's root (what it sees as `/`), such as
    /// `"/marimo"` when a host mounts it with `nest_service("/marimo", …)`.
    ///
    /// Used for the session cookie's `Path` and for redirects, which then use absolute paths
    /// under it instead of relative ones. Without it the cookie path is the
    /// [`MountPrefix`](crate::MountPrefix) of the request if an outer marimo_rs router set one,
    /// else `/`. Set it when the host also serves the service at its bare prefix (`/marimo` as
    /// well as `/marimo/`), since a relative redirect cannot be right for both.
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
    pub fn cookie_key(self, key: &[u8]) -> Self {
        self.signed_with("AuthLayer::cookie_key: the key", key, key.to_vec())
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
    pub fn secret(self, secret: impl AsRef<[u8]>) -> Self {
        let secret = secret.as_ref();
        let key = cookie::key_from_secret(secret).to_vec();
        self.signed_with("AuthLayer::secret: the secret", secret, key)
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
        let config = self.config_mut();
        config.old_tokens = tokens;
        config.rebuild_bindings();
        self
    }

    /// How long a session cookie lasts (`Max-Age`, and the expiry signed into the cookie).
    /// 14 days by default; whole seconds.
    pub fn cookie_max_age(mut self, max_age: Duration) -> Self {
        self.config_mut().max_age = max_age.as_secs();
        self
    }

    /// Always (`true`) or never (`false`) marks the session cookie `Secure`, instead of
    /// deciding per request (`Secure` when the request URI, or the [`OriginalUri`](crate::OriginalUri) recorded by
    /// an outer marimo_rs router, is `https`, when `X-Forwarded-Proto: https` and
    /// [`trust_forwarded_headers`](Self::trust_forwarded_headers) is on, or when the identity
    /// provider's public URL is `https`).
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

    #[doc = include_str!("../../docs/login_limit.md")]
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

    /// Reverse proxies (IP addresses or CIDR networks such as `"10.0.0.0/8"`, `"::1"`, as text
    /// or as [`TrustedProxy`] values) whose `X-Forwarded-For` header is believed by the
    /// [login limit](Self::login_limit). Replaces the list given before.
    ///
    /// For a request whose peer address is in the list, the client is the right-most
    /// `X-Forwarded-For` entry that is not in the list (a proxy appends the address it got the
    /// request from, so everything left of that may be forged). From any other peer the
    /// header is ignored. None by default: without it, every client behind a proxy shares the
    /// proxy's bucket.
    ///
    /// ```
    /// use marimo_rs::{AuthLayer, Token, TrustedProxy};
    ///
    /// // Text read from a configuration file is checked before it gets here.
    /// let proxy = TrustedProxy::parse("10.0.0.0/8")?;
    /// let auth = AuthLayer::new(Token::random()).trusted_proxies([proxy]);
    /// // Literals in the code are parsed here.
    /// let auth = auth.trusted_proxies(["127.0.0.1", "fd00::/8"]);
    /// # let _ = auth;
    /// # Ok::<_, marimo_rs::TrustedProxyError>(())
    /// ```
    ///
    /// # Panics
    ///
    /// If a text entry is not an IP address or `address/prefix-length` (what
    /// [`TrustedProxy::parse`] refuses).
    pub fn trusted_proxies<I>(mut self, proxies: I) -> Self
    where
        I: IntoIterator,
        I::Item: TryInto<TrustedProxy>,
        <I::Item as TryInto<TrustedProxy>>::Error: fmt::Display,
    {
        let parsed = proxies
            .into_iter()
            .map(|proxy| {
                proxy
                    .try_into()
                    .unwrap_or_else(|error| panic!("AuthLayer::trusted_proxies: {error}"))
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
    /// If `next` is not a path on this site (one leading `/`, visible ASCII, not `//…`), or
    /// the layer has no token (a link signs in as a token user).
    pub fn sign_in_link(&self, next: &str, valid_for: Duration) -> String {
        assert!(
            self.config.token.is_some(),
            "AuthLayer::sign_in_link: the layer has no token (see AuthLayer::token)"
        );
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

    /// Counts sign-ins, wrong credentials and limited attempts into `counters`.
    pub(crate) fn with_metrics(mut self, counters: AuthCounters) -> Self {
        self.config_mut().metrics = Some(counters);
        self
    }

    /// Checks a credential of another kind (the admin page's token) against the client's
    /// login allowance, as this layer checks its own: see `Config::attempt`.
    pub(crate) fn attempt<T>(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Duration> {
        self.config.attempt(
            self.config.client_ip_of(headers, extensions),
            crate::audit::Method::OperatorToken,
            check,
        )
    }

    /// The failed-login limiter's state now; `None` without a limit.
    pub(crate) fn limit_state(&self) -> Option<LimitState> {
        self.config.limiter.as_ref().map(|limiter| limiter.state())
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

    /// Signs cookies with `key`, made from `given` (named `what` in the panic message and
    /// the warning): a key or secret that is empty is refused, a short one works but is
    /// logged, since 32 random bytes are what makes the signature unguessable.
    fn signed_with(mut self, what: &'static str, given: &[u8], key: Vec<u8>) -> Self {
        assert!(!given.is_empty(), "{what} is empty");
        if given.len() < 32 {
            tracing::warn!(length = given.len(), "{what} is shorter than 32 bytes");
        }
        let config = self.config_mut();
        config.signing_key = key;
        config.rebuild_keys();
        self
    }

    fn config_mut(&mut self) -> &mut Config {
        let config = Arc::make_mut(&mut self.config);
        // What verified under the old configuration must be verified again.
        config.verified = Arc::default();
        config
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
            .field(
                "oidc",
                &self.provider.as_ref().map(|provider| &provider.settings),
            )
            .field("proxy_identity", &self.front)
            .field("access", &self.access)
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth::new(inner, Arc::clone(&self.config))
    }
}

impl Config {
    /// Whether any mount or the layer itself has access rules: signed-in requests then carry
    /// where to sign out, for the refusal page.
    pub(super) fn rules(&self) -> bool {
        self.mount_rules || self.access.is_some()
    }

    /// `keys` from `signing_key` and `old_keys`.
    fn rebuild_keys(&mut self) {
        let mut keys: Vec<&[u8]> = vec![&self.signing_key];
        keys.extend(self.old_keys.iter().map(Vec::as_slice));
        self.keys = CookieKeys::from_keys(&keys);
        // The provider's flow cookies are signed with the signing key: a client discovered
        // with another key must not be shared with this configuration.
        if let Some(provider) = &mut self.provider {
            *provider = Arc::new(provider.fresh());
        }
    }

    /// `token_bindings` from `token` and `old_tokens`.
    fn rebuild_bindings(&mut self) {
        self.token_bindings = self
            .token
            .iter()
            .chain(&self.old_tokens)
            .map(|token| *token.digest())
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const MAX_LINK: Duration = super::super::link::MAX_VALID;

    #[test]
    #[should_panic(expected = "not scheme://host[:port]")]
    fn allowed_origins_must_parse() {
        let _ = AuthLayer::new(Token::new("t")).allowed_origins(["example.com"]);
    }
}
