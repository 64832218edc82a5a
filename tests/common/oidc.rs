//! A real OpenID Provider for the tests: panva's `oidc-provider` (OpenID Certified), run by
//! `tests/oidc/provider.mjs` in a Node process on a loopback port, installed by
//! `.ci/install-oidc-provider`; and a minimal browser (a cookie jar over hyper) that signs in
//! through the provider's own login and consent pages.
//!
//! Self-contained on purpose: the library's unit tests include this file too (with `#[path]`),
//! where `super` is not `tests/common`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The client every provider of these tests registers (see [`Provider::config`]).
pub const CLIENT_ID: &str = "marimo";
/// Its secret.
pub const CLIENT_SECRET: &str = "s3cret-s3cret-s3cret";
/// Its redirect URI. Nothing listens there: the browser stops at the redirect to it.
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/auth/callback";
/// Its post-logout redirect URI.
pub const POST_LOGOUT_REDIRECT_URI: &str = "http://127.0.0.1:9/";

/// How long the provider may take to install and start.
const START: Duration = Duration::from_secs(120);

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether the provider is installed, running `.ci/install-oidc-provider` when it is not
/// (serialised across test processes by a file lock; the script is idempotent). Under CI
/// (`CI` set) a provider that cannot be installed fails the test; elsewhere the caller warns
/// and skips.
pub fn available() -> bool {
    let installed = || {
        provider_dir()
            .join("node_modules/oidc-provider/package.json")
            .is_file()
    };
    if !installed() {
        let lock_path = std::env::temp_dir().join("marimo-rs-test-install.lock");
        let lock = std::fs::File::create(&lock_path).and_then(|file| file.lock().map(|()| file));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/install-oidc-provider");
        let _ = std::process::Command::new("bash").arg(script).status();
        drop(lock);
    }
    if installed() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the test OpenID provider is missing and could not be installed: run \
         .ci/install-oidc-provider (CI must not skip the OpenID Connect tests)"
    );
    eprintln!(
        "warning: the test OpenID provider is not installed (run .ci/install-oidc-provider); \
         skipping"
    );
    false
}

/// The redirect URI a gateway under test registers: `application_type: native` lets a
/// loopback redirect URI match on any port (RFC 8252 §7.3, as oidc-provider implements it),
/// so one provider serves gateways on random ports.
pub const GATEWAY_REDIRECT_URI: &str = "http://127.0.0.1/auth/callback";
/// The post-logout redirect URI a gateway under test registers (any port, as above).
pub const GATEWAY_SIGNED_OUT_URI: &str = "http://127.0.0.1/auth/signed-out";

/// A configuration for gateways under test: the client of [`config`] as a native client with
/// the gateway's callback and signed-out page on any loopback port, and the same users.
pub fn gateway_config() -> serde_json::Value {
    let mut config = config();
    config["clients"][0]["application_type"] = "native".into();
    config["clients"][0]["redirect_uris"] = serde_json::json!([GATEWAY_REDIRECT_URI]);
    config["clients"][0]["post_logout_redirect_uris"] = serde_json::json!([GATEWAY_SIGNED_OUT_URI]);
    config
}

/// The issuer of one provider with [`gateway_config`] shared by every test of a test binary
/// (started on first use, it lives as long as the process: it exits when its standard input,
/// held by this process, closes). `None` when the provider is not installed (outside CI).
pub fn shared_issuer() -> Option<&'static str> {
    static ISSUER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ISSUER
        .get_or_init(|| {
            if !available() {
                return None;
            }
            let (sender, receiver) = std::sync::mpsc::channel();
            // Its own runtime and thread, so that the provider (and the task reading its
            // output) outlive the test that started it.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let provider = Provider::start(&gateway_config()).await;
                    sender.send(provider.issuer.clone()).unwrap();
                    let _keep = provider;
                    std::future::pending::<()>().await;
                });
            });
            Some(receiver.recv().expect("the shared provider starts"))
        })
        .as_deref()
}

/// Front-proxy assertions signed by `tests/oidc/assertion.mjs` (panva's `jose`): a fresh ES256
/// key set, and one JWT per claims object. Returns `(jwks, tokens)`.
pub fn sign_assertions(claims: &[serde_json::Value]) -> (serde_json::Value, Vec<String>) {
    let input = serde_json::json!({ "claims": claims });
    let output = std::process::Command::new("node")
        .arg(provider_dir().join("assertion.mjs"))
        .arg(input.to_string())
        .current_dir(provider_dir())
        .output()
        .expect("cannot run node");
    assert!(
        output.status.success(),
        "assertion.mjs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let tokens = signed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|token| token.as_str().unwrap().to_owned())
        .collect();
    (signed["jwks"].clone(), tokens)
}

/// The standard test configuration: the client above, and users `ada` (analysts, admins) and
/// `bob` (no groups, no email).
pub fn config() -> serde_json::Value {
    serde_json::json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [POST_LOGOUT_REDIRECT_URI],
        }],
        "users": {
            "ada": {"email": "ada@example.com", "name": "Ada Lovelace", "groups": ["analysts", "admins"]},
            "bob": {"name": "Bob"},
        },
    })
}

