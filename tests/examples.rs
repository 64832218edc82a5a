//! The programs in `examples/`, each run as its own process on a free port and driven over
//! real HTTP and WebSockets, with real marimo backends: what their header comments promise is
//! what they do. Every process started here is stopped by PID (SIGTERM, then a check that it
//! exited cleanly and took its notebook backends with it; `kill_on_drop` if a test fails).

mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "common/oidc.rs"]
mod oidc;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use common::marimo::{is_notebook_page, kernel, until_output};
use common::process::Spawned;
use common::{
    assert_sent_to_login, descendants, wait_gone, ws_connect, Reply, Site, FORM, HTML, JSON,
};
use http::{Method, StatusCode};
use tokio::process::Command;

const EXAMPLES: &[&str] = &[
    "axum_custom_login",
    "oauth2_jwt",
    "hyper_server",
    "dynamic_directory",
    "nested_prefix",
    "oidc",
];

/// The example binaries, built once per test run (a no-op after `cargo test` built them).
fn example_binary(name: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = PROFILE_DIR.get_or_init(|| {
        // This test runs as target/<profile>/deps/examples-<hash>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet"]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                cargo.args([
                    "--profile",
                    if profile == "release" {
                        "release"
                    } else {
                        profile
                    },
                ]);
            }
        }
        for example in EXAMPLES {
            cargo.args(["--example", example]);
        }
        let output = cargo.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        profile_dir
    });
    dir.join("examples").join(name)
}

/// One running example.
struct Example {
    process: Spawned,
    /// `http://127.0.0.1:PORT`, from its `listening on` line.
    base: String,
}

impl Example {
    async fn start(name: &'static str, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(example_binary(name));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PORT", "0")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        let mut process = Spawned::start(name, command, None).await;
        let first = process.line(Duration::from_secs(60)).await;
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{name} printed {first:?} first"))
            .to_owned();
        Self { process, base }
    }

    /// The next line the example printed on stdout.
    async fn line(&mut self) -> String {
        self.process.line(Duration::from_secs(60)).await
    }

    /// Posts an HTML form's `body` to `path`.
    async fn post_form(&self, path: &str, body: &str) -> Reply {
        self.send(Method::POST, path, &[FORM], body).await
    }

    /// The status a WebSocket to `path` with `headers` is refused with.
    async fn ws_refusal(&self, path: &str, headers: &[(&str, &str)]) -> Option<StatusCode> {
        ws_connect(&self.ws_url(path), headers).await.err()
    }

    /// Opens the notebook's WebSocket at `path`, waits for `kernel-ready`, then for an output
    /// containing `text`.
    async fn expect_output(&self, path: &str, headers: &[(&str, &str)], text: &str) {
        let mut ws = kernel(&self.ws_url(path), headers).await;
        until_output(&mut ws, text).await;
    }

    /// Signed in with `cookie`: the kernel at `ws` shows `text`, and `page` is marimo's page.
    async fn expect_notebook(&self, ws: &str, page: &str, cookie: &str, text: &str) {
        self.expect_output(ws, &[("cookie", cookie)], text).await;
        let reply = self.get(page, &[HTML, ("cookie", cookie)]).await;
        assert!(is_notebook_page(&reply), "{page}: {}", reply.brief());
    }

    /// SIGTERM, then waits for the exit; returns its status. Also checks that the notebook
    /// backends it started are gone with it.
    async fn stop(mut self) -> ExitStatus {
        let backends = descendants(self.process.pid());
        let (status, _, _) = self.process.terminate(Duration::from_secs(30)).await;
        for backend in backends {
            assert!(
                wait_gone(backend, Duration::from_secs(10)).await,
                "backend {backend} outlived the example"
            );
        }
        status
    }
}

