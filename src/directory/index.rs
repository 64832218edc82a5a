//! A directory mount's index page (`{mount}/`): links to the notebooks the requester may
//! open, those the access rules and the validate callback allow.

use std::path::{Path, PathBuf};

use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{resolve, Rules, ValidateFn, Validation};
use crate::response::{html, method_not_allowed, no_store};
use crate::Body;

/// Answers `req` for the index of `directory`.
pub(super) async fn respond(
    directory: &Path,
    rules: &Rules,
    validate: Option<&ValidateFn>,
    req: Request<Body>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    let (parts, _) = req.into_parts();
    let shown = allowed(directory, rules, validate, &parts).await;
    let links = shown.iter().filter_map(|notebook| link("./", notebook));
    page(&index_page(links))
}

/// The notebooks of `directory` (relative paths) that the access `rules` and `validate` let
/// the requester open.
pub(super) async fn allowed(
    directory: &Path,
    rules: &Rules,
    validate: Option<&ValidateFn>,
    parts: &Parts,
) -> Vec<PathBuf> {
    let directory = directory.to_owned();
    let listed = tokio::task::spawn_blocking(move || resolve::list_notebooks(&directory))
        .await
        .unwrap_or_default();
    // Only what the user may open: the rules first (no callback runs for the rest).
    let user = parts.extensions.get::<crate::User>();
    let listed: Vec<PathBuf> = listed
        .into_iter()
        .filter(|notebook| {
            rules
                .for_notebook(notebook)
                .is_none_or(|access| access.lets(user))
        })
        .collect();
    match validate {
        None => listed,
        Some(validate) => {
            let verdicts =
                futures_util::future::join_all(listed.iter().map(|nb| validate(nb, parts))).await;
            listed
                .into_iter()
                .zip(verdicts)
                .filter(|(_, verdict)| matches!(verdict, Validation::Allow))
                .map(|(notebook, _)| notebook)
                .collect()
        }
    }
}

/// `200` with a listing page: it depends on who asks, so it is not stored.
pub(super) fn page(body: &str) -> Response<Body> {
    let mut response = no_store(html(StatusCode::OK, body.to_owned()));
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Characters left as they are in a link segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One entry of a listing: the link to `notebook` (a relative `.py` path) under `prefix`
/// (`./`, `../apps/`; it keeps a name like `javascript:x` from being read as a URL scheme),
/// and its name: `(href, name)`, neither escaped yet.
pub(super) fn link(prefix: &str, notebook: &Path) -> Option<(String, String)> {
    let name = notebook.to_str()?.strip_suffix(".py")?;
    Some((path_link(prefix, name), name.to_owned()))
}

/// `prefix` followed by `path`'s segments, percent-encoded, and `/`.
pub(super) fn path_link(prefix: &str, path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("{prefix}{}/", segments.join("/"))
}

/// The listing page: a link per `(href, name)`.
pub(super) fn index_page(links: impl Iterator<Item = (String, String)>) -> String {
    let mut items = String::new();
    for (href, name) in links {
        items.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>",
            crate::html::escape(&href),
            crate::html::escape(&name)
        ));
    }
    let list = if items.is_empty() {
        "<p>No notebooks.</p>".to_owned()
    } else {
        format!("<ul>{items}</ul>")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Notebooks</title><style>body{{font-family:system-ui,sans-serif;margin:3rem;\
         color:#333}}li{{margin:.4rem 0}}</style></head><body><h1>Notebooks</h1>{list}\
         </body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_links_are_relative_encoded_and_escaped() {
        let notebooks = [
            PathBuf::from("sales.py"),
            PathBuf::from("team/q3.py"),
            PathBuf::from("a&b <c>.py"),
            PathBuf::from("javascript:alert(1).py"),
        ];
        let page = index_page(notebooks.iter().filter_map(|nb| link("./", nb)));
        assert!(page.contains(r#"<a href="./sales/">sales</a>"#), "{page}");
        assert!(
            page.contains(r#"<a href="./team/q3/">team/q3</a>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<a href="./a%26b%20%3Cc%3E/">a&amp;b &lt;c&gt;</a>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"href="./javascript%3Aalert%281%29/""#),
            "{page}"
        );
        assert!(index_page(std::iter::empty()).contains("No notebooks."));
    }
}
