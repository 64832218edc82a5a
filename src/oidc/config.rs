//! What a relying party is configured with: the provider, the client, the claims to read.

use std::fmt;
use std::time::Duration;

/// The client secret registered with the provider. Never printed: `Debug` shows its length
/// only, and no error message contains it.
#[derive(Clone)]
pub(crate) struct ClientSecret(Box<[u8]>);

impl ClientSecret {
    /// The secret's bytes as given (the CLI reads them from a file and trims the line end).
    pub(crate) fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into().into_boxed_slice())
    }

    pub(super) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientSecret([redacted; {} bytes])", self.0.len())
    }
}

/// Which claims make the identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClaimNames {
    /// Tried in order; the first that is a non-empty string is the user's name.
    pub(crate) name: Vec<String>,
    /// The email address (dropped when the provider says `email_verified: false`).
    pub(crate) email: String,
    /// Every listed claim that is present adds its groups (an array of strings, or one string).
    pub(crate) groups: Vec<String>,
    /// Claims kept verbatim for the notebook.
    pub(crate) extra: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            name: vec!["preferred_username".into(), "name".into(), "sub".into()],
            email: "email".into(),
            groups: vec!["groups".into()],
            extra: Vec::new(),
        }
    }
}

/// The relying party's configuration. Fields are public to the crate so the auth layer and
/// the CLI can fill them in; [`Config::new`] sets the defaults. `Debug` shows no secret (see
/// [`ClientSecret`]).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The issuer URL, exactly as the provider's discovery document states it.
    pub(crate) issuer: String,
    /// The client id registered with the provider.
    pub(crate) client_id: String,
    /// The client secret registered with the provider.
    pub(crate) client_secret: ClientSecret,
    /// Where the provider sends the browser back (`{base}/auth/callback`), as registered.
    pub(crate) redirect_uri: String,
    /// Scopes asked for besides `openid`, which is always sent.
    pub(crate) scopes: Vec<String>,
    /// Which claims make the identity.
    pub(crate) claims: ClaimNames,
    /// Ask the userinfo endpoint for claims the ID token lacks (when the provider has one).
    pub(crate) userinfo: bool,
    /// The bound on each exchange with the provider (connect, TLS, request, answer).
    pub(crate) timeout: Duration,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub(crate) leeway: Duration,
    /// How long a sign-in may take, from the redirect to the provider to the callback.
    pub(crate) flow_lifetime: Duration,
    /// At most one key-set refetch for an unknown `kid` per this interval.
    pub(crate) jwks_refetch_interval: Duration,
    /// Accept plain `http://` provider URLs on hosts other than loopback ones (development
    /// setups such as `http://keycloak:8080`). Loopback addresses are always allowed.
    pub(crate) allow_http: bool,
}

impl Config {
    /// A configuration with the defaults: scopes `profile email`, userinfo on, 10 s per
    /// exchange, 60 s leeway, 10 min per sign-in, one refetch per 30 s, HTTPS only.
    pub(crate) fn new(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: ClientSecret,
        redirect_uri: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            client_id: client_id.into(),
            client_secret,
            redirect_uri: redirect_uri.into(),
            scopes: vec!["profile".into(), "email".into()],
            claims: ClaimNames::default(),
            userinfo: true,
            timeout: Duration::from_secs(10),
            leeway: Duration::from_secs(60),
            flow_lifetime: Duration::from_secs(600),
            jwks_refetch_interval: Duration::from_secs(30),
            allow_http: false,
        }
    }

    /// The `scope` parameter: `openid` first, then the configured scopes without repeats.
    pub(super) fn scope(&self) -> String {
        let mut scope = String::from("openid");
        for extra in &self.scopes {
            let extra = extra.trim();
            if !extra.is_empty() && !scope.split(' ').any(|have| have == extra) {
                scope.push(' ');
                scope.push_str(extra);
            }
        }
        scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let config = Config::new(
            "https://id.example",
            "marimo",
            ClientSecret::new("s3cret-value"),
            "https://nb.example/auth/callback",
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(
            debug.contains("ClientSecret([redacted; 12 bytes])"),
            "{debug}"
        );
        assert!(debug.contains("https://id.example"), "{debug}");
    }

    #[test]
    fn scope_starts_with_openid_once() {
        let mut config = Config::new("i", "c", ClientSecret::new(""), "r");
        assert_eq!(config.scope(), "openid profile email");
        config.scopes = vec![
            "email".into(),
            "openid".into(),
            " groups ".into(),
            "email".into(),
        ];
        assert_eq!(config.scope(), "openid email groups");
    }
}
