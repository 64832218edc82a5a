//! Which marimo sessions live behind this gateway: the `session_id`s of the WebSockets it
//! tunnels to one backend, so that an API call for a session that lives elsewhere (another
//! replica, behind a load balancer without affinity) is refused with a clear, retryable error
//! instead of reaching a backend that does not know it.
//!
//! marimo runs each browser session as a kernel inside the backend that accepted its
//! WebSocket (`/ws?session_id=…`); the frontend's API calls name the session in the
//! `Marimo-Session-Id` header. A session is known here from the moment its WebSocket handshake
//! arrives until marimo's `session_ttl` after the last of its sockets closed (marimo keeps the
//! kernel that long for a reconnect), and only while the backend process that accepted it is
//! the one running. At most [`MAX_CLOSED`] closed sessions are remembered; the ones that
//! closed first are forgotten first.
//!
//! The same table enforces the cap on concurrent sessions
//! ([`AppBuilder::max_sessions`](crate::AppBuilder::max_sessions)): a session counts while one
//! of its WebSockets is open, and a new one takes a [`Seat`] for its handshake. A browser
//! reconnecting to (or taking over) a session the backend still holds adds no kernel and is
//! never refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderName, Request, Response, StatusCode};
use tokio::sync::Notify;

use crate::response::{json, unavailable};
use crate::sync::lock;
use crate::Body;

/// The header on which marimo's frontend names its session in API calls.
pub(crate) const SESSION_HEADER: HeaderName = HeaderName::from_static("marimo-session-id");

/// Closed sessions remembered per backend (about 100 bytes each).
pub(crate) const MAX_CLOSED: usize = 4096;
/// Longer session ids are neither remembered nor checked (marimo's are about 10 characters).
const MAX_ID_LEN: usize = 128;
/// How long an API call for an unknown session waits for its WebSocket to arrive: the frontend
/// can send a call while the handshake is still on its way.
pub(crate) const GRACE: Duration = Duration::from_secs(1);
/// Kept beyond marimo's own TTL, so that the gateway never refuses a session marimo still has.
const TTL_SLACK: Duration = Duration::from_secs(2);
/// `Retry-After` of the refusal, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug)]
struct Entry {
    /// The backend process that accepted the session.
    pid: Option<u32>,
    /// Sockets open now (a second socket with the same id takes the session over).
    open: usize,
    /// When the last socket closed, if none is open.
    closed_at: Option<Instant>,
}

/// The sessions of one backend. Shared by the clones of a notebook service.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// How long marimo keeps a session after its last socket closed; `None`: for ever.
    ttl: Option<Duration>,
    entries: Mutex<HashMap<Box<str>, Entry>>,
    opened: Notify,
    /// Concurrent sessions allowed, and the handshakes of new ones under way.
    cap: Option<Cap>,
}

#[derive(Debug)]
struct Cap {
    max: usize,
    /// [`Seat`]s taken: handshakes of new sessions not yet recorded or refused.
    pending: Mutex<usize>,
}

/// A new session's place under the cap, held while its handshake is forwarded (the session is
/// recorded before the seat is given back).
#[derive(Debug)]
pub(crate) struct Seat(Arc<Sessions>);

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(cap) = &self.0.cap {
            let mut pending = lock(&cap.pending);
            *pending = pending.saturating_sub(1);
        }
    }
}

/// The cap on concurrent sessions is reached.
#[derive(Debug)]
pub(crate) struct Full {
    /// The cap.
    pub(crate) max: usize,
}

/// Marks a session's socket open until dropped.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    sessions: Arc<Sessions>,
    id: Box<str>,
    /// The user and the mount, for the audit log's `session_closed`.
    audit: Option<(String, String)>,
}

impl SessionGuard {
    /// Logs the session's opening to the audit log (and its closing, when dropped).
    pub(crate) fn audited(mut self, user: Option<&str>, mount: &str) -> Self {
        let user = user.unwrap_or("-").to_owned();
        crate::audit::notebook_session(true, &user, mount, &self.id);
        self.audit = Some((user, mount.to_owned()));
        self
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.close(&self.id);
        if let Some((user, mount)) = &self.audit {
            crate::audit::notebook_session(false, user, mount, &self.id);
        }
    }
}

