//! The files in `deploy/` agree with the crate and are valid: the Kubernetes manifest (parsed,
//! every object's required fields, probes on the binary's health path and default port), the
//! Dockerfile (stages, pinned marimo, non-root, health check) and the nginx configuration
//! (`nginx -t` with Debian's nginx, which `.ci/install-haproxy` installs).
//! tests/replicas.rs runs the nginx configuration in front of real replicas.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml_ng::Value;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|error| panic!("deploy/{file}: {error}"))
}

/// The manifest's objects by kind.
fn manifests() -> Vec<Value> {
    let text = read("kubernetes.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|value| !value.is_null())
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/kubernetes.yaml");
    found[0]
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// `[default: N]` of `--port` in `marimo-rs serve --help`.
fn default_port() -> u16 {
    let help = Command::new(common::process::bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let port = help
        .split("--port <PORT>")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .expect("serve --help shows the default port");
    port.parse().unwrap()
}

#[test]
fn the_kubernetes_manifest_is_complete_and_matches_the_binary() {
    let objects = manifests();
    for object in &objects {
        let kind = str_of(&object["kind"], "kind");
        assert!(
            object["apiVersion"].as_str().is_some(),
            "{kind} has an apiVersion"
        );
        assert_eq!(
            object["metadata"]["name"], "marimo-rs",
            "{kind} is named marimo-rs"
        );
    }
    let kinds: Vec<&str> = objects.iter().map(|o| str_of(&o["kind"], "kind")).collect();
    for kind in [
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }

    // The secret holds MARIMO_RS_SECRET, and the pods read it.
    let secret = object(&objects, "Secret");
    assert!(secret["stringData"]["MARIMO_RS_SECRET"].as_str().is_some());
    let deployment = object(&objects, "Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2, "several replicas");
    let labels = &spec["template"]["metadata"]["labels"];
    for (key, value) in spec["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&labels[key], value, "the selector matches the pod labels");
    }
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"], secret["metadata"]["name"],
        "the pods get the secret's keys as environment variables"
    );

    // Probes: the gateway's health path on the container port, which is the binary's default.
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(default_port().into()));
    let port_name = str_of(&port["name"], "port name");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert_eq!(get["port"], port_name, "{probe}");
    }
    assert!(container["resources"]["requests"]["memory"]
        .as_str()
        .is_some());
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|arg| str_of(arg, "arg"))
        .collect();
    assert!(args.contains(&"--token"), "authentication is on: {args:?}");
    // Every flag the manifest passes is one the binary knows (no drift from the CLI).
    let help = Command::new(common::process::bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in args.iter().filter(|arg| arg.starts_with("--")) {
        let name = flag.split('=').next().unwrap();
        assert!(help.contains(name), "`marimo-rs serve` has no {name}");
    }

    // The Service selects the pods and targets the named port; the Ingress targets the Service.
    let service = object(&objects, "Service");
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key], value);
    }
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(service_port["targetPort"], port_name);
    let ingress = object(&objects, "Ingress");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], service["metadata"]["name"]);
    assert_eq!(backend["port"]["name"], service_port["name"]);

    // Affinity and WebSocket timeouts for ingress-nginx.
    let annotations = &ingress["metadata"]["annotations"];
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/affinity"],
        "cookie"
    );
    for timeout in ["proxy-read-timeout", "proxy-send-timeout"] {
        let key = format!("nginx.ingress.kubernetes.io/{timeout}");
        let secs: u64 = str_of(&annotations[key.as_str()], &key).parse().unwrap();
        assert!(secs >= 3600, "{key} keeps quiet WebSockets open");
    }
    let pdb = object(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"], spec["selector"]);
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_on_pinned_marimo_as_a_user() {
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .collect();
    let stages: Vec<&str> = lines
        .iter()
        .filter(|line| line.starts_with("FROM "))
        .copied()
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].starts_with("FROM rust:") && stages[0].ends_with(" AS build"));
    assert!(stages[1].starts_with("FROM python:") && stages[1].contains("slim"));
    assert!(dockerfile.contains("cargo build --release --locked --bin marimo-rs"));
    assert!(dockerfile.contains("COPY --from=build "));

    // The Rust image is at least the crate's rust-version.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let msrv = manifest
        .lines()
        .find_map(|line| line.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let rust = lines
        .iter()
        .find_map(|line| line.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(version(rust) >= version(msrv), "rust {rust} < {msrv}");

    // marimo pinned to the version the crate is tested with, and the gateway told to use it.
    let pinned = lines
        .iter()
        .find_map(|line| line.strip_prefix("ARG MARIMO_VERSION="))
        .expect("ARG MARIMO_VERSION");
    assert_eq!(pinned, marimo_rs::MARIMO_VERSION);
    assert!(dockerfile.contains("\"marimo==${MARIMO_VERSION}\""));
    assert!(dockerfile.contains("MARIMO_RS_PYTHON=/opt/marimo/bin/python"));
    assert!(dockerfile.contains("MARIMO_RS_NO_INSTALL=1"));

    // Not root, health-checked, `marimo-rs serve` on the port the manifest probes.
    let user = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    let healthcheck = dockerfile
        .split("HEALTHCHECK")
        .nth(1)
        .and_then(|rest| rest.split("\nENTRYPOINT").next())
        .expect("a HEALTHCHECK");
    let port = default_port();
    assert!(
        healthcheck.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "{healthcheck}"
    );
    let entrypoint = lines
        .iter()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec form");
    assert_eq!(entrypoint[..2], ["marimo-rs", "serve"]);
    let listen = entrypoint
        .windows(2)
        .find(|pair| pair[0] == "--port")
        .map(|pair| pair[1].clone());
    assert_eq!(listen, Some(port.to_string()));
    assert!(entrypoint.contains(&"--headless".to_owned()));
    assert!(lines.contains(&format!("EXPOSE {port}").as_str()));
    // The build context leaves out what it need not send.
    let ignore = read("Dockerfile.dockerignore");
    assert!(ignore.lines().any(|line| line == "target/"));
    // The notebook the default command serves is in the repository.
    let cmd = lines
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    assert!(cmd.contains(&"/=/notebooks/intro.py".to_owned()));
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/notebooks/intro.py")
        .is_file());
}

#[test]
fn the_nginx_configuration_passes_nginx_t() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let main = dir.path().join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "pid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log;\nevents {{}}\n\
             http {{ access_log off; include {conf}; }}\n",
            dir = dir.path().display(),
            conf = deploy("nginx.conf").display(),
        ),
    )
    .unwrap();
    let output = Command::new(common::balancer::program("nginx"))
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&main)
        .arg("-e")
        .arg(logs.join("error.log"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nginx -t failed:\n{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");

    // What the configuration must do for marimo-rs.
    let conf = read("nginx.conf");
    for needed in [
        "hash $marimo_rs_affinity consistent;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $marimo_rs_connection;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_read_timeout 1h;",
    ] {
        assert!(conf.contains(needed), "deploy/nginx.conf lacks {needed}");
    }
    let upstreams = conf
        .lines()
        .filter(|line| line.trim_start().starts_with("server 127.0.0.1:"))
        .count();
    assert_eq!(upstreams, 2, "two replicas");
}
