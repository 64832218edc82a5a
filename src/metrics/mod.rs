//! Prometheus metrics: [`Metrics`], the registry a built app records into, and the handles the
//! rest of the crate records through.
//!
//! What is recorded where:
//!
//! - requests (`marimo_rs_http_requests_total`, `marimo_rs_http_request_duration_seconds`):
//!   by the built service itself, around everything else (see [`observe`]), labelled with the
//!   mount, the method and the status code;
//! - upstream latency and the backends' lifecycle events: [`BackendStats`], one per backend,
//!   whose series handles are resolved once, when the backend is created;
//! - sign-ins, credential failures and limited attempts: [`AuthCounters`], held by the auth
//!   layer;
//! - backends by state, open WebSocket sessions, and each backend's memory and CPU: read at
//!   scrape time from the [`BackendSource`]s registered by built apps (memory and CPU from
//!   `/proc`, see [`procfs`]), so that nothing is kept up to date between scrapes.
//!
//! Label values are bounded: `mount` is a configured mount path (a directory mount counts as
//! one, whatever notebook of it answered), or `gateway` for what no mount answers; `method` is
//! one of nine names (`other` for the rest); `status` is the three-digit code. The per-backend
//! series (memory, CPU) are labelled with the backend's path, of which at most as many exist
//! at once as backends run (a directory mount runs at most `max_backends`).

pub(crate) mod observe;
mod procfs;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub(crate) use self::procfs::group_usage;
use crate::sync::lock;

/// The `mount` label of requests no mount answers: the gateway's own endpoints (`/health`,
/// `/metrics`, `/_admin`) and paths outside every mount.
pub(crate) const GATEWAY_LABEL: &str = "gateway";

/// Latency buckets, in seconds: 1 ms to 30 s (the default response timeout).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Prometheus metrics of a built app: requests, notebook backends, sign-ins.
///
/// Give it to [`AppBuilder::metrics`](crate::AppBuilder::metrics): the built service then
/// records into it and answers `GET /metrics` at its root (see there for who may read it).
/// [`render`](Metrics::render) gives the same text to a host that serves it elsewhere. Cheap
/// to clone: every clone records into the same registry. Give one `Metrics` to one built app
/// (two apps with a mount at the same path would share its series).
///
/// The series (all prefixed `marimo_rs_`):
///
/// | series | type | labels |
/// |---|---|---|
/// | `http_requests_total` | counter | `mount`, `method`, `status` |
/// | `http_request_duration_seconds` | histogram (until the response head) | `mount`, `method`, `status` |
/// | `upstream_duration_seconds` | histogram (backend's response head) | `mount` |
/// | `backends` | gauge | `state`: idle, starting, ready, failed, out_of_memory, stopped |
/// | `backend_starts_total`, `backend_restarts_total`, `backend_crashes_total`, `backend_start_failures_total`, `backend_given_up_total`, `backend_out_of_memory_total` | counter | `mount` |
/// | `websocket_sessions` | gauge (open now) | `mount` |
/// | `backend_resident_memory_bytes`, `backend_cpu_seconds_total` | gauge, counter (the backend's process group, from `/proc`) | `mount`, `backend` |
/// | `sign_ins_total`, `credential_failures_total`, `credential_attempts_limited_total` | counter | — |
///
/// `mount` is the configured mount path (`/` for the root, a directory mount's own path for
/// all its notebooks) or `gateway`; `method` one of `GET`, `HEAD`, `POST`, `PUT`, `DELETE`,
/// `PATCH`, `OPTIONS`, `CONNECT`, `TRACE`, else `other`; `backend` the backend's path
/// (`/apps/team/q3` for a directory notebook).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::{create_app, Body, Metrics};
/// use tower::ServiceExt;
/// # let hello = tower::service_fn(|_req| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("hello")))
/// # });
///
/// let metrics = Metrics::new();
/// let app = create_app()
///     .with_service("/hello", hello)
///     .metrics(metrics.clone())
///     .build()?;
/// let request = http::Request::get("/hello/").body(Body::empty()).unwrap();
/// app.oneshot(request).await.unwrap();
/// assert!(metrics.render().contains(
///     r#"marimo_rs_http_requests_total{mount="/hello",method="GET",status="200"} 1"#
/// ));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    backend: BackendFamilies,
    auth: AuthCounters,
    sources: Arc<Mutex<Vec<Weak<dyn BackendSource>>>>,
}

