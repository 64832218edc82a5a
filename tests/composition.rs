//! Composition and routing over real TCP: marimo's `create_asgi_app` mount cases
//! (tests/_server/test_asgi.py) ported to `create_app().with_service(...)`.

mod common;

use std::convert::Infallible;

use common::{resolve, Endpoint, Site, TestServer};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use marimo_rs::{create_app, Body, BuildError, Mount, MountPrefix, OriginalUri};
use tower::layer::layer_fn;
use tower::util::MapRequestLayer;
use tower::ServiceExt;

/// A service that answers with what it saw: its name, method, path and query, the mount prefix,
/// the original URI and any `x-seen` request header (added by test layers).
fn echo(name: &'static str) -> impl Endpoint {
    tower::service_fn(move |req: Request<Body>| async move {
        let prefix = req
            .extensions()
            .get::<MountPrefix>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "-".into());
        let original = req
            .extensions()
            .get::<OriginalUri>()
            .map(|u| u.0.to_string())
            .unwrap_or_else(|| "-".into());
        let seen: Vec<&str> = req
            .headers()
            .get_all("x-seen")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let body = format!(
            "app={name} method={} path={} prefix={prefix} original={original} seen={}",
            req.method(),
            req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
            seen.join(",")
        );
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    })
}

fn two_apps() -> marimo_rs::AppBuilder {
    create_app()
        .with_service("/app1", echo("app1"))
        .with_service("/app2", echo("app2"))
}

#[tokio::test]
async fn multiple_apps_each_get_their_own_prefix_stripped() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    let one = server.get("/app1/", &[]).await;
    assert_eq!(one.status, StatusCode::OK);
    one.assert_body_starts_with("app=app1 method=GET path=/ prefix=/app1 original=/app1/");
    let two = server.get("/app2/x/y?z=1", &[]).await;
    two.assert_body_starts_with(
        "app=app2 method=GET path=/x/y?z=1 prefix=/app2 original=/app2/x/y?z=1",
    );
}

#[tokio::test]
async fn no_root_mount_means_404_at_root_and_unknown_paths() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    for path in ["/", "/app3/", "/app1x", "/favicon.ico"] {
        let reply = server.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.body, "Not Found");
    }
}

#[tokio::test]
async fn root_mount_never_shadows_longer_mounts_whatever_the_order() {
    let root_first = create_app()
        .with_service("", echo("root"))
        .with_service("/app1", echo("app1"))
        .build()
        .unwrap();
    let root_last = create_app()
        .with_service("/app1", echo("app1"))
        .with_service("/", echo("root"))
        .build()
        .unwrap();
    for app in [root_first, root_last] {
        let server = TestServer::start(app).await;
        let body = async |path: &str| server.get(path, &[]).await.body;
        assert!(body("/app1/").await.starts_with("app=app1 "));
        assert!(body("/app1/deep/er")
            .await
            .starts_with("app=app1 method=GET path=/deep/er"));
        let root = body("/").await;
        assert!(
            root.starts_with("app=root method=GET path=/ prefix= "),
            "{root}"
        );
        // Not the app1 prefix: a different segment goes to the root mount, unstripped.
        assert!(body("/app1x/y")
            .await
            .starts_with("app=root method=GET path=/app1x/y"));
        assert!(body("/other")
            .await
            .starts_with("app=root method=GET path=/other"));
    }
}

