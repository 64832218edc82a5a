//! The command line: subcommands and flags (clap).

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use marimo_rs::{ReplicaId, TrustedProxy};

/// Serve marimo notebooks through one Rust gateway, with token authentication.
///
/// Each notebook runs in its own supervised Python backend (marimo, installed on first use)
/// that only the gateway can reach.
#[derive(Debug, Parser)]
#[command(name = "marimo-rs", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve one notebook as a read-only app at `/`, like `marimo run`
    ///
    /// Authentication is off unless asked for: `--token` (a token derived from the notebook's
    /// code, the same on every restart), `--token=VALUE`, `--auth`, `--token-password`,
    /// `--token-password-file`.
    Run(RunArgs),
    /// Serve several notebooks and notebook directories under one server
    ///
    /// As marimo's `create_asgi_app().with_app(...).with_dynamic_directory(...)`. Authentication
    /// is off unless asked for; a generated token (`--token`, `--auth`) is derived from the
    /// code of every notebook served.
    Serve(ServeArgs),
    /// Open a notebook in marimo's editor, like `marimo edit` (an absent file is created)
    ///
    /// Authentication is on with a random token unless `--no-token`: whoever can open the
    /// editor can run any code as you.
    Edit(EditArgs),
    /// Create a new notebook and open it in marimo's editor, like `marimo new`
    ///
    /// Authentication is on with a random token unless `--no-token`.
    New(NewArgs),
}

impl Command {
    pub(crate) fn server(&self) -> &ServerArgs {
        match self {
            Command::Run(args) => &args.server,
            Command::Serve(args) => &args.server,
            Command::Edit(args) => &args.server,
            Command::New(args) => &args.server,
        }
    }

    pub(crate) fn auth(&self) -> &AuthArgs {
        match self {
            Command::Run(args) => &args.auth,
            Command::Serve(args) => &args.auth,
            Command::Edit(args) => &args.auth,
            Command::New(args) => &args.auth,
        }
    }
}

/// `marimo-rs run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The notebook file (.py).
    #[arg(value_name = "NOTEBOOK")]
    pub(crate) notebook: PathBuf,
    #[command(flatten)]
    pub(crate) app: AppArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// `marimo-rs serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Serve NOTEBOOK at PATH (`/` or `/a/b`); repeat for more notebooks.
    #[arg(long = "app", value_name = "PATH=NOTEBOOK")]
    pub(crate) apps: Vec<String>,
    /// Serve every notebook in DIRECTORY under PATH (`PATH/name/` for `name.py`); repeat
    /// for more directories.
    #[arg(long = "dir", value_name = "PATH=DIRECTORY")]
    pub(crate) dirs: Vec<String>,
    #[command(flatten)]
    pub(crate) app: AppArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// `marimo-rs edit`.
#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// The notebook file (.py); created if it does not exist.
    #[arg(value_name = "NOTEBOOK")]
    pub(crate) notebook: PathBuf,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// `marimo-rs new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The file to create (it must not exist) [default: new_notebook.py, or
    /// new_notebook_1.py, … if taken]
    #[arg(value_name = "NOTEBOOK")]
    pub(crate) notebook: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
}

/// Options of the read-only app view (run and serve).
#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// Let viewers see the notebooks' code.
    #[arg(long)]
    pub(crate) include_code: bool,
}

/// Where and how to serve.
#[derive(Debug, Args)]
#[command(next_help_heading = "Server")]
pub(crate) struct ServerArgs {
    /// The address to listen on (a non-loopback address exposes the server to the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// The port to listen on; 0 picks a free one.
    #[arg(long, short, default_value_t = 2718)]
    pub(crate) port: u16,
    /// Do not open the URL in a web browser.
    #[arg(long)]
    pub(crate) headless: bool,
    /// Serve everything under this path prefix, e.g. `/marimo`.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) base_url: Option<String>,
    /// How long a browser session's kernel survives after its connection closes [default:
    /// 120 for apps, forever in the editor]
    #[arg(long, value_name = "SECS")]
    pub(crate) session_ttl: Option<u64>,
    /// The Python interpreter for the notebooks (it needs marimo) [default:
    /// MARIMO_RS_PYTHON, else a managed virtualenv with marimo, else python3]
    #[arg(long, value_name = "PATH")]
    pub(crate) python: Option<PathBuf>,
    /// How many Python processes wait, marimo imported, to start a notebook in tens of
    /// milliseconds instead of seconds (about 65 MB each; 0 turns warm starts off)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) warm_pool: usize,
    /// How much to log on standard error [default: info, or RUST_LOG when set]
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub(crate) log_level: Option<LogLevel>,
    /// Name this replica in the `x-marimo-rs-replica` response header [default: when
    /// MARIMO_RS_SECRET is set (replicas share it, with MARIMO_RS_OLD_SECRETS during a
    /// rotation), a hash of the host name and process id; otherwise no header]
    #[arg(long, value_name = "NAME", env = "MARIMO_RS_REPLICA_ID", value_parser = ReplicaId::from_str)]
    pub(crate) replica_id: Option<ReplicaId>,
    /// A reverse proxy in front of this server (IP or CIDR; repeatable): its X-Forwarded-For
    /// picks the client address for the login limit, and X-Forwarded-Proto/-Host count for
    /// Secure cookies and WebSocket Origin checks. Use it only when clients cannot reach this
    /// server except through the proxy
    #[arg(long = "trusted-proxy", value_name = "IP[/BITS]", value_parser = TrustedProxy::from_str)]
    pub(crate) trusted_proxies: Vec<TrustedProxy>,
    /// Mark the session cookie `Secure` (TLS is terminated in front of this server)
    #[arg(long)]
    pub(crate) secure_cookie: bool,
    /// Also accept requests from pages at ORIGIN (`scheme://host[:port]`; repeatable), like
    /// marimo's: they may post, open WebSockets and read event streams, and get CORS answers
    /// with credentials. Pages of every other site are refused (403)
    #[arg(long = "allow-origins", value_name = "ORIGIN")]
    pub(crate) allow_origins: Vec<String>,
    /// Also answer requests for host NAME (repeatable). Bound to a loopback address, the
    /// server answers only localhost and IP addresses otherwise (a guard against DNS
    /// rebinding); elsewhere, naming hosts turns the check on
    #[arg(long = "allow-host", value_name = "NAME")]
    pub(crate) allow_hosts: Vec<String>,
}

