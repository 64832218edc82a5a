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
    /// Serve notebooks as read-only apps, like `marimo run`
    ///
    /// One notebook is served at `/`. Several files and folders make a gallery at `/` that
    /// links to each: `notebook.py` at `/notebook/`, the notebooks of `folder` at
    /// `/folder/NAME/`. Arguments after `--` go to the notebooks (`mo.cli_args()`).
    ///
    /// Authentication is off unless asked for: `--token` (a token derived from the notebooks'
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

    pub(crate) fn identity(&self) -> &IdentityArgs {
        match self {
            Command::Run(args) => &args.identity,
            Command::Serve(args) => &args.identity,
            Command::Edit(args) => &args.identity,
            Command::New(args) => &args.identity,
        }
    }
}

/// `marimo-rs run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The notebook files (.py) and folders of notebooks.
    #[arg(value_name = "NOTEBOOK|FOLDER", required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Arguments for the notebooks, after `--`: `mo.cli_args()` and `sys.argv` see them.
    #[arg(last = true, value_name = "ARGS")]
    pub(crate) args: Vec<String>,
    #[command(flatten)]
    pub(crate) app: AppArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
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
    /// Read the server's settings from FILE (TOML: listen address, base URL, token or
    /// identity provider, apps and directories with their access rules, trusted proxies,
    /// audit log). Flags given as well override the file; --app and --dir add to its mounts
    #[arg(long, value_name = "FILE.toml")]
    pub(crate) config: Option<PathBuf>,
    /// What only the configuration file can say (per-mount access rules, claim names, a
    /// front proxy's identity), filled in from --config.
    #[arg(skip)]
    pub(crate) file: Box<crate::config::Extras>,
    #[command(flatten)]
    pub(crate) app: AppArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
}

/// `marimo-rs edit`.
#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// The notebook file (.py); created if it does not exist.
    #[arg(value_name = "NOTEBOOK")]
    pub(crate) notebook: PathBuf,
    /// Arguments for the notebook, after `--`: `mo.cli_args()` and `sys.argv` see them.
    #[arg(last = true, value_name = "ARGS")]
    pub(crate) args: Vec<String>,
    /// Reload the notebook in the editor when its file is changed by another program.
    #[arg(long)]
    pub(crate) watch: bool,
    #[command(flatten)]
    pub(crate) editor: EditorArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
}

/// `marimo-rs new`.
#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The file to create (it must not exist) [default: new_notebook.py, or
    /// new_notebook_1.py, … if taken]
    #[arg(value_name = "NOTEBOOK")]
    pub(crate) notebook: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) editor: EditorArgs,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) auth: AuthArgs,
    #[command(flatten)]
    pub(crate) identity: IdentityArgs,
}

/// Options of the read-only app view (run and serve), spelled as `marimo run` spells them.
#[derive(Debug, Args)]
pub(crate) struct AppArgs {
    /// Let viewers see the notebooks' code.
    #[arg(long)]
    pub(crate) include_code: bool,
    /// marimo's skew protection (the default, as in `marimo run`): a POST needs the server
    /// token of the page it comes from, so a page left open across a restart is told to reload
    #[arg(long, overrides_with = "no_skew_protection")]
    pub(crate) skew_protection: bool,
    /// Turn marimo's skew protection off
    #[arg(long, overrides_with = "skew_protection")]
    pub(crate) no_skew_protection: bool,
    /// Show a cell's traceback to viewers when it raises (and the reason a notebook could not
    /// start, to every client)
    #[arg(long, overrides_with = "no_show_tracebacks")]
    pub(crate) show_tracebacks: bool,
    /// Show viewers only the error, not the traceback (the default)
    #[arg(long, overrides_with = "show_tracebacks")]
    pub(crate) no_show_tracebacks: bool,
    /// Show what the notebooks print (standard output and error) in the browser's console
    #[arg(long)]
    pub(crate) redirect_console_to_browser: bool,
    /// Load marimo's frontend from URL instead of this server; `{version}` becomes marimo's
    /// version, e.g. https://cdn.jsdelivr.net/npm/@marimo-team/frontend@{version}/dist
    #[arg(long, value_name = "URL")]
    pub(crate) asset_url: Option<String>,
    /// Restart a notebook when its file changes (checked every second); open pages reload
    #[arg(long)]
    pub(crate) watch: bool,
}

