//! Real notebooks through the gateway: real marimo backends (the managed virtualenv), real
//! HTTP over TCP, a real WebSocket kernel session. These tests need Python and marimo; the
//! crate provisions them itself, and a failure to do so fails the test loudly.

mod common;

use std::time::Duration;

use common::marimo::{
    intro_at, kernel, load_page, managed_python, page_until, set_slider, slider_at, until_output,
    until_slider, version, Gateway,
};
use common::{
    assert_sent_to_login, eventually, example_notebook, wait_gone, ws_connect, Site, TestServer,
    HTML,
};
use http::StatusCode;
use marimo_rs::{create_app, BuildError, MarimoService};

#[tokio::test]
async fn notebooks_are_served_under_their_prefix_and_at_the_root() {
    let gateway =
        Gateway::start(intro_at("/dashboard").with_app("", example_notebook("intro.py"))).await;
    assert_eq!(
        gateway.app.backend_pids().len(),
        2,
        "one backend per notebook mount"
    );

    let redirect = gateway.get("/dashboard?theme=dark", &[]).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.header("location"), Some("dashboard/?theme=dark"));

    let notebook_dir = example_notebook("").canonicalize().unwrap();
    for path in ["/dashboard/", "/"] {
        let page = load_page(&gateway, path, &[]).await;
        assert!(page.body.contains(r#""filename": "intro.py""#), "{path}");
        assert!(
            !page.body.contains(notebook_dir.to_str().unwrap()),
            "{path} leaks the notebook's absolute directory"
        );
    }

    let version = version(&gateway.url("/dashboard")).await;
    assert_eq!(version.status, StatusCode::OK);
    assert_eq!(version.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    // The gateway answers its own health check; {mount}/health reaches the backend.
    assert_eq!(
        gateway.get("/health", &[]).await.body,
        r#"{"status":"healthy"}"#
    );
    let backend_health = gateway.get("/dashboard/health", &[]).await;
    assert_eq!(backend_health.status, StatusCode::OK);
    assert!(backend_health.body.contains("healthy"));
    assert_eq!(
        gateway.get("/dashboard/no/such/thing", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let pids = gateway.app.backend_pids();
    let app = gateway.app.clone();
    let socket_dir = app.socket_dir().unwrap().to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the socket directory is private");
    gateway.stop().await;
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).await,
            "backend {pid} still running"
        );
    }
    let sockets: Vec<_> = std::fs::read_dir(&socket_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "sock"))
        .collect();
    assert!(sockets.is_empty(), "sockets left behind: {sockets:?}");
}

/// The README's recipe for serving notebooks under a prefix of an axum app, as written
/// there: [`the_readme_shows_the_prefix_recipe_as_tested`] checks that README.md holds the
/// lines between the markers, character for character.
fn readme_prefix_recipe() -> Result<(MarimoService, axum::Router), Box<dyn std::error::Error>> {
    // README recipe: begin
    let marimo = create_app()
        .with_app("/marimo", "examples/notebooks/intro.py")
        .build()?;
    let host = axum::Router::new()
        .route("/api/health", axum::routing::get(|| async { "ok" }))
        .fallback_service(marimo.clone());
    // README recipe: end
    Ok((marimo, host))
}

#[test]
fn the_readme_shows_the_prefix_recipe_as_tested() {
    let source = include_str!("notebook.rs");
    let begin = "    // README recipe: begin\n";
    let start = source.find(begin).unwrap() + begin.len();
    let end = start + source[start..].find("    // README recipe: end").unwrap();
    // In the README the recipe is the body of `main`, in a code block of a list item.
    let as_in_readme: String = source[start..end]
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    assert!(
        readme.contains(&as_in_readme),
        "README.md does not show the prefix recipe as tested:\n{as_in_readme}"
    );
}

