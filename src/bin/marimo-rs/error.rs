//! What can go wrong, each with a message that says what to do. Printed as one line:
//! `error: …`.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error("notebook {} does not exist: check the path (`marimo-rs edit {}` creates it)", .0.display(), .0.display())]
    NotebookNotFound(PathBuf),
    #[error("{} is a directory, not a notebook file: give a .py file ({})", .path.display(), .hint)]
    NotAFile { path: PathBuf, hint: &'static str },
    #[error("directory {} does not exist or is not a directory: check the path given to --dir", .0.display())]
    DirectoryNotFound(PathBuf),
    #[error("{} already exists: open it with `marimo-rs edit {}`, or give a new file name", .0.display(), .0.display())]
    NotebookExists(PathBuf),
    #[error("cannot create the notebook {}: {source}", .path.display())]
    CreateNotebook {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the notebook {}: {source}", .path.display())]
    ReadNotebook {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid {flag} {value:?}: expected {shape}, e.g. {flag} {example}")]
    BadMountSpec {
        flag: &'static str,
        value: String,
        shape: &'static str,
        example: &'static str,
    },
    #[error("nothing to serve: give at least one --app PATH=NOTEBOOK or --dir PATH=DIRECTORY")]
    NothingToServe,
    #[error("invalid --base-url {value:?}: {reason}")]
    BadBaseUrl { value: String, reason: String },
    #[error("invalid --proxy {value:?}: {reason}")]
    BadProxy { value: String, reason: String },
    #[error("cannot read the file given to {flag}, {}: {source}", .path.display())]
    TokenFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token from {0} is empty: authentication needs a non-empty token")]
    EmptyToken(&'static str),
    #[error("{0}")]
    Secrets(&'static str),
    #[error("{0} and {1} both read standard input (`-`): give one of them a file")]
    StdinTwice(&'static str, &'static str),
    #[error("cannot open the access log {}: {source}", .path.display())]
    AccessLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--metrics-token-file needs --metrics")]
    MetricsTokenWithoutMetrics,
    #[error(transparent)]
    InstallationSecret(#[from] marimo_rs::SecretError),
    #[error("port {port} on {host} is already in use: stop the other server, or choose another port with --port (0 picks a free one)")]
    PortInUse { host: String, port: u16 },
    #[error("cannot listen on {host} port {port}: {source}")]
    Bind {
        host: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Build(#[from] marimo_rs::BuildError),
    #[error(transparent)]
    Python(#[from] marimo_rs::NotebookError),
    #[error("cannot read the configuration file {}: {source}", .path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    #[error("cannot read the client secret file {}: {source}", .path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the client secret from {} is empty", .0.display())]
    EmptySecret(PathBuf),
    #[error("{0}")]
    PublicUrl(String),
    #[error("--allow-user, --allow-group and --allow-email-domain need a way to sign in: add --oidc-issuer (an identity provider) or --token")]
    RulesWithoutSignIn,
    #[error(transparent)]
    Oidc(#[from] marimo_rs::OidcError),
    #[error("cannot open the audit log {}: {source}", .path.display())]
    AuditLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the server stopped: {0}")]
    Serve(#[source] io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}