/// Options of the editor (edit and new).
#[derive(Debug, Args)]
pub(crate) struct EditorArgs {
    /// Shut the server down after this many minutes without a connection (no request and no
    /// open notebook)
    #[arg(long, value_name = "MINUTES", value_parser = parse_minutes)]
    pub(crate) timeout: Option<f64>,
}

/// Limits per notebook.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub(crate) struct LimitArgs {
    /// Cap each notebook's memory at SIZE (bytes, or with K, M, G or T: 512M, 2G); a notebook
    /// past it is restarted and its users are told why
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) memory_limit: Option<u64>,
    /// At most N concurrent sessions (browser tabs) per notebook; more get a 503 page
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_sessions: Option<u32>,
}

/// `--memory-limit`: bytes, or a number with K, M, G or T (powers of 1024, an optional `B` or
/// `iB` after them, any case): `2G`, `512MiB`, `1.5g`.
fn parse_size(raw: &str) -> Result<u64, String> {
    let bad = || format!("{raw:?} is not a size: give bytes or a number with K, M, G or T (2G)");
    let lower = raw.trim().to_ascii_lowercase();
    let number = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (number, shift) = match number.char_indices().last() {
        Some((at, unit @ ('k' | 'm' | 'g' | 't'))) => {
            let shift = match unit {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                _ => 40,
            };
            (&number[..at], shift)
        }
        _ => (number, 0),
    };
    let number = number.trim();
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(1 << shift).ok_or_else(bad)?
    } else {
        let value: f64 = number.parse().map_err(|_| bad())?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        bytes as u64
    };
    if bytes == 0 {
        return Err(format!("{raw:?}: the memory limit must be more than 0"));
    }
    Ok(bytes)
}

/// `--timeout`: minutes, as marimo takes them (a decimal number above 0).
fn parse_minutes(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(minutes) if minutes.is_finite() && minutes > 0.0 => Ok(minutes),
        _ => Err(format!("{raw:?} is not a number of minutes above 0")),
    }
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
    /// The address of a reverse proxy in front of this server, as marimo takes it
    /// (`host`, `host:port` or `https://host[:port][/path]`): the printed URL is the proxy's,
    /// and pages served through it are answered (its host name and origin are allowed)
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) proxy: Option<String>,
    #[command(flatten)]
    pub(crate) limits: LimitArgs,
    #[command(flatten)]
    pub(crate) ops: OpsArgs,
}

