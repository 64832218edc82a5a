//! `with_dynamic_directory`: every notebook of a folder, found at request time, with real
//! marimo backends over real HTTP and WebSockets. marimo's DynamicDirectoryMiddleware cases
//! (tests/_server/test_asgi.py) plus the safety, caching, LRU, validate, per-notebook layer
//! and identity behaviour marimo_rs adds.

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::marimo::{kernel, load_page, output_contains, until_output, Gateway, OUTPUT_WAIT};
use common::raw::round_trip;
use common::{
    eventually, example_notebook, wait_gone, ws_until, Endpoint, Reply, Site, TestServer, Ws, HTML,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use marimo_rs::{
    create_app, AppBuilder, Body, BuildError, MarimoService, Mount, MountPrefix, NotebookFile,
    User, Validation,
};
use tower::layer::layer_fn;
use tower::util::MapRequestLayer;
use tower::ServiceExt;

type Inner = marimo_rs::MountService;

/// The example notebook (title cell, slider, signed-in user cell) with its title replaced.
fn notebook(title: &str) -> String {
    let intro = std::fs::read_to_string(example_notebook("intro.py")).unwrap();
    assert!(intro.contains("# Hello from marimo_rs"));
    intro.replace("# Hello from marimo_rs", &format!("# {title}"))
}

fn put(dir: &Path, relative: &str, content: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A kernel session of the directory notebook `notebook` (`team/q3`), ready.
async fn open_session(
    server: &TestServer,
    notebook: &str,
    session: &str,
    headers: &[(&str, &str)],
) -> Ws {
    kernel(
        &server.ws_url(&format!("/apps/{notebook}/ws?session_id={session}")),
        headers,
    )
    .await
}

/// `GET {notebook}/api/version` (waits for the backend): the notebook's backend answers.
async fn version(server: &TestServer, notebook: &str) -> Reply {
    common::marimo::version(&server.url(notebook)).await
}

/// The fixture's directory at `/apps`, served (its notebooks start on demand).
async fn serve_fixture(fixture: &Fixture) -> Gateway {
    Gateway::serve(
        create_app()
            .with_dynamic_directory("/apps", &fixture.dir)
            .build()
            .unwrap(),
    )
    .await
}

/// `/apps` serving `dir`, started on demand, behind a real server (Python provisioned).
async fn apps(builder: AppBuilder) -> Gateway {
    Gateway::start(builder.startup_wait(Duration::from_secs(90))).await
}

/// Whether the app reports no running backend within `timeout` (a stopped process is seen
/// gone by `/proc` a moment before its supervisor records it).
async fn no_backends_within(app: &MarimoService, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !app.backend_pids().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.backend_pids().is_empty()
}

/// The one backend left once a stopped one has been recorded as gone.
async fn settled_pid(app: &MarimoService) -> u32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.backend_pids().len() != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one_pid(app)
}

fn one_pid(app: &MarimoService) -> u32 {
    let pids = app.backend_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    pids[0]
}

/// A directory with notebooks to serve and everything that must never be served.
struct Fixture {
    _base: tempfile::TempDir,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("notebooks");
    let nb = notebook("Sales");
    put(&dir, "sales.py", &nb);
    put(&dir, "team/q3.py", &nb);
    put(&dir, "a&b.py", &nb);
    put(&dir, "_private.py", &nb);
    put(&dir, ".hidden.py", &nb);
    put(&dir, "sub/_x.py", &nb);
    put(&dir, "_dir/y.py", &nb);
    put(&dir, ".git/z.py", &nb);
    put(&dir, "notes.txt", &nb);
    put(&dir, "helper.py", "def helper():\n    return 42\n");
    // Outside the directory: reachable only by escaping it.
    put(base.path(), "secret.py", &notebook("Secret"));
    put(base.path(), "outside/secret.py", &notebook("Secret"));
    std::os::unix::fs::symlink(base.path().join("outside/secret.py"), dir.join("escape.py"))
        .unwrap();
    std::os::unix::fs::symlink(base.path().join("outside"), dir.join("linked")).unwrap();
    Fixture { _base: base, dir }
}

#[test]
fn the_mount_path_and_the_directory_are_checked_at_build() {
    let fixture = fixture();
    for root in ["", "/"] {
        let error = create_app()
            .with_dynamic_directory(root, &fixture.dir)
            .build()
            .unwrap_err();
        assert!(
            matches!(error, BuildError::InvalidMountPath { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("/apps"),
            "the message suggests a path: {error}"
        );
    }
    let error = create_app()
        .with_dynamic_directory("/apps", fixture.dir.join("missing"))
        .build()
        .unwrap_err();
    assert!(
        matches!(error, BuildError::DirectoryNotFound { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("missing"), "{error}");
    let error = create_app()
        .with_dynamic_directory("/apps", fixture.dir.join("sales.py"))
        .build()
        .unwrap_err();
    assert!(
        matches!(error, BuildError::DirectoryNotFound { .. }),
        "{error}"
    );
    assert!(create_app()
        .with_dynamic_directory("/apps/", &fixture.dir)
        .build()
        .is_ok());
}

#[tokio::test]
async fn unsafe_missing_and_hidden_paths_are_404_and_start_nothing() {
    let fixture = fixture();
    let server = serve_fixture(&fixture).await;
    let app = &server.app;

    // The control case: the same requests can reach a notebook.
    let valid = server.get("/apps/sales", &[]).await;
    assert_eq!(valid.status, StatusCode::TEMPORARY_REDIRECT);

    for path in [
        // not under the mount, missing files
        "/other/",
        "/apps/missing/",
        "/apps/missing",
        "/apps/team/missing/",
        // hidden and underscore names, in any segment
        "/apps/_private/",
        "/apps/_private",
        "/apps/.hidden/",
        "/apps/sub/_x/",
        "/apps/_dir/y/",
        "/apps/.git/z/",
        // traversal in every spelling
        "/apps/../secret/",
        "/apps/team/../../secret/",
        "/apps/%2e%2e/secret/",
        "/apps/%2E%2E/secret/",
        "/apps/%252e%252e/secret/",
        "/apps/..%2fsecret/",
        "/apps/..%2Fsecret",
        "/apps/..%5csecret/",
        "/apps/sales/..%2f..%2fsecret/",
        "/apps/sales/%2e%2e/%2e%2e/secret/",
        // NUL
        "/apps/sales%00/",
        "/apps/sales/%00",
        // absolute paths
        "/apps//etc/passwd",
        "/apps/%2fetc%2fpasswd/",
        // not a .py notebook
        "/apps/notes.txt/",
        "/apps/notes/",
        "/apps/sales.py/",
        "/apps/helper/",
        "/apps/helper",
        // symlinks that lead out of the directory
        "/apps/escape/",
        "/apps/escape",
        "/apps/linked/secret/",
    ] {
        let reply = server.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
        assert_eq!(reply.body, "Not Found", "{path}");
    }
    // A raw backslash: refused by the HTTP parser or not found, never served.
    for request in [
        "GET /apps/..\\secret/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        "GET /apps/team\\..\\..\\secret/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ] {
        let response = round_trip(server.addr, request.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 404") || response.starts_with("HTTP/1.1 400"),
            "{request:?}: {response}"
        );
    }
    assert!(app.backend_pids().is_empty(), "nothing was started");
    server.stop().await;
}

#[tokio::test]
async fn the_index_lists_visible_notebooks_with_relative_escaped_links() {
    let fixture = fixture();
    let server = serve_fixture(&fixture).await;
    let app = &server.app;

    let redirect = server.get("/apps?x=1", &[]).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.header("location"), Some("apps/?x=1"));

    let index = server.get("/apps/", &[]).await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(index.header("cache-control"), Some("no-store"));
    let body = &index.body;
    assert!(body.contains(r#"<a href="./sales/">sales</a>"#), "{body}");
    assert!(
        body.contains(r#"<a href="./team/q3/">team/q3</a>"#),
        "{body}"
    );
    assert!(body.contains(r#"<a href="./a%26b/">a&amp;b</a>"#), "{body}");
    for hidden in [
        "_private", ".hidden", "_x", "_dir", ".git", "notes", "helper", "escape", "secret",
        "linked",
    ] {
        assert!(!body.contains(hidden), "{hidden} is listed: {body}");
    }
    // The listed links work: a relative link from /apps/ reaches the notebook.
    let linked = server.get("/apps/a%26b", &[]).await;
    assert_eq!(linked.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(linked.header("location"), Some("a%26b/"));

    let post = server.send(Method::POST, "/apps/", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(app.backend_pids().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn nested_notebooks_redirects_assets_websocket_and_one_backend_per_file() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path();
    put(dir, "sales.py", &notebook("Sales report"));
    put(dir, "team/q3.py", &notebook("Team Q3 numbers"));
    put(dir, "a/b/c/d/deep.py", &notebook("Deep down"));
    let server = apps(create_app().with_dynamic_directory("/apps", dir)).await;
    let app = &server.app;
    assert!(
        app.backend_pids().is_empty(),
        "directory notebooks start on demand"
    );

    for (path, location) in [
        ("/apps/sales?x=1&y=two", "sales/?x=1&y=two"),
        ("/apps/team/q3", "q3/"),
        ("/apps/team/q3?tab=2", "q3/?tab=2"),
        ("/apps/a/b/c/d/deep?k=v", "deep/?k=v"),
    ] {
        let redirect = server.get(path, &[]).await;
        assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT, "{path}");
        assert_eq!(redirect.header("location"), Some(location), "{path}");
    }
    assert!(app.backend_pids().is_empty(), "redirects start nothing");

    let reply = version(&server, "/apps/team/q3").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    let q3 = one_pid(app);

    let page = load_page(&server, "/apps/team/q3/", &[]).await;
    assert!(page.body.contains(r#""filename": "q3.py""#));
    assert!(
        !page.body.contains(dir.to_str().unwrap()),
        "the directory is not leaked"
    );

    let mut ws = open_session(&server, "team/q3", "nested-1", &[]).await;
    until_output(&mut ws, "Team Q3 numbers").await;
    drop(ws);

    // Every request for the same file used the same backend.
    assert_eq!(
        version(&server, "/apps/team/q3").await.status,
        StatusCode::OK
    );
    assert_eq!(one_pid(app), q3, "one backend per file");

    let deep = version(&server, "/apps/a/b/c/d/deep").await;
    assert_eq!(deep.status, StatusCode::OK, "{deep:?}");
    let pids = app.backend_pids();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&q3));
    let mut ws = open_session(&server, "a/b/c/d/deep", "deep-1", &[]).await;
    until_output(&mut ws, "Deep down").await;
    drop(ws);

    server.stop().await;
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).await,
            "backend {pid} still running"
        );
    }
}

#[tokio::test]
async fn files_added_and_deleted_at_runtime_are_picked_up() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path();
    let server = apps(create_app().with_dynamic_directory("/apps", dir)).await;
    let app = &server.app;

    assert_eq!(
        server.get("/apps/late/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(server
        .get("/apps/", &[])
        .await
        .body
        .contains("No notebooks."));

    put(dir, "late.py", &notebook("Added later"));
    let reply = version(&server, "/apps/late").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let pid = one_pid(app);
    assert!(server
        .get("/apps/", &[])
        .await
        .body
        .contains(r#"href="./late/""#));

    std::fs::remove_file(dir.join("late.py")).unwrap();
    let gone = server.get("/apps/late/", &[HTML]).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(
        version(&server, "/apps/late").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        wait_gone(pid, Duration::from_secs(15)).await,
        "the deleted notebook's backend stopped"
    );
    assert!(
        no_backends_within(app, Duration::from_secs(5)).await,
        "{:?}",
        app.backend_pids()
    );
    assert!(!server.get("/apps/", &[]).await.body.contains("late"));

    // Put back, it is served again (by a new backend).
    put(dir, "late.py", &notebook("Added later"));
    assert_eq!(version(&server, "/apps/late").await.status, StatusCode::OK);
    assert_ne!(one_pid(app), pid);
    server.stop().await;
}

/// A per-notebook layer that reports what it saw on response headers.
fn reporting_layer() -> impl tower::Layer<Inner, Service = impl Endpoint> + Send + Sync + 'static {
    layer_fn(|inner: Inner| {
        tower::service_fn(move |req: Request<Body>| {
            let file = req
                .extensions()
                .get::<NotebookFile>()
                .map(|file| file.as_path().display().to_string())
                .unwrap_or_else(|| "-".into());
            let prefix = req
                .extensions()
                .get::<MountPrefix>()
                .map(|prefix| prefix.as_str().to_owned())
                .unwrap_or_else(|| "-".into());
            let inner = inner.clone();
            async move {
                let mut response = inner.oneshot(req).await?;
                let headers = response.headers_mut();
                headers.insert("x-notebook-file", HeaderValue::try_from(file).unwrap());
                headers.insert("x-mount-prefix", HeaderValue::try_from(prefix).unwrap());
                Ok::<_, Infallible>(response)
            }
        })
    })
}

/// Sets `User` from a test header, standing in for the host's own auth middleware.
fn test_login() -> MapRequestLayer<impl Fn(Request<Body>) -> Request<Body> + Clone> {
    MapRequestLayer::new(|mut req: Request<Body>| {
        let name = req
            .headers()
            .get("x-test-login")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(name) = name {
            req.extensions_mut().insert(User::new(name));
        }
        req
    })
}

#[tokio::test]
async fn the_validate_callback_allows_denies_or_answers_and_layers_see_the_file() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path();
    for name in ["open", "secret", "forbidden"] {
        put(dir, &format!("{name}.py"), &notebook(name));
    }
    let builder = create_app()
        .layer(test_login())
        .mount(
            "/apps",
            Mount::directory(dir)
                .validate(|notebook, request| {
                    let user = request
                        .extensions
                        .get::<User>()
                        .map(|u| u.name().to_owned());
                    let notebook = notebook.to_owned();
                    async move {
                        tokio::task::yield_now().await;
                        match notebook.to_str().unwrap() {
                            "secret.py" => Validation::Deny,
                            "forbidden.py" => Validation::Respond(
                                Response::builder()
                                    .status(StatusCode::FORBIDDEN)
                                    .body(Body::from(format!(
                                        "forbidden for {}",
                                        user.as_deref().unwrap_or("anonymous")
                                    )))
                                    .unwrap(),
                            ),
                            _ => Validation::Allow,
                        }
                    }
                })
                .layer(reporting_layer()),
        )
        .mount(
            "/single",
            Mount::app(example_notebook("intro.py")).layer(reporting_layer()),
        );
    let server = apps(builder).await;
    let app = &server.app;
    // `start()` started the `with_app` notebook; directory notebooks start on demand.
    let single_pid = one_pid(app);

    for path in ["/apps/secret/", "/apps/secret", "/apps/secret/api/version"] {
        let denied = server.get(path, &[]).await;
        assert_eq!(denied.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            denied.header("x-notebook-file").is_none(),
            "denied before the layers"
        );
    }
    let forbidden = server
        .get("/apps/forbidden/", &[("x-test-login", "bob")])
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.body, "forbidden for bob");
    assert_eq!(
        server.get("/apps/open", &[]).await.status,
        StatusCode::TEMPORARY_REDIRECT
    );

    let index = server.get("/apps/", &[]).await;
    assert!(index.body.contains(r#"href="./open/""#), "{}", index.body);
    assert!(
        !index.body.contains("secret") && !index.body.contains("forbidden"),
        "{}",
        index.body
    );

    let allowed = version(&server, "/apps/open").await;
    assert_eq!(allowed.status, StatusCode::OK, "{allowed:?}");
    let expected = std::path::absolute(dir.join("open.py")).unwrap();
    assert_eq!(
        allowed.header("x-notebook-file"),
        Some(expected.to_str().unwrap())
    );
    assert_eq!(allowed.header("x-mount-prefix"), Some("/apps/open"));
    let pids = app.backend_pids();
    assert_eq!(pids.len(), 2, "only the allowed notebook started: {pids:?}");
    assert!(pids.contains(&single_pid));

    // `with_app` mounts give their layers the notebook file too.
    let single = version(&server, "/single").await;
    assert_eq!(single.status, StatusCode::OK, "{single:?}");
    let expected = example_notebook("intro.py").canonicalize().unwrap();
    assert_eq!(
        single.header("x-notebook-file"),
        Some(expected.to_str().unwrap())
    );
    assert_eq!(single.header("x-mount-prefix"), Some("/single"));
    server.stop().await;
}

#[tokio::test]
async fn the_host_user_reaches_the_notebook_and_a_client_header_does_not() {
    use base64::Engine;
    let base = tempfile::tempdir().unwrap();
    put(base.path(), "whoami.py", &notebook("Who am I"));
    let server = apps(
        create_app().layer(test_login()).mount(
            "/apps",
            Mount::directory(base.path())
                // A sync callback that reads the host's `User`: the anonymous get nothing.
                .validate_sync(|_, request| {
                    let signed_in = request.extensions.get::<User>().is_some();
                    let forging = request.headers.contains_key("x-forging");
                    (signed_in || forging).into()
                }),
        ),
    )
    .await;
    assert_eq!(
        server.get("/apps/whoami/", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let forged =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"name":"mallory","meta":{}}"#);
    let signed_in_as = async |session: &str, headers: &[(&str, &str)], expected: &str| {
        let mut ws = open_session(&server, "whoami", session, headers).await;
        ws_until(&mut ws, OUTPUT_WAIT, |m| {
            assert!(
                !output_contains(m, "mallory"),
                "the forged identity reached the notebook"
            );
            output_contains(m, expected)
        })
        .await;
    };
    let ada = "Signed in as: <strong>ada</strong>";
    signed_in_as("as-ada", &[("x-test-login", "ada")], ada).await;
    let forging_ada = [("x-test-login", "ada"), ("x-marimo-rs-user", &forged)];
    signed_in_as("ada-forging", &forging_ada, ada).await;
    let forger = [("x-forging", "1"), ("x-marimo-rs-user", &forged)];
    signed_in_as("forger", &forger, "Not signed in.").await;
    server.stop().await;
}

#[tokio::test]
async fn a_re_pointed_directory_symlink_serves_the_new_version() {
    let base = tempfile::tempdir().unwrap();
    put(base.path(), "v1/report.py", &notebook("Version one"));
    put(base.path(), "v2/report.py", &notebook("Version two"));
    let current = base.path().join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let server = apps(create_app().with_dynamic_directory("/apps", &current)).await;
    let app = &server.app;

    let mut ws = open_session(&server, "report", "before", &[]).await;
    until_output(&mut ws, "Version one").await;
    drop(ws);
    let old = one_pid(app);

    // An atomic deploy: a new symlink renamed over the old one.
    let next = base.path().join("next");
    std::os::unix::fs::symlink("v2", &next).unwrap();
    std::fs::rename(&next, &current).unwrap();

    let mut ws = open_session(&server, "report", "after", &[]).await;
    until_output(&mut ws, "Version two").await;
    drop(ws);
    assert!(
        wait_gone(old, Duration::from_secs(15)).await,
        "the old version's backend stopped"
    );
    assert_ne!(settled_pid(app).await, old);
    server.stop().await;
}

#[tokio::test]
async fn beyond_max_backends_the_least_recently_used_idle_one_stops() {
    let base = tempfile::tempdir().unwrap();
    put(base.path(), "a.py", &notebook("Notebook A"));
    put(base.path(), "b.py", &notebook("Notebook B"));
    let server =
        apps(create_app().mount("/apps", Mount::directory(base.path()).max_backends(1))).await;
    let app = &server.app;

    assert_eq!(version(&server, "/apps/a").await.status, StatusCode::OK);
    let a = one_pid(app);
    assert_eq!(version(&server, "/apps/b").await.status, StatusCode::OK);
    assert!(
        wait_gone(a, Duration::from_secs(15)).await,
        "a was stopped to make room for b"
    );
    let b = settled_pid(app).await;
    assert_ne!(a, b);

    // A backend with an open WebSocket is never stopped for another one.
    let ws = open_session(&server, "b", "keep-b", &[]).await;
    let busy = server.get("/apps/a/api/version", &[]).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE, "{busy:?}");
    assert!(busy.header("retry-after").is_some());
    assert_eq!(one_pid(app), b);

    // Once it closes, the next notebook can take its place.
    drop(ws);
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || version(&server, "/apps/a").await,
        |reply| reply.status == StatusCode::OK,
    )
    .await;
    assert!(wait_gone(b, Duration::from_secs(15)).await);
    server.stop().await;
}

#[tokio::test]
async fn every_gallery_lists_the_apps_notebooks() {
    use http_body_util::BodyExt as _;
    let app = marimo_rs::create_app()
        .with_dynamic_directory("/nb", example_notebook("intro.py").parent().unwrap())
        .with_gallery("/")
        .with_gallery("/all")
        .build()
        .unwrap();
    for (path, link) in [("/", "./nb/intro/"), ("/all/", "../nb/intro/")] {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8_lossy(&bytes);
        assert!(page.contains(link), "{path} lists no {link}:\n{page}");
    }
    app.shutdown().await;
}
