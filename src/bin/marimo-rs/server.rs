//! What each command serves, and serving it: listen, start the backends, print the URL, run
//! until Ctrl-C or SIGTERM, stop the backends.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use marimo_rs::{create_app, Access, AppBuilder, MarimoService, Mount, ReplicaId, Token};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{self, Generated};
use crate::cli::{AppArgs, Command, EditorArgs, IdentityArgs, ServerArgs};
use crate::config::Extras;
use crate::error::CliError;
use crate::{files, identity};

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
    /// Stop after this long without a connection (`edit --timeout`).
    timeout: Option<Duration>,
}

/// Runs `command` until Ctrl-C or SIGTERM.
pub(crate) async fn run(mut command: Command) -> Result<(), CliError> {
    crate::ops::check_stdin(command.auth(), command.identity(), &command.server().ops)?;
    let secrets = auth::secrets_from_env()?;
    let (identity, extras) = take_identity(&mut command);
    let (plan, server) = plan(command, secrets.as_ref(), &identity, &extras)?;
    let proxy = server.proxy.as_deref().map(Proxy::parse).transpose()?;
    let base = match proxy
        .as_ref()
        .and_then(|proxy| proxy.base_url(server.base_url.as_deref()))
    {
        Some(from_proxy) => from_proxy?,
        None => base_url(server.base_url.as_deref())?,
    };

    let mut builder = plan.builder;
    if let Some(python) = &server.python {
        builder = builder.python(python);
    }
    if let Some(secs) = server.session_ttl {
        builder = builder.session_ttl(Duration::from_secs(secs));
    }
    if let Some(bytes) = server.limits.memory_limit {
        builder = builder.memory_limit(bytes);
    }
    if let Some(max) = server.limits.max_sessions {
        builder = builder.max_sessions(max as usize);
    }
    // Bound first: the identity provider's redirect URI names the port.
    let listener = listen(&server.host, server.port).await?;
    let address = listener.local_addr().map_err(|source| CliError::Bind {
        host: server.host.clone(),
        port: server.port,
        source,
    })?;
    let oidc = match identity.oidc_issuer {
        Some(_) => {
            // Behind --proxy, browsers come back from the provider through the proxy.
            let public = match (&identity.public_url, &proxy) {
                (None, Some(proxy)) => {
                    format!("{}{}", proxy.origin(), base.as_deref().unwrap_or(""))
                }
                _ => {
                    identity::public_url(&identity, &server.host, address.port(), base.as_deref())?
                }
            };
            identity::oidc_config(&identity, &extras, &public)?
        }
        None => None,
    };
    let method = match (&oidc, &plan.token) {
        (Some(_), Some(_)) => "oidc+token",
        (Some(_), None) => "oidc",
        (None, Some(_)) => "token",
        (None, None) => "off",
    };
    builder = builder.warm_pool(server.warm_pool);
    // Kept to mint the browser's one-time sign-in link once the server listens.
    let mut auth_layer = None;
    if let Some(mut layer) = identity::layer(plan.token.as_ref(), oidc, &identity, &extras)? {
        if let Some(base) = &base {
            layer = layer.base_path(base);
        }
        if !server.trusted_proxies.is_empty() {
            layer = layer
                .trusted_proxies(server.trusted_proxies.clone())
                .trust_forwarded_headers(true);
        }
        // marimo's MARIMO_SESSION_COOKIE_SECURE means the same as --secure-cookie.
        if server.secure_cookie || env_true("MARIMO_SESSION_COOKIE_SECURE") {
            layer = layer.secure_cookie(true);
        }
        if let Some(secrets) = &secrets {
            // Replicas with the same secret accept each other's sessions.
            layer = layer
                .secret(&secrets.current)
                .old_secrets(&secrets.old)
                .old_tokens(plan.old_tokens.clone());
        }
        // A provider that cannot be used is reported now, in one line, not at the first
        // sign-in.
        layer.discover().await?;
        builder = builder.auth(layer.clone());
        auth_layer = Some(layer);
    }
    builder = crate::ops::configure(builder, &server.ops)?;
    let replica = server
        .replica_id
        .clone()
        .or_else(|| secrets.as_ref().map(|_| default_replica_id()));
    if let Some(replica) = replica {
        tracing::info!(%replica, "answering with x-marimo-rs-replica: {replica}");
        builder = builder.replica_id(replica);
    }
    let app = guarded(builder, &server, proxy.as_ref()).build()?;
    let service = match &base {
        Some(base) => guarded(create_app(), &server, proxy.as_ref())
            .with_service(base, app.clone())
            .build()?,
        None => app.clone(),
    };

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

    warn_if_exposed(address, auth_layer.is_some(), plan.editor);
    tracing::info!(%address, auth = method, "marimo-rs is listening");
    // Behind --proxy, users reach the server at the proxy's address.
    let origin = match &proxy {
        Some(proxy) => proxy.origin(),
        None => origin(&server.host, address.port()),
    };
    let page = format!("{}{}", base.as_deref().unwrap_or(""), plan.open);
    // Standard output gets the URL with the token, as marimo prints it: it is for the user.
    print_url(&url(&origin, &page, plan.token.as_ref()));
    if !server.headless {
        // The browser gets a one-time link instead, so the token stays out of the opener's
        // command line (`ps`) and the browser's history.
        let target = match (&auth_layer, &plan.token) {
            (Some(layer), Some(_)) => {
                format!("{origin}{}", layer.sign_in_link(&plan.open, SIGN_IN_VALID))
            }
            _ => url(&origin, &page, None),
        };
        open_browser(target);
    }

    let unused = plan.timeout.map(|limit| unused_for(app.clone(), limit));
    let served = marimo_rs::serve(listener, service)
        .with_graceful_shutdown(async move {
            let unused = async {
                match unused {
                    Some(unused) => unused.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => {}
                () = unused => {}
            }
        })
        .await;
    tracing::info!("stopping the notebook backends");
    app.shutdown().await;
    served.map_err(CliError::Serve)
}

/// `builder` with the origin and `Host` checks the flags configure (also for the `--base-url`
/// wrapper, which checks the `Host` before the app does): `--proxy`'s origin and host name
/// are allowed too.
fn guarded(builder: AppBuilder, server: &ServerArgs, proxy: Option<&Proxy>) -> AppBuilder {
    let builder = builder
        .allowed_origins(server.allow_origins.iter().cloned())
        .allowed_hosts(server.allow_hosts.iter().cloned())
        .trust_forwarded_headers(!server.trusted_proxies.is_empty());
    match proxy {
        Some(proxy) => builder
            .allowed_origins([proxy.origin()])
            .allowed_hosts(proxy.host_name().map(str::to_owned)),
        None => builder,
    }
}

/// Whether the environment variable `name` is `true` or `1` (any case, surrounding blanks
/// ignored), as marimo reads its boolean variables.
fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| {
        let value = value.trim();
        value.eq_ignore_ascii_case("true") || value == "1"
    })
}

