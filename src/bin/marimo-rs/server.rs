//! What each command serves, and serving it: listen, start the backends, print the URL, run
//! until Ctrl-C or SIGTERM, stop the backends.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use marimo_rs::{create_app, AppBuilder, AuthLayer, Mount, ReplicaId, Token};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{self, Generated};
use crate::cli::{Command, ServerArgs};
use crate::error::CliError;
use crate::files;

/// What a command serves.
struct Plan {
    builder: AppBuilder,
    token: Option<Token>,
    /// Tokens of the old secrets, still accepted during a rotation.
    old_tokens: Vec<Token>,
    /// The page to open, relative to the base URL: `/` or `/mount/`.
    open: String,
    /// Whoever can reach the server can run code (the editor).
    editor: bool,
}

/// Runs `command` until Ctrl-C or SIGTERM.
pub(crate) async fn run(command: Command) -> Result<(), CliError> {
    let secrets = auth::secrets_from_env()?;
    let (plan, server) = plan(command, secrets.as_ref())?;
    let base = base_url(server.base_url.as_deref())?;

    let mut builder = plan.builder;
    if let Some(python) = &server.python {
        builder = builder.python(python);
    }
    if let Some(secs) = server.session_ttl {
        builder = builder.session_ttl(Duration::from_secs(secs));
    }
    builder = builder.warm_pool(server.warm_pool);
    // Kept to mint the browser's one-time sign-in link once the server listens.
    let mut auth_layer = None;
    if let Some(token) = &plan.token {
        let mut layer = AuthLayer::new(token.clone());
        if let Some(base) = &base {
            layer = layer.base_path(base);
        }
        if !server.trusted_proxies.is_empty() {
            layer = layer
                .trusted_proxies(server.trusted_proxies.clone())
                .trust_forwarded_headers(true);
        }
        if server.secure_cookie {
            layer = layer.secure_cookie(true);
        }
        if let Some(secrets) = &secrets {
            // Replicas with the same secret accept each other's sessions.
            layer = layer
                .secret(&secrets.current)
                .old_secrets(&secrets.old)
                .old_tokens(plan.old_tokens.clone());
        }
        builder = builder.auth(layer.clone());
        auth_layer = Some(layer);
    }
    let replica = server
        .replica_id
        .clone()
        .or_else(|| secrets.as_ref().map(|_| default_replica_id()));
    if let Some(replica) = replica {
        tracing::info!(%replica, "answering with x-marimo-rs-replica: {replica}");
        builder = builder.replica_id(replica);
    }
    let app = guarded(builder, &server).build()?;
    let service = match &base {
        Some(base) => guarded(create_app(), &server)
            .with_service(base, app.clone())
            .build()?,
        None => app.clone(),
    };

    let listener = listen(&server.host, server.port).await?;
    let address = listener.local_addr().map_err(|source| CliError::Bind {
        host: server.host.clone(),
        port: server.port,
        source,
    })?;

    // Ctrl-C and SIGTERM are watched from now on, also while the backends start.
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        marimo_rs::shutdown_signal().await;
        let _ = stop.send(true);
    });
    tokio::select! {
        started = app.start() => {
            if let Err(error) = started {
                app.shutdown().await;
                return Err(error.into());
            }
        }
        _ = stopped.wait_for(|stop| *stop) => {
            app.shutdown().await;
            return Ok(());
        }
    }

    warn_if_exposed(address, plan.token.is_some(), plan.editor);
    tracing::info!(
        %address,
        auth = if plan.token.is_some() { "token" } else { "off" },
        "marimo-rs is listening"
    );
    let origin = origin(&server.host, address.port());
    let page = format!("{}{}", base.as_deref().unwrap_or(""), plan.open);
    // Standard output gets the URL with the token, as marimo prints it: it is for the user.
    print_url(&url(&origin, &page, plan.token.as_ref()));
    if !server.headless {
        // The browser gets a one-time link instead, so the token stays out of the opener's
        // command line (`ps`) and the browser's history.
        let target = match &auth_layer {
            Some(layer) => format!("{origin}{}", layer.sign_in_link(&plan.open, SIGN_IN_VALID)),
            None => url(&origin, &page, None),
        };
        open_browser(target);
    }

    let served = marimo_rs::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await;
    tracing::info!("stopping the notebook backends");
    app.shutdown().await;
    served.map_err(CliError::Serve)
}

/// `builder` with the origin and `Host` checks the flags configure (also for the `--base-url`
/// wrapper, which checks the `Host` before the app does).
fn guarded(builder: AppBuilder, server: &ServerArgs) -> AppBuilder {
    builder
        .allowed_origins(server.allow_origins.iter().cloned())
        .allowed_hosts(server.allow_hosts.iter().cloned())
        .trust_forwarded_headers(!server.trusted_proxies.is_empty())
}