impl Site for Example {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[tokio::test]
async fn axum_custom_login_signs_in_and_the_notebook_sees_the_user() {
    let example = Example::start("axum_custom_login", &[]).await;

    // Anonymous: browsers go to the login page, API calls and WebSockets get 401.
    let page = example.get("/dashboard/?tab=1", &[HTML]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.header("location"),
        Some("/login?next=%2Fdashboard%2F%3Ftab%3D1")
    );
    let api = example.get("/dashboard/api/status", &[]).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.body, r#"{"detail":"Not authenticated"}"#);
    assert_eq!(
        example.ws_refusal("/ws?session_id=anon", &[]).await,
        Some(StatusCode::UNAUTHORIZED)
    );
    let form = example.get("/login?next=%2F", &[HTML]).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="password""#), "{}", form.body);

    // Wrong password, unknown user: 401 and no session.
    for body in [
        "username=alice&password=nope",
        "username=mallory&password=wonderland",
    ] {
        let refused = example.post_form("/login", body).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(refused.header("set-cookie").is_none());
    }
    // `next` must stay on this site.
    let offsite = example
        .post_form(
            "/login?next=%2F%2Fevil.example",
            "username=bob&password=builder",
        )
        .await;
    assert_eq!(offsite.status, StatusCode::SEE_OTHER);
    assert_eq!(offsite.header("location"), Some("/"));

    let login = example
        .post_form(
            "/login?next=%2Fdashboard%2F",
            "username=alice&password=wonderland",
        )
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.header("location"), Some("/dashboard/"));
    let set_cookie = login.header("set-cookie").unwrap();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let session = login.cookie_named("session");

    // Signed in: the index notebook's kernel runs and shows the user the middleware set.
    example
        .expect_notebook(
            "/ws?session_id=alice-1",
            "/",
            &session,
            "Signed in as <strong>alice</strong>",
        )
        .await;
    // The cookie alone is not enough from another site's page (cross-site WebSocket).
    let foreign = [
        ("cookie", session.as_str()),
        ("origin", "http://evil.example"),
    ];
    assert_eq!(
        example.ws_refusal("/ws?session_id=alice-2", &foreign).await,
        Some(StatusCode::FORBIDDEN)
    );

    // Signing out ends the session.
    let logout = example
        .send(Method::POST, "/logout", &[("cookie", &session)], "")
        .await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert!(logout.header("set-cookie").unwrap().contains("Max-Age=0"));
    let after = example.get("/api/status", &[("cookie", &session)]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);

    assert!(example.stop().await.success(), "graceful exit");
}

const JWT_SECRET: &str = "test-secret-of-at-least-32-bytes-length";

