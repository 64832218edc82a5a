//! Operations over the real binary, real sockets and real marimo backends: Prometheus metrics
//! scraped by a real Prometheus server (Debian's, `.ci/install-prometheus`) and checked by
//! `promtool`, the admin page with its own token (restart and stop a backend), and the access
//! log (every request, no credential).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::balancer::free_port;
use common::marimo::{ws_url, KERNEL_WAIT};
use common::process::{marimo_rs, MarimoRs};
use common::{
    descendants, eventually, example_notebook, get, signal, wait_gone, ws_connect, Site, FORM, HTML,
};
use http::{Method, StatusCode};
use serde_json::Value;
use tokio::process::Command;

/// `marimo-rs ARGS --port 0 --headless`, started.
async fn start(args: &[&str]) -> MarimoRs {
    MarimoRs::start(
        marimo_rs(&[args, &["--port", "0", "--headless"]].concat()),
        None,
    )
    .await
}

/// `Basic base64(anyone:password)`.
fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{password}"))
    )
}

/// Writes `token` to a file in `dir` and returns its path.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// The path of Debian's `name` (prometheus, promtool), installed first if this process may,
/// as `.ci/run` does.
fn prometheus_program(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    if !path.is_file() {
        common::run_install_script("install-prometheus");
    }
    assert!(
        path.is_file(),
        "{name} is not installed: run `bash .ci/install-prometheus` as root"
    );
    path
}

