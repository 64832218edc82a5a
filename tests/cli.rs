//! The `marimo-rs` command, end to end: the real binary, real marimo backends (the managed
//! virtualenv), real HTTP and WebSockets. Each server is started on `--port 0 --headless`
//! and found through the URL line it prints.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use base64::Engine as _;
use common::marimo::{
    kernel, kernel_ready, managed_python, page_until, server_token, until_output,
};
use common::process::{finish, marimo_rs, MarimoRs};
use common::{assert_sent_to_login, FORM, HTML, JSON};
use common::{
    descendants, eventually, example_notebook, send, signal, wait_gone, ws_connect, Site,
};
use http::{Method, StatusCode};
use marimo_rs::Token;
use tokio::process::Command;

/// `marimo-rs ARGS --port 0 --headless`, started.
async fn start(args: &[&str]) -> MarimoRs {
    MarimoRs::start(
        marimo_rs(&[args, &["--port", "0", "--headless"]].concat()),
        None,
    )
    .await
}

/// `marimo-rs run NOTEBOOK --no-token --port 0 --headless`, to start with [`MarimoRs::start`].
fn open_run(notebook: &Path) -> Command {
    let notebook = notebook.to_str().unwrap();
    marimo_rs(&["run", notebook, "--no-token", "--port", "0", "--headless"])
}

/// Runs `marimo-rs ARGS` to completion (it must not start a server).
async fn fail(args: &[&str]) -> (ExitStatus, String, String) {
    finish(marimo_rs(args)).await
}

/// SIGTERM: exit status 0, nothing more on stdout, every descendant gone, no panic.
async fn assert_clean_stop(server: MarimoRs) -> String {
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

/// SIGTERM: exit status 0, and the token is not in the log.
async fn assert_stops_without_logging(server: MarimoRs, token: &str) -> String {
    let (status, _, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(token), "the token is never logged");
    stderr
}

/// The kernel WebSocket of session `session` at `server`'s `path` (`/ws`, `/base/x/ws`).
fn ws_at(server: &MarimoRs, path: &str, session: &str) -> String {
    common::marimo::ws_url(&server.url(&format!("{path}?session_id={session}")))
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

/// `Basic base64(anyone:password)`.
fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{password}"))
    )
}

