//! The failed-login limiter: a token bucket per client address, drained by failed credential
//! checks.
//!
//! Each address may fail `burst` times in a row; the bucket refills at `burst` per `per`
//! (so `login_limit(10, 60 s)` is "10 failures a minute", one more every 6 s). The bucket is
//! kept as one number, its *theoretical arrival time* (GCRA, the generic cell rate algorithm):
//! an attempt at time `t` is allowed when `tat - t <= (burst - 1) · T`, with `T = per / burst`,
//! and then `tat = max(tat, t) + T`. An entry with `tat <= t` is a full bucket, the same as no
//! entry, so it can be dropped at any time.
//!
//! A credential check takes a token *before* the password is compared and gives it back when
//! the credential was right, so concurrent attempts cannot slip past the limit: at most
//! `burst` wrong passwords (plus the refill) are ever compared.
//!
//! Memory is bounded: at most `max_tracked` addresses are kept (16 shards, each a
//! `Mutex<HashMap>` with SipHash keyed at random, so addresses cannot be chosen to collide).
//! Full buckets are swept every minute, and at most once a second from a shard that is full.
//! Addresses that find their shard full even after a sweep share one overflow bucket: under a
//! flood from more addresses than the cap, new addresses are limited together instead of not
//! at all.
//!
//! Addresses are keyed by IPv4 address or by IPv6 `/64` prefix (one host usually owns a whole
//! `/64`, and could otherwise rotate through 2^64 addresses). IPv4-mapped IPv6 addresses are
//! IPv4.
//!
//! Why not `governor`, whose keyed GCRA limiter (`RateLimiter::dashmap`, `retain_recent`) is
//! the same algorithm: it has no way to give a cell back, and no bound on the addresses it
//! tracks. Without the refund every right credential would spend an allowance, so a script
//! sending its `Bearer` token with each call would be refused after `burst` calls. Without the
//! bound a flood from many addresses grows the table until the next `retain_recent`: measured
//! with governor 0.10.4 (release build, a counting allocator, one `check_key` for each of
//! 1,000,000 distinct IPv4 keys, 10 per minute), it tracked all 1,000,000, 52.4 bytes each
//! (50 MiB), and none of them was limited; this limiter stays at 100,000 addresses and about
//! 3 MiB, and limits the rest together (`cargo bench --bench login_limit`).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Failed attempts allowed in a row, by default.
pub(crate) const DEFAULT_BURST: u32 = 10;
/// The time over which a default bucket refills completely.
pub(crate) const DEFAULT_PER: Duration = Duration::from_secs(60);
/// Most addresses tracked at once, by default.
pub(crate) const DEFAULT_MAX_TRACKED: usize = 100_000;
/// Shards of the address map.
const SHARDS: usize = 16;
/// How often a shard drops its full buckets, at the latest.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often a full shard may be swept to make room.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Whom a bucket belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum ClientKey {
    /// An IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6(u64),
    /// The request carried no address ([`RemoteAddr`](crate::RemoteAddr) not set): every such
    /// request shares this bucket.
    Unknown,
}

impl ClientKey {
    /// The key of `ip`: the IPv4 address, or the IPv6 `/64`.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// What a caller got from [`Limiter::acquire`]: the bucket to refund if the credential was
/// right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "refund the permit when the credential was valid"]
pub(crate) enum Permit {
    Tracked(ClientKey),
    Overflow,
}

/// The limiter shared by every clone of one [`AuthLayer`](crate::AuthLayer).
pub(crate) struct Limiter {
    burst: u32,
    per: Duration,
    /// Nanoseconds per token.
    step: u64,
    /// How far ahead of now the arrival time may be and still allow an attempt.
    tolerance: u64,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    overflow: Mutex<u64>,
}

struct Shard {
    buckets: HashMap<ClientKey, u64>,
    next_sweep: u64,
    next_full_sweep: u64,
}

impl Limiter {
    /// `burst` failures in a row, refilled at `burst` per `per`, at most `max_tracked`
    /// addresses (rounded up to a multiple of the shard count).
    pub(crate) fn new(burst: u32, per: Duration, max_tracked: usize) -> Self {
        Self::with_shards(burst, per, max_tracked, SHARDS)
    }

