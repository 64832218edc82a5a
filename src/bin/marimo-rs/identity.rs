//! Who may sign in, and how: the identity provider, whole-server access rules, a front
//! proxy's identity and the audit log, from the identity flags and the configuration file.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use marimo_rs::{Access, AuthLayer, OidcConfig, Token};

use crate::cli::IdentityArgs;
use crate::config::Extras;
use crate::error::CliError;

/// The identity provider the flags (and file) configure, if any. `public_url` is where
/// browsers reach the server.
pub(crate) fn oidc_config(
    args: &IdentityArgs,
    extras: &Extras,
    public_url: &str,
) -> Result<Option<OidcConfig>, CliError> {
    let (Some(issuer), Some(client_id), Some(secret_file)) = (
        &args.oidc_issuer,
        &args.oidc_client_id,
        &args.oidc_client_secret_file,
    ) else {
        return Ok(None);
    };
    let secret = read_secret(secret_file)?;
    let mut config = OidcConfig::new(issuer, client_id, secret, public_url);
    if let Some(scopes) = &args.oidc_scopes {
        config = config.scopes(scopes.iter().map(|scope| scope.trim().to_owned()));
    }
    if let Some(more) = &extras.oidc {
        if let Some(claims) = &more.name_claims {
            config = config.name_claims(claims.clone());
        }
        if let Some(claim) = &more.email_claim {
            config = config.email_claim(claim.clone());
        }
        if let Some(claims) = &more.group_claims {
            config = config.group_claims(claims.clone());
        }
        if let Some(claims) = &more.extra_claims {
            config = config.extra_claims(claims.clone());
        }
        if let Some(userinfo) = more.userinfo {
            config = config.userinfo(userinfo);
        }
        if let Some(secs) = more.session_lifetime {
            config = config.session_lifetime(Duration::from_secs(secs));
        }
        if let Some(label) = &more.label {
            config = config.label(label.clone());
        }
        if let Some(allow) = more.allow_http {
            config = config.allow_http(allow);
        }
    }
    Ok(Some(config))
}

/// The auth layer for a token, an identity provider and a front proxy's identity (any of
/// them), with the whole-server rules; `None` when nothing signs anyone in.
pub(crate) fn layer(
    token: Option<&Token>,
    oidc: Option<OidcConfig>,
    args: &IdentityArgs,
    extras: &Extras,
) -> Result<Option<AuthLayer>, CliError> {
    let layer = match (token, oidc) {
        (token, Some(oidc)) => {
            let layer = AuthLayer::oidc(oidc);
            match token {
                Some(token) => layer.token(token.clone()),
                None => layer,
            }
        }
        (Some(token), None) => AuthLayer::new(token.clone()),
        // Only the proxy signs users in: a random token nobody knows keeps the rest out.
        (None, None) if extras.proxy_identity.is_some() => AuthLayer::new(Token::random()),
        (None, None) if args.has_rules() => return Err(CliError::RulesWithoutSignIn),
        (None, None) => return Ok(None),
    };
    let layer = match &extras.proxy_identity {
        Some(identity) => layer.proxy_identity(identity.clone()),
        None => layer,
    };
    Ok(Some(if args.has_rules() {
        layer.access(
            Access::signed_in()
                .users(args.allow_users.iter().cloned())
                .groups(args.allow_groups.iter().cloned())
                .email_domains(args.allow_email_domains.iter().cloned()),
        )
    } else {
        layer
    }))
}

/// Where browsers reach the server: `--public-url`, else `http://HOST:PORT` and the base URL
/// (not for a wildcard address, which is nobody's URL).
pub(crate) fn public_url(
    args: &IdentityArgs,
    host: &str,
    port: u16,
    base: Option<&str>,
) -> Result<String, CliError> {
    if let Some(url) = &args.public_url {
        let parsed: Result<http::Uri, _> = url.parse();
        return match parsed {
            Ok(uri)
                if uri.scheme().is_some() && uri.authority().is_some() && uri.query().is_none() =>
            {
                Ok(url.trim_end_matches('/').to_owned())
            }
            _ => Err(CliError::PublicUrl(format!(
                "--public-url {url:?} is not a URL such as https://marimo.example.com"
            ))),
        };
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
        return Err(CliError::PublicUrl(format!(
            "the identity provider needs the URL browsers use to reach this server, and \
             --host {host} is not one: give --public-url (e.g. https://marimo.example.com)"
        )));
    }
    let host = if bare.contains(':') {
        format!("[{bare}]")
    } else {
        bare.to_owned()
    };
    Ok(format!("http://{host}:{port}{}", base.unwrap_or("")))
}

/// Reads the client secret from `path` (`-`: standard input), without one trailing newline.
fn read_secret(path: &Path) -> Result<Vec<u8>, CliError> {
    let secret = crate::files::read_secret(path).map_err(|source| CliError::SecretFile {
        path: path.to_owned(),
        source,
    })?;
    if secret.is_empty() {
        return Err(CliError::EmptySecret(path.to_owned()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_defaults_to_the_listening_address() {
        let args = IdentityArgs::default();
        assert_eq!(
            public_url(&args, "127.0.0.1", 8080, Some("/m")).unwrap(),
            "http://127.0.0.1:8080/m"
        );
        assert_eq!(
            public_url(&args, "::1", 80, None).unwrap(),
            "http://[::1]:80"
        );
        assert!(public_url(&args, "0.0.0.0", 80, None).is_err());
        let given = IdentityArgs {
            public_url: Some("https://m.example.com/".into()),
            ..IdentityArgs::default()
        };
        assert_eq!(
            public_url(&given, "0.0.0.0", 80, None).unwrap(),
            "https://m.example.com"
        );
        let bad = IdentityArgs {
            public_url: Some("m.example.com".into()),
            ..IdentityArgs::default()
        };
        assert!(public_url(&bad, "0.0.0.0", 80, None).is_err());
    }

    #[test]
    fn rules_need_something_that_signs_in() {
        let args = IdentityArgs {
            allow_groups: vec!["g".into()],
            ..IdentityArgs::default()
        };
        assert!(matches!(
            layer(None, None, &args, &Extras::default()),
            Err(CliError::RulesWithoutSignIn)
        ));
        assert!(
            layer(None, None, &IdentityArgs::default(), &Extras::default())
                .unwrap()
                .is_none()
        );
    }
}
