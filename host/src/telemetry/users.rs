//! Per-user counters (ProxySQL's `stats_mysql_users`): a session takes its user's counters once
//! at login and bumps them without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A token bucket: `rate` tokens a second, holding at most `burst`. Time is passed in.
#[derive(Debug, Default)]
pub struct TokenBucket {
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl TokenBucket {
    /// Takes one token if there is one at `now`.
    pub fn take(&mut self, now: std::time::Instant, rate: u32, burst: u32) -> bool {
        let burst = f64::from(if burst == 0 { rate } else { burst }.max(1));
        let refill = self.last.map_or(burst, |t| {
            now.saturating_duration_since(t).as_secs_f64() * f64::from(rate)
        });
        self.tokens = (self.tokens + refill).min(burst);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
pub struct UserCounters {
    /// The user's statement rate limit, shared by its sessions.
    pub bucket: Mutex<TokenBucket>,
    /// Statements refused by the rate limit.
    pub rate_limited: AtomicU64,
    pub connections_total: AtomicU64,
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    pub denials: AtomicU64,
    /// Logins refused (wrong password, limits).
    pub refused: AtomicU64,
}

/// A user's counters as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub user: String,
    pub connections: usize,
    /// The user's `max-connections` (0: no limit of its own).
    pub max_connections: usize,
    pub connections_total: u64,
    pub refused: u64,
    pub statements: u64,
    pub errors: u64,
    pub denials: u64,
    /// Statements refused by the user's statements-per-second limit (1226).
    pub rate_limited: u64,
}

/// Counters of every user seen since start. Users come from the configuration or a credentials
/// policy; an unknown name is counted only once it logged in or was refused by name, and names
/// are capped so a scan of made-up users cannot grow the map without end.
#[derive(Default)]
pub struct UserTable {
    users: Mutex<HashMap<Box<str>, Arc<UserCounters>>>,
}

/// Distinct user names counted at most; beyond, new names share one "(other)" entry.
const MAX_USERS: usize = 10_000;
const OTHER: &str = "(other)";

impl UserTable {
    pub fn get(&self, user: &str) -> Arc<UserCounters> {
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = users.get(user) {
            return Arc::clone(c);
        }
        let name = if users.len() >= MAX_USERS {
            OTHER
        } else {
            user
        };
        Arc::clone(users.entry(name.into()).or_default())
    }

    /// (user, counters) for every user seen, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<UserCounters>)> {
        let mut v: Vec<_> = self
            .users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, c)| (k.to_string(), Arc::clone(c)))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl UserCounters {
    pub fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Whether the user may run one more statement now under `rate` per second.
    pub fn admit(&self, rate: u32, burst: u32) -> bool {
        let ok = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(std::time::Instant::now(), rate, burst);
        if !ok {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_bucket_allows_the_burst_then_the_rate() {
        let mut b = TokenBucket::default();
        let t0 = Instant::now();
        // Burst 3 at once, then nothing until time passes.
        assert!((0..3).all(|_| b.take(t0, 2, 3)));
        assert!(!b.take(t0, 2, 3));
        // 2 a second: one token every 500 ms.
        assert!(!b.take(t0 + Duration::from_millis(400), 2, 3));
        assert!(b.take(t0 + Duration::from_millis(500), 2, 3));
        assert!(!b.take(t0 + Duration::from_millis(600), 2, 3));
        // At twice the rate for 10 s, half the statements pass (plus the burst).
        let mut b = TokenBucket::default();
        let passed = (0..400)
            .filter(|i| b.take(t0 + Duration::from_millis(i * 25), 20, 20))
            .count();
        assert!((200..=221).contains(&passed), "{passed}");
        // Burst 0 means one second's worth.
        let mut b = TokenBucket::default();
        assert_eq!((0..10).filter(|_| b.take(t0, 5, 0)).count(), 5);
    }
}
