//! [`Access`]: who may open a mount (or, given to the auth layer, the whole server), and the
//! guard that applies it before anything of the mount runs.
//!
//! A request passes when its [`User`] matches the rules; a signed-in user who does not gets
//! `403` with a page that names them and offers to sign out, and the mount (its layers, its
//! notebook backend) is not called at all. Health probes pass, as they do through the auth
//! layer.

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tower::util::ServiceExt;

use crate::health::is_health_path;
use crate::html::escape;
use crate::mount::{IntoMountService as _, MountService};
use crate::request::{is_page_load, RemoteAddr};
use crate::response::{no_store, plain};
use crate::{audit, Body, User};

/// Who may open a mount, or the whole server: rules on user names, groups and email domains,
/// and a callback for anything else.
///
/// A user is allowed when they match **any** rule: their name is listed, they are in a listed
/// group, their email address is at a listed domain, or the callback says yes. With no rule
/// at all ([`Access::signed_in`], the default of every mount) any signed-in user is allowed.
/// A request without a [`User`] (no auth in front, or a health probe) is refused by a mount
/// with rules, except health probes (`/health`, `/healthz`), which pass.
///
/// Given to [`Mount::access`](crate::Mount::access) (an app, an editor, any service),
/// [`DirectoryMount::access`](crate::DirectoryMount::access) (checked per notebook; the index
/// page lists only what the user may open) or [`AuthLayer::access`](crate::AuthLayer::access)
/// (the whole server). A signed-in user who is refused gets `403` and a page naming them with
/// a sign-out button; the mount is not called (a notebook backend is neither started nor
/// touched), and an `access_denied` event goes to the audit log.
///
/// Names, groups and domains compare exactly, except domains, which ignore ASCII case. An
/// email address counts only when the identity source vouches for it (an identity provider's
/// `email_verified` is not `false`).
///
/// ```
/// use marimo_rs::{Access, User};
///
/// let analysts = Access::signed_in()
///     .groups(["analysts", "admins"])
///     .users(["grace"])
///     .email_domains(["example.com"]);
/// assert!(analysts.allows(&User::new("ada").with_groups(["analysts"])));
/// assert!(analysts.allows(&User::new("bob").with_email("bob@EXAMPLE.com")));
/// assert!(!analysts.allows(&User::new("eve").with_email("eve@example.org")));
///
/// // Anything else: a callback.
/// let staff = Access::signed_in().check(|user| user.claims().get("staff") == Some(&true.into()));
/// assert!(!staff.allows(&User::new("eve")));
/// ```
#[derive(Clone, Default)]
pub struct Access {
    users: Vec<String>,
    groups: Vec<String>,
    domains: Vec<String>,
    check: Option<Arc<dyn Fn(&User) -> bool + Send + Sync>>,
}

impl Access {
    /// Any signed-in user (no rule yet): add rules to narrow it down.
    pub fn signed_in() -> Self {
        Self::default()
    }

    /// Allows these user names (the [`User::name`]). Adds to the names given before.
    pub fn users<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.users.extend(names.into_iter().map(Into::into));
        self
    }

    /// Allows members of these groups ([`User::groups`]). Adds to the groups given before.
    pub fn groups<I, T>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self
    }

    /// Allows users whose email address is at one of these domains (`example.com`: exactly
    /// that domain, not its subdomains; a leading `@` is ignored). Adds to the domains given
    /// before.
    pub fn email_domains<I, T>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.domains.extend(domains.into_iter().map(|domain| {
            let domain: String = domain.into();
            domain.trim_start_matches('@').to_ascii_lowercase()
        }));
        self
    }

    /// Allows users for whom `check` returns `true`, for any rule the lists cannot say
    /// (a claim, the time of day…). It runs on every request the lists did not already allow,
    /// so keep it fast. Replaces the callback given before.
    pub fn check<F>(mut self, check: F) -> Self
    where
        F: Fn(&User) -> bool + Send + Sync + 'static,
    {
        self.check = Some(Arc::new(check));
        self
    }

    /// Whether `user` may pass.
    pub fn allows(&self, user: &User) -> bool {
        if self.is_open() {
            return true;
        }
        self.users.iter().any(|name| name == user.name())
            || self.groups.iter().any(|group| user.in_group(group))
            || user.email_domain().is_some_and(|domain| {
                self.domains
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(domain))
            })
            || self.check.as_ref().is_some_and(|check| check(user))
    }

    /// Whether a request from `user` (`None`: nobody signed in) may pass: with no rule,
    /// anyone the app lets in does.
    pub(crate) fn lets(&self, user: Option<&User>) -> bool {
        match user {
            Some(user) => self.allows(user),
            None => self.is_open(),
        }
    }

    /// No rule: any signed-in user.
    pub(crate) fn is_open(&self) -> bool {
        self.users.is_empty()
            && self.groups.is_empty()
            && self.domains.is_empty()
            && self.check.is_none()
    }

    /// The groups the rules name (kept first when a session cookie has no room for all of a
    /// user's groups).
    pub(crate) fn named_groups(&self) -> &[String] {
        &self.groups
    }
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("users", &self.users)
            .field("groups", &self.groups)
            .field("email_domains", &self.domains)
            .field("check", &self.check.is_some())
            .finish()
    }
}

