//! Gateway memory with 100 mounted-but-idle notebooks (budget: RSS ≤ 30 MB, and no backend
//! started: a mount costs nothing until it is used). Builds the service, serves it on
//! loopback, sends some traffic that must not start a backend (health checks, 404s,
//! bare-prefix redirects), then prints the RSS.
//!
//! Run: `cargo bench --bench idle_mounts`

use std::future::IntoFuture;
use std::time::Instant;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod common;
use common::rss_kib;

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let notebook = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/notebooks/intro.py");
    let before = rss_kib();
    let mut builder = marimo_rs::create_app();
    for i in 0..100 {
        builder = builder.with_app(&format!("/nb{i}"), notebook);
    }
    let app = builder.build().expect("valid mounts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(marimo_rs::serve(listener, app.clone()).into_future());

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let started = Instant::now();
    let mut requests = 0;
    for round in 0..100 {
        for path in ["/health", "/nope", &format!("/nb{round}")] {
            let response = client
                .get(format!("http://{addr}{path}").parse().unwrap())
                .await
                .unwrap();
            let _ = response.into_body().collect().await.unwrap();
            requests += 1;
        }
    }
    assert!(app.backend_pids().is_empty(), "no backend may start");
    println!(
        "idle_mounts: 100 notebook mounts, {requests} requests in {:?}; RSS before build {} KiB, after {} KiB (no backend started)",
        started.elapsed(),
        before,
        rss_kib()
    );
}