    pub(crate) fn with_shards(
        burst: u32,
        per: Duration,
        max_tracked: usize,
        shards: usize,
    ) -> Self {
        assert!(burst > 0, "the burst must be at least 1");
        assert!(!per.is_zero(), "the refill period must not be zero");
        let shards = shards.max(1);
        let per_ns = u64::try_from(per.as_nanos()).unwrap_or(u64::MAX);
        let step = (per_ns / u64::from(burst)).max(1);
        let hasher = RandomState::new();
        Self {
            burst,
            per,
            step,
            tolerance: step.saturating_mul(u64::from(burst - 1)),
            epoch: Instant::now(),
            hasher,
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        next_sweep: 0,
                        next_full_sweep: 0,
                    })
                })
                .collect(),
            shard_cap: max_tracked.div_ceil(shards).max(1),
            overflow: Mutex::new(0),
        }
    }

    /// Nanoseconds since this limiter was made.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token for one credential check by `key` at time `now` (from [`Self::now`]);
    /// `Err(wait)` when the bucket is empty: how long until the next attempt is allowed.
    pub(crate) fn acquire(&self, key: ClientKey, now: u64) -> Result<Permit, Duration> {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.buckets.get_mut(&key) {
            return self.take(tat, now).map(|()| Permit::Tracked(key));
        }
        let full = shard.buckets.len() >= self.shard_cap;
        if now >= shard.next_sweep || (full && now >= shard.next_full_sweep) {
            shard.sweep(now);
        }
        if shard.buckets.len() >= self.shard_cap {
            drop(shard);
            let mut overflow = lock(&self.overflow);
            return self.take(&mut overflow, now).map(|()| Permit::Overflow);
        }
        let mut tat = now;
        let taken = self.take(&mut tat, now);
        shard.buckets.insert(key, tat);
        taken.map(|()| Permit::Tracked(key))
    }

    /// Gives back the token of a check that succeeded.
    pub(crate) fn refund(&self, permit: Permit) {
        match permit {
            Permit::Tracked(key) => {
                if let Some(tat) = self.shard(key).buckets.get_mut(&key) {
                    *tat = tat.saturating_sub(self.step);
                }
            }
            Permit::Overflow => {
                let mut tat = lock(&self.overflow);
                *tat = tat.saturating_sub(self.step);
            }
        }
    }

    /// The limit, and how many addresses are tracked and refused now (the overflow bucket
    /// counts as one address).
    pub(crate) fn state(&self) -> LimitState {
        let now = self.now();
        let mut state = LimitState {
            burst: self.burst,
            per: self.per,
            tracked: 0,
            limited: 0,
        };
        let mut count = |tat: u64| {
            if tat <= now {
                return; // A full bucket, the same as none.
            }
            state.tracked += 1;
            if tat.saturating_sub(now) > self.tolerance {
                state.limited += 1;
            }
        };
        for shard in &self.shards {
            lock(shard).buckets.values().for_each(|&tat| count(tat));
        }
        count(*lock(&self.overflow));
        state
    }

    /// How many addresses are tracked now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).buckets.len())
            .sum()
    }

    fn take(&self, tat: &mut u64, now: u64) -> Result<(), Duration> {
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance));
        }
        *tat = (*tat).max(now).saturating_add(self.step);
        Ok(())
    }

    fn shard(&self, key: ClientKey) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }
}

impl Shard {
    /// Drops full buckets and gives memory back when most of it is unused.
    fn sweep(&mut self, now: u64) {
        self.buckets.retain(|_, tat| *tat > now);
        if self.buckets.capacity() > 64 && self.buckets.len() < self.buckets.capacity() / 4 {
            self.buckets.shrink_to_fit();
        }
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.next_sweep = now.saturating_add(ns(SWEEP_EVERY));
        self.next_full_sweep = now.saturating_add(ns(FULL_SWEEP_EVERY));
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginLimit")
            .field("burst", &self.burst)
            .field("per", &self.per)
            .finish_non_exhaustive()
    }
}

/// What [`Limiter::state`] reports (for the admin page): no addresses, only counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LimitState {
    pub(crate) burst: u32,
    pub(crate) per: Duration,
    /// Addresses with a bucket that is not full.
    pub(crate) tracked: usize,
    /// Addresses whose next credential attempt would be refused.
    pub(crate) limited: usize,
}