/// Resolves once no notebook of `app` has had a request or an open WebSocket for `limit`
/// (`edit --timeout`, as marimo's: the server then shuts down).
async fn unused_for(app: MarimoService, limit: Duration) {
    loop {
        let idle = app.idle_for().unwrap_or_default();
        if idle >= limit {
            tracing::info!(
                minutes = limit.as_secs_f64() / 60.0,
                "no connection for the --timeout; shutting down"
            );
            return;
        }
        // Nothing can make it idle sooner than that.
        tokio::time::sleep((limit - idle).max(Duration::from_millis(500))).await;
    }
}

/// `--proxy`, read as marimo reads it: `host`, `host:port` or `scheme://host[:port][/path]`;
/// the port defaults to 443 for `https`, else 80.
#[derive(Debug, PartialEq, Eq)]
struct Proxy {
    https: bool,
    host: String,
    port: u16,
    /// The path, without a trailing `/`, if there is one.
    path: Option<String>,
}

impl Proxy {
    fn parse(raw: &str) -> Result<Self, CliError> {
        let bad = |reason: &str| CliError::BadProxy {
            value: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let (https, rest) = match raw.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some(_) => return Err(bad("the scheme must be http or https")),
            None => (false, raw),
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(rest[at..].trim_end_matches('/'))),
            None => (rest, None),
        };
        let authority: http::uri::Authority = authority
            .parse()
            .map_err(|_| bad("expected HOST, HOST:PORT or https://HOST[:PORT][/PATH]"))?;
        // No user information, and a port, if any, that is a number.
        let plain_port = match authority.as_str().strip_prefix(authority.host()) {
            Some("") => true,
            Some(_) => authority.port_u16().is_some(),
            None => false,
        };
        if authority.host().is_empty() || !plain_port {
            return Err(bad(
                "expected HOST, HOST:PORT or https://HOST[:PORT][/PATH]",
            ));
        }
        let https = https || authority.port_u16() == Some(443);
        Ok(Self {
            https,
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            path: path.filter(|path| !path.is_empty()).map(str::to_owned),
        })
    }

    /// `scheme://host[:port]`, without the scheme's default port: the printed URL's origin,
    /// and the origin of pages served through the proxy.
    fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{}", self.host)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }

    /// The host, if it is a name rather than an IP address (those are always answered).
    fn host_name(&self) -> Option<&str> {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .is_err()
            .then_some(self.host.as_str())
    }

    /// The base URL the proxy's path gives, as marimo takes it: `None` without a path (then
    /// `--base-url` alone counts); an error if `--base-url` says otherwise.
    fn base_url(&self, given: Option<&str>) -> Option<Result<Option<String>, CliError>> {
        let path = self.path.as_deref()?;
        let from_proxy = base_url(Some(path));
        Some(
            match (from_proxy, given.map(|given| base_url(Some(given)))) {
                (Ok(proxy), Some(Ok(given))) if proxy != given => Err(CliError::BadProxy {
                    value: format!("{}{path}", self.origin()),
                    reason: format!(
                    "its path {path:?} conflicts with --base-url {:?}; use one or make them match",
                    given.unwrap_or_default()
                ),
                }),
                (Ok(proxy), _) => Ok(proxy),
                (Err(error), _) => Err(error),
            },
        )
    }
}

