//! [`User`]: who is making a request, as far as the notebook (and the access rules) are
//! concerned.

use std::sync::Arc;

use serde_json::{Map, Value};

/// The headers in which front proxies state who the user is (oauth2-proxy's
/// `X-Forwarded-User`/`-Email`/`-Groups`/`-Preferred-Username`, Pomerium's signed
/// `X-Pomerium-Jwt-Assertion`): read by the auth layer from trusted proxies only, and removed
/// from every request before it reaches a notebook backend.
pub(crate) const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-pomerium-jwt-assertion",
];

/// The authenticated user of a request.
///
/// Put into the request extensions by the gateway's auth ([`AuthLayer`](crate::AuthLayer):
/// the HTTP Basic username or `"user"` for the token methods; name, email, groups and the
/// configured claims for a sign-in with an identity provider or a trusted front proxy), or by
/// a host's own auth middleware before the request reaches a notebook mount. Access rules
/// ([`Access`](crate::Access)) decide on it, and the notebook backend receives it as marimo's
/// ASGI `scope["user"]` (a dict: `username`, `display_name`, `is_authenticated`, `email`,
/// `groups`, `claims`) and `scope["meta"]`, so `mo.app_meta().request.user["groups"]` shows
/// the groups in notebook code.
///
/// Cloning is cheap (the fields are shared).
///
/// ```
/// use marimo_rs::User;
///
/// let user = User::new("ada")
///     .with_email("ada@example.com")
///     .with_groups(["analysts", "admins"])
///     .with_meta(serde_json::json!({"team": "analytics"}));
/// assert_eq!(user.name(), "ada");
/// assert!(user.in_group("admins"));
/// assert_eq!(user.email_domain(), Some("example.com"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    inner: Arc<Inner>,
}

#[derive(Clone, Debug, PartialEq)]
struct Inner {
    name: String,
    email: Option<String>,
    groups: Vec<String>,
    claims: Map<String, Value>,
    meta: Value,
}

impl User {
    /// A user with this name, and no email, groups, claims or metadata.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                email: None,
                groups: Vec::new(),
                claims: Map::new(),
                meta: Value::Null,
            }),
        }
    }

    /// Sets the email address (an empty one means none).
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        let email = email.into();
        self.inner_mut().email = (!email.is_empty()).then_some(email);
        self
    }

    /// Sets the groups (or roles) the user belongs to, in order; empty names and repeats are
    /// dropped.
    pub fn with_groups<I, T>(mut self, groups: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let mut kept: Vec<String> = Vec::new();
        for group in groups {
            let group = group.into();
            if !group.is_empty() && !kept.contains(&group) {
                kept.push(group);
            }
        }
        self.inner_mut().groups = kept;
        self
    }

    /// Sets further claims about the user (from an identity provider: the ones its
    /// configuration names), passed to the notebook as `scope["user"]["claims"]`.
    pub fn with_claims(mut self, claims: Map<String, Value>) -> Self {
        self.inner_mut().claims = claims;
        self
    }

    /// Attaches JSON metadata (anything the host wants the notebook to see), passed to the
    /// notebook as `scope["meta"]` (`mo.app_meta().request.meta`).
    pub fn with_meta(mut self, meta: Value) -> Self {
        self.inner_mut().meta = meta;
        self
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The email address, if known (an identity provider's only when it says it is verified).
    pub fn email(&self) -> Option<&str> {
        self.inner.email.as_deref()
    }

    /// The part of the email address after the last `@`, if there is an address.
    pub fn email_domain(&self) -> Option<&str> {
        self.email()
            .and_then(|email| email.rsplit_once('@'))
            .map(|(_, domain)| domain)
            .filter(|domain| !domain.is_empty())
    }

    /// The groups the user belongs to.
    pub fn groups(&self) -> &[String] {
        &self.inner.groups
    }

    /// Whether the user belongs to `group` (exact, case-sensitive: group names are ids).
    pub fn in_group(&self, group: &str) -> bool {
        self.inner.groups.iter().any(|have| have == group)
    }

    /// The further claims given with [`with_claims`](User::with_claims).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// The metadata given with [`with_meta`](User::with_meta) (`null` if none).
    pub fn meta(&self) -> &Value {
        &self.inner.meta
    }

    /// What the notebook backend receives: the JSON the launcher's `Identity` middleware
    /// turns into `scope["user"]` and `scope["meta"]`. Written straight from the user's
    /// fields (once per proxied request), not through a copy as a `Value`.
    pub(crate) fn to_backend_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct ForBackend<'a> {
            name: &'a str,
            email: Option<&'a str>,
            groups: &'a [String],
            claims: &'a Map<String, Value>,
            meta: &'a Value,
        }
        let inner = &*self.inner;
        let view = ForBackend {
            name: &inner.name,
            email: inner.email.as_deref(),
            groups: &inner.groups,
            claims: &inner.claims,
            meta: &inner.meta,
        };
        // Strings, and values whose map keys are strings: this cannot fail.
        serde_json::to_vec(&view).unwrap_or_default()
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_drop_repeats_and_empty_names() {
        let user = User::new("ada").with_groups(["a", "", "b", "a"]);
        assert_eq!(user.groups(), ["a", "b"]);
        assert!(user.in_group("b"));
        assert!(!user.in_group("A"));
    }

    #[test]
    fn the_email_domain_is_after_the_last_at() {
        let user = User::new("x").with_email("a@b@example.org");
        assert_eq!(user.email_domain(), Some("example.org"));
        assert_eq!(User::new("x").with_email("").email(), None);
        assert_eq!(User::new("x").with_email("nobody@").email_domain(), None);
    }

    #[test]
    fn the_backend_gets_every_field() {
        let mut claims = Map::new();
        claims.insert("department".into(), Value::from("R&D"));
        let user = User::new("ada")
            .with_email("ada@example.com")
            .with_groups(["g"])
            .with_claims(claims)
            .with_meta(serde_json::json!({"k": 1}));
        let sent: Value = serde_json::from_slice(&user.to_backend_json()).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "name": "ada", "email": "ada@example.com", "groups": ["g"],
                "claims": {"department": "R&D"}, "meta": {"k": 1},
            })
        );
    }
}
