//! Authentication cost per request. The budget, since it is paid on every request:
//! median ≤ 2 µs to accept a valid session cookie (a token session, or an identity provider's
//! session carrying name, email and groups) or Basic header, ≤ 3 µs to reject an
//! unauthenticated request through the whole built service. A provider session is checked
//! against the cookie alone: no request of a signed-in user talks to the provider (the one
//! configured here does not exist).
//!
//! Run: `cargo bench --bench auth -- --warm-up-time 1 --measurement-time 3`
#![allow(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::convert::Infallible;

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{header, HeaderValue, Request, Response, StatusCode};
use marimo_rs::{create_app, AuthLayer, Body, OidcConfig, Token, User};
use tower::{Layer, Service, ServiceExt};

mod common;
use common::now;

fn auth(c: &mut Criterion) {
    let inner = tower::service_fn(|req: Request<Body>| async move {
        // Read the identity so the work cannot be skipped.
        black_box(req.extensions().get::<User>().map(User::name));
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let mut service = AuthLayer::new(Token::new("sup3rs3cr3t")).layer(inner);

    // A real session cookie, from an `access_token` link.
    let login = Request::get("/?access_token=sup3rs3cr3t")
        .header(header::ACCEPT, "text/html")
        .body(Body::empty())
        .unwrap();
    let response = now(service.clone().oneshot(login)).unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = HeaderValue::from_str(set_cookie.split(';').next().unwrap()).unwrap();
    let basic = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:sup3rs3cr3t")
    ))
    .unwrap();

    // An identity provider's session, as its callback makes it (the cookie format of
    // src/auth/cookie.rs, written out here from its documentation).
    let key = [42u8; 32];
    let oidc = AuthLayer::oidc(OidcConfig::new(
        "https://id.example.com/realms/acme",
        "marimo",
        "client secret",
        "https://marimo.example.com",
    ))
    .cookie_key(&key);
    let mut oidc_service = oidc.clone().layer(inner);
    let provider_cookie = HeaderValue::from_str(&format!(
        "{}={}",
        oidc.cookie_name(),
        common::provider_session(
            &key,
            "https://id.example.com/realms/acme",
            "marimo",
            &serde_json::json!({
                "i": "c2Vzc2lvbi1pZC0xMjM0NQ", "t": 1_700_000_000_000u64,
                "n": "ada", "e": "ada.lovelace@example.com",
                "g": ["analysts", "admins", "finance", "engineering", "all-staff"],
            }),
        )
    ))
    .unwrap();

    let mut group = c.benchmark_group("auth");
    group.bench_function("valid_oidc_session_cookie", |b| {
        b.iter(|| {
            let req = Request::get("/dashboard/api/kernel/run")
                .header(header::COOKIE, provider_cookie.clone())
                .body(Body::empty())
                .unwrap();
            now(ServiceExt::<Request<Body>>::ready(&mut oidc_service)).unwrap();
            let response = now(oidc_service.call(req)).unwrap();
            debug_assert_eq!(response.status(), StatusCode::OK);
            black_box(response)
        })
    });
    for (name, header_name, value) in [
        ("valid_cookie", header::COOKIE, cookie),
        ("valid_basic", header::AUTHORIZATION, basic),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let req = Request::get("/dashboard/api/kernel/run")
                    .header(&header_name, value.clone())
                    .body(Body::empty())
                    .unwrap();
                now(ServiceExt::<Request<Body>>::ready(&mut service)).unwrap();
                let response = now(service.call(req)).unwrap();
                debug_assert_eq!(response.status(), StatusCode::OK);
                black_box(response)
            })
        });
    }

    let mut app = create_app()
        .with_service("/dashboard", inner)
        .token(Token::new("sup3rs3cr3t"))
        .build()
        .unwrap();
    group.bench_function("reject_unauthenticated_built_service", |b| {
        b.iter(|| {
            let req = Request::get("/dashboard/api/kernel/run")
                .body(Body::empty())
                .unwrap();
            now(ServiceExt::<Request<Body>>::ready(&mut app)).unwrap();
            let response = now(app.call(req)).unwrap();
            debug_assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            black_box(response)
        })
    });
    group.finish();
}

criterion_group!(benches, auth);
criterion_main!(benches);