#[derive(Clone)]
struct BackendFamilies {
    starts: Family<MountLabels, Counter>,
    restarts: Family<MountLabels, Counter>,
    crashes: Family<MountLabels, Counter>,
    start_failures: Family<MountLabels, Counter>,
    given_up: Family<MountLabels, Counter>,
    out_of_memory: Family<MountLabels, Counter>,
    upstream: Family<MountLabels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// The text format's `Content-Type` (Prometheus text format 0.0.4).
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// An empty registry with every series described.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("marimo_rs");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by mount, method and status code",
            requests.clone(),
        );
        let durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response head",
            Unit::Seconds,
            durations.clone(),
        );
        let backend = BackendFamilies {
            starts: Family::default(),
            restarts: Family::default(),
            crashes: Family::default(),
            start_failures: Family::default(),
            given_up: Family::default(),
            out_of_memory: Family::default(),
            upstream: Family::new_with_constructor(latency_histogram),
        };
        let counters = [
            (
                "backend_starts",
                "Notebook backend processes started",
                &backend.starts,
            ),
            (
                "backend_restarts",
                "Notebook backends started again after a crash or a failed start",
                &backend.restarts,
            ),
            (
                "backend_crashes",
                "Ready notebook backends that exited on their own or were killed as hung",
                &backend.crashes,
            ),
            (
                "backend_start_failures",
                "Notebook backend starts that never became ready",
                &backend.start_failures,
            ),
            (
                "backend_given_up",
                "Notebook backends marked failed for good after failures in a row",
                &backend.given_up,
            ),
            (
                "backend_out_of_memory",
                "Notebook backends that ran past their memory limit and were restarted",
                &backend.out_of_memory,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register_with_unit(
            "upstream_duration",
            "Time a notebook backend took to send its response head",
            Unit::Seconds,
            backend.upstream.clone(),
        );
        let auth = AuthCounters::default();
        registry.register(
            "sign_ins",
            "Browser sessions started (login form, sign-in link, access_token link)",
            auth.sign_ins.clone(),
        );
        registry.register(
            "credential_failures",
            "Credentials checked and found wrong",
            auth.failures.clone(),
        );
        registry.register(
            "credential_attempts_limited",
            "Credential attempts refused unchecked by the failed-login limit",
            auth.limited.clone(),
        );
        let sources: Arc<Mutex<Vec<Weak<dyn BackendSource>>>> = Arc::default();
        registry.register_collector(Box::new(Sampler {
            sources: Arc::clone(&sources),
        }));
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                durations,
                backend,
                auth,
                sources,
            }),
        }
    }

    /// Every series now, in the Prometheus text format ([`Metrics::CONTENT_TYPE`]). Backend
    /// states, sessions, memory and CPU are read at this moment.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// Records one answered request.
    pub(crate) fn record_request(
        &self,
        mount: &Arc<str>,
        method: MethodLabel,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            mount: Arc::clone(mount),
            method,
            status,
        };
        self.inner.requests.get_or_create(&labels).inc();
        self.inner
            .durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The counters the auth layer records into.
    pub(crate) fn auth(&self) -> AuthCounters {
        self.inner.auth.clone()
    }

    /// Lets the backends of `source` be sampled at each scrape, for as long as it lives.
    pub(crate) fn watch(&self, source: Weak<dyn BackendSource>) {
        let mut sources = lock(&self.inner.sources);
        sources.retain(|source| source.strong_count() > 0);
        sources.push(source);
    }

    /// The series handles of one backend's mount, resolved once.
    fn backend_series(&self, mount: &Arc<str>) -> BackendSeries {
        let labels = MountLabels {
            mount: Arc::clone(mount),
        };
        let families = &self.inner.backend;
        BackendSeries {
            starts: families.starts.get_or_create_owned(&labels),
            restarts: families.restarts.get_or_create_owned(&labels),
            crashes: families.crashes.get_or_create_owned(&labels),
            start_failures: families.start_failures.get_or_create_owned(&labels),
            given_up: families.given_up.get_or_create_owned(&labels),
            out_of_memory: families.out_of_memory.get_or_create_owned(&labels),
            upstream: families.upstream.get_or_create_owned(&labels),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// `mount`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mount: Arc<str>,
    method: MethodLabel,
    status: u16,
}

/// `mount`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    mount: Arc<str>,
}

