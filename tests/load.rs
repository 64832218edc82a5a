//! Load through the real `marimo-rs` binary and a real marimo backend, with figures:
//! many keep-alive connections plus WebSocket sessions that move a slider and must see every
//! update, in order. Asserts 0 failed requests, 0 lost or reordered WebSocket updates, a flat
//! gateway RSS and file descriptors back near the baseline afterwards.
//!
//! CI runs a smaller, shorter variant (200 connections + 20 sessions, 10 s). The full
//! run (1,000 connections + 100 sessions, 60 s): `LOAD_FULL=1 cargo test --release --test load
//! -- --nocapture`. Loopback only; everything it starts is stopped by PID.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::marimo::{first_script, kernel, slider_at};
use common::process::{marimo_rs, MarimoRs};
use common::{example_notebook, ws_until, Site, HTML};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// `marimo-rs run intro.py --no-token`, logging warnings only.
async fn start_gateway() -> MarimoRs {
    let notebook = example_notebook("intro.py");
    MarimoRs::start(
        marimo_rs(&[
            "run",
            "--no-token",
            // The load's POSTs carry no page, hence no server token.
            "--no-skew-protection",
            "--headless",
            "--port",
            "0",
            "--log-level",
            "warn",
            notebook.to_str().unwrap(),
        ]),
        None,
    )
    .await
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Requests that failed, and how the first one did.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Failures {
    fn record(&self, what: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.first.lock().unwrap().get_or_insert(what);
    }
}

/// One keep-alive connection sending requests back to back until `deadline`.
async fn connection(
    addr: String,
    paths: Arc<Vec<String>>,
    deadline: Instant,
    ok: Arc<AtomicU64>,
    failed: Arc<Failures>,
) {
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut i = 0;
    while Instant::now() < deadline {
        let path = &paths[i % paths.len()];
        i += 1;
        // hyper's HTTP/1 client takes a request only once its connection task has finished
        // the previous exchange; sent before that, it is refused by the client itself
        // ("connection was not ready"), without a byte on the wire. That race, under load,
        // was this test's rare failure. A connection the gateway closed fails here.
        if let Err(error) = sender.ready().await {
            failed.record(format!("{path}: connection closed: {error:?}"));
            return;
        }
        let request = Request::get(path.as_str())
            .header("host", &addr)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let failure = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(_) if status == StatusCode::OK => None,
                    Ok(_) => Some(format!("{path}: {status}")),
                    Err(error) => Some(format!("{path}: body: {error:?}")),
                }
            }
            Err(error) => Some(format!("{path}: {error:?}")),
        };
        match failure {
            None => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(what) => {
                failed.record(what);
                return;
            }
        }
    }
}

/// A WebSocket session that moves the slider through values and must see each dependent
/// output, in order. Returns the number of updates seen.
async fn session(addr: String, id: usize, deadline: Instant) -> u64 {
    let session = format!("load-{id}");
    let mut ws = kernel(&format!("ws://{addr}/ws?session_id={session}"), &[]).await;
    ws_until(&mut ws, Duration::from_secs(60), |m| {
        m["op"] == "completed-run"
    })
    .await;
    // One client per session: its calls reuse a keep-alive connection, as a browser's do.
    let client = common::client();
    let mut updates = 0;
    let mut value = 3;
    // At least one update per session, then as many as fit before the deadline.
    loop {
        value = value % 10 + 1;
        let body = serde_json::json!({ "objectIds": ["vblA-0"], "values": [value] }).to_string();
        let request = Request::post(format!("http://{addr}/api/kernel/set_ui_element_value"))
            .header("content-type", "application/json")
            .header("marimo-session-id", &session)
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        let response = client.request(request).await.expect("set_ui_element_value");
        assert_eq!(response.status(), StatusCode::OK);
        let want = slider_at(value);
        // Anything other than the expected next value would be a lost or reordered update.
        ws_until(&mut ws, Duration::from_secs(60), |m| {
            let data = m["data"]["output"]["data"].as_str().unwrap_or("");
            if data.contains("Slider value is") {
                assert!(
                    data.contains(&want),
                    "session {id}: expected {want}, got {data}"
                );
                true
            } else {
                false
            }
        })
        .await;
        updates += 1;
        if Instant::now() >= deadline {
            return updates;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_loses_nothing_and_leaks_nothing() {
    let full = std::env::var_os("LOAD_FULL").is_some();
    let (connections, sessions, duration) = if full {
        (1000, 100, Duration::from_secs(60))
    } else {
        (200, 20, Duration::from_secs(10))
    };
    let gateway = start_gateway().await;
    let pid = gateway.pid();
    let addr = gateway.origin().trim_start_matches("http://").to_owned();
    // Warm up: the backend is up and the asset cache has the page's main script.
    let page = common::send(http::Method::GET, &gateway.url("/"), &[HTML], "").await;
    assert_eq!(page.status, StatusCode::OK);
    let asset = first_script(&page.body);
    let paths = Arc::new(vec![
        "/api/version".to_owned(),
        format!("/{asset}"),
        "/health".to_owned(),
    ]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline_fds = fds(pid);
    let baseline_rss = rss_kib(pid);

    let started = Instant::now();
    let deadline = started + duration;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Failures::default());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(connection(
            addr.clone(),
            paths.clone(),
            deadline,
            ok.clone(),
            failed.clone(),
        )));
    }
    let ws_tasks: Vec<_> = (0..sessions)
        .map(|i| tokio::spawn(session(addr.clone(), i, deadline)))
        .collect();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        samples.push(rss_kib(pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let peak_fds = fds(pid);
    for task in tasks {
        task.await.unwrap();
    }
    let mut updates = 0;
    for task in ws_tasks {
        updates += task.await.expect("a WebSocket session failed");
    }
    let elapsed = started.elapsed();
    // Let closed connections drain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_fds = fds(pid);
    let after_rss = rss_kib(pid);

    let ok = ok.load(Ordering::Relaxed);
    let first_failure = failed.first.lock().unwrap().clone();
    let failed = failed.count.load(Ordering::Relaxed);
    // Flat means no growth once every connection is open: compare the second quarter of the
    // run (ramp-up done) with the last quarter.
    let quarter = (samples.len() / 4).max(1);
    let peak = |window: &[u64]| window.iter().copied().max().unwrap_or(0);
    let early = peak(&samples[quarter.min(samples.len() - 1)..(2 * quarter).min(samples.len())]);
    let late = peak(&samples[samples.len() - quarter..]);
    println!(
        "load: {connections} keep-alive connections + {sessions} WebSocket sessions for {elapsed:.1?}: \
         {ok} requests OK ({:.0} req/s), {failed} failed; {updates} slider updates, all seen in order; \
         gateway RSS {baseline_rss} KiB before, peak {early} KiB in the 2nd quarter and {late} KiB in the last quarter of the run, {after_rss} KiB after; \
         fds {baseline_fds} before, {peak_fds} at peak, {after_fds} after",
        ok as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(failed, 0, "failed requests; the first: {first_failure:?}");
    assert!(updates >= sessions as u64, "every session moved the slider");
    assert!(
        late <= early + early / 10 + 4096,
        "gateway RSS grew from {early} to {late} KiB"
    );
    // Closed client connections are gone; the backend pool keeps at most a few idle sockets.
    assert!(
        after_fds <= baseline_fds + 40,
        "fds: {baseline_fds} before, {after_fds} after"
    );

    let (status, _, stderr) = gateway.terminate().await;
    assert!(
        status.success(),
        "graceful exit: {status}; stderr:\n{stderr}"
    );
}