#[tokio::test]
async fn the_readme_prefix_recipe_serves_the_notebook_under_its_prefix() {
    let (marimo, host) = readme_prefix_recipe().unwrap();
    common::marimo::start_backends(&marimo).await;
    let server = TestServer::start(host).await;
    assert_eq!(server.get("/api/health", &[]).await.body, "ok");

    // The bare prefix: the crate's redirect to the page's URL (ending in `/`), with the query.
    let bare = server.get("/marimo?q=1", &[HTML]).await;
    assert_eq!(bare.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(bare.header("location"), Some("marimo/?q=1"));
    // There the page and the assets it loads relative to itself are served.
    load_page(&server, "/marimo/", &[]).await;
    let with_query = server.get("/marimo/?q=1", &[HTML]).await;
    assert!(
        common::marimo::is_notebook_page(&with_query),
        "{}",
        with_query.brief()
    );
    server.stop().await;
    marimo.shutdown().await;
}

#[tokio::test]
async fn websocket_kernel_session_and_ui_element_round_trip() {
    let gateway = Gateway::start(intro_at("/dashboard")).await;
    let ws_url = gateway.ws_url("/dashboard/ws?session_id=test-session");
    // Even without auth, a page on another site may not open the kernel's socket.
    let foreign = ws_connect(&ws_url, &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.err(), Some(StatusCode::FORBIDDEN));
    let mut ws = kernel(&ws_url, &[("origin", &gateway.origin())]).await;
    let slider = until_slider(&mut ws).await;

    let set = set_slider(&gateway.url("/dashboard"), "test-session", &slider, 7, &[]).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let update = until_output(&mut ws, &slider_at(7)).await;
    assert!(update["data"]["output"]["data"]
        .as_str()
        .unwrap()
        .contains("<strong>49</strong>"));
    drop(ws);
    gateway.stop().await;
}

#[tokio::test]
async fn a_killed_backend_is_restarted_and_nothing_is_left_behind() {
    let gateway = Gateway::start(intro_at("/nb")).await;
    let first = gateway.app.backend_pids()[0];
    common::signal(first, nix::sys::signal::Signal::SIGKILL);
    assert!(wait_gone(first, Duration::from_secs(5)).await);

    // Right after the crash: a short 503 (starting / restarting page) or 502, never a hang.
    let during = tokio::time::timeout(Duration::from_secs(5), gateway.get("/nb/", &[HTML]))
        .await
        .expect("no hang while the backend is down");
    assert!(
        [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::BAD_GATEWAY,
            StatusCode::OK
        ]
        .contains(&during.status),
        "{during:?}"
    );
    if during.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(during.header("retry-after").is_some());
        assert!(
            during.body.contains("http-equiv=\"refresh\""),
            "self-refreshing page"
        );
    }

    // It recovers by itself.
    page_until(&gateway, "/nb/", Duration::from_secs(60), |page| {
        page.status == StatusCode::OK
    })
    .await;
    let second = gateway.app.backend_pids()[0];
    assert_ne!(first, second, "a new process serves the notebook");

    let Gateway { app, server } = gateway;
    server.stop().await;
    drop(app);
    // Dropping the last handle stops the backend without an explicit shutdown.
    assert!(
        wait_gone(second, Duration::from_secs(10)).await,
        "orphan backend {second}"
    );
}

/// `python`, behind a script that sleeps `secs` before every backend start. The interpreter
/// check (`-c`) runs at once and names the script as the interpreter, so that backends are
/// started through it.
fn slow_python(dir: &std::path::Path, python: &std::path::Path, secs: u32) -> std::path::PathBuf {
    let slow = dir.join("slow-python");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then\n  '{python}' \"$@\" | sed 's#\"python\": \"[^\"]*\"#\"python\": \"{slow}\"#'\n  exit 0\nfi\nsleep {secs}\nexec '{python}' \"$@\"\n",
        python = python.display(),
        slow = slow.display(),
    );
    std::fs::write(&slow, script).unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    slow
}

#[tokio::test]
async fn lazy_start_shows_a_starting_page_then_the_notebook() {
    // A start that takes longer than a page load waits (1 s): a Python slower to start than
    // this machine's.
    let dir = tempfile::tempdir().unwrap();
    let python = slow_python(dir.path(), &managed_python().await, 3);
    let app = intro_at("/lazy").python(python).build().unwrap();
    assert!(
        app.backend_pids().is_empty(),
        "nothing starts before the first request"
    );
    let gateway = Gateway::serve(app).await;
    let first = gateway.get("/lazy/", &[HTML]).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.header("retry-after"), Some("1"));
    assert!(first.body.contains("Starting notebook"), "{}", first.body);
    // API calls wait for the backend instead.
    let version = version(&gateway.url("/lazy")).await;
    assert_eq!(version.status, StatusCode::OK, "{version:?}");
    let page = gateway.get("/lazy/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::OK);
    gateway.stop().await;
}

#[test]
fn missing_notebook_is_a_build_error() {
    let error = create_app()
        .with_app("/x", "no/such/notebook.py")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, BuildError::NotebookNotFound { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("no/such/notebook.py"));
}

#[tokio::test]
async fn python_without_marimo_is_named_in_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("python-without-marimo");
    // A real interpreter with site-packages disabled: it cannot import marimo.
    std::fs::write(&python, "#!/bin/sh\nexec python3 -S \"$@\"\n").unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let app = intro_at("/x").python(&python).build().unwrap();
    let error = app.start().await.unwrap_err();
    assert!(
        error.to_string().contains("marimo is not installed"),
        "{error}"
    );
    let gateway = Gateway::serve(app).await;
    let page = page_until(&gateway, "/x/", Duration::from_secs(10), |page| {
        page.body.contains("could not start")
    })
    .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.body.contains("marimo is not installed"),
        "{}",
        page.body
    );
    assert!(page.body.contains("pip install marimo=="), "{}", page.body);
}