/// Operations: metrics, the admin page, the access log.
#[derive(Debug, Args)]
#[command(next_help_heading = "Operations")]
pub(crate) struct OpsArgs {
    /// Serve Prometheus metrics at `{base}/metrics`, to clients on this machine (and, with
    /// --metrics-token-file, to those presenting the token)
    #[arg(long)]
    pub(crate) metrics: bool,
    /// Also serve the metrics to clients sending `Authorization: Bearer TOKEN`, TOKEN read
    /// from FILE (`-` for standard input)
    #[arg(long, value_name = "FILE")]
    pub(crate) metrics_token_file: Option<PathBuf>,
    /// Serve the admin page at `{base}/_admin/` to clients presenting the token read from
    /// FILE (`-` for standard input), as `Authorization: Bearer TOKEN` or as the password a
    /// browser asks for
    #[arg(long, value_name = "FILE")]
    pub(crate) admin_token_file: Option<PathBuf>,
    /// Also serve the admin page to this signed-in user (repeatable; the name the identity
    /// provider or the trusted proxy gives)
    #[arg(long = "admin-user", value_name = "NAME")]
    pub(crate) admin_users: Vec<String>,
    /// Also serve the admin page to the signed-in members of this group (repeatable)
    #[arg(long = "admin-group", value_name = "GROUP")]
    pub(crate) admin_groups: Vec<String>,
    /// Write one JSON line per request to FILE (appended; `-` for standard output, after the
    /// URL line)
    #[arg(long, value_name = "FILE")]
    pub(crate) access_log: Option<PathBuf>,
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

/// Sign-in with an identity provider, access rules and the audit log.
#[derive(Clone, Debug, Args, Default)]
#[command(next_help_heading = "Identity")]
pub(crate) struct IdentityArgs {
    /// Sign in with the OpenID Connect provider at URL (its issuer, exactly as its discovery
    /// document states it); needs --oidc-client-id and --oidc-client-secret-file. Register
    /// {public URL}/auth/callback as the redirect URI
    #[arg(long, value_name = "URL", requires_all = ["oidc_client_id", "oidc_client_secret_file"])]
    pub(crate) oidc_issuer: Option<String>,
    /// The client id registered with the identity provider
    #[arg(long, value_name = "ID", requires = "oidc_issuer")]
    pub(crate) oidc_client_id: Option<String>,
    /// Read the client secret from FILE, `-` for standard input (one trailing newline is
    /// ignored); a secret is never taken as a flag value
    #[arg(long, value_name = "FILE|-", requires = "oidc_issuer")]
    pub(crate) oidc_client_secret_file: Option<PathBuf>,
    /// The scopes to ask the identity provider for, comma-separated [default:
    /// openid,profile,email]
    #[arg(
        long,
        value_name = "openid,email,…",
        value_delimiter = ',',
        requires = "oidc_issuer"
    )]
    pub(crate) oidc_scopes: Option<Vec<String>>,
    /// Where browsers reach this server (`https://marimo.example.com`), for the identity
    /// provider's redirect [default: http://HOST:PORT plus --base-url]
    #[arg(long, value_name = "URL")]
    pub(crate) public_url: Option<String>,
    /// Only this user may sign in to the server (repeatable; with --allow-group and
    /// --allow-email-domain, any one that matches is enough)
    #[arg(long = "allow-user", value_name = "NAME")]
    pub(crate) allow_users: Vec<String>,
    /// Only members of this group may sign in (repeatable)
    #[arg(long = "allow-group", value_name = "NAME")]
    pub(crate) allow_groups: Vec<String>,
    /// Only users with an email address at this domain may sign in (repeatable)
    #[arg(long = "allow-email-domain", value_name = "DOMAIN")]
    pub(crate) allow_email_domains: Vec<String>,
    /// Append the audit log (sign-ins, failed and limited attempts, sign-outs, refusals,
    /// notebook sessions) to FILE as JSON lines; never a token, code or secret
    #[arg(long, value_name = "FILE")]
    pub(crate) audit_log: Option<PathBuf>,
}

impl IdentityArgs {
    /// Whether any whole-server access rule is given.
    pub(crate) fn has_rules(&self) -> bool {
        !self.allow_users.is_empty()
            || !self.allow_groups.is_empty()
            || !self.allow_email_domains.is_empty()
    }
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
        assert_eq!(run.paths, [PathBuf::from("nb.py")]);
        let cli =
            Cli::try_parse_from(["marimo-rs", "run", "nb.py", "--auth", "--token=s3"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.auth.token, Some(Some("s3".to_owned())));
        assert!(run.auth.auth);
    }

    #[test]
    fn run_takes_several_paths_then_notebook_arguments_after_two_dashes() {
        let cli = Cli::try_parse_from([
            "marimo-rs",
            "run",
            "a.py",
            "dir",
            "--watch",
            "--",
            "--size",
            "10",
            "--watch",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.paths, [PathBuf::from("a.py"), PathBuf::from("dir")]);
        assert_eq!(run.args, ["--size", "10", "--watch"]);
        assert!(run.app.watch);
        assert!(
            Cli::try_parse_from(["marimo-rs", "run"]).is_err(),
            "a path is needed"
        );
    }

    #[test]
    fn paired_flags_take_the_last_one_given() {
        let run = |flags: &[&str]| {
            let cli =
                Cli::try_parse_from([&["marimo-rs", "run", "nb.py"], flags].concat()).unwrap();
            let Command::Run(run) = cli.command else {
                panic!("run")
            };
            run.app
        };
        let app = run(&["--no-skew-protection", "--skew-protection"]);
        assert!(app.skew_protection && !app.no_skew_protection);
        let app = run(&["--skew-protection", "--no-skew-protection"]);
        assert!(!app.skew_protection && app.no_skew_protection);
        let app = run(&["--show-tracebacks", "--no-show-tracebacks"]);
        assert!(!app.show_tracebacks && app.no_show_tracebacks);
    }

    #[test]
    fn sizes_take_binary_units_and_minutes_must_be_positive() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        for bad in ["", "G", "2X", "-1G", "0", "99999999999T", "nan"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_minutes("0.5"), Ok(0.5));
        for bad in ["0", "-1", "x", "inf"] {
            assert!(parse_minutes(bad).is_err(), "{bad}");
        }
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