/// A request method as a label value: the nine of RFC 9110 and PATCH, or `other`, so that a
/// client cannot make up new series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) struct MethodLabel(&'static str);

impl MethodLabel {
    pub(crate) fn of(method: &Method) -> Self {
        Self(match method.as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "OPTIONS" => "OPTIONS",
            "CONNECT" => "CONNECT",
            "TRACE" => "TRACE",
            _ => "other",
        })
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.0, encoder)
    }
}

/// Sign-ins, wrong credentials and limited attempts, recorded by the auth layer.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthCounters {
    sign_ins: Counter,
    failures: Counter,
    limited: Counter,
}

impl AuthCounters {
    /// A browser session started (a session cookie was minted).
    pub(crate) fn signed_in(&self) {
        self.sign_ins.inc();
    }

    /// A credential was checked and found wrong.
    pub(crate) fn failed(&self) {
        self.failures.inc();
    }

    /// A credential attempt was refused unchecked: the client's allowance is used up.
    pub(crate) fn limited(&self) {
        self.limited.inc();
    }
}

/// The series of one mount that its backends' events go into.
#[derive(Clone, Debug)]
struct BackendSeries {
    starts: Counter,
    restarts: Counter,
    crashes: Counter,
    start_failures: Counter,
    given_up: Counter,
    out_of_memory: Counter,
    upstream: Histogram,
}

/// What one backend went through, for the admin page and the metrics: kept by the backend's
/// supervisor ([`started`](Self::started), [`ready`](Self::ready), [`failed`](Self::failed),
/// [`stopped`](Self::stopped)) and by its proxy ([`upstream`](Self::upstream)).
#[derive(Debug)]
pub(crate) struct BackendStats {
    /// The configured mount path the backend serves under (a directory mount's own path).
    mount: Arc<str>,
    /// The backend's own path: the mount, or the directory mount and the notebook's path.
    path: Arc<str>,
    series: Option<BackendSeries>,
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    starts: u64,
    restarts: u64,
    /// Since when the running process is ready.
    ready_since: Option<Instant>,
    /// The last failure: when, and the gateway's account of it.
    last_failure: Option<(SystemTime, Arc<str>)>,
}

/// A copy of a backend's [`BackendStats`] at one moment.
#[derive(Clone, Debug)]
pub(crate) struct BackendHistory {
    pub(crate) starts: u64,
    pub(crate) restarts: u64,
    pub(crate) uptime: Option<Duration>,
    pub(crate) last_failure: Option<(SystemTime, Arc<str>)>,
}

impl BackendStats {
    /// The record of a backend serving `path` under the configured mount `mount`, recording
    /// into `metrics` if given.
    pub(crate) fn new(mount: &str, path: &str, metrics: Option<&Metrics>) -> Self {
        let mount: Arc<str> = mount_label(mount).into();
        Self {
            series: metrics.map(|metrics| metrics.backend_series(&mount)),
            path: mount_label(path).into(),
            mount,
            history: Mutex::default(),
        }
    }

    /// The configured mount path (`/` for the root).
    pub(crate) fn mount(&self) -> &Arc<str> {
        &self.mount
    }

    /// The backend's own path.
    pub(crate) fn path(&self) -> &Arc<str> {
        &self.path
    }

