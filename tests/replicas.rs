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
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    descendants, example_notebook, send, signal, slider_id, start_backends, wait_gone, ws_connect,
    ws_until, Reply, TestServer, Ws, START,
};
use http::{Method, Request, Response, StatusCode};
use marimo_rs::{create_app, AuthLayer, Body, Token};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_marimo-rs");
/// Generous: the first start may install marimo.
const WS: Duration = Duration::from_secs(30);
const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");
const SECRET: &str = "replicas-test-secret-0123456789abcdef0123";

/// A running `marimo-rs run intro.py --token` with a secret; killed when dropped.
struct Replica {
    name: &'static str,
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Replica {
    /// Starts one replica named `name` with `MARIMO_RS_SECRET=secret` (and old secrets).
    async fn start(name: &'static str, secret: &str, old: Option<&str>) -> Self {
        let notebook = example_notebook("intro.py");
        let mut command = Command::new(BIN);
        command
            .arg("run")
            .arg(&notebook)
            .args(["--port", "0", "--headless", "--token", "--replica-id", name])
            .env("MARIMO_RS_SECRET", secret)
            .env_remove("MARIMO_RS_OLD_SECRETS")
            .env_remove("MARIMO_RS_REPLICA_ID")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(old) = old {
            command.env("MARIMO_RS_OLD_SECRETS", old);
        }
        let mut child = command.spawn().expect("the marimo-rs binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut url = String::new();
        let read = tokio::time::timeout(START, stdout.read_line(&mut url)).await;
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            let _ = child.kill().await;
            panic!(
                "replica {name} printed no URL ({read:?}); stderr:\n{}",
                stderr.lock().unwrap()
            );
        }
        // Keep reading stdout so that the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut rest = String::new();
            while matches!(stdout.read_line(&mut rest).await, Ok(n) if n > 0) {}
        });
        Self {
            name,
            child,
            url: url.trim_end().to_owned(),
            stderr,
        }
    }

    /// `http://127.0.0.1:PORT`.
    fn origin(&self) -> &str {
        let end = self.url["http://".len()..]
            .find('/')
            .map_or(self.url.len(), |i| i + "http://".len());
        &self.url[..end]
    }

    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn port(&self) -> u16 {
        self.origin().rsplit(':').next().unwrap().parse().unwrap()
    }

    fn token(&self) -> &str {
        self.url.split_once("?access_token=").expect("a token").1
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the replica is running")
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the replica exits within 20 s of SIGTERM")
            .unwrap();
        assert!(
            status.success(),
            "replica {} exited with {status}; stderr:\n{}",
            self.name,
            self.stderr.lock().unwrap()
        );
    }
}