fn jwt(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn oauth2_jwt_issues_tokens_and_scopes_decide_the_notebooks() {
    let example = Example::start("oauth2_jwt", &[("JWT_SECRET", JWT_SECRET)]).await;

    let refused = example
        .post_form("/token", "username=alice&password=builder")
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));

    // The password grant: a bearer JWT with sub, exp and scope, also set as a cookie.
    let issued = example
        .post_form(
            "/token",
            "grant_type=password&username=bob&password=builder",
        )
        .await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.body);
    let answer: serde_json::Value = serde_json::from_str(&issued.body).unwrap();
    assert_eq!(answer["token_type"], "bearer");
    let bob = answer["access_token"].as_str().unwrap().to_owned();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &bob,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["scope"], "dashboard");
    let lifetime = claims["exp"].as_u64().unwrap() - jsonwebtoken::get_current_timestamp();
    assert!((1700..=1800).contains(&lifetime), "exp {lifetime} s ahead");
    assert!(issued.cookie_named("access_token").ends_with(&bob));
    // Asking for less than allowed gets less; never more.
    let narrowed = example
        .post_form(
            "/token",
            "username=bob&password=builder&scope=sales%20dashboard",
        )
        .await;
    let narrowed: serde_json::Value = serde_json::from_str(&narrowed.body).unwrap();
    let narrowed = narrowed["access_token"].as_str().unwrap();
    let payload = narrowed.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(payload["scope"], "dashboard");

    // No token: 401 for API calls (browsers go to the login form); bad tokens: 401.
    let anonymous = example.get("/api/status", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    let page = example.get("/sales/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/login?next=%2Fsales%2F"));
    let now = jsonwebtoken::get_current_timestamp();
    let forged = jwt(
        &serde_json::json!({"sub": "alice", "exp": now + 600, "scope": "dashboard sales"}),
        "some-other-secret-that-is-long-enough",
    );
    let expired = jwt(
        &serde_json::json!({"sub": "alice", "exp": now - 3600, "scope": "dashboard sales"}),
        JWT_SECRET,
    );
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header}.{}.", forged.split('.').nth(1).unwrap());
    for (what, token) in [
        ("forged", &forged),
        ("expired", &expired),
        ("alg none", &unsigned),
    ] {
        let bearer = format!("Bearer {token}");
        let reply = example
            .get("/api/status", &[("authorization", &bearer)])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            reply.body.contains("Could not validate credentials"),
            "{what}: {}",
            reply.body
        );
        let cookie = format!("access_token={token}");
        let reply = example
            .get("/dashboard/api/status", &[("cookie", &cookie)])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what} as a cookie");
    }

    // Wrong scope: 403 for the page, its API, its files and its WebSocket.
    let bob_bearer = format!("Bearer {bob}");
    for path in ["/sales/", "/sales/api/status", "/sales/favicon.ico"] {
        let reply = example
            .get(path, &[HTML, ("authorization", &bob_bearer)])
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reply.body, r#"{"detail":"Not enough permissions"}"#);
    }
    assert_eq!(
        example
            .ws_refusal(
                "/sales/ws?session_id=bob-1",
                &[("authorization", &bob_bearer)]
            )
            .await,
        Some(StatusCode::FORBIDDEN)
    );
    // The right scope opens it (the gateway serves the favicon without the backend).
    let bob_dashboard = example
        .get("/dashboard/favicon.ico", &[("authorization", &bob_bearer)])
        .await;
    assert_eq!(bob_dashboard.status, StatusCode::OK);

    // The login form's way: the token comes back as a cookie and the browser goes to `next`.
    let login = example
        .post_form("/token?next=%2F", "username=alice&password=wonderland")
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.header("location"), Some("/"));
    let alice = login.cookie_named("access_token");
    let alice_sales = example
        .get("/sales/favicon.ico", &[("cookie", &alice)])
        .await;
    assert_eq!(alice_sales.status, StatusCode::OK);

    // The notebook sees `sub` as the user and the scope as metadata.
    example
        .expect_output(
            "/ws?session_id=alice-1",
            &[("cookie", &alice)],
            "Signed in as <strong>alice</strong> with scope <strong>dashboard sales</strong>",
        )
        .await;

    assert!(example.stop().await.success(), "graceful exit");
}