impl Sessions {
    /// Sessions of which at most `max` may be open at once (`None`: no cap).
    pub(crate) fn new(ttl: Option<Duration>, max: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            ttl: ttl.map(|ttl| ttl + TTL_SLACK),
            entries: Mutex::new(HashMap::new()),
            opened: Notify::new(),
            cap: max.map(|max| Cap {
                max,
                pending: Mutex::new(0),
            }),
        })
    }

    /// Whether a new session would be refused now (the cap is reached).
    pub(crate) fn full(&self) -> Option<Full> {
        let cap = self.cap.as_ref()?;
        let pending = *lock(&cap.pending);
        (self.open_count() + pending >= cap.max).then_some(Full { max: cap.max })
    }

    /// Lets the WebSocket of session `id` (of backend process `pid`) through the cap: a session
    /// the backend holds passes as it is; a new one gets a [`Seat`] if the cap allows.
    pub(crate) fn admit(
        self: &Arc<Self>,
        id: Option<&str>,
        pid: Option<u32>,
    ) -> Result<Option<Seat>, Full> {
        let Some(cap) = &self.cap else {
            return Ok(None);
        };
        if id.is_some_and(|id| self.knows(id, pid)) {
            return Ok(None);
        }
        let mut pending = lock(&cap.pending);
        if self.open_count() + *pending >= cap.max {
            return Err(Full { max: cap.max });
        }
        *pending += 1;
        Ok(Some(Seat(Arc::clone(self))))
    }

    /// Sessions with a WebSocket open now.
    fn open_count(&self) -> usize {
        lock(&self.entries)
            .values()
            .filter(|entry| entry.open > 0)
            .count()
    }

    /// Records a WebSocket of session `id` accepted by backend process `pid`; `None` when the
    /// id is too long to be tracked.
    pub(crate) fn open(self: &Arc<Self>, id: &str, pid: Option<u32>) -> Option<SessionGuard> {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return None;
        }
        let now = Instant::now();
        {
            let mut entries = lock(&self.entries);
            if let Some(entry) = entries.get_mut(id) {
                if entry.pid != pid {
                    entry.open = 0;
                }
                entry.pid = pid;
                entry.open += 1;
                entry.closed_at = None;
            } else {
                self.make_room(&mut entries, now);
                entries.insert(
                    id.into(),
                    Entry {
                        pid,
                        open: 1,
                        closed_at: None,
                    },
                );
            }
        }
        self.opened.notify_waiters();
        Some(SessionGuard {
            sessions: Arc::clone(self),
            id: id.into(),
            audit: None,
        })
    }

    fn close(&self, id: &str) {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(id) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                entry.closed_at = Some(Instant::now());
            }
        }
    }

    /// Forgets expired sessions; if the table is still full, the session that closed first.
    fn make_room(&self, entries: &mut HashMap<Box<str>, Entry>, now: Instant) {
        if entries.len() < MAX_CLOSED {
            return;
        }
        entries.retain(|_, entry| !self.expired(entry, now));
        let closed = entries.values().filter(|e| e.closed_at.is_some()).count();
        if closed >= MAX_CLOSED {
            let oldest = entries
                .iter()
                .filter_map(|(id, entry)| entry.closed_at.map(|at| (at, id.clone())))
                .min();
            if let Some((_, id)) = oldest {
                entries.remove(&id);
            }
        }
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        match (entry.closed_at, self.ttl) {
            (Some(closed), Some(ttl)) => now.saturating_duration_since(closed) >= ttl,
            _ => false,
        }
    }

    /// Whether session `id` lives in backend process `pid`.
    pub(crate) fn knows(&self, id: &str, pid: Option<u32>) -> bool {
        let mut entries = lock(&self.entries);
        let Some(entry) = entries.get(id) else {
            return false;
        };
        if entry.pid != pid || self.expired(entry, Instant::now()) {
            if entry.open == 0 {
                entries.remove(id);
            }
            return false;
        }
        true
    }

    /// Whether session `id` lives in backend process `pid`, waiting up to `grace` for its
    /// WebSocket to arrive.
    pub(crate) async fn knows_within(&self, id: &str, pid: Option<u32>, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            if self.knows(id, pid) {
                return true;
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return self.knows(id, pid);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// The session a WebSocket handshake opens: its `session_id` query parameter.
pub(crate) fn from_query<B>(req: &Request<B>) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "session_id")
        .map(|(_, value)| value.into_owned())
}

/// The session an HTTP request is for: the `Marimo-Session-Id` header of a call to marimo's API
/// (`/api/…`). Other requests (pages, assets, health checks) belong to no session.
pub(crate) fn from_api_call<B>(req: &Request<B>) -> Option<&str> {
    if !req.uri().path().starts_with("/api/") {
        return None;
    }
    let id = req.headers().get(SESSION_HEADER)?.to_str().ok()?;
    (!id.is_empty() && id.len() <= MAX_ID_LEN).then_some(id)
}

