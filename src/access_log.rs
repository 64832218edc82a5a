//! [`AccessLog`]: one JSON line per request, written where the host says, and the rule that
//! keeps credentials out of it ([`redacted_target`]).

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::sync::lock;

/// Query parameters whose values are credentials or one-time codes: marimo's `access_token`,
/// the sign-in link's and OpenID Connect's `code`, OpenID Connect's `state` and `id_token`,
/// and the names scripts use for tokens and passwords. Their values never reach the log.
const SECRET_PARAMS: [&str; 8] = [
    "access_token",
    "code",
    "state",
    "id_token",
    "token",
    "password",
    "session_state",
    "client_secret",
];

/// What a redacted value is replaced with.
const REDACTED: &str = "REDACTED";

/// An access log: one JSON line per request, in the order requests finish.
///
/// Give it to [`AppBuilder::access_log`](crate::AppBuilder::access_log). Each line has:
/// `time` (when the request arrived, RFC 3339, UTC), `client` (the peer's IP address, `null`
/// without [`RemoteAddr`](crate::RemoteAddr)), `user` (the name of the
/// [`User`](crate::User) the gateway's auth or an app-wide layer attached, else `null`),
/// `method`, `path` (path and query as sent, with the values of `access_token`, `code`,
/// `state`, `id_token`, `token`, `password`, `session_state` and `client_secret` replaced by
/// `REDACTED`), `status`, `bytes` (of the response body sent), `duration_ms` (until the
/// response body ended: for an event stream, when it closed) and `mount` (the mount path, or
/// `gateway` for the gateway's own endpoints and unmatched paths). Headers are never logged,
/// so neither are `Authorization`, cookies or the `Referer`.
///
/// ```
/// # fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::{create_app, AccessLog};
///
/// let app = create_app()
///     .with_app("/intro", "examples/notebooks/intro.py")
///     .access_log(AccessLog::new(std::io::stderr()))
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AccessLog {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl AccessLog {
    /// Writes each line to `writer` (with one `write_all` and a `flush` per line). A write
    /// error is logged (tracing, warning level), and the request is answered regardless.
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Box::new(writer))),
        }
    }

    /// Appends to the file at `path`, created if needed (readable by its owner only, like any
    /// log that names users and their addresses).
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub fn file(path: impl AsRef<Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self::new(file))
    }

    /// Writes `entry` as one line.
    pub(crate) fn write(&self, entry: &Entry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot format an access log line");
                return;
            }
        };
        line.push(b'\n');
        let mut writer = lock(&self.writer);
        if let Err(error) = writer.write_all(&line).and_then(|()| writer.flush()) {
            tracing::warn!(%error, "cannot write the access log");
        }
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// One request's line, serialized field by field in this order.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Entry<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub(crate) time: SystemTime,
    pub(crate) client: Option<IpAddr>,
    pub(crate) user: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    #[serde(rename = "duration_ms", serialize_with = "milliseconds")]
    pub(crate) duration: Duration,
    pub(crate) mount: &'a str,
}

/// RFC 3339, UTC, to the millisecond.
fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// Milliseconds to the microsecond.
fn milliseconds<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_micros() as f64 / 1000.0)
}

/// `path?query` with the value of every [`SECRET_PARAMS`] parameter replaced (names compared
/// after percent-decoding, so `access%5Ftoken` is caught too); the rest byte for byte.
pub(crate) fn redacted_target(path: &str, query: Option<&str>) -> String {
    let Some(query) = query else {
        return path.to_owned();
    };
    let mut target = String::with_capacity(path.len() + 1 + query.len());
    target.push_str(path);
    target.push('?');
    for (index, pair) in query.split('&').enumerate() {
        if index > 0 {
            target.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let decoded = form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(decoded, _)| decoded);
        let secret = decoded.is_some_and(|decoded| {
            SECRET_PARAMS
                .iter()
                .any(|param| decoded.eq_ignore_ascii_case(param))
        });
        if secret {
            target.push_str(name);
            target.push('=');
            target.push_str(REDACTED);
        } else {
            target.push_str(pair);
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_query_are_redacted_in_any_spelling() {
        assert_eq!(redacted_target("/a/", None), "/a/");
        assert_eq!(
            redacted_target("/a/", Some("access_token=s3cret&x=1")),
            "/a/?access_token=REDACTED&x=1"
        );
        assert_eq!(
            redacted_target("/auth/oidc/callback", Some("code=c0de&state=st4te&x")),
            "/auth/oidc/callback?code=REDACTED&state=REDACTED&x"
        );
        assert_eq!(
            redacted_target("/", Some("access%5Ftoken=s3cret&ACCESS_TOKEN=t&a=%20")),
            "/?access%5Ftoken=REDACTED&ACCESS_TOKEN=REDACTED&a=%20"
        );
        assert_eq!(redacted_target("/", Some("")), "/?");
        assert_eq!(redacted_target("/", Some("token")), "/?token=REDACTED");
    }

    #[test]
    fn a_line_is_one_json_object() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let log = AccessLog::new(sink.clone());
        log.write(&Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            client: Some("192.0.2.7".parse().unwrap()),
            user: Some("ada"),
            method: "GET",
            path: "/a/?x=1",
            status: 200,
            bytes: 12,
            duration: Duration::from_micros(1_234_567),
            mount: "/a",
        });
        let written = String::from_utf8(lock(&sink.0).clone()).unwrap();
        assert!(
            written.ends_with('\n') && written.lines().count() == 1,
            "{written}"
        );
        let line: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(line["time"], "1970-01-01T00:00:01.500Z");
        assert_eq!(line["client"], "192.0.2.7");
        assert_eq!(line["user"], "ada");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes"], 12);
        assert_eq!(line["duration_ms"], 1234.567);
        assert_eq!(line["mount"], "/a");
        assert!(format!("{log:?}").starts_with("AccessLog"));
    }
}