#[tokio::test]
async fn hyper_server_serves_with_token_auth_and_stops_gracefully() {
    let mut example = Example::start("hyper_server", &[]).await;
    let open = example.line().await;
    let token = open
        .strip_prefix(&format!("open {}/?access_token=", example.base))
        .unwrap_or_else(|| panic!("second line: {open:?}"))
        .to_owned();
    assert!(token.len() >= 20, "a random token: {token:?}");

    let anonymous = example.get("/api/status", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_sent_to_login(&example.get("/", &[HTML]).await);
    assert_eq!(
        example.ws_refusal("/ws?session_id=anon", &[]).await,
        Some(StatusCode::FORBIDDEN)
    );

    // The printed URL signs a browser in with a session cookie.
    let link = example
        .get(&format!("/?access_token={token}"), &[HTML])
        .await;
    assert_eq!(link.status, StatusCode::SEE_OTHER);
    assert!(!link.header("location").unwrap().contains(&token));
    let session = &link.cookie();

    // Basic auth with the token as the password: the username reaches the notebook.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{token}"))
    );
    example
        .expect_output(
            "/ws?session_id=alice-1",
            &[("authorization", &basic)],
            "Signed in as: <strong>alice</strong>",
        )
        .await;
    let index = example.get("/", &[HTML, ("cookie", session)]).await;
    assert!(is_notebook_page(&index), "marimo's page: {}", index.brief());
    let wrong = example
        .get("/api/status", &[("authorization", "Bearer wrong")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    assert!(example.stop().await.success(), "graceful exit");
}

#[tokio::test]
async fn dynamic_directory_lets_the_validate_callback_decide_per_user() {
    let example = Example::start("dynamic_directory", &[]).await;
    let root = example.get("/", &[HTML]).await;
    assert_eq!(root.status, StatusCode::SEE_OTHER);
    assert_eq!(root.header("location"), Some("/apps/"));

    let listing = |reply: &Reply| -> Vec<&'static str> {
        ["hello", "sales", "team/roadmap"]
            .into_iter()
            .filter(|name| reply.body.contains(&format!(">{name}</a>")))
            .collect()
    };
    let anonymous = example.get("/apps/", &[HTML]).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(listing(&anonymous), ["hello"]);
    let hidden = example.get("/apps/sales/", &[HTML]).await;
    assert_eq!(
        hidden.status,
        StatusCode::NOT_FOUND,
        "anonymous: as if it did not exist"
    );

    let sign_in = example.get("/demo/as/bob", &[HTML]).await;
    assert_eq!(sign_in.status, StatusCode::SEE_OTHER);
    let bob = sign_in.cookie_named("demo_user");
    assert_eq!(bob, "demo_user=bob");
    let bobs = example.get("/apps/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(listing(&bobs), ["hello", "team/roadmap"]);
    let forbidden = example.get("/apps/sales/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.body, "bob may not open sales.py\n");
    let alices = example
        .get("/apps/", &[HTML, ("cookie", "demo_user=alice")])
        .await;
    assert_eq!(listing(&alices), ["hello", "sales", "team/roadmap"]);
    let bad = example.get("/demo/as/bob;%20Path=%2Fx", &[]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // A notebook in a subdirectory, opened by a user it allows, sees that user.
    example
        .expect_output(
            "/apps/team/roadmap/ws?session_id=bob-1",
            &[("cookie", &bob)],
            "Viewing as <strong>bob</strong>",
        )
        .await;
    assert_eq!(
        example
            .ws_refusal("/apps/sales/ws?session_id=bob-2", &[("cookie", &bob)])
            .await,
        Some(StatusCode::FORBIDDEN)
    );

    assert!(example.stop().await.success(), "graceful exit");
}

#[tokio::test]
async fn nested_prefix_serves_notebooks_under_marimo_next_to_the_api() {
    let mut example = Example::start("nested_prefix", &[("MARIMO_TOKEN", "nested-secret")]).await;
    assert_eq!(
        example.line().await,
        format!("open {}/marimo/?access_token=nested-secret", example.base)
    );

    // The host's own API, untouched by marimo's auth.
    let health = example.get("/api/health", &[]).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (StatusCode::OK, r#"{"status":"ok"}"#)
    );
    let added = example
        .send(Method::POST, "/api/items", &[JSON], r#"{"name":"apples"}"#)
        .await;
    assert_eq!(added.status, StatusCode::CREATED);
    let items = example.get("/api/items", &[]).await;
    assert_eq!(items.body, r#"[{"name":"apples"}]"#);

    // The bare prefix redirects, keeping the query (a `?access_token=` link must survive
    // it); the login redirect and cookie stay under /marimo.
    for (path, location) in [
        ("/marimo?x=1", "/marimo/?x=1"),
        ("/marimo", "/marimo/"),
        (
            "/marimo?access_token=nested-secret&y=two%20words",
            "/marimo/?access_token=nested-secret&y=two%20words",
        ),
    ] {
        let bare = example.get(path, &[HTML]).await;
        assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(bare.header("location"), Some(location), "{path}");
    }
    let link = example
        .get("/marimo/?access_token=nested-secret&y=two%20words", &[HTML])
        .await;
    assert_eq!(link.status, StatusCode::SEE_OTHER, "{link:?}");
    assert_eq!(link.header("location"), Some("/marimo/?y=two%20words"));
    let page = example.get("/marimo/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.header("location")
            .unwrap()
            .starts_with("/marimo/auth/login"),
        "{page:?}"
    );
    assert_eq!(
        example.get("/marimo/api/status", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let login = example
        .post_form("/marimo/auth/login", "password=nested-secret&next=%2F")
        .await;
    assert!(login.status.is_redirection(), "{login:?}");
    assert_eq!(login.header("location"), Some("/marimo/"));
    let set_cookie = login.header("set-cookie").unwrap();
    assert!(set_cookie.contains("Path=/marimo"), "{set_cookie}");
    let session = login.cookie();

    // Through the cookie: the notebook's WebSocket and page under the prefix.
    example
        .expect_notebook(
            "/marimo/ws?session_id=nested-1",
            "/marimo/",
            &session,
            "Slider value is <strong>3</strong>",
        )
        .await;
    let version = example
        .get("/marimo/api/version", &[("cookie", &session)])
        .await;
    assert_eq!(version.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);

    assert!(example.stop().await.success(), "graceful exit");
}

#[tokio::test]
async fn oidc_signs_in_at_the_provider_and_the_group_rule_decides() {
    if !oidc::available() {
        return;
    }
    let provider = oidc::Provider::start(&oidc::gateway_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret.txt");
    std::fs::write(&secret, format!("{}\n", oidc::CLIENT_SECRET)).unwrap();
    let example = Example::start(
        "oidc",
        &[
            ("OIDC_ISSUER", &provider.issuer),
            ("OIDC_CLIENT_ID", oidc::CLIENT_ID),
            ("OIDC_CLIENT_SECRET_FILE", secret.to_str().unwrap()),
        ],
    )
    .await;
    // Not signed in: to the provider.
    let page = example.get("/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.brief());
    assert!(page
        .header("location")
        .unwrap()
        .starts_with(&provider.issuer));

    let sign_in = |login: &'static str| {
        let start = example.url("/auth/oidc?next=%2F");
        let issuer = provider.issuer.clone();
        async move {
            let mut browser = oidc::Browser::default();
            let back = browser.sign_in_through(&start, &issuer, login).await;
            assert_eq!(back.status, StatusCode::SEE_OTHER, "{back:?}");
            browser.cookie_named("marimo_rs_session_").unwrap()
        }
    };
    let ada = sign_in("ada").await;
    example
        .expect_notebook(
            "/ws?session_id=oidc-ada",
            "/",
            &ada,
            "Signed in as <strong>ada</strong>; groups: <strong>analysts, admins</strong>; \
             email: <code>ada@example.com</code>",
        )
        .await;
    let admins = example.get("/admins/", &[HTML, ("cookie", &ada)]).await;
    assert_ne!(admins.status, StatusCode::FORBIDDEN, "ada is in admins");
    let bob = sign_in("bob").await;
    let refused = example.get("/admins/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.brief());
    assert!(refused.body.contains("<b>bob</b>"), "{}", refused.body);
    assert!(example.stop().await.success(), "graceful exit");
}

#[test]
fn every_example_has_its_notebooks_and_a_readme_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for example in EXAMPLES {
        assert!(root
            .join("examples")
            .join(format!("{example}.rs"))
            .is_file());
        assert!(
            readme.contains(&format!("cargo run --example {example}")),
            "README.md does not mention {example}"
        );
    }
    for notebook in [
        "notebooks/identity.py",
        "pages/index.py",
        "pages/dashboard.py",
        "pages/sales.py",
        "apps/hello.py",
        "apps/sales.py",
        "apps/team/roadmap.py",
    ] {
        let text = std::fs::read_to_string(root.join("examples").join(notebook)).unwrap();
        assert!(
            text.contains("marimo.App("),
            "{notebook} is a marimo notebook"
        );
    }
}
