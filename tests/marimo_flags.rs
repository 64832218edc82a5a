//! marimo's `run`/`edit` flags, each through the real `marimo-rs` binary with real marimo
//! backends, HTTP and WebSockets: several files and folders (the gallery), `--watch`,
//! `--proxy`, `--skew-protection`, `--show-tracebacks`, `--redirect-console-to-browser`,
//! `--asset-url`, `-- ARGS`, `edit --timeout`, `MARIMO_SESSION_COOKIE_SECURE`, and the limits
//! (`--memory-limit`, `--max-sessions`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::marimo::{
    feed_hog, hog_notebook, kernel, move_slider, page_until, server_token, set_slider, slider_at,
    until_output, until_slider, KERNEL_WAIT, START,
};
use common::process::{marimo_rs, MarimoRs, Spawned, STOP};
use common::HTML;
use common::{descendants, example_notebook, send, wait_gone, ws_connect, ws_until, Site, Ws};
use futures_util::StreamExt as _;
use http::{Method, StatusCode};
use serde_json::Value;

/// `marimo-rs ARGS --port 0 --headless`, started.
async fn start(args: &[&str]) -> MarimoRs {
    MarimoRs::start(
        marimo_rs(&[args, &["--port", "0", "--headless"]].concat()),
        None,
    )
    .await
}

/// The kernel WebSocket URL of session `session` under `base` (`""`, `/a`).
fn ws_of(server: &MarimoRs, base: &str, session: &str) -> String {
    server.ws_url(&format!("{base}/ws?session_id={session}"))
}

/// A copy of the example notebook at `dir/name`, greeting with `greeting` instead of `Hello`.
fn intro_copy(dir: &Path, name: &str, greeting: &str) -> PathBuf {
    let code = std::fs::read_to_string(example_notebook("intro.py"))
        .unwrap()
        .replace("Hello", greeting);
    let path = dir.join(name);
    std::fs::write(&path, code).unwrap();
    path
}

/// A notebook that prints, shows what it was given on the command line, then raises.
fn probe(dir: &Path) -> PathBuf {
    let path = dir.join("probe.py");
    std::fs::write(
        &path,
        r#"import marimo

app = marimo.App()


@app.cell
def _():
    import sys
    import marimo as mo
    return mo, sys


@app.cell
def _(mo, sys):
    print("printed-by-the-notebook")
    size = mo.cli_args().get("size") or 0
    mo.md(f"size plus one is {size + 1}; argc {len(sys.argv)}")
    return


@app.cell
def _():
    raise ValueError("boom")
"#,
    )
    .unwrap();
    path
}

/// Every text message of `ws` until one satisfies `want` (included), within the kernel wait.
async fn messages_until(ws: &mut Ws, mut want: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + KERNEL_WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no wanted message; seen: {seen:?}"));
        let message = next.expect("WebSocket closed").expect("WebSocket error");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            let done = want(&value);
            seen.push(value);
            if done {
                return seen;
            }
        }
    }
}

/// The cell error marimo sends for the probe's `raise`.
fn is_cell_error(message: &Value) -> bool {
    message["op"] == "cell-op" && message["data"]["output"]["channel"] == "marimo-error"
}

/// The [`probe`]'s messages from `kernel-ready` to its cell error, served by `marimo-rs run
/// probe.py --no-token FLAGS`.
async fn probe_messages(flags: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let notebook = probe(dir.path());
    let notebook = notebook.to_str().unwrap();
    let server = start(&[&["run", notebook, "--no-token"], flags].concat()).await;
    let mut ws = kernel(&ws_of(&server, "", "probe"), &[]).await;
    let messages = messages_until(&mut ws, is_cell_error).await;
    drop(ws);
    server.terminate().await;
    messages
}

