//! The operations flags: `--metrics` (with `--metrics-token-file`), `--admin-token-file` and
//! `--access-log`, turned into the library's builder options.

use std::path::{Path, PathBuf};

use marimo_rs::{AccessLog, Admin, AppBuilder, Metrics};

use crate::auth::read_token_file;
use crate::cli::OpsArgs;
use crate::error::CliError;

/// `builder` with what `args` ask for. `stdin_taken` names the flag that already reads
/// standard input, if one does: only one file may be `-`.
pub(crate) fn configure(
    mut builder: AppBuilder,
    args: &OpsArgs,
    mut stdin_taken: Option<&'static str>,
) -> Result<AppBuilder, CliError> {
    let mut token = |path: &Path, flag: &'static str| {
        if path == Path::new("-") {
            if let Some(other) = stdin_taken.replace(flag) {
                return Err(CliError::StdinTwice(other, flag));
            }
        }
        read_token_file(path, flag)
    };
    if args.metrics {
        builder = builder.metrics(Metrics::new());
        if let Some(path) = &args.metrics_token_file {
            builder = builder.metrics_token(token(path, "--metrics-token-file")?);
        }
        tracing::info!("serving Prometheus metrics at {{base}}/metrics");
    } else if args.metrics_token_file.is_some() {
        return Err(CliError::MetricsTokenWithoutMetrics);
    }
    if let Some(path) = &args.admin_token_file {
        let admin_token = token(path, "--admin-token-file")?;
        builder = builder.admin(Admin::new().token(admin_token));
        tracing::info!("serving the admin page at {{base}}/_admin/");
    }
    if let Some(path) = &args.access_log {
        builder = builder.access_log(access_log(path)?);
    }
    Ok(builder)
}

/// The access log at `path`, or standard output for `-`.
fn access_log(path: &PathBuf) -> Result<AccessLog, CliError> {
    if path == Path::new("-") {
        return Ok(AccessLog::new(std::io::stdout()));
    }
    AccessLog::file(path).map_err(|source| CliError::AccessLog {
        path: path.clone(),
        source,
    })
}
