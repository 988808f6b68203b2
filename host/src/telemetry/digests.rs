//! The digest table: per (statement digest, user, schema, backend) counts, rows, errors and a
//! latency histogram, as ProxySQL's `stats_mysql_query_digest`. Bounded: the least recently used
//! entry goes when a new shape arrives at a full table (evictions are counted), so memory stays
//! flat whatever the traffic. Sharded by key, so sessions on different cores rarely meet on a lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use lru::LruCache;
use serde::Serialize;

/// Shards of the table (a power of two).
const SHARDS: usize = 16;

/// Latency histograms hold 1 µs .. 1 hour at one significant digit (bucket error ≤ 6.25%):
/// about 2 KiB per entry, fixed, so `max` entries bound the memory.
const HIST_MAX_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 1;

/// What identifies an entry, as the record brings it.
pub struct DigestKey<'a> {
    pub digest_hash: u64,
    pub digest: &'a str,
    pub user: &'a str,
    pub schema: Option<&'a str>,
    pub backend: &'a str,
}

impl DigestKey<'_> {
    /// One number for the whole key (the digest hash is already keyed per process).
    fn hash(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        let mut h = KEYS
            .get_or_init(std::collections::hash_map::RandomState::new)
            .build_hasher();
        self.digest_hash.hash(&mut h);
        self.user.hash(&mut h);
        self.schema.hash(&mut h);
        self.backend.hash(&mut h);
        h.finish()
    }
}

/// One statement's outcome, as the table counts it.
pub struct DigestSample {
    pub duration: Duration,
    pub rows_sent: u64,
    pub rows_affected: u64,
    pub error: bool,
}

struct Entry {
    digest: Box<str>,
    user: Box<str>,
    schema: Option<Box<str>>,
    backend: Box<str>,
    count: u64,
    errors: u64,
    rows_sent: u64,
    rows_affected: u64,
    sum_us: u64,
    min_us: u64,
    max_us: u64,
    first_seen_ms: u64,
    last_seen_ms: u64,
    latency: Histogram<u32>,
}

/// An entry as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DigestRow {
    pub digest: String,
    pub user: String,
    pub schema: Option<String>,
    pub backend: String,
    pub count: u64,
    pub errors: u64,
    pub rows_sent: u64,
    pub rows_affected: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Milliseconds since the Unix epoch.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// The bounded digest table.
pub struct DigestTable {
    shards: Vec<Mutex<LruCache<u64, Entry>>>,
    evictions: AtomicU64,
    max: usize,
}