/// What the auth layer tells the mounts about a signed-in request: where its sign-out is (a
/// path relative to the request's own URL, or absolute under a known base path) and which
/// client sent it (for the audit log).
#[derive(Clone, Debug)]
pub(crate) struct SignedIn {
    pub(crate) sign_out: Option<String>,
    pub(crate) client: Option<IpAddr>,
}

/// Wraps `service` (a mount at `mount`) in the check of `access`.
pub(crate) fn guard(access: Arc<Access>, mount: String, service: MountService) -> MountService {
    let mount: Arc<str> = mount.into();
    tower::service_fn(move |req: Request<Body>| {
        let refused = refuse(&access, (&mount, ""), &req);
        let service = service.clone();
        async move {
            match refused {
                Some(response) => Ok::<_, Infallible>(response),
                None => service.oneshot(req).await,
            }
        }
    })
    .into_mount_service()
}

/// `Some(403)` when `access` refuses `req`, `None` to let it through. `(mount, below)` name
/// where (`("/apps", "/team/q3")`), joined for the audit log only when it refuses.
pub(crate) fn refuse<B>(
    access: &Access,
    (mount, below): (&str, &str),
    req: &Request<B>,
) -> Option<Response<Body>> {
    let user = req.extensions().get::<User>();
    match user {
        Some(user) if access.allows(user) => None,
        None if access.is_open() || is_health_path(req.uri().path()) => None,
        Some(user) => {
            let signed_in = req.extensions().get::<SignedIn>();
            let client = signed_in
                .and_then(|signed_in| signed_in.client)
                .or_else(|| req.extensions().get::<RemoteAddr>().map(|addr| addr.0.ip()));
            let mount = format!("{mount}{below}");
            audit::access_denied(user.name(), client, &mount, req.uri().path());
            let sign_out = signed_in.and_then(|signed_in| signed_in.sign_out.as_deref());
            Some(forbidden(user, sign_out, is_page_load(req)))
        }
        None => Some(no_store(plain(
            StatusCode::FORBIDDEN,
            "Forbidden: sign in first",
        ))),
    }
}

/// `403` for `user`: for a browser, a page naming them with a sign-out button (when the
/// gateway's auth signed them in: `sign_out`); plain text otherwise.
pub(crate) fn forbidden(user: &User, sign_out: Option<&str>, page: bool) -> Response<Body> {
    if !page {
        let text = format!("Forbidden: {} may not open this page", user.name());
        return no_store(plain(StatusCode::FORBIDDEN, text));
    }
    let who = match user.email() {
        Some(email) if email != user.name() => {
            format!("<b>{}</b> ({})", escape(user.name()), escape(email))
        }
        _ => format!("<b>{}</b>", escape(user.name())),
    };
    let action = match sign_out {
        Some(href) => format!(
            "<form method=\"post\" action=\"{}\"><p>Sign in as someone else?</p>\
             <button type=\"submit\">Sign out</button></form>",
            escape(href)
        ),
        None => "<p>Ask whoever runs this server for access.</p>".to_owned(),
    };
    let body = format!(
        "<h1>No access</h1><p>You are signed in as {who}, who may not open this page.</p>\
         {action}"
    );
    no_store(crate::response::page(
        StatusCode::FORBIDDEN,
        "No access",
        &body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_rule_allows_and_no_rule_allows_everyone() {
        let ada = User::new("ada")
            .with_email("ada@Example.com")
            .with_groups(["analysts"]);
        assert!(Access::signed_in().allows(&ada));
        assert!(Access::signed_in().users(["ada"]).allows(&ada));
        assert!(Access::signed_in().groups(["x", "analysts"]).allows(&ada));
        assert!(Access::signed_in()
            .email_domains(["@EXAMPLE.COM"])
            .allows(&ada));
        assert!(!Access::signed_in()
            .email_domains(["sub.example.com"])
            .allows(&ada));
        assert!(!Access::signed_in()
            .users(["bob"])
            .groups(["admins"])
            .allows(&ada));
        assert!(Access::signed_in()
            .users(["bob"])
            .check(|user| user.name().starts_with('a'))
            .allows(&ada));
        assert!(!Access::signed_in().check(|_| false).allows(&ada));
    }

    #[tokio::test]
    async fn the_page_names_the_user_escaped_and_offers_sign_out() {
        let user = User::new("<ada>").with_email("ada@example.com");
        let response = forbidden(&user, Some("../auth/logout"), true);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = crate::response::body_text(response).await;
        assert!(body.contains("&lt;ada&gt;"), "{body}");
        assert!(body.contains("ada@example.com"), "{body}");
        assert!(body.contains("action=\"../auth/logout\""), "{body}");
        let api = forbidden(&user, None, false);
        assert_eq!(api.status(), StatusCode::FORBIDDEN);
    }
}