#[tokio::test]
async fn bare_prefix_redirects_with_a_trailing_slash_and_keeps_the_query() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    let reply = server.get("/app1?a=1&b=two%20words&c", &[]).await;
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(reply.header("location"), Some("app1/?a=1&b=two%20words&c"));
    let plain = server.get("/app2", &[]).await;
    assert_eq!(plain.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(plain.header("location"), Some("app2/"));
    // 307 keeps the method: a POST to the bare prefix is redirected too, not served.
    let post = server.send(Method::POST, "/app1", &[], "x").await;
    assert_eq!(post.status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn nested_prefixes_route_to_the_longest_match() {
    let app = create_app()
        .with_service("/a/b", echo("ab"))
        .with_service("/a", echo("a"))
        .with_service("/a/b/c", echo("abc"))
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    let cases = [
        ("/a/", "app=a method=GET path=/ prefix=/a "),
        ("/a/x", "app=a method=GET path=/x prefix=/a "),
        ("/a/bx", "app=a method=GET path=/bx prefix=/a "),
        ("/a/b/", "app=ab method=GET path=/ prefix=/a/b "),
        ("/a/b/x/y", "app=ab method=GET path=/x/y prefix=/a/b "),
        ("/a/b/c/", "app=abc method=GET path=/ prefix=/a/b/c "),
        ("/a/b/cd", "app=ab method=GET path=/cd prefix=/a/b "),
    ];
    for (path, expected) in cases {
        let reply = server.get(path, &[]).await;
        assert!(reply.body.starts_with(expected), "{path}: {}", reply.body);
    }
    let redirect = server.get("/a/b?q=1", &[]).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.header("location"), Some("b/?q=1"));
}

#[tokio::test]
async fn path_edge_cases() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    // A double slash after the prefix is passed on as is.
    let double = server.get("/app1//x", &[]).await;
    double.assert_body_starts_with("app=app1 method=GET path=//x ");
    // Percent-encoded bytes after the prefix are passed on undecoded.
    let encoded = server.get("/app1/a%20b/%2e%2e/c", &[]).await;
    encoded.assert_body_starts_with("app=app1 method=GET path=/a%20b/%2e%2e/c ");
    // The prefix itself must match byte for byte: `%31` is not `1`.
    assert_eq!(
        server.get("/app%31/", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // A very long path is routed, not rejected.
    let long = format!("/app2/{}", "x".repeat(8000));
    let reply = server.get(&long, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains(&format!("path=/{} ", "x".repeat(8000))));
}

#[tokio::test]
async fn head_and_options_pass_through() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    let options = server.send(Method::OPTIONS, "/app1/thing", &[], "").await;
    options.assert_body_starts_with("app=app1 method=OPTIONS path=/thing");
    let head = server.send(Method::HEAD, "/app2/thing", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.body, "", "HEAD has no body");
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    assert_eq!(
        length,
        "app=app2 method=HEAD path=/thing prefix=/app2 original=/app2/thing seen=".len()
    );
}

/// A layer that appends `name` to the `x-seen` request header.
fn seen(name: &'static str) -> MapRequestLayer<impl Fn(Request<Body>) -> Request<Body> + Clone> {
    MapRequestLayer::new(move |mut req: Request<Body>| {
        req.headers_mut()
            .append("x-seen", HeaderValue::from_static(name));
        req
    })
}

#[tokio::test]
async fn per_mount_layers_apply_in_order_and_only_to_their_mount() {
    let app = create_app()
        .mount(
            "/app1",
            Mount::service(echo("app1"))
                .layer(seen("first"))
                .layer(seen("second")),
        )
        .with_service("/app2", echo("app2"))
        .layer(seen("outer"))
        .layer(seen("inner"))
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    let one = server.get("/app1/", &[]).await;
    assert!(
        one.body.ends_with("seen=outer,inner,first,second"),
        "{}",
        one.body
    );
    let two = server.get("/app2/", &[]).await;
    assert!(two.body.ends_with("seen=outer,inner"), "{}", two.body);
    // Whole-service layers also see requests that no mount matches.
    let layered_404 = create_app()
        .with_service("/app1", echo("app1"))
        .layer(layer_fn(|inner| inner))
        .build()
        .unwrap();
    let server = TestServer::start(layered_404).await;
    assert_eq!(server.get("/nope", &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nested_under_axum_nest_service() {
    let marimo = two_apps().build().unwrap();
    let host = axum::Router::new()
        .route("/api/ping", axum::routing::get(|| async { "pong" }))
        .nest_service("/marimo", marimo);
    let server = TestServer::start(host).await;
    assert_eq!(server.get("/api/ping", &[]).await.body, "pong");
    let inner = server.get("/marimo/app1/x?y=1", &[]).await;
    inner.assert_body_starts_with("app=app1 method=GET path=/x?y=1 prefix=/app1 ");
    // The relative redirect resolves to /marimo/app1/ from /marimo/app1.
    let redirect = server.get("/marimo/app1?y=1", &[]).await;
    assert_eq!(redirect.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(redirect.header("location"), Some("app1/?y=1"));
    let resolved = resolve("/marimo/app1?y=1", redirect.header("location").unwrap());
    assert_eq!(resolved, "/marimo/app1/?y=1");
    assert_eq!(
        server.get("/marimo/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn served_as_axum_fallback_and_called_in_process() {
    let host = axum::Router::new().fallback_service(two_apps().build().unwrap());
    let server = TestServer::start(host).await;
    assert!(server
        .get("/app2/", &[])
        .await
        .body
        .starts_with("app=app2 "));
    // In process, with axum's body type.
    let response = two_apps()
        .build()
        .unwrap()
        .oneshot(
            Request::get("/app1/in-process")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn invalid_and_duplicate_paths_fail_at_build_time() {
    for bad in ["app", "/a//b", "/a/../b", "/a b", "/{id}"] {
        let error = create_app()
            .with_service(bad, echo("x"))
            .build()
            .unwrap_err();
        assert!(
            matches!(error, BuildError::InvalidMountPath { .. }),
            "{bad}: {error}"
        );
    }
    for (first, second) in [("/a", "/a"), ("/a", "/a/"), ("", "/")] {
        let error = create_app()
            .with_service(first, echo("x"))
            .with_service(second, echo("y"))
            .build()
            .unwrap_err();
        assert!(
            matches!(error, BuildError::DuplicateMount { .. }),
            "{first} {second}: {error}"
        );
        assert!(error.to_string().contains("used twice"));
    }
}

#[tokio::test]
async fn thousand_mounts_route_correctly() {
    let mut builder = create_app();
    for i in 0..1000 {
        builder = builder.with_service(&format!("/team{i}/app"), echo("many"));
    }
    let app = builder.with_service("", echo("root")).build().unwrap();
    for i in [0, 1, 10, 999] {
        let response = app
            .clone()
            .oneshot(
                Request::get(format!("/team{i}/app/x"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            body.contains(&format!("path=/x prefix=/team{i}/app ")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn server_survives_malformed_requests() {
    let server = TestServer::start(two_apps().build().unwrap()).await;
    let garbage = common::raw::round_trip(server.addr, b"GARBAGE\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let ok = server.get("/app1/", &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    server.stop().await;
}
