//! The `marimo-rs` command, end to end: the real binary, real marimo backends (the managed
//! virtualenv), real HTTP and WebSockets. Each server is started on `--port 0 --headless`
//! and found through the URL line it prints.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{descendants, example_notebook, send, signal, wait_gone, ws_connect, ws_until};
use http::{Method, StatusCode};
use marimo_rs::Token;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_marimo-rs");
/// Generous: the first start may install marimo.
const START: Duration = Duration::from_secs(180);
const STOP: Duration = Duration::from_secs(20);
const WS: Duration = Duration::from_secs(30);

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

/// A running `marimo-rs` process; killed when dropped.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<String>>,
    /// The line it printed.
    url: String,
}

impl Server {
    /// `http://127.0.0.1:PORT`, without path or query.
    fn origin(&self) -> &str {
        let after_scheme = "http://".len();
        let end = self.url[after_scheme..]
            .find('/')
            .map_or(self.url.len(), |i| i + after_scheme);
        &self.url[..end]
    }

    /// The URL without its query string.
    fn page(&self) -> &str {
        self.url.split('?').next().unwrap()
    }

    fn token(&self) -> Option<&str> {
        self.url
            .split_once("?access_token=")
            .map(|(_, token)| token)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits for the exit; returns the status and what else went to stdout.
    async fn terminate(mut self) -> (ExitStatus, String, String) {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(STOP, self.child.wait())
            .await
            .expect("the server exits within 20 s of SIGTERM")
            .unwrap();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).await.unwrap();
        // Let the stderr reader see the end of the stream.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status, rest, self.stderr())
    }
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("MARIMO_RS_SECRET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// `marimo-rs run NOTEBOOK --no-token --port 0 --headless`, for [`start_with`].
fn open_run(notebook: &Path) -> Command {
    let notebook = notebook.to_str().unwrap();
    command(&["run", notebook, "--no-token", "--port", "0", "--headless"])
}

/// Starts `marimo-rs ARGS --port 0 --headless` and waits for its URL line.
async fn start(args: &[&str]) -> Server {
    start_with(
        command(&[args, &["--port", "0", "--headless"]].concat()),
        None,
    )
    .await
}

/// Starts `command`, writes `stdin` to it if given, and waits for the URL line.
async fn start_with(mut command: Command, stdin: Option<&str>) -> Server {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("the marimo-rs binary starts");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
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
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!(
            "no URL line from marimo-rs ({read:?}); stderr:\n{}",
            stderr.lock().unwrap()
        );
    }
    let url = url.trim_end().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    Server {
        child,
        stdout,
        stderr,
        url,
    }
}

/// Runs `marimo-rs ARGS` to completion (it must not start a server).
async fn fail(args: &[&str]) -> (ExitStatus, String, String) {
    finish(command(args)).await
}

/// Runs `command` to completion (it must not start a server).
async fn finish(mut command: Command) -> (ExitStatus, String, String) {
    let output = tokio::time::timeout(STOP, command.output())
        .await
        .expect("marimo-rs exits by itself")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// SIGTERM: exit status 0, nothing more on stdout, every descendant gone, no panic.
async fn assert_clean_stop(server: Server) -> String {
    let children = descendants(server.pid());
    assert!(
        !children.is_empty(),
        "the notebook backend runs below marimo-rs"
    );
    let (status, rest, stderr) = server.terminate().await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert_eq!(rest, "", "only the URL line goes to standard output");
    for pid in children {
        assert!(
            wait_gone(pid, Duration::from_secs(10)).await,
            "process {pid} outlived marimo-rs"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

async fn kernel_ready(url: &str) -> (common::Ws, serde_json::Value) {
    let mut ws = ws_connect(url, &[]).await.expect("WebSocket accepted");
    let ready = ws_until(&mut ws, WS, |m| m["op"] == "kernel-ready").await;
    (ws, ready)
}

/// A copy of the example notebook in `dir`, with `Hello` replaced by `greeting`.
fn notebook_copy(dir: &Path, name: &str, greeting: &str) -> (std::path::PathBuf, String) {
    let code = std::fs::read_to_string(example_notebook("intro.py"))
        .unwrap()
        .replace("Hello", greeting);
    let path = dir.join(name);
    std::fs::write(&path, &code).unwrap();
    (path, code)
}

#[tokio::test]
async fn run_serves_page_and_websocket_and_sigterm_stops_everything() {
    let notebook = example_notebook("intro.py");
    let server = start(&["run", notebook.to_str().unwrap(), "--no-token"]).await;
    assert_eq!(server.token(), None, "{}", server.url);
    assert!(server.url.ends_with('/'), "{}", server.url);

    let page = send(Method::GET, &server.url, &[HTML], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("__MARIMO_MOUNT_CONFIG__"),
        "marimo's page"
    );
    assert!(page.body.contains(r#""mode": "read""#), "run mode");
    let ws_url = format!("{}/ws?session_id=cli-run", server.origin()).replace("http", "ws");
    let (mut ws, _) = kernel_ready(&ws_url).await;
    ws_until(&mut ws, WS, |m| {
        m["data"]["output"]["data"]
            .as_str()
            .is_some_and(|html| html.contains("Hello from marimo_rs"))
    })
    .await;
    drop(ws);

    let stderr = assert_clean_stop(server).await;
    assert!(stderr.contains("marimo-rs is listening"), "{stderr}");
}

/// The interpreter of the managed virtualenv (installed first if needed, by the library,
/// under its file lock): read from the command line of a backend the library starts, so the
/// tests need not know where the cache directory is.
async fn managed_python() -> PathBuf {
    let app = marimo_rs::create_app()
        .with_app("/", example_notebook("intro.py"))
        .build()
        .unwrap();
    common::start_backends(&app).await;
    let pid = app.backend_pids()[0];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    app.shutdown().await;
    let python = cmdline.split(|&b| b == 0).next().unwrap();
    PathBuf::from(String::from_utf8(python.to_vec()).unwrap())
}

/// A fresh installation of marimo-rs: its own cache directory, which holds the installation
/// secret, and the Python the managed virtualenv already has.
struct Installation {
    cache: tempfile::TempDir,
    python: PathBuf,
}

impl Installation {
    fn new(python: &Path) -> Self {
        Self {
            cache: tempfile::tempdir().unwrap(),
            python: python.to_owned(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = command(args);
        command
            .env("MARIMO_RS_CACHE_DIR", self.cache.path())
            .env("MARIMO_RS_PYTHON", &self.python);
        command
    }

    fn secret_path(&self) -> PathBuf {
        self.cache.path().join("installation-secret")
    }

    /// The installation secret: 32 bytes in a file only its owner can read.
    fn secret(&self) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.secret_path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: mode {mode:o}", path.display());
        let secret = std::fs::read(&path).unwrap();
        assert_eq!(secret.len(), 32);
        secret
    }
}

#[tokio::test]
async fn generated_tokens_are_stable_across_restarts_and_follow_the_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    let (a, code_a) = notebook_copy(dir.path(), "nb.py", "Hello");
    let (b, code_b) = notebook_copy(&dir.path().join("b"), "nb.py", "Goodbye");
    let secret = "a-server-secret";
    let installation = Installation::new(&managed_python().await);

    let first_args = [
        "run",
        a.to_str().unwrap(),
        "--token",
        "--port",
        "0",
        "--headless",
    ];
    let changed_args = [
        "run",
        b.to_str().unwrap(),
        "--auth",
        "--port",
        "0",
        "--headless",
    ];
    let mut keyed = installation.command(&first_args);
    keyed.env("MARIMO_RS_SECRET", secret);
    let (first, changed, keyed) = tokio::join!(
        start_with(installation.command(&first_args), None),
        start_with(installation.command(&changed_args), None),
        start_with(keyed, None),
    );
    let installation_secret = installation.secret();
    let first_token = first.token().expect("--token turns auth on").to_owned();
    assert_eq!(
        first_token,
        Token::from_code_with_secret(&code_a, &installation_secret).expose_secret()
    );
    assert_eq!(
        changed.token(),
        Some(Token::from_code_with_secret(&code_b, &installation_secret).expose_secret()),
        "other code, other token"
    );
    assert_ne!(changed.token(), Some(first_token.as_str()));
    assert_eq!(
        keyed.token(),
        Some(Token::from_code_with_secret(&code_a, secret.as_bytes()).expose_secret()),
        "MARIMO_RS_SECRET keys the derivation"
    );

    // The printed URL signs the browser in; without it, the page asks to log in.
    let signed_in = send(Method::GET, &first.url, &[HTML], "").await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert!(signed_in.header("set-cookie").is_some());
    let anonymous = send(Method::GET, first.page(), &[HTML], "").await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.header("location").unwrap().contains("auth/login"));

    let (status, _, stderr) = first.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(&first_token), "the token is never logged");

    let restarted = start_with(installation.command(&first_args), None).await;
    assert_eq!(
        restarted.token(),
        Some(first_token.as_str()),
        "same code, same token"
    );
    for server in [restarted, changed, keyed] {
        let token = server.token().unwrap().to_owned();
        let (status, _, stderr) = server.terminate().await;
        assert!(status.success(), "{stderr}");
        assert!(!stderr.contains(&token), "the token is never logged");
    }
}

#[tokio::test]
async fn generated_tokens_are_keyed_by_a_secret_of_the_installation() {
    let dir = tempfile::tempdir().unwrap();
    let (notebook, code) = notebook_copy(dir.path(), "nb.py", "Hello");
    let python = managed_python().await;
    let (one, two) = (Installation::new(&python), Installation::new(&python));
    let args = [
        "run",
        notebook.to_str().unwrap(),
        "--token",
        "--port",
        "0",
        "--headless",
    ];

    // Three first starts of one installation at once, and one of another installation.
    let (a, b, c, other) = tokio::join!(
        start_with(one.command(&args), None),
        start_with(one.command(&args), None),
        start_with(one.command(&args), None),
        start_with(two.command(&args), None),
    );
    let token = a.token().expect("--token turns auth on").to_owned();
    assert_ne!(
        token,
        Token::from_code(&code).expose_secret(),
        "the token cannot be computed from the notebook's code alone"
    );
    assert_eq!(b.token(), Some(token.as_str()), "concurrent starts agree");
    assert_eq!(c.token(), Some(token.as_str()), "concurrent starts agree");
    assert_eq!(
        token,
        Token::from_code_with_secret(&code, &one.secret()).expose_secret()
    );
    assert_eq!(
        other.token(),
        Some(Token::from_code_with_secret(&code, &two.secret()).expose_secret())
    );
    assert_ne!(
        other.token(),
        Some(token.as_str()),
        "another installation, another token"
    );
    for server in [a, b, c, other] {
        let token = server.token().unwrap().to_owned();
        let (status, _, stderr) = server.terminate().await;
        assert!(status.success(), "{stderr}");
        assert!(
            stderr.contains("keyed by the installation secret"),
            "which key is logged: {stderr}"
        );
        assert!(!stderr.contains(&token), "the token is never logged");
    }

    // The same installation after a restart: the same token.
    let restarted = start_with(one.command(&args), None).await;
    assert_eq!(restarted.token(), Some(token.as_str()));
    let (status, _, stderr) = restarted.terminate().await;
    assert!(status.success(), "{stderr}");

    // With MARIMO_RS_SECRET no installation secret is made.
    let three = Installation::new(&python);
    let mut keyed = three.command(&args);
    keyed.env("MARIMO_RS_SECRET", "replica-secret");
    let keyed = start_with(keyed, None).await;
    assert_eq!(
        keyed.token(),
        Some(Token::from_code_with_secret(&code, b"replica-secret").expose_secret())
    );
    assert!(!three.secret_path().exists());
    let (status, _, stderr) = keyed.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("keyed by MARIMO_RS_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("replica-secret"),
        "the secret is never logged"
    );

    // A secret file that others can read, or of the wrong size, is refused with the fix.
    use std::os::unix::fs::PermissionsExt as _;
    let exposed = Installation::new(&python);
    std::fs::write(exposed.secret_path(), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        exposed.secret_path(),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let short = Installation::new(&python);
    std::fs::write(short.secret_path(), [7u8; 5]).unwrap();
    std::fs::set_permissions(short.secret_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    for (installation, expected) in [(&exposed, "chmod 600"), (&short, "32 bytes")] {
        let (status, stdout, stderr) = finish(installation.command(&args)).await;
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert_eq!(stdout, "", "no URL");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(expected), "{stderr}");
        assert!(errors[0].contains("installation-secret"), "{stderr}");
    }
}

#[tokio::test]
async fn the_browser_gets_a_one_time_link_and_never_the_token() {
    use std::os::unix::fs::PermissionsExt as _;
    // A fake `xdg-open` first on PATH, recording its arguments.
    let bin = tempfile::tempdir().unwrap();
    let recorded = bin.path().join("argv");
    let opener = bin.path().join("xdg-open");
    std::fs::write(
        &opener,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{0}.tmp' && mv '{0}.tmp' '{0}'\n",
            recorded.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let token = "opener-s3cret-t0ken";
    let notebook = example_notebook("intro.py");
    let mut command = command(&[
        "run",
        notebook.to_str().unwrap(),
        &format!("--token={token}"),
        "--port",
        "0",
    ]);
    command.env("PATH", path);
    let server = start_with(command, None).await;
    assert_eq!(
        server.token(),
        Some(token),
        "standard output has the token URL"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let argv = loop {
        if let Ok(argv) = std::fs::read_to_string(&recorded) {
            break argv;
        }
        assert!(tokio::time::Instant::now() < deadline, "the opener ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!argv.contains(token), "the token is not in argv: {argv}");
    assert!(!argv.contains("access_token"), "{argv}");
    let link = argv.trim_end();
    assert!(
        link.starts_with(&format!("{}/auth/", server.origin())),
        "{link}"
    );

    // The link signs the browser in once, and takes the code out of the address bar.
    let first = send(Method::GET, link, &[HTML], "").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{first:?}");
    let location = first.header("location").unwrap();
    assert!(!location.contains("code"), "{location}");
    let cookie = first
        .header("set-cookie")
        .expect("the link sets the session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let api = format!("{}/api/version", server.origin());
    let signed_in = send(Method::GET, &api, &[("cookie", &cookie)], "").await;
    assert_eq!(signed_in.status, StatusCode::OK, "{signed_in:?}");
    let again = send(Method::GET, link, &[HTML], "").await;
    assert!(again.header("set-cookie").is_none(), "{again:?}");
    assert_ne!(again.status, StatusCode::SEE_OTHER, "single use: {again:?}");

    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("--token-password-file"),
        "--token=VALUE is visible in ps, and the log says so: {stderr}"
    );
    assert!(!stderr.contains(token), "the token is never logged");
}

#[tokio::test]
async fn token_password_file_dash_reads_standard_input() {
    let secret = "from-stdin-s3cret";
    let notebook = example_notebook("intro.py");
    let command = command(&[
        "run",
        notebook.to_str().unwrap(),
        "--token-password-file",
        "-",
        "--port",
        "0",
        "--headless",
    ]);
    let server = start_with(command, Some(&format!("{secret}\n"))).await;
    assert_eq!(
        server.token(),
        Some(secret),
        "the trailing newline is not part of it"
    );

    let api = format!("{}/api/version", server.origin());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{secret}"))
    );
    let with = send(Method::GET, &api, &[("authorization", &basic)], "").await;
    assert_eq!(with.status, StatusCode::OK, "{with:?}");
    assert_eq!(with.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    let without = send(Method::GET, &api, &[], "").await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("anyone:wrong")
    );
    let wrong = send(Method::GET, &api, &[("authorization", &wrong)], "").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let page = send(Method::GET, server.page(), &[HTML], "").await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "browsers go to the login form"
    );

    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(secret), "the password is never logged");
}

#[tokio::test]
async fn serve_composes_apps_and_a_directory_under_a_base_url() {
    let dir = tempfile::tempdir().unwrap();
    let (second, _) = notebook_copy(dir.path(), "second.py", "Second");
    let more = dir.path().join("more");
    std::fs::create_dir(&more).unwrap();
    notebook_copy(&more, "extra.py", "Extra");
    let root = example_notebook("intro.py");
    let server = start(&[
        "serve",
        "--app",
        &format!("/={}", root.display()),
        "--app",
        &format!("/second={}", second.display()),
        "--dir",
        &format!("/more={}", more.display()),
        "--base-url",
        "/base/",
    ])
    .await;
    assert_eq!(server.token(), None, "serve is open by default");
    assert_eq!(server.url, format!("{}/base/", server.origin()));

    for path in ["/base/", "/base/second/"] {
        let page = send(
            Method::GET,
            &format!("{}{path}", server.origin()),
            &[HTML],
            "",
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"), "{path}");
    }
    // A directory notebook starts on its first request: a "starting" page, then marimo's.
    let extra = format!("{}/base/more/extra/", server.origin());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = send(Method::GET, &extra, &[HTML], "").await;
        if page.status == StatusCode::OK {
            assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"));
            break;
        }
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{page:?}");
        assert!(tokio::time::Instant::now() < deadline, "{page:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let outside = send(
        Method::GET,
        &format!("{}/second/", server.origin()),
        &[HTML],
        "",
    )
    .await;
    assert_eq!(
        outside.status,
        StatusCode::NOT_FOUND,
        "nothing outside the base URL"
    );

    let ws_url =
        format!("{}/base/second/ws?session_id=cli-serve", server.origin()).replace("http", "ws");
    let (mut ws, _) = kernel_ready(&ws_url).await;
    ws_until(&mut ws, WS, |m| {
        m["data"]["output"]["data"]
            .as_str()
            .is_some_and(|html| html.contains("Second from marimo_rs"))
    })
    .await;
    drop(ws);
    assert_clean_stop(server).await;
}

#[tokio::test]
async fn edit_creates_the_notebook_and_edits_it_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("fresh.py");
    let server = start(&["edit", notebook.to_str().unwrap()]).await;
    assert!(notebook.is_file(), "edit creates the notebook");
    let token = server
        .token()
        .expect("the editor requires a token by default")
        .to_owned();
    assert_eq!(token.len(), 32, "a random token");
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());

    let page = send(Method::GET, server.page(), &[HTML, auth], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#""mode": "edit""#), "marimo's editor");
    // The editor has marimo's skew protection on (as `marimo edit` does): its POSTs carry
    // the page's server token, as marimo's frontend sends it.
    let server_token = page
        .body
        .split("\"serverToken\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the editor page carries marimo's server token")
        .to_owned();
    let anonymous = send(Method::GET, server.page(), &[HTML], "").await;
    assert_eq!(
        anonymous.status,
        StatusCode::SEE_OTHER,
        "the editor is not open"
    );

    let ws_url = format!(
        "{}/ws?session_id=cli-edit&access_token={token}",
        server.origin()
    )
    .replace("http", "ws");
    let (mut ws, ready) = kernel_ready(&ws_url).await;
    let cell = ready["data"]["cell_ids"][0]
        .as_str()
        .expect("a cell")
        .to_owned();
    let headers = [
        auth,
        ("content-type", "application/json"),
        ("marimo-session-id", "cli-edit"),
        ("marimo-server-token", server_token.as_str()),
    ];
    let api = |path: &str| format!("{}/api/kernel/{path}", server.origin());
    let code = "6 * 7";
    let run = serde_json::json!({ "cellIds": [&cell], "codes": [code] }).to_string();
    let ran = send(Method::POST, &api("run"), &headers, &run).await;
    assert_eq!(ran.status, StatusCode::OK, "{ran:?}");
    ws_until(&mut ws, WS, |m| {
        m["op"] == "cell-op"
            && m["data"]["output"]["data"]
                .as_str()
                .is_some_and(|out| out.contains(">42<"))
    })
    .await;
    let save = serde_json::json!({
        "cellIds": [&cell],
        "codes": [code],
        "names": ["_"],
        "configs": [{}],
        "filename": notebook.canonicalize().unwrap(),
    })
    .to_string();
    let saved = send(Method::POST, &api("save"), &headers, &save).await;
    assert_eq!(saved.status, StatusCode::OK, "{saved:?}");
    let written = std::fs::read_to_string(&notebook).unwrap();
    assert!(
        written.contains("marimo.App(") && written.contains(code),
        "{written}"
    );
    drop(ws);

    // The kernel is a subprocess of the backend: it goes too.
    assert!(descendants(server.pid()).len() >= 2, "backend and kernel");
    let stderr = assert_clean_stop(server).await;
    assert!(!stderr.contains(&token), "the token is never logged");
}

#[tokio::test]
async fn new_picks_a_fresh_name_and_no_token_opens_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("new_notebook.py"), "taken").unwrap();
    let mut new = command(&["new", "--no-token", "--port", "0", "--headless"]);
    new.current_dir(dir.path());
    let server = start_with(new, None).await;
    assert_eq!(server.token(), None, "--no-token");
    let created = dir.path().join("new_notebook_1.py");
    assert!(created.is_file(), "the next free name");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new_notebook.py")).unwrap(),
        "taken"
    );
    let page = send(Method::GET, server.page(), &[HTML], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#""mode": "edit""#));
    assert!(page.body.contains("new_notebook_1.py"));
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn notebooks_cannot_read_the_gateways_secrets_from_their_environment() {
    let dir = tempfile::tempdir().unwrap();
    let notebook = dir.path().join("env.py");
    std::fs::write(
        &notebook,
        "import marimo\n\napp = marimo.App()\n\n\n@app.cell\ndef _():\n    import os\n\n    \
         import marimo as mo\n\n    mo.plain_text(\"ENV: \" + \" \".join(sorted(os.environ)))\n    \
         return\n\n\nif __name__ == \"__main__\":\n    app.run()\n",
    )
    .unwrap();
    let mut run = open_run(&notebook);
    run.env("MARIMO_RS_SECRET", "replica-secret-value")
        .env("MARIMO_RS_OLD_SECRETS", "old-secret-value")
        .env("MARIMO_RS_REPLICA_ID", "replica-1")
        .env("NOTEBOOK_MAY_SEE_THIS", "1");
    let server = start_with(run, None).await;
    let ws_url = format!("{}/ws?session_id=cli-env", server.origin()).replace("http", "ws");
    let (mut ws, _) = kernel_ready(&ws_url).await;
    let output = ws_until(&mut ws, WS, |m| {
        m["data"]["output"]["data"]
            .as_str()
            .is_some_and(|html| html.contains("ENV: "))
    })
    .await;
    let keys = output["data"]["output"]["data"].as_str().unwrap();
    assert!(keys.contains("NOTEBOOK_MAY_SEE_THIS"), "{keys}");
    assert!(!keys.contains("MARIMO_RS_"), "{keys}");
    drop(ws);
    assert_clean_stop(server).await;
}

#[tokio::test]
async fn a_killed_gateways_private_folder_is_removed_by_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let notebook = example_notebook("intro.py");
    let gateway = || {
        let mut run = open_run(&notebook);
        run.env("TMPDIR", tmp.path());
        run
    };
    let folders = || {
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("marimo-rs-")
            })
            .collect();
        found.sort();
        found
    };
    let live = start_with(gateway(), None).await;
    let [live_dir] = &folders()[..] else {
        panic!("one private folder per gateway: {:?}", folders())
    };
    let live_dir = live_dir.clone();
    let mut killed = start_with(gateway(), None).await;
    let killed_dir = folders()
        .into_iter()
        .find(|dir| *dir != live_dir)
        .expect("the second gateway's folder");
    // Not a gateway's folder as this version makes them: never touched.
    let foreign = tmp.path().join("marimo-rs-abc123");
    std::fs::create_dir(&foreign).unwrap();
    signal(killed.pid(), nix::sys::signal::Signal::SIGKILL);
    killed.child.wait().await.unwrap();
    assert!(killed_dir.is_dir(), "kill -9 leaves the folder behind");

    let next = start_with(gateway(), None).await;
    assert!(!killed_dir.exists(), "the dead gateway's folder is removed");
    assert!(live_dir.is_dir(), "a live gateway's folder is kept");
    assert!(foreign.is_dir(), "an unknown folder is kept");
    assert_eq!(folders().len(), 3, "{:?}", folders());
    let page = send(Method::GET, live.page(), &[HTML], "").await;
    assert_eq!(page.status, StatusCode::OK, "the live gateway still serves");
    assert_clean_stop(next).await;
    assert_clean_stop(live).await;
    assert_eq!(folders(), [foreign], "clean stops remove their own folders");
}

#[tokio::test]
async fn errors_are_one_line_and_a_non_zero_exit() {
    let notebook = example_notebook("intro.py");
    let notebook = notebook.to_str().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cases: [(&[&str], &str); 5] = [
        (&["serve", "--app", "intro.py"], "invalid --app"),
        (&["serve", "--app", "/x="], "invalid --app"),
        (
            &["run", "no/such/notebook.py"],
            "no/such/notebook.py does not exist",
        ),
        (
            &["run", notebook, "--headless", "--port", &port],
            "already in use",
        ),
        (
            &[
                "run",
                notebook,
                "--headless",
                "--port",
                "0",
                "--python",
                "/no/such/python",
            ],
            "/no/such/python",
        ),
    ];
    for (args, expected) in cases {
        let (status, stdout, stderr) = fail(args).await;
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}: no URL");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    drop(taken);

    // Usage errors are clap's, with status 2.
    for args in [
        &["run", notebook, "--no-token", "--auth"][..],
        &["run", notebook, "--token=a", "--token-password", "b"],
    ] {
        let (status, _, stderr) = fail(args).await;
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_forwarded_headers_count() {
    let notebook = example_notebook("intro.py");
    let bad = command(&["run", notebook.to_str().unwrap(), "--trusted-proxy", "nope"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a clap usage error");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an IP address"));

    let server = start(&[
        "run",
        notebook.to_str().unwrap(),
        "--token=proxy-s3cret",
        "--trusted-proxy",
        "127.0.0.1",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--secure-cookie",
    ])
    .await;
    let login = send(
        Method::POST,
        &format!("{}/auth/login", server.origin()),
        &[("content-type", "application/x-www-form-urlencoded")],
        "password=proxy-s3cret",
    )
    .await;
    assert_eq!(login.status, StatusCode::FOUND, "{login:?}");
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The login limit keys on the client the trusted proxy names, not on the proxy itself.
    let api = format!("{}/api/version", server.origin());
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("anyone:wrong")
    );
    let attempt = |client: &'static str| {
        let (api, wrong) = (api.clone(), wrong.clone());
        async move {
            send(
                Method::GET,
                &api,
                &[("authorization", &wrong), ("x-forwarded-for", client)],
                "",
            )
            .await
            .status
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(attempt("203.0.113.7").await);
    }
    assert_eq!(statuses[..10], [StatusCode::UNAUTHORIZED; 10]);
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        attempt("198.51.100.9").await,
        StatusCode::UNAUTHORIZED,
        "another client"
    );
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn allow_origins_and_allow_host_open_the_guards_for_the_named_ones_only() {
    let notebook = example_notebook("intro.py");
    let notebook = notebook.to_str().unwrap();
    for (flag, value, expected) in [
        (
            "--allow-origins",
            "app.example.com",
            "invalid allowed origin",
        ),
        ("--allow-host", "marimo.test:80", "invalid allowed host"),
    ] {
        let (status, stdout, stderr) =
            fail(&["run", notebook, "--headless", "--port", "0", flag, value]).await;
        assert_eq!(status.code(), Some(1), "{flag} {value}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
    }

    let server = start(&[
        "run",
        notebook,
        "--allow-origins",
        "https://app.example.com",
        "--allow-origins",
        "http://localhost:3000",
        "--allow-host",
        "marimo.test",
    ])
    .await;
    let port = server.origin().rsplit(':').next().unwrap().to_owned();
    let named = format!("marimo.test:{port}");
    let page = send(Method::GET, server.page(), &[HTML, ("host", &named)], "").await;
    assert_eq!(page.status, StatusCode::OK, "an allowed host name");
    let evil = format!("evil.test:{port}");
    let page = send(Method::GET, server.page(), &[HTML, ("host", &evil)], "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "any other name");

    // An allowed origin's page gets a preflight answer and may read the API, with credentials.
    let api = format!("{}/api/kernel/set_ui_element_value", server.origin());
    let preflight = send(
        Method::OPTIONS,
        &api,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,marimo-session-id",
            ),
        ],
        "",
    )
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT, "{preflight:?}");
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type,marimo-session-id")
    );
    let version = format!("{}/api/version", server.origin());
    let read = send(
        Method::GET,
        &version,
        &[("origin", "http://localhost:3000")],
        "",
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        read.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let foreign = send(
        Method::GET,
        &version,
        &[("origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);

    // Its WebSocket is accepted; a foreign one is not.
    let ws_url = format!("{}/ws?session_id=cli-allowed", server.origin()).replace("http", "ws");
    let mut ws = ws_connect(&ws_url, &[("origin", "https://app.example.com")])
        .await
        .expect("the allowed origin's WebSocket");
    ws_until(&mut ws, WS, |m| m["op"] == "kernel-ready").await;
    drop(ws);
    assert_eq!(
        ws_connect(&ws_url, &[("origin", "http://evil.example")])
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}
