//! Which token, if any, the server requires: the authentication flags resolved.

use std::path::{Path, PathBuf};

use marimo_rs::Token;

use crate::cli::AuthArgs;
use crate::error::CliError;

/// The server secret replicas share (`MARIMO_RS_SECRET`), and the secrets it replaced whose
/// sessions are still accepted (`MARIMO_RS_OLD_SECRETS`, comma-separated). Both are taken as
/// bytes, as given (not trimmed).
pub(crate) struct Secrets {
    pub(crate) current: Vec<u8>,
    pub(crate) old: Vec<Vec<u8>>,
}

const OLD_SECRETS_ENV: &str = "MARIMO_RS_OLD_SECRETS";

/// The secrets from the environment, `None` when `MARIMO_RS_SECRET` is unset or empty.
pub(crate) fn secrets_from_env() -> Result<Option<Secrets>, CliError> {
    parse_secrets(
        std::env::var_os("MARIMO_RS_SECRET"),
        std::env::var_os(OLD_SECRETS_ENV),
    )
}

fn parse_secrets(
    current: Option<std::ffi::OsString>,
    old: Option<std::ffi::OsString>,
) -> Result<Option<Secrets>, CliError> {
    let old: Vec<Vec<u8>> = old
        .as_ref()
        .map(|old| {
            old.as_encoded_bytes()
                .split(|&b| b == b',')
                .filter(|secret| !secret.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    let current = current.filter(|secret| !secret.is_empty());
    let Some(current) = current else {
        if old.is_empty() {
            return Ok(None);
        }
        return Err(CliError::Secrets(
            "MARIMO_RS_OLD_SECRETS is set but MARIMO_RS_SECRET is not: set MARIMO_RS_SECRET to \
             the new secret",
        ));
    };
    if old.len() > 4 {
        return Err(CliError::Secrets(
            "MARIMO_RS_OLD_SECRETS lists more than 4 secrets: keep only those whose sessions \
             may still be in use (a session lasts 14 days)",
        ));
    }
    Ok(Some(Secrets {
        current: current.as_encoded_bytes().to_vec(),
        old,
    }))
}

/// The tokens the old secrets gave, still accepted during a rotation: only when `token` is the
/// one derived from the code with the current secret (a `--token` without value).
pub(crate) fn old_tokens(
    token: Option<&Token>,
    generated: Generated<'_>,
    secrets: Option<&Secrets>,
) -> Result<Vec<Token>, CliError> {
    let (Some(token), Some(secrets), Generated::FromCode { apps, dirs }) =
        (token, secrets, generated)
    else {
        return Ok(Vec::new());
    };
    if secrets.old.is_empty() {
        return Ok(Vec::new());
    }
    let code = code_of(apps, dirs)?;
    let current = Token::from_code_with_secret(&code, &secrets.current);
    if current.expose_secret() != token.expose_secret() {
        return Ok(Vec::new());
    }
    Ok(secrets
        .old
        .iter()
        .map(|old| Token::from_code_with_secret(&code, old))
        .collect())
}

/// How a token is generated when the flags ask for one without giving it.
#[derive(Clone, Copy)]
pub(crate) enum Generated<'a> {
    /// `marimo edit`: random, new on every start.
    Random,
    /// `marimo run`: derived from the code of what is served, stable across restarts.
    FromCode {
        apps: &'a [(String, PathBuf)],
        dirs: &'a [(String, PathBuf)],
    },
}

/// The token the server requires, or `None` for an open server.
///
/// `on_by_default` is marimo's default for the command: on for the editor, off for apps.
pub(crate) fn resolve(
    args: &AuthArgs,
    on_by_default: bool,
    generated: Generated<'_>,
) -> Result<Option<Token>, CliError> {
    if args.no_token {
        return Ok(None);
    }
    if let Some(Some(value)) = &args.token {
        warn_visible("--token=VALUE");
        return non_empty(value.clone(), "--token").map(Some);
    }
    if let Some(value) = &args.token_password {
        warn_visible("--token-password");
        return non_empty(value.clone(), "--token-password").map(Some);
    }
    if let Some(path) = &args.token_password_file {
        return read_token_file(path, "--token-password-file").map(Some);
    }
    if args.token.is_some() || args.auth || on_by_default {
        return generate(generated).map(Some);
    }
    Ok(None)
}

/// A token given as an argument is in `/proc/PID/cmdline`, which every local user can read.
fn warn_visible(flag: &str) {
    tracing::warn!(
        "the token given with {flag} is visible to other local users (ps, /proc/PID/cmdline): \
         pass it with --token-password-file FILE (or - for standard input) instead"
    );
}

fn non_empty(value: String, from: &'static str) -> Result<Token, CliError> {
    if value.is_empty() {
        return Err(CliError::EmptyToken(from));
    }
    Ok(Token::new(value))
}

/// Reads the token that `flag` names from `path` (`-`: standard input), without one trailing
/// newline.
pub(crate) fn read_token_file(path: &Path, flag: &'static str) -> Result<Token, CliError> {
    let error = |source| CliError::TokenFile {
        flag,
        path: path.to_owned(),
        source,
    };
    let value = crate::files::read_secret(path).map_err(error)?;
    let value = String::from_utf8(value).map_err(|_| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })?;
    non_empty(value, flag)
}

fn generate(generated: Generated<'_>) -> Result<Token, CliError> {
    match generated {
        Generated::Random => Ok(Token::random()),
        Generated::FromCode { apps, dirs } => Ok(Token::from_code_env(&code_of(apps, dirs)?)?),
    }
}

/// The text a code-derived token is computed from.
///
/// One notebook alone: its code, so `serve --app /=nb.py` and `run nb.py` share a token.
/// Otherwise every notebook with its mount path, sorted by mount path so the order of the
/// flags does not matter; a directory contributes each notebook it holds now.
fn code_of(apps: &[(String, PathBuf)], dirs: &[(String, PathBuf)]) -> Result<String, CliError> {
    if let ([(_, notebook)], []) = (apps, dirs) {
        return read(notebook);
    }
    let mut entries = Vec::new();
    for (mount, notebook) in apps {
        entries.push((format!("app\0{}", normal(mount)), read(notebook)?));
    }
    for (mount, directory) in dirs {
        for (relative, file) in notebooks_in(directory) {
            entries.push((format!("dir\0{}\0{relative}", normal(mount)), read(&file)?));
        }
    }
    entries.sort();
    let mut material = String::from("marimo-rs serve\0");
    for (key, code) in entries {
        material.push_str(&key);
        material.push('\0');
        material.push_str(&code.len().to_string());
        material.push('\0');
        material.push_str(&code);
    }
    Ok(material)
}

fn normal(mount: &str) -> &str {
    mount.trim_end_matches('/')
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::ReadNotebook {
        path: path.to_owned(),
        source,
    })
}

