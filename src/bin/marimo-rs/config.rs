//! `marimo-rs serve --config FILE.toml`: the server's settings in a file, merged into the
//! command line (a flag given as well wins; `--app` and `--dir` add to the file's mounts).
//!
//! ```toml
//! host = "0.0.0.0"
//! port = 2718
//! base_url = "/marimo"
//! public_url = "https://example.com/marimo"
//! trusted_proxies = ["10.0.0.0/8"]
//! audit_log = "/var/log/marimo-rs/audit.jsonl"
//! token_file = "/run/secrets/marimo-token"      # the token methods, for scripts
//!
//! [oidc]
//! issuer = "https://id.example.com/realms/acme"
//! client_id = "marimo"
//! client_secret_file = "/run/secrets/oidc-client-secret"
//! scopes = ["openid", "profile", "email", "groups"]
//! group_claims = ["groups"]
//!
//! [access]                                       # the whole server
//! email_domains = ["example.com"]
//!
//! [[app]]
//! path = "/finance"
//! notebook = "notebooks/finance.py"
//! access = { groups = ["finance"] }
//!
//! [[directory]]
//! path = "/apps"
//! directory = "notebooks/apps"
//! access = { groups = ["analysts"] }
//! notebooks = { "team/" = { groups = ["team"] } }
//! ```
//!
//! Unknown keys and bad values are errors that name the file, the line and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::parser::ValueSource;
use clap::ArgMatches;
use marimo_rs::{Access, ProxyIdentity, TrustedProxy};
use serde::Deserialize;

use crate::cli::{Cli, Command};
use crate::error::CliError;

/// The file, as read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    host: Option<String>,
    port: Option<u16>,
    base_url: Option<String>,
    public_url: Option<String>,
    include_code: Option<bool>,
    #[serde(default)]
    trusted_proxies: Vec<Proxy>,
    audit_log: Option<PathBuf>,
    token_file: Option<PathBuf>,
    oidc: Option<Oidc>,
    access: Option<Rules>,
    proxy_identity: Option<FrontProxy>,
    #[serde(default, rename = "app")]
    apps: Vec<App>,
    #[serde(default, rename = "directory")]
    directories: Vec<Directory>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Oidc {
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    scopes: Option<Vec<String>>,
    name_claims: Option<Vec<String>>,
    email_claim: Option<String>,
    group_claims: Option<Vec<String>>,
    extra_claims: Option<Vec<String>>,
    userinfo: Option<bool>,
    /// Seconds.
    session_lifetime: Option<Seconds>,
    label: Option<String>,
    allow_http: Option<bool>,
}

/// Access rules: any one that matches lets the user in.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    email_domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct App {
    path: MountPath,
    notebook: PathBuf,
    access: Option<Rules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Directory {
    path: MountPath,
    directory: PathBuf,
    access: Option<Rules>,
    /// Rules of some notebooks (`sales.py`) or folders (`team/`).
    #[serde(default)]
    notebooks: BTreeMap<String, Rules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontProxy {
    /// oauth2-proxy's `X-Forwarded-User`/`-Email`/`-Groups`.
    #[serde(default)]
    headers: bool,
    /// A signed assertion, verified against these keys.
    jwks_url: Option<String>,
    jwt_header: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    group_claims: Option<Vec<String>>,
}

/// A mount path as `--app`/`--dir` take it: starts with `/`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct MountPath(String);

impl TryFrom<String> for MountPath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        if path.starts_with('/') {
            Ok(Self(path))
        } else {
            Err(format!(
                "invalid mount path {path:?}: it must start with `/`, e.g. \"/apps\""
            ))
        }
    }
}

/// A trusted proxy, read by the library's own parser.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct Proxy(TrustedProxy);

impl TryFrom<String> for Proxy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        TrustedProxy::from_str(&text)
            .map(Self)
            .map_err(|error| error.to_string())
    }
}

/// A positive number of seconds.
#[derive(Debug, Deserialize)]
#[serde(try_from = "i64")]
struct Seconds(u64);

impl TryFrom<i64> for Seconds {
    type Error = String;

    fn try_from(secs: i64) -> Result<Self, Self::Error> {
        u64::try_from(secs)
            .ok()
            .filter(|&secs| secs > 0)
            .map(Self)
            .ok_or_else(|| format!("{secs} is not a positive number of seconds"))
    }
}

