//! Scaling out: replicas that share nothing but `MARIMO_RS_SECRET`, behind real load balancers
//! (Debian's haproxy and nginx, started here on loopback ports; `.ci/install-haproxy` installs
//! them). The replicas are the real `marimo-rs` binary with real marimo backends.
//!
//! - Replicas with one secret print the same token and accept each other's session cookies.
//! - Through haproxy with cookie affinity, a marimo session's WebSocket and API calls stay on
//!   one replica while other traffic alternates; a session call that reaches the other replica
//!   gets a clear, retryable `503` instead of marimo's `500 Invalid session id`.
//! - A replica killed: a reload is served by the other one, with the same login.
//! - deploy/nginx.conf, run as shipped (ports changed), pins browsers the same way.
//! - Rotating the secret keeps the old secret's sessions and links while it is listed.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::ops::Deref;
use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::marimo::{
    intro_at, is_notebook_page, kernel, set_slider, slider_at, until_output, until_slider, Gateway,
};
use common::process::{marimo_rs, MarimoRs};
use common::{
    descendants, eventually, example_notebook, send, wait_gone, Reply, Site, TestServer, Ws, FORM,
    HTML, JSON,
};
use http::{Method, Request, Response, StatusCode};
use marimo_rs::{create_app, AuthLayer, Body, Token};

const SECRET: &str = "replicas-test-secret-0123456789abcdef0123";

/// A running `marimo-rs run intro.py --token` with a secret; killed when dropped.
struct Replica {
    name: &'static str,
    server: MarimoRs,
}

impl Replica {
    /// Starts one replica named `name` with `MARIMO_RS_SECRET=secret` (and old secrets).
    async fn start(name: &'static str, secret: &str, old: Option<&str>) -> Self {
        let notebook = example_notebook("intro.py");
        let mut command = marimo_rs(&[
            "run",
            notebook.to_str().unwrap(),
            "--port",
            "0",
            "--headless",
            "--token",
            "--replica-id",
            name,
            // The test's POSTs come from no page, so they carry no server token.
            "--no-skew-protection",
        ]);
        command.env("MARIMO_RS_SECRET", secret);
        if let Some(old) = old {
            command.env("MARIMO_RS_OLD_SECRETS", old);
        }
        Self {
            name,
            server: MarimoRs::start(command, None).await,
        }
    }

    fn token(&self) -> &str {
        self.server.token().expect("a token")
    }

    /// `(name, port)`, as a load balancer names its servers.
    fn upstream(&self) -> (&str, u16) {
        (self.name, self.port())
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(self) {
        let (status, _, stderr) = self.server.terminate().await;
        assert!(
            status.success(),
            "replica {} exited with {status}; stderr:\n{stderr}",
            self.name
        );
    }
}

impl Deref for Replica {
    type Target = MarimoRs;

