//! Routing and prefix stripping through the built service with 1,000 mounts. The budget,
//! since every request pays it: median ≤ 1 µs per request.
//!
//! Run: `cargo bench --bench routing`
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::convert::Infallible;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use marimo_rs::{create_app, Body};
use tower::{Service, ServiceExt};

mod common;
use common::now;

fn routing(c: &mut Criterion) {
    let inner = tower::service_fn(|req: Request<Body>| async move {
        // Touch the stripped path so the work cannot be skipped.
        black_box(req.uri().path().len());
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let mut builder = create_app();
    for i in 0..1000 {
        builder = builder.with_service(&format!("/team{i}/app"), inner);
    }
    let app = builder.with_service("", inner).build().unwrap();

    let mut group = c.benchmark_group("routing_1000_mounts");
    for (name, path) in [
        ("deep_mount", "/team777/app/api/kernel/run?x=1"),
        ("root_fallback", "/favicon.ico"),
        ("redirect", "/team5/app?x=1"),
    ] {
        group.bench_function(name, |b| {
            let mut app = app.clone();
            // Building the request (parsing its URI) is the client's work: done outside the
            // timed part, which is routing, prefix stripping and calling the mount.
            b.iter_batched(
                || Request::get(path).body(Body::empty()).unwrap(),
                |req| {
                    now(ServiceExt::<Request<Body>>::ready(&mut app)).unwrap();
                    black_box(now(app.call(req)).unwrap())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