/// The plan for `command`, and its server options.
fn plan(command: Command, secrets: Option<&auth::Secrets>) -> Result<(Plan, ServerArgs), CliError> {
    match command {
        Command::Run(args) => {
            let notebook = files::existing(&args.notebook)?;
            let apps = [(String::from("/"), notebook.clone())];
            let generated = Generated::FromCode {
                apps: &apps,
                dirs: &[],
            };
            let token = auth::resolve(&args.auth, false, generated)?;
            let old_tokens = auth::old_tokens(token.as_ref(), generated, secrets)?;
            let builder = create_app()
                .with_app("/", notebook)
                .include_code(args.app.include_code);
            let plan = Plan {
                builder,
                token,
                old_tokens,
                open: "/".into(),
                editor: false,
            };
            Ok((plan, args.server))
        }
        Command::Serve(args) => {
            let apps = args
                .apps
                .iter()
                .map(|spec| mount_spec(spec, "--app"))
                .collect::<Result<Vec<_>, _>>()?;
            let dirs = args
                .dirs
                .iter()
                .map(|spec| mount_spec(spec, "--dir"))
                .collect::<Result<Vec<_>, _>>()?;
            if apps.is_empty() && dirs.is_empty() {
                return Err(CliError::NothingToServe);
            }
            for (_, file) in &apps {
                files::existing(file)?;
            }
            for (_, directory) in &dirs {
                if !directory.is_dir() {
                    return Err(CliError::DirectoryNotFound(directory.clone()));
                }
            }
            let generated = Generated::FromCode {
                apps: &apps,
                dirs: &dirs,
            };
            let token = auth::resolve(&args.auth, false, generated)?;
            let old_tokens = auth::old_tokens(token.as_ref(), generated, secrets)?;
            let mounts = apps.iter().chain(&dirs).map(|(path, _)| path.as_str());
            let open = open_path(mounts);
            let mut builder = create_app().include_code(args.app.include_code);
            for (path, file) in apps {
                builder = builder.with_app(&path, file);
            }
            for (path, directory) in dirs {
                builder = builder.with_dynamic_directory(&path, directory);
            }
            let plan = Plan {
                builder,
                token,
                old_tokens,
                open,
                editor: false,
            };
            Ok((plan, args.server))
        }
        Command::Edit(args) => {
            let notebook = files::existing_or_created(&args.notebook)?;
            let plan = editor(notebook, &args.auth)?;
            Ok((plan, args.server))
        }
        Command::New(args) => {
            let notebook = files::new(args.notebook.as_deref())?;
            let plan = editor(notebook, &args.auth)?;
            Ok((plan, args.server))
        }
    }
}

fn editor(notebook: PathBuf, auth_args: &crate::cli::AuthArgs) -> Result<Plan, CliError> {
    let token = auth::resolve(auth_args, true, Generated::Random)?;
    Ok(Plan {
        builder: create_app().mount("/", Mount::edit(notebook)),
        token,
        old_tokens: Vec::new(),
        open: "/".into(),
        editor: true,
    })
}

/// The replica name when none is given: 8 hex digits of
/// `SHA-256("marimo-rs/replica/v1\0" || host name || "\0" || process id)`, so that replicas
/// (pods, or processes on one host) tell apart without showing the host name. Logged with the
/// host name at start-up.
fn default_replica_id() -> ReplicaId {
    use sha2::{Digest, Sha256};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let mut hasher = Sha256::new();
    hasher.update(b"marimo-rs/replica/v1\0");
    hasher.update(host.as_bytes());
    hasher.update(b"\0");
    hasher.update(pid.to_string().as_bytes());
    let id: String = hasher.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::info!(host = %host, pid, replica = %id, "replica id derived from the host name");
    ReplicaId::new(id).expect("8 hex digits are a replica id")
}

/// `PATH=TARGET` of `--app` and `--dir`.
fn mount_spec(spec: &str, flag: &'static str) -> Result<(String, PathBuf), CliError> {
    let (shape, example) = match flag {
        "--app" => ("PATH=NOTEBOOK", "/dashboard=dashboard.py"),
        _ => ("PATH=DIRECTORY", "/notebooks=./notebooks"),
    };
    let bad = || CliError::BadMountSpec {
        flag,
        value: spec.to_owned(),
        shape,
        example,
    };
    let (path, target) = spec.split_once('=').ok_or_else(bad)?;
    if !path.starts_with('/') || target.is_empty() {
        return Err(bad());
    }
    Ok((path.to_owned(), PathBuf::from(target)))
}

/// The page to open: the root if something is mounted there, else the first mount.
fn open_path<'a>(mut mounts: impl Iterator<Item = &'a str> + Clone) -> String {
    let normal = |path: &str| path.trim_end_matches('/').to_owned();
    if mounts.clone().any(|path| normal(path).is_empty()) {
        return "/".into();
    }
    mounts
        .next()
        .map(|path| format!("{}/", normal(path)))
        .unwrap_or_else(|| "/".into())
}