    fn deref(&self) -> &MarimoRs {
        &self.server
    }
}

/// `GET /` at `site` as a browser with `cookie`.
async fn browse(site: &impl Site, cookie: &str) -> Reply {
    site.get("/", &[HTML, ("cookie", cookie)]).await
}

/// Signs in through the login form at `origin`; returns `name=value` of the session cookie.
async fn login(origin: &str, token: &str) -> String {
    let form = format!("password={token}&next=%2F");
    let reply = send(
        Method::POST,
        &format!("{origin}/auth/login"),
        &[FORM],
        &form,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::FOUND,
        "login at {origin}: {reply:?}"
    );
    reply.cookie()
}

fn replica_of(reply: &Reply) -> String {
    reply
        .header("x-marimo-rs-replica")
        .unwrap_or_else(|| panic!("no x-marimo-rs-replica header: {reply:?}"))
        .to_owned()
}

/// Opens a kernel session over the WebSocket at `base` with `cookie`; returns it with the
/// slider's id.
async fn open_session(base: &str, session: &str, cookie: &str) -> (Ws, String) {
    let url = format!("{}/ws?session_id={session}", common::marimo::ws_url(base));
    let mut ws = kernel(&url, &[("cookie", cookie)]).await;
    let slider = until_slider(&mut ws).await;
    (ws, slider)
}

/// Moves the slider of `session` at `base`, sending `cookie` as it is.
async fn move_slider(base: &str, cookie: &str, session: &str, slider: &str, value: u32) -> Reply {
    set_slider(base, session, slider, value, &[("cookie", cookie)]).await
}

fn assert_elsewhere(reply: &Reply, replica: &str) {
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("1"), "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(replica_of(reply), replica);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let detail = json["detail"].as_str().unwrap();
    assert!(detail.contains("another replica"), "{detail}");
    assert!(detail.contains("affinity"), "{detail}");
}

/// The backend's own answer (marimo's), not the gateway's refusal.
fn assert_forwarded(reply: &Reply) {
    assert_ne!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(!reply.body.contains("another replica"), "{reply:?}");
    assert!(
        reply.status == StatusCode::OK || reply.body.starts_with(r#"{"detail":"#),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_logins_and_keep_each_session_on_its_replica_behind_load_balancers() {
    let (a, b) = tokio::join!(
        Replica::start("a", SECRET, None),
        Replica::start("b", SECRET, None)
    );

    // The same token, derived from the code and the secret (not from the code alone).
    let code = std::fs::read_to_string(example_notebook("intro.py")).unwrap();
    assert_eq!(a.token(), b.token());
    let expected = Token::from_code_with_secret(&code, SECRET.as_bytes());
    assert_eq!(a.token(), expected.expose_secret());
    assert_ne!(a.token(), Token::from_code(&code).expose_secret());

    // Signed in at A, the browser is signed in at B.
    let cookie = login(a.origin(), a.token()).await;
    assert!(cookie.starts_with("marimo_rs_session_"), "{cookie}");
    let at_b = browse(&b.server, &cookie).await;
    assert!(is_notebook_page(&at_b), "B refused A's cookie: {at_b:?}");
    assert_eq!(replica_of(&at_b), "b");
    let anonymous = b.get("/", &[HTML]).await;
    assert_eq!(
        anonymous.status,
        StatusCode::SEE_OTHER,
        "B still needs a login"
    );

    let lb = Balancer::haproxy(&[a.upstream(), b.upstream()]).await;
    let base = lb.url("");

    // The first page load through haproxy picks a replica and pins the browser to it.
    let first = browse(&lb, &cookie).await;
    assert!(is_notebook_page(&first), "{first:?}");
    let home = replica_of(&first);
    assert!(
        first.cookies().contains(&format!("SRV={home}")),
        "haproxy pins the browser to {home}: {:?}",
        first.cookies()
    );
    let away = if home == "a" { "b" } else { "a" };
    let pinned = format!("{cookie}; SRV={home}");
    let (mut ws, slider) = open_session(&base, "replicas-s1", &pinned).await;

    // Requests without the affinity cookie alternate between the replicas, while the pinned
    // session's calls all reach its replica and the WebSocket carries every update.
    let mut seen = HashSet::new();
    for value in [4, 5, 6, 7] {
        let other = lb.get("/api/version", &[("cookie", &cookie)]).await;
        assert_eq!(other.status, StatusCode::OK, "{other:?}");
        seen.insert(replica_of(&other));
        let set = move_slider(&base, &pinned, "replicas-s1", &slider, value).await;
        assert_eq!(set.status, StatusCode::OK, "{set:?}");
        assert_eq!(replica_of(&set), home);
        until_output(&mut ws, &slider_at(value)).await;
    }
    assert_eq!(seen.len(), 2, "round robin reaches both replicas: {seen:?}");

    // Without affinity, a call for the session that lands on the other replica is refused
    // clearly (marimo itself would answer `500 Invalid session id`).
    let direct = if away == "a" { &a } else { &b };
    let refused = move_slider(direct.origin(), &cookie, "replicas-s1", &slider, 8).await;
    assert_elsewhere(&refused, away);
    let mut statuses = Vec::new();
    for value in [8, 9] {
        let reply = move_slider(&base, &cookie, "replicas-s1", &slider, value).await;
        if reply.status == StatusCode::OK {
            assert_eq!(replica_of(&reply), home);
        } else {
            assert_elsewhere(&reply, away);
        }
        statuses.push(reply.status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
        "one call per replica"
    );
    // The session is intact: the pinned route still drives it.
    let set = move_slider(&base, &pinned, "replicas-s1", &slider, 10).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    until_output(&mut ws, &slider_at(10)).await;
    drop(ws);

    // deploy/nginx.conf as shipped: its affinity cookie pins a browser the same way.
    let nginx = Balancer::nginx([a.port(), b.port()]).await;
    let first = browse(&nginx, &cookie).await;
    assert!(is_notebook_page(&first), "{first:?}");
    let affinity = first.cookie_named("marimo_rs_affinity");
    let nginx_home = replica_of(&first);
    let with_affinity = format!("{cookie}; {affinity}");
    let nginx_base = nginx.url("");
    let (mut nginx_ws, nginx_slider) =
        open_session(&nginx_base, "replicas-nginx", &with_affinity).await;
    for value in [5, 6] {
        let set = move_slider(
            &nginx_base,
            &with_affinity,
            "replicas-nginx",
            &nginx_slider,
            value,
        )
        .await;
        assert_eq!(set.status, StatusCode::OK, "{set:?}");
        assert_eq!(replica_of(&set), nginx_home);
        assert!(set.cookies().is_empty(), "the cookie is set once");
        until_output(&mut nginx_ws, &slider_at(value)).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..32 {
        let fresh = nginx.get("/api/version", &[("cookie", &cookie)]).await;
        assert_eq!(fresh.status, StatusCode::OK);
        seen.insert(replica_of(&fresh));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "new browsers are spread over both replicas");
    drop(nginx_ws);
    nginx.stop().await;

    // The pinned replica dies: a reload through haproxy is served by the other one, with the
    // same login, and a new session starts there.
    let (mut dead, alive) = if home == "a" { (a, b) } else { (b, a) };
    let backends = descendants(dead.pid());
    assert!(
        !backends.is_empty(),
        "the replica runs its notebook backend"
    );
    dead.server.process.child.kill().await.unwrap();
    let reload = eventually(
        Duration::from_secs(15),
        Duration::from_millis(200),
        // No new login needed.
        async || browse(&lb, &pinned).await,
        is_notebook_page,
    )
    .await;
    assert_eq!(replica_of(&reload), away);
    assert!(
        reload.cookies().contains(&format!("SRV={away}")),
        "haproxy re-pins the browser: {:?}",
        reload.cookies()
    );
    let repinned = format!("{cookie}; SRV={away}");
    let (ws, slider) = open_session(&base, "replicas-s2", &repinned).await;
    let set = move_slider(&base, &repinned, "replicas-s2", &slider, 6).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    drop(ws);
    for pid in backends {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).await,
            "backend {pid} of the killed replica still runs"
        );
    }

    lb.stop().await;
    alive.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_keeps_the_old_sessions_and_tokens_while_listed() {
    const OLD: &str = "old-secret-of-the-replicas-test-0123456789";
    const NEW: &str = "new-secret-of-the-replicas-test-0123456789";
    let (old, rotated, after) = tokio::join!(
        Replica::start("old", OLD, None),
        Replica::start("rotated", NEW, Some(OLD)),
        Replica::start("after", NEW, None),
    );
    assert_ne!(old.token(), rotated.token(), "the token follows the secret");
    assert_eq!(rotated.token(), after.token());

    // A session signed with the old secret (cookie named after the old key) is still good
    // on a replica that lists the old secret, and no longer once the old secret is dropped.
    let old_cookie = login(old.origin(), old.token()).await;
    let page = browse(&rotated.server, &old_cookie).await;
    assert!(is_notebook_page(&page), "{page:?}");
    let page = browse(&after.server, &old_cookie).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");

    // So is the old token, in a link or a header.
    let bearer = format!("Bearer {}", old.token());
    let api = rotated
        .get("/api/version", &[("authorization", &bearer)])
        .await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    let api = after
        .get("/api/version", &[("authorization", &bearer)])
        .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // New sessions are signed with the new secret, under another name, which every replica
    // with the new secret accepts and the old replica does not know.
    let new_cookie = login(rotated.origin(), rotated.token()).await;
    let name = |cookie: &str| cookie.split('=').next().unwrap().to_owned();
    assert_ne!(name(&new_cookie), name(&old_cookie));
    let page = browse(&after.server, &new_cookie).await;
    assert!(is_notebook_page(&page), "{page:?}");
    let page = browse(&old.server, &new_cookie).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    tokio::join!(old.stop(), rotated.stop(), after.stop());
}

#[tokio::test]
async fn a_session_call_is_forwarded_only_while_its_websocket_session_lives_here() {
    let gateway = Gateway::start(
        intro_at("/nb")
            .session_ttl(Duration::from_secs(1))
            .replica_id("solo"),
    )
    .await;
    let base = gateway.url("/nb");

    // Without the session header the request is untouched: marimo answers it.
    let bare = send(
        Method::POST,
        &format!("{base}/api/kernel/set_ui_element_value"),
        &[JSON],
        r#"{"objectIds":[],"values":[]}"#,
    )
    .await;
    assert_eq!(bare.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(bare.body.contains("Missing Marimo-Session-Id"), "{bare:?}");
    assert_eq!(
        replica_of(&bare),
        "solo",
        "every response names the replica"
    );

    // An unknown session: refused after a short wait for its WebSocket.
    let started = Instant::now();
    let unknown = move_slider(&base, "", "nobody", "x", 1).await;
    assert_elsewhere(&unknown, "solo");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A call sent while its WebSocket is still on the way waits for it.
    let racing = tokio::spawn({
        let base = base.clone();
        async move {
            send(
                Method::POST,
                &format!("{base}/api/kernel/set_ui_element_value"),
                &[JSON, ("marimo-session-id", "late")],
                r#"{"objectIds":[],"values":[]}"#,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ws, slider) = open_session(&base, "late", "").await;
    // Forwarded, not refused: marimo answers (200, or 403 while its kernel is attaching).
    assert_forwarded(&racing.await.unwrap());
    let set = move_slider(&base, "", "late", &slider, 4).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");

    // After the socket closes, calls for the session still go to marimo for its TTL (marimo
    // answers them itself: a closed session is read-only, or already dropped), then the
    // gateway refuses them.
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let within = move_slider(&base, "", "late", &slider, 5).await;
    assert_forwarded(&within);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expired = move_slider(&base, "", "late", &slider, 6).await;
    assert_elsewhere(&expired, "solo");

    gateway.stop().await;
}

/// A service that says who the auth layer let in.
fn whoami() -> impl common::Endpoint {
    tower::service_fn(|req: Request<Body>| async move {
        let user = req
            .extensions()
            .get::<marimo_rs::User>()
            .map(|user| user.name().to_owned())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(Body::from(user)))
    })
}

#[tokio::test]
async fn the_library_derives_cookie_keys_from_the_secret_and_rotates_them() {
    let token = Token::new("sup3rs3cr3t");
    let build = |layer: AuthLayer| {
        create_app()
            .with_service("/", whoami())
            .auth(layer)
            .build()
            .unwrap()
    };
    let one = build(AuthLayer::new(token.clone()).secret("shared"));
    let two = build(AuthLayer::new(token.clone()).secret("shared"));
    let other = build(AuthLayer::new(token.clone()).secret("another"));
    let (one, two, other) = tokio::join!(
        TestServer::start(one),
        TestServer::start(two),
        TestServer::start(other)
    );
    let cookie = login(&one.url(""), "sup3rs3cr3t").await;
    let reply = two.get("/x", &[("cookie", &cookie)]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "user")
    );
    let reply = other.get("/x", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Rotation: "another" becomes the secret, "shared" an old one, the token changes too.
    let new_token = Token::new("n3w-t0ken");
    let rotated = build(
        AuthLayer::new(new_token.clone())
            .secret("another")
            .old_secrets(["shared"])
            .old_tokens([token.clone()]),
    );
    let rotated = TestServer::start(rotated).await;
    let reply = rotated.get("/x", &[("cookie", &cookie)]).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the old session is still good"
    );
    for password in ["sup3rs3cr3t", "n3w-t0ken"] {
        let bearer = format!("Bearer {password}");
        let reply = rotated.get("/x", &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{password}");
    }
    // New sessions are bound to the new token and signed with the new key: `other` (same
    // secret, old token) does not take them, a replica with the same configuration does.
    let fresh = login(&rotated.url(""), "n3w-t0ken").await;
    assert_ne!(fresh.split('=').next(), cookie.split('=').next());
    let reply = other.get("/x", &[("cookie", &fresh)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let twin = TestServer::start(build(AuthLayer::new(new_token).secret("another"))).await;
    let reply = twin.get("/x", &[("cookie", &fresh)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = twin
        .get("/x", &[("authorization", "Bearer sup3rs3cr3t")])
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "old tokens only while listed"
    );
}