#[tokio::test]
async fn run_serves_page_and_websocket_and_sigterm_stops_everything() {
    let notebook = example_notebook("intro.py");
    let server = start(&["run", notebook.to_str().unwrap(), "--no-token"]).await;
    assert_eq!(server.token(), None, "{}", server.printed);
    assert!(server.printed.ends_with('/'), "{}", server.printed);

    let page = send(Method::GET, &server.printed, &[HTML], "").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("__MARIMO_MOUNT_CONFIG__"),
        "marimo's page"
    );
    assert!(page.body.contains(r#""mode": "read""#), "run mode");
    let mut ws = kernel(&ws_at(&server, "/ws", "cli-run"), &[]).await;
    until_output(&mut ws, "Hello from marimo_rs").await;
    drop(ws);

    let stderr = assert_clean_stop(server).await;
    assert!(stderr.contains("marimo-rs is listening"), "{stderr}");
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
        let mut command = marimo_rs(args);
        command
            .env("MARIMO_RS_CACHE_DIR", self.cache.path())
            .env("MARIMO_RS_PYTHON", &self.python);
        command
    }

    /// `marimo-rs ARGS` in this installation, started.
    async fn start(&self, args: &[&str]) -> MarimoRs {
        MarimoRs::start(self.command(args), None).await
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

/// `run NOTEBOOK AUTH --port 0 --headless`.
fn run_args<'a>(notebook: &'a Path, auth: &'a str) -> [&'a str; 6] {
    [
        "run",
        notebook.to_str().unwrap(),
        auth,
        "--port",
        "0",
        "--headless",
    ]
}

#[tokio::test]
async fn generated_tokens_are_stable_across_restarts_and_follow_the_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    let (a, code_a) = notebook_copy(dir.path(), "nb.py", "Hello");
    let (b, code_b) = notebook_copy(&dir.path().join("b"), "nb.py", "Goodbye");
    let secret = "a-server-secret";
    let installation = Installation::new(&managed_python().await);

    let first_args = run_args(&a, "--token");
    let changed_args = run_args(&b, "--auth");
    let mut keyed = installation.command(&first_args);
    keyed.env("MARIMO_RS_SECRET", secret);
    let (first, changed, keyed) = tokio::join!(
        installation.start(&first_args),
        installation.start(&changed_args),
        MarimoRs::start(keyed, None),
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
    let signed_in = send(Method::GET, &first.printed, &[HTML], "").await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    assert!(signed_in.header("set-cookie").is_some());
    assert_sent_to_login(&send(Method::GET, first.page(), &[HTML], "").await);

    assert_stops_without_logging(first, &first_token).await;

    let restarted = installation.start(&first_args).await;
    assert_eq!(
        restarted.token(),
        Some(first_token.as_str()),
        "same code, same token"
    );
    for server in [restarted, changed, keyed] {
        let token = server.token().unwrap().to_owned();
        assert_stops_without_logging(server, &token).await;
    }
}

#[tokio::test]
async fn generated_tokens_are_keyed_by_a_secret_of_the_installation() {
    let dir = tempfile::tempdir().unwrap();
    let (notebook, code) = notebook_copy(dir.path(), "nb.py", "Hello");
    let python = managed_python().await;
    let (one, two) = (Installation::new(&python), Installation::new(&python));
    let args = run_args(&notebook, "--token");

    // Three first starts of one installation at once, and one of another installation.
    let (a, b, c, other) = tokio::join!(
        one.start(&args),
        one.start(&args),
        one.start(&args),
        two.start(&args),
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
        let stderr = assert_stops_without_logging(server, &token).await;
        assert!(
            stderr.contains("keyed by the installation secret"),
            "which key is logged: {stderr}"
        );
    }

    // The same installation after a restart: the same token.
    let restarted = one.start(&args).await;
    assert_eq!(restarted.token(), Some(token.as_str()));
    let (status, _, stderr) = restarted.terminate().await;
    assert!(status.success(), "{stderr}");

    // With MARIMO_RS_SECRET no installation secret is made.
    let three = Installation::new(&python);
    let mut keyed = three.command(&args);
    keyed.env("MARIMO_RS_SECRET", "replica-secret");
    let keyed = MarimoRs::start(keyed, None).await;
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
    let mut command = marimo_rs(&[
        "run",
        notebook.to_str().unwrap(),
        &format!("--token={token}"),
        "--port",
        "0",
    ]);
    command.env("PATH", path);
    let server = MarimoRs::start(command, None).await;
    assert_eq!(
        server.token(),
        Some(token),
        "standard output has the token URL"
    );

    // Until the opener ran.
    let argv = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        async || std::fs::read_to_string(&recorded),
        Result::is_ok,
    )
    .await
    .unwrap();
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
    let cookie = first.cookie();
    let api = server.url("/api/version");
    let signed_in = send(Method::GET, &api, &[("cookie", &cookie)], "").await;
    assert_eq!(signed_in.status, StatusCode::OK, "{signed_in:?}");
    let again = send(Method::GET, link, &[HTML], "").await;
    assert!(again.header("set-cookie").is_none(), "{again:?}");
    assert_ne!(again.status, StatusCode::SEE_OTHER, "single use: {again:?}");

    let stderr = assert_stops_without_logging(server, token).await;
    assert!(
        stderr.contains("--token-password-file"),
        "--token=VALUE is visible in ps, and the log says so: {stderr}"
    );
}

