//! [`ReplicaId`]: the name a replica answers with, so that one can tell behind a load balancer
//! which replica served a response.

use std::fmt;
use std::str::FromStr;

use http::{HeaderName, HeaderValue};

/// The response header that names the replica (see [`AppBuilder::replica_id`](crate::AppBuilder::replica_id)).
pub(crate) const REPLICA_HEADER: HeaderName = HeaderName::from_static("x-marimo-rs-replica");

/// The longest replica name, in characters.
const MAX_LEN: usize = 64;

/// The name of one replica, sent in the `x-marimo-rs-replica` response header: 1 to 64
/// visible ASCII characters (no spaces), so that it fits in a header and in a log line.
///
/// The one rule for [`AppBuilder::replica_id`](crate::AppBuilder::replica_id) and the
/// `marimo-rs --replica-id` flag.
///
/// ```
/// use marimo_rs::ReplicaId;
///
/// let id = ReplicaId::new("replica-1")?;
/// assert_eq!(id.as_str(), "replica-1");
/// assert!(ReplicaId::new("two words").is_err());
/// assert!(ReplicaId::new("x".repeat(65)).is_err());
/// # Ok::<_, marimo_rs::ReplicaIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReplicaId(HeaderValue);

/// Why [`ReplicaId::new`] refused a name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid replica id {given:?}: use 1 to 64 visible ASCII characters (no spaces)")]
pub struct ReplicaIdError {
    given: String,
}

impl ReplicaId {
    /// Checks `id` (see [`ReplicaId`]).
    ///
    /// # Errors
    ///
    /// [`ReplicaIdError`] when `id` is empty, longer than 64 characters, or holds anything but
    /// visible ASCII.
    pub fn new(id: impl Into<String>) -> Result<Self, ReplicaIdError> {
        let id = id.into();
        let valid =
            !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_graphic());
        match HeaderValue::try_from(id.as_str()) {
            Ok(value) if valid => Ok(Self(value)),
            _ => Err(ReplicaIdError { given: id }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The header value that carries it.
    pub(crate) fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl FromStr for ReplicaId {
    type Err = ReplicaIdError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        Self::new(id)
    }
}

impl From<ReplicaId> for String {
    fn from(id: ReplicaId) -> Self {
        id.as_str().to_owned()
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
