//! Mount paths: what `with_app`/`with_service` accept, checked once at build time.

use std::fmt;

use crate::error::BuildError;

/// A validated mount prefix: `""` for the root, otherwise `/a` or `/a/b` (no trailing slash).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MountPath(String);

impl MountPath {
    /// Checks a user-supplied mount path.
    ///
    /// `""` and `"/"` are the root. Other paths must start with `/`, have no empty, `.` or `..`
    /// segments, and use only URL path characters (RFC 3986 `pchar`, without `%`-escapes, so the
    /// prefix matches the raw request path exactly). A single trailing slash is dropped:
    /// `"/a/"` is `"/a"`, as in marimo.
    pub(crate) fn parse(raw: &str) -> Result<Self, BuildError> {
        let invalid = |reason: &'static str| BuildError::InvalidMountPath {
            path: raw.to_owned(),
            reason,
        };
        if raw.is_empty() || raw == "/" {
            return Ok(Self(String::new()));
        }
        if !raw.starts_with('/') {
            return Err(invalid("it must start with `/` (or be \"\" for the root)"));
        }
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        for segment in trimmed[1..].split('/') {
            match segment {
                "" => return Err(invalid("it has an empty segment (`//`)")),
                "." | ".." => return Err(invalid("it has a `.` or `..` segment")),
                _ => {}
            }
            if !segment.bytes().all(is_plain_pchar) {
                return Err(invalid(
                    "use only letters, digits and -._~!$&'()+,;=:@ in mount paths",
                ));
            }
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// `""` for the root mount, `/a/b` otherwise.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(if self.is_root() { "/" } else { &self.0 }, f)
    }
}

impl fmt::Display for MountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_root() { "/" } else { &self.0 })
    }
}

/// RFC 3986 `pchar` minus `%` (escapes) and minus `*` (matchit's wildcard marker).
fn is_plain_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_spellings() {
        assert!(MountPath::parse("").unwrap().is_root());
        assert!(MountPath::parse("/").unwrap().is_root());
    }

    #[test]
    fn trailing_slash_is_dropped() {
        assert_eq!(MountPath::parse("/a/b/").unwrap().as_str(), "/a/b");
        assert_eq!(MountPath::parse("/a").unwrap().as_str(), "/a");
    }

    #[test]
    fn invalid_paths_are_rejected_with_a_reason() {
        for bad in [
            "a", "a/b", "//", "/a//b", "/a/../b", "/..", "/.", "/a/./b", "/a b", "/a%2e", "/{x}",
            "/a/*", "/a\\b", "/a?x", "/a#x", "/é",
        ] {
            let err = MountPath::parse(bad).expect_err(bad);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{bad:?}")),
                "{message} should name {bad}"
            );
        }
    }
}
