//! The `marimo-rs` command: `marimo run/edit/new` served through the marimo_rs gateway.
//!
//! ```text
//! marimo-rs run my_notebook.py --auth --token="sup3rs3cr3t"
//! marimo-rs serve --app /=index.py --app /dashboard=dashboard.py --dir /apps=notebooks
//! marimo-rs serve --config marimo-rs.toml       # identity provider, access rules, audit log
//! marimo-rs edit my_notebook.py
//! marimo-rs new
//! ```
//!
//! Standard output gets exactly one line, the URL to open, once the server is listening.
//! The browser (without `--headless`) is opened with a one-time sign-in link instead, so the
//! token never appears in another process's command line or the browser's history.
//! Logs go to standard error and never contain the token. Errors are one `error: …` line and
//! exit status 1 (2 for usage errors).

mod auth;
mod cli;
mod config;
mod error;
mod files;
mod identity;
mod ops;
mod server;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::cli::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    // Parsed through `ArgMatches`, which tell the flags given from clap's defaults: a setting
    // of `--config` yields to a flag given, not to a default.
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    cli::validate(&cli);
    let ready = config::apply(&mut cli, &matches).and_then(|()| {
        init_logging(
            cli.command.server().log_level,
            cli.command.identity().audit_log.as_deref(),
        )
    });
    if let Err(error) = ready {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let runtime = runtime().map_err(CliError::Runtime)?;
    runtime.block_on(server::run(cli.command))
}

/// Tokio's runtime for this machine. With at most two CPUs, which the gateway shares with its
/// Python backends, one thread: a proxied request then wakes one thread, not two that hand
/// work to each other (measured in BENCHMARKS.md: fewer context switches per request, less
/// CPU). With more, the multi-threaded scheduler, one worker per CPU. Compression of the
/// frontend files runs on blocking threads either way.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus <= 2 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Logs to standard error: `--log-level` if given, else `RUST_LOG`, else `info`; and, with
/// `--audit-log FILE`, the audit events (`marimo_rs::audit`, whatever the level) to FILE as
/// JSON lines (created `0600`, appended to).
fn init_logging(level: Option<cli::LogLevel>, audit_log: Option<&Path>) -> Result<(), CliError> {
    let filter = match level {
        Some(level) => EnvFilter::new(level.as_str()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let audit = match audit_log {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| CliError::AuditLog {
                    path: path.to_owned(),
                    source,
                })?;
            let events = tracing_subscriber::filter::Targets::new()
                .with_target("marimo_rs::audit", tracing::Level::INFO);
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(events),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(audit)
        .init();
    Ok(())
}
