//! `marimo-rs` with an identity provider, access rules, the audit log and `--config`, run as a
//! process against a real OpenID Provider (panva's oidc-provider, `tests/common/oidc.rs`) with
//! real marimo backends.
//!
//! Without the provider installed the tests that need it warn and pass, except under CI (`CI`
//! set), where they fail: `.ci/install-oidc-provider` installs it.

mod common;
#[allow(dead_code, unreachable_pub)]
#[path = "common/oidc.rs"]
mod oidc;

use std::path::Path;
use std::time::Duration;

use common::marimo::{is_notebook_page, kernel, until_output};
use common::process::{finish, marimo_rs, MarimoRs};
use common::{example_notebook, Site, HTML};
use http::StatusCode;

/// The client secret in a file of `dir`, with a newline as editors leave it.
fn secret_file(dir: &Path) -> String {
    let path = dir.join("client-secret");
    std::fs::write(&path, format!("{}\n", oidc::CLIENT_SECRET)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_provider_down_at_start_is_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path());
    let down = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", probe.local_addr().unwrap().port())
    };
    let notebook = example_notebook("identity.py");
    let (status, stdout, stderr) = finish(marimo_rs(&[
        "serve",
        "--app",
        &format!("/={}", notebook.display()),
        "--oidc-issuer",
        &down,
        "--oidc-client-id",
        oidc::CLIENT_ID,
        "--oidc-client-secret-file",
        &secret,
        "--port",
        "0",
        "--headless",
    ]))
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "", "no URL");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "error: sign-in with the identity provider is unavailable: the identity provider \
             at {down}/.well-known/openid-configuration is not reachable"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains(oidc::CLIENT_SECRET));
}

