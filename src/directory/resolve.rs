//! Safe resolution of a request path to a notebook file inside a directory, and the listing
//! for the directory's index page.
//!
//! Nothing here trusts the request: every name is checked before it touches the file system,
//! and every file found is canonicalized and checked to be inside the (also canonicalized, at
//! request time) directory, so `..`, encoded `..`, absolute paths and escaping symlinks never
//! reach a file outside it.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode;

/// How many times a segment is percent-decoded when looking for a hidden `..`.
const DECODE_ROUNDS: usize = 4;
/// How many leading segments may name a notebook (`a/b/…/nb.py` at most this deep): bounds
/// the file system lookups one request can cause.
const MAX_NAME_SEGMENTS: usize = 16;
/// How deep the index page looks into subdirectories (marimo's `DirectoryScanner.MAX_DEPTH`).
const LIST_MAX_DEPTH: usize = 5;
/// How many notebooks the index page lists at most (marimo's `DirectoryScanner.MAX_FILES`).
const LIST_MAX_FILES: usize = 1000;
/// How much of a file is read to decide whether it is a marimo notebook.
const SCAN_BYTES: u64 = 1024 * 1024;
/// What is read first (enough for nearly every notebook).
const FAST_SCAN_BYTES: u64 = 4096;
/// Directories the index page never enters (besides hidden and `_` ones).
const SKIP_DIRS: [&str; 6] = [
    "venv",
    "node_modules",
    "site-packages",
    "build",
    "dist",
    "eggs",
];

/// A request path that names a notebook.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The notebook relative to the directory, e.g. `team/q3.py` (decoded).
    pub(crate) relative: PathBuf,
    /// The file it resolves to now (symlinks resolved).
    pub(crate) canonical: PathBuf,
    /// The part of the request path that names the notebook, as sent: `/team/q3`.
    pub(crate) prefix: String,
    /// What follows it, as sent: `""` (no trailing slash), `/` or `/assets/x.js`.
    pub(crate) rest: String,
}

/// Finds the notebook named by `path` (the request path below the mount, starting with `/`).
///
/// The longest run of leading segments that names an existing `<segments>.py` wins; the rest
/// is the notebook's own path. `None` for anything unsafe or missing.
pub(crate) fn resolve(directory: &Path, path: &str) -> Option<Resolved> {
    let tail = path.strip_prefix('/')?;
    let segments: Vec<&str> = tail.split('/').collect();
    if segments.iter().any(|segment| is_dangerous(segment)) {
        return None;
    }
    // Resolved now, not at build time: the directory may be a symlink that is re-pointed.
    let root = directory.canonicalize().ok()?;
    // Names are checked from the left: a bad segment rules out every candidate containing it.
    let names: Vec<String> = segments
        .iter()
        .take(MAX_NAME_SEGMENTS)
        .map_while(|s| name_segment(s))
        .collect();
    for count in (1..=names.len()).rev() {
        let mut relative: PathBuf = names[..count - 1].iter().collect();
        relative.push(format!("{}.py", names[count - 1]));
        let Some(canonical) = locate_in(&root, &relative) else {
            continue;
        };
        let prefix_len: usize = segments[..count].iter().map(|s| s.len() + 1).sum();
        return Some(Resolved {
            relative,
            canonical,
            prefix: path[..prefix_len].to_owned(),
            rest: path[prefix_len..].to_owned(),
        });
    }
    None
}

/// Where the notebook `relative` (e.g. `team/q3.py`) resolves to now, if it is still a
/// servable file inside `directory`.
pub(crate) fn locate(directory: &Path, relative: &Path) -> Option<PathBuf> {
    let root = directory.canonicalize().ok()?;
    locate_in(&root, relative)
}

/// `root` is canonical; `relative` is made of names that passed [`name_segment`].
fn locate_in(root: &Path, relative: &Path) -> Option<PathBuf> {
    let canonical = root.join(relative).canonicalize().ok()?;
    let inside = canonical.strip_prefix(root).ok()?;
    let all_visible = inside.components().all(|component| match component {
        Component::Normal(name) => name.to_str().is_some_and(is_visible_name),
        _ => false,
    });
    let is_python = canonical.extension().is_some_and(|ext| ext == "py");
    let is_file = std::fs::metadata(&canonical).is_ok_and(|m| m.is_file());
    (all_visible && is_python && is_file).then_some(canonical)
}

/// One URL segment used as a file or directory name: decoded once, and refused if it is
/// empty, hidden (`.x`, `_x`), still encoded (`%252e` decodes to `%2e`), or contains a
/// separator, a NUL or a control character.
fn name_segment(raw: &str) -> Option<String> {
    let decoded = percent_decode(raw.as_bytes()).decode_utf8().ok()?;
    let ok = is_visible_name(&decoded) && !decoded.contains('%');
    ok.then(|| decoded.into_owned())
}