    /// A process is being started; `after_failure` when the last one crashed or failed.
    pub(crate) fn started(&self, after_failure: bool) {
        let mut history = lock(&self.history);
        history.starts += 1;
        history.restarts += u64::from(after_failure);
        history.ready_since = None;
        if let Some(series) = &self.series {
            series.starts.inc();
            if after_failure {
                series.restarts.inc();
            }
        }
    }

    /// The process answers.
    pub(crate) fn ready(&self) {
        lock(&self.history).ready_since = Some(Instant::now());
    }

    /// The process stopped on request (idle, admin, shutdown).
    pub(crate) fn stopped(&self) {
        lock(&self.history).ready_since = None;
    }

    /// The backend failed: `crashed` when it had been ready, `given_up` when it will not be
    /// restarted.
    pub(crate) fn failed(&self, reason: &str, crashed: bool, given_up: bool) {
        let mut history = lock(&self.history);
        history.last_failure = Some((SystemTime::now(), reason.into()));
        history.ready_since = None;
        if let Some(series) = &self.series {
            if crashed {
                series.crashes.inc();
            } else {
                series.start_failures.inc();
            }
            if given_up {
                series.given_up.inc();
            }
        }
    }

    /// The backend ran past its memory limit (`message` says so) and is being restarted.
    pub(crate) fn out_of_memory(&self, message: &str) {
        let mut history = lock(&self.history);
        history.last_failure = Some((SystemTime::now(), message.into()));
        history.ready_since = None;
        if let Some(series) = &self.series {
            series.out_of_memory.inc();
        }
    }

    /// The backend took `elapsed` to send a response head.
    pub(crate) fn upstream(&self, elapsed: Duration) {
        if let Some(series) = &self.series {
            series.upstream.observe(elapsed.as_secs_f64());
        }
    }

    /// A copy of the history now.
    pub(crate) fn history(&self) -> BackendHistory {
        let history = lock(&self.history);
        BackendHistory {
            starts: history.starts,
            restarts: history.restarts,
            uptime: history.ready_since.map(|since| since.elapsed()),
            last_failure: history.last_failure.clone(),
        }
    }
}

/// A mount path as a label value: `/` for the root.
pub(crate) fn mount_label(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Where a backend is in its life, as the metrics and the admin page name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackendState {
    Idle,
    Starting,
    Ready,
    Failed,
    OutOfMemory,
    Stopped,
}

impl BackendState {
    pub(crate) const ALL: [BackendState; 6] = [
        BackendState::Idle,
        BackendState::Starting,
        BackendState::Ready,
        BackendState::Failed,
        BackendState::OutOfMemory,
        BackendState::Stopped,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BackendState::Idle => "idle",
            BackendState::Starting => "starting",
            BackendState::Ready => "ready",
            BackendState::Failed => "failed",
            BackendState::OutOfMemory => "out_of_memory",
            BackendState::Stopped => "stopped",
        }
    }
}

/// One backend as a scrape sees it.
#[derive(Clone, Debug)]
pub(crate) struct BackendSample {
    pub(crate) mount: Arc<str>,
    pub(crate) path: Arc<str>,
    pub(crate) state: BackendState,
    pub(crate) pid: Option<u32>,
    pub(crate) sessions: usize,
}

/// Something that has backends to report at scrape time (the backends of a built app).
pub(crate) trait BackendSource: Send + Sync {
    /// Appends every backend now.
    fn sample(&self, into: &mut Vec<BackendSample>);
}

/// Encodes the series read at scrape time.
struct Sampler {
    sources: Arc<Mutex<Vec<Weak<dyn BackendSource>>>>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

/// `state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// `mount`, `backend`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    mount: Arc<str>,
    backend: Arc<str>,
}

