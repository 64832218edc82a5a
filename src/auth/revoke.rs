//! Sign-out that revokes: the sessions signed out before their cookie expired, and the users
//! signed out "everywhere", so that a copy of a cookie taken before the sign-out is refused
//! afterwards.
//!
//! Kept in this process's memory, per replica: replicas share a secret, not state (see
//! ARCHITECTURE.md), so a sign-out on one replica is not known to the others. Bounded in time
//! and size: a revoked session is remembered until its cookie would have expired anyway,
//! a user's "not before" for as long as a session issued before it can live (the longest
//! session lifetime), and never more than [`MAX_SESSIONS`] sessions and [`MAX_USERS`] users.
//! A revocation is never forgotten early: when a table is full even after dropping what has
//! expired, the revocation widens instead (a session's sign-out becomes its user's sign-out
//! everywhere; a user's becomes everyone's: every session issued until then is refused), so
//! memory stays bounded and nothing signed out comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// Most revoked sessions remembered (about 100 bytes each).
pub(crate) const MAX_SESSIONS: usize = 100_000;
/// Most users remembered as signed out everywhere.
pub(crate) const MAX_USERS: usize = 10_000;

/// What a session presents to be checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Presented<'a> {
    /// The session id (empty for a first-format cookie, which has none).
    pub(crate) id: &'a str,
    /// The user's name.
    pub(crate) user: &'a str,
    /// When the session began, Unix milliseconds (0 when unknown).
    pub(crate) issued_ms: u64,
}

/// The revocations of one auth layer, shared by its clones.
#[derive(Debug)]
pub(crate) struct Revocations {
    /// Nothing was ever revoked: the check a request pays is one atomic load.
    empty: AtomicBool,
    /// Revoked session id → when its cookie expires (Unix seconds).
    sessions: Mutex<HashMap<Box<str>, u64>>,
    /// User → sessions issued at or before this (Unix milliseconds) are revoked.
    users: Mutex<HashMap<Box<str>, u64>>,
    /// Every session issued at or before this (Unix milliseconds) is revoked (0: none).
    everyone: AtomicU64,
    max_sessions: usize,
    max_users: usize,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::with_limits(MAX_SESSIONS, MAX_USERS)
    }
}

impl Revocations {
    pub(crate) fn with_limits(max_sessions: usize, max_users: usize) -> Self {
        Self {
            empty: AtomicBool::new(true),
            sessions: Mutex::default(),
            users: Mutex::default(),
            everyone: AtomicU64::new(0),
            max_sessions: max_sessions.max(1),
            max_users: max_users.max(1),
        }
    }

    /// Whether `session` was revoked.
    pub(crate) fn is_revoked(&self, session: Presented<'_>) -> bool {
        if self.empty.load(Ordering::Acquire) {
            return false;
        }
        if session.issued_ms <= self.everyone.load(Ordering::Acquire) {
            return true;
        }
        if lock(&self.users)
            .get(session.user)
            .is_some_and(|&not_before| session.issued_ms <= not_before)
        {
            return true;
        }
        !session.id.is_empty() && lock(&self.sessions).contains_key(session.id)
    }

    /// Revokes one session (`expiry`: when its cookie ends, Unix seconds). `now_ms` is now,
    /// Unix milliseconds; `lifetime_ms` the longest a session lives (for pruning).
    pub(crate) fn revoke_session(
        &self,
        session: Presented<'_>,
        expiry: u64,
        now_ms: u64,
        lifetime_ms: u64,
    ) {
        self.empty.store(false, Ordering::Release);
        if session.id.is_empty() {
            // No id to revoke alone: every session of the user issued until now goes.
            self.revoke_user(session.user, now_ms, lifetime_ms);
            return;
        }
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= self.max_sessions {
            let now = now_ms / 1000;
            sessions.retain(|_, expires| *expires > now);
        }
        if sessions.len() < self.max_sessions {
            sessions.insert(session.id.into(), expiry);
            return;
        }
        drop(sessions);
        tracing::warn!(
            target: "marimo_rs::auth",
            "{} sessions are revoked already: revoking every session of {} instead",
            self.max_sessions,
            session.user
        );
        self.revoke_user(session.user, now_ms, lifetime_ms);
    }