/// A name the directory mount serves and lists.
fn is_visible_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('_')
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// Whether a segment, decoded up to [`DECODE_ROUNDS`] times, is `.`/`..` (alone or around a
/// `/` or `\`), or holds a backslash or NUL. Refused anywhere in the path, even in the part
/// that goes to the notebook.
fn is_dangerous(raw: &str) -> bool {
    let mut current = raw.as_bytes().to_vec();
    for _ in 0..=DECODE_ROUNDS {
        if current.contains(&b'\\') || current.contains(&0) {
            return true;
        }
        if current
            .split(|&b| b == b'/')
            .any(|part| part == b"." || part == b"..")
        {
            return true;
        }
        let next: Vec<u8> = percent_decode(&current).collect();
        if next == current {
            return false;
        }
        current = next;
    }
    // Still changing after this many rounds: nothing legitimate is encoded that deeply.
    true
}

/// marimo's `is_marimo_app` for Python files: both `import marimo` and `marimo.App` appear in
/// the first megabyte.
pub(crate) fn is_marimo_notebook(file: &Path) -> bool {
    let Ok(file) = std::fs::File::open(file) else {
        return false;
    };
    let mut reader = file.take(SCAN_BYTES);
    let mut content = Vec::new();
    // The markers are near the top of a notebook: look at a small head first.
    let head = (&mut reader)
        .take(FAST_SCAN_BYTES)
        .read_to_end(&mut content);
    let found = |content: &[u8]| {
        let has = |marker: &[u8]| content.windows(marker.len()).any(|w| w == marker);
        has(b"import marimo") && has(b"marimo.App")
    };
    match head {
        Err(_) => false,
        Ok(_) if found(&content) => true,
        Ok(n) if (n as u64) < FAST_SCAN_BYTES => false,
        Ok(_) => reader.read_to_end(&mut content).is_ok() && found(&content),
    }
}

/// Every notebook the index page may show, as paths relative to `directory` (`team/q3.py`),
/// sorted. Hidden and `_` names, non-notebooks and symlinks leaving the directory are skipped.
pub(crate) fn list_notebooks(directory: &Path) -> Vec<PathBuf> {
    let Ok(root) = directory.canonicalize() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut visited = HashSet::from([root.clone()]);
    walk(&root, &root, PathBuf::new(), 0, &mut visited, &mut found);
    found.sort_by_key(|path| path.to_string_lossy().into_owned());
    found
}

