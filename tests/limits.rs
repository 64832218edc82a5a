//! Limits per notebook, for real: a notebook that allocates past its memory cap while another
//! notebook is in use, and the cap on concurrent sessions. Real marimo backends, real HTTP and
//! WebSockets.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::marimo::{
    intro_at, kernel, page_until, set_slider, slider_at, until_output, until_slider, Gateway, START,
};
use common::{eventually, ws_connect, ws_until, Site, HTML};
use http::StatusCode;

/// A notebook whose first run allocates `mib` MiB at once.
fn hog(dir: &Path, mib: u64) -> PathBuf {
    let path = dir.join("hog.py");
    std::fs::write(
        &path,
        format!(
            r#"import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo
    return (mo,)


@app.cell
def _(mo):
    mo.md("hog is running")
    return


@app.cell
def _():
    hog = bytearray({mib} << 20)
    return (hog,)
"#
        ),
    )
    .unwrap();
    path
}

const CAP: &str = "This notebook ran out of memory (limit 512 MiB).";

#[tokio::test]
async fn a_notebook_past_its_memory_cap_restarts_while_another_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        intro_at("/intro")
            .with_app("/hog", hog(dir.path(), 1024))
            .memory_limit(512 << 20),
    )
    .await;
    let hog_pid = {
        let pids = gateway.app.backend_pids();
        assert_eq!(pids.len(), 2, "both backends run under the cap");
        pids
    };

    // Someone uses the other notebook.
    let mut intro = kernel(&gateway.ws_url("/intro/ws?session_id=steady"), &[]).await;
    let slider = until_slider(&mut intro).await;

    // The hog's first session runs its cell: the backend tells the page to reload and ends.
    let mut ws = kernel(&gateway.ws_url("/hog/ws?session_id=greedy"), &[]).await;
    ws_until(&mut ws, START, |m| m["op"] == "reload").await;
    // The reloaded page says why, to everyone (this is no loopback-only detail).
    let page = gateway
        .get("/hog/", &[HTML, ("x-forwarded-for", "203.0.113.9")])
        .await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.brief()
    );
    assert!(page.body.contains(CAP), "{}", page.body);
    assert!(page.header("retry-after").is_some());
    let api = gateway.get("/hog/api/version", &[]).await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.body.contains(CAP), "{}", api.body);

    // The other notebook's session never noticed.
    let moved = set_slider(&gateway.url("/intro"), "steady", &slider, 8, &[]).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.brief());
    until_output(&mut intro, &slider_at(8)).await;

    // The hog is back, in a new process, and the event was counted.
    page_until(&gateway, "/hog/", START, |reply| {
        reply.status == StatusCode::OK
    })
    .await;
    assert_eq!(gateway.app.out_of_memory_count(), 1);
    let pids = gateway.app.backend_pids();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids, hog_pid, "the hog's backend was restarted");
    let moved = set_slider(&gateway.url("/intro"), "steady", &slider, 9, &[]).await;
    assert_eq!(moved.status, StatusCode::OK);
    until_output(&mut intro, &slider_at(9)).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_notebook_that_stays_under_its_cap_runs_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let gateway =
        Gateway::start(create_app_with(hog(dir.path(), 64)).memory_limit(512 << 20)).await;
    let mut ws = kernel(&gateway.ws_url("/ws?session_id=modest"), &[]).await;
    until_output(&mut ws, "hog is running").await;
    // The whole notebook ran (the allocation is the last cell) and the backend stayed.
    let pids = gateway.app.backend_pids();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gateway.app.backend_pids(), pids);
    assert_eq!(gateway.app.out_of_memory_count(), 0);
    gateway.stop().await;
}

fn create_app_with(notebook: PathBuf) -> marimo_rs::AppBuilder {
    marimo_rs::create_app().with_app("/", notebook)
}

#[tokio::test]
async fn sessions_over_the_cap_get_a_clear_503_until_one_closes() {
    let gateway = Gateway::start(intro_at("/").max_sessions(1)).await;
    let first = kernel(&gateway.ws_url("/ws?session_id=first"), &[]).await;

    let page = gateway.get("/", &[HTML]).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        page.brief()
    );
    assert!(
        page.body
            .contains("This notebook has reached its limit of 1 concurrent session."),
        "{}",
        page.body
    );
    assert!(page.header("retry-after").is_some());
    let refused = ws_connect(&gateway.ws_url("/ws?session_id=second"), &[]).await;
    assert_eq!(refused.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    // A second tab of the first session (marimo hands the session over) is let through.
    let again = ws_connect(&gateway.ws_url("/ws?session_id=first"), &[]).await;
    assert!(again.is_ok(), "{:?}", again.err());

    drop(first);
    drop(again);
    let page = eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || gateway.get("/", &[HTML]).await,
        |reply| reply.status == StatusCode::OK,
    )
    .await;
    assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"));
    let mut second = kernel(&gateway.ws_url("/ws?session_id=second"), &[]).await;
    until_output(&mut second, "Hello from marimo_rs").await;
    // The first browser coming back to its kernel (marimo keeps it for the session TTL) is
    // never refused, even with the cap taken by someone else.
    let back = ws_connect(&gateway.ws_url("/ws?session_id=first"), &[]).await;
    assert!(back.is_ok(), "{:?}", back.err());
    let third = ws_connect(&gateway.ws_url("/ws?session_id=third"), &[]).await;
    assert_eq!(third.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    gateway.stop().await;
}
