//! Files on disk: notebooks (checking them, creating new ones), and files that hold a secret.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// `path` if it is an existing file.
pub(crate) fn existing(path: &Path) -> Result<PathBuf, CliError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(path.to_owned()),
        Ok(_) => Err(CliError::NotAFile {
            path: path.to_owned(),
            hint: "`marimo-rs serve --dir` serves a directory",
        }),
        Err(_) => Err(CliError::NotebookNotFound(path.to_owned())),
    }
}

/// `path` for the editor: an existing file, or a new empty one (marimo opens an empty file
/// as a new notebook and writes it on the first save), like `marimo edit new.py`.
pub(crate) fn existing_or_created(path: &Path) -> Result<PathBuf, CliError> {
    if path.is_dir() {
        return Err(CliError::NotAFile {
            path: path.to_owned(),
            hint: "the editor opens one notebook",
        });
    }
    if path.exists() {
        return Ok(path.to_owned());
    }
    match create(path) {
        Ok(()) => Ok(path.to_owned()),
        // Created by someone else in the meantime: open it.
        Err(CliError::NotebookExists(_)) => Ok(path.to_owned()),
        Err(error) => Err(error),
    }
}

/// A new empty notebook at `path`, or in the current directory under the first free name of
/// `new_notebook.py`, `new_notebook_1.py`, `new_notebook_2.py`, …
pub(crate) fn new(path: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = path {
        create(path)?;
        return Ok(path.to_owned());
    }
    let mut name = PathBuf::from("new_notebook.py");
    let mut number = 0u64;
    loop {
        match create(&name) {
            Ok(()) => return Ok(name),
            Err(CliError::NotebookExists(_)) => {
                number += 1;
                name = PathBuf::from(format!("new_notebook_{number}.py"));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Creates `path` empty; never overwrites.
fn create(path: &Path) -> Result<(), CliError> {
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {
            tracing::info!(notebook = %path.display(), "created a new notebook");
            Ok(())
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            Err(CliError::NotebookExists(path.to_owned()))
        }
        Err(source) => Err(CliError::CreateNotebook {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The secret in `path` (`-`: standard input) without one trailing newline (`\n` or `\r\n`):
/// how tokens and client secrets are given, so that they stay out of `ps`.
pub(crate) fn read_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut secret = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut secret)?;
    } else {
        secret = std::fs::read(path)?;
    }
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    Ok(secret)
}
