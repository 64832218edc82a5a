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

/// The value of an identity provider's session cookie for `payload` (the JSON of the
/// session: `i`, `t`, `n`, `e`, `g`, `c`), valid for an hour, signed with `key` and bound to
/// `issuer` and `client_id`: the format documented in `src/auth/cookie.rs`.
pub(crate) fn provider_session(
    key: &[u8],
    issuer: &str,
    client_id: &str,
    payload: &serde_json::Value,
) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    let mut binding = Sha256::new();
    binding.update(b"marimo-rs/oidc-session/v1\0");
    binding.update(issuer.as_bytes());
    binding.update(b"\0");
    binding.update(client_id.as_bytes());
    let binding = binding.finalize();
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
        + 3600;
    let payload = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(b"marimo-rs/session/v2\0");
    mac.update(&binding);
    mac.update(b"p");
    mac.update(&expiry.to_be_bytes());
    mac.update(payload.as_bytes());
    let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("v2.p.{expiry}.{payload}.{tag}")
}