/// The notebooks a dynamic directory serves: `.py` files whose name does not start with `_`,
/// in subdirectories too (skipping hidden and `_` directories such as `.venv` and
/// `__pycache__`), as `/`-separated relative paths, sorted.
fn notebooks_in(directory: &Path) -> Vec<(String, PathBuf)> {
    const MAX_DEPTH: usize = 8;
    let mut found = Vec::new();
    let mut pending = vec![(directory.to_owned(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(['.', '_']) {
                continue;
            }
            let path = entry.path();
            let relative = format!("{prefix}{name}");
            if path.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push((path, format!("{relative}/"), depth + 1));
                }
            } else if name.ends_with(".py") {
                found.push((relative, path));
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AuthArgs {
        AuthArgs {
            token: None,
            auth: false,
            token_password: None,
            token_password_file: None,
            no_token: false,
        }
    }

    #[test]
    fn defaults_follow_marimo() {
        assert!(resolve(&args(), false, Generated::Random)
            .unwrap()
            .is_none());
        assert!(resolve(&args(), true, Generated::Random).unwrap().is_some());
        let off = AuthArgs {
            no_token: true,
            ..args()
        };
        assert!(resolve(&off, true, Generated::Random).unwrap().is_none());
    }

    #[test]
    fn a_given_token_wins_and_must_not_be_empty() {
        let given = AuthArgs {
            token: Some(Some("sup3rs3cr3t".into())),
            auth: true,
            ..args()
        };
        let token = resolve(&given, false, Generated::Random).unwrap().unwrap();
        assert_eq!(token.expose_secret(), "sup3rs3cr3t");
        let empty = AuthArgs {
            token_password: Some(String::new()),
            ..args()
        };
        assert!(matches!(
            resolve(&empty, false, Generated::Random),
            Err(CliError::EmptyToken("--token-password"))
        ));
    }

    #[test]
    fn secrets_come_as_given_and_old_ones_need_a_current_one() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert!(parse_secrets(None, None).unwrap().is_none());
        assert!(parse_secrets(os(""), os("")).unwrap().is_none());
        let secrets = parse_secrets(os(" new "), os("a,,b")).unwrap().unwrap();
        assert_eq!(secrets.current, b" new ");
        assert_eq!(secrets.old, [b"a".to_vec(), b"b".to_vec()]);
        assert!(matches!(
            parse_secrets(None, os("a")),
            Err(CliError::Secrets(_))
        ));
        assert!(matches!(
            parse_secrets(os("n"), os("a,b,c,d,e")),
            Err(CliError::Secrets(_))
        ));
    }

    #[test]
    fn old_tokens_follow_a_token_derived_with_the_current_secret() {
        let dir = tempfile::tempdir().unwrap();
        let notebook = dir.path().join("a.py");
        std::fs::write(&notebook, "import marimo\n").unwrap();
        let apps = [("/".to_owned(), notebook)];
        let generated = Generated::FromCode {
            apps: &apps,
            dirs: &[],
        };
        let secrets = Secrets {
            current: b"new".to_vec(),
            old: vec![b"old".to_vec()],
        };
        let derived = Token::from_code_with_secret("import marimo\n", b"new");
        let old = old_tokens(Some(&derived), generated, Some(&secrets)).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(
            old[0].expose_secret(),
            Token::from_code_with_secret("import marimo\n", b"old").expose_secret()
        );
        let given = Token::new("given");
        assert!(old_tokens(Some(&given), generated, Some(&secrets))
            .unwrap()
            .is_empty());
        assert!(
            old_tokens(Some(&derived), Generated::Random, Some(&secrets))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn code_tokens_ignore_flag_order_and_follow_the_code() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.py");
        let b = dir.path().join("b.py");
        std::fs::write(&a, "import marimo\n# a\n").unwrap();
        std::fs::write(&b, "import marimo\n# b\n").unwrap();
        let one = [("/a".to_owned(), a.clone()), ("/b".to_owned(), b.clone())];
        let two = [("/b/".to_owned(), b.clone()), ("/a".to_owned(), a.clone())];
        assert_eq!(code_of(&one, &[]).unwrap(), code_of(&two, &[]).unwrap());
        let swapped = [("/a".to_owned(), b.clone()), ("/b".to_owned(), a.clone())];
        assert_ne!(code_of(&one, &[]).unwrap(), code_of(&swapped, &[]).unwrap());
        // A single notebook: its code, as in run mode.
        assert_eq!(code_of(&one[..1], &[]).unwrap(), "import marimo\n# a\n");
        // A directory contributes the notebooks it holds.
        let dirs = [("/d".to_owned(), dir.path().to_owned())];
        let before = code_of(&[], &dirs).unwrap();
        std::fs::write(dir.path().join("_private.py"), "ignored").unwrap();
        assert_eq!(code_of(&[], &dirs).unwrap(), before);
        std::fs::write(&b, "import marimo\n# changed\n").unwrap();
        assert_ne!(code_of(&[], &dirs).unwrap(), before);
    }
}
