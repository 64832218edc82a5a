//! Finding a Python that can run marimo, and installing one when there is none.
//!
//! Order (first that works wins):
//! 1. the builder option ([`AppBuilder::python`](crate::AppBuilder::python)),
//! 2. the `MARIMO_RS_PYTHON` environment variable,
//! 3. a managed virtualenv in the cache directory (`$MARIMO_RS_CACHE_DIR`, else
//!    `$XDG_CACHE_HOME/marimo-rs`, else `~/.cache/marimo-rs`), created on first use with
//!    `python3 -m venv` and `pip install marimo==`[`MARIMO_VERSION`] unless `MARIMO_RS_NO_INSTALL`
//!    is set,
//! 4. `python3` on `PATH`.
//!
//! An explicit choice (1 or 2) that lacks marimo is an error, never silently replaced. Each
//! interpreter is checked once per process; the result is cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Mutex;

use super::NotebookError;

/// The marimo version the managed virtualenv installs (and the one this crate is tested with).
pub const MARIMO_VERSION: &str = "0.25.2";

/// The oldest marimo whose `create_asgi_app` this crate's launcher supports.
const MIN_MARIMO: (u32, u32) = (0, 25);

/// A Python interpreter checked to have marimo and uvicorn.
#[derive(Debug)]
pub(crate) struct PythonEnv {
    /// The interpreter to run.
    pub(crate) python: PathBuf,
    /// `marimo.__version__`.
    pub(crate) marimo_version: String,
    /// marimo's bundled frontend (`marimo/_static`).
    pub(crate) static_dir: PathBuf,
}

type Cache = Mutex<HashMap<Option<PathBuf>, Result<Arc<PythonEnv>, NotebookError>>>;

/// Resolves the interpreter for `explicit` (the builder option), once per process.
pub(crate) async fn resolve(explicit: Option<&Path>) -> Result<Arc<PythonEnv>, NotebookError> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Held across the whole resolution: concurrent first requests wait for one install.
    let mut cache = cache.lock().await;
    let key = explicit.map(Path::to_path_buf);
    if let Some(found) = cache.get(&key) {
        return found.clone();
    }
    let found = discover(explicit).await.map(Arc::new);
    match &found {
        Ok(env) => tracing::info!(
            python = %env.python.display(),
            marimo = %env.marimo_version,
            "using Python for notebook backends"
        ),
        Err(error) => tracing::error!(%error, "no usable Python for notebook backends"),
    }
    cache.insert(key, found.clone());
    found
}

async fn discover(explicit: Option<&Path>) -> Result<PythonEnv, NotebookError> {
    if let Some(python) = explicit {
        return check(python, "the AppBuilder::python option").await;
    }
    if let Some(python) = std::env::var_os("MARIMO_RS_PYTHON").filter(|v| !v.is_empty()) {
        return check(Path::new(&python), "MARIMO_RS_PYTHON").await;
    }
    let managed = match cache_dir() {
        Some(dir) => managed_venv(&dir).await,
        None => Err(NotebookError::Provision {
            detail: "no cache directory: set MARIMO_RS_CACHE_DIR or HOME".into(),
        }),
    };
    match managed {
        Ok(env) => Ok(env),
        Err(managed_error) => {
            tracing::warn!(error = %managed_error, "managed virtualenv unavailable; trying python3 on PATH");
            check(Path::new("python3"), "python3 on PATH")
                .await
                .map_err(|path_error| NotebookError::NoPython {
                    tried: format!(
                        "managed virtualenv: {managed_error}; python3 on PATH: {path_error}"
                    ),
                })
        }
    }
}

/// Where the managed virtualenv lives.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    let from_env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env("MARIMO_RS_CACHE_DIR")
        .or_else(|| from_env("XDG_CACHE_HOME").map(|d| d.join("marimo-rs")))
        .or_else(|| from_env("HOME").map(|d| d.join(".cache").join("marimo-rs")))
}

/// The managed virtualenv `cache/marimo-<version>`, created under a file lock so that
/// concurrent processes (parallel test binaries) install it once.
async fn managed_venv(cache: &Path) -> Result<PythonEnv, NotebookError> {
    let venv = cache.join(format!("marimo-{MARIMO_VERSION}"));
    let python = venv.join("bin").join("python");
    let marker = venv.join(".marimo-rs-complete");
    if marker.exists() {
        return check(&python, "the managed virtualenv").await;
    }
    if std::env::var_os("MARIMO_RS_NO_INSTALL").is_some() {
        return Err(NotebookError::Provision {
            detail: format!(
                "{} is not installed and MARIMO_RS_NO_INSTALL is set",
                venv.display()
            ),
        });
    }
    let provision_error = |detail: String| NotebookError::Provision { detail };
    tokio::fs::create_dir_all(cache)
        .await
        .map_err(|e| provision_error(format!("cannot create {}: {e}", cache.display())))?;
    let lock_path = cache.join(".lock");
    let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let file = std::fs::File::create(lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| provision_error(e.to_string()))?
    .map_err(|e| provision_error(format!("cannot lock the cache directory: {e}")))?;

    // Another process may have finished while we waited for the lock.
    if !marker.exists() {
        install(&venv).await?;
        tokio::fs::write(&marker, MARIMO_VERSION)
            .await
            .map_err(|e| provision_error(format!("cannot write {}: {e}", marker.display())))?;
    }
    drop(lock);
    check(&python, "the managed virtualenv").await
}

