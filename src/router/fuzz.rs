//! Mount paths and the router under fuzzing (see `crate::__fuzz`; not API).
//!
//! [`router`] routes a request through a real [`Router`] and compares the outcome with a
//! naive longest-prefix search over the mount paths: a differential test of the `matchit`
//! table against the rule it implements.

use std::convert::Infallible;

use futures_util::FutureExt as _;
use http::{header, Request, Response, StatusCode, Uri};
use tower::util::ServiceExt;

use super::Router;
use crate::mount::{MountPath, MountService};
use crate::request::{MountPrefix, OriginalUri};
use crate::Body;

/// Parses `data` as a mount path and checks what an accepted path looks like: `""` or
/// `/seg[/seg…]` of plain URL characters, no empty, `.` or `..` segment, and parsing it again
/// gives the same path.
pub fn mount_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = match MountPath::parse(text) {
        Ok(path) => path,
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains(&format!("{text:?}")), "{message}");
            return;
        }
    };
    let shown = path.as_str();
    if path.is_root() {
        assert!(text.is_empty() || text == "/", "{text:?} is the root");
        return;
    }
    assert!(shown.starts_with('/') && !shown.ends_with('/'), "{shown:?}");
    assert!(
        text == shown || text.strip_suffix('/') == Some(shown),
        "{text:?} -> {shown:?}"
    );
    for segment in shown[1..].split('/') {
        assert!(!matches!(segment, "" | "." | ".."), "{shown:?}");
        assert!(
            segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@".contains(&b)),
            "{shown:?}"
        );
    }
    assert_eq!(MountPath::parse(shown).ok().as_ref(), Some(&path));
    assert_eq!(
        MountPath::parse(&path.to_string()).ok().as_ref(),
        Some(&path)
    );
}

/// Builds a router from the mount paths on the first lines of `data` (invalid and repeated
/// ones skipped, at most 8) and routes a `GET` for the last line; panics if the outcome is not
/// what the naive rule says.
pub fn router(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<&str> = text.split('\n').collect();
    let target = lines.pop().unwrap_or_default();
    let mut mounts: Vec<MountPath> = Vec::new();
    for line in lines.into_iter().take(8) {
        if let Ok(path) = MountPath::parse(line) {
            if !mounts.contains(&path) {
                mounts.push(path);
            }
        }
    }
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    check_route(&mounts, &uri);
}

/// What the request reached, recorded by the mount services.
#[derive(Clone, Debug)]
struct Seen {
    mount: usize,
    uri: Uri,
    prefix: Option<MountPrefix>,
    original: Option<OriginalUri>,
}

fn recorder(mount: usize) -> MountService {
    MountService::new(tower::service_fn(move |req: Request<Body>| {
        let seen = Seen {
            mount,
            uri: req.uri().clone(),
            prefix: req.extensions().get::<MountPrefix>().cloned(),
            original: req.extensions().get::<OriginalUri>().cloned(),
        };
        let mut response = Response::new(Body::empty());
        response.extensions_mut().insert(seen);
        std::future::ready(Ok::<_, Infallible>(response))
    }))
}

/// The naive rule: the longest mount `m` with `path == m` (redirect) or `path` starting with
/// `m/` (forward), else the root mount, else nothing.
fn expected(mounts: &[MountPath], path: &str) -> Option<(usize, bool)> {
    let mut best: Option<(usize, usize, bool)> = None;
    for (index, mount) in mounts.iter().enumerate() {
        let prefix = mount.as_str();
        if mount.is_root() {
            continue;
        }
        let exact = path == prefix;
        let under = path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/';
        if (exact || under) && best.is_none_or(|(_, length, _)| prefix.len() > length) {
            best = Some((index, prefix.len(), exact));
        }
    }
    match best {
        Some((index, _, exact)) => Some((index, exact)),
        None => mounts
            .iter()
            .position(MountPath::is_root)
            .map(|index| (index, false)),
    }
}

fn check_route(mounts: &[MountPath], uri: &Uri) {
    let table = mounts
        .iter()
        .enumerate()
        .map(|(index, path)| (path.clone(), recorder(index)))
        .collect();
    let router = Router::new(table).expect("distinct valid mount paths always build");
    let request = Request::get(uri.clone())
        .body(Body::empty())
        .expect("a valid request");
    let response = router
        .oneshot(request)
        .now_or_never()
        .expect("the recorders answer at once")
        .unwrap_or_else(|never| match never {});
    let path = uri.path();
    let status = response.status();
    let seen = response.extensions().get::<Seen>().cloned();
    match expected(mounts, path) {
        None => {
            assert_eq!(status, StatusCode::NOT_FOUND, "{path:?} in {mounts:?}");
            assert!(seen.is_none());
        }
        Some((index, true)) => {
            assert_eq!(
                status,
                StatusCode::TEMPORARY_REDIRECT,
                "{path:?} in {mounts:?}"
            );
            assert!(seen.is_none());
            let last = mounts[index]
                .as_str()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let location = match uri.query() {
                Some(query) => format!("{last}/?{query}"),
                None => format!("{last}/"),
            };
            assert_eq!(
                response.headers()[header::LOCATION].as_bytes(),
                location.as_bytes()
            );
        }
        Some((index, false)) => {
            let seen = seen.unwrap_or_else(|| {
                panic!("{path:?} in {mounts:?} got {status} instead of mount {index}")
            });
            assert_eq!(seen.mount, index, "{path:?} in {mounts:?}");
            let prefix = mounts[index].as_str();
            assert_eq!(seen.uri.path(), &path[prefix.len()..]);
            assert_eq!(seen.uri.query(), uri.query());
            assert_eq!(seen.prefix.as_ref().map(MountPrefix::as_str), Some(prefix));
            assert_eq!(seen.original, Some(OriginalUri(uri.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn seeds_pass() {
        router(b"/a\n/a/b\n\n/a/b/c?x=1");
        router(b"/a\n/a/b\n/a/bc");
        router(b"/a\n/a");
        router(b"/app\n/app%2f..");
        router(b"/a\n*");
        router(b"/a\nhttp://h/a/x");
        mount_path(b"/a/b/");
        mount_path(b"/a/../b");
        mount_path(b"");
    }

    /// Mount paths and request paths from a small alphabet, so that they overlap often.
    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "a", "b", "ab", "a.b", "~", "%61", "..", ".", "", "a:b", "{x}",
        ])
        .prop_map(str::to_owned)
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 0..4).prop_map(|segments| {
            segments
                .iter()
                .map(|segment| format!("/{segment}"))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(2_000))]
        #[test]
        fn routing_matches_the_naive_longest_prefix_rule(
            mounts in prop::collection::vec(path(), 0..6),
            target in path(),
            slash in proptest::bool::ANY,
            query in prop::option::of("[a-z=&%0-9]{0,6}"),
        ) {
            let mut input = mounts.join("\n");
            input.push('\n');
            input.push_str(if target.is_empty() { "/" } else { &target });
            if slash {
                input.push('/');
            }
            if let Some(query) = query {
                input.push('?');
                input.push_str(&query);
            }
            router(input.as_bytes());
        }

        #[test]
        fn mount_paths_parse_to_their_promised_shape(text in "(/|a|\\.|%|b|~|\\*|\\{|:| ){0,10}") {
            mount_path(text.as_bytes());
        }

        #[test]
        fn router_never_panics_on_bytes(data in prop::collection::vec(proptest::num::u8::ANY, 0..120)) {
            router(&data);
            mount_path(&data);
        }
    }
}
