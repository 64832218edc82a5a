//! End to end in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/install-chromium`) driven over the DevTools protocol. Logs in through the gateway's
//! login page, waits for the notebook to render, moves the slider with a real key press and
//! sees the dependent cell update. Saves `target/artifacts/browser-notebook.png`. In marimo's
//! editor (behind the origin guard, with marimo's skew protection on) changes a cell, runs
//! it and saves it to disk.
//!
//! Without Chromium the test warns and returns, except under CI (`CI` set), where it fails.

mod common;

use common::Site;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::cdp::{Browser, Page};
use common::marimo::{intro_at, Gateway};
use marimo_rs::{create_app, Mount, Token};
use serde_json::json;

/// Where a test saves its screenshot: `target/artifacts/{name}`.
fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/artifacts")
        .join(name)
}

#[tokio::test]
async fn login_render_and_move_the_slider_in_chromium() {
    if !Browser::available() {
        return;
    }
    let server =
        Gateway::start(intro_at("/dashboard").token(Token::new("browser-test-token"))).await;

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

    submit_password(&page, "wrong").await;
    page.wait_for_text("Invalid password", Duration::from_secs(10))
        .await
        .unwrap();
    submit_password(&page, "browser-test-token").await;
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

    let shot = artifact("browser-notebook.png");
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
}

/// Types `password` into the login form and submits it with Enter, as a person does.
async fn submit_password(page: &Page, password: &str) {
    page.type_into("input[name=password]", password)
        .await
        .unwrap();
    page.press_key("Enter").await.unwrap();
}

/// A key pressed with the Ctrl modifier (marimo's `Mod` on Linux), as real input events.
async fn press_ctrl(page: &Page, key: &str, code: &str, key_code: i64) {
    const CTRL: i64 = 2;
    for kind in ["rawKeyDown", "keyUp"] {
        page.call(
            "Input.dispatchKeyEvent",
            json!({
                "type": kind,
                "key": key,
                "code": code,
                "windowsVirtualKeyCode": key_code,
                "nativeVirtualKeyCode": key_code,
                "modifiers": CTRL,
            }),
        )
        .await
        .unwrap();
    }
}

/// A folder for a notebook the editor saves: not under `/tmp/` (nor macOS's `/var/folders`),
/// where marimo's frontend takes notebooks for unnamed scratch files and asks for a name
/// instead of saving. The build's `target` folder, else (a checkout under /tmp) the cache.
fn not_scratch_folder() -> PathBuf {
    let scratch = |path: &Path| path.starts_with("/tmp") || path.starts_with("/var/folders");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let parent = if scratch(&target) {
        let home = std::env::var_os("HOME").expect("HOME, for a folder outside /tmp");
        Path::new(&home).join(".cache/marimo-rs-tests")
    } else {
        target
    };
    assert!(
        !scratch(&parent),
        "no folder outside /tmp for the notebook: {parent:?}"
    );
    std::fs::create_dir_all(&parent).unwrap();
    parent
}

/// marimo's own frontend still works behind the origin guard with skew protection on: the
/// editor opens through the gateway, a cell's code is changed and run, and saving writes the
/// change to the notebook file.
#[tokio::test]
async fn edit_run_and_save_a_cell_in_the_editor_in_chromium() {
    if !Browser::available() {
        return;
    }
    let dir = tempfile::tempdir_in(not_scratch_folder()).unwrap();
    let notebook = dir.path().join("edited.py");
    std::fs::write(
        &notebook,
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    \"before\"\n    \
         return\n\n\nif __name__ == \"__main__\":\n    app.run()\n",
    )
    .unwrap();
    let server = Gateway::start(
        create_app()
            .mount("/", Mount::edit(&notebook))
            .token(Token::new("browser-editor-token")),
    )
    .await;

    let browser = Browser::launch().await.expect("Chromium starts");
    let page = browser.new_page().await.unwrap();
    page.goto(&server.url("/?access_token=browser-editor-token"))
        .await
        .unwrap();
    page.wait_for(
        "__deepQuery('.cm-content') !== null",
        Duration::from_secs(60),
    )
    .await
    .expect("the editor shows the cell's code");
    page.wait_for_text("\"before\"", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        page.eval("location.search").await.unwrap(),
        "",
        "the token left the address bar"
    );

    // Replace the cell's code as typing would, and run it (Ctrl-Enter).
    page.focus_deep(".cm-content").await.unwrap();
    press_ctrl(&page, "a", "KeyA", 65).await;
    page.call(
        "Input.insertText",
        json!({ "text": "\"edited in \" + str(6 * 7)" }),
    )
    .await
    .unwrap();
    press_ctrl(&page, "Enter", "Enter", 13).await;
    page.wait_for_text("edited in 42", Duration::from_secs(60))
        .await
        .expect("the changed cell runs and shows its output");

    // Save (Ctrl-S): the file on disk gets the change.
    press_ctrl(&page, "s", "KeyS", 83).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let saved = loop {
        let text = std::fs::read_to_string(&notebook).unwrap();
        if text.contains("str(6 * 7)") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shot = artifact("browser-editor.png");
    page.screenshot(&shot).await.unwrap();
    assert!(
        saved.contains("\"edited in \" + str(6 * 7)") && !saved.contains("\"before\""),
        "the notebook file after saving:\n{saved}"
    );

    drop(page);
    drop(browser);
    server.stop().await;
}
