//! Token authentication over real HTTP: marimo's `--token` behaviour (the guide and
//! marimo-facts "marimo's own auth"), plus the places where marimo_rs does better.

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use common::marimo::Gateway;
use common::{resolve, send, Endpoint, Reply, Site, TestServer};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use marimo_rs::{create_app, AuthLayer, Body, MarimoService, Mount, MountPrefix, Token, User};
use tower::{Layer, ServiceExt};

const TOKEN: &str = "sup3rs3cr3t";
const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const UNAUTHORIZED: &str = r#"{"detail":"Authorization header required"}"#;

/// Answers with what it saw: path and query, the `User`, the `Authorization` and `Cookie`
/// headers and the mount prefix.
fn echo() -> impl Endpoint {
    tower::service_fn(|req: Request<Body>| async move {
        let header = |name: &str| {
            let values: Vec<String> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                "-".to_owned()
            } else {
                values.join(" | ")
            }
        };
        let body = format!(
            "path={} user={} authorization={} cookie={} prefix={}",
            req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
            req.extensions().get::<User>().map_or("-", User::name),
            header("authorization"),
            header("cookie"),
            req.extensions()
                .get::<MountPrefix>()
                .map_or("-", MountPrefix::as_str),
        );
        Ok::<_, Infallible>(Response::new(Body::from(body)))
    })
}

/// The echo service at `mount` of a built app with `.token(TOKEN)`.
fn app_at(mount: &str) -> MarimoService {
    create_app()
        .with_service(mount, echo())
        .token(Token::new(TOKEN))
        .build()
        .unwrap()
}

/// The echo service at the root of a built app with this auth layer.
fn app_with(layer: AuthLayer) -> MarimoService {
    create_app()
        .with_service("", echo())
        .auth(layer)
        .build()
        .unwrap()
}

async fn start() -> TestServer {
    TestServer::start(app_at("")).await
}

fn basic(userpass: &str) -> String {
    format!("Basic {}", STANDARD.encode(userpass))
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[test]
fn resolve_works_like_a_browser() {
    assert_eq!(resolve("/a/b/c", "../x?y"), "/a/x?y");
    assert_eq!(resolve("/a/b", "./"), "/a/");
    assert_eq!(resolve("/a/", "../"), "/");
    assert_eq!(resolve("/x", "./auth/login?n"), "/auth/login?n");
    assert_eq!(resolve("/auth/login", "../dashboard/x"), "/dashboard/x");
    assert_eq!(resolve("/q", "/abs"), "/abs");
}

/// Sends a GET with header values given as raw bytes (which may not be UTF-8).
async fn get_with_bytes(url: &str, headers: &[(&str, &[u8])]) -> Reply {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    let response = common::client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request failed");
    common::reply(response).await
}

fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.body, UNAUTHORIZED, "{what}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"marimo\"")
    );
}

#[tokio::test]
async fn requests_without_credentials_get_401_json() {
    let server = start().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/api/status"),
        (Method::POST, "/api/kernel/run"),
        (Method::OPTIONS, "/x"),
        (Method::GET, "/nope/deeper"),
    ] {
        let reply = server.send(method.clone(), path, &[], "").await;
        assert_unauthorized(&reply, &format!("{method} {path}"));
        assert!(
            !reply.body.contains("path="),
            "the inner service was reached"
        );
    }
}

