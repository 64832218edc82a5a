//! The gallery ([`AppBuilder::with_gallery`](crate::AppBuilder::with_gallery)): one page that
//! lists every notebook an app serves, its apps and the notebooks of its directories (found
//! when the page is asked for, filtered by each directory's validate callback), as `marimo run
//! folder other.py` lists its notebooks.

use std::path::PathBuf;
use std::sync::Arc;

use http::{Method, Request, Response};

use super::index::{allowed, index_page, link, page};
use super::{Rules, ValidateFn};
use crate::access::Access;
use crate::mount::MountService;
use crate::response::{method_not_allowed, not_found};
use crate::Body;

/// What the gallery lists.
#[derive(Clone)]
pub(crate) enum Listed {
    /// A notebook mount at `path` (`""` for the root, else `/a`), named after its file.
    App {
        path: String,
        name: String,
        /// The mount's access rules: the gallery links it only for users they let in.
        access: Option<Arc<Access>>,
    },
    /// A directory mount at `path`: its notebooks.
    Directory {
        path: String,
        /// Absolute.
        directory: PathBuf,
        rules: Rules,
        validate: Option<ValidateFn>,
    },
}

/// The gallery's mount service.
pub(crate) struct Gallery {
    /// From the gallery's page back to the app's root: `./`, or `../` per segment of its path.
    to_root: String,
    listed: Vec<Listed>,
}

impl Gallery {
    /// The gallery mounted at `path` (`""` for the root, else `/a`), listing `listed`.
    pub(crate) fn new(path: &str, listed: Vec<Listed>) -> Self {
        let depth = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .count();
        let to_root = if depth == 0 {
            "./".to_owned()
        } else {
            "../".repeat(depth)
        };
        Self { to_root, listed }
    }

    pub(crate) fn into_mount_service(self) -> MountService {
        MountService::from_handler(self, |this, req| async move { this.respond(req).await })
    }

    async fn respond(&self, req: Request<Body>) -> Response<Body> {
        if req.uri().path() != "/" {
            return not_found();
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        let (parts, _) = req.into_parts();
        let user = parts.extensions.get::<crate::User>();
        let mut links = Vec::new();
        for listed in &self.listed {
            match listed {
                // Mount paths are used as they are: the router matches them byte for byte.
                Listed::App { access, .. } if !access.as_ref().is_none_or(|a| a.lets(user)) => {}
                Listed::App { path, name, .. } => {
                    let href = match path.strip_prefix('/') {
                        Some(path) => format!("{}{path}/", self.to_root),
                        None => self.to_root.clone(),
                    };
                    links.push((href, name.clone()));
                }
                Listed::Directory {
                    path,
                    directory,
                    rules,
                    validate,
                } => {
                    let prefix = format!("{}{}/", self.to_root, path.trim_start_matches('/'));
                    for notebook in allowed(directory, rules, validate.as_ref(), &parts).await {
                        if let Some((href, name)) = link(&prefix, &notebook) {
                            links.push((href, format!("{}/{name}", path.trim_start_matches('/'))));
                        }
                    }
                }
            }
        }
        page(&index_page(links.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body(gallery: &Gallery, path: &str) -> (http::StatusCode, String) {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let response = gallery.respond(req).await;
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn apps_and_directory_notebooks_are_linked_from_where_the_gallery_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("q3.py"),
            "import marimo\napp = marimo.App()\n",
        )
        .unwrap();
        let listed = || {
            vec![
                Listed::App {
                    path: "/sales".into(),
                    name: "sales".into(),
                    access: None,
                },
                Listed::App {
                    path: String::new(),
                    name: "home".into(),
                    access: None,
                },
                Listed::Directory {
                    path: "/team".into(),
                    directory: dir.path().to_owned(),
                    rules: Rules::default(),
                    validate: None,
                },
            ]
        };
        let (status, root) = body(&Gallery::new("", listed()), "/").await;
        assert_eq!(status, http::StatusCode::OK);
        assert!(root.contains(r#"<a href="./sales/">sales</a>"#), "{root}");
        assert!(root.contains(r#"<a href="./">home</a>"#), "{root}");
        assert!(
            root.contains(r#"<a href="./team/q3/">team/q3</a>"#),
            "{root}"
        );

        let (_, nested) = body(&Gallery::new("/a/b", listed()), "/").await;
        assert!(
            nested.contains(r#"<a href="../../sales/">sales</a>"#),
            "{nested}"
        );
        assert!(nested.contains(r#"<a href="../../team/q3/">"#), "{nested}");

        let (status, _) = body(&Gallery::new("", listed()), "/favicon.ico").await;
        assert_eq!(status, http::StatusCode::NOT_FOUND);
    }
}
