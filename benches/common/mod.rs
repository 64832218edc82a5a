//! Helpers shared by the benchmarks.
#![allow(dead_code, reason = "each benchmark uses some of them")]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future that is ready without waiting (every service measured here answers
/// synchronously), so that the figures hold no executor.
pub(crate) fn now<F: Future>(future: F) -> F::Output {
    match pin!(future)
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the benchmarked service was not immediately ready"),
    }
}

/// This process's resident memory, in KiB (`VmRSS`; 0 where `/proc` has none).
pub(crate) fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