/// Seconds for `Retry-After`: `wait` rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEC: u64 = 1_000_000_000;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> ClientKey {
        ClientKey::of(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    #[test]
    fn a_burst_then_one_per_step() {
        // 5 per 10 s: a token every 2 s.
        let limiter = Limiter::new(5, Duration::from_secs(10), 100);
        let key = v4(192, 0, 2, 1);
        for _ in 0..5 {
            assert!(limiter.acquire(key, 0).is_ok());
        }
        let wait = limiter.acquire(key, 0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(retry_after_secs(wait), 2);
        // Still limited just before the refill, allowed once at it, then limited again.
        assert!(limiter.acquire(key, 2 * SEC - 1).is_err());
        assert!(limiter.acquire(key, 2 * SEC).is_ok());
        assert!(limiter.acquire(key, 2 * SEC).is_err());
        // Another address has its own bucket.
        assert!(limiter.acquire(v4(192, 0, 2, 2), 0).is_ok());
        // After the whole period the bucket is full again.
        for _ in 0..5 {
            assert!(limiter.acquire(key, 20 * SEC).is_ok());
        }
        assert!(limiter.acquire(key, 20 * SEC).is_err());
    }

    #[test]
    fn refunds_give_the_token_back() {
        let limiter = Limiter::new(2, Duration::from_secs(60), 100);
        let key = v4(10, 0, 0, 1);
        for _ in 0..10 {
            let permit = limiter.acquire(key, 0).unwrap();
            limiter.refund(permit);
        }
        assert!(limiter.acquire(key, 0).is_ok());
        assert!(limiter.acquire(key, 0).is_ok());
        assert!(limiter.acquire(key, 0).is_err());
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::of(mapped), v4(192, 0, 2, 7));
        // One /64 shares one bucket however many addresses it uses.
        let limiter = Limiter::new(3, Duration::from_secs(60), 100);
        let mut allowed = 0;
        for host in 0..100u128 {
            let ip =
                Ipv6Addr::from(u128::from("2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()) + host);
            allowed += usize::from(limiter.acquire(ClientKey::of(IpAddr::V6(ip)), 0).is_ok());
        }
        assert_eq!(allowed, 3);
    }

    #[test]
    fn full_buckets_are_swept_and_the_map_never_exceeds_its_cap() {
        let limiter = Limiter::new(2, Duration::from_secs(2), 1_600);
        for i in 0..10_000u32 {
            let _ = limiter.acquire(ClientKey::V4(i), 0);
        }
        assert!(limiter.tracked() <= 1_600, "{}", limiter.tracked());
        // Beyond the cap, new addresses share the overflow bucket: 2 attempts among them all.
        let overflowed = (20_000..20_100u32)
            .filter(|&i| limiter.acquire(ClientKey::V4(i), 0).is_ok())
            .count();
        assert_eq!(
            overflowed, 0,
            "the overflow bucket was drained by the first flood"
        );
        // Once the buckets are full again (after `per`) sweeps make room: new addresses get
        // buckets of their own.
        let fresh = (100_000..100_800u32)
            .filter(|&i| limiter.acquire(ClientKey::V4(i), 61 * SEC).is_ok())
            .count();
        assert_eq!(fresh, 800);
        assert!(limiter.tracked() <= 1_600, "{}", limiter.tracked());
    }

    #[test]
    fn the_state_counts_tracked_and_refused_addresses() {
        let limiter = Limiter::new(2, Duration::from_secs(60), 100);
        let fresh = limiter.state();
        assert_eq!((fresh.burst, fresh.per), (2, Duration::from_secs(60)));
        assert_eq!((fresh.tracked, fresh.limited), (0, 0));
        let now = limiter.now();
        let once = v4(192, 0, 2, 1);
        let twice = v4(192, 0, 2, 2);
        let _ = limiter.acquire(once, now);
        for _ in 0..3 {
            let _ = limiter.acquire(twice, now);
        }
        let state = limiter.state();
        assert_eq!((state.tracked, state.limited), (2, 1));
    }

    #[test]
    #[should_panic(expected = "the burst must be at least 1")]
    fn a_zero_burst_is_refused() {
        let _ =
            crate::AuthLayer::new(crate::Token::new("t")).login_limit(0, Duration::from_secs(1));
    }

    #[test]
    fn debug_shows_the_limit_and_the_proxies() {
        let layer = crate::AuthLayer::new(crate::Token::new("t"));
        let shown = format!("{layer:?}");
        assert!(
            shown.contains("login_limit: Some(LoginLimit { burst: 10, per: 60s"),
            "{shown}"
        );
        let custom = layer
            .clone()
            .login_limit(3, Duration::from_secs(9))
            .trusted_proxies(["10.0.0.0/8", "::1"]);
        let shown = format!("{custom:?}");
        assert!(shown.contains("burst: 3, per: 9s"), "{shown}");
        assert!(
            shown.contains("trusted_proxies: [10.0.0.0/8, ::1/128]"),
            "{shown}"
        );
        let off = format!("{:?}", layer.no_login_limit());
        assert!(off.contains("login_limit: None"), "{off}");
    }
}
