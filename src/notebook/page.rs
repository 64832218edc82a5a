//! A run-mode notebook's page: fetched from its backend once per process and version of the
//! notebook file ([`Page`]), with where the notebook lives hidden ([`HidePaths`]), then served
//! from memory.
//!
//! In run mode the page is the same for every visitor of one backend process: marimo renders
//! it from the notebook file (title, layout, code with `include_code`), the mount's options
//! (`html_head`, `asset_url`…) and per-process values (the skew-protection `serverToken`), not
//! from the user. So the gateway keeps the rewritten page with its compressed forms and an
//! `ETag` ([`Stored`]), and fetches it again when the backend process changes (a restart: a
//! new token), when the notebook file changes (size, times or inode), or for a request whose
//! query carries one of the two parameters marimo's page handler reads (`file`,
//! `access_token`), which always goes to the backend. The options are fixed for a built
//! service, whose pages live and die with it. marimo's configuration files (`marimo.toml`,
//! `pyproject.toml`) are read again on the next backend start.
//!
//! marimo writes the notebook's absolute path into its page, and browsers need only the file
//! name.
//!
//! marimo 0.25.2 writes the path (or its folder) in five spellings: as is, HTML-escaped
//! (`<marimo-filename>`, Python's `html.escape`), inside JSON (`filename`, `cwd`: `json.dumps`,
//! non-ASCII as `\uXXXX`, then `<`, `>`, `&` escaped), as `file://` URIs (`lspWorkspace`:
//! `Path.as_uri`) and URI-component-encoded (the service worker's `notebookId`:
//! `urllib.parse.quote(safe="~()*!.'")`). The LSP root may also be a folder *above* the
//! notebook's (the nearest one with a `pyproject.toml`).
//!
//! Every replacement is anchored where a value starts (after `"`, `>` or `file://`), so a path
//! that merely contains the folder's name elsewhere in the page (a link in `html_head`) is left
//! alone:
//!
//! - a path inside the folder loses the folder: `/srv/nb/app.py` → `app.py`;
//! - a value that *is* the folder or a folder above it becomes `.`.
//!
//! The notebook's backend runs in the notebook's folder, so a relative `notebookId` still finds
//! the notebook (its `public/` files keep working).

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::process::Backend;
use super::stored::Stored;
use crate::proxy::ProxyError;
use crate::response::plain;
use crate::sync::lock;
use crate::Body;

/// The largest notebook page the gateway rewrites. A larger page is refused (`502`), never sent
/// with the path in it; marimo's run-mode page is about 25 KiB.
pub(crate) const PAGE_REWRITE_LIMIT: usize = 4 * 1024 * 1024;

/// One notebook's run-mode page, as the gateway serves it (see the module documentation).
#[derive(Debug)]
pub(crate) struct Page {
    hide: HidePaths,
    cached: Mutex<Option<Arc<Cached>>>,
    /// One fetch at a time: concurrent first loads wait for it rather than all asking Python.
    fetching: tokio::sync::Mutex<()>,
}

/// The page as it was fetched for `key`.
#[derive(Debug)]
struct Cached {
    key: Key,
    body: Arc<Stored>,
    /// marimo's other header fields (`Cache-Control`, `Referrer-Policy`…).
    fields: HeaderMap,
}

/// What a page depends on besides the service's options: the backend process, the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    generation: u64,
    file: FileStamp,
}

/// What changes when a file is written or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: (i64, i64),
    changed_ns: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified_ns: (meta.mtime(), meta.mtime_nsec()),
            changed_ns: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Header fields of marimo's page that the stored body sets itself, or that belong to one
/// response only.
const OWN_FIELDS: [header::HeaderName; 6] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::ETAG,
    header::VARY,
    header::DATE,
];

impl Page {
    pub(crate) fn new(notebook: &Path) -> Self {
        Self {
            hide: HidePaths::new(notebook),
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Answers a `GET` or `HEAD` for the page of `backend` (ready), from memory when it can.
    pub(crate) async fn serve(
        &self,
        backend: &Backend,
        req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        let head = req.method() == Method::HEAD;
        let Some(key) = Self::key(backend, &req) else {
            let response = self.fetch(backend, req).await?;
            return Ok(if head {
                response.map(|_| Body::empty())
            } else {
                response
            });
        };
        if let Some(page) = self.current(key) {
            return Ok(page.body.respond(req.headers(), head, &page.fields).await);
        }
        let _one = self.fetching.lock().await;
        if let Some(page) = self.current(key) {
            return Ok(page.body.respond(req.headers(), head, &page.fields).await);
        }
        let request_fields = req.headers().clone();
        let response = self.fetch(backend, req).await?;
        let cacheable = response.status() == StatusCode::OK
            && !response.headers().contains_key(header::SET_COOKIE);
        if !cacheable {
            return Ok(if head {
                response.map(|_| Body::empty())
            } else {
                response
            });
        }
        let (parts, body) = response.into_parts();
        // Rewritten in memory already: collecting it cannot fail.
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Ok(plain(StatusCode::BAD_GATEWAY, "Bad Gateway")),
        };
        let mut fields = parts.headers;
        let content_type = fields
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("text/html; charset=utf-8"));
        for name in &OWN_FIELDS {
            fields.remove(name);
        }
        let page = Arc::new(Cached {
            key,
            body: Stored::new(content_type, bytes),
            fields,
        });
        *lock(&self.cached) = Some(Arc::clone(&page));
        tracing::debug!(notebook = %backend.notebook().display(), bytes = page.body.len(), "notebook page stored");
        Ok(page.body.respond(&request_fields, head, &page.fields).await)
    }

