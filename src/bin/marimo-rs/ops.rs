//! The operations flags: `--metrics` (with `--metrics-token-file`), `--admin-token-file`,
//! `--admin-user`, `--admin-group` and `--access-log`, turned into the library's builder options.

use std::path::Path;

use marimo_rs::{AccessLog, Admin, AppBuilder, Metrics};

use crate::auth::read_token_file;
use crate::cli::{AuthArgs, IdentityArgs, OpsArgs};
use crate::error::CliError;

/// Refuses two flags that would both read standard input (`-`), before either reads it.
pub(crate) fn check_stdin(
    auth: &AuthArgs,
    identity: &IdentityArgs,
    args: &OpsArgs,
) -> Result<(), CliError> {
    let files = [
        ("--token-password-file", &auth.token_password_file),
        (
            "--oidc-client-secret-file",
            &identity.oidc_client_secret_file,
        ),
        ("--metrics-token-file", &args.metrics_token_file),
        ("--admin-token-file", &args.admin_token_file),
    ];
    let mut readers = files
        .iter()
        .filter(|(_, path)| path.as_deref() == Some(Path::new("-")))
        .map(|(flag, _)| *flag);
    match (readers.next(), readers.next()) {
        (Some(first), Some(second)) => Err(CliError::StdinTwice(first, second)),
        _ => Ok(()),
    }
}

/// `builder` with what `args` ask for.
pub(crate) fn configure(mut builder: AppBuilder, args: &OpsArgs) -> Result<AppBuilder, CliError> {
    if args.metrics {
        builder = builder.metrics(Metrics::new());
        if let Some(path) = &args.metrics_token_file {
            builder = builder.metrics_token(read_token_file(path, "--metrics-token-file")?);
        }
        tracing::info!("serving Prometheus metrics at {{base}}/metrics");
    } else if args.metrics_token_file.is_some() {
        return Err(CliError::MetricsTokenWithoutMetrics);
    }
    let signed_in_admins = !args.admin_users.is_empty() || !args.admin_groups.is_empty();
    if args.admin_token_file.is_some() || signed_in_admins {
        let mut admin = Admin::new()
            .users(args.admin_users.iter().cloned())
            .groups(args.admin_groups.iter().cloned());
        if let Some(path) = &args.admin_token_file {
            admin = admin.token(read_token_file(path, "--admin-token-file")?);
        }
        builder = builder.admin(admin);
        tracing::info!("serving the admin page at {{base}}/_admin/");
    }
    if let Some(path) = &args.access_log {
        builder = builder.access_log(access_log(path)?);
    }
    Ok(builder)
}

/// The access log at `path`, or standard output for `-`.
fn access_log(path: &Path) -> Result<AccessLog, CliError> {
    if path == Path::new("-") {
        return Ok(AccessLog::new(std::io::stdout()));
    }
    AccessLog::file(path).map_err(|source| CliError::AccessLog {
        path: path.to_owned(),
        source,
    })
}