impl Collector for Sampler {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sources: Vec<Arc<dyn BackendSource>> = lock(&self.sources)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut samples = Vec::new();
        for source in &sources {
            source.sample(&mut samples);
        }

        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "backends",
            "Notebook backends by state",
            None,
            gauge.metric_type(),
        )?;
        for state in BackendState::ALL {
            let count = samples.iter().filter(|s| s.state == state).count();
            let labels = StateLabels {
                state: state.as_str(),
            };
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }

        let mut mounts: Vec<&Arc<str>> = samples.iter().map(|s| &s.mount).collect();
        mounts.sort();
        mounts.dedup();
        let mut family = encoder.encode_descriptor(
            "websocket_sessions",
            "WebSocket sessions open now, by mount",
            None,
            gauge.metric_type(),
        )?;
        for mount in mounts {
            let open: usize = samples
                .iter()
                .filter(|s| &s.mount == mount)
                .map(|s| s.sessions)
                .sum();
            let labels = MountLabels {
                mount: Arc::clone(mount),
            };
            ConstGauge::new(open as i64).encode(family.encode_family(&labels)?)?;
        }

        let running: Vec<(&BackendSample, u32)> = samples
            .iter()
            .filter_map(|sample| sample.pid.map(|pid| (sample, pid)))
            .collect();
        let usage = procfs::group_usage(running.iter().map(|(_, pid)| *pid));
        // Each running backend's labels and what it uses, for the two series below.
        let measured: Vec<(BackendLabels, &procfs::Usage)> = running
            .iter()
            .filter_map(|(sample, pid)| {
                let labels = BackendLabels {
                    mount: Arc::clone(&sample.mount),
                    backend: Arc::clone(&sample.path),
                };
                Some((labels, usage.get(pid)?))
            })
            .collect();
        let mut family = encoder.encode_descriptor(
            "backend_resident_memory",
            "Resident memory of each running backend's process group",
            Some(&Unit::Bytes),
            gauge.metric_type(),
        )?;
        for (labels, usage) in &measured {
            let bytes = i64::try_from(usage.resident_bytes).unwrap_or(i64::MAX);
            ConstGauge::new(bytes).encode(family.encode_family(labels)?)?;
        }
        let counter = ConstCounter::new(0.0f64);
        let mut family = encoder.encode_descriptor(
            "backend_cpu",
            "CPU time used by each running backend's process group",
            Some(&Unit::Seconds),
            counter.metric_type(),
        )?;
        for (labels, usage) in &measured {
            ConstCounter::new(usage.cpu_seconds).encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(MethodLabel::of(&Method::GET).0, "GET");
        assert_eq!(MethodLabel::of(&Method::PATCH).0, "PATCH");
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(MethodLabel::of(&made_up).0, "other");
    }

    #[test]
    fn recorded_series_render_in_the_text_format() {
        let metrics = Metrics::new();
        let mount: Arc<str> = "/apps".into();
        metrics.record_request(
            &mount,
            MethodLabel::of(&Method::POST),
            503,
            Duration::from_millis(3),
        );
        let stats = BackendStats::new("/apps", "/apps/team/q3", Some(&metrics));
        stats.started(false);
        stats.failed("exited", true, false);
        stats.started(true);
        stats.upstream(Duration::from_millis(20));
        metrics.auth().failed();
        let text = metrics.render();
        for line in [
            "marimo_rs_http_requests_total{mount=\"/apps\",method=\"POST\",status=\"503\"} 1",
            "marimo_rs_http_request_duration_seconds_bucket{mount=\"/apps\",method=\"POST\",status=\"503\",le=\"0.005\"} 1",
            "marimo_rs_backend_starts_total{mount=\"/apps\"} 2",
            "marimo_rs_backend_restarts_total{mount=\"/apps\"} 1",
            "marimo_rs_backend_crashes_total{mount=\"/apps\"} 1",
            "marimo_rs_upstream_duration_seconds_count{mount=\"/apps\"} 1",
            "marimo_rs_credential_failures_total 1",
            "marimo_rs_backends{state=\"ready\"} 0",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        let history = stats.history();
        assert_eq!((history.starts, history.restarts), (2, 1));
        assert_eq!(&*history.last_failure.unwrap().1, "exited");
        assert_eq!(&**stats.path(), "/apps/team/q3");
        assert_eq!(&**BackendStats::new("", "", None).mount(), "/");
    }
}