    /// Revokes every session of `user` issued until `now_ms`.
    pub(crate) fn revoke_user(&self, user: &str, now_ms: u64, lifetime_ms: u64) {
        self.empty.store(false, Ordering::Release);
        let mut users = lock(&self.users);
        if users.len() >= self.max_users && !users.contains_key(user) {
            // A "not before" older than the longest session revokes nothing that still lives.
            users.retain(|_, not_before| not_before.saturating_add(lifetime_ms) > now_ms);
        }
        if users.len() < self.max_users || users.contains_key(user) {
            let entry = users.entry(user.into()).or_insert(0);
            *entry = (*entry).max(now_ms);
            return;
        }
        users.clear();
        drop(users);
        tracing::warn!(
            target: "marimo_rs::auth",
            "{} users are signed out everywhere already: every session issued until now is \
             revoked, everyone must sign in again",
            self.max_users
        );
        self.everyone.fetch_max(now_ms, Ordering::AcqRel);
    }

    /// How many sessions and users are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (lock(&self.sessions).len(), lock(&self.users).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session<'a>(id: &'a str, user: &'a str, issued_ms: u64) -> Presented<'a> {
        Presented {
            id,
            user,
            issued_ms,
        }
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn a_revoked_session_stays_revoked_and_others_pass() {
        let revoked = Revocations::default();
        assert!(!revoked.is_revoked(session("a", "ada", 1_000)));
        revoked.revoke_session(session("a", "ada", 1_000), 100, 2_000, DAY_MS);
        assert!(revoked.is_revoked(session("a", "ada", 1_000)));
        assert!(!revoked.is_revoked(session("b", "ada", 1_000)));
        assert!(!revoked.is_revoked(session("c", "bob", 1_000)));
    }

    #[test]
    fn everywhere_revokes_what_was_issued_until_then() {
        let revoked = Revocations::default();
        revoked.revoke_user("ada", 5_000, DAY_MS);
        assert!(revoked.is_revoked(session("a", "ada", 4_999)));
        assert!(revoked.is_revoked(session("b", "ada", 5_000)));
        assert!(
            !revoked.is_revoked(session("c", "ada", 5_001)),
            "a later sign-in"
        );
        assert!(!revoked.is_revoked(session("d", "bob", 1)));
        // First-format cookies (no id, issue time unknown) of that user are revoked too.
        assert!(revoked.is_revoked(session("", "ada", 0)));
        revoked.revoke_session(session("", "bob", 0), 0, 6_000, DAY_MS);
        assert!(revoked.is_revoked(session("", "bob", 0)));
    }

    #[test]
    fn full_tables_widen_instead_of_forgetting() {
        let revoked = Revocations::with_limits(2, 2);
        revoked.revoke_session(session("a", "ada", 1), 1_000, 10, DAY_MS);
        revoked.revoke_session(session("b", "bob", 1), 1_000, 10, DAY_MS);
        // Full, nothing expired: the third sign-out revokes all of carol's sessions.
        revoked.revoke_session(session("c", "carol", 1), 1_000, 20, DAY_MS);
        assert_eq!(revoked.len(), (2, 1));
        assert!(revoked.is_revoked(session("c", "carol", 1)));
        assert!(revoked.is_revoked(session("other", "carol", 15)));
        assert!(revoked.is_revoked(session("a", "ada", 1)), "still revoked");
        // Once expired, sessions make room.
        revoked.revoke_session(session("d", "dan", 1), 3_000, 2_000_000, DAY_MS);
        assert_eq!(revoked.len().0, 1);
        assert!(revoked.is_revoked(session("d", "dan", 1)));
        // Users: full, none old enough to forget: everyone issued until now is revoked.
        revoked.revoke_user("erin", 2_000_001, DAY_MS);
        assert_eq!(revoked.len().1, 2);
        revoked.revoke_user("frank", 2_000_002, DAY_MS);
        assert_eq!(revoked.len().1, 0);
        assert!(revoked.is_revoked(session("x", "zoe", 2_000_002)));
        assert!(!revoked.is_revoked(session("y", "zoe", 2_000_003)));
    }
}
