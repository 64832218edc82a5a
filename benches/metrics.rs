//! What request metrics and the access log cost per request: the same request through the
//! same built service (a mount at `/app` among ten, answering at once), without them, with
//! `AppBuilder::metrics`, and with metrics and an access log written to `io::sink()`. The
//! budget: ≤ 2 µs per request for the metrics.
//!
//! Run: `cargo bench --bench metrics`
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::convert::Infallible;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use marimo_rs::{create_app, AccessLog, AppBuilder, Body, Metrics};
use tower::{Service, ServiceExt};

mod common;
use common::now;

fn app() -> AppBuilder {
    let inner = tower::service_fn(|req: Request<Body>| async move {
        black_box(req.uri().path().len());
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    });
    let mut builder = create_app();
    for i in 0..10 {
        builder = builder.with_service(&format!("/team{i}"), inner);
    }
    builder.with_service("/app", inner)
}

fn observation(c: &mut Criterion) {
    let metrics = Metrics::new();
    let variants = [
        ("plain", app().build().unwrap()),
        ("metrics", app().metrics(metrics.clone()).build().unwrap()),
        (
            "metrics_and_access_log",
            app()
                .metrics(Metrics::new())
                .access_log(AccessLog::new(std::io::sink()))
                .build()
                .unwrap(),
        ),
    ];
    let mut group = c.benchmark_group("observation");
    for (name, app) in variants {
        group.bench_function(name, |b| {
            let mut app = app.clone();
            b.iter_batched(
                || {
                    Request::get("/app/api/kernel/run?x=1")
                        .body(Body::empty())
                        .unwrap()
                },
                |req| {
                    now(ServiceExt::<Request<Body>>::ready(&mut app)).unwrap();
                    // The response is dropped inside the timed part: the access log writes its
                    // line when the body ends or is dropped.
                    drop(black_box(now(app.call(req)).unwrap()));
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    assert!(metrics.render().contains("mount=\"/app\""));
}

criterion_group!(benches, observation);
criterion_main!(benches);
