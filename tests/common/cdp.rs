//! A small Chrome DevTools Protocol driver for end-to-end browser tests.
//!
//! Written directly over one WebSocket (tokio-tungstenite + serde_json) to the browser endpoint;
//! every page is a target attached with `flatten: true`, so its commands and events travel on the
//! same socket tagged with a `sessionId`. One reader task routes responses by `id` to the waiting
//! caller and broadcasts events.
//!
//! ```ignore
//! let browser = Browser::launch().await?;
//! let page = browser.new_page().await?;
//! page.goto("http://127.0.0.1:8080/").await?;
//! page.wait_for_text("Slider value is 3", Duration::from_secs(30)).await?;
//! page.focus_deep("[role=slider]").await?;
//! page.press_key("ArrowRight").await?;
//! page.screenshot("target/artifacts/shot.png").await?;
//! ```
//!
//! Every call and every wait has a timeout: nothing here hangs forever.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one protocol command may take before it fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Browser::launch` waits for Chromium to announce its DevTools port.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time `goto` waits for the load event.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of the `wait_*` helpers.
const POLL: Duration = Duration::from_millis(100);

/// What can go wrong while driving the browser.
#[derive(Debug)]
pub enum CdpError {
    /// No Chromium executable was found (see [`Browser::executable`]).
    NoBrowser,
    /// Chromium did not start or exited early; carries the tail of its stderr.
    Launch(String),
    Io(std::io::Error),
    WebSocket(String),
    /// The browser answered a command with an error.
    Protocol {
        method: String,
        message: String,
    },
    /// JavaScript threw (or a helper reported a failure, e.g. selector not found).
    Js(String),
    /// A command or a wait ran out of time.
    Timeout(String),
    /// The connection to the browser is gone.
    Closed,
}

impl fmt::Display for CdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdpError::NoBrowser => write!(
                f,
                "no Chromium found (set CHROMIUM or run .ci/install-chromium as root)"
            ),
            CdpError::Launch(m) => write!(f, "launching Chromium failed: {m}"),
            CdpError::Io(e) => write!(f, "I/O error: {e}"),
            CdpError::WebSocket(m) => write!(f, "DevTools WebSocket error: {m}"),
            CdpError::Protocol { method, message } => write!(f, "{method} failed: {message}"),
            CdpError::Js(m) => write!(f, "JavaScript error: {m}"),
            CdpError::Timeout(m) => write!(f, "timed out: {m}"),
            CdpError::Closed => write!(f, "the DevTools connection is closed"),
        }
    }
}

impl std::error::Error for CdpError {}

impl From<std::io::Error> for CdpError {
    fn from(e: std::io::Error) -> Self {
        CdpError::Io(e)
    }
}

/// A protocol event: `method`, `params` and the session it belongs to (None: the browser).
#[derive(Clone, Debug)]
pub struct Event {
    pub session_id: Option<String>,
    pub method: String,
    pub params: Value,
}

type Pending = Mutex<HashMap<u64, oneshot::Sender<Result<Value, CdpError>>>>;