#[tokio::test]
async fn browsers_are_sent_to_the_login_form_with_next() {
    let server = start().await;
    let cases = [
        ("/", "./auth/login?next=%2F"),
        ("/notebook", "./auth/login?next=%2Fnotebook"),
        (
            "/a/b?x=1&y=two%20words",
            "../auth/login?next=%2Fa%2Fb%3Fx%3D1%26y%3Dtwo%2520words",
        ),
        // An invalid access_token is not copied into `next`.
        (
            "/a/?access_token=wrong&k=v",
            "../auth/login?next=%2Fa%2F%3Fk%3Dv",
        ),
    ];
    for (path, location) in cases {
        let reply = server.get(path, &[HTML]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(reply.header("location"), Some(location), "{path}");
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert!(resolve(path, location).starts_with("/auth/login?next="));
    }
    let head = server.send(Method::HEAD, "/x", &[HTML], "").await;
    assert_eq!(head.status, StatusCode::SEE_OTHER);
    // Not navigations: API paths, other methods, other Accept values.
    let api = server.get("/api/status", &[HTML]).await;
    assert_unauthorized(&api, "api path");
    let post = server.send(Method::POST, "/x", &[HTML], "").await;
    assert_unauthorized(&post, "post");
    let json = server.get("/x", &[("accept", "application/json")]).await;
    assert_unauthorized(&json, "json accept");
}

#[tokio::test]
async fn basic_challenge_answers_browsers_with_401() {
    let server = TestServer::start(app_with(
        AuthLayer::new(Token::new(TOKEN)).basic_challenge(true),
    ))
    .await;
    let reply = server.get("/page", &[HTML]).await;
    assert_unauthorized(&reply, "browser with basic_challenge");
    // The login form is still there for those who want it.
    assert_eq!(server.get("/auth/login", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn bearer_and_basic_headers_authenticate_in_any_case() {
    let server = start().await;
    let cases = [
        (format!("Bearer {TOKEN}"), "user"),
        (format!("bearer {TOKEN}"), "user"),
        (format!("BEARER {TOKEN}"), "user"),
        (basic(&format!("ada:{TOKEN}")), "ada"),
        (
            format!("basic {}", STANDARD.encode(format!("any_username:{TOKEN}"))),
            "any_username",
        ),
    ];
    for (authorization, user) in cases {
        let reply = server
            .get("/api/x", &[("authorization", &authorization)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{authorization}");
        assert!(
            reply
                .body
                .contains(&format!("user={user} authorization=- ")),
            "{}",
            reply.body
        );
        assert!(reply.header("set-cookie").is_none());
    }
}

#[tokio::test]
async fn bad_authorization_headers_are_refused() {
    // More wrong credentials than the default login limit allows: this test is about parsing
    // (tests/login_limit.rs is about the limit).
    let server =
        TestServer::start(app_with(AuthLayer::new(Token::new(TOKEN)).no_login_limit())).await;
    let huge = format!("Bearer {}", "a".repeat(32 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("wrong token", basic("ada:wrong").into_bytes()),
        ("wrong bearer", b"Bearer wrong".to_vec()),
        ("token prefix", basic("ada:sup3rs3cr").into_bytes()),
        ("token suffix", format!("Bearer {TOKEN}x").into_bytes()),
        ("empty username", basic(&format!(":{TOKEN}")).into_bytes()),
        ("no colon", basic(TOKEN).into_bytes()),
        ("invalid base64", b"Basic %%%not-base64%%%".to_vec()),
        ("missing credentials", b"Basic".to_vec()),
        ("unknown scheme", format!("Digest {TOKEN}").into_bytes()),
        ("bare token", TOKEN.as_bytes().to_vec()),
        ("non-UTF-8 bytes", b"Basic \xff\xfe\xfd".to_vec()),
        (
            "non-UTF-8 username",
            format!(
                "Basic {}",
                STANDARD.encode([&b"\xff\xfe:"[..], TOKEN.as_bytes()].concat())
            )
            .into_bytes(),
        ),
        ("huge header", huge.into_bytes()),
    ];
    for (what, value) in &cases {
        let reply = get_with_bytes(&server.url("/api/x"), &[("authorization", value)]).await;
        assert_unauthorized(&reply, what);
    }
    // Two Authorization headers, even with one valid, prove nothing.
    let good = format!("Bearer {TOKEN}");
    let twice = get_with_bytes(
        &server.url("/api/x"),
        &[
            ("authorization", good.as_bytes()),
            ("authorization", b"Bearer wrong"),
        ],
    )
    .await;
    assert_unauthorized(&twice, "two headers");
    let both_good = get_with_bytes(
        &server.url("/api/x"),
        &[
            ("authorization", good.as_bytes()),
            ("authorization", good.as_bytes()),
        ],
    )
    .await;
    assert_unauthorized(&both_good, "two good headers");
    // The server is still fine afterwards.
    let ok = server.get("/api/x", &[("authorization", &good)]).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn access_token_authenticates_and_is_not_forwarded() {
    let server = start().await;
    let reply = server
        .get(
            &format!("/api/x?a=1&access_token={TOKEN}&b=two%20words"),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.assert_body_starts_with("path=/api/x?a=1&b=two%20words user=user authorization=- ");
    let only = server
        .get(&format!("/api/x?access_token={TOKEN}"), &[])
        .await;
    only.assert_body_starts_with("path=/api/x user=user ");
    let wrong = server.get("/api/x?access_token=wrong", &[]).await;
    assert_unauthorized(&wrong, "wrong access_token");
    let empty = server.get("/api/x?access_token=", &[]).await;
    assert_unauthorized(&empty, "empty access_token");
}

#[tokio::test]
async fn access_token_page_load_redirects_without_the_token_and_sets_the_cookie() {
    let server = start().await;
    let path = format!("/nb/page?x=1&access_token={TOKEN}&y=two%20words");
    let reply = server.get(&path, &[HTML]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let location = reply.header("location").unwrap();
    assert_eq!(location, "./page?x=1&y=two%20words");
    assert_eq!(resolve(&path, location), "/nb/page?x=1&y=two%20words");
    assert!(!location.contains(TOKEN));
    assert_eq!(reply.header("referrer-policy"), Some("same-origin"));
    let set_cookie = reply.header("set-cookie").unwrap();
    assert!(!set_cookie.contains(TOKEN), "the cookie holds no token");
    let attributes: Vec<&str> = set_cookie.split("; ").skip(1).collect();
    assert_eq!(
        attributes,
        ["Path=/", "Max-Age=1209600", "HttpOnly", "SameSite=Lax"],
        "{set_cookie}"
    );
    // The cookie opens the page it was redirected to.
    assert_signed_in(&server, &reply, "/nb/page?x=1&y=two%20words").await;
    // Only the token: a directory URL without a query.
    let bare = server
        .get(&format!("/nb/?access_token={TOKEN}"), &[HTML])
        .await;
    assert_eq!(bare.header("location"), Some("./"));
}

/// A browser (sending `headers` too) following the `access_token` link to the root.
async fn token_link(server: &TestServer, headers: &[(&str, &str)]) -> Reply {
    let headers = [&[HTML], headers].concat();
    server
        .get(&format!("/?access_token={TOKEN}"), &headers)
        .await
}

#[tokio::test]
async fn cookies_are_secure_over_https_only_when_told() {
    let plain = start().await;
    let forwarded = [("x-forwarded-proto", "https")];
    let untrusted = token_link(&plain, &forwarded).await;
    assert!(!untrusted.header("set-cookie").unwrap().contains("Secure"));

    let trusting = TestServer::start(app_with(
        AuthLayer::new(Token::new(TOKEN)).trust_forwarded_headers(true),
    ))
    .await;
    let trusted = token_link(&trusting, &forwarded).await;
    assert!(trusted.header("set-cookie").unwrap().ends_with("; Secure"));
    let http = token_link(&trusting, &[]).await;
    assert!(!http.header("set-cookie").unwrap().contains("Secure"));

    let forced = TestServer::start(app_with(
        AuthLayer::new(Token::new(TOKEN))
            .secure_cookie(true)
            .cookie_max_age(Duration::from_secs(3600)),
    ))
    .await;
    let reply = token_link(&forced, &[]).await;
    let set_cookie = reply.header("set-cookie").unwrap();
    assert!(set_cookie.contains("; Max-Age=3600;"), "{set_cookie}");
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
}

/// Gets a session cookie from a server through an `access_token` link.
async fn cookie_from(server: &TestServer) -> String {
    token_link(server, &[]).await.cookie()
}

#[tokio::test]
async fn bad_cookies_are_refused() {
    let key = [7u8; 32];
    let layer = || AuthLayer::new(Token::new(TOKEN)).cookie_key(&key);
    let server = TestServer::start(app_with(layer())).await;
    let good = cookie_from(&server).await;
    let (name, value) = good.split_once('=').unwrap();
    assert_eq!(name, layer().cookie_name());
    let parts: Vec<&str> = value.split('.').collect();
    assert_eq!(parts.len(), 5, "{value}");
    assert_eq!(parts[..2], ["v2", "t"], "a token session");
    let payload = |json: &serde_json::Value| URL_SAFE_NO_PAD.encode(json.to_string());
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[3]).unwrap()).unwrap();
    assert_eq!(claims["n"], "user");
    claims["n"] = "admin".into();
    let admin = payload(&claims);
    let ok = server.get("/api/x", &[("cookie", &good)]).await;
    assert_eq!(ok.status, StatusCode::OK);

    let flip = |s: &str| {
        let mut bytes = s.as_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let later = (parts[2].parse::<u64>().unwrap() + 10_000_000).to_string();

    // Cookies from other servers, under this server's cookie name.
    let other_key = TestServer::start(app_with(
        AuthLayer::new(Token::new(TOKEN)).cookie_key(&[8u8; 32]),
    ))
    .await;
    let foreign = cookie_from(&other_key).await;
    let other_token = TestServer::start(app_with(
        AuthLayer::new(Token::new("another-token")).cookie_key(&key),
    ))
    .await;
    let other_token_cookie = {
        let reply = other_token
            .get("/?access_token=another-token", &[HTML])
            .await;
        reply.cookie()
    };
    assert_eq!(
        other_token_cookie.split_once('=').unwrap().0,
        name,
        "same key, same cookie name"
    );
    let expired_server = TestServer::start(app_with(layer().cookie_max_age(Duration::ZERO))).await;
    let expired = cookie_from(&expired_server).await;

    let cases = [
        ("tampered mac", format!("{name}={}", flip(value))),
        (
            "longer expiry",
            format!("{name}=v2.t.{later}.{}.{}", parts[3], parts[4]),
        ),
        (
            "other user",
            format!("{name}=v2.t.{}.{admin}.{}", parts[2], parts[4]),
        ),
        (
            "a provider session",
            format!("{name}=v2.p.{}.{}.{}", parts[2], parts[3], parts[4]),
        ),
        (
            "signed by another key",
            format!("{name}={}", foreign.split_once('=').unwrap().1),
        ),
        ("minted for another token", other_token_cookie),
        ("expired", expired),
        (
            "not ours at all",
            format!("{name}=v1.9999999999.dXNlcg.AAAA"),
        ),
        ("garbage", format!("{name}=%%%; {name}=")),
    ];
    for (what, cookie) in cases {
        let reply = server.get("/api/x", &[("cookie", &cookie)]).await;
        assert_unauthorized(&reply, what);
    }
    let non_utf8 = get_with_bytes(
        &server.url("/api/x"),
        &[(
            "cookie",
            &[b"a=\xff\xfe; ", name.as_bytes(), b"=\xff"].concat(),
        )],
    )
    .await;
    assert_unauthorized(&non_utf8, "non-UTF-8 cookie");
}

/// Cookies of the first format (`v1.<expiry>.<user>.<mac>`, made before sessions carried a
/// payload) keep their browsers signed in through an upgrade.
#[tokio::test]
async fn first_format_cookies_are_still_accepted() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let key = [7u8; 32];
    let layer = AuthLayer::new(Token::new(TOKEN)).cookie_key(&key);
    let name = layer.cookie_name().to_owned();
    let server = TestServer::start(app_with(layer)).await;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(b"marimo-rs/session/v1\0");
    mac.update(&Sha256::digest(TOKEN.as_bytes()));
    mac.update(&expiry.to_be_bytes());
    mac.update(b"ada");
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    let cookie = format!("{name}=v1.{expiry}.YWRh.{tag}");
    let reply = server.get("/who", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.brief());
    assert!(reply.body.contains("user=ada "), "{}", reply.body);
}

#[tokio::test]
async fn replicas_sharing_a_key_accept_each_others_cookies() {
    let key = b"0123456789abcdef0123456789abcdef";
    let one = TestServer::start(app_with(AuthLayer::new(Token::new(TOKEN)).cookie_key(key))).await;
    let two = TestServer::start(app_with(AuthLayer::new(Token::new(TOKEN)).cookie_key(key))).await;
    let cookie = cookie_from(&one).await;
    let reply = two.get("/api/x", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // Without a shared key, two gateways use different cookie names.
    let a = AuthLayer::new(Token::new(TOKEN));
    let b = AuthLayer::new(Token::new(TOKEN));
    assert_ne!(a.cookie_name(), b.cookie_name());
}

#[tokio::test]
async fn the_inner_service_sees_the_user_and_no_credentials() {
    let server = start().await;
    let cookie = cookie_from(&server).await;
    let reply = server
        .get(
            &format!("/api/x?access_token={TOKEN}&keep=1"),
            &[
                ("cookie", &format!("theme=dark; {cookie}; lang=en")),
                ("authorization", &basic(&format!("ada:{TOKEN}"))),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // The cookie is checked first, so its user wins.
    assert_eq!(
        reply.body,
        "path=/api/x?keep=1 user=user authorization=- cookie=theme=dark; lang=en prefix="
    );
    assert!(!reply.body.contains(TOKEN));
    let basic_only = server
        .get(
            "/api/x",
            &[
                ("cookie", "only=other"),
                ("authorization", &basic(&format!("grace:{TOKEN}"))),
            ],
        )
        .await;
    assert_eq!(
        basic_only.body,
        "path=/api/x user=grace authorization=- cookie=only=other prefix="
    );
    let only_ours = server.get("/api/x", &[("cookie", &cookie)]).await;
    assert!(only_ours.body.contains(" cookie=- "), "{}", only_ours.body);
}

#[tokio::test]
async fn the_login_form_is_served_with_strict_headers() {
    let server = start().await;
    let reply = server
        .get("/auth/login?next=%2Fdashboard%2F%3Fa%3D1", &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let csp = reply.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(reply.body.contains("name=\"password\""));
    assert!(reply
        .body
        .contains("type=\"hidden\" name=\"next\" value=\"/dashboard/?a=1\""));
    assert!(reply
        .body
        .contains("<form method=\"post\" action=\"login\">"));
    // Whatever is echoed is escaped.
    let hostile = server
        .get(
            "/auth/login?next=%2F%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            &[],
        )
        .await;
    assert!(!hostile.body.contains("<script>"), "{}", hostile.body);
    assert!(hostile
        .body
        .contains("value=\"/&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    // An unsafe next is not even shown.
    let evil = server.get("/auth/login?next=%2F%2Fevil.com", &[]).await;
    assert!(
        evil.body.contains("name=\"next\" value=\"/\""),
        "{}",
        evil.body
    );
    let head = server.send(Method::HEAD, "/auth/login", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
}

async fn post_login(server: &TestServer, path: &str, body: &str) -> Reply {
    server.send(Method::POST, path, &[FORM], body).await
}

/// Posts the token to the login form at `path`, with `next` as the form's if given.
async fn sign_in(server: &TestServer, path: &str, next: Option<&str>) -> Reply {
    let mut fields = vec![("password", TOKEN)];
    fields.extend(next.map(|next| ("next", next)));
    post_login(server, path, &form(&fields)).await
}

/// `reply`, to a request for `from`, is a `status` redirect to `location`, which a browser
/// resolves to `resolved`.
fn assert_redirect(reply: &Reply, status: StatusCode, from: &str, location: &str, resolved: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(reply.header("location"), Some(location));
    assert_eq!(resolve(from, location), resolved);
}

/// `reply` is not cached, and the session cookie it set opens `page` as the default user.
async fn assert_signed_in(server: &TestServer, reply: &Reply, page: &str) {
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let cookie = reply.cookie();
    let opened = server.get(page, &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(opened.status, StatusCode::OK);
    opened.assert_body_starts_with(&format!("path={page} user=user "));
}

#[tokio::test]
async fn login_post_flow_end_to_end() {
    let server = start().await;
    let wrong = post_login(
        &server,
        "/auth/login",
        &form(&[("password", "nope"), ("next", "/x")]),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::OK);
    assert!(wrong.body.contains("Invalid password"));
    assert!(wrong.header("set-cookie").is_none());
    assert!(
        wrong.body.contains("name=\"next\" value=\"/x\""),
        "next kept"
    );
    for empty in [
        form(&[("password", ""), ("next", "/x")]),
        form(&[("next", "/x")]),
        String::new(),
    ] {
        let reply = post_login(&server, "/auth/login", &empty).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.contains("Password is required"), "{empty:?}");
        assert!(reply.header("set-cookie").is_none());
    }

    let ok = sign_in(&server, "/auth/login", Some("/nb/page?a=1&b=%20")).await;
    assert_redirect(
        &ok,
        StatusCode::FOUND,
        "/auth/login",
        "../nb/page?a=1&b=%20",
        "/nb/page?a=1&b=%20",
    );
    assert_signed_in(&server, &ok, "/nb/page?a=1").await;

    // Without next: the service root.
    let default = sign_in(&server, "/auth/login", None).await;
    assert_eq!(default.header("location"), Some("../"));
}

#[tokio::test]
async fn login_refuses_other_methods_large_bodies_and_other_types() {
    let server = start().await;
    for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
        let reply = server.send(method.clone(), "/auth/login", &[], "").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, POST"));
    }
    let big = format!("password={TOKEN}&pad={}", "x".repeat(16 * 1024));
    let reply = post_login(&server, "/auth/login", &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let just_fits = format!(
        "password={TOKEN}&pad={}",
        "x".repeat(16 * 1024 - "password=&pad=".len() - TOKEN.len())
    );
    assert_eq!(just_fits.len(), 16 * 1024);
    let reply = post_login(&server, "/auth/login", &just_fits).await;
    assert_eq!(reply.status, StatusCode::FOUND);

    // Chunked, without Content-Length: the limit applies while reading.
    let chunk = "x".repeat(8 * 1024);
    let mut raw = format!(
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\npassword={TOKEN}&pad=\r\n",
        "password=&pad=".len() + TOKEN.len()
    );
    for _ in 0..3 {
        raw.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    raw.push_str("0\r\n\r\n");
    let answer = common::raw::round_trip(server.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let json = server
        .send(
            Method::POST,
            "/auth/login",
            &[("content-type", "application/json")],
            &format!(r#"{{"password":"{TOKEN}"}}"#),
        )
        .await;
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json.header("set-cookie").is_none());
}

#[tokio::test]
async fn next_never_leaves_the_site() {
    let server = start().await;
    for next in [
        "https://evil.com",
        "http://evil.com/x",
        "//evil.com",
        "///evil.com",
        "\\\\evil.com",
        "/\\evil.com",
        "https:evil.com",
        "javascript:alert(1)",
        "/\t/evil.com",
        "/\r\n/evil.com",
        "/\u{0}x",
        "dashboard",
        "",
    ] {
        let reply = sign_in(&server, "/auth/login", Some(next)).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{next:?}");
        assert_eq!(reply.header("location"), Some("../"), "{next:?}");
    }
}

#[tokio::test]
async fn login_takes_next_from_the_form_else_from_the_query() {
    let server = start().await;
    // As marimo's login page and its tests post: `next` in the query string.
    let reply = sign_in(&server, "/auth/login?next=/app1/", None).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.header("location"), Some("../app1/"));
    let wrong = post_login(
        &server,
        "/auth/login?next=%2Fapp1%2F",
        &form(&[("password", "nope")]),
    )
    .await;
    assert!(
        wrong.body.contains("name=\"next\" value=\"/app1/\""),
        "{}",
        wrong.body
    );
    // The form's `next` wins over the query's.
    let reply = sign_in(&server, "/auth/login?next=/app1/", Some("/app2/")).await;
    assert_eq!(reply.header("location"), Some("../app2/"));
    // Both go through the open-redirect guard.
    for evil in [
        "//evil.com",
        "https://evil.com/",
        "/\\evil.com",
        "javascript:alert(1)",
    ] {
        let query: String = form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let reply = sign_in(&server, &format!("/auth/login?next={query}"), None).await;
        assert_eq!(reply.status, StatusCode::FOUND, "{evil:?}");
        assert_eq!(reply.header("location"), Some("../"), "{evil:?}");
    }
}

/// Records the request target, the [`User`] and the `Authorization` and `Cookie` headers that
/// reach a mount.
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S> Layer<S> for Seen {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Recorded {
            inner,
            seen: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Recorded<S> {
    inner: S,
    seen: Seen,
}

impl<S: tower::Service<Request<Body>>> tower::Service<Request<Body>> for Recorded<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let header = |name| {
            req.headers()
                .get(name)
                .map_or("-".to_owned(), |value: &HeaderValue| {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                })
        };
        let line = format!(
            "{} user={} authorization={} cookie={}",
            req.uri(),
            req.extensions().get::<User>().map_or("-", User::name),
            header("authorization"),
            header("cookie"),
        );
        self.seen.0.lock().unwrap().push(line);
        self.inner.call(req)
    }
}

#[tokio::test]
async fn a_notebook_mounts_health_is_open_like_marimos_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::example_notebook("intro.py"),
        dir.path().join("x.py"),
    )
    .unwrap();
    let seen = Seen::default();
    let server = Gateway::start(
        create_app()
            .mount(
                "/app1",
                Mount::app(common::example_notebook("intro.py")).layer(seen.clone()),
            )
            .with_service("/svc", echo())
            .with_dynamic_directory("/apps", dir.path())
            .token(Token::new(TOKEN)),
    )
    .await;
    let backends = server.app.backend_pids().len();

    // A load balancer probes each app without credentials, as marimo allows.
    for path in ["/app1/health", "/app1/healthz", "/app1/health?probe=1"] {
        let reply = server.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
    }
    let head = server.send(Method::HEAD, "/app1/healthz", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    // Credentials sent along are still stripped, and prove nothing.
    let with = server
        .get(
            "/app1/health?access_token=wrong",
            &[("authorization", "Bearer wrong"), ("cookie", "a=b")],
        )
        .await;
    assert_eq!(with.status, StatusCode::OK);
    let last = seen.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last, "/health user=- authorization=- cookie=a=b",
        "the mount saw no credential"
    );

    // Nothing else is opened: other paths and methods of the mount, odd spellings, service
    // mounts, and directory notebooks (a probe would start their backends).
    for path in [
        "/app1/api/status",
        "/app1/health/",
        "/app1/health/x",
        "/app1/healthz/x",
        "/app1/health/../api/status",
        "/app1/x/../health",
        "/app1//health",
        "/app1/./health",
        "/app1/%68ealth",
        "/app1/HEALTH",
        "/svc/health",
        "/svc/healthz",
        "/apps/x/health",
        "/apps/health",
        "/nothing/health",
    ] {
        let reply = server.get(path, &[]).await;
        assert_unauthorized(&reply, path);
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = server.send(method.clone(), "/app1/health", &[], "").await;
        assert_unauthorized(&reply, &format!("{method} /app1/health"));
    }
    assert_eq!(
        server.app.backend_pids().len(),
        backends,
        "no directory notebook was started"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_endpoints_stay_open() {
    let server = start().await;
    for path in ["/health", "/healthz"] {
        let reply = server.get(path, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.body, r#"{"status":"healthy"}"#);
    }
    // Used directly, the layer lets them through to the inner service (without a user).
    let direct = TestServer::start(
        tower::ServiceBuilder::new()
            .map_request(|req: Request<hyper::body::Incoming>| req.map(Body::new))
            .layer(AuthLayer::new(Token::new(TOKEN)))
            .service(echo()),
    )
    .await;
    let reply = direct.get("/health", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.assert_body_starts_with("path=/health user=- ");
    // Only those paths, only GET/HEAD.
    assert_unauthorized(&direct.get("/health/x", &[]).await, "/health/x");
    assert_unauthorized(&direct.get("/x/health", &[]).await, "/x/health");
    let post = direct.send(Method::POST, "/health", &[], "").await;
    assert_unauthorized(&post, "POST /health");
}

/// A browser's login round trip from `{prefix}/dashboard/x?y=1`, where the host serves
/// `app_at("/dashboard")` under `prefix`: sent to the login form with `next`, the password posted
/// there brings it back, and the cookie then opens the page. Returns the first redirect's
/// `Location` and the cookie.
async fn login_round_trip(server: &TestServer, prefix: &str) -> (String, String) {
    let page = format!("{prefix}/dashboard/x?y=1");
    let first = server.get(&page, &[HTML]).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let location = first.header("location").unwrap().to_owned();
    let login_url = resolve(&page, &location);
    assert_eq!(
        login_url,
        format!("{prefix}/auth/login?next=%2Fdashboard%2Fx%3Fy%3D1")
    );
    let form_page = server.get(&login_url, &[]).await;
    assert_eq!(form_page.status, StatusCode::OK);
    assert!(form_page.body.contains("value=\"/dashboard/x?y=1\""));

    let login = format!("{prefix}/auth/login");
    let posted = sign_in(server, &login, Some("/dashboard/x?y=1")).await;
    assert_eq!(posted.status, StatusCode::FOUND);
    let target = resolve(&login, posted.header("location").unwrap());
    assert_eq!(target, page);
    let cookie = posted.cookie();
    let reply = server.get(&target, &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.assert_body_starts_with("path=/x?y=1 user=user ");
    (location, cookie)
}

#[tokio::test]
async fn login_round_trip_under_a_mount_prefix() {
    let server = TestServer::start(app_at("/dashboard")).await;
    let (location, cookie) = login_round_trip(&server, "").await;
    assert_eq!(location, "../auth/login?next=%2Fdashboard%2Fx%3Fy%3D1");
    // The mount table's own redirect still happens, after auth.
    let bare = server.get("/dashboard", &[("cookie", &cookie)]).await;
    assert_eq!(bare.status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn login_round_trip_nested_under_axum() {
    let host = axum::Router::new()
        .route("/api/ping", axum::routing::get(|| async { "pong" }))
        .nest_service("/marimo", app_at("/dashboard"));
    let server = TestServer::start(host).await;
    assert_eq!(server.get("/api/ping", &[]).await.body, "pong");
    login_round_trip(&server, "/marimo").await;

    let token_link = format!("/marimo/dashboard/x?access_token={TOKEN}");
    let link = server.get(&token_link, &[HTML]).await;
    assert_eq!(
        resolve(&token_link, link.header("location").unwrap()),
        "/marimo/dashboard/x"
    );
}

#[tokio::test]
async fn explicit_base_path_gives_absolute_redirects_and_the_cookie_path() {
    let marimo = create_app()
        .with_service("/dashboard", echo())
        .auth(AuthLayer::new(Token::new(TOKEN)).base_path("/marimo"))
        .build()
        .unwrap();
    let server = TestServer::start(axum::Router::new().nest_service("/marimo", marimo)).await;
    let first = server.get("/marimo/dashboard/x", &[HTML]).await;
    assert_eq!(
        first.header("location"),
        Some("/marimo/auth/login?next=%2Fdashboard%2Fx")
    );
    // At the bare prefix the service sees `/`: only an absolute redirect can be right.
    let bare = server.get("/marimo", &[HTML]).await;
    assert_eq!(bare.header("location"), Some("/marimo/auth/login?next=%2F"));
    let posted = sign_in(&server, "/marimo/auth/login", Some("/dashboard/x")).await;
    assert_eq!(posted.header("location"), Some("/marimo/dashboard/x"));
    assert!(posted
        .header("set-cookie")
        .unwrap()
        .contains("; Path=/marimo;"));
    let link = server
        .get(
            &format!("/marimo/dashboard/x?access_token={TOKEN}&k=v"),
            &[HTML],
        )
        .await;
    assert_eq!(link.header("location"), Some("/marimo/dashboard/x?k=v"));
}

#[tokio::test]
async fn a_sign_in_link_signs_in_once_and_expires() {
    let auth = AuthLayer::new(Token::new(TOKEN)).login_limit(3, Duration::from_secs(60));
    let server = TestServer::start(app_with(auth.clone())).await;
    // Minted on a clone of the layer given to the app: they share their links.
    let link = auth.sign_in_link("/nb/page?a=1", Duration::from_secs(60));
    let code = link
        .strip_prefix("/auth/sign-in?code=")
        .expect("relative to the service root");
    assert_eq!(code.len(), 43);
    assert!(!link.contains(TOKEN));

    // HEAD (a link checker) does not use it up.
    let head = server.send(Method::HEAD, &link, &[], "").await;
    assert_eq!(head.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(head.header("allow"), Some("GET"));

    let first = server.get(&link, &[HTML]).await;
    assert_redirect(
        &first,
        StatusCode::SEE_OTHER,
        "/auth/sign-in",
        "../nb/page?a=1",
        "/nb/page?a=1",
    );
    assert_eq!(first.header("referrer-policy"), Some("same-origin"));
    assert_signed_in(&server, &first, "/nb/page?a=1").await;

    // Used once: the second time it is the login form, with no cookie.
    let again = server.get(&link, &[HTML]).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(again.header("set-cookie").is_none());
    assert!(
        again.body.contains("expired or was already used"),
        "{}",
        again.body
    );
    assert!(again.body.contains("action=\"login\""), "the login form");

    // Expired: unused but too late.
    let short = auth.sign_in_link("/", Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let late = server.get(&short, &[HTML]).await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert!(late.header("set-cookie").is_none());

    // A wrong code is a wrong credential: the used and expired ones spent two of the three
    // attempts, so one more wrong code and then even a good link is refused unchecked.
    let wrong = server.get("/auth/sign-in?code=guess", &[HTML]).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let good = auth.sign_in_link("/", Duration::from_secs(60));
    let limited = server.get(&good, &[HTML]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
    // No code at all is no credential: the page, not a 429.
    let none = server.get("/auth/sign-in", &[HTML]).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);

    // Under a base path the link and its redirect carry it.
    let based = AuthLayer::new(Token::new(TOKEN)).base_path("/marimo");
    let marimo = app_with(based.clone());
    let server = TestServer::start(axum::Router::new().nest_service("/marimo", marimo)).await;
    let link = based.sign_in_link("/dashboard/x", Duration::from_secs(60));
    assert!(link.starts_with("/marimo/auth/sign-in?code="), "{link}");
    let reply = server.get(&link, &[HTML]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.header("location"), Some("/marimo/dashboard/x"));
    assert!(reply
        .header("set-cookie")
        .unwrap()
        .contains("; Path=/marimo;"));
}

#[tokio::test]
async fn a_layer_on_one_mount_uses_the_mount_prefix_for_the_cookie() {
    let app = create_app()
        .mount(
            "/private",
            Mount::service(echo()).layer(AuthLayer::new(Token::new(TOKEN))),
        )
        .with_service("/public", echo())
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    assert_eq!(server.get("/public/x", &[]).await.status, StatusCode::OK);
    assert_unauthorized(&server.get("/private/x", &[]).await, "private mount");
    let posted = sign_in(&server, "/private/auth/login", None).await;
    assert_eq!(posted.status, StatusCode::FOUND);
    assert_eq!(
        resolve("/private/auth/login", posted.header("location").unwrap()),
        "/private/"
    );
    assert!(posted
        .header("set-cookie")
        .unwrap()
        .contains("; Path=/private;"));
    let cookie = posted.cookie();
    let reply = server.get("/private/x", &[("cookie", &cookie)]).await;
    reply.assert_body_starts_with("path=/x user=user ");
}

const WS: [(&str, &str); 4] = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test]
async fn websocket_upgrades_need_credentials_and_a_same_site_origin() {
    let server = TestServer::start(app_with(
        AuthLayer::new(Token::new(TOKEN)).allowed_origins(["https://app.example.com"]),
    ))
    .await;
    let cookie = cookie_from(&server).await;
    let host = server.addr.to_string();
    let same_origin = format!("http://{host}");
    let bearer = format!("Bearer {TOKEN}");
    let ws = |extra: &[(&'static str, String)]| {
        let mut headers: Vec<(&str, String)> =
            WS.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        headers.extend(extra.iter().cloned());
        headers
    };
    let call = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let url = server.url(path);
        async move {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            send(Method::GET, &url, &pairs, "").await
        }
    };
    // Without credentials: 403, not 401 or a redirect, even with a browser's Accept.
    for extra in [
        vec![],
        vec![("accept", "text/html".to_owned())],
        vec![("authorization", "Bearer wrong".to_owned())],
    ] {
        let reply = call("/ws", ws(&extra)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{extra:?}");
        assert!(!reply.body.contains("path="));
    }
    // With credentials (cookie, bearer, access_token), with no Origin or a same-site one.
    let accepted = [
        (
            "/ws",
            vec![("cookie", cookie.clone()), ("origin", same_origin.clone())],
        ),
        ("/ws", vec![("authorization", bearer.clone())]),
        (
            "/ws",
            vec![
                ("cookie", cookie.clone()),
                ("origin", "https://app.example.com".to_owned()),
            ],
        ),
    ];
    for (path, extra) in accepted {
        let reply = call(path, ws(&extra)).await;
        assert_eq!(reply.status, StatusCode::OK, "{extra:?}");
        reply.assert_body_starts_with("path=/ws user=user authorization=- ");
    }
    let by_query = call("/ws?access_token=sup3rs3cr3t&session_id=s1", ws(&[])).await;
    assert_eq!(
        by_query.status,
        StatusCode::OK,
        "an upgrade is not redirected"
    );
    by_query.assert_body_starts_with("path=/ws?session_id=s1 ");
    // A foreign Origin is refused even with valid credentials.
    for origin in [
        "http://evil.com",
        "http://127.0.0.1:1",
        "null",
        "https://app.example.com:444",
    ] {
        let reply = call(
            "/ws",
            ws(&[("cookie", cookie.clone()), ("origin", origin.to_owned())]),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin}");
    }
    // The same Origin check does not apply to ordinary requests.
    let plain = server
        .get("/x", &[("cookie", &cookie), ("origin", "http://evil.com")])
        .await;
    assert_eq!(plain.status, StatusCode::OK);
}

#[tokio::test]
async fn a_real_websocket_connects_through_auth() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    async fn echo_socket(ws: axum::extract::ws::WebSocketUpgrade) -> axum::response::Response {
        ws.on_upgrade(|mut socket| async move {
            while let Some(Ok(message)) = socket.recv().await {
                if socket.send(message).await.is_err() {
                    break;
                }
            }
        })
    }
    let sockets = axum::Router::new().route("/ws", axum::routing::get(echo_socket));
    let app = create_app()
        .with_service("", sockets)
        .token(Token::new(TOKEN))
        .build()
        .unwrap();
    let server = TestServer::start(app).await;
    let url = format!("ws://{}/ws", server.addr);

    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    match refused {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {other:?}"),
    }
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&basic(&format!("ada:{TOKEN}"))).unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("ping")).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "ping");

    let mut foreign = url.as_str().into_client_request().unwrap();
    foreign.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    foreign
        .headers_mut()
        .insert("origin", HeaderValue::from_static("http://evil.com"));
    match tokio_tungstenite::connect_async(foreign).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn secrets_never_show_in_debug_output() {
    let layer = AuthLayer::new(Token::new(TOKEN)).cookie_key(b"a-cookie-key-that-is-32-bytes!!!");
    let shown = format!("{layer:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("a-cookie-key"),
        "{shown}"
    );
    let app = create_app().token(Token::new(TOKEN));
    assert!(!format!("{app:?}").contains(TOKEN));
    let service = layer.layer(tower::util::BoxCloneSyncService::new(echo()));
    let shown = format!("{service:?}");
    assert!(shown.starts_with("Auth {"), "{shown}");
    assert!(shown.contains("Token(<redacted>)"), "{shown}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("a-cookie-key"),
        "{shown}"
    );
}

/// Polls a future that completes without waiting.
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("not immediately ready"),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(512))]

    /// Any bytes in `Authorization`, `Cookie`, the query and the path: the service answers
    /// (never panics), and never lets the request in.
    #[test]
    fn hostile_credentials_never_panic_or_pass(
        authorization in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        cookie in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        cookie_value in "[ -~]{0,120}",
        query in "[!-~]{0,80}",
        scheme in proptest::sample::select(vec!["Basic ", "basic ", "Bearer ", "", "Digest "]),
        html in proptest::bool::ANY,
        upgrade in proptest::bool::ANY,
    ) {
        let layer = AuthLayer::new(Token::new(TOKEN));
        let name = layer.cookie_name().to_owned();
        let service = layer.layer(echo());
        let mut request = Request::get("/p").body(Body::empty()).unwrap();
        if let Ok(uri) = format!("/p?{query}").parse() {
            *request.uri_mut() = uri;
        }
        let headers = request.headers_mut();
        let mut auth_value = scheme.as_bytes().to_vec();
        auth_value.extend_from_slice(&authorization);
        if let Ok(value) = HeaderValue::from_bytes(&auth_value) {
            headers.insert("authorization", value);
        }
        if let Ok(value) = HeaderValue::from_bytes(&cookie) {
            headers.append("cookie", value);
        }
        if let Ok(value) = HeaderValue::from_str(&format!("{name}={cookie_value}")) {
            headers.append("cookie", value);
        }
        if html {
            headers.insert("accept", HeaderValue::from_static("text/html"));
        }
        if upgrade {
            headers.insert("upgrade", HeaderValue::from_static("websocket"));
            headers.insert(HeaderName::from_static("origin"), HeaderValue::from_static("http://elsewhere"));
        }
        let response = now(service.oneshot(request)).unwrap();
        let status = response.status();
        proptest::prop_assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::SEE_OTHER, StatusCode::FORBIDDEN].contains(&status),
            "status {status}"
        );
        if upgrade {
            proptest::prop_assert_eq!(status, StatusCode::FORBIDDEN);
        }
    }

    /// Any form body at the login endpoint: an answer, never a cookie without the token.
    #[test]
    fn hostile_login_forms_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let service = AuthLayer::new(Token::new(TOKEN)).layer(echo());
        let request = Request::post("/auth/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        let response = now(service.oneshot(request)).unwrap();
        proptest::prop_assert_eq!(response.status(), StatusCode::OK);
        proptest::prop_assert!(response.headers().get("set-cookie").is_none());
    }
}
