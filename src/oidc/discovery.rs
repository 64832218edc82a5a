//! OpenID Provider discovery: `{issuer}/.well-known/openid-configuration`, checked against
//! the configured issuer and against what this relying party needs.

use std::net::IpAddr;

use http::{StatusCode, Uri};
use serde::Deserialize;

use super::http::HttpClient;
use super::{OidcError, ACCEPTED_ALGORITHMS};

/// The parts of the provider's metadata this relying party uses.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ProviderMetadata {
    /// The issuer, equal to the configured one.
    pub(crate) issuer: String,
    /// Where the browser is sent to sign in.
    pub(crate) authorization_endpoint: String,
    /// Where codes are exchanged for tokens.
    pub(crate) token_endpoint: Option<String>,
    /// The provider's signing keys.
    pub(crate) jwks_uri: String,
    /// Claims about the signed-in user, for an access token.
    pub(crate) userinfo_endpoint: Option<String>,
    /// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), when offered.
    pub(crate) end_session_endpoint: Option<String>,
    #[serde(default)]
    pub(crate) response_types_supported: Vec<String>,
    #[serde(default)]
    pub(crate) id_token_signing_alg_values_supported: Vec<String>,
    pub(crate) code_challenge_methods_supported: Option<Vec<String>>,
    pub(crate) token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the provider adds `iss` to its authorization responses.
    #[serde(default)]
    pub(crate) authorization_response_iss_parameter_supported: bool,
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenAuth {
    /// `Authorization: Basic` (the default of OAuth 2.0 and OpenID Connect).
    Basic,
    /// `client_id` and `client_secret` in the form, for providers that only take that.
    Post,
}

impl ProviderMetadata {
    /// Fetches and checks the provider's metadata.
    pub(crate) async fn discover(
        http: &HttpClient,
        issuer: &str,
        allow_http: bool,
    ) -> Result<Self, OidcError> {
        check_url("issuer", issuer, allow_http)?;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let response = http.get(&url, None).await?;
        if response.status != StatusCode::OK {
            return Err(OidcError::status(&url, &response));
        }
        let metadata: Self =
            serde_json::from_slice(&response.body).map_err(|error| OidcError::BadResponse {
                url: url.clone(),
                reason: format!("not an OpenID Provider discovery document: {error}"),
            })?;
        if metadata.issuer != issuer {
            return Err(OidcError::IssuerMismatch {
                url,
                expected: issuer.to_owned(),
                found: metadata.issuer,
            });
        }
        metadata.check(allow_http)?;
        Ok(metadata)
    }

    /// Whether the provider can do what the sign-in needs.
    fn check(&self, allow_http: bool) -> Result<(), OidcError> {
        check_url(
            "authorization endpoint",
            &self.authorization_endpoint,
            allow_http,
        )?;
        let Some(token_endpoint) = &self.token_endpoint else {
            return Err(OidcError::Unsupported(
                "it has no token endpoint (the authorization-code flow needs one)".into(),
            ));
        };
        check_url("token endpoint", token_endpoint, allow_http)?;
        check_url("JWKS", &self.jwks_uri, allow_http)?;
        if let Some(url) = &self.userinfo_endpoint {
            check_url("userinfo endpoint", url, allow_http)?;
        }
        if let Some(url) = &self.end_session_endpoint {
            check_url("end-session endpoint", url, allow_http)?;
        }
        if !self.response_types_supported.iter().any(|t| t == "code") {
            return Err(OidcError::Unsupported(format!(
                "it does not offer the authorization-code flow (response types: {})",
                self.response_types_supported.join(", ")
            )));
        }
        if let Some(methods) = &self.code_challenge_methods_supported {
            if !methods.iter().any(|m| m == "S256") {
                return Err(OidcError::Unsupported(format!(
                    "it does not offer PKCE with S256 (code challenge methods: {})",
                    methods.join(", ")
                )));
            }
        }
        let signs_usably = self
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|alg| alg.parse::<jsonwebtoken::Algorithm>().ok())
            .any(|alg| ACCEPTED_ALGORITHMS.contains(&alg));
        if !signs_usably {
            return Err(OidcError::Unsupported(format!(
                "it signs ID tokens with {} only; marimo-rs accepts {}",
                self.id_token_signing_alg_values_supported.join(", "),
                super::accepted_algorithms()
            )));
        }
        self.token_auth().map(|_| ())
    }

    /// `client_secret_basic` unless the provider lists only `client_secret_post`; an absent
    /// list means `client_secret_basic` (OpenID Connect Discovery 1.0, §3).
    pub(crate) fn token_auth(&self) -> Result<TokenAuth, OidcError> {
        let Some(methods) = &self.token_endpoint_auth_methods_supported else {
            return Ok(TokenAuth::Basic);
        };
        if methods.iter().any(|m| m == "client_secret_basic") {
            Ok(TokenAuth::Basic)
        } else if methods.iter().any(|m| m == "client_secret_post") {
            Ok(TokenAuth::Post)
        } else {
            Err(OidcError::Unsupported(format!(
                "its token endpoint takes neither client_secret_basic nor client_secret_post \
                 (it lists: {})",
                methods.join(", ")
            )))
        }
    }
}