/// `--base-url` as a mount path (`/a/b`), or `None` for the root.
fn base_url(raw: Option<&str>) -> Result<Option<String>, CliError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let bad = |reason: &str| CliError::BadBaseUrl {
        value: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    if !trimmed.starts_with('/') {
        return Err(bad("it must start with `/`, e.g. --base-url /marimo"));
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("it has an empty, `.` or `..` segment"));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
        if !segment.chars().all(plain) {
            return Err(bad("use only letters, digits and -._~ in the prefix"));
        }
    }
    Ok(Some(trimmed.to_owned()))
}

async fn listen(host: &str, port: u16) -> Result<TcpListener, CliError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    TcpListener::bind((bare, port)).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            CliError::PortInUse {
                host: host.to_owned(),
                port,
            }
        } else {
            CliError::Bind {
                host: host.to_owned(),
                port,
                source,
            }
        }
    })
}

fn warn_if_exposed(address: SocketAddr, auth: bool, editor: bool) {
    if auth || address.ip().is_loopback() {
        return;
    }
    if editor {
        tracing::warn!(
            %address,
            "the editor is reachable from the network WITHOUT authentication: anyone who can \
             connect can run code as this user; drop --no-token"
        );
    } else {
        tracing::warn!(
            %address,
            "serving on a non-loopback address without authentication: anyone who can connect \
             can use the notebooks; pass --token (or --auth) to require a token"
        );
    }
}

/// `http://HOST:PORT`.
fn origin(host: &str, port: u16) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let host = match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => bare.to_owned(),
    };
    format!("http://{host}:{port}")
}

/// `{origin}{path}`, with `?access_token=` when auth is on.
fn url(origin: &str, path: &str, token: Option<&Token>) -> String {
    let mut url = format!("{origin}{path}");
    if let Some(token) = token {
        url.push_str("?access_token=");
        url.extend(form_urlencoded::byte_serialize(
            token.expose_secret().as_bytes(),
        ));
    }
    url
}

/// How long the browser's sign-in link works: long enough for a browser to start.
const SIGN_IN_VALID: Duration = Duration::from_secs(60);

/// The one line on standard output: the URL to open.
fn print_url(url: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{url}").and_then(|()| out.flush()).is_err() {
        tracing::warn!("cannot write the URL to standard output");
    }
}

/// Opens `url` in the default browser, in the background; a failure is only logged.
fn open_browser(url: String) {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let spawned = tokio::process::Command::new(program)
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Not in the terminal's process group: Ctrl-C is for the server only.
        .process_group(0)
        .spawn();
    match spawned {
        // Waited for in the background, so that it does not linger as a zombie.
        Ok(mut child) => {
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if !status.success() => {
                        tracing::warn!(%status, "{program} could not open a browser; open the URL by hand")
                    }
                    Err(error) => tracing::warn!(%error, "{program} failed; open the URL by hand"),
                    Ok(_) => {}
                }
            });
        }
        Err(error) => {
            tracing::warn!(%error, "cannot run {program} to open a browser; open the URL by hand")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_bracket_ipv6_and_encode_the_token() {
        let token = Token::new("a b&c");
        assert_eq!(
            url(&origin("::1", 80), "/p/", Some(&token)),
            "http://[::1]:80/p/?access_token=a+b%26c"
        );
        assert_eq!(url(&origin("[::1]", 80), "/", None), "http://[::1]:80/");
        assert_eq!(
            url(&origin("localhost", 2718), "/a/", None),
            "http://localhost:2718/a/"
        );
    }

    #[test]
    fn mount_specs_need_a_path_and_a_target() {
        assert_eq!(
            mount_spec("/a=x.py", "--app").unwrap(),
            ("/a".to_owned(), PathBuf::from("x.py"))
        );
        assert_eq!(mount_spec("/=x.py", "--app").unwrap().0, "/");
        for bad in ["x.py", "a=x.py", "/a=", ""] {
            assert!(mount_spec(bad, "--app").is_err(), "{bad}");
        }
    }

    #[test]
    fn base_urls_are_normalised_and_checked() {
        assert_eq!(base_url(None).unwrap(), None);
        assert_eq!(base_url(Some("/")).unwrap(), None);
        assert_eq!(base_url(Some("/m/")).unwrap().as_deref(), Some("/m"));
        assert_eq!(base_url(Some("/a/b")).unwrap().as_deref(), Some("/a/b"));
        for bad in ["m", "/a//b", "/a/../b", "/a;b", "/a b"] {
            assert!(base_url(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_page_to_open_is_the_root_or_the_first_mount() {
        assert_eq!(open_path(["/a", "/"].into_iter()), "/");
        assert_eq!(open_path(["/a/", "/b"].into_iter()), "/a/");
    }
}
