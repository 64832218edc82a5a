//! Python off the hot path, with real marimo backends: the run-mode page served from the
//! gateway's memory (and fetched again when the process or the file changes), warm starts from
//! the pool of waiting processes (started like fresh ones, replaced when they die, never
//! outliving the gateway), and event streams passed through as they come.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::marimo::{
    is_notebook_page, kernel, page_until, server_token, until_output, Gateway, START,
};
use common::process::{marimo_rs, MarimoRs};
use common::{descendants, example_notebook, signal, wait_gone, Site, HTML};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use marimo_rs::{create_app, Mount};
use nix::sys::signal::Signal;

/// `method url` with `headers`, the body as bytes (compressed bodies stay as they are).
async fn fetch(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(bytes), &mut out).unwrap();
    out
}

/// `notebook` with `cell` as its only cell (indented by 4 spaces, ending in `return`).
fn write_notebook(path: &Path, cell: &str) {
    let body: String = cell.lines().map(|line| format!("    {line}\n")).collect();
    std::fs::write(
        path,
        format!("import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n{body}    return\n"),
    )
    .unwrap();
}

#[tokio::test]
async fn the_page_comes_from_memory_until_the_process_or_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("page.py");
    std::fs::copy(example_notebook("intro.py"), &notebook).unwrap();
    let gateway = Gateway::start(
        create_app()
            .with_app("/nb", &notebook)
            .html_head(r#"<meta name="kept-head" content="1">"#),
    )
    .await;
    let url = gateway.url("/nb/");
    let first = gateway.get("/nb/", &[HTML]).await;
    assert!(is_notebook_page(&first), "{}", first.brief());
    assert!(first.body.contains("kept-head"), "html_head is in the page");
    let folder = notebook.canonicalize().unwrap();
    let folder = folder.parent().unwrap().to_str().unwrap();
    assert!(!first.body.contains(folder), "the page hides the folder");
    let token = server_token(&first.body);
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(first.header("cache-control"), Some("private, no-cache"));
    assert_eq!(first.header("vary"), Some("accept-encoding"));

    // Served from memory: a stopped backend process holds nothing up.
    let pid = gateway.app.backend_pids()[0];
    signal(pid, Signal::SIGSTOP);
    let from_memory = tokio::time::timeout(Duration::from_secs(10), async {
        let again = gateway.get("/nb/", &[HTML]).await;
        assert_eq!(again.body, first.body);
        let (status, headers, body) = fetch(Method::HEAD, &url, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            first.body.len().to_string()
        );
        let (status, _, _) = fetch(Method::GET, &url, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, headers, gzipped) =
            fetch(Method::GET, &url, &[("accept-encoding", "gzip")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(gunzip(&gzipped), first.body.as_bytes());
        let (_, headers, brotli) =
            fetch(Method::GET, &url, &[("accept-encoding", "br, gzip")]).await;
        assert_eq!(headers["content-encoding"], "br");
        assert!(brotli.len() < first.body.len() / 2);
    })
    .await;
    signal(pid, Signal::SIGCONT);
    from_memory.expect("the page waited for the stopped backend");

    // A query naming marimo's own page parameters goes to marimo (which strips the token).
    let (status, headers, _) = fetch(Method::GET, &format!("{url}?access_token=x&a=1"), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/nb/?a=1");

    // A change to the notebook file shows on the next load.
    let code = std::fs::read_to_string(&notebook).unwrap();
    let titled = code.replace("marimo.App()", r#"marimo.App(app_title="A new title")"#);
    std::fs::write(&notebook, titled).unwrap();
    let changed = gateway.get("/nb/", &[HTML]).await;
    assert!(changed.body.contains("A new title"), "{}", changed.brief());
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(server_token(&changed.body), token, "same process");

    // So does a new backend process: marimo's skew-protection token is per process. The
    // restart takes the warm pool's process, which waits in the private folder.
    let socket_dir = gateway.app.socket_dir().unwrap().to_owned();
    let waiting = common::eventually(
        START,
        Duration::from_millis(100),
        async || {
            descendants(std::process::id())
                .into_iter()
                .find(|child| cwd(*child).as_deref() == Some(socket_dir.as_path()))
        },
        Option::is_some,
    )
    .await
    .unwrap();
    signal(pid, Signal::SIGKILL);
    assert!(wait_gone(pid, Duration::from_secs(10)).await);
    let restarted = page_until(&gateway, "/nb/", START, |page| {
        is_notebook_page(page) && server_token(&page.body) != token
    })
    .await;
    assert!(restarted.body.contains("A new title"));
    assert_eq!(gateway.app.backend_pids(), vec![waiting], "restarted warm");
    gateway.stop().await;
}

#[tokio::test]
async fn the_editor_page_is_never_kept() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("edited.py");
    std::fs::copy(example_notebook("intro.py"), &notebook).unwrap();
    let gateway = Gateway::start(create_app().mount("/", Mount::edit(&notebook))).await;
    let page = gateway.get("/", &[HTML]).await;
    assert!(page.body.contains(r#""mode": "edit""#), "{}", page.brief());
    // A stopped editor holds its page up: it comes from Python every time.
    let pid = gateway.app.backend_pids()[0];
    signal(pid, Signal::SIGSTOP);
    let waited = tokio::time::timeout(Duration::from_secs(2), gateway.get("/", &[HTML])).await;
    signal(pid, Signal::SIGCONT);
    assert!(waited.is_err(), "the editor's page came from memory");
    gateway.stop().await;
}

/// The direct child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    descendants(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// The working directory of `pid`.
fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

/// Waits until the gateway `pid` has a child that is not in `known`; returns it.
async fn new_child(pid: u32, known: &[u32]) -> u32 {
    common::eventually(
        START,
        Duration::from_millis(100),
        async || {
            children(pid)
                .into_iter()
                .find(|child| !known.contains(child))
        },
        Option::is_some,
    )
    .await
    .unwrap()
}

/// `marimo-rs serve --dir /apps=DIR --warm-pool N`, with secrets in its environment.
async fn serve_dir(dir: &Path, pool: usize) -> MarimoRs {
    let mut command = marimo_rs(&[
        "serve",
        "--no-token",
        "--headless",
        "--port",
        "0",
        "--warm-pool",
        &pool.to_string(),
        "--dir",
        &format!("/apps={}", dir.display()),
    ]);
    command
        .env("MARIMO_RS_SECRET", "replica-secret-value")
        .env("NOTEBOOK_MAY_SEE_THIS", "1");
    MarimoRs::start(command, None).await
}

/// What the probe notebook saw of its process, with what differs between two gateways (their
/// private folder, their pid) replaced.
async fn probe(gateway: &MarimoRs, session: &str) -> String {
    let url = gateway.ws_url(&format!("/apps/probe/ws?session_id={session}"));
    let mut ws = kernel(&url, &[]).await;
    let output = until_output(&mut ws, "PROBE ").await;
    let seen = output["data"]["output"]["data"]
        .as_str()
        .unwrap()
        .replace("&quot;", "\"");
    let folder = format!("/marimo-rs-{}-", gateway.pid());
    let pid = gateway.pid().to_string();
    seen.split(&folder)
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_owned()
            } else {
                format!("/PRIVATE-{}", &part[6..])
            }
        })
        .collect::<String>()
        .replace(&pid, "GATEWAY_PID")
}

#[tokio::test]
async fn a_pooled_backend_is_started_like_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    write_notebook(
        &dir.path().join("probe.py"),
        r#"import json, os, stat, sys
import marimo as mo
seen = {
    "cwd": os.getcwd(),
    "file": __file__,
    "path": sys.path[:3],
    "argv": sys.argv,
    "gateway_env": sorted(k for k in os.environ if k.startswith("MARIMO_RS")),
    "may_see": os.environ.get("NOTEBOOK_MAY_SEE_THIS"),
    "stdin": stat.S_ISCHR(os.fstat(0).st_mode),
    "stdout": os.path.realpath(f"/proc/self/fd/1"),
    "pgid_is_pid": os.getpgid(0) == os.getpid(),
}
mo.plain_text("PROBE " + json.dumps(seen, sort_keys=True))"#,
    );
    let fresh = serve_dir(dir.path(), 0).await;
    let fresh_seen = probe(&fresh, "fresh").await;
    let (status, _, stderr) = fresh.terminate().await;
    assert!(status.success(), "{stderr}");

    let pooled = serve_dir(dir.path(), 1).await;
    // The pool fills once the server is up; its process waits in the private folder.
    let waiting = new_child(pooled.pid(), &[]).await;
    let folder = cwd(waiting).unwrap();
    assert!(
        folder.to_string_lossy().contains("/marimo-rs-"),
        "{folder:?}"
    );
    let pooled_seen = probe(&pooled, "pooled").await;
    assert_eq!(
        cwd(waiting).as_deref(),
        Some(dir.path().canonicalize().unwrap().as_path()),
        "the waiting process became the notebook's backend"
    );
    assert_eq!(pooled_seen, fresh_seen);
    assert!(
        pooled_seen.contains(r#""gateway_env": []"#),
        "{pooled_seen}"
    );
    assert!(pooled_seen.contains(r#""may_see": "1""#), "{pooled_seen}");
    assert!(
        pooled_seen.contains(r#""stdout": "/dev/null""#),
        "{pooled_seen}"
    );
    let (status, _, stderr) = pooled.terminate().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn a_pool_process_that_dies_is_replaced_and_none_outlives_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example_notebook("intro.py"), dir.path().join("intro.py")).unwrap();

    let mut gateway = serve_dir(dir.path(), 1).await;
    let first = new_child(gateway.pid(), &[]).await;
    signal(first, Signal::SIGKILL);
    assert!(wait_gone(first, Duration::from_secs(10)).await);
    let second = new_child(gateway.pid(), &[first]).await;
    // The replacement becomes a backend; the pool fills again behind it.
    let page = page_until(&gateway, "/apps/intro/", START, is_notebook_page).await;
    assert_eq!(page.status, StatusCode::OK);
    let third = new_child(gateway.pid(), &[first, second]).await;
    let all = descendants(gateway.pid());
    assert!(all.contains(&second) && all.contains(&third), "{all:?}");

    // kill -9 of the gateway: the kernel ends the backend and the waiting process.
    signal(gateway.pid(), Signal::SIGKILL);
    gateway.process.child.wait().await.unwrap();
    for pid in all {
        assert!(
            wait_gone(pid, Duration::from_secs(15)).await,
            "{pid} outlived the gateway"
        );
    }

    // A graceful stop stops the pool too.
    let gateway = serve_dir(dir.path(), 2).await;
    let one = new_child(gateway.pid(), &[]).await;
    let two = new_child(gateway.pid(), &[one]).await;
    let pid = gateway.pid();
    let (status, _, stderr) = gateway.terminate().await;
    assert!(status.success(), "{stderr}");
    for waiting in [one, two] {
        assert!(wait_gone(waiting, Duration::from_secs(5)).await);
    }
    assert!(children(pid).is_empty());
}

#[tokio::test]
async fn event_streams_pass_through_as_they_come_and_uncompressed() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("ticks.py");
    write_notebook(
        &notebook,
        r#"import time
import marimo as mo
for i in range(5):
    mo.output.replace(mo.plain_text(f"tick {i} {time.time():.6f}"))
    time.sleep(0.4)"#,
    );
    let gateway = Gateway::start(create_app().with_app("/nb", &notebook)).await;
    let request = Request::get(gateway.url("/nb/sse?session_id=ticks"))
        .header("accept", "text/event-stream")
        .header("accept-encoding", "gzip, br")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(headers.get("content-encoding").is_none(), "{headers:?}");
    assert!(headers.get("access-control-allow-origin").is_none());

    // Each tick carries the kernel's clock when it was sent; the arrival time is read here as
    // soon as its bytes come. Tick 0 is left out: marimo itself holds the first output of a
    // run back (100-250 ms measured on the backend's own socket).
    let mut body = response.into_body();
    let mut text = String::new();
    let mut delays = Vec::new();
    let deadline = tokio::time::Instant::now() + common::marimo::KERNEL_WAIT;
    while delays.len() < 4 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the ticks arrive")
            .expect("the stream stays open")
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            let Some(at) = event.find("tick ") else {
                continue;
            };
            let mut words = event[at + 5..].split_whitespace();
            let tick: u32 = words.next().unwrap().parse().unwrap();
            let sent = words.next().unwrap();
            let end = sent
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(sent.len());
            let sent: f64 = sent[..end].parse().unwrap();
            if tick > 0 && !delays.iter().any(|(seen, _)| *seen == tick) {
                delays.push((tick, (now - sent) * 1000.0));
            }
        }
    }
    for (tick, delay) in &delays {
        assert!(
            *delay < 50.0,
            "tick {tick} arrived {delay:.1} ms after it was sent: {delays:?}"
        );
    }
    drop(body);
    gateway.stop().await;
}