/// A running provider; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Provider {
    /// `http://127.0.0.1:PORT`, exactly as the discovery document states it.
    pub issuer: String,
    /// The port it listens on (kept across [`Provider::restart_with_key`]).
    pub port: u16,
    child: Option<tokio::process::Child>,
    dir: tempfile::TempDir,
}

impl Provider {
    /// Starts a provider with `config` on a free port, its key named `key-1`.
    pub async fn start(config: &serde_json::Value) -> Self {
        Self::start_on(config, 0).await
    }

    /// Starts a provider with `config` on `port` (0: a free one), its key named `key-1`.
    pub async fn start_on(config: &serde_json::Value, port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let mut provider = Self {
            issuer: String::new(),
            port,
            child: None,
            dir,
        };
        provider.spawn("key-1").await;
        provider
    }

    async fn spawn(&mut self, key_id: &str) {
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .current_dir(provider_dir())
            .env("CONFIG", self.dir.path().join("config.json"))
            .env("PORT", self.port.to_string())
            .env("KEY_ID", key_id)
            // The provider exits when this pipe closes, so even a killed test leaves none.
            .env("EXIT_WITH_STDIN", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run node (install Node.js)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(START, lines.next_line())
            .await
            .ok()
            .and_then(|line| line.ok().flatten());
        let Some(issuer) = line.as_deref().and_then(|l| l.strip_prefix("issuer=")) else {
            panic!(
                "the OpenID provider did not start; its log:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
        };
        // The provider logs to stdout now and then (oidc-provider's notices): keep reading,
        // or its writes fail with EPIPE and it dies.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.issuer = issuer.to_owned();
        self.port = issuer.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("provider.log")
    }

    /// The provider's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Stops the provider (SIGTERM, SIGKILL after 5 s) and waits for it to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Restarts the provider on the same port with a new signing key named `key_id`: to a
    /// relying party, the provider rotated its keys (and forgot its sessions and codes).
    pub async fn restart_with_key(&mut self, key_id: &str) {
        self.stop().await;
        self.spawn(key_id).await;
    }

    /// Makes the next ID token the token endpoint issues carry `claims` instead (re-signed
    /// with the provider's own key): for wrong `aud`, expired, wrong `nonce` cases.
    pub async fn override_next_id_token(&self, claims: serde_json::Value) {
        let request = Request::post(format!("{}/__test/next-id-token", self.issuer))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(claims.to_string())))
            .unwrap();
        let response = http_client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }

    /// The provider's public signing keys (its JWKS document).
    pub async fn jwks(&self) -> serde_json::Value {
        let mut browser = Browser::default();
        let page = browser.get(&format!("{}/jwks", self.issuer)).await;
        serde_json::from_str(&page.body).unwrap()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(tokio::process::Child::id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A page as the browser got it.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    /// The `Location` header, resolved against the page's URL.
    pub location: Option<String>,
    pub body: String,
}

/// A browser reduced to what signing in needs: a cookie jar (by name and path) and forms.
#[derive(Default)]
pub struct Browser {
    /// (path, name) → value.
    cookies: BTreeMap<(String, String), String>,
}

impl Browser {
    /// `GET url`, redirects not followed.
    pub async fn get(&mut self, url: &str) -> Page {
        self.request(Method::GET, url, None).await
    }

    /// The `Cookie` header this browser sends to `path`.
    pub fn cookie_header(&self, path: &str) -> String {
        self.cookies
            .iter()
            .filter(|((cookie_path, _), _)| path.starts_with(cookie_path.as_str()))
            .map(|((_, name), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// `name=value` of the cookie whose name starts with `prefix`, if the browser holds one.
    pub fn cookie_named(&self, prefix: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|((_, name), _)| name.starts_with(prefix))
            .map(|((_, name), value)| format!("{name}={value}"))
    }

    /// `POST url` with a form body, redirects not followed.
    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.request(Method::POST, url, Some(body)).await
    }

    async fn request(&mut self, method: Method, url: &str, form: Option<String>) -> Page {
        let uri: http::Uri = url.parse().unwrap();
        let cookie = self.cookie_header(uri.path());
        let mut request = Request::builder().method(method).uri(url);
        if !cookie.is_empty() {
            request = request.header(header::COOKIE, cookie);
        }
        if form.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .unwrap();
        let response =
            tokio::time::timeout(Duration::from_secs(30), http_client().request(request))
                .await
                .expect("the provider did not answer")
                .unwrap_or_else(|error| panic!("request to {url} failed: {error:?}"));
        for set_cookie in response.headers().get_all(header::SET_COOKIE) {
            self.store(set_cookie.to_str().unwrap());
        }
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|value| resolve(&uri, value.to_str().unwrap()));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Page {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn store(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            return;
        };
        let mut path = "/".to_owned();
        let mut expired = false;
        for attribute in parts {
            let (key, val) = attribute
                .trim()
                .split_once('=')
                .unwrap_or((attribute.trim(), ""));
            if key.eq_ignore_ascii_case("path") {
                path = val.to_owned();
            } else if key.eq_ignore_ascii_case("max-age") {
                expired = val.starts_with('-') || val == "0";
            } else if key.eq_ignore_ascii_case("expires") && val.contains("1970") {
                expired = true;
            }
        }
        let key = (path, name.trim().to_owned());
        if expired {
            self.cookies.remove(&key);
        } else {
            self.cookies.insert(key, value.trim().to_owned());
        }
    }

    /// Signs in at a gateway as `login`: `GET start` (the gateway's `/auth/oidc?next=…`,
    /// which must send the browser to `issuer`), the provider's pages, then the callback,
    /// once. Returns the gateway's answer to the callback (the session cookie is then in the
    /// jar: [`cookie_named`](Self::cookie_named)).
    pub async fn sign_in_through(&mut self, start: &str, issuer: &str, login: &str) -> Page {
        let to_provider = self.get(start).await;
        assert_eq!(to_provider.status, StatusCode::SEE_OTHER, "{to_provider:?}");
        let location = to_provider.location.expect("a redirect to the provider");
        assert!(location.starts_with(issuer), "{location}");
        let callback = self.sign_in_at_provider(issuer, &location, login).await;
        self.get(&callback).await
    }

    /// Follows `authorization_url` through the provider's login (as `login`, any password)
    /// and consent pages until the provider redirects away from itself; returns that URL (the
    /// client's callback with `code` and `state`), not followed.
    pub async fn sign_in_at_provider(
        &mut self,
        issuer: &str,
        authorization_url: &str,
        login: &str,
    ) -> String {
        let mut url = authorization_url.to_owned();
        for _ in 0..12 {
            let page = self.get(&url).await;
            let page = if page.status == StatusCode::OK {
                let (action, prompt) = form_of(&page.body)
                    .unwrap_or_else(|| panic!("no form on the provider's page:\n{}", page.body));
                match prompt.as_str() {
                    "login" => {
                        let form = [("prompt", "login"), ("login", login), ("password", "any")];
                        self.post_form(&action, &form).await
                    }
                    "consent" => self.post_form(&action, &[("prompt", "consent")]).await,
                    other => panic!("unexpected prompt {other:?} on the provider's page"),
                }
            } else {
                page
            };
            let location = page.location.unwrap_or_else(|| {
                panic!(
                    "the provider answered {} without a redirect:\n{}",
                    page.status, page.body
                )
            });
            if !location.starts_with(issuer) {
                return location;
            }
            url = location;
        }
        panic!("the sign-in at the provider did not end");
    }
}

/// The `action` and hidden `prompt` of the (single) form on a provider page.
fn form_of(page: &str) -> Option<(String, String)> {
    let action = attribute_after(page, "<form", "action")?;
    let prompt_at = page.find("name=\"prompt\"")?;
    let prompt = attribute_after(&page[prompt_at..], "name=\"prompt\"", "value")?;
    Some((action.replace("&amp;", "&"), prompt))
}

fn attribute_after(text: &str, marker: &str, name: &str) -> Option<String> {
    let start = text.find(marker)?;
    let rest = &text[start..];
    let at = rest.find(&format!("{name}=\""))? + name.len() + 2;
    let end = rest[at..].find('"')?;
    Some(rest[at..at + end].to_owned())
}

/// A `Location` value made absolute against the URL it came from.
fn resolve(base: &http::Uri, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!(
            "{}://{}{}",
            base.scheme_str().unwrap(),
            base.authority().unwrap(),
            location
        )
    }
}

/// The query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}