/// What only the file can say, kept on `ServeArgs` for the server to apply.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extras {
    /// Access rules per `--app` mount path.
    pub(crate) app_access: Vec<(String, Access)>,
    /// Access rules per `--dir` mount path: the directory's, and per notebook or folder.
    pub(crate) dir_access: Vec<(String, Option<Access>, Vec<(String, Access)>)>,
    /// Claim names and other identity provider settings.
    pub(crate) oidc: Option<OidcExtras>,
    /// A front proxy's identity.
    pub(crate) proxy_identity: Option<ProxyIdentity>,
}

/// The identity provider settings no flag has.
#[derive(Clone, Debug, Default)]
pub(crate) struct OidcExtras {
    pub(crate) name_claims: Option<Vec<String>>,
    pub(crate) email_claim: Option<String>,
    pub(crate) group_claims: Option<Vec<String>>,
    pub(crate) extra_claims: Option<Vec<String>>,
    pub(crate) userinfo: Option<bool>,
    pub(crate) session_lifetime: Option<u64>,
    pub(crate) label: Option<String>,
    pub(crate) allow_http: Option<bool>,
}

impl From<Rules> for Access {
    fn from(rules: Rules) -> Self {
        Access::signed_in()
            .users(rules.users)
            .groups(rules.groups)
            .email_domains(rules.email_domains)
    }
}

/// Reads `--config` (for `serve`) and merges it into `cli`: a setting given on the command
/// line wins over the file's.
pub(crate) fn apply(cli: &mut Cli, matches: &ArgMatches) -> Result<(), CliError> {
    let Command::Serve(args) = &mut cli.command else {
        return Ok(());
    };
    let Some(path) = args.config.clone() else {
        return Ok(());
    };
    let file = read(&path)?;
    let given = |id: &str| {
        matches
            .subcommand_matches("serve")
            .and_then(|sub| sub.value_source(id))
            .is_some_and(|source| {
                matches!(source, ValueSource::CommandLine | ValueSource::EnvVariable)
            })
    };
    // Relative paths in the file are relative to the file.
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    let near = |file: PathBuf| {
        if file.is_absolute() {
            file
        } else {
            dir.join(file)
        }
    };

    let server = &mut args.server;
    if let (Some(host), false) = (file.host, given("host")) {
        server.host = host;
    }
    if let (Some(port), false) = (file.port, given("port")) {
        server.port = port;
    }
    if !given("base_url") && file.base_url.is_some() {
        server.base_url = file.base_url;
    }
    if !given("trusted_proxies") && !file.trusted_proxies.is_empty() {
        server.trusted_proxies = file
            .trusted_proxies
            .into_iter()
            .map(|proxy| proxy.0)
            .collect();
    }
    if let (Some(include), false) = (file.include_code, given("include_code")) {
        args.app.include_code = include;
    }
    let identity = &mut args.identity;
    if !given("public_url") && file.public_url.is_some() {
        identity.public_url = file.public_url;
    }
    if !given("audit_log") {
        if let Some(log) = file.audit_log {
            identity.audit_log = Some(near(log));
        }
    }
    if let (Some(rules), false) = (
        file.access,
        given("allow_users") || given("allow_groups") || given("allow_email_domains"),
    ) {
        identity.allow_users = rules.users;
        identity.allow_groups = rules.groups;
        identity.allow_email_domains = rules.email_domains;
    }
    let auth_given = [
        "token",
        "auth",
        "token_password",
        "token_password_file",
        "no_token",
    ]
    .into_iter()
    .any(given);
    if let (Some(token_file), false) = (file.token_file, auth_given) {
        args.auth.token_password_file = Some(near(token_file));
    }
    if let Some(oidc) = file.oidc {
        if !given("oidc_issuer") {
            identity.oidc_issuer = Some(oidc.issuer);
            identity.oidc_client_id = Some(oidc.client_id);
            identity.oidc_client_secret_file = Some(near(oidc.client_secret_file));
        }
        if !given("oidc_scopes") && oidc.scopes.is_some() {
            identity.oidc_scopes = oidc.scopes;
        }
        args.file.oidc = Some(OidcExtras {
            name_claims: oidc.name_claims,
            email_claim: oidc.email_claim,
            group_claims: oidc.group_claims,
            extra_claims: oidc.extra_claims,
            userinfo: oidc.userinfo,
            session_lifetime: oidc.session_lifetime.map(|secs| secs.0),
            label: oidc.label,
            allow_http: oidc.allow_http,
        });
    }
    if let Some(front) = file.proxy_identity {
        args.file.proxy_identity = Some(front_proxy(front, &path)?);
    }
    // The file's mounts first; `--app` and `--dir` add to them.
    let mut apps = Vec::new();
    for app in file.apps {
        apps.push(format!("{}={}", app.path.0, near(app.notebook).display()));
        if let Some(rules) = app.access {
            args.file.app_access.push((app.path.0, rules.into()));
        }
    }
    apps.append(&mut args.apps);
    args.apps = apps;
    let mut dirs = Vec::new();
    for directory in file.directories {
        dirs.push(format!(
            "{}={}",
            directory.path.0,
            near(directory.directory).display()
        ));
        let notebooks: Vec<(String, Access)> = directory
            .notebooks
            .into_iter()
            .map(|(path, rules)| (path, rules.into()))
            .collect();
        if directory.access.is_some() || !notebooks.is_empty() {
            let all = directory.access.map(Access::from);
            args.file
                .dir_access
                .push((directory.path.0, all, notebooks));
        }
    }
    dirs.append(&mut args.dirs);
    args.dirs = dirs;
    Ok(())
}