fn walk(
    root: &Path,
    dir: &Path,
    relative: PathBuf,
    depth: usize,
    visited: &mut HashSet<PathBuf>,
    found: &mut Vec<PathBuf>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| is_visible_name(name) && !name.contains('%'))
        .collect();
    names.sort();
    for name in names {
        if found.len() >= LIST_MAX_FILES {
            return;
        }
        let Ok(canonical) = dir.join(&name).canonicalize() else {
            continue;
        };
        let Ok(inside) = canonical.strip_prefix(root) else {
            continue;
        };
        if !inside
            .components()
            .all(|c| matches!(c, Component::Normal(n) if n.to_str().is_some_and(is_visible_name)))
        {
            continue;
        }
        let Ok(metadata) = std::fs::metadata(&canonical) else {
            continue;
        };
        if metadata.is_dir() {
            if depth < LIST_MAX_DEPTH
                && !SKIP_DIRS.contains(&name.as_str())
                && visited.insert(canonical.clone())
            {
                walk(
                    root,
                    &canonical,
                    relative.join(&name),
                    depth + 1,
                    visited,
                    found,
                );
            }
        } else if metadata.is_file()
            && name.ends_with(".py")
            && name.len() > ".py".len()
            && canonical.extension().is_some_and(|ext| ext == "py")
            && is_marimo_notebook(&canonical)
        {
            found.push(relative.join(&name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTEBOOK: &str = "import marimo\napp = marimo.App()\n";

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "sales.py",
            "team/q3.py",
            "team.py",
            "a/b/c/deep.py",
            "_private.py",
            ".hidden.py",
            "_internal/x.py",
            ".git/y.py",
            "my report.py",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, NOTEBOOK).unwrap();
        }
        std::fs::write(root.join("notes.txt"), NOTEBOOK).unwrap();
        std::fs::write(root.join("helper.py"), "def f():\n    return 1\n").unwrap();
        dir
    }

    fn found(dir: &Path, path: &str) -> Option<(String, String, String)> {
        resolve(dir, path).map(|r| (r.relative.to_str().unwrap().to_owned(), r.prefix, r.rest))
    }

    fn some(relative: &str, prefix: &str, rest: &str) -> Option<(String, String, String)> {
        Some((relative.into(), prefix.into(), rest.into()))
    }

    #[test]
    fn the_longest_prefix_naming_a_file_wins() {
        let dir = tree();
        let d = dir.path();
        assert_eq!(found(d, "/sales"), some("sales.py", "/sales", ""));
        assert_eq!(found(d, "/sales/"), some("sales.py", "/sales", "/"));
        assert_eq!(
            found(d, "/sales/assets/x.js"),
            some("sales.py", "/sales", "/assets/x.js")
        );
        assert_eq!(
            found(d, "/team/q3/ws"),
            some("team/q3.py", "/team/q3", "/ws")
        );
        assert_eq!(
            found(d, "/team/other/"),
            some("team.py", "/team", "/other/")
        );
        assert_eq!(
            found(d, "/a/b/c/deep/"),
            some("a/b/c/deep.py", "/a/b/c/deep", "/")
        );
        assert_eq!(
            found(d, "/my%20report/"),
            some("my report.py", "/my%20report", "/")
        );
        // The notebook's own path may use names that are not notebook names.
        assert_eq!(
            found(d, "/sales/_x/.y"),
            some("sales.py", "/sales", "/_x/.y")
        );
        let long = format!("/sales{}", "/x".repeat(100));
        assert_eq!(
            found(d, &long),
            some("sales.py", "/sales", &long["/sales".len()..])
        );
        let canonical = resolve(d, "/team/q3/").unwrap().canonical;
        assert_eq!(canonical, d.canonicalize().unwrap().join("team/q3.py"));
    }

    #[test]
    fn unsafe_or_missing_paths_resolve_to_nothing() {
        let dir = tree();
        let d = dir.path();
        for path in [
            "/",
            "",
            "sales",
            "/missing/",
            "/sales.py",
            "/sales.py/",
            "/notes/",
            "/notes.txt/",
            "/_private/",
            "/.hidden/",
            "/_internal/x/",
            "/.git/y/",
            "/team/../sales/",
            "/../sales/",
            "/./sales/",
            "/%2e%2e/sales/",
            "/%2E%2E/sales/",
            "/%252e%252e/sales/",
            "/%25252e%25252e/sales/",
            "/..%2fsales/",
            "/..%5csales/",
            "/sales/..%2f..%2fetc/",
            "/sales/%2e%2e/x",
            "/sales\\..\\x/",
            "/sales%00/",
            "/sales/%00",
            "//etc/passwd",
            "/%2fetc%2fpasswd/",
            "/sales%2f/",
            "/%73ales%252f/",
            "/%ff/",
        ] {
            assert_eq!(found(d, path), None, "{path:?}");
        }
    }

    #[test]
    fn symlinks_must_stay_inside_the_directory() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.py"), NOTEBOOK).unwrap();
        let dir = tree();
        let d = dir.path();
        std::os::unix::fs::symlink(outside.path().join("evil.py"), d.join("evil.py")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("out")).unwrap();
        std::os::unix::fs::symlink(d.join("sales.py"), d.join("alias.py")).unwrap();
        std::os::unix::fs::symlink(d.join("_private.py"), d.join("sneaky.py")).unwrap();
        std::os::unix::fs::symlink(d.join("notes.txt"), d.join("text.py")).unwrap();
        assert_eq!(found(d, "/evil/"), None);
        assert_eq!(found(d, "/out/evil/"), None);
        assert_eq!(found(d, "/sneaky/"), None);
        assert_eq!(found(d, "/text/"), None);
        assert_eq!(found(d, "/alias/"), some("alias.py", "/alias", "/"));
        assert_eq!(locate(d, Path::new("evil.py")), None);
        let listed = list_notebooks(d);
        assert!(listed.contains(&PathBuf::from("alias.py")));
        assert!(!listed
            .iter()
            .any(|p| p.starts_with("out") || p.ends_with("evil.py")));
        assert!(!listed
            .iter()
            .any(|p| p.ends_with("sneaky.py") || p.ends_with("text.py")));
    }

    #[test]
    fn a_re_pointed_directory_symlink_is_followed() {
        let base = tempfile::tempdir().unwrap();
        for version in ["v1", "v2"] {
            std::fs::create_dir(base.path().join(version)).unwrap();
        }
        std::fs::write(base.path().join("v1/only1.py"), NOTEBOOK).unwrap();
        std::fs::write(base.path().join("v2/only2.py"), NOTEBOOK).unwrap();
        let current = base.path().join("current");
        std::os::unix::fs::symlink("v1", &current).unwrap();
        assert!(resolve(&current, "/only1/").is_some());
        assert!(resolve(&current, "/only2/").is_none());
        std::fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink("v2", &current).unwrap();
        assert!(resolve(&current, "/only1/").is_none());
        let now = resolve(&current, "/only2/").unwrap();
        assert!(now.canonical.ends_with("v2/only2.py"));
    }

    #[test]
    fn the_listing_shows_visible_notebooks_only() {
        let dir = tree();
        let listed: Vec<String> = list_notebooks(dir.path())
            .iter()
            .map(|p| p.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed,
            [
                "a/b/c/deep.py",
                "my report.py",
                "sales.py",
                "team.py",
                "team/q3.py"
            ]
        );
    }

    #[test]
    fn a_directory_symlink_loop_ends() {
        let dir = tree();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("team/loop")).unwrap();
        let listed = list_notebooks(dir.path());
        assert!(listed.len() < 20, "{listed:?}");
    }
}
