//! A response body kept in memory: marimo's frontend files and notebook pages are answered from
//! one, with a strong `ETag` (SHA-256 of the content, so `304`s), `Vary: accept-encoding`, and
//! brotli or gzip by what the client accepts. The compressed forms are made on first demand, on
//! a blocking thread (brotli takes milliseconds on a large script), and kept.

use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::Body;

/// Bodies larger than this are not compressed (fonts, wasm and images barely shrink anyway).
const COMPRESS_LIMIT: usize = 16 * 1024 * 1024;
/// Bodies this small are not worth compressing.
const COMPRESS_MIN: usize = 256;

/// Marks a response answered from memory, in its final encoding: the notebook service's
/// on-the-fly compression leaves it alone.
#[derive(Clone, Copy, Debug)]
pub(super) struct FromMemory;

/// One body and its metadata (see the module documentation).
#[derive(Debug)]
pub(super) struct Stored {
    content_type: HeaderValue,
    etag: HeaderValue,
    identity: Bytes,
    /// Whether a compressed form may pay off: a compressible type, a size worth it.
    compressible: bool,
    gzip: OnceLock<Option<Bytes>>,
    brotli: OnceLock<Option<Bytes>>,
}

#[derive(Clone, Copy, Debug)]
enum Coding {
    Gzip,
    Brotli,
}

impl Stored {
    pub(super) fn new(content_type: HeaderValue, identity: Bytes) -> Arc<Self> {
        let digest = Sha256::digest(&identity);
        let etag = format!("\"{}\"", hex(&digest[..16]));
        let compressible = content_type.to_str().is_ok_and(is_compressible)
            && (COMPRESS_MIN + 1..=COMPRESS_LIMIT).contains(&identity.len());
        Arc::new(Self {
            content_type,
            etag: HeaderValue::try_from(etag).expect("hex etag"),
            identity,
            compressible,
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
        })
    }

    /// The body's size as is.
    pub(super) fn len(&self) -> usize {
        self.identity.len()
    }

    /// The answer to a `GET` (or, with `head`, `HEAD`) whose header fields are `request`:
    /// `304` if it names this ETag, else `200` with the form it accepts. `fields` (such as
    /// `Cache-Control`) go into both.
    pub(super) async fn respond(
        self: &Arc<Self>,
        request: &HeaderMap,
        head: bool,
        fields: &HeaderMap,
    ) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        response.extensions_mut().insert(FromMemory);
        let headers = response.headers_mut();
        headers.clone_from(fields);
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if etag_matches(request, &self.etag) {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return response;
        }
        let (encoding, bytes) = self.pick_encoding(request).await;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        if let Some(encoding) = encoding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        if !head {
            *response.body_mut() = Body::from(bytes);
        }
        response
    }

    /// Brotli, then gzip, then the body as is, by what the client accepts and what pays off.
    async fn pick_encoding(self: &Arc<Self>, request: &HeaderMap) -> (Option<&'static str>, Bytes) {
        if self.compressible {
            if accepts(request, "br") {
                if let Some(bytes) = self.encoded(Coding::Brotli).await {
                    return (Some("br"), bytes);
                }
            }
            if accepts(request, "gzip") {
                if let Some(bytes) = self.encoded(Coding::Gzip).await {
                    return (Some("gzip"), bytes);
                }
            }
        }
        (None, self.identity.clone())
    }

    fn cell(&self, coding: Coding) -> &OnceLock<Option<Bytes>> {
        match coding {
            Coding::Gzip => &self.gzip,
            Coding::Brotli => &self.brotli,
        }
    }

    /// The body in `coding` (`None` when that does not make it smaller), compressed once.
    async fn encoded(self: &Arc<Self>, coding: Coding) -> Option<Bytes> {
        if let Some(done) = self.cell(coding).get() {
            return done.clone();
        }
        let this = Arc::clone(self);
        let compress = move || {
            this.cell(coding)
                .get_or_init(|| match coding {
                    Coding::Gzip => gzip(&this.identity),
                    Coding::Brotli => brotli(&this.identity),
                })
                .clone()
        };
        // Off the threads that serve requests; concurrent first demands wait for one result.
        tokio::task::spawn_blocking(compress).await.ok().flatten()
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

/// Compressed bytes, or `None` when compression does not make the body smaller.
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn answers_carry_the_etag_and_the_accepted_form() {
        let body = Stored::new(
            HeaderValue::from_static("text/html; charset=utf-8"),
            Bytes::from("<p>marimo</p>".repeat(100)),
        );
        let mut fields = HeaderMap::new();
        fields.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let mut request = HeaderMap::new();
        request.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));

        let full = body.respond(&request, false, &fields).await;
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(full.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(full.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(full.extensions().get::<FromMemory>().is_some());
        let etag = full.headers()[header::ETAG].clone();
        let length = full.headers()[header::CONTENT_LENGTH].clone();

        let head = body.respond(&request, true, &fields).await;
        assert_eq!(head.headers()[header::CONTENT_LENGTH], length);
        let head_body = http_body_util::BodyExt::collect(head.into_body()).await;
        assert!(head_body.unwrap().to_bytes().is_empty());

        request.insert(header::IF_NONE_MATCH, etag);
        let cached = body.respond(&request, false, &fields).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[header::CACHE_CONTROL], "no-cache");
    }
}
