//! Real notebooks through the gateway: real marimo backends (the managed virtualenv), real
//! HTTP over TCP, a real WebSocket kernel session. These tests need Python and marimo; the
//! crate provisions them itself, and a failure to do so fails the test loudly.

mod common;

use std::time::Duration;

use common::{
    example_notebook, first_script, get, html, output_contains, send, slider_id, start_backends,
    wait_gone, ws_connect, ws_until, TestServer,
};
use http::{Method, StatusCode};
use marimo_rs::{create_app, BuildError};

#[tokio::test]
async fn notebooks_are_served_under_their_prefix_and_at_the_root() {
    let app = create_app()
        .with_app("/dashboard", example_notebook("intro.py"))
        .with_app("", example_notebook("intro.py"))
        .build()
        .unwrap();
    start_backends(&app).await;
    assert_eq!(
        app.backend_pids().len(),
        2,
        "one backend per notebook mount"
    );
    let server = TestServer::start(app.clone()).await;

    let redirect = get(&server.url("/dashboard?theme=dark")).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.header("location"), Some("dashboard/?theme=dark"));

    let notebook_dir = example_notebook("").canonicalize().unwrap();
    for path in ["/dashboard/", "/"] {
        let page = send(Method::GET, &server.url(path), &html(), "").await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            page.body.contains("__MARIMO_MOUNT_CONFIG__"),
            "{path} is marimo's page"
        );
        assert!(page.body.contains(r#""filename": "intro.py""#), "{path}");
        assert!(
            !page.body.contains(notebook_dir.to_str().unwrap()),
            "{path} leaks the notebook's absolute directory"
        );
        // Every frontend URL in the page is relative, so it resolves under the prefix.
        let asset = first_script(&page.body);
        let script = get(&server.url(&format!("{path}{asset}"))).await;
        assert_eq!(script.status, StatusCode::OK, "{path}{asset}");
        assert!(script
            .header("content-type")
            .unwrap()
            .contains("javascript"));
    }

    let version = get(&server.url("/dashboard/api/version")).await;
    assert_eq!(version.status, StatusCode::OK);
    assert_eq!(version.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    // The gateway answers its own health check; {mount}/health reaches the backend.
    assert_eq!(
        get(&server.url("/health")).await.body,
        r#"{"status":"healthy"}"#
    );
    let backend_health = get(&server.url("/dashboard/health")).await;
    assert_eq!(backend_health.status, StatusCode::OK);
    assert!(backend_health.body.contains("healthy"));
    assert_eq!(
        get(&server.url("/dashboard/no/such/thing")).await.status,
        StatusCode::NOT_FOUND
    );

    let pids = app.backend_pids();
    let socket_dir = app.socket_dir().unwrap().to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket_dir).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the socket directory is private");
    server.stop().await;
    app.shutdown().await;
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

#[tokio::test]
async fn websocket_kernel_session_and_ui_element_round_trip() {
    let app = create_app()
        .with_app("/dashboard", example_notebook("intro.py"))
        .build()
        .unwrap();
    start_backends(&app).await;
    let server = TestServer::start(app.clone()).await;
    let ws_url = format!("ws://{}/dashboard/ws?session_id=test-session", server.addr);
    // Even without auth, a page on another site may not open the kernel's socket.
    let foreign = ws_connect(&ws_url, &[("origin", "https://evil.example")]).await;
    assert_eq!(foreign.err(), Some(StatusCode::FORBIDDEN));
    let same_origin = format!("http://{}", server.addr);
    let mut ws = ws_connect(&ws_url, &[("origin", &same_origin)])
        .await
        .expect("WebSocket accepted");

    ws_until(&mut ws, Duration::from_secs(30), |m| {
        m["op"] == "kernel-ready"
    })
    .await;
    let mut slider = None;
    ws_until(&mut ws, Duration::from_secs(30), |m| {
        if let Some(id) = slider_id(m) {
            slider = Some(id);
        }
        output_contains(m, "Slider value is <strong>3</strong>")
    })
    .await;
    let slider = slider.expect("the slider's cell output arrived");

    let body = serde_json::json!({ "objectIds": [slider], "values": [7] }).to_string();
    let set = send(
        Method::POST,
        &server.url("/dashboard/api/kernel/set_ui_element_value"),
        &[
            ("content-type", "application/json"),
            ("marimo-session-id", "test-session"),
        ],
        &body,
    )
    .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let update = ws_until(&mut ws, Duration::from_secs(30), |m| {
        output_contains(m, "Slider value is <strong>7</strong>")
    })
    .await;
    assert!(update["data"]["output"]["data"]
        .as_str()
        .unwrap()
        .contains("<strong>49</strong>"));
    drop(ws);
    app.shutdown().await;
}

#[tokio::test]
async fn a_killed_backend_is_restarted_and_nothing_is_left_behind() {
    let app = create_app()
        .with_app("/nb", example_notebook("intro.py"))
        .build()
        .unwrap();
    start_backends(&app).await;
    let server = TestServer::start(app.clone()).await;
    let first = app.backend_pids()[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_gone(first, Duration::from_secs(5)).await);

    // Right after the crash: a short 503 (starting / restarting page) or 502, never a hang.
    let during = tokio::time::timeout(
        Duration::from_secs(5),
        send(Method::GET, &server.url("/nb/"), &html(), ""),
    )
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = send(Method::GET, &server.url("/nb/"), &html(), "").await;
        if page.status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let second = app.backend_pids()[0];
    assert_ne!(first, second, "a new process serves the notebook");

    server.stop().await;
    drop(app);
    // Dropping the last handle stops the backend without an explicit shutdown.
    assert!(
        wait_gone(second, Duration::from_secs(10)).await,
        "orphan backend {second}"
    );
}

#[tokio::test]
async fn lazy_start_shows_a_starting_page_then_the_notebook() {
    let app = create_app()
        .with_app("/lazy", example_notebook("intro.py"))
        .build()
        .unwrap();
    assert!(
        app.backend_pids().is_empty(),
        "nothing starts before the first request"
    );
    let server = TestServer::start(app.clone()).await;
    let first = send(Method::GET, &server.url("/lazy/"), &html(), "").await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.header("retry-after"), Some("1"));
    assert!(first.body.contains("Starting notebook"), "{}", first.body);
    // API calls wait for the backend instead.
    let version = get(&server.url("/lazy/api/version")).await;
    assert_eq!(version.status, StatusCode::OK, "{version:?}");
    let page = send(Method::GET, &server.url("/lazy/"), &html(), "").await;
    assert_eq!(page.status, StatusCode::OK);
    app.shutdown().await;
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
    let app = create_app()
        .with_app("/x", example_notebook("intro.py"))
        .python(&python)
        .build()
        .unwrap();
    let error = app.start().await.unwrap_err();
    assert!(
        error.to_string().contains("marimo is not installed"),
        "{error}"
    );
    let server = TestServer::start(app.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = send(Method::GET, &server.url("/x/"), &html(), "").await;
        if page.body.contains("could not start") || tokio::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    let app = create_app().with_app("/broken", &broken).build().unwrap();
    let server = TestServer::start(app.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = send(Method::GET, &server.url("/broken/"), &html(), "").await;
        if page.status != StatusCode::SERVICE_UNAVAILABLE || page.body.contains("could not start") {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // marimo either serves its own error page for the unparsable notebook, or the backend
    // fails and the gateway says why.
    if page.status == StatusCode::OK {
        assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"));
    } else {
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.body.contains("could not start"), "{}", page.body);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn token_auth_guards_pages_and_websockets_and_names_the_user() {
    use base64::Engine;
    let app = create_app()
        .with_app("/dashboard", example_notebook("intro.py"))
        .token(marimo_rs::Token::new("sup3rs3cr3t"))
        .build()
        .unwrap();
    start_backends(&app).await;
    let server = TestServer::start(app.clone()).await;
    let ws_url = format!("ws://{}/dashboard/ws?session_id=auth-session", server.addr);

    // No credentials: browsers go to the login page, WebSockets are refused before the backend.
    let page = send(Method::GET, &server.url("/dashboard/"), &html(), "").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.header("location").unwrap().contains("auth/login"),
        "{page:?}"
    );
    assert_eq!(
        ws_connect(&ws_url, &[]).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    let api = get(&server.url("/dashboard/api/version")).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // Basic with any username: the token is the password; the username reaches the notebook.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:sup3rs3cr3t")
    );
    let host = server.addr.to_string();
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
    let origin = format!("http://{host}");
    let mut ws = ws_connect(&ws_url, &[("authorization", &basic), ("origin", &origin)])
        .await
        .expect("authenticated WebSocket accepted");
    ws_until(&mut ws, Duration::from_secs(30), |m| {
        m["op"] == "kernel-ready"
    })
    .await;
    ws_until(&mut ws, Duration::from_secs(30), |m| {
        output_contains(m, "Signed in as: <strong>ada</strong>")
    })
    .await;
    drop(ws);
    server.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn idle_backends_are_stopped_and_start_again_on_demand() {
    let app = create_app()
        .with_app("/idle", example_notebook("intro.py"))
        .idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    start_backends(&app).await;
    let server = TestServer::start(app.clone()).await;
    assert_eq!(
        get(&server.url("/idle/api/version")).await.status,
        StatusCode::OK
    );
    let first = app.backend_pids()[0];
    // An open WebSocket keeps the backend alive past the idle timeout.
    let ws_url = format!("ws://{}/idle/ws?session_id=keepalive", server.addr);
    let mut ws = ws_connect(&ws_url, &[]).await.unwrap();
    ws_until(&mut ws, Duration::from_secs(30), |m| {
        m["op"] == "kernel-ready"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.backend_pids(), vec![first], "busy backend kept");
    drop(ws);
    assert!(
        wait_gone(first, Duration::from_secs(15)).await,
        "idle backend stopped"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !app.backend_pids().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            app.backend_pids()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next API call starts it again and waits for it.
    let again = get(&server.url("/idle/api/version")).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_ne!(app.backend_pids(), vec![first]);
    server.stop().await;
    app.shutdown().await;
}

#[tokio::test]
async fn frontend_files_are_served_by_the_gateway_with_etags_and_compression() {
    let app = create_app()
        .with_app("/nb", example_notebook("intro.py"))
        .build()
        .unwrap();
    let server = TestServer::start(app.clone()).await;

    // Root files come from marimo's installed _static directory, without starting a backend.
    let favicon = get(&server.url("/nb/favicon.ico")).await;
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
    let again = send(
        Method::GET,
        &server.url("/nb/favicon.ico"),
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        get(&server.url("/nb/assets/no-such-file.js")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        app.backend_pids().is_empty(),
        "static files never start Python"
    );

    // A hashed asset from the real page: immutable, compressed once by what the client accepts.
    start_backends(&app).await;
    let page = send(
        Method::GET,
        &server.url("/nb/"),
        &[("accept", "text/html"), ("accept-encoding", "gzip")],
        "",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-encoding"),
        Some("gzip"),
        "proxied HTML is compressed"
    );
    let plain = send(Method::GET, &server.url("/nb/"), &html(), "").await;
    let asset = first_script(&plain.body);
    let url = server.url(&format!("/nb/{asset}"));
    let identity = get(&url).await;
    assert_eq!(identity.status, StatusCode::OK);
    assert_eq!(
        identity.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(identity.header("content-encoding"), None);
    for coding in ["br", "gzip"] {
        let compressed = send(Method::GET, &url, &[("accept-encoding", coding)], "").await;
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
    app.shutdown().await;
}