#[tokio::test]
async fn a_notebook_that_raises_at_import_is_reported_not_retried_in_a_loop() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "this is not python (\n").unwrap();
    let gateway = Gateway::serve(create_app().with_app("/broken", &broken).build().unwrap()).await;
    let page = page_until(&gateway, "/broken/", Duration::from_secs(60), |page| {
        page.status != StatusCode::SERVICE_UNAVAILABLE || page.body.contains("could not start")
    })
    .await;
    // marimo either serves its own error page for the unparsable notebook, or the backend
    // fails and the gateway says why.
    if page.status == StatusCode::OK {
        assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"));
    } else {
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.body.contains("could not start"), "{}", page.body);
    }
    gateway.stop().await;
}

#[tokio::test]
async fn token_auth_guards_pages_and_websockets_and_names_the_user() {
    use base64::Engine;
    let gateway =
        Gateway::start(intro_at("/dashboard").token(marimo_rs::Token::new("sup3rs3cr3t"))).await;
    let ws_url = gateway.ws_url("/dashboard/ws?session_id=auth-session");

    // No credentials: browsers go to the login page, WebSockets are refused before the backend.
    assert_sent_to_login(&gateway.get("/dashboard/", &[HTML]).await);
    assert_eq!(
        ws_connect(&ws_url, &[]).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    let api = version(&gateway.url("/dashboard")).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // Basic with any username: the token is the password; the username reaches the notebook.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:sup3rs3cr3t")
    );
    let foreign = ws_connect(
        &ws_url,
        &[("authorization", &basic), ("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(
        foreign.err(),
        Some(StatusCode::FORBIDDEN),
        "foreign Origin refused"
    );
    let origin = gateway.origin();
    let mut ws = kernel(&ws_url, &[("authorization", &basic), ("origin", &origin)]).await;
    until_output(&mut ws, "Signed in as: <strong>ada</strong>").await;
    drop(ws);
    gateway.stop().await;
}

#[tokio::test]
async fn idle_backends_are_stopped_and_start_again_on_demand() {
    let gateway = Gateway::start(intro_at("/idle").idle_timeout(Duration::from_secs(2))).await;
    let app = &gateway.app;
    let base = gateway.url("/idle");
    assert_eq!(version(&base).await.status, StatusCode::OK);
    let first = app.backend_pids()[0];
    // An open WebSocket keeps the backend alive past the idle timeout.
    let ws = kernel(&gateway.ws_url("/idle/ws?session_id=keepalive"), &[]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.backend_pids(), vec![first], "busy backend kept");
    drop(ws);
    assert!(
        wait_gone(first, Duration::from_secs(15)).await,
        "idle backend stopped"
    );
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        async || app.backend_pids(),
        Vec::is_empty,
    )
    .await;
    // The next API call starts it again and waits for it.
    let again = version(&base).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_ne!(app.backend_pids(), vec![first]);
    gateway.stop().await;
}

#[tokio::test]
async fn frontend_files_are_served_by_the_gateway_with_etags_and_compression() {
    let app = intro_at("/nb").build().unwrap();
    let gateway = Gateway::serve(app).await;

    // Root files come from marimo's installed _static directory, without starting a backend.
    let favicon = gateway.get("/nb/favicon.ico", &[]).await;
    assert_eq!(favicon.status, StatusCode::OK);
    assert_eq!(
        favicon.header("content-type"),
        Some("image/vnd.microsoft.icon")
    );
    let etag = favicon.header("etag").unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.len() > 10,
        "strong ETag: {etag}"
    );
    let again = gateway
        .get("/nb/favicon.ico", &[("if-none-match", &etag)])
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        gateway.get("/nb/assets/no-such-file.js", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        gateway.app.backend_pids().is_empty(),
        "static files never start Python"
    );

    // A hashed asset from the real page: immutable, compressed once by what the client accepts.
    common::marimo::start_backends(&gateway.app).await;
    let page = gateway
        .get(
            "/nb/",
            &[("accept", "text/html"), ("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-encoding"),
        Some("gzip"),
        "proxied HTML is compressed"
    );
    let plain = gateway.get("/nb/", &[HTML]).await;
    let asset = common::marimo::first_script(&plain.body);
    let path = format!("/nb/{asset}");
    let identity = gateway.get(&path, &[]).await;
    assert_eq!(identity.status, StatusCode::OK);
    assert_eq!(
        identity.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(identity.header("content-encoding"), None);
    for coding in ["br", "gzip"] {
        let compressed = gateway.get(&path, &[("accept-encoding", coding)]).await;
        assert_eq!(compressed.header("content-encoding"), Some(coding));
        assert_eq!(compressed.header("etag"), identity.header("etag"));
        let size: usize = compressed
            .header("content-length")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            size < identity.body.len() / 2,
            "{coding}: {size} vs {}",
            identity.body.len()
        );
    }
    gateway.stop().await;
}