impl DigestTable {
    /// A table of at most `max` entries (at least one per shard).
    pub fn new(max: usize) -> Self {
        let max = max.max(SHARDS);
        let shards = (0..SHARDS)
            .map(|i| {
                // The first `max % SHARDS` shards hold one more: `max` in all.
                let cap = max / SHARDS + usize::from(i < max % SHARDS);
                Mutex::new(LruCache::new(
                    std::num::NonZeroUsize::new(cap).unwrap_or(std::num::NonZeroUsize::MIN),
                ))
            })
            .collect();
        Self {
            shards,
            evictions: AtomicU64::new(0),
            max,
        }
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, LruCache<u64, Entry>> {
        self.shards[(hash >> 59) as usize % SHARDS]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one statement. Allocates only for a shape not in the table.
    pub fn record(&self, key: &DigestKey<'_>, s: &DigestSample) {
        let hash = key.hash();
        let us = (s.duration.as_micros() as u64).max(1);
        let now = super::unix_ms();
        let mut shard = self.shard(hash);
        if let Some(e) = shard.get_mut(&hash) {
            e.add(us, s, now);
            return;
        }
        let mut e = Entry {
            digest: key.digest.into(),
            user: key.user.into(),
            schema: key.schema.map(Into::into),
            backend: key.backend.into(),
            count: 0,
            errors: 0,
            rows_sent: 0,
            rows_affected: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
            first_seen_ms: now,
            last_seen_ms: now,
            latency: Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
                .expect("static histogram bounds"),
        };
        e.add(us, s, now);
        if shard.push(hash, e).is_some_and(|(k, _)| k != hash) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries evicted to make room since start.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Forgets every entry (the eviction count stays).
    pub fn reset(&self) {
        for s in &self.shards {
            s.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    }

    /// Every entry, copied out one shard at a time (the data path waits at most for one shard).
    pub fn rows(&self) -> Vec<DigestRow> {
        let mut rows = Vec::new();
        for s in &self.shards {
            let shard = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rows.extend(shard.iter().map(|(_, e)| e.row()));
        }
        rows
    }
}

impl Entry {
    fn add(&mut self, us: u64, s: &DigestSample, now: u64) {
        self.count += 1;
        self.errors += u64::from(s.error);
        self.rows_sent += s.rows_sent;
        self.rows_affected += s.rows_affected;
        self.sum_us += us;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.last_seen_ms = now;
        self.latency.saturating_record(us.min(HIST_MAX_US));
    }

    fn row(&self) -> DigestRow {
        let q = |p: f64| self.latency.value_at_quantile(p).min(self.max_us);
        DigestRow {
            digest: self.digest.to_string(),
            user: self.user.to_string(),
            schema: self.schema.as_deref().map(str::to_string),
            backend: self.backend.to_string(),
            count: self.count,
            errors: self.errors,
            rows_sent: self.rows_sent,
            rows_affected: self.rows_affected,
            sum_us: self.sum_us,
            min_us: self.min_us,
            p50_us: q(0.5),
            p95_us: q(0.95),
            p99_us: q(0.99),
            max_us: self.max_us,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// How `/api/digests` orders its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestSort {
    TotalTime,
    Count,
    Errors,
    P99,
    Max,
    Rows,
    LastSeen,
}

impl DigestSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "total" | "sum" | "total_time" => Self::TotalTime,
            "count" => Self::Count,
            "errors" => Self::Errors,
            "p99" => Self::P99,
            "max" => Self::Max,
            "rows" => Self::Rows,
            "last_seen" => Self::LastSeen,
            _ => return None,
        })
    }

    /// Sorts `rows`, largest first.
    pub fn apply(self, rows: &mut [DigestRow]) {
        let key = |r: &DigestRow| match self {
            Self::TotalTime => r.sum_us,
            Self::Count => r.count,
            Self::Errors => r.errors,
            Self::P99 => r.p99_us,
            Self::Max => r.max_us,
            Self::Rows => r.rows_sent + r.rows_affected,
            Self::LastSeen => r.last_seen_ms,
        };
        rows.sort_unstable_by_key(|r| std::cmp::Reverse(key(r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(digest: &str) -> DigestKey<'_> {
        DigestKey {
            digest_hash: crate::facts::digest_hash(digest),
            digest,
            user: "app",
            schema: Some("app"),
            backend: "replica1",
        }
    }

    fn sample(us: u64) -> DigestSample {
        DigestSample {
            duration: Duration::from_micros(us),
            rows_sent: 1,
            rows_affected: 0,
            error: false,
        }
    }

    #[test]
    fn counts_and_percentiles_per_key() {
        let t = DigestTable::new(100);
        for us in 1..=1000 {
            t.record(&key("SELECT ?"), &sample(us));
        }
        t.record(
            &DigestKey {
                user: "other",
                ..key("SELECT ?")
            },
            &sample(5),
        );
        let mut rows = t.rows();
        DigestSort::Count.apply(&mut rows);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(
            (r.count, r.rows_sent, r.min_us, r.max_us),
            (1000, 1000, 1, 1000)
        );
        assert_eq!(r.sum_us, 500_500);
        // One significant digit: within 6.25% above the exact value.
        assert!((990..=1000).contains(&r.p99_us), "{}", r.p99_us);
        assert!((500..=532).contains(&r.p50_us), "{}", r.p50_us);
        assert_eq!(rows[1].user, "other");
        t.reset();
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used() {
        let t = DigestTable::new(1_000);
        let shapes: Vec<String> = (0..2_000).map(|i| format!("SELECT {i}")).collect();
        for s in &shapes {
            t.record(&key(s), &sample(10));
        }
        assert_eq!(t.len(), 1_000);
        assert_eq!(t.evictions(), 1_000);
        // Touching a kept entry keeps it through the next wave of new shapes in its shard.
        let kept: Vec<String> = t.rows().into_iter().map(|r| r.digest).collect();
        let again = kept.len();
        for s in &kept {
            t.record(&key(s), &sample(10));
        }
        assert_eq!(t.len(), again);
        assert_eq!(t.evictions(), 1_000);
    }
}