/// The shared WebSocket connection: a writer channel, the table of calls awaiting an answer and
/// the event broadcast.
struct Conn {
    next_id: AtomicU64,
    pending: Arc<Pending>,
    out: mpsc::UnboundedSender<Message>,
    events: broadcast::Sender<Event>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Conn {
    async fn connect(url: &str) -> Result<Conn, CdpError> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| CdpError::WebSocket(format!("connecting to {url}: {e}")))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events, _) = broadcast::channel(1024);
        let pending: Arc<Pending> = Arc::default();

        let writer = tokio::spawn(async move {
            while let Some(msg) = out_rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reader = {
            let pending = pending.clone();
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        let Some(tx) = pending.lock().unwrap().remove(&id) else {
                            continue;
                        };
                        let res = match v.get("error") {
                            Some(err) => Err(CdpError::Protocol {
                                method: String::new(), // filled in by `call`
                                message: err
                                    .get("message")
                                    .and_then(Value::as_str)
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| err.to_string()),
                            }),
                            None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                        };
                        let _ = tx.send(res);
                    } else if let Some(method) = v.get("method").and_then(Value::as_str) {
                        // No receiver is fine: nobody is waiting for events right now.
                        let _ = events.send(Event {
                            session_id: v.get("sessionId").and_then(Value::as_str).map(Into::into),
                            method: method.to_owned(),
                            params: v.get("params").cloned().unwrap_or(Value::Null),
                        });
                    }
                }
                // Connection gone: fail every call still waiting (dropping the senders).
                pending.lock().unwrap().clear();
            })
        };
        Ok(Conn {
            next_id: AtomicU64::new(1),
            pending,
            out,
            events,
            tasks: vec![writer, reader],
        })
    }

    /// Sends one command (to the browser, or to a page with `session`) and waits for its answer.
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, CdpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        if self.out.send(Message::text(msg.to_string())).is_err() {
            self.pending.lock().unwrap().remove(&id);
            return Err(CdpError::Closed);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(CdpError::Protocol { message, .. }))) => Err(CdpError::Protocol {
                method: method.to_owned(),
                message,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(CdpError::Closed),
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(CdpError::Timeout(format!(
                    "{method} got no answer within {CALL_TIMEOUT:?}"
                )))
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A headless Chromium process with a fresh profile. Dropping it kills the process (its whole
/// process group, so renderers go too) and removes the profile.
pub struct Browser {
    conn: Arc<Conn>,
    child: tokio::process::Child,
    pid: u32,
    // Declared last: removed after the process is killed.
    dir: tempfile::TempDir,
}

impl Browser {
    /// The Chromium executable to use: `$CHROMIUM`, else the usual Debian/Google paths.
    pub fn executable() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    }

    /// Whether Chromium is there, installing it first if this process may (`cargo test` sets
    /// up what it needs, as `.ci/run` does: Debian's chromium, as root). `false` means skip,
    /// with a warning, which only happens outside CI: under CI (`CI` set) a missing Chromium
    /// fails the test.
    pub fn available() -> bool {
        if Self::executable().is_none() {
            super::run_install_script("install-chromium");
        }
        if Self::executable().is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "Chromium is missing: run .ci/install-chromium (CI must not skip browser tests)"
            );
            eprintln!(
                "warning: Chromium not found; skipping the browser test (run .ci/install-chromium)"
            );
            return false;
        }
        true
    }

    /// Starts headless Chromium and connects to its DevTools endpoint.
    pub async fn launch() -> Result<Browser, CdpError> {
        let exe = Self::executable().ok_or(CdpError::NoBrowser)?;
        let dir = tempfile::Builder::new().prefix("cdp-chromium-").tempdir()?;
        let profile = dir.path().join("profile");
        let log_path = dir.path().join("chromium.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage", // containers often have a tiny /dev/shm
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: on drop we kill the group, renderers and zygotes included.
        .process_group(0)
        .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| CdpError::Launch(format!("spawning {}: {e}", exe.display())))?;
        let pid = child.id().unwrap_or(0);
        let log_tail = || {
            let s = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = s.lines().rev().take(15).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        };

        // Chromium writes "<port>\n<browser ws path>\n" once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let started = Instant::now();
        let url = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                let mut lines = s.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    if !port.is_empty() && path.starts_with('/') {
                        break format!("ws://127.0.0.1:{port}{path}");
                    }
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CdpError::Launch(format!(
                    "{} exited with {status} before opening DevTools:\n{}",
                    exe.display(),
                    log_tail()
                )));
            }
            if started.elapsed() > LAUNCH_TIMEOUT {
                kill_group(pid);
                return Err(CdpError::Launch(format!(
                    "no {} after {LAUNCH_TIMEOUT:?}:\n{}",
                    port_file.display(),
                    log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let conn = match Conn::connect(&url).await {
            Ok(c) => c,
            Err(e) => {
                kill_group(pid);
                return Err(e);
            }
        };
        Ok(Browser {
            conn: Arc::new(conn),
            child,
            pid,
            dir,
        })
    }

    /// The process id of the browser (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The browser's user-data-dir (profile), removed on drop.
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// Sends a browser-level command.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.conn.call(None, method, params).await
    }

    /// Opens a new tab with a 1280x900 viewport and attaches to it.
    pub async fn new_page(&self) -> Result<Page, CdpError> {
        let target = self
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = str_field(&target, "targetId")?;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let page = Page {
            conn: self.conn.clone(),
            session_id: str_field(&attached, "sessionId")?,
            target_id,
        };
        page.call("Page.enable", json!({})).await?;
        // A fixed 1280x900 viewport (the window's own viewport is shorter by its "chrome").
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        // Behave as if the tab had OS focus (focus/blur events, document.hasFocus()).
        page.call(
            "Emulation.setFocusEmulationEnabled",
            json!({ "enabled": true }),
        )
        .await?;
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.pid);
        // Reap the browser briefly so it no longer writes into the profile we are about to remove.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
    }
}

