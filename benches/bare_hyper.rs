//! The yardstick for the gateway's own answers in `benches/e2e.sh`: a bare hyper server that
//! answers recorded responses from memory, byte for byte what the gateway sent (status, header
//! fields, body), with nothing else on the way: no routing, auth, logging or compression.
//!
//! ```text
//! bare_hyper [--current-thread] PATH=RECORDING…
//! ```
//!
//! A recording is the file prefix `curl -s -D RECORDING.head -o RECORDING.body URL` wrote.
//! `GET PATH` (any query) answers it; anything else `404`. Listens on 127.0.0.1 on a free port
//! and prints `http://127.0.0.1:PORT/` on standard output. The runtime is Tokio's multi-thread
//! default (`#[tokio::main]`), or one thread with `--current-thread`.
//!
//! Built by `cargo build --release --bench bare_hyper`; not a criterion benchmark.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// One recorded response.
struct Recorded {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

/// Reads `RECORDING.head` (curl's `-D`: status line, then fields) and `RECORDING.body`.
/// Fields the server sets per response (`date`, framing) are left to hyper.
fn load(recording: &str) -> Recorded {
    let head = std::fs::read_to_string(format!("{recording}.head"))
        .unwrap_or_else(|error| panic!("{recording}.head: {error}"));
    let body = std::fs::read(format!("{recording}.body"))
        .unwrap_or_else(|error| panic!("{recording}.body: {error}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes()).expect("a field name");
        if matches!(
            name.as_str(),
            "date" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
        ) {
            continue;
        }
        headers.append(
            name,
            HeaderValue::from_str(value.trim()).expect("a field value"),
        );
    }
    Recorded {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` would pass `--bench`; this program is run by hand or by e2e.sh.
    args.retain(|arg| arg != "--bench");
    let current_thread = args.iter().any(|arg| arg == "--current-thread");
    let routes: HashMap<String, Recorded> = args
        .iter()
        .filter(|arg| !arg.starts_with("--"))
        .map(|arg| {
            let (path, recording) = arg.split_once('=').expect("PATH=RECORDING");
            (path.to_owned(), load(recording))
        })
        .collect();
    let routes = Arc::new(routes);
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("a runtime");
    runtime.block_on(serve(routes));
}

async fn serve(routes: Arc<HashMap<String, Recorded>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "http://{addr}/")
        .and_then(|()| out.flush())
        .unwrap();
    drop(out);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = Arc::clone(&routes);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let response = match routes.get(req.uri().path()) {
                Some(recorded) => {
                    let mut response = Response::new(Full::new(recorded.body.clone()));
                    *response.status_mut() = recorded.status;
                    *response.headers_mut() = recorded.headers.clone();
                    response
                }
                None => {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NOT_FOUND;
                    response
                }
            };
            std::future::ready(Ok::<_, Infallible>(response))
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
