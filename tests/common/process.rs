//! Programs run as processes: the `marimo-rs` binary ([`MarimoRs`]) and the crate's examples,
//! both a [`Spawned`] underneath: started with their output piped, found through the line
//! they print first, stopped by PID (`kill_on_drop` if a test fails first).

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use super::marimo::START;
use super::{signal, Site};

/// How long a process may take to exit after SIGTERM.
pub const STOP: Duration = Duration::from_secs(20);

/// A child process whose stdout is read line by line and whose stderr is collected (and
/// printed if the test panics); killed when dropped.
pub struct Spawned {
    name: String,
    pub child: tokio::process::Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Spawned {
    /// Starts `command` with its stdout and stderr piped; its stdin gets `input`, then its
    /// end, if given, else nothing.
    pub async fn start(name: &str, mut command: Command, input: Option<&str>) -> Self {
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
        if let Some(input) = input {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        let stderr_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The next line on stdout, within `limit`; fails (showing stderr) if none comes.
    pub async fn line(&mut self, limit: Duration) -> String {
        match tokio::time::timeout(limit, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                let _ = self.child.kill().await;
                self.wait_for_stderr().await;
                panic!(
                    "{} printed no line within {limit:?} ({other:?}); stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits up to `limit` for the exit; returns the exit status, what else it
    /// wrote to stdout, and its stderr.
    pub async fn terminate(&mut self, limit: Duration) -> (ExitStatus, String, String) {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?} of SIGTERM", self.name))
            .unwrap();
        let mut rest = String::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            self.stdout.get_mut().read_to_string(&mut rest),
        )
        .await
        .unwrap_or_else(|_| panic!("{}'s stdout is still open after its exit", self.name))
        .unwrap();
        self.wait_for_stderr().await;
        (status, rest, self.stderr())
    }

    /// Lets the stderr reader see the end of the stream (bounded: a child process may hold
    /// the pipe open for a moment).
    async fn wait_for_stderr(&mut self) {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.name, self.stderr());
        }
    }
}

/// The `marimo-rs` binary Cargo built for this test run.
#[allow(
    clippy::option_env_unwrap,
    reason = "every test binary compiles this module; only those that run marimo-rs need it"
)]
pub fn bin() -> &'static str {
    option_env!("CARGO_BIN_EXE_marimo-rs")
        .expect("the marimo-rs binary is built for the tests (feature `cli`)")
}

/// `marimo-rs ARGS`, without the environment variables that would change what it does
/// (secrets, replica id, log filter).
pub fn marimo_rs(args: &[&str]) -> Command {
    let mut command = Command::new(bin());
    command
        .args(args)
        .env_remove("MARIMO_RS_SECRET")
        .env_remove("MARIMO_RS_OLD_SECRETS")
        .env_remove("MARIMO_RS_REPLICA_ID")
        .env_remove("RUST_LOG");
    command
}

/// Runs `command` to completion (it must not start a server): its exit status, stdout and
/// stderr.
pub async fn finish(mut command: Command) -> (ExitStatus, String, String) {
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

/// A running `marimo-rs`, found through the URL line it printed; killed when dropped.
pub struct MarimoRs {
    pub process: Spawned,
    /// The URL it printed, e.g. `http://127.0.0.1:PORT/base/?access_token=…`.
    pub printed: String,
}

impl Site for MarimoRs {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

impl MarimoRs {
    /// Starts `command` (see [`marimo_rs`]; its stdin gets `input` if given) and waits for
    /// the URL line (generously: the first start may install marimo).
    pub async fn start(command: Command, input: Option<&str>) -> Self {
        let mut process = Spawned::start("marimo-rs", command, input).await;
        let printed = process.line(START).await.trim_end().to_owned();
        assert!(printed.starts_with("http://127.0.0.1:"), "{printed}");
        Self { process, printed }
    }

    /// `http://127.0.0.1:PORT`, without path or query.
    pub fn origin(&self) -> &str {
        let after_scheme = "http://".len();
        let end = self.printed[after_scheme..]
            .find('/')
            .map_or(self.printed.len(), |i| i + after_scheme);
        &self.printed[..end]
    }

    /// The printed URL without its query string.
    pub fn page(&self) -> &str {
        self.printed.split('?').next().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.origin().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The token in the URL (`?access_token=…`), if auth is on.
    pub fn token(&self) -> Option<&str> {
        self.printed
            .split_once("?access_token=")
            .map(|(_, token)| token)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM, then waits for the exit; returns the exit status, what else went to stdout,
    /// and stderr.
    pub async fn terminate(mut self) -> (ExitStatus, String, String) {
        self.process.terminate(STOP).await
    }
}
