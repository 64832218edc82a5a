//! Errors a user can act on.

use std::path::PathBuf;

/// Why [`AppBuilder::build`](crate::AppBuilder::build) refused a configuration.
///
/// Every message names the offending value and says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A mount path is not `""`, `"/"` or `/segment[/segment…]`.
    #[error("invalid mount path {path:?}: {reason}")]
    InvalidMountPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two mounts were given the same path.
    #[error("mount path {path:?} is used twice: give each app its own path")]
    DuplicateMount {
        /// The path (normalised, `/` for the root).
        path: String,
    },
    /// A notebook file given to `with_app` does not exist or is not a file.
    #[error("notebook {path} does not exist or is not a file: check the path given to with_app")]
    NotebookNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// A directory given to `with_dynamic_directory` / `Mount::directory` does not exist or
    /// is not a directory.
    #[error(
        "notebook directory {path} does not exist or is not a directory: check the path given \
         to with_dynamic_directory"
    )]
    DirectoryNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// An allowed origin is not `scheme://host[:port]`.
    #[error(
        "invalid allowed origin {origin:?}: expected scheme://host[:port], such as \
         https://app.example.com (no path, no trailing text)"
    )]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
    },
    /// An allowed host is not a DNS name.
    #[error("invalid allowed host {host:?}: {reason}")]
    InvalidHost {
        /// The name as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name given to [`AppBuilder::replica_id`](crate::AppBuilder::replica_id) is not a
    /// [`ReplicaId`](crate::ReplicaId).
    #[error(transparent)]
    InvalidReplicaId(#[from] crate::replica::ReplicaIdError),
    /// A file system operation needed to set up notebook backends failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