#[tokio::test]
async fn run_serves_several_files_and_folders_behind_a_gallery() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = intro_copy(dir.path(), "alpha.py", "Alpha");
    let folder = dir.path().join("more");
    std::fs::create_dir(&folder).unwrap();
    intro_copy(&folder, "beta.py", "Beta");
    std::fs::write(folder.join("notes.txt"), "not a notebook").unwrap();
    let server = start(&[
        "run",
        alpha.to_str().unwrap(),
        folder.to_str().unwrap(),
        "--no-token",
    ])
    .await;
    assert_eq!(
        server.page(),
        server.url("/"),
        "the gallery is the page to open"
    );

    let gallery = server.get("/", &[HTML]).await;
    assert_eq!(gallery.status, StatusCode::OK);
    assert!(
        gallery.body.contains(r#"<a href="./alpha/">alpha</a>"#),
        "{}",
        gallery.body
    );
    assert!(
        gallery
            .body
            .contains(r#"<a href="./more/beta/">more/beta</a>"#),
        "{}",
        gallery.body
    );
    assert!(!gallery.body.contains("notes"), "{}", gallery.body);

    let mut first = kernel(&ws_of(&server, "/alpha", "gallery-a"), &[]).await;
    until_output(&mut first, "Alpha from marimo_rs").await;
    let mut second = kernel(&ws_of(&server, "/more/beta", "gallery-b"), &[]).await;
    until_output(&mut second, "Beta from marimo_rs").await;
    drop((first, second));
    server.terminate().await;
}

#[tokio::test]
async fn watch_restarts_a_changed_notebook_and_open_pages_reload() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = intro_copy(dir.path(), "live.py", "Before");
    // No warm pool: the restarted backend would be the pool's process, which this test
    // would take for the old backend (it tells them apart by pid).
    let server = start(&[
        "run",
        notebook.to_str().unwrap(),
        "--no-token",
        "--watch",
        "--warm-pool",
        "0",
    ])
    .await;
    let mut ws = kernel(&ws_of(&server, "", "watched"), &[]).await;
    until_output(&mut ws, "Before from marimo_rs").await;
    let backend = descendants(server.pid());

    intro_copy(dir.path(), "live.py", "After");
    // marimo's run-mode --watch message: the page reloads itself.
    ws_until(&mut ws, START, |m| m["op"] == "reload").await;
    page_until(&server, "/", START, |page| page.status == StatusCode::OK).await;
    let mut reloaded = kernel(&ws_of(&server, "", "watched-again"), &[]).await;
    until_output(&mut reloaded, "After from marimo_rs").await;
    for pid in backend {
        assert!(
            wait_gone(pid, STOP).await,
            "the old backend {pid} was replaced"
        );
    }
    drop(reloaded);
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("notebook file changed"), "{stderr}");
}

#[tokio::test]
async fn edit_watch_reloads_a_changed_file_in_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = intro_copy(dir.path(), "edited.py", "Before");
    let server = start(&["edit", notebook.to_str().unwrap(), "--no-token", "--watch"]).await;
    let mut ws = kernel(&ws_of(&server, "", "editing"), &[]).await;
    let backend = descendants(server.pid());

    // Changed by another program: marimo's editor takes the new code in place (the kernel,
    // which holds the user's work, is not restarted).
    intro_copy(dir.path(), "edited.py", "Elsewhere");
    let changed = messages_until(&mut ws, |m| m.to_string().contains("Elsewhere from")).await;
    assert!(
        !changed.iter().any(|m| m["op"] == "reload"),
        "the editor is not reloaded: {changed:?}"
    );
    assert!(
        backend.iter().all(|pid| common::process_alive(*pid)),
        "the same backend"
    );
    drop(ws);
    server.terminate().await;
}

#[tokio::test]
async fn proxy_sets_the_printed_url_and_the_allowed_host_and_origin() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port().to_string()
    };
    let notebook = example_notebook("intro.py");
    let command = marimo_rs(&[
        "run",
        notebook.to_str().unwrap(),
        "--no-token",
        "--headless",
        "--port",
        &port,
        "--proxy",
        "notebooks.example:8443",
    ]);
    let mut process = Spawned::start("marimo-rs", command, None).await;
    assert_eq!(process.line(START).await, "http://notebooks.example:8443/");

    let local = format!("http://127.0.0.1:{port}");
    let host = ("host", "notebooks.example:8443");
    let page = send(Method::GET, &format!("{local}/"), &[HTML, host], "").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.brief());
    let elsewhere = [HTML, ("host", "rebound.example")];
    let refused = send(Method::GET, &format!("{local}/"), &elsewhere, "").await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "other names still are not"
    );

    // A page served through the proxy opens its kernel WebSocket.
    let origin = ("origin", "http://notebooks.example:8443");
    let url = format!("ws://127.0.0.1:{port}/ws?session_id=proxied");
    let mut ws = kernel(&url, &[host, origin]).await;
    until_output(&mut ws, "Hello from marimo_rs").await;
    let foreign = ws_connect(&url, &[host, ("origin", "http://other.example")]).await;
    assert_eq!(foreign.err(), Some(StatusCode::FORBIDDEN));
    drop(ws);
    let (status, _, _) = process.terminate(STOP).await;
    assert!(status.success());
}

