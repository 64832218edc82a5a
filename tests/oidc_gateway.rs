//! Sign-in with an identity provider through the gateway, end to end: a real OpenID Provider
//! (panva's oidc-provider, `tests/common/oidc.rs`), real sockets, real marimo backends, and a
//! real browser for the full sign-in (headless Chromium). Most tests share one provider (a
//! native client, so a gateway on any loopback port may use it); those that change the
//! provider (its next ID token, its key, its very existence) start their own.
//!
//! Without the provider installed the tests warn and pass, except under CI (`CI` set), where
//! they fail: `.ci/install-oidc-provider` installs it.

mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "common/oidc.rs"]
mod oidc;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::marimo::{is_notebook_page, kernel, until_output, Gateway};
use common::{example_notebook, send, ws_connect, Endpoint, Site, TestServer, HTML};
use http::{Method, Request, Response, StatusCode};
use marimo_rs::{create_app, Access, AppBuilder, AuthLayer, Body, Mount, OidcConfig, Token, User};
use oidc::{Browser, Page, Provider, CLIENT_ID, CLIENT_SECRET};

/// A gateway for `issuer` whose public URL is its own loopback address: `build` gets the
/// provider's configuration and makes the app.
async fn gateway(issuer: &str, build: impl FnOnce(OidcConfig) -> AppBuilder) -> Gateway {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let config = OidcConfig::new(issuer, CLIENT_ID, CLIENT_SECRET, public)
        .scopes(["openid", "profile", "email", "groups"])
        .timeout(Duration::from_secs(5));
    let app = build(config).build().unwrap();
    let server = TestServer::start_on(listener, app.clone()).await;
    Gateway { app, server }
}

/// Starts a sign-in at `gateway` (going to `next` afterwards), signs in at the provider as
/// `login`, and returns the browser, the callback URL the provider sent it to (not followed)
/// and the flow cookie the gateway set.
async fn to_callback(
    gateway: &Gateway,
    issuer: &str,
    login: &str,
    next: &str,
) -> (Browser, String, String) {
    let mut browser = Browser::default();
    let start = browser
        .get(&gateway.url(&format!("/auth/oidc?next={}", encode(next))))
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{start:?}");
    let to_provider = start.location.clone().unwrap();
    assert!(to_provider.starts_with(issuer), "{to_provider}");
    let flow = browser
        .cookie_named("marimo_rs_flow_")
        .expect("a flow cookie for the callback");
    let callback = browser
        .sign_in_at_provider(issuer, &to_provider, login)
        .await;
    assert!(
        callback.starts_with(&gateway.url("/auth/callback?")),
        "{callback}"
    );
    (browser, callback, flow)
}

/// Signs in at `gateway` as `login`; returns the browser holding the session cookie and the
/// gateway's answer to the callback.
async fn sign_in(gateway: &Gateway, issuer: &str, login: &str, next: &str) -> (Browser, Page) {
    let mut browser = Browser::default();
    let start = gateway.url(&format!("/auth/oidc?next={}", encode(next)));
    let back = browser.sign_in_through(&start, issuer, login).await;
    (browser, back)
}

/// The page at `path` for a browser with `cookie`, once the notebook's backend has started.
async fn notebook_page(gateway: &Gateway, path: &str, cookie: &str) -> common::Reply {
    common::eventually(
        Duration::from_secs(120),
        Duration::from_millis(200),
        async || gateway.get(path, &[HTML, ("cookie", cookie)]).await,
        |page| page.status != StatusCode::SERVICE_UNAVAILABLE,
    )
    .await
}

