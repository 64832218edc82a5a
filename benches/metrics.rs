//! What request metrics and the access log cost per request: the same request through the
//! same built service (a mount at `/app` among ten, answering at once), without them, with
//! `AppBuilder::metrics`, and with metrics and an access log written to `io::sink()`. The
//! budget: ≤ 2 µs per request for the metrics.
//!
//! Measured in CPU time of the benchmarking thread, not wall time: on a machine shared with
//! other work, wall-clock medians of these sub-microsecond figures drifted by more than the
//! difference between them (time the thread spends preempted does not count here).
//!
//! Run: `cargo bench --bench metrics`
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::convert::Infallible;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
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

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("Linux has a per-thread CPU clock");
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns().saturating_sub(started)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Shows CPU nanoseconds as `ns` or `µs`.
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        if typical < 1_000.0 {
            return "ns (CPU)";
        }
        values.iter_mut().for_each(|value| *value /= 1_000.0);
        "µs (CPU)"
    }
    fn scale_throughputs(&self, _: f64, _: &Throughput, _: &mut [f64]) -> &'static str {
        "-"
    }
    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn observation(c: &mut Criterion<ThreadCpu>) {
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

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = observation
}
criterion_main!(benches);