#[tokio::test]
async fn skew_protection_is_on_by_default_and_off_with_no_skew_protection() {
    let notebook = example_notebook("intro.py");
    let notebook = notebook.to_str().unwrap();
    for (flags, protected) in [
        (&[][..], true),
        (&["--skew-protection"][..], true),
        (&["--no-skew-protection"][..], false),
    ] {
        let server = start(&[&["run", notebook, "--no-token"], flags].concat()).await;
        let page = server.get("/", &[HTML]).await;
        let token = server_token(&page.body);
        let mut ws = kernel(&ws_of(&server, "", "skew"), &[]).await;
        let slider = until_slider(&mut ws).await;
        let base = server.url("");
        let bare = set_slider(&base, "skew", &slider, 5, &[]).await;
        if protected {
            assert_eq!(
                bare.status,
                StatusCode::UNAUTHORIZED,
                "{flags:?}: {}",
                bare.brief()
            );
            let with_token = [("marimo-server-token", token.as_str())];
            let moved = set_slider(&base, "skew", &slider, 5, &with_token).await;
            assert_eq!(moved.status, StatusCode::OK, "{flags:?}: {}", moved.brief());
        } else {
            assert_eq!(bare.status, StatusCode::OK, "{flags:?}: {}", bare.brief());
        }
        until_output(&mut ws, &slider_at(5)).await;
        drop(ws);
        server.terminate().await;
    }
}

#[tokio::test]
async fn show_tracebacks_sends_the_traceback_of_a_cell_error() {
    for (flags, shown) in [
        (&["--show-tracebacks"][..], true),
        (&[][..], false),
        (&["--show-tracebacks", "--no-show-tracebacks"][..], false),
    ] {
        let messages = probe_messages(flags).await;
        let error = &messages.last().unwrap()["data"]["output"]["data"][0];
        if shown {
            assert_eq!(error["msg"], "boom", "{error}");
            let traceback = error["traceback"].as_str().unwrap_or_default();
            assert!(traceback.contains("ValueError"), "{flags:?}: {error}");
        } else {
            // marimo's run mode hides what a cell raised behind an error id.
            assert_eq!(error["type"], "internal", "{flags:?}: {error}");
            assert!(!error.to_string().contains("boom"), "{flags:?}: {error}");
        }
    }
}

#[tokio::test]
async fn redirect_console_to_browser_sends_what_notebooks_print() {
    for (flags, redirected) in [
        (&["--redirect-console-to-browser"][..], true),
        (&[][..], false),
    ] {
        let messages = probe_messages(flags).await;
        let printed = messages.iter().any(|message| {
            message["op"] == "cell-op"
                && message["data"]["console"]
                    .to_string()
                    .contains("printed-by-the-notebook")
        });
        assert_eq!(printed, redirected, "{flags:?}: {messages:?}");
    }
}

#[tokio::test]
async fn asset_url_points_the_page_at_the_given_frontend_with_the_version() {
    let notebook = example_notebook("intro.py");
    let server = start(&[
        "run",
        notebook.to_str().unwrap(),
        "--no-token",
        "--asset-url",
        "https://cdn.example/marimo/{version}",
    ])
    .await;
    let page = server.get("/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::OK);
    let version = marimo_rs::MARIMO_VERSION;
    let expected = format!("https://cdn.example/marimo/{version}/assets/");
    assert!(page.body.contains(&expected), "{expected} in {}", page.body);
    assert!(
        !page.body.contains("src=\"./assets/"),
        "no script from this server"
    );
    server.terminate().await;
}

#[tokio::test]
async fn arguments_after_two_dashes_reach_the_notebooks() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = probe(dir.path());
    let command = marimo_rs(&[
        "run",
        notebook.to_str().unwrap(),
        "--no-token",
        "--port",
        "0",
        "--headless",
        "--",
        "--size",
        "41",
    ]);
    let server = MarimoRs::start(command, None).await;
    let mut ws = kernel(&ws_of(&server, "", "arguments"), &[]).await;
    // `mo.cli_args()` parsed the number as marimo does; `sys.argv` is the file and the two.
    until_output(&mut ws, "size plus one is 42; argc 3").await;
    drop(ws);
    server.terminate().await;
}