/// A Prometheus server on a loopback port that scrapes `target` (`127.0.0.1:PORT`) at
/// `metrics_path` every second, with its configuration and storage in a temporary directory;
/// killed by its pid when dropped.
struct Prometheus {
    port: u16,
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str, metrics_path: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: marimo-rs\n    metrics_path: {metrics_path}\n\
                 \x20   static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_program("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self { port, child, dir };
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(200),
            async || prometheus.ready().await,
            |ready| *ready,
        )
        .await;
        prometheus
    }

    async fn ready(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        let request = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        matches!(common::client().request(request).await, Ok(response) if response.status() == 200)
    }

    /// The result vector of an instant query (`/api/v1/query`).
    async fn query(&self, promql: &str) -> Vec<Value> {
        let query: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let reply = get(&format!(
            "http://127.0.0.1:{}/api/v1/query?query={query}",
            self.port
        ))
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{promql}: {reply:?}");
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of the single series `promql` selects, once Prometheus has one that `done`
    /// accepts (scrapes come every second).
    async fn value(&self, promql: &str, done: impl Fn(f64) -> bool) -> f64 {
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(500),
            async || {
                let result = self.query(promql).await;
                result.first().and_then(|series| {
                    series["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                })
            },
            |value| value.is_some_and(&done),
        )
        .await
        .unwrap()
    }

    /// Stops it by its pid (SIGTERM) and waits; returns its log.
    async fn stop(mut self) -> String {
        signal(self.child.id().unwrap(), nix::sys::signal::Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("prometheus exits on SIGTERM")
            .unwrap();
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// `promtool check metrics` on `text`: its exit status and what it printed.
async fn promtool_check(text: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new(prometheus_program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(text.as_bytes()).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_promtool_accepts_the_metrics() {
    let intro = example_notebook("intro.py");
    let notebooks = intro.parent().unwrap();
    let server = start(&[
        "serve",
        "--app",
        &format!("/intro={}", intro.display()),
        "--dir",
        &format!("/apps={}", notebooks.display()),
        "--no-token",
        "--metrics",
    ])
    .await;

    // Traffic of several kinds: a page, a 404, a directory notebook, an open kernel session.
    let page = server.get("/intro/", &[HTML]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.brief());
    assert_eq!(
        server.get("/nowhere", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let directory_page = server.get("/apps/intro/", &[]).await;
    assert!(directory_page.status.is_success() || directory_page.status == 503);
    let mut session = ws_connect(&ws_url(&server.url("/intro/ws?session_id=s1")), &[])
        .await
        .expect("the kernel WebSocket opens");
    common::ws_until(&mut session, KERNEL_WAIT, |message| {
        message["op"] == "kernel-ready"
    })
    .await;

    // Our own scrape: the text format, accepted by promtool.
    let scraped = server.get("/metrics", &[]).await;
    assert_eq!(scraped.status, StatusCode::OK, "{}", scraped.brief());
    assert_eq!(
        scraped.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (valid, printed) = promtool_check(&scraped.body).await;
    assert!(
        valid,
        "promtool check metrics:\n{printed}\n---\n{}",
        scraped.body
    );
    // A client that a proxy forwarded is not on this machine.
    let forwarded = server
        .get("/metrics", &[("x-forwarded-for", "203.0.113.9")])
        .await;
    assert_eq!(forwarded.status, StatusCode::FORBIDDEN);

    let prometheus = Prometheus::start(&format!("127.0.0.1:{}", server.port()), "/metrics").await;
    let up = prometheus
        .value("up{job=\"marimo-rs\"}", |v| v == 1.0)
        .await;
    assert_eq!(up, 1.0);
    let pages = prometheus
        .value(
            "marimo_rs_http_requests_total{mount=\"/intro\",method=\"GET\",status=\"200\"}",
            |v| v >= 1.0,
        )
        .await;
    assert!(pages >= 1.0);
    prometheus
        .value(
            "marimo_rs_http_requests_total{mount=\"gateway\",status=\"404\"}",
            |v| v >= 1.0,
        )
        .await;
    prometheus
        .value(
            "marimo_rs_http_request_duration_seconds_count{mount=\"/intro\",status=\"101\"}",
            |v| v >= 1.0,
        )
        .await;
    prometheus
        .value("marimo_rs_websocket_sessions{mount=\"/intro\"}", |v| {
            v == 1.0
        })
        .await;
    prometheus
        .value("marimo_rs_backends{state=\"ready\"}", |v| v >= 1.0)
        .await;
    prometheus
        .value("marimo_rs_backend_starts_total{mount=\"/intro\"}", |v| {
            v >= 1.0
        })
        .await;
    prometheus
        .value(
            "marimo_rs_upstream_duration_seconds_count{mount=\"/intro\"}",
            |v| v >= 1.0,
        )
        .await;
    let memory = prometheus
        .value(
            "marimo_rs_backend_resident_memory_bytes{mount=\"/intro\",backend=\"/intro\"}",
            |v| v > 0.0,
        )
        .await;
    assert!(
        memory > 20.0 * 1024.0 * 1024.0,
        "a marimo backend: {memory}"
    );
    prometheus
        .value(
            "marimo_rs_backend_cpu_seconds_total{mount=\"/intro\",backend=\"/intro\"}",
            |v| v > 0.0,
        )
        .await;
    // Every series of a directory notebook carries the directory's mount.
    let directory = prometheus
        .query("marimo_rs_http_requests_total{mount=\"/apps\"}")
        .await;
    assert!(!directory.is_empty());
    let mounts = prometheus
        .query("count by (mount) (marimo_rs_http_requests_total)")
        .await;
    let mut names: Vec<&str> = mounts
        .iter()
        .filter_map(|series| series["metric"]["mount"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["/apps", "/intro", "gateway"]);

    drop(session);
    let log = prometheus.stop().await;
    assert!(!log.contains("level=error"), "{log}");
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn the_admin_page_needs_its_token_and_restarts_and_stops_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let gateway_token = "gateway-t0ken-for-notebooks";
    let admin_token = "adm1n-t0ken-for-operators";
    let notebook = example_notebook("intro.py");
    let server = start(&[
        "run",
        notebook.to_str().unwrap(),
        "--token-password-file",
        token_file(dir.path(), "gw", gateway_token)
            .to_str()
            .unwrap(),
        "--admin-token-file",
        token_file(dir.path(), "admin", admin_token)
            .to_str()
            .unwrap(),
    ])
    .await;
    let bearer = format!("Bearer {admin_token}");
    let state = async || {
        let reply = server
            .get("/_admin/state", &[("authorization", &bearer)])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        serde_json::from_str::<Value>(&reply.body).unwrap()
    };

    // No credential, a wrong one, the notebooks' token: 401, with a challenge for browsers.
    let none = server.get("/_admin/state", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Basic realm=\"marimo-rs admin\"")
    );
    for wrong in [
        "Bearer wrong".to_owned(),
        format!("Bearer {gateway_token}"),
        basic(gateway_token),
    ] {
        let reply = server
            .get("/_admin/state", &[("authorization", &wrong)])
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{wrong}");
    }

    // The right token: the real backend, its pid a child of the gateway.
    let first = state().await;
    let backend = &first["backends"][0];
    assert_eq!(backend["state"], "ready", "{first}");
    assert_eq!(backend["path"], "/");
    assert_eq!(backend["notebook"], "intro.py");
    let pid = backend["pid"].as_u64().unwrap() as u32;
    assert!(descendants(server.pid()).contains(&pid), "{first}");
    assert!(
        backend["rss_bytes"].as_u64().unwrap() > 1024 * 1024,
        "{first}"
    );
    assert_eq!(first["mounts"][0]["kind"], "app");
    assert_eq!(first["login_limit"]["burst"], 10);
    let id = backend["id"].as_u64().unwrap();
    // The page, as a browser gets it with the token as its Basic password; no secret in it.
    let page = server
        .get("/_admin/", &[HTML, ("authorization", &basic(admin_token))])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(&format!("<td>{pid}</td>")),
        "{}",
        page.body
    );
    assert!(page.header("content-security-policy").is_some());
    for shown in [&page.body, &first.to_string()] {
        assert!(!shown.contains(admin_token) && !shown.contains(gateway_token));
        assert!(!shown.contains(notebook.parent().unwrap().to_str().unwrap()));
    }

    // A page on another site cannot act, even with the token.
    let restart = format!("/_admin/backends/{id}/restart");
    let foreign = server
        .send(
            Method::POST,
            &restart,
            &[
                ("authorization", &bearer),
                ("origin", "http://evil.example"),
            ],
            "",
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{foreign:?}");
    assert_eq!(state().await["backends"][0]["pid"], pid);

    // Restart: the old process goes, a new one is ready.
    let restarted = server
        .send(Method::POST, &restart, &[("authorization", &bearer)], "")
        .await;
    assert_eq!(restarted.status, StatusCode::OK, "{restarted:?}");
    assert!(wait_gone(pid, Duration::from_secs(10)).await);
    let after = eventually(
        KERNEL_WAIT,
        Duration::from_millis(200),
        async || state().await,
        |now| now["backends"][0]["state"] == "ready",
    )
    .await;
    let new_pid = after["backends"][0]["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, pid);
    assert_eq!(after["backends"][0]["starts"], 2);

    // Stop, from the page's form: back to the page; the process is gone until the next
    // request.
    let stopped = server
        .send(
            Method::POST,
            &format!("/_admin/backends/{id}/stop"),
            &[HTML, FORM, ("authorization", &basic(admin_token))],
            "",
        )
        .await;
    assert_eq!(stopped.status, StatusCode::SEE_OTHER, "{stopped:?}");
    assert_eq!(stopped.header("location"), Some("../../"));
    assert!(wait_gone(new_pid, Duration::from_secs(10)).await);
    let idle = state().await;
    assert_eq!(idle["backends"][0]["state"], "idle", "{idle}");
    assert_eq!(idle["backends"][0]["pid"], Value::Null);
    let again = server
        .send(
            Method::POST,
            &format!("/_admin/backends/{id}/stop"),
            &[("authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");

    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains(admin_token),
        "the admin token is never logged"
    );
}

#[tokio::test]
async fn the_access_log_has_every_request_and_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let token = "acc3ss-log-t0ken";
    let admin_token = "acc3ss-log-adm1n";
    let log_path = dir.path().join("access.log");
    let notebook = example_notebook("intro.py");
    let server = start(&[
        "run",
        notebook.to_str().unwrap(),
        "--token-password-file",
        token_file(dir.path(), "gw", token).to_str().unwrap(),
        "--admin-token-file",
        token_file(dir.path(), "admin", admin_token)
            .to_str()
            .unwrap(),
        "--access-log",
        log_path.to_str().unwrap(),
    ])
    .await;

    // The token in the URL of a page: redirected with a session cookie.
    let linked = server
        .get(&format!("/?access_token={token}&x=1"), &[HTML])
        .await;
    assert_eq!(linked.status, StatusCode::SEE_OTHER);
    let cookie = linked.cookie();
    let page = server.get("/", &[HTML, ("cookie", &cookie)]).await;
    assert_eq!(page.status, StatusCode::OK);
    let login = server
        .send(
            Method::POST,
            "/auth/login",
            &[FORM],
            &format!("password={token}&next=%2F"),
        )
        .await;
    assert_eq!(login.status, StatusCode::FOUND);
    let login_cookie = login.cookie();
    let code = "0neTimeC0deThatIsN0tValid";
    let link = server
        .get(&format!("/auth/sign-in?code={code}"), &[HTML])
        .await;
    assert_eq!(link.status, StatusCode::FORBIDDEN);
    let api = server
        .get(
            "/api/version",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(api.status, StatusCode::OK);
    let basic_api = server
        .get("/api/version", &[("authorization", &basic(token))])
        .await;
    assert_eq!(basic_api.status, StatusCode::OK);
    let admin = server
        .get(
            "/_admin/state",
            &[("authorization", &format!("Bearer {admin_token}"))],
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    let refused = server.get("/api/version", &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    let written = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    // The CLI's own start-up requests (none) aside, one line per request above.
    assert_eq!(lines.len(), 8, "{written}");
    for line in &lines {
        for field in [
            "time",
            "client",
            "user",
            "method",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "mount",
        ] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
        assert_eq!(line["client"], "127.0.0.1");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    let find = |method: &str, path_start: &str| {
        lines
            .iter()
            .find(|line| {
                line["method"] == method && line["path"].as_str().unwrap().starts_with(path_start)
            })
            .unwrap_or_else(|| panic!("{method} {path_start} in {written}"))
    };
    let first = find("GET", "/?access_token=");
    assert_eq!(first["path"], "/?access_token=REDACTED&x=1");
    assert_eq!(first["status"], 303);
    assert_eq!(
        first["user"],
        Value::Null,
        "answered by the auth layer itself"
    );
    let served = lines
        .iter()
        .find(|line| line["path"] == "/" && line["status"] == 200)
        .unwrap();
    assert_eq!(served["user"], "user");
    assert_eq!(served["mount"], "/");
    assert!(served["bytes"].as_u64().unwrap() > 1000, "{served}");
    assert_eq!(find("POST", "/auth/login")["status"], 302);
    assert_eq!(
        find("GET", "/auth/sign-in")["path"],
        "/auth/sign-in?code=REDACTED"
    );
    assert_eq!(find("GET", "/_admin/state")["mount"], "gateway");
    assert!(lines
        .iter()
        .any(|line| line["path"] == "/api/version" && line["status"] == 401));
    for secret in [
        token,
        admin_token,
        code,
        cookie.split_once('=').unwrap().1,
        login_cookie.split_once('=').unwrap().1,
        &basic(token)["Basic ".len()..],
    ] {
        assert!(!written.contains(secret), "{secret} is in the access log");
    }
}

#[tokio::test]
async fn a_stale_admin_request_or_an_unknown_backend_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let admin_token = "adm1n-unknown-backend";
    let server = start(&[
        "run",
        example_notebook("intro.py").to_str().unwrap(),
        "--no-token",
        // No warm pool: the processes under the gateway are then its backends only, and
        // none appears later on its own.
        "--warm-pool",
        "0",
        "--admin-token-file",
        token_file(dir.path(), "admin", admin_token)
            .to_str()
            .unwrap(),
    ])
    .await;
    let bearer = format!("Bearer {admin_token}");
    let pids = descendants(server.pid());
    for (method, path, expected) in [
        (
            Method::POST,
            "/_admin/backends/99/restart",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/_admin/backends/x/stop",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/_admin/backends/0/stop",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/_admin/state",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::GET, "/_admin", StatusCode::TEMPORARY_REDIRECT),
    ] {
        let reply = server
            .send(method.clone(), path, &[("authorization", &bearer)], "")
            .await;
        assert_eq!(reply.status, expected, "{method} {path}: {reply:?}");
    }
    assert_eq!(descendants(server.pid()), pids, "no backend was touched");
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn admin_users_are_checked_past_the_auth_layer() {
    use marimo_rs::{create_app, Admin, Token};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    let token = "users-t0ken";
    let hits = Arc::new(AtomicUsize::new(0));
    let app = create_app()
        .with_service("/", common::counter(hits.clone()))
        .token(Token::new(token))
        .admin(Admin::new().users(["ada"]))
        .build()
        .unwrap();
    let server = common::TestServer::start(app).await;
    let as_user = |name: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
        )
    };

    // Signed in as an admin: the page. As someone else: 403. Not signed in: the auth layer's
    // own answers (401 for a script, the login form for a browser).
    let ada = server
        .get("/_admin/state", &[("authorization", &as_user("ada"))])
        .await;
    assert_eq!(ada.status, StatusCode::OK, "{ada:?}");
    let state: Value = serde_json::from_str(&ada.body).unwrap();
    assert_eq!(state["mounts"][0]["kind"], "service");
    assert_eq!(state["backends"], serde_json::json!([]));
    let bob = server
        .get("/_admin/state", &[("authorization", &as_user("bob"))])
        .await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    let anonymous = server.get("/_admin/state", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    common::assert_sent_to_login(&server.get("/_admin/", &[HTML]).await);
    // Without an admin token, a Bearer header is the notebooks' credential, checked by the
    // auth layer: the token's own user is not an admin.
    let bearer = server
        .get(
            "/_admin/state",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(bearer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the root mount never saw /_admin"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_metrics_token_opens_metrics_to_other_hosts_only_when_right() {
    use marimo_rs::{create_app, Metrics, Token};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    let token = "scr4pe-t0ken";
    let app = create_app()
        .with_service("/", common::counter(Arc::new(AtomicUsize::new(0))))
        .metrics(Metrics::new())
        .metrics_token(Token::new(token))
        .build()
        .unwrap();
    let server = common::TestServer::start(app).await;
    // Forwarded by a proxy: not a client on this machine.
    let elsewhere = ("x-forwarded-for", "203.0.113.9");
    let without = server.get("/metrics", &[elsewhere]).await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        without.header("www-authenticate"),
        Some("Bearer realm=\"marimo-rs metrics\"")
    );
    let wrong = server
        .get("/metrics", &[elsewhere, ("authorization", "Bearer nope")])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = server
        .get(
            "/metrics",
            &[elsewhere, ("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(right.status, StatusCode::OK, "{right:?}");
    // The wrong attempt above was counted; the scrapes themselves too.
    assert!(
        right.body.contains(
            "marimo_rs_http_requests_total{mount=\"gateway\",method=\"GET\",status=\"401\"} 2"
        ),
        "{}",
        right.body
    );
    let post = server.send(Method::POST, "/metrics", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn operations_flags_that_cannot_work_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = example_notebook("intro.py");
    let notebook = notebook.to_str().unwrap();
    let admin = token_file(dir.path(), "admin", "adm1n");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--token-password-file", "-", "--admin-token-file", "-"],
            "--token-password-file and --admin-token-file both read standard input",
        ),
        (
            &["--metrics-token-file", admin.to_str().unwrap()],
            "--metrics-token-file needs --metrics",
        ),
        (
            &["--access-log", "/nonexistent/dir/access.log"],
            "cannot open the access log /nonexistent/dir/access.log",
        ),
    ];
    for (flags, message) in cases {
        let output = marimo_rs(&[&["run", notebook, "--port", "0", "--headless"], flags].concat())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "no URL for a server that did not start"
        );
    }
}