    /// The page stored for `key`, if it is.
    fn current(&self, key: Key) -> Option<Arc<Cached>> {
        lock(&self.cached)
            .as_ref()
            .filter(|page| page.key == key)
            .cloned()
    }

    /// What the page for `req` depends on, or `None` when it must come from the backend: the
    /// query names a parameter marimo's page reads, or the file cannot be looked at.
    fn key(backend: &Backend, req: &Request<Body>) -> Option<Key> {
        let own_query = req.uri().query().is_some_and(|query| {
            form_urlencoded::parse(query.as_bytes())
                .any(|(name, _)| name == "file" || name == "access_token")
        });
        if own_query {
            return None;
        }
        Some(Key {
            // Read before the fetch: a page fetched while a new process starts is fetched
            // again.
            generation: backend.generation(),
            file: FileStamp::of(backend.notebook())?,
        })
    }

    /// The page from the backend, rewritten. The backend is asked for the page itself,
    /// uncompressed (the rewrite needs the text) and unconditionally.
    async fn fetch(
        &self,
        backend: &Backend,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, ProxyError> {
        *req.method_mut() = Method::GET;
        let headers = req.headers_mut();
        for name in [
            header::ACCEPT_ENCODING,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ] {
            headers.remove(name);
        }
        let response = backend.forward(req).await?;
        Ok(self.hide.rewrite(response).await)
    }
}

/// What Python's `urllib.parse.quote` leaves alone besides ASCII letters and digits, for a
/// path (`safe="/"`) and for a URI component (marimo's `safe="~()*!.'"`).
const URI_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'!')
    .remove(b'\'');

/// The replacements that hide one notebook's location, computed once per notebook.
#[derive(Debug, Default)]
struct HidePaths {
    /// `(from, to)`, applied in order.
    replacements: Vec<(String, String)>,
}

impl HidePaths {
    fn new(notebook: &Path) -> Self {
        let Some(folder) = notebook.parent().and_then(Path::to_str) else {
            tracing::warn!(
                notebook = %notebook.display(),
                "the notebook's folder is not UTF-8: its page is served without hiding it"
            );
            return Self::default();
        };
        let mut replacements = Vec::new();
        // Paths inside the folder first: `"/srv/nb/app.py"` → `"app.py"`.
        let inside = format!("{folder}/");
        for spelling in spellings(&inside) {
            for start in ["\"", ">", "file://"] {
                replacements.push((format!("{start}{spelling}"), start.to_owned()));
            }
        }
        // Then values that are the folder or one above it: `"/srv/nb"` → `"."`.
        let folders = Path::new(folder)
            .ancestors()
            .filter_map(Path::to_str)
            .filter(|above| above.len() > 1);
        for above in folders {
            for spelling in spellings(above) {
                for (start, end) in [("\"", "\""), (">", "<"), ("file://", "\"")] {
                    replacements
                        .push((format!("{start}{spelling}{end}"), format!("{start}.{end}")));
                }
            }
        }
        Self { replacements }
    }

    /// Rewrites a `200` page (any content type: it is `GET /`); other statuses pass untouched.
    /// A page that cannot be checked — compressed, not UTF-8, over [`PAGE_REWRITE_LIMIT`], or
    /// cut short — is refused with `502`.
    async fn rewrite(&self, response: Response<Body>) -> Response<Body> {
        if response.status() != StatusCode::OK || self.replacements.is_empty() {
            return response;
        }
        let refuse = |why: &str| {
            tracing::warn!(
                why,
                "not sending a notebook page that may show the notebook's path"
            );
            plain(StatusCode::BAD_GATEWAY, "Bad Gateway")
        };
        if response.headers().contains_key(header::CONTENT_ENCODING) {
            return refuse("the backend compressed it");
        }
        let (mut parts, body) = response.into_parts();
        let bytes = match Limited::new(body, PAGE_REWRITE_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => return refuse(&format!("it could not be read in full: {error}")),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return refuse("it is not UTF-8");
        };
        let mut page = text.to_owned();
        for (from, to) in &self.replacements {
            if page.contains(from.as_str()) {
                page = page.replace(from.as_str(), to);
            }
        }
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(page.len()));
        Response::from_parts(parts, Body::from(page))
    }
}