/// SIGKILLs the process group led by `pid` (our own child: it was started with `process_group(0)`).
fn kill_group(pid: u32) {
    if pid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn str_field(v: &Value, key: &str) -> Result<String, CdpError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CdpError::Js(format!("no {key:?} in {v}")))
}

/// JavaScript helpers injected in front of the expressions that need them.
///
/// `__deepQuery(sel)`: the first element matching `sel` in the document or any open shadow root,
/// searched recursively. `__deepText()`: the rendered text of the page including open shadow
/// roots (innerText of the body and of every shadow root's children), whitespace collapsed.
const JS_HELPERS: &str = r#"
const __roots = () => {
  const roots = [document];
  for (let i = 0; i < roots.length; i++) {
    for (const el of roots[i].querySelectorAll('*')) {
      if (el.shadowRoot) roots.push(el.shadowRoot);
    }
  }
  return roots;
};
const __deepQuery = (sel) => {
  for (const root of __roots()) {
    const el = root.querySelector(sel);
    if (el) return el;
  }
  return null;
};
const __deepText = () => {
  const parts = [];
  for (const root of __roots()) {
    if (root === document) { parts.push(document.body ? document.body.innerText : ''); continue; }
    for (const child of root.children) {
      if (['STYLE', 'SCRIPT', 'LINK', 'TEMPLATE'].includes(child.tagName)) continue;
      parts.push(child.innerText !== undefined ? child.innerText : child.textContent);
    }
  }
  return parts.join('\n').replace(/\s+/g, ' ');
};
"#;

/// Key name → (code, windowsVirtualKeyCode, text) for `Input.dispatchKeyEvent`.
fn key_info(key: &str) -> Option<(&'static str, i64, Option<&'static str>)> {
    Some(match key {
        "Enter" => ("Enter", 13, Some("\r")),
        "Tab" => ("Tab", 9, None),
        "Escape" => ("Escape", 27, None),
        "Backspace" => ("Backspace", 8, None),
        "Delete" => ("Delete", 46, None),
        " " | "Space" => ("Space", 32, Some(" ")),
        "ArrowLeft" => ("ArrowLeft", 37, None),
        "ArrowUp" => ("ArrowUp", 38, None),
        "ArrowRight" => ("ArrowRight", 39, None),
        "ArrowDown" => ("ArrowDown", 40, None),
        "Home" => ("Home", 36, None),
        "End" => ("End", 35, None),
        "PageUp" => ("PageUp", 33, None),
        "PageDown" => ("PageDown", 34, None),
        _ => return None,
    })
}

/// One browser tab, attached through a flattened session.
pub struct Page {
    conn: Arc<Conn>,
    session_id: String,
    target_id: String,
}