fn front_proxy(front: FrontProxy, path: &Path) -> Result<ProxyIdentity, CliError> {
    let bad = |message: &str| CliError::Config {
        path: path.to_owned(),
        message: format!("[proxy_identity]: {message}"),
    };
    match (front.headers, front.jwks_url) {
        (true, None) => Ok(ProxyIdentity::headers()),
        (false, Some(jwks_url)) => {
            let mut identity = ProxyIdentity::jwt_assertion(jwks_url);
            if let Some(header) = front.jwt_header {
                if http::HeaderName::try_from(header.as_str()).is_err() {
                    return Err(bad(&format!("jwt_header {header:?} is not a header name")));
                }
                identity = identity.header(&header);
            }
            if let Some(issuer) = front.issuer {
                identity = identity.issuer(issuer);
            }
            if let Some(audience) = front.audience {
                identity = identity.audience(audience);
            }
            if let Some(claims) = front.group_claims {
                identity = identity.group_claims(claims);
            }
            Ok(identity)
        }
        (true, Some(_)) => Err(bad("set either headers = true or jwks_url, not both")),
        (false, None) => Err(bad(
            "set headers = true (oauth2-proxy) or jwks_url (a signed assertion)",
        )),
    }
}

/// Reads and parses the file; errors name the line and the key.
fn read(path: &Path) -> Result<File, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::ConfigRead {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| CliError::Config {
        path: path.to_owned(),
        message,
    })
}

fn parse(text: &str) -> Result<File, String> {
    let deserializer =
        toml::Deserializer::parse(text).map_err(|error| describe(text, &error, None))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        describe(text, error.inner(), Some(&path))
    })
}

/// `line N: key `a.b`: message`, from a toml error and the key path serde followed.
fn describe(text: &str, error: &toml::de::Error, key: Option<&str>) -> String {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if let Some(key) = key.filter(|key| !key.is_empty() && *key != ".") {
        out.push_str(&format!("key `{key}`: "));
    }
    out.push_str(error.message().trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let file = parse(
            r#"
host = "0.0.0.0"
port = 8080
trusted_proxies = ["10.0.0.0/8"]
[oidc]
issuer = "https://id.example"
client_id = "marimo"
client_secret_file = "secret"
session_lifetime = 3600
[access]
email_domains = ["example.com"]
[[app]]
path = "/a"
notebook = "a.py"
access = { groups = ["g"] }
[[directory]]
path = "/d"
directory = "d"
notebooks = { "team/" = { users = ["ada"] } }
"#,
        )
        .unwrap();
        assert_eq!(file.port, Some(8080));
        assert_eq!(file.apps[0].access.as_ref().unwrap().groups, ["g"]);
        assert_eq!(file.directories[0].notebooks["team/"].users, ["ada"]);
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let unknown = parse("port = 1\n[oidc]\nissuer = \"x\"\nclient = \"y\"\n").unwrap_err();
        assert!(unknown.starts_with("line 4: "), "{unknown}");
        assert!(unknown.contains("unknown field `client`"), "{unknown}");
        assert!(unknown.contains("oidc"), "{unknown}");
        let bad = parse("host = \"h\"\nport = \"eighty\"\n").unwrap_err();
        assert!(bad.starts_with("line 2: key `port`: "), "{bad}");
        let proxy = parse("trusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(proxy.starts_with("line 1: "), "{proxy}");
        assert!(proxy.contains("trusted_proxies"), "{proxy}");
        assert!(proxy.contains("prefix length"), "{proxy}");
        let mount = parse("[[app]]\npath = \"a\"\nnotebook = \"a.py\"\n").unwrap_err();
        assert!(mount.starts_with("line 2: key `app[0].path`: "), "{mount}");
        let syntax = parse("port = = 1").unwrap_err();
        assert!(syntax.starts_with("line 1: "), "{syntax}");
    }
}