/// The identity flags and the file's extras, taken out of `command`.
fn take_identity(command: &mut Command) -> (IdentityArgs, Extras) {
    let identity = match command {
        Command::Run(args) => std::mem::take(&mut args.identity),
        Command::Serve(args) => std::mem::take(&mut args.identity),
        Command::Edit(args) => std::mem::take(&mut args.identity),
        Command::New(args) => std::mem::take(&mut args.identity),
    };
    let extras = match command {
        Command::Serve(args) => std::mem::take(&mut *args.file),
        _ => Extras::default(),
    };
    (identity, extras)
}

/// `mount` with the access rules the configuration file gives `path`.
fn with_rules(mount: Mount, path: &str, rules: &[(String, Access)]) -> Mount {
    match rules.iter().find(|(at, _)| at == path) {
        Some((_, access)) => mount.access(access.clone()),
        None => mount,
    }
}

/// The plan for `command`, and its server options.
fn plan(
    command: Command,
    secrets: Option<&auth::Secrets>,
    identity: &IdentityArgs,
    extras: &Extras,
) -> Result<(Plan, ServerArgs), CliError> {
    // With an identity provider, the token is for scripts: off unless asked for, even in the
    // editor.
    let provider = identity.oidc_issuer.is_some();
    match command {
        Command::Run(args) => {
            let (apps, dirs) = run_mounts(&args.paths)?;
            let generated = Generated::FromCode {
                apps: &apps,
                dirs: &dirs,
            };
            let token = auth::resolve(&args.auth, false, generated)?;
            let old_tokens = auth::old_tokens(token.as_ref(), generated, secrets)?;
            let mut builder = app_options(create_app(), &args.app).cli_args(args.args);
            let gallery = apps.len() + dirs.len() > 1 || !dirs.is_empty();
            for (path, file) in apps {
                builder = builder.with_app(&path, file);
            }
            for (path, directory) in dirs {
                builder = builder.with_dynamic_directory(&path, directory);
            }
            if gallery {
                builder = builder.with_gallery("/");
            }
            let plan = Plan {
                builder,
                token,
                old_tokens,
                open: "/".into(),
                editor: false,
                timeout: None,
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
            let mut builder = app_options(create_app(), &args.app);
            for (path, file) in apps {
                let mount = with_rules(Mount::app(file), &path, &extras.app_access);
                builder = builder.mount(&path, mount);
            }
            for (path, directory) in dirs {
                let mut mount = Mount::directory(directory);
                if let Some((_, all, notebooks)) =
                    extras.dir_access.iter().find(|(at, ..)| *at == path)
                {
                    if let Some(all) = all {
                        mount = mount.access(all.clone());
                    }
                    for (notebook, access) in notebooks {
                        mount = mount.notebook_access(notebook.clone(), access.clone());
                    }
                }
                builder = builder.mount(&path, mount);
            }
            let plan = Plan {
                builder,
                token,
                old_tokens,
                open,
                editor: false,
                timeout: None,
            };
            Ok((plan, args.server))
        }
        Command::Edit(args) => {
            let notebook = files::existing_or_created(&args.notebook)?;
            let mut plan = editor(notebook, &args.auth, &args.editor, !provider)?;
            plan.builder = plan.builder.watch(args.watch).cli_args(args.args);
            Ok((plan, args.server))
        }
        Command::New(args) => {
            let notebook = files::new(args.notebook.as_deref())?;
            let plan = editor(notebook, &args.auth, &args.editor, !provider)?;
            Ok((plan, args.server))
        }
    }
}

fn editor(
    notebook: PathBuf,
    auth_args: &crate::cli::AuthArgs,
    options: &EditorArgs,
    token_by_default: bool,
) -> Result<Plan, CliError> {
    let token = auth::resolve(auth_args, token_by_default, Generated::Random)?;
    Ok(Plan {
        builder: create_app().mount("/", Mount::edit(notebook)),
        token,
        old_tokens: Vec::new(),
        open: "/".into(),
        editor: true,
        timeout: options
            .timeout
            .map(|minutes| Duration::from_secs_f64(minutes * 60.0)),
    })
}

/// `builder` with the app view's flags (run and serve).
fn app_options(builder: AppBuilder, app: &AppArgs) -> AppBuilder {
    let builder = builder
        .include_code(app.include_code)
        // On unless turned off, as in `marimo run`.
        .skew_protection(!app.no_skew_protection)
        .show_tracebacks(app.show_tracebacks)
        .redirect_console_to_browser(app.redirect_console_to_browser)
        .watch(app.watch);
    match &app.asset_url {
        Some(url) => builder.asset_url(url),
        None => builder,
    }
}

/// Where `marimo-rs run` serves `paths`: one notebook file at `/`; otherwise each file and
/// folder under its own name (`sales.py` at `/sales`, `team/` at `/team`, a name taken twice
/// gets `-2`, `-3`…), for the gallery at `/` to list. Returns the apps and the directories.
fn run_mounts(paths: &[PathBuf]) -> Result<MountSpecs, CliError> {
    if let [single] = paths {
        if !single.is_dir() {
            return Ok((vec![("/".into(), files::existing(single)?)], Vec::new()));
        }
    }
    // Names the gateway answers itself (login, health probes) would hide a notebook.
    let mut taken: Vec<String> = ["auth", "health", "healthz"].map(String::from).to_vec();
    let mut mount = |name: &str| {
        let plain: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let plain = plain.trim_start_matches('.');
        let plain = if plain.is_empty() { "notebook" } else { plain };
        let mut candidate = plain.to_owned();
        let mut number = 1;
        while taken.contains(&candidate) {
            number += 1;
            candidate = format!("{plain}-{number}");
        }
        taken.push(candidate.clone());
        format!("/{candidate}")
    };
    let (mut apps, mut dirs) = (Vec::new(), Vec::new());
    for path in paths {
        if path.is_dir() {
            // `.` and `..` are named after the folder they stand for.
            let name = std::fs::canonicalize(path)
                .ok()
                .and_then(|full| full.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            dirs.push((mount(&name), path.clone()));
        } else {
            let file = files::existing(path)?;
            let name = file.file_stem().unwrap_or_default().to_string_lossy();
            apps.push((mount(&name), file));
        }
    }
    Ok((apps, dirs))
}

/// Mount paths with the notebook files, and with the directories, they serve.
type MountSpecs = (Vec<(String, PathBuf)>, Vec<(String, PathBuf)>);

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
    fn proxies_are_read_as_marimo_reads_them() {
        let proxy = Proxy::parse("example.com:8080").unwrap();
        assert_eq!(proxy.origin(), "http://example.com:8080");
        assert_eq!(proxy.host_name(), Some("example.com"));
        assert!(
            proxy.base_url(Some("/x")).is_none(),
            "no path: --base-url alone counts"
        );
        assert_eq!(
            Proxy::parse("Example.com").unwrap().origin(),
            "http://example.com"
        );
        assert_eq!(Proxy::parse("gw:443").unwrap().origin(), "https://gw");
        assert_eq!(
            Proxy::parse("https://gw:8443").unwrap().origin(),
            "https://gw:8443"
        );
        let ip = Proxy::parse("[::1]:8080").unwrap();
        assert_eq!(ip.origin(), "http://[::1]:8080");
        assert_eq!(ip.host_name(), None);
        let with_path = Proxy::parse("https://gw/marimo/").unwrap();
        assert_eq!(with_path.origin(), "https://gw");
        assert_eq!(
            with_path.base_url(None).unwrap().unwrap().as_deref(),
            Some("/marimo")
        );
        assert!(with_path.base_url(Some("/marimo/")).unwrap().is_ok());
        assert!(with_path.base_url(Some("/other")).unwrap().is_err());
        for bad in ["ftp://gw", "user@gw", "gw:port", "http://", ""] {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_run_paths_get_a_mount_each() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "").unwrap();
            path
        };
        let sales = make("sales.py");
        let odd = make("a b.py");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let again = dir.path().join("sub").join("sales.py");
        std::fs::write(&again, "").unwrap();
        let auth = make("auth.py");
        let folder = dir.path().join("sub");
        let (apps, dirs) = run_mounts(&[sales.clone(), odd, again, auth, folder.clone()]).unwrap();
        let paths: Vec<&str> = apps.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(paths, ["/sales", "/a-b", "/sales-2", "/auth-2"]);
        assert_eq!(dirs, [("/sub".to_owned(), folder)]);
        let (apps, dirs) = run_mounts(std::slice::from_ref(&sales)).unwrap();
        assert_eq!(apps, [("/".to_owned(), sales)]);
        assert!(dirs.is_empty());
        assert!(run_mounts(&[dir.path().join("missing.py")]).is_err());
    }

    #[test]
    fn the_page_to_open_is_the_root_or_the_first_mount() {
        assert_eq!(open_path(["/a", "/"].into_iter()), "/");
        assert_eq!(open_path(["/a/", "/b"].into_iter()), "/a/");
    }
}