#[tokio::test]
async fn edit_timeout_stops_the_server_once_nobody_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = intro_copy(dir.path(), "idle.py", "Idle");
    // 0.05 minutes: 3 seconds.
    let mut server = start(&[
        "edit",
        notebook.to_str().unwrap(),
        "--no-token",
        "--timeout",
        "0.05",
    ])
    .await;
    let ws = kernel(&ws_of(&server, "", "editing"), &[]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        server.process.child.try_wait().unwrap().is_none(),
        "an open notebook keeps the server up past the timeout"
    );
    drop(ws);
    let status = tokio::time::timeout(Duration::from_secs(30), server.process.child.wait())
        .await
        .expect("the server stops by itself")
        .unwrap();
    assert!(status.success(), "{status}: {}", server.process.stderr());
    assert!(
        server
            .process
            .stderr()
            .contains("no connection for the --timeout"),
        "{}",
        server.process.stderr()
    );
}

#[tokio::test]
async fn marimo_session_cookie_secure_marks_the_session_cookie_secure() {
    let notebook = example_notebook("intro.py");
    for (value, secure) in [(Some("true"), true), (Some("0"), false), (None, false)] {
        let mut command = marimo_rs(&[
            "run",
            notebook.to_str().unwrap(),
            "--token=cookie-test-token",
            "--port",
            "0",
            "--headless",
        ]);
        match value {
            Some(value) => command.env("MARIMO_SESSION_COOKIE_SECURE", value),
            None => command.env_remove("MARIMO_SESSION_COOKIE_SECURE"),
        };
        let server = MarimoRs::start(command, None).await;
        let signed_in = server
            .get("/?access_token=cookie-test-token", &[HTML])
            .await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
        let cookie = signed_in.header("set-cookie").unwrap().to_owned();
        assert_eq!(cookie.contains("; Secure"), secure, "{value:?}: {cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        server.terminate().await;
    }
}

#[tokio::test]
async fn limits_a_notebook_past_its_memory_cap_and_sessions_over_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let hog = hog_notebook(dir.path());
    let intro = intro_copy(dir.path(), "intro.py", "Hello");
    let server = start(&[
        "run",
        hog.to_str().unwrap(),
        intro.to_str().unwrap(),
        "--no-token",
        "--no-skew-protection",
        "--memory-limit",
        "512M",
        "--max-sessions",
        "1",
    ])
    .await;
    // Someone uses the well-behaved notebook.
    let mut steady = kernel(&ws_of(&server, "/intro", "steady"), &[]).await;
    let slider = until_slider(&mut steady).await;
    let second = ws_connect(&ws_of(&server, "/intro", "second"), &[]).await;
    assert_eq!(
        second.err(),
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "one session each"
    );
    let full = server.get("/intro/", &[HTML]).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        full.body.contains("limit of 1 concurrent session"),
        "{}",
        full.body
    );

    // Someone else asks the hog for 1 GiB.
    let mut greedy = kernel(&ws_of(&server, "/hog", "greedy"), &[]).await;
    let asked = feed_hog(&mut greedy, &server.url("/hog"), "greedy", 1024).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.brief());
    ws_until(&mut greedy, START, |m| m["op"] == "reload").await;
    drop(greedy);
    let told = server.get("/hog/", &[HTML]).await;
    assert_eq!(told.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        told.body
            .contains("This notebook ran out of memory (limit 512 MiB)."),
        "{}",
        told.body
    );

    // The other notebook kept working throughout; the hog comes back.
    move_slider(&mut steady, &server.url("/intro"), "steady", &slider, 6).await;
    page_until(&server, "/hog/", START, |page| {
        page.status == StatusCode::OK
    })
    .await;
    drop(steady);
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("notebook backend ran out of memory; restarting it"),
        "{stderr}"
    );
}
