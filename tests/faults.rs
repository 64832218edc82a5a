//! Backend faults, with figures: what the client saw and how long recovery took.
//! Real marimo backends; each test prints one `fault:` line (run with `--nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::marimo::{intro_at, kernel, page_until, Gateway};
use common::{eventually, get, signal, wait_gone, Site, HTML};
use futures_util::StreamExt;
use http::StatusCode;
use nix::sys::signal::Signal;

/// Polls `url` until it answers 200; returns how long that took.
async fn time_to_200(url: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        limit,
        Duration::from_millis(50),
        async || get(url).await,
        |reply| reply.status == StatusCode::OK,
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn kill_9_during_20_live_sessions() {
    let gateway = Gateway::start(intro_at("/nb")).await;
    let mut sessions = Vec::new();
    for i in 0..20 {
        let url = gateway.ws_url(&format!("/nb/ws?session_id=kill-{i}"));
        sessions.push(kernel(&url, &[]).await);
    }
    let victim = gateway.app.backend_pids()[0];
    let killed_at = Instant::now();
    signal(victim, Signal::SIGKILL);

    // Every open session is closed promptly (the tunnel ends with the backend's socket).
    let mut closed_after = Duration::ZERO;
    for ws in &mut sessions {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(None | Some(Err(_))) => break,
                Ok(Some(Ok(message))) if message.is_close() => break,
                Ok(Some(Ok(_))) => {}
                Err(_) => panic!("a WebSocket stayed open after its backend died"),
            }
        }
        closed_after = closed_after.max(killed_at.elapsed());
    }
    // What a client sees right away: API calls wait (bounded) for the replacement backend.
    let api = gateway.url("/nb/api/version");
    let first = tokio::time::timeout(Duration::from_secs(35), get(&api))
        .await
        .expect("no hang");
    let first_after = killed_at.elapsed();
    time_to_200(&api, Duration::from_secs(60)).await;
    let recovered_after = killed_at.elapsed();
    let replacement = gateway.app.backend_pids()[0];
    assert_ne!(replacement, victim);
    assert!(wait_gone(victim, Duration::from_secs(5)).await);
    assert_eq!(
        gateway.get("/health", &[]).await.status,
        StatusCode::OK,
        "gateway unaffected"
    );
    println!(
        "fault: kill -9 with 20 sessions: all 20 WebSockets closed within {closed_after:?}; \
         the first API request after the kill got {} after {first_after:?}; serving (200) \
         {recovered_after:?} after the kill",
        first.status,
    );
    drop(sessions);
    gateway.stop().await;
    assert!(wait_gone(replacement, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_stalled_backend_times_out_then_is_replaced() {
    let gateway = Gateway::start(intro_at("/nb").response_timeout(Duration::from_secs(2))).await;
    let stalled = gateway.app.backend_pids()[0];
    let stopped_at = Instant::now();
    signal(stalled, Signal::SIGSTOP);

    let asked = Instant::now();
    let api = gateway.url("/nb/api/version");
    let reply = get(&api).await;
    let waited = asked.elapsed();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert!(waited < Duration::from_secs(5), "504 after {waited:?}");
    // The watchdog notices the missed health checks, kills the stopped process and starts a
    // new one; the next requests are served again.
    time_to_200(&api, Duration::from_secs(60)).await;
    let recovered_after = stopped_at.elapsed();
    assert!(
        wait_gone(stalled, Duration::from_secs(10)).await,
        "stalled process killed"
    );
    let replacement = gateway.app.backend_pids()[0];
    assert_ne!(replacement, stalled);
    println!(
        "fault: SIGSTOP: client got {} after {waited:?}; backend replaced and serving \
         {recovered_after:?} after the stall",
        reply.status,
    );
    gateway.stop().await;
}

/// A stand-in interpreter that passes the Python check but fails every backend start, and
/// counts its starts in `starts.log`.
fn failing_python(dir: &std::path::Path) -> std::path::PathBuf {
    let python = dir.join("python-that-fails");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then\n  echo '{{\"python\": \"{0}\", \"marimo\": \"{1}\", \"static\": \"/nonexistent\", \"uvicorn\": \"0\"}}'\n  exit 0\nfi\necho start >> {2}\necho 'boom: simulated failure at start-up' >&2\nexit 3\n",
        python.display(),
        marimo_rs::MARIMO_VERSION,
        dir.join("starts.log").display()
    );
    std::fs::write(&python, script).unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    python
}

#[tokio::test]
async fn a_backend_that_keeps_failing_is_marked_failed_not_restarted_forever() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::serve(
        intro_at("/nb")
            .python(failing_python(dir.path()))
            // Only the backend's own starts are counted.
            .warm_pool(0)
            .build()
            .unwrap(),
    )
    .await;
    let started = Instant::now();
    let first = gateway.get("/nb/", &[HTML]).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    let page = page_until(&gateway, "/nb/", Duration::from_secs(60), |page| {
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        page.body.contains("gave up")
    })
    .await;
    let gave_up_after = started.elapsed();
    assert!(
        page.body.contains("boom: simulated failure at start-up"),
        "stderr tail shown: {}",
        page.body
    );
    let starts = || {
        std::fs::read_to_string(dir.path().join("starts.log"))
            .unwrap()
            .lines()
            .count()
    };
    let counted = starts();
    assert_eq!(counted, 5, "restarts are capped");
    // Further requests are answered at once and start nothing.
    for _ in 0..10 {
        let again = gateway.get("/nb/api/version", &[]).await;
        assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(starts(), counted);
    println!("fault: exits at start: 503 with the stderr tail at once; marked failed after {counted} starts in {gave_up_after:?}; no further restarts");
    gateway.stop().await;
}

/// Polls the page at `{server}/nb/` until its body contains `text`; returns the page.
async fn page_saying(server: &common::TestServer, text: &str) -> common::Reply {
    page_until(server, "/nb/", Duration::from_secs(60), |page| {
        page.body.contains(text)
    })
    .await
}

#[tokio::test]
async fn a_blocked_socket_path_is_reported() {
    let app = intro_at("/nb").build().unwrap();
    // "Fill" the socket directory: a directory with content sits where the socket must go.
    let blocker = app.socket_dir().unwrap().join("nb0.sock");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("junk"), "x").unwrap();
    let gateway = Gateway::serve(app).await;
    let started = Instant::now();
    let page = page_saying(&gateway, "could not start").await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    let reported_after = started.elapsed();
    // Clearing the path lets the next attempt succeed.
    std::fs::remove_dir_all(&blocker).unwrap();
    let recovery = time_to_200(&gateway.url("/nb/api/version"), Duration::from_secs(90)).await;
    println!(
        "fault: blocked socket path: 503 with the reason after {reported_after:?}; served {recovery:?} after the path was cleared"
    );
    let pids = gateway.app.backend_pids();
    let app = gateway.app.clone();
    gateway.stop().await;
    for pid in pids {
        assert!(wait_gone(pid, Duration::from_secs(10)).await);
    }
    let left: Vec<_> = std::fs::read_dir(app.socket_dir().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "sock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_start_failure_detail_is_shown_to_local_clients_only() {
    use marimo_rs::RemoteAddr;
    use tower::ServiceBuilder;

    const DETAIL: &str = "boom: simulated failure at start-up";
    let dir = tempfile::tempdir().unwrap();
    let python = failing_python(dir.path());
    for show_tracebacks in [false, true] {
        let app = intro_at("/nb")
            .python(&python)
            .show_tracebacks(show_tracebacks)
            .build()
            .unwrap();
        // The same service seen from a loopback client, from a remote client (as a host's own
        // server, or a proxy it trusts, reports it), and from a host that reports no address.
        let local = Gateway::serve(app.clone()).await;
        let remote = common::TestServer::start(
            ServiceBuilder::new()
                .map_request(|mut req: http::Request<hyper::body::Incoming>| {
                    let addr = "192.0.2.7:40000".parse().unwrap();
                    req.extensions_mut().insert(RemoteAddr(addr));
                    req
                })
                .service(app.clone()),
        )
        .await;
        let unknown = common::TestServer::start(
            ServiceBuilder::new()
                .map_request(|mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().remove::<RemoteAddr>();
                    req
                })
                .service(app.clone()),
        )
        .await;
        // Once it has given up, no restart is in progress to answer "starting" instead.
        page_saying(&local, "gave up").await;
        // (server, X-Forwarded-For, whether the client counts as local)
        let cases = [
            (&local.server, None, true),
            // A proxy on the same machine forwarding someone else's request.
            (&local.server, Some("203.0.113.9"), false),
            (&remote, None, false),
            (&unknown, None, false),
        ];
        for (server, forwarded_for, is_local) in cases {
            for accept in ["text/html", "application/json"] {
                let mut headers = vec![("accept", accept)];
                headers.extend(forwarded_for.map(|client| ("x-forwarded-for", client)));
                for path in ["/nb/", "/nb/api/version"] {
                    let reply = server.get(path, &headers).await;
                    let case = format!(
                        "show_tracebacks={show_tracebacks} local={is_local} {headers:?} {path}"
                    );
                    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
                    assert!(reply.body.contains("could not start"), "{case}: {reply:?}");
                    assert_eq!(
                        reply.body.contains(DETAIL),
                        is_local || show_tracebacks,
                        "{case}: {}",
                        reply.body
                    );
                }
            }
        }
        local.stop().await;
    }
}
