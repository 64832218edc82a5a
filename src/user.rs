//! [`User`]: who is making a request, as far as the notebook is concerned.

/// The authenticated user of a request.
///
/// Put into the request extensions by the built-in token auth (the HTTP Basic username, or
/// `"user"`), or by a host's own auth middleware (OAuth, a login form…) before the request
/// reaches a notebook mount. The notebook backend receives it as marimo's ASGI
/// `scope["user"]`/`scope["meta"]`, so `mo.app_meta().request.user` shows it.
///
/// ```
/// use marimo_rs::User;
///
/// let user = User::new("ada").with_meta(serde_json::json!({"team": "analytics"}));
/// assert_eq!(user.name(), "ada");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    name: String,
    meta: serde_json::Value,
}

impl User {
    /// A user with this name and no metadata.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            meta: serde_json::Value::Null,
        }
    }

    /// Attaches JSON metadata (roles, e-mail…), passed to the notebook as `scope["meta"]`.
    pub fn with_meta(mut self, meta: serde_json::Value) -> Self {
        self.meta = meta;
        self
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The metadata given with [`with_meta`](User::with_meta) (`null` if none).
    pub fn meta(&self) -> &serde_json::Value {
        &self.meta
    }
}