impl Page {
    /// Sends a command to this page's session.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, CdpError> {
        self.conn.call(Some(&self.session_id), method, params).await
    }

    /// Subscribes to the events of this connection (filter on `session_id` yourself).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.conn.events.subscribe()
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Waits for the next event `method` of this page, up to `timeout`.
    pub async fn wait_for_event(
        &self,
        rx: &mut broadcast::Receiver<Event>,
        method: &str,
        timeout: Duration,
    ) -> Result<Event, CdpError> {
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(ev)
                        if ev.method == method
                            && ev.session_id.as_deref() == Some(&self.session_id) =>
                    {
                        return Ok(ev)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Err(CdpError::Closed),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| CdpError::Timeout(format!("no {method} within {timeout:?}")))?
    }

    /// Navigates and waits for the load event (redirects included), up to [`LOAD_TIMEOUT`].
    pub async fn goto(&self, url: &str) -> Result<(), CdpError> {
        let mut rx = self.events(); // subscribe first: the event may come before `navigate` returns
        let nav = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            return Err(CdpError::Protocol {
                method: "Page.navigate".into(),
                message: format!("{url}: {err}"),
            });
        }
        self.wait_for_event(&mut rx, "Page.loadEventFired", LOAD_TIMEOUT)
            .await
            .map_err(|e| match e {
                CdpError::Timeout(m) => CdpError::Timeout(format!("loading {url}: {m}")),
                e => e,
            })?;
        Ok(())
    }

    /// Evaluates `js` in the page (promises awaited) and returns its JSON value (`null` for
    /// `undefined`). A thrown exception is a [`CdpError::Js`].
    pub async fn eval(&self, js: &str) -> Result<Value, CdpError> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let msg = ex
                .pointer("/exception/description")
                .or_else(|| ex.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("exception");
            return Err(CdpError::Js(msg.to_owned()));
        }
        Ok(r.pointer("/result/value").cloned().unwrap_or(Value::Null))
    }

    /// Evaluates `js` with the helpers `__deepQuery(sel)` and `__deepText()` in scope.
    async fn eval_with_helpers(&self, js: &str) -> Result<Value, CdpError> {
        self.eval(&format!("(() => {{ {JS_HELPERS}\n return ({js}); }})()"))
            .await
    }

    /// The rendered text of the page, including open shadow roots, whitespace collapsed.
    pub async fn text(&self) -> Result<String, CdpError> {
        Ok(self
            .eval_with_helpers("__deepText()")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Polls the JS expression `condition` until it is truthy. Evaluation errors (e.g. while the
    /// page navigates) count as "not yet"; the last one is reported on timeout.
    pub async fn wait_for(&self, condition: &str, timeout: Duration) -> Result<Value, CdpError> {
        let start = Instant::now();
        let mut last;
        loop {
            // Bound each evaluation by the time left, too: a busy page must not stretch the wait.
            let left = timeout.saturating_sub(start.elapsed()).max(POLL);
            match tokio::time::timeout(left, self.eval_with_helpers(condition)).await {
                Ok(Ok(v)) if truthy(&v) => return Ok(v),
                Ok(Ok(v)) => last = format!("value {v}"),
                Ok(Err(CdpError::Closed)) => return Err(CdpError::Closed),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "evaluation did not answer".to_owned(),
            }
            if start.elapsed() >= timeout {
                return Err(CdpError::Timeout(format!(
                    "`{condition}` not true after {timeout:?} (last: {last})"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until `text` is part of the page's rendered text, shadow roots included
    /// (whitespace-insensitive). On timeout the error shows the end of the text it saw.
    pub async fn wait_for_text(&self, text: &str, timeout: Duration) -> Result<(), CdpError> {
        let needle = serde_json::to_string(&collapse_ws(text)).unwrap();
        match self
            .wait_for(&format!("__deepText().includes({needle})"), timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(CdpError::Timeout(_)) => {
                let seen = self.text().await.unwrap_or_else(|e| format!("<{e}>"));
                let tail: String = {
                    let chars: Vec<char> = seen.chars().collect();
                    chars[chars.len().saturating_sub(600)..].iter().collect()
                };
                Err(CdpError::Timeout(format!(
                    "text {text:?} not on the page after {timeout:?}; page text ends with: {tail:?}"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Focuses the first element matching `selector` (searched through shadow roots too) and
    /// types `text` into it with `Input.insertText` (fires `input` events like real typing).
    pub async fn type_into(&self, selector: &str, text: &str) -> Result<(), CdpError> {
        self.focus_deep(selector).await?;
        self.call("Input.insertText", json!({ "text": text }))
            .await?;
        Ok(())
    }

    /// Presses and releases one key (`"Enter"`, `"ArrowRight"`, `"Tab"`, ... or a single
    /// printable character) with real `Input.dispatchKeyEvent` events on the focused element.
    pub async fn press_key(&self, key: &str) -> Result<(), CdpError> {
        let (code, vk, text): (String, i64, Option<String>) = match key_info(key) {
            Some((code, vk, text)) => (code.into(), vk, text.map(Into::into)),
            None => {
                let mut chars = key.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => {
                        let upper = c.to_ascii_uppercase();
                        let code = if c.is_ascii_alphabetic() {
                            format!("Key{upper}")
                        } else if c.is_ascii_digit() {
                            format!("Digit{c}")
                        } else {
                            String::new()
                        };
                        (code, upper as i64, Some(c.to_string()))
                    }
                    _ => return Err(CdpError::Js(format!("unknown key {key:?}"))),
                }
            }
        };
        let key = if key == "Space" { " " } else { key };
        let mut down = json!({
            // "keyDown" with text also produces the keypress/character; "rawKeyDown" without.
            "type": if text.is_some() { "keyDown" } else { "rawKeyDown" },
            "key": key,
            "code": code,
            "windowsVirtualKeyCode": vk,
            "nativeVirtualKeyCode": vk,
        });
        if let Some(t) = &text {
            down["text"] = json!(t);
            down["unmodifiedText"] = json!(t);
        }
        self.call("Input.dispatchKeyEvent", down).await?;
        self.call(
            "Input.dispatchKeyEvent",
            json!({
                "type": "keyUp",
                "key": key,
                "code": code,
                "windowsVirtualKeyCode": vk,
                "nativeVirtualKeyCode": vk,
            }),
        )
        .await?;
        Ok(())
    }

    /// Finds the first element matching `selector` in the document or (recursively) any open
    /// shadow root, scrolls it into view and focuses it. Errors if there is none or it does not
    /// take focus.
    pub async fn focus_deep(&self, selector: &str) -> Result<(), CdpError> {
        let sel = serde_json::to_string(selector).unwrap();
        let js = format!(
            r#"(() => {{
                const el = __deepQuery({sel});
                if (!el) return 'not found';
                el.scrollIntoView({{ block: 'center', inline: 'center' }});
                el.focus();
                let active = document.activeElement;
                while (active && active.shadowRoot && active.shadowRoot.activeElement)
                    active = active.shadowRoot.activeElement;
                return active === el ? 'ok' : 'not focusable (focus is on ' +
                    (active ? active.tagName : 'nothing') + ')';
            }})()"#
        );
        match self.eval_with_helpers(&js).await? {
            Value::String(s) if s == "ok" => Ok(()),
            other => Err(CdpError::Js(format!("focus_deep({selector}): {other}"))),
        }
    }

    /// Evaluates `js` as a function body applied to the element found by `__deepQuery(selector)`
    /// (bound to `el`), e.g. `page.on_element("[role=slider]", "el.getAttribute('aria-valuenow')")`.
    pub async fn on_element(&self, selector: &str, js: &str) -> Result<Value, CdpError> {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval_with_helpers(&format!(
            "(() => {{ const el = __deepQuery({sel}); \
             if (!el) throw new Error('no element matches ' + {sel}); return ({js}); }})()"
        ))
        .await
    }

    /// Captures the viewport as PNG and writes it to `path` (parent directories created).
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<(), CdpError> {
        let path = path.as_ref();
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = r.get("data").and_then(Value::as_str).unwrap_or_default();
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| CdpError::Js(format!("screenshot data is not base64: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Closes the tab.
    pub async fn close(self) -> Result<(), CdpError> {
        self.conn
            .call(
                None,
                "Target.closeTarget",
                json!({ "targetId": self.target_id }),
            )
            .await?;
        Ok(())
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
