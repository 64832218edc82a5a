//! Load balancers in front of replicas: Debian's haproxy and nginx (`.ci/install-haproxy`
//! installs both), started on loopback ports with their configuration in a temporary
//! directory, stopped by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{signal, Site};

/// The path of `name` (haproxy, nginx), installed first if this process may (`cargo test`
/// installs what it needs, as `.ci/run` does: Debian packages, as root).
pub fn program(name: &str) -> PathBuf {
    let find = || {
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
    };
    find()
        .or_else(|| {
            super::run_install_script("install-haproxy");
            find()
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed: run `bash .ci/install-haproxy` as root (haproxy and nginx)")
        })
}

/// A free loopback port (bound, then released for the load balancer to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts TCP connections; `log` says why not after 10 s.
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

/// A load balancer process with its configuration in a temporary directory; killed (by its
/// pid) when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// haproxy in front of `servers` (name, port on 127.0.0.1): round robin, cookie affinity
    /// (`SRV`, set by haproxy), health checks on `/healthz`, and redispatch when the pinned
    /// server is down.
    pub async fn haproxy(servers: &[(&str, u16)]) -> Self {
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
        for (name, port) in servers {
            config.push_str(&format!(
                "    server {name} 127.0.0.1:{port} cookie {name}\n"
            ));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(program("haproxy"));
        command.arg("-db").arg("-f").arg(&path);
        let child = spawn_quiet(command, "haproxy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, "haproxy", String::new).await;
        Self {
            addr,
            child,
            _dir: dir,
        }
    }

    /// nginx with deploy/nginx.conf as shipped, but listening on a loopback port and with
    /// `ports` as its two upstream servers.
    pub async fn nginx(ports: [u16; 2]) -> Self {
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
                &format!("server 127.0.0.1:{} ", ports[0]),
            )
            .replace(
                "server 127.0.0.1:2719 ",
                &format!("server 127.0.0.1:{} ", ports[1]),
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
        let mut command = Command::new(program("nginx"));
        command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"));
        let child = spawn_quiet(command, "nginx");
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

    /// Stops the process by its pid and waits for it.
    pub async fn stop(mut self) {
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

impl Site for Balancer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts `command` without input or output; killed when dropped.
fn spawn_quiet(mut command: Command, what: &str) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("{what} does not start: {error}"))
}
