//! End to end in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/install-chromium`) driven over the DevTools protocol. Logs in through the gateway's
//! login page, waits for the notebook to render, moves the slider with a real key press and
//! sees the dependent cell update. Saves `target/artifacts/browser-notebook.png`.
//!
//! Without Chromium the test warns and returns, except under CI (`CI` set), where it fails.

#[path = "common/cdp.rs"]
mod cdp;
mod common;

use std::time::{Duration, Instant};

use cdp::Browser;
use common::TestServer;
use marimo_rs::{create_app, Token};

#[tokio::test]
async fn login_render_and_move_the_slider_in_chromium() {
    if Browser::executable().is_none() {
        // `cargo test` installs what it needs, as `.ci/run` does (Debian's chromium, as root).
        common::run_install_script("install-chromium");
    }
    if Browser::executable().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is missing: run .ci/install-chromium (CI must not skip browser tests)"
        );
        eprintln!(
            "warning: Chromium not found; skipping the browser test (run .ci/install-chromium)"
        );
        return;
    }
    let token = Token::new("browser-test-token");
    let app = create_app()
        .with_app("/dashboard", common::example_notebook("intro.py"))
        .token(token)
        .build()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), app.start())
        .await
        .unwrap()
        .unwrap();
    let server = TestServer::start(app.clone()).await;

    let browser = Browser::launch().await.expect("Chromium starts");
    let page = browser.new_page().await.unwrap();
    let started = Instant::now();

    // Anonymous: the gateway sends the browser to its login page.
    page.goto(&server.url("/dashboard/")).await.unwrap();
    page.wait_for(
        "document.querySelector('input[name=password]') !== null",
        Duration::from_secs(10),
    )
    .await
    .expect("the login form is shown");
    let login_url = page.eval("location.pathname").await.unwrap();
    assert_eq!(login_url, "/auth/login", "redirected to the login page");

    page.type_into("input[name=password]", "wrong")
        .await
        .unwrap();
    page.press_key("Enter").await.unwrap();
    page.wait_for_text("Invalid password", Duration::from_secs(10))
        .await
        .unwrap();

    page.type_into("input[name=password]", "browser-test-token")
        .await
        .unwrap();
    page.press_key("Enter").await.unwrap();
    page.wait_for_text("Slider value is 3", Duration::from_secs(60))
        .await
        .expect("the notebook renders after login");
    let path = page.eval("location.pathname").await.unwrap();
    assert_eq!(path, "/dashboard/", "back on the notebook after login");
    let rendered = started.elapsed();

    page.focus_deep("[role=slider]").await.unwrap();
    page.press_key("ArrowRight").await.unwrap();
    page.wait_for_text("Slider value is 4", Duration::from_secs(30))
        .await
        .expect("the dependent cell updates");
    page.wait_for_text("its square is 16", Duration::from_secs(10))
        .await
        .unwrap();

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/artifacts/browser-notebook.png");
    page.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    eprintln!(
        "browser: rendered after login in {rendered:?}; screenshot at {}",
        shot.display()
    );

    drop(page);
    drop(browser);
    server.stop().await;
    app.shutdown().await;
}