/// `path` as marimo writes it in its page, each spelling once.
fn spellings(path: &str) -> Vec<String> {
    let mut all = vec![
        path.to_owned(),
        html_escape(path),
        json_string(path, true),
        json_string(path, false),
        utf8_percent_encode(path, URI_PATH).to_string(),
        utf8_percent_encode(path, URI_COMPONENT).to_string(),
    ];
    all.sort();
    all.dedup();
    all
}

/// Python's `html.escape(text, quote=True)`: the gateway's own escaper, but `'` as `&#x27;`.
fn html_escape(text: &str) -> String {
    crate::html::escape(text).replace("&#39;", "&#x27;")
}

/// The inside of the JSON string marimo's `json_script` writes: Python's `json.dumps` (the
/// same escapes as serde_json's; with `ensure_ascii`, also DEL and every non-ASCII character
/// as `\uXXXX`), then `<`, `>`, `&` as `\u003C`, `\u003E`, `\u0026`.
fn json_string(text: &str, ensure_ascii: bool) -> String {
    use std::fmt::Write as _;
    let quoted = serde_json::to_string(text).expect("a string always serializes");
    let mut out = String::with_capacity(quoted.len());
    for c in quoted[1..quoted.len() - 1].chars() {
        match c {
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            c if ensure_ascii && (c == '\u{7f}' || !c.is_ascii()) => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_match_marimos_encoders() {
        // Each expected value is what marimo 0.25.2 wrote for this folder.
        let folder = "/tmp/a b/ü/x&y'z";
        let all = spellings(folder);
        for expected in [
            "/tmp/a b/ü/x&y'z",
            "/tmp/a b/ü/x&amp;y&#x27;z",
            "/tmp/a b/\\u00fc/x\\u0026y'z",
            "/tmp/a%20b/%C3%BC/x%26y%27z",
            "%2Ftmp%2Fa%20b%2F%C3%BC%2Fx%26y'z",
        ] {
            assert!(all.iter().any(|s| s == expected), "{expected} in {all:?}");
        }
        assert_eq!(
            json_string("\u{1F600}<\"\\\n", true),
            "\\ud83d\\ude00\\u003C\\\"\\\\\\n"
        );
        assert_eq!(json_string("ü\u{7f}", false), "ü\u{7f}");
    }

    #[tokio::test]
    async fn the_folder_is_hidden_where_values_start_and_nowhere_else() {
        let hide = HidePaths::new(Path::new("/srv/project/nb/app.py"));
        let page = concat!(
            r#"<marimo-filename hidden>/srv/project/nb/app.py</marimo-filename>"#,
            r#"{"filename": "/srv/project/nb/app.py", "cwd": "/srv/project/nb", "#,
            r#""lspWorkspace": {"documentUri": "file:///srv/project/nb/app.py", "#,
            r#""rootUri": "file:///srv/project"}}"#,
            r#"const notebookId = "%2Fsrv%2Fproject%2Fnb%2Fapp.py";"#,
            r#"<a href="https://example.com/srv/project/nb/">docs</a>"#,
        );
        let response = Response::new(Body::from(page));
        let response = hide.rewrite(response).await;
        let length = response.headers()[header::CONTENT_LENGTH].clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            concat!(
                r#"<marimo-filename hidden>app.py</marimo-filename>"#,
                r#"{"filename": "app.py", "cwd": ".", "#,
                r#""lspWorkspace": {"documentUri": "file://app.py", "#,
                r#""rootUri": "file://."}}"#,
                r#"const notebookId = "app.py";"#,
                r#"<a href="https://example.com/srv/project/nb/">docs</a>"#,
            )
        );
        assert_eq!(length, body.len().to_string().as_str());
    }

    #[tokio::test]
    async fn pages_that_cannot_be_checked_are_refused() {
        let hide = HidePaths::new(Path::new("/srv/nb/app.py"));
        let compressed = Response::builder()
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from("x"))
            .unwrap();
        let too_big = Response::new(Body::from(vec![b'x'; PAGE_REWRITE_LIMIT + 1]));
        let binary = Response::new(Body::from(vec![0xff, 0xfe]));
        for response in [compressed, too_big, binary] {
            assert_eq!(
                hide.rewrite(response).await.status(),
                StatusCode::BAD_GATEWAY
            );
        }
        let not_found = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("/srv/nb/app.py"))
            .unwrap();
        assert_eq!(
            hide.rewrite(not_found).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
