//! The crate's one policy on poisoned locks: carry on.
//!
//! A `std::sync::Mutex` is poisoned when a thread panics while holding it. Every mutex here
//! guards a cache or a table (backends, sessions, sign-in links, limiter buckets, asset
//! files) whose critical sections are a few map operations that leave it consistent at every
//! step, and each is shared by every request of a gateway. Turning one panicked request into
//! a panic for all later ones (what `.lock().expect(…)` does) would take the whole service
//! down for nothing, so the guard is taken back from the poison instead.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, whether or not a panic poisoned it (see the module documentation).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