async fn install(venv: &Path) -> Result<(), NotebookError> {
    tracing::info!(
        venv = %venv.display(),
        "installing marimo {MARIMO_VERSION} into a managed virtualenv (first run only, about 30 s)"
    );
    if venv.exists() {
        // A half-made environment from an interrupted install.
        let _ = tokio::fs::remove_dir_all(venv).await;
    }
    let venv_str = venv.to_string_lossy().into_owned();
    run_logged("python3", &["-m", "venv", &venv_str]).await?;
    let python = venv
        .join("bin")
        .join("python")
        .to_string_lossy()
        .into_owned();
    let requirement = format!("marimo=={MARIMO_VERSION}");
    run_logged(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            &requirement,
        ],
    )
    .await?;
    tracing::info!("marimo {MARIMO_VERSION} installed");
    Ok(())
}

/// Runs a provisioning command, relaying its output line by line to the log.
async fn run_logged(program: &str, args: &[&str]) -> Result<(), NotebookError> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NotebookError::Provision {
            detail: format!("cannot run `{command_line}`: {e}"),
        })?;
    let stdout = child.stdout.take().map(|out| relay(out, false));
    let stderr = child.stderr.take().map(|err| relay(err, true));
    let status = child.wait().await;
    let mut tail = Vec::new();
    for task in [stdout, stderr].into_iter().flatten() {
        tail.extend(task.await.unwrap_or_default());
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(NotebookError::Provision {
            detail: format!("`{command_line}` failed ({status}): {}", tail.join(" | ")),
        }),
        Err(e) => Err(NotebookError::Provision {
            detail: format!("`{command_line}` failed: {e}"),
        }),
    }
}

fn relay(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    is_stderr: bool,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut tail = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "marimo_rs::install", "{line}");
            if is_stderr {
                tail.push(line);
                if tail.len() > 5 {
                    tail.remove(0);
                }
            }
        }
        tail
    })
}

const PROBE: &str = r#"
import json, os, sys
out = {"python": sys.executable}
try:
    import marimo
    out["marimo"] = marimo.__version__
    out["static"] = os.path.join(os.path.dirname(marimo.__file__), "_static")
    import uvicorn
    out["uvicorn"] = uvicorn.__version__
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"#;

#[derive(serde::Deserialize)]
struct Probe {
    python: String,
    marimo: Option<String>,
    #[serde(rename = "static")]
    static_dir: Option<String>,
    error: Option<String>,
}

/// Checks that `python` runs and has a recent enough marimo (with uvicorn).
async fn check(python: &Path, source: &str) -> Result<PythonEnv, NotebookError> {
    let shown = python.display().to_string();
    let fix = format!(
        "run `{shown} -m pip install marimo=={MARIMO_VERSION}`, or set MARIMO_RS_PYTHON to a Python that has it"
    );
    let output = Command::new(python)
        .args(["-c", PROBE])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| NotebookError::PythonNotRunnable {
            python: shown.clone(),
            source_name: source.to_owned(),
            detail: e.to_string(),
        })?;
    let parsed: Option<Probe> = serde_json::from_slice(&output.stdout).ok();
    let Some(probe) = parsed.filter(|_| output.status.success()) else {
        return Err(NotebookError::PythonNotRunnable {
            python: shown,
            source_name: source.to_owned(),
            detail: String::from_utf8_lossy(&output.stderr)
                .trim()
                .chars()
                .take(300)
                .collect(),
        });
    };
    let missing = |detail: String| NotebookError::MarimoMissing {
        python: shown.clone(),
        detail,
        fix: fix.clone(),
    };
    if let Some(error) = probe.error {
        return Err(missing(error));
    }
    let version = probe.marimo.unwrap_or_default();
    if !is_supported(&version) {
        return Err(missing(format!(
            "it has marimo {version}; marimo_rs needs {}.{} or newer",
            MIN_MARIMO.0, MIN_MARIMO.1
        )));
    }
    if version != MARIMO_VERSION {
        tracing::warn!(python = %shown, %version, tested = MARIMO_VERSION, "untested marimo version");
    }
    Ok(PythonEnv {
        python: PathBuf::from(probe.python),
        marimo_version: version,
        static_dir: PathBuf::from(probe.static_dir.unwrap_or_default()),
    })
}

fn is_supported(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= MIN_MARIMO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_floor() {
        assert!(is_supported("0.25.2"));
        assert!(is_supported("0.26.0"));
        assert!(is_supported("1.0.0"));
        assert!(!is_supported("0.24.9"));
        assert!(!is_supported("garbage"));
    }

    #[tokio::test]
    async fn python_without_marimo_is_an_actionable_error() {
        // A real interpreter that cannot import marimo: `-I` isolation via a wrapper is not
        // needed, the system python3 on this machine has no marimo.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("python-without-marimo");
        std::fs::write(&fake, "#!/bin/sh\nexec python3 -S \"$@\"\n").unwrap();
        let mut permissions = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&fake, permissions).unwrap();
        let error = check(&fake, "test").await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("marimo is not installed"), "{message}");
        assert!(message.contains("pip install marimo==0.25.2"), "{message}");
        assert!(message.contains(&fake.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn missing_interpreter_is_named() {
        let error = check(Path::new("/nonexistent/python"), "MARIMO_RS_PYTHON")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/nonexistent/python"), "{message}");
        assert!(message.contains("MARIMO_RS_PYTHON"), "{message}");
    }
}