/// A provider URL is absolute HTTPS, or HTTP on a loopback host (or anywhere with
/// `allow_http`), without a fragment.
pub(crate) fn check_url(what: &'static str, url: &str, allow_http: bool) -> Result<(), OidcError> {
    let bad = |reason: &str| OidcError::BadUrl {
        what,
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url.contains('#') {
        return Err(bad("it has a fragment"));
    }
    let uri: Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    let host = uri.host().ok_or_else(|| bad("it is not an absolute URL"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if allow_http || is_loopback(host) => Ok(()),
        Some("http") => Err(bad(
            "identity providers must be reached over HTTPS (plain HTTP is allowed on loopback \
             addresses, or everywhere with allow_http for development)",
        )),
        _ => Err(bad("it is not an http(s) URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_must_be_https_except_on_loopback() {
        for good in [
            "https://id.example",
            "https://id.example/realms/x",
            "http://127.0.0.1:8080",
            "http://127.8.9.10/x",
            "http://localhost:9000/",
            "http://[::1]:9000/",
        ] {
            assert!(check_url("issuer", good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://id.example",
            "http://10.0.0.1/",
            "ftp://id.example",
            "/relative",
            "id.example",
            "https://id.example/#frag",
            "",
        ] {
            let error = check_url("issuer", bad, false).unwrap_err();
            assert!(
                error
                    .to_string()
                    .starts_with("the OpenID Connect issuer URL"),
                "{error}"
            );
        }
        assert!(check_url("issuer", "http://keycloak:8080/realms/x", true).is_ok());
    }

    fn metadata(json: serde_json::Value) -> ProviderMetadata {
        serde_json::from_value(json).unwrap()
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "issuer": "https://id.example",
            "authorization_endpoint": "https://id.example/auth",
            "token_endpoint": "https://id.example/token",
            "jwks_uri": "https://id.example/jwks",
            "response_types_supported": ["code", "id_token"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    #[test]
    fn a_minimal_provider_is_usable_with_basic_auth() {
        let provider = metadata(minimal());
        assert!(provider.check(false).is_ok());
        assert_eq!(provider.token_auth().unwrap(), TokenAuth::Basic);
    }

    #[test]
    fn token_auth_falls_back_to_post_only_when_basic_is_missing() {
        let mut json = minimal();
        json["token_endpoint_auth_methods_supported"] =
            serde_json::json!(["client_secret_post", "private_key_jwt"]);
        assert_eq!(
            metadata(json.clone()).token_auth().unwrap(),
            TokenAuth::Post
        );
        json["token_endpoint_auth_methods_supported"] =
            serde_json::json!(["client_secret_post", "client_secret_basic"]);
        assert_eq!(
            metadata(json.clone()).token_auth().unwrap(),
            TokenAuth::Basic
        );
        json["token_endpoint_auth_methods_supported"] = serde_json::json!(["private_key_jwt"]);
        let error = metadata(json).check(false).unwrap_err().to_string();
        assert!(
            error.contains("neither client_secret_basic nor client_secret_post"),
            "{error}"
        );
    }

    #[test]
    fn unusable_providers_are_named_with_the_reason() {
        let cases = [
            (
                "response_types_supported",
                serde_json::json!(["id_token"]),
                "authorization-code flow",
            ),
            (
                "code_challenge_methods_supported",
                serde_json::json!(["plain"]),
                "PKCE with S256",
            ),
            (
                "id_token_signing_alg_values_supported",
                serde_json::json!(["HS256", "none"]),
                "signs ID tokens with HS256, none only",
            ),
            (
                "token_endpoint",
                serde_json::Value::Null,
                "no token endpoint",
            ),
            (
                "jwks_uri",
                serde_json::json!("http://id.example/jwks"),
                "JWKS URL",
            ),
        ];
        for (field, value, expected) in cases {
            let mut json = minimal();
            json[field] = value;
            let error = metadata(json).check(false).unwrap_err().to_string();
            assert!(error.contains(expected), "{field}: {error}");
        }
    }
}