/// `503` with `Retry-After` and marimo's JSON error shape: the session is not here.
pub(crate) fn elsewhere() -> Response<Body> {
    let detail = "This marimo session is not on this server: it lives on another replica, or \
                  it has ended. Behind a load balancer, enable session affinity (sticky \
                  sessions, e.g. a cookie) so that a browser's requests reach the replica that \
                  holds its WebSocket; otherwise reload the page to start a new session.";
    let body = serde_json::json!({ "detail": detail }).to_string();
    unavailable(
        json(StatusCode::SERVICE_UNAVAILABLE, body),
        RETRY_AFTER_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_known_while_open_and_for_the_ttl_after() {
        let sessions = Sessions::new(Some(Duration::from_secs(10)), None);
        assert!(!sessions.knows("s1", Some(1)));
        let first = sessions.open("s1", Some(1)).unwrap();
        let second = sessions.open("s1", Some(1)).unwrap();
        assert!(sessions.knows("s1", Some(1)));
        assert!(!sessions.knows("s1", Some(2)), "another backend process");
        drop(first);
        assert!(sessions.knows("s1", Some(1)), "one socket still open");
        drop(second);
        assert!(sessions.knows("s1", Some(1)), "within the TTL");
        // A TTL of 30 ms (without the slack) instead of waiting 12 s.
        let short = Arc::new(Sessions {
            ttl: Some(Duration::from_millis(30)),
            entries: Mutex::default(),
            opened: Notify::new(),
            cap: None,
        });
        drop(short.open("s2", Some(1)));
        assert!(short.knows("s2", Some(1)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!short.knows("s2", Some(1)), "expired after TTL + slack");
        assert_eq!(short.len(), 0, "an expired session is forgotten");
    }

    #[tokio::test]
    async fn without_a_ttl_sessions_never_expire_and_ids_are_bounded() {
        let sessions = Sessions::new(None, None);
        drop(sessions.open("s", Some(1)));
        assert!(sessions.knows("s", Some(1)));
        assert!(sessions.open("", Some(1)).is_none());
        assert!(sessions
            .open(&"x".repeat(MAX_ID_LEN + 1), Some(1))
            .is_none());
    }

    #[test]
    fn closed_sessions_are_bounded_oldest_first() {
        let sessions = Sessions::new(None, None);
        let open = sessions.open("open", Some(1)).unwrap();
        for i in 0..MAX_CLOSED + 10 {
            drop(sessions.open(&format!("s{i}"), Some(1)));
        }
        assert!(sessions.len() <= MAX_CLOSED + 1);
        assert!(
            sessions.knows("open", Some(1)),
            "open sessions are never evicted"
        );
        assert!(
            !sessions.knows("s0", Some(1)),
            "the first closed is forgotten first"
        );
        assert!(sessions.knows(&format!("s{}", MAX_CLOSED + 9), Some(1)));
        drop(open);
    }

    #[tokio::test]
    async fn a_call_waits_for_its_websocket_within_the_grace() {
        let sessions = Sessions::new(None, None);
        let waiter = {
            let sessions = Arc::clone(&sessions);
            tokio::spawn(async move {
                sessions
                    .knows_within("late", Some(1), Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _guard = sessions.open("late", Some(1)).unwrap();
        assert!(waiter.await.unwrap());
        let started = std::time::Instant::now();
        assert!(
            !sessions
                .knows_within("never", Some(1), Duration::from_millis(100))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn ids_come_from_the_query_and_the_api_header() {
        let ws = Request::get("/ws?a=1&session_id=s%20x").body(()).unwrap();
        assert_eq!(from_query(&ws).as_deref(), Some("s x"));
        assert_eq!(from_query(&Request::get("/ws").body(()).unwrap()), None);
        let call = |path: &str| {
            Request::post(path)
                .header("Marimo-Session-Id", "s1")
                .body(())
                .unwrap()
        };
        assert_eq!(from_api_call(&call("/api/kernel/run")), Some("s1"));
        assert_eq!(from_api_call(&call("/health")), None);
        assert_eq!(from_api_call(&call("/")), None);
        let bare = Request::post("/api/kernel/run").body(()).unwrap();
        assert_eq!(from_api_call(&bare), None);
    }

    #[test]
    fn the_cap_counts_open_sessions_and_handshakes_under_way() {
        let sessions = Sessions::new(None, Some(2));
        assert!(sessions.full().is_none());
        let first = sessions
            .admit(Some("a"), Some(1))
            .unwrap()
            .expect("a new session");
        let a = sessions.open("a", Some(1)).unwrap();
        drop(first);
        let second = sessions.admit(Some("b"), Some(1)).unwrap().expect("a seat");
        // `b`'s handshake is under way: it counts, so a third is refused.
        assert_eq!(sessions.full().map(|full| full.max), Some(2));
        assert!(sessions.admit(Some("c"), Some(1)).is_err());
        assert!(
            sessions.admit(None, Some(1)).is_err(),
            "no id: a new session"
        );
        // The browser of `a` reconnecting, or a second tab taking it over, is let through.
        assert!(matches!(sessions.admit(Some("a"), Some(1)), Ok(None)));
        // A refused handshake gives its seat back.
        drop(second);
        assert!(sessions.full().is_none());
        // A closed session no longer counts (its kernel may linger for marimo's TTL).
        let b = sessions.open("b", Some(1)).unwrap();
        assert!(sessions.full().is_some());
        drop(a);
        assert!(sessions.full().is_none());
        assert!(sessions.admit(Some("c"), Some(1)).unwrap().is_some());
        drop(b);
        assert!(matches!(
            Sessions::new(None, None).admit(Some("x"), None),
            Ok(None)
        ));
    }

    #[tokio::test]
    async fn the_refusal_is_retryable_json() {
        use http_body_util::BodyExt;
        let response = elsewhere();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["detail"].as_str().unwrap().contains("another replica"));
    }
}