#[tokio::test]
async fn token_password_file_dash_reads_standard_input() {
    let secret = "from-stdin-s3cret";
    let notebook = example_notebook("intro.py");
    let command = marimo_rs(&[
        "run",
        notebook.to_str().unwrap(),
        "--token-password-file",
        "-",
        "--port",
        "0",
        "--headless",
    ]);
    let server = MarimoRs::start(command, Some(&format!("{secret}\n"))).await;
    assert_eq!(
        server.token(),
        Some(secret),
        "the trailing newline is not part of it"
    );

    let api = server.url("/api/version");
    let with = send(Method::GET, &api, &[("authorization", &basic(secret))], "").await;
    assert_eq!(with.status, StatusCode::OK, "{with:?}");
    assert_eq!(with.body.trim_matches('"'), marimo_rs::MARIMO_VERSION);
    let without = send(Method::GET, &api, &[], "").await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let wrong = send(Method::GET, &api, &[("authorization", &basic("wrong"))], "").await;
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
    assert_eq!(server.printed, server.url("/base/"));

    for path in ["/base/", "/base/second/"] {
        let page = server.get(path, &[HTML]).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"), "{path}");
    }
    // A directory notebook starts on its first request: a "starting" page, then marimo's.
    let page = page_until(
        &server,
        "/base/more/extra/",
        Duration::from_secs(60),
        |page| {
            if page.status != StatusCode::OK {
                assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{page:?}");
            }
            page.status == StatusCode::OK
        },
    )
    .await;
    assert!(page.body.contains("__MARIMO_MOUNT_CONFIG__"));
    let outside = server.get("/second/", &[HTML]).await;
    assert_eq!(
        outside.status,
        StatusCode::NOT_FOUND,
        "nothing outside the base URL"
    );

    let mut ws = kernel(&ws_at(&server, "/base/second/ws", "cli-serve"), &[]).await;
    until_output(&mut ws, "Second from marimo_rs").await;
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
    let server_token = server_token(&page.body);
    let anonymous = send(Method::GET, server.page(), &[HTML], "").await;
    assert_eq!(
        anonymous.status,
        StatusCode::SEE_OTHER,
        "the editor is not open"
    );

    let ws_url = ws_at(&server, "/ws", &format!("cli-edit&access_token={token}"));
    let (mut ws, ready) = kernel_ready(&ws_url, &[]).await;
    let cell = ready["data"]["cell_ids"][0]
        .as_str()
        .expect("a cell")
        .to_owned();
    let headers = [
        auth,
        JSON,
        ("marimo-session-id", "cli-edit"),
        ("marimo-server-token", server_token.as_str()),
    ];
    let api = |path: &str| server.url(&format!("/api/kernel/{path}"));
    let code = "6 * 7";
    let run = serde_json::json!({ "cellIds": [&cell], "codes": [code] }).to_string();
    let ran = send(Method::POST, &api("run"), &headers, &run).await;
    assert_eq!(ran.status, StatusCode::OK, "{ran:?}");
    until_output(&mut ws, ">42<").await;
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
    let mut new = marimo_rs(&["new", "--no-token", "--port", "0", "--headless"]);
    new.current_dir(dir.path());
    let server = MarimoRs::start(new, None).await;
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
    let server = MarimoRs::start(run, None).await;
    let mut ws = kernel(&ws_at(&server, "/ws", "cli-env"), &[]).await;
    let output = until_output(&mut ws, "ENV: ").await;
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
        MarimoRs::start(run, None)
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
    let live = gateway().await;
    let [live_dir] = &folders()[..] else {
        panic!("one private folder per gateway: {:?}", folders())
    };
    let live_dir = live_dir.clone();
    let mut killed = gateway().await;
    let killed_dir = folders()
        .into_iter()
        .find(|dir| *dir != live_dir)
        .expect("the second gateway's folder");
    // Not a gateway's folder as this version makes them: never touched.
    let foreign = tmp.path().join("marimo-rs-abc123");
    std::fs::create_dir(&foreign).unwrap();
    signal(killed.pid(), nix::sys::signal::Signal::SIGKILL);
    killed.process.child.wait().await.unwrap();
    assert!(killed_dir.is_dir(), "kill -9 leaves the folder behind");

    let next = gateway().await;
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
    let notebook = notebook.to_str().unwrap();
    let (status, _, stderr) = fail(&["run", notebook, "--trusted-proxy", "nope"]).await;
    assert_eq!(status.code(), Some(2), "a clap usage error");
    assert!(stderr.contains("not an IP address"));

    let server = start(&[
        "run",
        notebook,
        "--token=proxy-s3cret",
        "--trusted-proxy",
        "127.0.0.1",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--secure-cookie",
    ])
    .await;
    let login = server
        .send(
            Method::POST,
            "/auth/login",
            &[FORM],
            "password=proxy-s3cret",
        )
        .await;
    assert_eq!(login.status, StatusCode::FOUND, "{login:?}");
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");

    // The login limit keys on the client the trusted proxy names, not on the proxy itself.
    let api = server.url("/api/version");
    let wrong = basic("wrong");
    let attempt = async |client: &str| {
        send(
            Method::GET,
            &api,
            &[("authorization", &wrong), ("x-forwarded-for", client)],
            "",
        )
        .await
        .status
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
    let named = format!("marimo.test:{}", server.port());
    let page = send(Method::GET, server.page(), &[HTML, ("host", &named)], "").await;
    assert_eq!(page.status, StatusCode::OK, "an allowed host name");
    let evil = format!("evil.test:{}", server.port());
    let page = send(Method::GET, server.page(), &[HTML, ("host", &evil)], "").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "any other name");

    // An allowed origin's page gets a preflight answer and may read the API, with credentials.
    let api = server.url("/api/kernel/set_ui_element_value");
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
    for (origin, allowed) in [
        ("http://localhost:3000", Some("http://localhost:3000")),
        ("http://evil.example", None),
    ] {
        let read = server.get("/api/version", &[("origin", origin)]).await;
        assert_eq!(read.status, StatusCode::OK, "{origin}");
        assert_eq!(read.header("access-control-allow-origin"), allowed);
    }

    // Its WebSocket is accepted; a foreign one is not.
    let ws_url = ws_at(&server, "/ws", "cli-allowed");
    let ws = kernel(&ws_url, &[("origin", "https://app.example.com")]).await;
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