#[tokio::test]
async fn config_file_errors_name_the_file_the_line_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "port = 8080\nhost = \"127.0.0.1\"\n[oidc]\nissuer = \"https://id.example\"\nclient = \"x\"\n",
            "line 5: ",
            "unknown field `client`",
        ),
        ("port = \"eighty\"\n", "line 1: key `port`: ", "invalid type"),
        (
            "[[app]]\npath = \"/a\"\nnotebook = \"a.py\"\n[[app]]\npath = \"b\"\nnotebook = \"b.py\"\n",
            "line 5: key `app[1].path`: ",
            "must start with `/`",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\", \"proxy.local\"]\n",
            "line 1: key `trusted_proxies[1]`: ",
            "is not an IP address",
        ),
        (
            "[oidc]\nissuer = \"https://id.example\"\nclient_id = \"m\"\nclient_secret_file = \"s\"\nsession_lifetime = -5\n",
            "line 5: key `oidc.session_lifetime`: ",
            "not a positive number of seconds",
        ),
    ];
    for (text, at, what) in cases {
        let path = dir.path().join("marimo-rs.toml");
        std::fs::write(&path, text).unwrap();
        let (status, stdout, stderr) =
            finish(marimo_rs(&["serve", "--config", path.to_str().unwrap()])).await;
        assert_eq!(status.code(), Some(1), "{text}: {stderr}");
        assert_eq!(stdout, "");
        let expected = format!("error: {}: {at}", path.display());
        assert!(stderr.starts_with(&expected), "{text}:\n{stderr}");
        assert!(stderr.contains(what), "{text}:\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

/// Signs in at `server` as `login` through the provider; returns the session cookie.
async fn sign_in(server: &MarimoRs, issuer: &str, login: &str) -> String {
    let mut browser = oidc::Browser::default();
    let back = browser
        .sign_in_through(&server.url("/auth/oidc?next=%2F"), issuer, login)
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{back:?}");
    browser.cookie_named("marimo_rs_session_").unwrap()
}

#[tokio::test]
async fn serve_with_a_config_file_signs_in_applies_the_rules_and_writes_the_audit_log() {
    let Some(issuer) = oidc::shared_issuer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path());
    std::fs::copy(example_notebook("identity.py"), dir.path().join("who.py")).unwrap();
    std::fs::copy(example_notebook("intro.py"), dir.path().join("intro.py")).unwrap();
    // Relative paths are the file's; the whole server is for analysts (ada, not bob), the
    // intro notebook for admins only.
    let config = format!(
        r#"
audit_log = "audit.jsonl"

[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_file = "client-secret"
scopes = ["openid", "profile", "email", "groups"]

[access]
groups = ["analysts"]

[[app]]
path = "/"
notebook = "who.py"

[[app]]
path = "/intro"
notebook = "intro.py"
access = {{ groups = ["admins"] }}
"#,
        client_id = oidc::CLIENT_ID
    );
    let path = dir.path().join("marimo-rs.toml");
    std::fs::write(&path, config).unwrap();
    let server = MarimoRs::start(
        marimo_rs(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            // A flag wins over the file: this one narrows nothing, but the file's rule must
            // go (an email domain only ada has).
            "--allow-email-domain",
            "example.com",
            // The admin page, for the provider's `admins` group.
            "--admin-group",
            "admins",
            "--port",
            "0",
            "--headless",
        ]),
        None,
    )
    .await;
    assert!(server.token().is_none(), "no token: {}", server.printed);
    let anonymous = server.get("/", &[HTML]).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.header("location").unwrap().starts_with(issuer));

    let ada = sign_in(&server, issuer, "ada").await;
    let mut ws = kernel(
        &server.ws_url("/ws?session_id=cli-ada"),
        &[("cookie", &ada)],
    )
    .await;
    until_output(&mut ws, "Signed in as <strong>ada</strong>").await;
    drop(ws);
    let intro = server.get("/intro/", &[HTML, ("cookie", &ada)]).await;
    assert!(
        is_notebook_page(&intro) || intro.status == StatusCode::SERVICE_UNAVAILABLE,
        "ada is an admin: {}",
        intro.brief()
    );
    let admin = server.get("/_admin/state", &[("cookie", &ada)]).await;
    assert_eq!(
        admin.status,
        StatusCode::OK,
        "ada is in admins: {}",
        admin.brief()
    );
    assert!(admin.body.contains("\"backends\""), "{}", admin.body);
    // bob has no email: the server-wide rule (the flag's, not the file's) refuses him.
    let bob = sign_in(&server, issuer, "bob").await;
    let refused = server.get("/", &[HTML, ("cookie", &bob)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.brief());
    assert!(refused.body.contains("<b>bob</b>"), "{}", refused.body);
    let not_admin = server.get("/_admin/state", &[("cookie", &bob)]).await;
    assert_eq!(
        not_admin.status,
        StatusCode::FORBIDDEN,
        "{}",
        not_admin.brief()
    );

    let audit_path = dir.path().join("audit.jsonl");
    let text = common::eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || std::fs::read_to_string(&audit_path).unwrap_or_default(),
        |text| text.contains("\"session_closed\"") && text.contains("\"access_denied\""),
    )
    .await;
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    for (event, user) in [
        ("sign_in", "ada"),
        ("sign_in", "bob"),
        ("session_opened", "ada"),
        ("session_closed", "ada"),
        ("access_denied", "bob"),
    ] {
        assert!(
            events
                .iter()
                .any(|e| e["event"] == event && e["user"] == user),
            "no {event} of {user}:\n{text}"
        );
    }
    assert!(
        events.iter().all(|e| e["target"] == "marimo_rs::audit"),
        "{text}"
    );
    for secret in [
        oidc::CLIENT_SECRET,
        ada.split_once('=').unwrap().1,
        bob.split_once('=').unwrap().1,
    ] {
        assert!(!text.contains(secret), "{secret} in the audit log:\n{text}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the audit log is the owner's only");
    let (status, _, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn no_secret_is_taken_as_a_flag_value() {
    // There is no flag for the client secret itself; clap refuses one.
    let (status, _, stderr) = finish(marimo_rs(&[
        "serve",
        "--app",
        "/=x.py",
        "--oidc-client-secret",
        "s3cret",
    ]))
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unexpected argument '--oidc-client-secret'"),
        "{stderr}"
    );
    // Rules without a way to sign in are refused with the fix.
    let notebook = example_notebook("intro.py");
    let (status, _, stderr) = finish(marimo_rs(&[
        "run",
        notebook.to_str().unwrap(),
        "--allow-group",
        "g",
        "--port",
        "0",
        "--headless",
    ]))
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--oidc-issuer"), "{stderr}");
}
