//! The failed-login limiter's figures quoted in SECURITY.md, measured through the public API
//! (an `AuthLayer` with the default limit, requests carrying `RemoteAddr`):
//!
//! - a flood of wrong `Bearer` tokens from 1,000,000 distinct addresses: how many were checked
//!   (`401`: an address with a bucket of its own) and how many refused unchecked (`429`: the
//!   overflow bucket the addresses beyond the 100,000 tracked share), the memory the gateway
//!   kept (RSS), and the time per request;
//! - right `Bearer` tokens (an allowance taken, then given back) from one thread and from two
//!   at once, all through one limiter: whether its locks make threads wait for each other.
//!
//! Run: `cargo bench --bench login_limit`

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode};
use marimo_rs::{AuthLayer, Body, RemoteAddr, Token};
use tower::{Layer, Service, ServiceExt};

mod common;
use common::{now, rss_kib};

const TOKEN: &str = "sup3rs3cr3t";

fn service() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    let inner = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    AuthLayer::new(Token::new(TOKEN)).layer(inner)
}

/// One request through `service`, as a server sends it: ready, then call.
fn call<S>(service: &mut S, req: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    now(service.ready()).expect("infallible");
    now(service.call(req)).expect("infallible")
}

fn request(ip: u32, bearer: &'static str) -> Request<Body> {
    let mut req = Request::get("/api/kernel/run")
        .header(header::AUTHORIZATION, HeaderValue::from_static(bearer))
        .body(Body::empty())
        .expect("a request");
    let addr = SocketAddr::from((Ipv4Addr::from(ip), 40_000));
    req.extensions_mut().insert(RemoteAddr(addr));
    req
}

fn main() {
    flood();
    let one = right_credentials(1);
    let two = right_credentials(2);
    println!(
        "right credentials: {one:.0} ns per request on 1 thread, {two:.0} ns per request on \
         each of 2 threads sharing the limiter"
    );
}

fn flood() {
    let mut service = service();
    let before = rss_kib();
    let (mut checked, mut refused) = (0usize, 0usize);
    let start = Instant::now();
    for i in 0..1_000_000u32 {
        // Distinct addresses, spread over the IPv4 space.
        let req = request(i.wrapping_mul(2_654_435_761), "Bearer wrong");
        let response = call(&mut service, req);
        match response.status() {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = start.elapsed();
    let grown = rss_kib().saturating_sub(before);
    assert!(
        checked <= 100_010,
        "at most the cap plus the overflow burst: {checked}"
    );
    println!(
        "flood: 1,000,000 addresses with a wrong token -> {checked} checked (401), {refused} \
         refused unchecked (429, the overflow bucket); RSS grew {grown} KiB = {:.1} bytes per \
         checked address; {:.0} ns per request",
        grown as f64 * 1024.0 / checked as f64,
        elapsed.as_nanos() as f64 / 1e6,
    );
}

/// Nanoseconds per request when `threads` threads each send 200,000 requests with the right
/// token from 4,096 addresses of their own.
fn right_credentials(threads: u32) -> f64 {
    let service = service();
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            // A clone per thread, as a server has one per connection.
            let mut service = service.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u32 {
                    let req = request(
                        (i % 4096) | (thread << 16) | (10 << 24),
                        "Bearer sup3rs3cr3t",
                    );
                    let response = call(&mut service, req);
                    assert_eq!(response.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker thread");
    }
    // The threads run side by side: the wall time over one thread's requests is what each
    // request took, waits for the other thread included.
    start.elapsed().as_nanos() as f64 / 200_000.0
}
