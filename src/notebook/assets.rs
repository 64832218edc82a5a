//! marimo's frontend files served by the gateway itself, without touching Python.
//!
//! The same files marimo's server would send (`/assets/*` and its short list of root files:
//! `favicon.ico`, `manifest.json`, the app icons, `logo.png`) are read from the installed
//! marimo package's `_static` directory, found once per Python environment. Each file is read
//! once and kept in memory with a strong `ETag` (SHA-256 of the content) and its gzip and
//! brotli forms, compressed on first demand and cached. Hashed `/assets/*` files are
//! `immutable` for a year; the others revalidate.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::python;
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
/// Files larger than this are not compressed (fonts, wasm and images barely shrink anyway).
const COMPRESS_LIMIT: usize = 16 * 1024 * 1024;

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

#[derive(Debug)]
struct Asset {
    content_type: HeaderValue,
    etag: HeaderValue,
    immutable: bool,
    identity: Bytes,
    gzip: OnceLock<Option<Bytes>>,
    brotli: OnceLock<Option<Bytes>>,
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
        Some(asset.respond(headers, method == Method::HEAD))
    }

    async fn load(&self, root: &Path, relative: &str) -> Option<Arc<Asset>> {
        if let Some(asset) = lock(&self.files).files.get(relative) {
            return Some(asset.clone());
        }
        let bytes = Bytes::from(tokio::fs::read(root.join(relative)).await.ok()?);
        let asset = Arc::new(Asset::new(relative, bytes));
        let mut cache = lock(&self.files);
        if cache.bytes + asset.identity.len() <= CACHE_LIMIT {
            cache.bytes += asset.identity.len();
            cache.files.insert(relative.to_owned(), asset.clone());
        }
        Some(asset)
    }
}

impl Asset {
    fn new(relative: &str, identity: Bytes) -> Self {
        let digest = Sha256::digest(&identity);
        let etag = format!("\"{}\"", hex(&digest[..16]));
        Self {
            content_type: HeaderValue::from_static(content_type(relative)),
            etag: HeaderValue::try_from(etag).expect("hex etag"),
            immutable: relative.starts_with("assets/"),
            identity,
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
        }
    }

    fn respond(&self, request: &HeaderMap, head: bool) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(if self.immutable {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=0, must-revalidate"
            }),
        );
        if etag_matches(request, &self.etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        let (encoding, bytes) = self.pick_encoding(request);
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        if !head {
            *response.body_mut() = Body::from(bytes);
        }
        response
    }

    /// Brotli, then gzip, then the file as is, by what the client accepts and what pays off.
    fn pick_encoding(&self, request: &HeaderMap) -> (Option<&'static str>, Bytes) {
        let compressible = self.content_type.to_str().is_ok_and(is_compressible)
            && self.identity.len() <= COMPRESS_LIMIT
            && self.identity.len() > 256;
        if compressible {
            if accepts(request, "br") {
                if let Some(bytes) = self.brotli.get_or_init(|| brotli(&self.identity)) {
                    return (Some("br"), bytes.clone());
                }
            }
            if accepts(request, "gzip") {
                if let Some(bytes) = self.gzip.get_or_init(|| gzip(&self.identity)) {
                    return (Some("gzip"), bytes.clone());
                }
            }
        }
        (None, self.identity.clone())
    }
}

/// `If-None-Match` lists this ETag (or `*`).
fn etag_matches(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag.as_bytes() == etag)
}

/// The client lists `coding` in `Accept-Encoding` with a non-zero q-value.
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            name.eq_ignore_ascii_case(coding) && !refused
        })
}

fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/javascript")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("image/svg+xml")
        || content_type.starts_with("application/wasm")
        || content_type.starts_with("font/ttf")
}

/// Compressed bytes, or `None` when compression does not make the file smaller.
fn gzip(data: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).ok()?;
    let out = encoder.finish().ok()?;
    (out.len() < data.len()).then(|| Bytes::from(out))
}

fn brotli(data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 9,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).ok()?;
    (out.len() < data.len()).then(|| Bytes::from(out))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    #[test]
    fn accept_encoding_parsing() {
        let req = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).unwrap(),
            );
            headers
        };
        assert!(accepts(&req("gzip, deflate, br"), "br"));
        assert!(accepts(&req("GZIP;q=0.5"), "gzip"));
        assert!(!accepts(&req("gzip;q=0"), "gzip"));
        assert!(!accepts(&req("identity"), "gzip"));
    }

    #[test]
    fn compression_round_trips_and_is_skipped_when_useless() {
        let text = "marimo ".repeat(1000);
        let compressed = gzip(text.as_bytes()).unwrap();
        let mut decoder = flate2::read::GzDecoder::new(&compressed[..]);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut decoder, &mut out).unwrap();
        assert_eq!(out, text);
        assert!(brotli(text.as_bytes()).unwrap().len() < text.len());
        assert!(gzip(&[7u8]).is_none(), "a 1-byte file does not shrink");
    }
}