/// Token authentication, as `marimo run/edit --token`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Authentication")]
pub(crate) struct AuthArgs {
    /// Require a token: `--token=VALUE` uses VALUE (visible to other local users in `ps`:
    /// prefer --token-password-file); a bare `--token` generates one (random in the editor; in
    /// run and serve derived from the notebooks' code, so it stays the same across restarts,
    /// keyed by MARIMO_RS_SECRET when set, else by a random secret of this installation)
    #[arg(long, value_name = "VALUE", num_args = 0..=1, require_equals = true)]
    #[allow(
        clippy::option_option,
        reason = "clap's shape for a flag with an optional value: absent, bare, or with one"
    )]
    pub(crate) token: Option<Option<String>>,
    /// Turn authentication on (with a generated token unless one is given)
    #[arg(long)]
    pub(crate) auth: bool,
    /// Require this token (visible to other local users in `ps`: prefer
    /// --token-password-file)
    #[arg(long, value_name = "VALUE", conflicts_with = "token_password_file")]
    pub(crate) token_password: Option<String>,
    /// Read the token from FILE, `-` for standard input (one trailing newline is ignored)
    #[arg(long, value_name = "FILE")]
    pub(crate) token_password_file: Option<PathBuf>,
    /// Turn authentication off (the default for run and serve)
    #[arg(long, conflicts_with_all = ["token", "auth", "token_password", "token_password_file"])]
    pub(crate) no_token: bool,
}

/// The `--log-level` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Checks what clap cannot express; exits with a clap usage error (status 2) on a conflict.
pub(crate) fn validate(cli: &Cli) {
    let auth = cli.command.auth();
    let fixed = matches!(auth.token, Some(Some(_)));
    let conflict = if fixed && auth.token_password.is_some() {
        Some("--token-password <VALUE>")
    } else if fixed && auth.token_password_file.is_some() {
        Some("--token-password-file <FILE>")
    } else {
        None
    };
    if let Some(other) = conflict {
        use clap::CommandFactory;
        let mut command = Cli::command();
        // Gives subcommands their full name (`marimo-rs run`) in the usage line.
        command.build();
        let name = subcommand_name(&cli.command);
        let sub = command
            .find_subcommand_mut(name)
            .expect("every subcommand is declared");
        sub.error(
            clap::error::ErrorKind::ArgumentConflict,
            format!("the argument '--token=<VALUE>' cannot be used with '{other}'"),
        )
        .exit();
    }
}

fn subcommand_name(command: &Command) -> &'static str {
    match command {
        Command::Run(_) => "run",
        Command::Serve(_) => "serve",
        Command::Edit(_) => "edit",
        Command::New(_) => "new",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn token_takes_a_value_only_with_equals() {
        let cli = Cli::try_parse_from(["marimo-rs", "run", "--token", "nb.py"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.auth.token, Some(None));
        assert_eq!(run.notebook, PathBuf::from("nb.py"));
        let cli =
            Cli::try_parse_from(["marimo-rs", "run", "nb.py", "--auth", "--token=s3"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.auth.token, Some(Some("s3".to_owned())));
        assert!(run.auth.auth);
    }

    #[test]
    fn no_token_conflicts_with_every_way_of_asking_for_one() {
        for flag in [
            "--token",
            "--token=x",
            "--auth",
            "--token-password=x",
            "--token-password-file=f",
        ] {
            let error =
                Cli::try_parse_from(["marimo-rs", "run", "nb.py", "--no-token", flag]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag}"
            );
        }
    }
}
