//! marimo's frontend files served by the gateway itself, without touching Python.
//!
//! The same files marimo's server would send (`/assets/*` and its short list of root files:
//! `favicon.ico`, `manifest.json`, the app icons, `logo.png`) are read from the installed
//! marimo package's `_static` directory, found once per Python environment. Each file is read
//! once and kept in memory ([`Stored`]: strong `ETag`, gzip and brotli forms made on first
//! demand). Hashed `/assets/*` files are `immutable` for a year; the others revalidate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response};
use tokio::sync::OnceCell;

use super::python;
use super::stored::Stored;
use crate::sync::lock;
use crate::Body;

/// Root files marimo serves from `_static` (its `STATIC_FILES`).
const ROOT_FILES: [&str; 6] = [
    "favicon.ico",
    "manifest.json",
    "android-chrome-192x192.png",
    "android-chrome-512x512.png",
    "apple-touch-icon.png",
    "logo.png",
];

/// The most bytes of files kept in memory; past it, files are still served, just re-read.
const CACHE_LIMIT: usize = 128 * 1024 * 1024;

/// The frontend files of one Python environment's marimo.
#[derive(Debug, Default)]
pub(crate) struct StaticAssets {
    root: OnceCell<Option<PathBuf>>,
    files: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    files: HashMap<String, Arc<Asset>>,
    bytes: usize,
}

/// One file: its body, and the `Cache-Control` it is served with.
#[derive(Debug)]
struct Asset {
    body: Arc<Stored>,
    fields: HeaderMap,
}

/// Which file of `_static` a request path names, if it is one the gateway serves.
fn static_file(path: &str) -> Option<&str> {
    let relative = path.strip_prefix('/')?;
    let allowed = match relative.strip_prefix("assets/") {
        Some(name) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !name.starts_with('.')
        }
        None => ROOT_FILES.contains(&relative),
    };
    allowed.then_some(relative)
}

impl StaticAssets {
    /// Answers `req` if it is for a static frontend file; `None` lets it go to the backend.
    pub(crate) async fn serve(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        python: Option<&Path>,
    ) -> Option<Response<Body>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let relative = static_file(path)?;
        let root = self
            .root
            .get_or_init(|| async {
                let env = python::resolve(python).await.ok()?;
                let dir = env.static_dir.clone();
                dir.join("assets").is_dir().then_some(dir)
            })
            .await
            .as_ref()?;
        let asset = match self.load(root, relative).await {
            Some(asset) => asset,
            None => return Some(crate::response::not_found()),
        };
        Some(
            asset
                .body
                .respond(headers, method == Method::HEAD, &asset.fields)
                .await,
        )
    }

    async fn load(&self, root: &Path, relative: &str) -> Option<Arc<Asset>> {
        if let Some(asset) = lock(&self.files).files.get(relative) {
            return Some(asset.clone());
        }
        let bytes = Bytes::from(tokio::fs::read(root.join(relative)).await.ok()?);
        let asset = Arc::new(Asset::new(relative, bytes));
        let mut cache = lock(&self.files);
        let size = asset.body.len();
        if cache.bytes + size <= CACHE_LIMIT {
            cache.bytes += size;
            cache.files.insert(relative.to_owned(), asset.clone());
        }
        Some(asset)
    }
}

impl Asset {
    fn new(relative: &str, identity: Bytes) -> Self {
        let mut fields = HeaderMap::new();
        fields.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if relative.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=0, must-revalidate"
            }),
        );
        Self {
            body: Stored::new(HeaderValue::from_static(content_type(relative)), identity),
            fields,
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "js" | "mjs" => "application/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/vnd.microsoft.icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_marimo_static_files_are_offloaded() {
        assert_eq!(
            static_file("/assets/index-abc.js"),
            Some("assets/index-abc.js")
        );
        assert_eq!(static_file("/favicon.ico"), Some("favicon.ico"));
        for path in [
            "/",
            "/assets/",
            "/assets/../x.js",
            "/assets/a/b.js",
            "/assets/%2e%2e",
            "/assets/.x",
            "/index.html",
            "/public/x.png",
            "/api/version",
            "/assets\\x.js",
            "/public-files-sw.js",
        ] {
            assert_eq!(static_file(path), None, "{path}");
        }
    }
}