/// A free loopback port (bound, then released for the load balancer to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts TCP connections.
async fn wait_listening(addr: SocketAddr, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {addr}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_program(name: &str) -> PathBuf {
    let find = || {
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    };
    // `cargo test` installs what it needs, as `.ci/run` does (Debian packages, as root).
    find()
        .or_else(|| {
            common::run_install_script("install-haproxy");
            find()
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `bash .ci/install-haproxy` as root (haproxy and nginx)")
        })
}

/// A load balancer process with its configuration in a temporary directory; killed (by its
/// pid) when dropped.
struct Balancer {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// haproxy: round robin, cookie affinity (`SRV`, set by haproxy), health checks on
    /// `/healthz`, and redispatch when the pinned replica is down.
    async fn haproxy(replicas: &[&Replica]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 256\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n\
             \x20   timeout server 60s\n    timeout tunnel 1h\n    option redispatch\n\
             \x20   retries 3\n\
             frontend web\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n\
             \x20   cookie SRV insert indirect nocache httponly\n\
             \x20   option httpchk\n    http-check send meth GET uri /healthz\n\
             \x20   default-server check inter 300ms fall 1 rise 1\n"
        );
        for replica in replicas {
            config.push_str(&format!(
                "    server {name} 127.0.0.1:{port} cookie {name}\n",
                name = replica.name,
                port = replica.port()
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(find_program("haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, "haproxy", String::new).await;
        Self {
            addr,
            child,
            _dir: dir,
        }
    }

    /// nginx with deploy/nginx.conf as shipped, but listening on a loopback port and with the
    /// replicas' ports.
    async fn nginx(replicas: [&Replica; 2]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf"),
        )
        .unwrap();
        let conf = shipped
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "server 127.0.0.1:2718 ",
                &format!("server 127.0.0.1:{} ", replicas[0].port()),
            )
            .replace(
                "server 127.0.0.1:2719 ",
                &format!("server 127.0.0.1:{} ", replicas[1].port()),
            );
        assert_ne!(conf, shipped);
        let d = dir.path().display();
        std::fs::write(dir.path().join("marimo-rs.conf"), conf).unwrap();
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
                 \x20 proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
                 \x20 uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 \x20 include {d}/marimo-rs.conf;\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new(find_program("nginx"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.path().join("error.log");
        wait_listening(addr, "nginx", || {
            std::fs::read_to_string(&log).unwrap_or_default()
        })
        .await;
        Self {
            addr,
            child,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the process by its pid and waits for it.
    async fn stop(mut self) {
        signal(
            self.child.id().expect("running"),
            nix::sys::signal::Signal::SIGTERM,
        );
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the load balancer exits on SIGTERM")
            .unwrap();
    }
}

/// Signs in through the login form at `origin`; returns `name=value` of the session cookie.
async fn login(origin: &str, token: &str) -> String {
    let form = format!("password={token}&next=%2F");
    let reply = send(
        Method::POST,
        &format!("{origin}/auth/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        &form,
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::FOUND,
        "login at {origin}: {reply:?}"
    );
    let cookie = reply.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_owned()
}

/// `name=value` pairs of every `Set-Cookie`.
fn set_cookies(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

fn replica_of(reply: &Reply) -> String {
    reply
        .header("x-marimo-rs-replica")
        .unwrap_or_else(|| panic!("no x-marimo-rs-replica header: {reply:?}"))
        .to_owned()
}

fn is_notebook_page(reply: &Reply) -> bool {
    reply.status == StatusCode::OK && reply.body.contains("__MARIMO_MOUNT_CONFIG__")
}

fn shows_value(message: &serde_json::Value, value: u32) -> bool {
    message["op"] == "cell-op"
        && message["data"]["output"]["data"]
            .as_str()
            .is_some_and(|data| data.contains(&format!("Slider value is <strong>{value}</strong>")))
}

/// Opens a kernel session over the WebSocket at `base`; returns it with the slider's id.
async fn open_session(base: &str, session: &str, cookie: &str) -> (Ws, String) {
    let url = format!("{}/ws?session_id={session}", base.replacen("http", "ws", 1));
    let mut ws = ws_connect(&url, &[("cookie", cookie)])
        .await
        .unwrap_or_else(|status| panic!("WebSocket to {url} refused: {status}"));
    ws_until(&mut ws, WS, |m| m["op"] == "kernel-ready").await;
    let mut slider = None;
    ws_until(&mut ws, WS, |m| {
        if let Some(id) = slider_id(m) {
            slider = Some(id);
        }
        shows_value(m, 3)
    })
    .await;
    (ws, slider.expect("the slider's cell output arrived"))
}

/// `POST /api/kernel/set_ui_element_value` for `session`.
async fn set_slider(url: &str, cookie: &str, session: &str, slider: &str, value: u32) -> Reply {
    let body = serde_json::json!({ "objectIds": [slider], "values": [value] }).to_string();
    send(
        Method::POST,
        &format!("{url}/api/kernel/set_ui_element_value"),
        &[
            ("content-type", "application/json"),
            ("cookie", cookie),
            ("marimo-session-id", session),
        ],
        &body,
    )
    .await
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
    let at_b = send(
        Method::GET,
        &b.url_of("/"),
        &[HTML, ("cookie", &cookie)],
        "",
    )
    .await;
    assert!(is_notebook_page(&at_b), "B refused A's cookie: {at_b:?}");
    assert_eq!(replica_of(&at_b), "b");
    let anonymous = send(Method::GET, &b.url_of("/"), &[HTML], "").await;
    assert_eq!(
        anonymous.status,
        StatusCode::SEE_OTHER,
        "B still needs a login"
    );

    let lb = Balancer::haproxy(&[&a, &b]).await;
    let base = lb.url("");

    // The first page load through haproxy picks a replica and pins the browser to it.
    let first = send(Method::GET, &lb.url("/"), &[HTML, ("cookie", &cookie)], "").await;
    assert!(is_notebook_page(&first), "{first:?}");
    let home = replica_of(&first);
    assert!(
        set_cookies(&first).contains(&format!("SRV={home}")),
        "haproxy pins the browser to {home}: {:?}",
        set_cookies(&first)
    );
    let away = if home == "a" { "b" } else { "a" };
    let pinned = format!("{cookie}; SRV={home}");
    let (mut ws, slider) = open_session(&base, "replicas-s1", &pinned).await;

    // Requests without the affinity cookie alternate between the replicas, while the pinned
    // session's calls all reach its replica and the WebSocket carries every update.
    let mut seen = HashSet::new();
    for value in [4, 5, 6, 7] {
        let other = send(
            Method::GET,
            &lb.url("/api/version"),
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(other.status, StatusCode::OK, "{other:?}");
        seen.insert(replica_of(&other));
        let set = set_slider(&base, &pinned, "replicas-s1", &slider, value).await;
        assert_eq!(set.status, StatusCode::OK, "{set:?}");
        assert_eq!(replica_of(&set), home);
        ws_until(&mut ws, WS, |m| shows_value(m, value)).await;
    }
    assert_eq!(seen.len(), 2, "round robin reaches both replicas: {seen:?}");

    // Without affinity, a call for the session that lands on the other replica is refused
    // clearly (marimo itself would answer `500 Invalid session id`).
    let direct = if away == "a" { &a } else { &b };
    let refused = set_slider(direct.origin(), &cookie, "replicas-s1", &slider, 8).await;
    assert_elsewhere(&refused, away);
    let mut statuses = Vec::new();
    for value in [8, 9] {
        let reply = set_slider(&base, &cookie, "replicas-s1", &slider, value).await;
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
    let set = set_slider(&base, &pinned, "replicas-s1", &slider, 10).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");
    ws_until(&mut ws, WS, |m| shows_value(m, 10)).await;
    drop(ws);

    // deploy/nginx.conf as shipped: its affinity cookie pins a browser the same way.
    let nginx = Balancer::nginx([&a, &b]).await;
    let first = send(
        Method::GET,
        &nginx.url("/"),
        &[HTML, ("cookie", &cookie)],
        "",
    )
    .await;
    assert!(is_notebook_page(&first), "{first:?}");
    let affinity = set_cookies(&first)
        .into_iter()
        .find(|c| c.starts_with("marimo_rs_affinity="))
        .expect("nginx sets its affinity cookie");
    let nginx_home = replica_of(&first);
    let with_affinity = format!("{cookie}; {affinity}");
    let nginx_base = nginx.url("");
    let (mut nginx_ws, nginx_slider) =
        open_session(&nginx_base, "replicas-nginx", &with_affinity).await;
    for value in [5, 6] {
        let set = set_slider(
            &nginx_base,
            &with_affinity,
            "replicas-nginx",
            &nginx_slider,
            value,
        )
        .await;
        assert_eq!(set.status, StatusCode::OK, "{set:?}");
        assert_eq!(replica_of(&set), nginx_home);
        assert!(set_cookies(&set).is_empty(), "the cookie is set once");
        ws_until(&mut nginx_ws, WS, |m| shows_value(m, value)).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..32 {
        let fresh = send(
            Method::GET,
            &nginx.url("/api/version"),
            &[("cookie", &cookie)],
            "",
        )
        .await;
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
    let (dead, alive) = if home == "a" { (a, b) } else { (b, a) };
    let backends = descendants(dead.pid());
    assert!(
        !backends.is_empty(),
        "the replica runs its notebook backend"
    );
    let mut dead = dead;
    dead.child.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let reload = loop {
        let reload = send(Method::GET, &lb.url("/"), &[HTML, ("cookie", &pinned)], "").await;
        if is_notebook_page(&reload) || Instant::now() > deadline {
            break reload;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(is_notebook_page(&reload), "no new login needed: {reload:?}");
    assert_eq!(replica_of(&reload), away);
    assert!(
        set_cookies(&reload).contains(&format!("SRV={away}")),
        "haproxy re-pins the browser: {:?}",
        set_cookies(&reload)
    );
    let repinned = format!("{cookie}; SRV={away}");
    let (ws, slider) = open_session(&base, "replicas-s2", &repinned).await;
    let set = set_slider(&base, &repinned, "replicas-s2", &slider, 6).await;
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
    let page = send(
        Method::GET,
        &rotated.url_of("/"),
        &[HTML, ("cookie", &old_cookie)],
        "",
    )
    .await;
    assert!(is_notebook_page(&page), "{page:?}");
    let page = send(
        Method::GET,
        &after.url_of("/"),
        &[HTML, ("cookie", &old_cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{page:?}");

    // So is the old token, in a link or a header.
    let bearer = format!("Bearer {}", old.token());
    let api = send(
        Method::GET,
        &rotated.url_of("/api/version"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(api.status, StatusCode::OK, "{api:?}");
    let api = send(
        Method::GET,
        &after.url_of("/api/version"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);

    // New sessions are signed with the new secret, under another name, which every replica
    // with the new secret accepts and the old replica does not know.
    let new_cookie = login(rotated.origin(), rotated.token()).await;
    let name = |cookie: &str| cookie.split('=').next().unwrap().to_owned();
    assert_ne!(name(&new_cookie), name(&old_cookie));
    let page = send(
        Method::GET,
        &after.url_of("/"),
        &[HTML, ("cookie", &new_cookie)],
        "",
    )
    .await;
    assert!(is_notebook_page(&page), "{page:?}");
    let page = send(
        Method::GET,
        &old.url_of("/"),
        &[HTML, ("cookie", &new_cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    tokio::join!(old.stop(), rotated.stop(), after.stop());
}

#[tokio::test]
async fn a_session_call_is_forwarded_only_while_its_websocket_session_lives_here() {
    let app = create_app()
        .with_app("/nb", example_notebook("intro.py"))
        .session_ttl(Duration::from_secs(1))
        .replica_id("solo")
        .build()
        .unwrap();
    start_backends(&app).await;
    let server = TestServer::start(app.clone()).await;
    let base = server.url("/nb");

    // Without the session header the request is untouched: marimo answers it.
    let bare = send(
        Method::POST,
        &format!("{base}/api/kernel/set_ui_element_value"),
        &[("content-type", "application/json")],
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
    let unknown = set_slider(&base, "", "nobody", "x", 1).await;
    assert_elsewhere(&unknown, "solo");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A call sent while its WebSocket is still on the way waits for it.
    let racing = tokio::spawn({
        let base = base.clone();
        async move {
            send(
                Method::POST,
                &format!("{base}/api/kernel/set_ui_element_value"),
                &[
                    ("content-type", "application/json"),
                    ("marimo-session-id", "late"),
                ],
                r#"{"objectIds":[],"values":[]}"#,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ws, slider) = open_session(&base, "late", "").await;
    // Forwarded, not refused: marimo answers (200, or 403 while its kernel is attaching).
    assert_forwarded(&racing.await.unwrap());
    let set = set_slider(&base, "", "late", &slider, 4).await;
    assert_eq!(set.status, StatusCode::OK, "{set:?}");

    // After the socket closes, calls for the session still go to marimo for its TTL (marimo
    // answers them itself: a closed session is read-only, or already dropped), then the
    // gateway refuses them.
    drop(ws);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let within = set_slider(&base, "", "late", &slider, 5).await;
    assert_forwarded(&within);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expired = set_slider(&base, "", "late", &slider, 6).await;
    assert_elsewhere(&expired, "solo");

    server.stop().await;
    app.shutdown().await;
}

/// A service that says who the auth layer let in.
fn whoami(
) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + Sync
       + 'static {
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
    let reply = send(Method::GET, &two.url("/x"), &[("cookie", &cookie)], "").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "user")
    );
    let reply = send(Method::GET, &other.url("/x"), &[("cookie", &cookie)], "").await;
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
    let reply = send(Method::GET, &rotated.url("/x"), &[("cookie", &cookie)], "").await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the old session is still good"
    );
    for password in ["sup3rs3cr3t", "n3w-t0ken"] {
        let bearer = format!("Bearer {password}");
        let reply = send(
            Method::GET,
            &rotated.url("/x"),
            &[("authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{password}");
    }
    // New sessions are bound to the new token and signed with the new key: `other` (same
    // secret, old token) does not take them, a replica with the same configuration does.
    let fresh = login(&rotated.url(""), "n3w-t0ken").await;
    assert_ne!(fresh.split('=').next(), cookie.split('=').next());
    let reply = send(Method::GET, &other.url("/x"), &[("cookie", &fresh)], "").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let twin = TestServer::start(build(AuthLayer::new(new_token).secret("another"))).await;
    let reply = send(Method::GET, &twin.url("/x"), &[("cookie", &fresh)], "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(
        Method::GET,
        &twin.url("/x"),
        &[("authorization", "Bearer sup3rs3cr3t")],
        "",
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "old tokens only while listed"
    );
}