/// The session cookie (`name=value`) a signed-in browser holds.
fn session(browser: &Browser) -> String {
    browser
        .cookie_named("marimo_rs_session_")
        .expect("a session cookie")
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A gateway for `issuer` that answers who it sees at every path (see [`whoami`]).
async fn whoami_gateway(issuer: &str) -> Gateway {
    gateway(issuer, |config| {
        create_app().with_service("/", whoami()).oidc(config)
    })
    .await
}

/// A stand-in mount that answers who it sees: `user=NAME email=… groups=a,b`, and the
/// identity headers that reached it.
fn whoami() -> impl Endpoint {
    tower::service_fn(|req: Request<Body>| async move {
        let user = req.extensions().get::<User>();
        let forwarded: Vec<&str> = req
            .headers()
            .keys()
            .map(|name| name.as_str())
            .filter(|name| name.starts_with("x-forwarded-user") || name.starts_with("x-pomerium"))
            .collect();
        let text = format!(
            "user={} email={} groups={} identity-headers={:?}",
            user.map_or("-", User::name),
            user.and_then(User::email).unwrap_or("-"),
            user.map(|user| user.groups().join(",")).unwrap_or_default(),
            forwarded
        );
        Ok::<_, std::convert::Infallible>(Response::new(Body::from(text)))
    })
}

#[tokio::test]
async fn signing_in_at_the_provider_opens_the_notebook_with_name_and_groups() {
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let gateway = gateway(issuer, |config| {
        create_app()
            .with_app("/who", example_notebook("identity.py"))
            .oidc(config)
    })
    .await;

    // Not signed in: a page load goes straight to the provider, with the flow cookie; an API
    // call gets 401, a WebSocket 403.
    let page = gateway.get("/who/?tab=1", &[HTML]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.brief());
    assert!(page
        .header("location")
        .unwrap()
        .starts_with(&format!("{issuer}/auth?")));
    let flow = page.header("set-cookie").unwrap();
    assert!(flow.starts_with("marimo_rs_flow_"), "{flow}");
    for attribute in [
        "; Path=/auth/callback;",
        "; HttpOnly",
        "; SameSite=Lax",
        "; Max-Age=600;",
    ] {
        assert!(flow.contains(attribute), "{flow}");
    }
    assert_eq!(
        gateway.get("/who/api/status", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let refused = ws_connect(&gateway.ws_url("/who/ws?session_id=anon"), &[]).await;
    assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN));

    // Through the provider's own login and consent pages, and back where we were going.
    let (browser, back) = sign_in(&gateway, issuer, "ada", "/who/?tab=1").await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{back:?}");
    assert_eq!(back.location.as_deref(), Some(&*gateway.url("/who/?tab=1")));
    assert!(
        browser.cookie_named("marimo_rs_flow_").is_none(),
        "the flow cookie is cleared"
    );
    let cookie = session(&browser);
    let page = notebook_page(&gateway, "/who/", &cookie).await;
    assert!(is_notebook_page(&page), "{}", page.brief());

    // The notebook sees who signed in: name, email and groups.
    let mut ws = kernel(
        &gateway.ws_url("/who/ws?session_id=ada-1"),
        &[("cookie", &cookie)],
    )
    .await;
    until_output(
        &mut ws,
        "Signed in as <strong>ada</strong>; groups: <strong>analysts, admins</strong>; \
         email: <code>ada@example.com</code>",
    )
    .await;
    drop(ws);
    gateway.stop().await;
}

#[tokio::test]
async fn access_rules_refuse_other_groups_with_a_page_and_no_backend() {
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let gateway = gateway(issuer, |config| {
        create_app()
            .mount(
                "/finance",
                Mount::app(example_notebook("intro.py"))
                    .access(Access::signed_in().groups(["admins"])),
            )
            .mount(
                "/apps",
                Mount::directory(example_notebook("."))
                    .notebook_access("intro.py", Access::signed_in().users(["ada"])),
            )
            .oidc(config)
    })
    .await;

    let (bob, _) = sign_in(&gateway, issuer, "bob", "/finance/").await;
    let bob = session(&bob);
    let page = gateway.get("/finance/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.brief());
    assert!(
        page.body.contains("<b>bob</b>"),
        "names the user: {}",
        page.body
    );
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/auth/logout\">"),
        "offers sign-out: {}",
        page.body
    );
    let api = gateway
        .get("/finance/api/status", &[("cookie", &bob)])
        .await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    let socket = ws_connect(
        &gateway.ws_url("/finance/ws?session_id=bob-1"),
        &[("cookie", &bob)],
    )
    .await;
    assert_eq!(socket.err(), Some(StatusCode::FORBIDDEN));
    // In the directory: bob's index has no intro, and opening it is refused.
    let index = gateway.get("/apps/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index.body.contains("identity"), "{}", index.body);
    assert!(!index.body.contains("intro"), "{}", index.body);
    let intro = gateway.get("/apps/intro/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(intro.status, StatusCode::FORBIDDEN);
    assert!(
        gateway.app.backend_pids().is_empty(),
        "no backend was started for a refused user: {:?}",
        gateway.app.backend_pids()
    );

    let (ada, _) = sign_in(&gateway, issuer, "ada", "/finance/").await;
    let ada = session(&ada);
    let page = notebook_page(&gateway, "/finance/", &ada).await;
    assert!(is_notebook_page(&page), "{}", page.brief());
    assert_eq!(gateway.app.backend_pids().len(), 1);
    let index = gateway.get("/apps/", &[HTML, ("cookie", &ada)]).await;
    assert!(index.body.contains("intro"), "{}", index.body);
    gateway.stop().await;
}

#[tokio::test]
async fn sign_out_revokes_the_session_and_continues_at_the_provider() {
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let gateway = whoami_gateway(issuer).await;
    let (mut browser, _) = sign_in(&gateway, issuer, "ada", "/").await;
    let copy = session(&browser);
    assert!(gateway
        .get("/x", &[("cookie", &copy)])
        .await
        .body
        .starts_with("user=ada "));

    // GET asks; POST signs out.
    let confirm = browser.get(&gateway.url("/auth/logout")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains("<form method=\"post\" action=\"logout\">"),
        "{}",
        confirm.body
    );
    let out = browser.post_form(&gateway.url("/auth/logout"), &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{out:?}");
    assert!(
        browser.cookie_named("marimo_rs_session_").is_none(),
        "the cookie is cleared"
    );
    let to_provider = out.location.unwrap();
    assert!(
        to_provider.starts_with(&format!("{issuer}/session/end?")),
        "{to_provider}"
    );
    assert_eq!(
        oidc::query_param(&to_provider, "client_id").as_deref(),
        Some(CLIENT_ID)
    );
    let back = gateway.url("/auth/signed-out");
    assert_eq!(
        oidc::query_param(&to_provider, "post_logout_redirect_uri").as_deref(),
        Some(&*back)
    );
    // The provider's sign-out page, then back to the gateway's signed-out page.
    let provider_page = browser.get(&to_provider).await;
    assert_eq!(
        provider_page.status,
        StatusCode::OK,
        "{}",
        provider_page.body
    );
    let (action, mut form) = hidden_form(&provider_page.body);
    form.push(("logout".into(), "yes".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ended = browser.post_form(&absolute(issuer, &action), &pairs).await;
    let landing = ended.location.expect("the provider sends the browser back");
    assert!(landing.starts_with(&back), "{landing}");
    let signed_out = browser.get(&landing).await;
    assert_eq!(signed_out.status, StatusCode::OK);
    assert!(
        signed_out.body.contains("You are signed out"),
        "{}",
        signed_out.body
    );

    // The copy taken before signing out is refused.
    let stale = gateway.get("/x", &[("cookie", &copy)]).await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.brief());
    let stale_page = gateway.get("/x", &[HTML, ("cookie", &copy)]).await;
    assert_eq!(
        stale_page.status,
        StatusCode::SEE_OTHER,
        "sent to sign in again"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn signing_a_user_out_everywhere_refuses_every_earlier_session() {
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let auth = AuthLayer::oidc(
        OidcConfig::new(issuer, CLIENT_ID, CLIENT_SECRET, public)
            .scopes(["openid", "profile", "email", "groups"]),
    )
    .token(Token::new("admin-token"))
    .admins(Access::signed_in().groups(["admins"]));
    let app = create_app()
        .with_service("/", whoami())
        .auth(auth.clone())
        .build()
        .unwrap();
    let gateway = Gateway {
        app: app.clone(),
        server: TestServer::start_on(listener, app).await,
    };
    let ada_one = session(&sign_in(&gateway, issuer, "ada", "/").await.0);
    let ada_two = session(&sign_in(&gateway, issuer, "ada", "/").await.0);
    let bob = session(&sign_in(&gateway, issuer, "bob", "/").await.0);
    let ok = |cookie: &str| {
        let cookie = cookie.to_owned();
        let gateway = &gateway;
        async move { gateway.get("/x", &[("cookie", &cookie)]).await.status }
    };

    // The library call.
    auth.sign_out_everywhere("ada");
    assert_eq!(ok(&ada_one).await, StatusCode::UNAUTHORIZED);
    assert_eq!(ok(&ada_two).await, StatusCode::UNAUTHORIZED);
    assert_eq!(ok(&bob).await, StatusCode::OK, "other users stay signed in");
    // Signing in again afterwards works.
    let ada_three = session(&sign_in(&gateway, issuer, "ada", "/").await.0);
    assert_eq!(ok(&ada_three).await, StatusCode::OK);

    // The HTTP API: not for bob, for an admin (ada, in "admins") and for the token.
    let everywhere = "/auth/sign-out-everywhere?user=bob";
    let as_bob = gateway
        .send(Method::POST, everywhere, &[("cookie", &bob)], "")
        .await;
    assert_eq!(as_bob.status, StatusCode::FORBIDDEN);
    let as_ada = gateway
        .send(Method::POST, everywhere, &[("cookie", &ada_three)], "")
        .await;
    assert_eq!(as_ada.status, StatusCode::OK, "{}", as_ada.body);
    assert!(as_ada.body.contains("\"user\":\"bob\""), "{}", as_ada.body);
    assert_eq!(ok(&bob).await, StatusCode::UNAUTHORIZED);
    let by_token = gateway
        .send(
            Method::POST,
            "/auth/sign-out-everywhere?user=ada",
            &[("authorization", "Bearer admin-token")],
            "",
        )
        .await;
    assert_eq!(by_token.status, StatusCode::OK, "{}", by_token.body);
    assert_eq!(ok(&ada_three).await, StatusCode::UNAUTHORIZED);
    gateway.stop().await;
}

#[tokio::test]
async fn forged_replayed_and_invalid_callbacks_are_refused() {
    if !oidc::available() {
        return;
    }
    // Its own provider: its next ID token is changed below.
    let provider = Provider::start(&oidc::gateway_config()).await;
    let issuer = provider.issuer.clone();
    let gateway = whoami_gateway(&issuer).await;

    // A tampered `state`: 400, nothing signed in, the flow cookie cleared anyway.
    let (mut browser, callback, _) = to_callback(&gateway, &issuer, "ada", "/").await;
    let state = oidc::query_param(&callback, "state").unwrap();
    let tampered = callback.replace(&encode(&state), "forged-state");
    let refused = browser.get(&tampered).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{refused:?}");
    assert!(refused.body.contains("state mismatch"), "{}", refused.body);
    assert!(refused.body.contains("Start again"), "{}", refused.body);
    assert!(browser.cookie_named("marimo_rs_session_").is_none());
    assert!(browser.cookie_named("marimo_rs_flow_").is_none());

    // A replayed callback: without the flow cookie (another browser, or this one after it
    // was used) there is no sign-in; with a copy of it, the provider refuses the used code.
    let (mut browser, callback, flow) = to_callback(&gateway, &issuer, "ada", "/").await;
    let first = browser.get(&callback).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let again = browser.get(&callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{again:?}");
    assert!(
        again.body.contains("No sign-in is in progress"),
        "{}",
        again.body
    );
    let replayed = send(Method::GET, &callback, &[("cookie", &flow)], "").await;
    assert_eq!(
        replayed.status,
        StatusCode::FORBIDDEN,
        "{}",
        replayed.brief()
    );
    assert!(replayed.body.contains("already used"), "{}", replayed.body);
    assert!(replayed
        .header("set-cookie")
        .is_none_or(|c| !c.starts_with("marimo_rs_session_")));

    // ID tokens that do not hold: a wrong nonce, another audience, expired.
    for (claims, expected) in [
        (serde_json::json!({"nonce": "not-this-sign-in"}), "nonce"),
        (
            serde_json::json!({"aud": "another-client"}),
            "is for another client",
        ),
        (serde_json::json!({"exp": 1, "iat": 0}), "has expired"),
    ] {
        let (mut browser, callback, _) = to_callback(&gateway, &issuer, "ada", "/").await;
        provider.override_next_id_token(claims.clone()).await;
        let refused = browser.get(&callback).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{claims}: {refused:?}"
        );
        assert!(
            refused.body.contains(expected),
            "{claims}: {}",
            refused.body
        );
        assert!(
            browser.cookie_named("marimo_rs_session_").is_none(),
            "{claims}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn key_rotation_is_followed_and_signed_in_requests_never_ask_the_provider() {
    if !oidc::available() {
        return;
    }
    let mut provider = Provider::start(&oidc::gateway_config()).await;
    let issuer = provider.issuer.clone();
    let gateway = whoami_gateway(&issuer).await;
    let before = session(&sign_in(&gateway, &issuer, "ada", "/").await.0);
    // The provider rotates its signing key (a restart with a new key on the same port).
    provider.restart_with_key("key-2").await;
    let (browser, back) = sign_in(&gateway, &issuer, "bob", "/").await;
    assert_eq!(
        back.status,
        StatusCode::SEE_OTHER,
        "signed in after a key refetch: {back:?}"
    );
    let after = session(&browser);
    // With the provider gone, signed-in users carry on: their requests never ask it.
    provider.stop().await;
    for cookie in [&before, &after] {
        let reply = gateway.get("/x", &[("cookie", cookie)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.brief());
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_provider_down_at_start_gives_a_503_page_until_it_answers() {
    if !oidc::available() {
        return;
    }
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let issuer = format!("http://127.0.0.1:{port}");
    let gateway = whoami_gateway(&issuer).await;
    let down = gateway.get("/", &[HTML]).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.brief()
    );
    assert!(
        down.body.contains("Sign-in is unavailable"),
        "{}",
        down.body
    );
    assert!(down.body.contains("is not reachable"), "{}", down.body);
    assert_eq!(down.header("retry-after"), Some("5"));
    // The API still says 401 (nothing to do with the provider), and a health probe passes.
    assert_eq!(
        gateway.get("/x", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );

    let _provider = Provider::start_on(&oidc::gateway_config(), port).await;
    let up = common::eventually(
        Duration::from_secs(20),
        Duration::from_millis(500),
        async || gateway.get("/", &[HTML]).await,
        |reply| reply.status == StatusCode::SEE_OTHER,
    )
    .await;
    assert!(up
        .header("location")
        .unwrap()
        .starts_with(&format!("{issuer}/auth?")));
    gateway.stop().await;
}

#[tokio::test]
async fn proxy_headers_are_believed_from_trusted_addresses_only_and_never_passed_on() {
    let start = |trusted: &'static str| async move {
        let auth = AuthLayer::new(Token::new("t0ken"))
            .trusted_proxies([trusted])
            .proxy_identity(marimo_rs::ProxyIdentity::headers());
        TestServer::start(
            create_app()
                .with_service("/", whoami())
                .auth(auth)
                .build()
                .unwrap(),
        )
        .await
    };
    let identity = [
        ("x-forwarded-user", "u-17"),
        ("x-forwarded-preferred-username", "grace"),
        ("x-forwarded-email", "grace@example.com"),
        ("x-forwarded-groups", "ops,admins"),
    ];
    // The test's requests come from 127.0.0.1.
    let trusting = start("127.0.0.1").await;
    let reply = trusting.get("/x", &identity).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        "user=grace email=grace@example.com groups=ops,admins identity-headers=[]"
    );
    let elsewhere = start("10.1.2.3").await;
    let ignored = elsewhere.get("/x", &identity).await;
    assert_eq!(
        ignored.status,
        StatusCode::UNAUTHORIZED,
        "not a trusted proxy"
    );
    let mut with_token = identity.to_vec();
    with_token.push(("authorization", "Bearer t0ken"));
    let stripped = elsewhere.get("/x", &with_token).await;
    assert_eq!(
        stripped.body, "user=user email=- groups= identity-headers=[]",
        "the headers are removed, the token decides"
    );
}

#[tokio::test]
async fn proxy_assertions_are_verified_against_the_proxys_keys() {
    if !oidc::available() {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |extra: serde_json::Value| {
        let mut claims = serde_json::json!({
            "iss": "proxy.example", "aud": "marimo.example", "sub": "u-42",
            "email": "lin@example.com", "name": "lin", "groups": ["ops"],
            "iat": now, "exp": now + 300,
        });
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };
    let (jwks, tokens) = oidc::sign_assertions(&[
        claims(serde_json::json!({})),
        claims(serde_json::json!({"exp": now - 3600})),
        claims(serde_json::json!({"aud": "another.example"})),
    ]);
    let keys = TestServer::start(
        create_app()
            .with_service(
                "/",
                tower::service_fn(move |_req: Request<Body>| {
                    let jwks = jwks.to_string();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Body::from(jwks))) }
                }),
            )
            .build()
            .unwrap(),
    )
    .await;
    let identity = marimo_rs::ProxyIdentity::jwt_assertion(keys.url("/jwks.json"))
        .issuer("proxy.example")
        .audience("marimo.example");
    let start = |trusted: &'static str| {
        let identity = identity.clone();
        async move {
            let auth = AuthLayer::new(Token::random())
                .trusted_proxies([trusted])
                .proxy_identity(identity);
            TestServer::start(
                create_app()
                    .with_service("/", whoami())
                    .auth(auth)
                    .build()
                    .unwrap(),
            )
            .await
        }
    };
    let header = "x-pomerium-jwt-assertion";
    let trusting = start("127.0.0.1").await;
    // Twice: the first fetches the keys, the second is verified from the cache.
    for _ in 0..2 {
        let reply = trusting.get("/x", &[(header, &tokens[0])]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.brief());
        assert_eq!(
            reply.body,
            "user=lin email=lin@example.com groups=ops identity-headers=[]"
        );
    }
    for (token, what) in [(&tokens[1], "expired"), (&tokens[2], "another audience")] {
        let reply = trusting.get("/x", &[(header, token)]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    let forged = format!("{}x", &tokens[0][..tokens[0].len() - 1]);
    assert_eq!(
        trusting.get("/x", &[(header, &forged)]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let elsewhere = start("10.1.2.3").await;
    assert_eq!(
        elsewhere.get("/x", &[(header, &tokens[0])]).await.status,
        StatusCode::UNAUTHORIZED,
        "not from a trusted proxy"
    );
}

/// Every audit event of this test binary, as JSON lines (a global subscriber, installed once).
fn audit_lines() -> Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt as _;
            let lines = Arc::new(Mutex::new(Vec::new()));
            let writer = Shared(lines.clone());
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(move || writer.clone())
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("marimo_rs::audit", tracing::Level::INFO),
                );
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                .unwrap();
            lines
        })
        .clone()
}

use tracing_subscriber::Layer as _;

#[derive(Clone)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_audit_log_has_every_event_and_no_secret() {
    let lines = audit_lines();
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let gateway = gateway(issuer, |config| {
        create_app()
            .mount(
                "/who",
                Mount::app(example_notebook("identity.py"))
                    .access(Access::signed_in().users(["audit-ada", "ada"])),
            )
            .auth(
                AuthLayer::oidc(config)
                    .token(Token::new("audit-t0ken"))
                    .login_limit(2, Duration::from_secs(3600)),
            )
    })
    .await;
    // A sign-in, a refused one, a refused user, a notebook session, a sign-out.
    let (mut browser, callback, flow) = to_callback(&gateway, issuer, "ada", "/who/").await;
    let code = oidc::query_param(&callback, "code").unwrap();
    browser.get(&callback).await;
    let cookie = session(&browser);
    let replayed = send(Method::GET, &callback, &[("cookie", &flow)], "").await;
    assert_eq!(replayed.status, StatusCode::FORBIDDEN);
    let (bob, _) = sign_in(&gateway, issuer, "bob", "/who/").await;
    let bob = session(&bob);
    assert_eq!(
        gateway.get("/who/", &[HTML, ("cookie", &bob)]).await.status,
        StatusCode::FORBIDDEN
    );
    let mut ws = kernel(
        &gateway.ws_url("/who/ws?session_id=audit-1"),
        &[("cookie", &cookie)],
    )
    .await;
    until_output(&mut ws, "Signed in as <strong>ada</strong>").await;
    drop(ws);
    browser.post_form(&gateway.url("/auth/logout"), &[]).await;
    // Wrong tokens until the limit refuses them unchecked.
    for _ in 0..3 {
        gateway
            .get("/x", &[("authorization", "Bearer wrong-guess")])
            .await;
    }
    // Other tests of this binary sign in too: this one's events are told by its session ids
    // (the gateway's, read from the cookie's payload, and marimo's) and its mount.
    let payload = cookie.split('.').nth(3).unwrap();
    let payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let session_id = payload["i"].as_str().unwrap().to_owned();
    let text = common::eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || String::from_utf8_lossy(&lines.lock().unwrap()).into_owned(),
        // This session's own close (another test's may come first).
        |text| {
            text.lines()
                .any(|line| line.contains("\"session_closed\"") && line.contains("\"audit-1\""))
        },
    )
    .await;
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |what: &str, matches: &dyn Fn(&serde_json::Value) -> bool| {
        events
            .iter()
            .find(|e| matches(e))
            .unwrap_or_else(|| panic!("no {what} in:\n{text}"))
    };
    let signed_in = find("sign-in", &|e| {
        e["event"] == "sign_in" && e["session"] == *session_id
    });
    assert_eq!(signed_in["user"], "ada");
    assert_eq!(signed_in["method"], "oidc");
    assert_eq!(signed_in["client"], "127.0.0.1");
    assert_eq!(signed_in["result"], "ok");
    let out = find("sign-out", &|e| {
        e["event"] == "sign_out" && e["session"] == *session_id
    });
    assert_eq!(out["user"], "ada");
    let failed = find("failed sign-in", &|e| {
        e["event"] == "sign_in_failed" && e["method"] == "oidc"
    });
    assert!(
        failed["reason"].as_str().unwrap().contains("already used"),
        "{failed}"
    );
    let denied = find("refusal", &|e| {
        e["event"] == "access_denied"
            && e["user"] == "bob"
            && e["mount"]
                .as_str()
                .is_some_and(|mount| mount.starts_with("/who"))
    });
    assert_eq!(denied["client"], "127.0.0.1");
    for event in ["session_opened", "session_closed"] {
        let found = find(event, &|e| e["event"] == event && e["session"] == "audit-1");
        assert_eq!(found["user"], "ada");
        assert!(
            found["mount"].as_str().unwrap().starts_with("/who"),
            "{found}"
        );
    }
    assert!(events
        .iter()
        .any(|e| e["event"] == "sign_in_failed" && e["method"] == "bearer"));
    assert!(events
        .iter()
        .any(|e| e["event"] == "sign_in_limited" && e["method"] == "bearer"));
    // Nothing secret: the client secret, the code, the cookies, the token.
    let cookie_value = cookie.split_once('=').unwrap().1;
    let flow_value = flow.split_once('=').unwrap().1;
    for secret in [
        CLIENT_SECRET,
        &code,
        cookie_value,
        flow_value,
        "audit-t0ken",
        "wrong-guess",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the audit log:\n{text}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn full_sign_in_in_chromium_shows_name_and_groups() {
    use common::cdp::Browser as Chromium;
    if !Chromium::available() {
        return;
    }
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let gateway = gateway(issuer, |config| {
        create_app()
            .with_app("/who", example_notebook("identity.py"))
            .oidc(config)
    })
    .await;
    let chromium = Chromium::launch().await.expect("Chromium starts");
    let page = chromium.new_page().await.unwrap();
    page.goto(&gateway.url("/who/")).await.unwrap();
    // The provider's login page (oidc-provider's own), then its consent page.
    page.wait_for(
        "document.querySelector('input[name=login]') !== null",
        Duration::from_secs(30),
    )
    .await
    .expect("the provider's login page");
    let at = page.eval("location.origin").await.unwrap();
    assert_eq!(at.as_str(), Some(issuer), "signing in at the provider");
    page.type_into("input[name=login]", "ada").await.unwrap();
    page.type_into("input[name=password]", "any password")
        .await
        .unwrap();
    page.press_key("Enter").await.unwrap();
    page.wait_for(
        "document.querySelector('input[name=prompt][value=consent]') !== null \
         || location.pathname === '/who/'",
        Duration::from_secs(30),
    )
    .await
    .expect("the consent page or the notebook");
    if page.eval("location.pathname").await.unwrap().as_str() != Some("/who/") {
        page.eval("document.querySelector('form').submit()")
            .await
            .unwrap();
    }
    page.wait_for_text("Signed in as ada", Duration::from_secs(120))
        .await
        .expect("back on the notebook, signed in");
    page.wait_for_text("groups: analysts, admins", Duration::from_secs(10))
        .await
        .unwrap();
    let path = page.eval("location.pathname").await.unwrap();
    assert_eq!(path.as_str(), Some("/who/"));
    drop(page);
    drop(chromium);
    gateway.stop().await;
}

/// The action and hidden inputs of the (single) form on a provider page.
fn hidden_form(page: &str) -> (String, Vec<(String, String)>) {
    let attribute = |tag: &str, name: &str| {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[at..at + tag[at..].find('"')?].to_owned())
    };
    let form_at = page.find("<form").expect("a form");
    let form_tag = &page[form_at..form_at + page[form_at..].find('>').unwrap()];
    let action = attribute(form_tag, "action").expect("an action");
    let mut fields = Vec::new();
    for input in page[form_at..].split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if attribute(tag, "type").as_deref() == Some("hidden") {
            if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value")) {
                fields.push((name, value));
            }
        }
    }
    (action.replace("&amp;", "&"), fields)
}

/// `path` made absolute on `origin`, unless it is already a URL.
fn absolute(origin: &str, path: &str) -> String {
    if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{origin}{path}")
    }
}

/// The value of the metric `name` (a line `name VALUE` with no labels) in `exposition`.
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{exposition}"))
}

#[tokio::test]
async fn admin_groups_open_the_admin_page_and_provider_sign_ins_are_counted() {
    if !oidc::available() {
        return;
    }
    // Its own provider: its next ID token is changed below.
    let provider = Provider::start(&oidc::gateway_config()).await;
    let issuer = provider.issuer.clone();
    let gateway = gateway(&issuer, |config| {
        create_app()
            .with_service("/", whoami())
            .oidc(config)
            .metrics(marimo_rs::Metrics::new())
            .admin(marimo_rs::Admin::new().groups(["admins"]))
    })
    .await;
    let counters = async || {
        let scraped = gateway.get("/metrics", &[]).await;
        assert_eq!(scraped.status, StatusCode::OK, "{}", scraped.brief());
        (
            metric(&scraped.body, "marimo_rs_sign_ins_total"),
            metric(&scraped.body, "marimo_rs_credential_failures_total"),
        )
    };
    assert_eq!(counters().await, (0.0, 0.0));

    // ada is in `admins`: the admin page. bob is in no group: 403, though signed in.
    let (ada, _) = sign_in(&gateway, &issuer, "ada", "/").await;
    let state = gateway
        .get("/_admin/state", &[("cookie", &session(&ada))])
        .await;
    assert_eq!(state.status, StatusCode::OK, "{}", state.brief());
    assert!(state.body.contains("\"mounts\""), "{}", state.body);
    let (bob, _) = sign_in(&gateway, &issuer, "bob", "/").await;
    let refused = gateway
        .get("/_admin/state", &[("cookie", &session(&bob))])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.brief());
    assert_eq!(counters().await, (2.0, 0.0), "two sign-ins at the provider");

    // An ID token that does not hold is a failed sign-in.
    let (mut browser, callback, _) = to_callback(&gateway, &issuer, "ada", "/").await;
    provider
        .override_next_id_token(serde_json::json!({"nonce": "not-this-sign-in"}))
        .await;
    assert_eq!(browser.get(&callback).await.status, StatusCode::FORBIDDEN);
    assert_eq!(counters().await, (2.0, 1.0), "one failed sign-in");
    gateway.stop().await;
}
