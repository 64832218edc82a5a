//! The `marimo-rs` command: `marimo run/edit/new` served through the marimo_rs gateway.
//!
//! ```text
//! marimo-rs run my_notebook.py --auth --token="sup3rs3cr3t"
//! marimo-rs serve --app /=index.py --app /dashboard=dashboard.py --dir /apps=notebooks
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
mod error;
mod files;
mod server;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::validate(&cli);
    init_logging(cli.command.server().log_level);
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

/// Logs to standard error: `--log-level` if given, else `RUST_LOG`, else `info`.
fn init_logging(level: Option<cli::LogLevel>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level.as_str()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
