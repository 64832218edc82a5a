//! Limits per notebook, for real: a notebook that allocates past its memory cap while another
//! notebook is in use, and the cap on concurrent sessions. Real marimo backends, real HTTP and
//! WebSockets.

mod common;

use std::time::Duration;

use common::marimo::{
    feed_hog, hog_notebook, intro_at, kernel, move_slider, page_until, until_output, until_slider,
    Gateway, START,
};
use common::{eventually, ws_connect, ws_until, Site, HTML};
use http::StatusCode;
use marimo_rs::create_app;

const CAP: &str = "This notebook ran out of memory (limit 512 MiB).";

#[tokio::test]
async fn a_notebook_past_its_memory_cap_restarts_while_another_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        intro_at("/intro")
            .with_app("/hog", hog_notebook(dir.path()))
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

    // Someone asks the hog for 1 GiB: its backend tells the page to reload and ends.
    let mut ws = kernel(&gateway.ws_url("/hog/ws?session_id=greedy"), &[]).await;
    let asked = feed_hog(&mut ws, &gateway.url("/hog"), "greedy", 1024).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.brief());
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
    move_slider(&mut intro, &gateway.url("/intro"), "steady", &slider, 8).await;

    // The hog is back, in a new process, and the event was counted.
    page_until(&gateway, "/hog/", START, |reply| {
        reply.status == StatusCode::OK
    })
    .await;
    assert_eq!(gateway.app.out_of_memory_count(), 1);
    let pids = gateway.app.backend_pids();
    assert_eq!(pids.len(), 2);
    assert_ne!(pids, hog_pid, "the hog's backend was restarted");
    move_slider(&mut intro, &gateway.url("/intro"), "steady", &slider, 9).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_notebook_that_stays_under_its_cap_runs_as_usual() {
    let dir = tempfile::tempdir().unwrap();
    let hog = hog_notebook(dir.path());
    let gateway = Gateway::start(create_app().with_app("/", hog).memory_limit(512 << 20)).await;
    let mut ws = kernel(&gateway.ws_url("/ws?session_id=modest"), &[]).await;
    let asked = feed_hog(&mut ws, &gateway.url(""), "modest", 256).await;
    assert_eq!(asked.status, StatusCode::OK, "{}", asked.brief());
    until_output(&mut ws, "holding 256 MiB").await;
    // The backend stays: 256 MiB fit under the cap.
    let pids = gateway.app.backend_pids();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gateway.app.backend_pids(), pids);
    assert_eq!(gateway.app.out_of_memory_count(), 0);
    gateway.stop().await;
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

#[tokio::test]
async fn a_cap_too_small_to_start_says_to_raise_it() {
    let app = intro_at("/").memory_limit(40 << 20).build().unwrap();
    let gateway = Gateway::serve(app).await;
    // This test's client is on this machine: the page shows why the notebook cannot start.
    let page = page_until(&gateway, "/", START, |reply| {
        reply.body.contains("raise the memory limit")
    })
    .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.body.contains("(limit 40 MiB)"), "{}", page.body);
    gateway.stop().await;
}
