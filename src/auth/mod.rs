//! Authentication as a tower layer: marimo's `--token`, sign-in with an OpenID Connect
//! identity provider, a trusted front proxy's identity ([`AuthLayer`], [`Auth`], [`Token`],
//! [`OidcConfig`], [`ProxyIdentity`]).
//!
//! A request is let through when it carries, checked in this order:
//!
//! 0. from a trusted proxy with a proxy identity configured, the proxy's identity headers;
//! 1. a valid session cookie that was not signed out (set by the login form, an
//!    `access_token` link, a one-time link, or a sign-in with the identity provider);
//! 2. `?access_token=TOKEN`;
//! 3. `Authorization: Bearer TOKEN`;
//! 4. `Authorization: Basic base64(username:TOKEN)`, any non-empty username;
//!
//! or it is the login form itself (`{base}/auth/login`), a one-time sign-in link
//! (`{base}/auth/sign-in?code=…`, minted by [`AuthLayer::sign_in_link`]), or a health probe:
//! `GET /health`/`/healthz`, and `{mount}/health`/`{mount}/healthz` of a notebook mount of the
//! app the layer guards, as marimo leaves them open. The credentials are removed before the
//! request goes in (the `Authorization` header, the session cookie, the `access_token`
//! parameter) and a [`User`](crate::User) extension is added instead.
//!
//! Failed credential checks are limited per client address (`limit`, on by default): once an
//! address has used up its allowance, its credential attempts get `429` unchecked, while
//! requests with a valid session cookie still pass.
//!
//! The map, in the shape of a `tower-http` middleware:
//!
//! | module | what it holds |
//! |---|---|
//! | `layer` | [`AuthLayer`]: the options, and the layer that applies them |
//! | `service` | [`Auth`]: the service, and the request policy (which credential, which refusal) |
//! | `future` | [`ResponseFuture`] |
//! | `redirect` | the login and access-token redirects, and the session cookie they set |
//! | `login`, `link` | the login form, one-time sign-in links |
//! | `provider`, `logout`, `revoke`, `front` | sign-in with an identity provider, sign-out and the revocations it leaves, a front proxy's identity |
//! | `token`, `secret`, `credentials`, `cookie` | the token, the installation secret, `Authorization` and `access_token` parsing, the session cookie's value (and the values verified already) |
//! | `limit`, `client_ip` | the failed-login limiter, and which client a request counts for ([`TrustedProxy`]) |

mod client_ip;
mod cookie;
mod credentials;
mod front;
mod future;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod layer;
mod limit;
mod link;
mod login;
mod logout;
mod provider;
mod redirect;
mod revoke;
mod secret;
mod service;
mod token;

pub use self::client_ip::{TrustedProxy, TrustedProxyError};
pub use self::front::ProxyIdentity;
pub use self::future::ResponseFuture;
pub use self::layer::AuthLayer;
pub use self::provider::{OidcConfig, OidcError};
pub use self::secret::SecretError;
pub use self::service::Auth;
pub use self::token::Token;

// Shared with the OpenID Connect sign-in (src/oidc): one rule for a safe `next`, one source of
// random bytes, one reading of a cookie's MAC, one clock (Unix seconds).
pub(crate) use self::cookie::{decode_tag, unix_now};
pub(crate) use self::login::is_safe_next;
pub(crate) use self::token::random_b64url;
// Shared with the admin page and the metrics endpoint (src/admin): their tokens are presented
// and parsed like this layer's, and their state shows the login limiter's.
pub(crate) use self::credentials::from_authorization;
pub(crate) use self::limit::{retry_after_secs, LimitState};
