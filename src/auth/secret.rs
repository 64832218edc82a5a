//! The installation secret: 32 random bytes in a file only its owner can read, under the cache
//! directory, made by the first start and read by every later one.
//!
//! It keys run-mode tokens when no `MARIMO_RS_SECRET` is given, so that a token stays the same
//! across restarts without being computable from the notebook's code alone.
//!
//! Concurrent first starts agree on one secret: each writes its candidate to a private
//! temporary file (mode 0600) in the same directory and hard-links it to the final name,
//! which fails if the name exists; the losers read the winner's file. A reader therefore never
//! sees a partly written file.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::token::fill_random;

/// The file's name in the cache directory.
pub(crate) const FILE_NAME: &str = "installation-secret";

/// The secret's length in bytes.
const LEN: usize = 32;

/// Why the installation secret cannot be used, from [`Token::from_code_env`].
///
/// [`Token::from_code_env`]: crate::Token::from_code_env
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// There is no cache directory to keep the secret in.
    #[error(
        "no cache directory for the installation secret: set MARIMO_RS_CACHE_DIR (or HOME), \
         or give a shared secret in MARIMO_RS_SECRET"
    )]
    NoCacheDir,
    /// The file or its directory cannot be read or created.
    #[error("cannot read or create the installation secret {}: {source}", .path.display())]
    Io {
        /// The secret's file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a regular file (a symbolic link, a directory…).
    #[error(
        "the installation secret {} is not a regular file: remove it, and a new secret is made \
         (tokens derived from the old one stop working)",
        .path.display()
    )]
    NotAFile {
        /// The secret's file.
        path: PathBuf,
    },
    /// Other users may read (or write) the file.
    #[error(
        "the installation secret {} is open to other users (mode {mode:o}): `chmod 600` it, or \
         remove it and a new secret is made (tokens derived from the old one stop working)",
        .path.display()
    )]
    Exposed {
        /// The secret's file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold exactly 32 bytes.
    #[error(
        "the installation secret {} holds {len} bytes instead of 32 bytes: remove it, and a new \
         secret is made (tokens derived from the old one stop working)",
        .path.display()
    )]
    WrongSize {
        /// The secret's file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

/// The installation secret kept in `dir`, made now if there is none.
pub(crate) fn load_or_create(dir: &Path) -> Result<[u8; LEN], SecretError> {
    let path = dir.join(FILE_NAME);
    match read(&path) {
        Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        found => return found,
    }
    let io_error = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error)?;
    let mut secret = [0u8; LEN];
    fill_random(&mut secret);
    // Removed when dropped, whatever happens; the final name is a second link to it.
    let mut candidate = tempfile::Builder::new()
        .prefix(".installation-secret.")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io_error)?;
    candidate
        .write_all(&secret)
        .and_then(|()| candidate.as_file().sync_all())
        .map_err(io_error)?;
    match fs::hard_link(candidate.path(), &path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the installation secret");
            Ok(secret)
        }
        // Another start made it first: use theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => read(&path),
        Err(error) => Err(io_error(error)),
    }
}

/// Reads the secret at `path`, refusing a file that is not a private regular file of 32 bytes.
fn read(path: &Path) -> Result<[u8; LEN], SecretError> {
    let io_error = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    let not_a_file = || SecretError::NotAFile {
        path: path.to_owned(),
    };
    // A symbolic link is refused rather than followed: the secret must be this very file.
    if !fs::symlink_metadata(path).map_err(io_error)?.is_file() {
        return Err(not_a_file());
    }
    let mut file = File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(not_a_file());
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    if metadata.len() != LEN as u64 {
        return Err(SecretError::WrongSize {
            path: path.to_owned(),
            len: metadata.len(),
        });
    }
    let mut secret = [0u8; LEN];
    file.read_exact(&mut secret).map_err(io_error)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("new").join("cache");
        let made = load_or_create(&cache).unwrap();
        let path = cache.join(FILE_NAME);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&cache), 0o700, "a directory it creates is private");
        assert_eq!(fs::read(&path).unwrap(), made);
        assert_eq!(load_or_create(&cache).unwrap(), made);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), made);
        let names: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temporary file is left");
    }

    #[test]
    fn concurrent_first_starts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let secrets: Vec<_> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(dir.path()).unwrap()))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|secret| *secret == secrets[0]));
        assert_eq!(fs::read(dir.path().join(FILE_NAME)).unwrap(), secrets[0]);
    }

    #[test]
    fn exposed_short_and_odd_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, [1u8; 32]).unwrap();
        for exposed in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(exposed)).unwrap();
            let error = load_or_create(dir.path()).unwrap_err();
            assert!(
                matches!(error, SecretError::Exposed { mode, .. } if mode == exposed),
                "{error}"
            );
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            [1u8; 32],
            "read-only is fine"
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        for len in [0, 31, 33] {
            fs::write(&path, vec![1u8; len]).unwrap();
            let error = load_or_create(dir.path()).unwrap_err();
            assert!(matches!(error, SecretError::WrongSize { .. }), "{error}");
            assert!(error.to_string().contains(&format!("holds {len} bytes")));
        }
        assert_eq!(
            fs::read(&path).unwrap().len(),
            33,
            "a bad file is never replaced"
        );

        fs::remove_file(&path).unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, [2u8; 32]).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let error = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, SecretError::NotAFile { .. }), "{error}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let error = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, SecretError::NotAFile { .. }), "{error}");
    }
}
