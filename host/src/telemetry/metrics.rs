//! The gateway's counters and latency histograms: plain atomics bumped on the data path, read by
//! `/metrics` and the admin API. Labels are closed sets (statement kind, route, error class), so
//! series stay few whatever the traffic; per-user series live in [`super::users`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ErrorClass;
use crate::facts::StatementKind;

/// Upper bounds of the latency buckets, in microseconds: from 100 µs (a point select here takes
/// ~110 µs; a first bucket of 1 ms would hold them all) to 10 s.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A Prometheus histogram: a count per bucket (not cumulative: one add per sample), the sum
/// and the count.
#[derive(Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment, buckets cumulative as Prometheus wants them.
pub struct LatencySnapshot {
    /// (upper bound in seconds, samples at or below it); the last is +Inf.
    pub cumulative: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros() as u64;
        let i = LATENCY_BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS_US
                .get(i)
                .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
            cumulative.push((le, total));
        }
        LatencySnapshot {
            cumulative,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
        }
    }
}

/// Where a statement ran, as operators count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Primary,
    Replica,
    /// Answered by the gateway itself (KILL, a refused statement's error, ...).
    Gateway,
}

impl Route {
    pub const ALL: [Self; 3] = [Self::Primary, Self::Replica, Self::Gateway];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::Gateway => "gateway",
        }
    }
}

/// The client protocol commands counted (ProxySQL's `stats_mysql_commands_counters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Query,
    Prepare,
    Execute,
    Close,
    LongData,
    Ping,
    InitDb,
    ChangeUser,
    Reset,
    Other,
}

impl CommandKind {
    pub const ALL: [Self; 10] = [
        Self::Query,
        Self::Prepare,
        Self::Execute,
        Self::Close,
        Self::LongData,
        Self::Ping,
        Self::InitDb,
        Self::ChangeUser,
        Self::Reset,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Prepare => "prepare",
            Self::Execute => "execute",
            Self::Close => "close",
            Self::LongData => "long_data",
            Self::Ping => "ping",
            Self::InitDb => "init_db",
            Self::ChangeUser => "change_user",
            Self::Reset => "reset",
            Self::Other => "other",
        }
    }
}

/// Why a client connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `frontend.max-connections` reached (1040).
    TooMany,
    /// A user's `max-connections` reached (1203).
    UserLimit,
    /// Wrong password, unknown user, TLS required.
    Auth,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// Anything else in the connection phase (a malformed handshake, an unknown group).
    Other,
}

impl Refusal {
    pub const ALL: [Self; 5] = [
        Self::TooMany,
        Self::UserLimit,
        Self::Auth,
        Self::HandshakeTimeout,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooMany => "too_many_connections",
            Self::UserLimit => "user_limit",
            Self::Auth => "auth",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Other => "other",
        }
    }
}

const KINDS: usize = StatementKind::ALL.len();
const ROUTES: usize = Route::ALL.len();

/// Every gateway-wide counter.
#[derive(Default)]
pub struct Metrics {
    /// Statements by kind and route.
    statements: [[AtomicU64; ROUTES]; KINDS],
    /// Statement latency by kind.
    latency: [Latency; KINDS],
    commands: [AtomicU64; CommandKind::ALL.len()],
    /// Errors by class and code (codes are few in practice; the map is touched only on errors).
    errors: Mutex<HashMap<(ErrorClass, u16), u64>>,
    pub slow_statements: AtomicU64,
    pub connections_total: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    pub transactions: AtomicU64,
    pub rollbacks: AtomicU64,
    pub transaction_time: Latency,
}

impl Metrics {
    pub fn statement(&self, kind: StatementKind, route: Route, d: Duration) {
        self.statements[kind.index()][route as usize].fetch_add(1, Ordering::Relaxed);
        self.latency[kind.index()].observe(d);
    }

    pub fn command(&self, c: CommandKind) {
        self.commands[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn error(&self, class: ErrorClass, code: u16) {
        *self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((class, code))
            .or_default() += 1;
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A transaction ended after `d`; `rolled_back` when it ended by ROLLBACK (or was rolled
    /// back by the server or the gateway).
    pub fn transaction(&self, d: Duration, rolled_back: bool) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if rolled_back {
            self.rollbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.transaction_time.observe(d);
    }

    /// (kind, route, count) for every pair seen.
    pub fn statements(&self) -> impl Iterator<Item = (StatementKind, Route, u64)> + '_ {
        StatementKind::ALL.into_iter().flat_map(move |k| {
            Route::ALL.into_iter().filter_map(move |r| {
                let n = self.statements[k.index()][r as usize].load(Ordering::Relaxed);
                (n > 0).then_some((k, r, n))
            })
        })
    }

    pub fn statement_count(&self) -> u64 {
        self.statements().map(|(_, _, n)| n).sum()
    }

    /// Latency per statement kind, for kinds that ran.
    pub fn latencies(&self) -> impl Iterator<Item = (StatementKind, &Latency)> + '_ {
        StatementKind::ALL
            .into_iter()
            .map(|k| (k, &self.latency[k.index()]))
            .filter(|(_, l)| l.count() > 0)
    }

    pub fn commands(&self) -> impl Iterator<Item = (CommandKind, u64)> + '_ {
        CommandKind::ALL
            .into_iter()
            .map(|c| (c, self.commands[c as usize].load(Ordering::Relaxed)))
    }

    pub fn refusals(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL
            .into_iter()
            .map(|r| (r, self.refused[r as usize].load(Ordering::Relaxed)))
    }

    /// Errors by class and code, sorted.
    pub fn errors(&self) -> Vec<(ErrorClass, u16, u64)> {
        let mut v: Vec<_> = self
            .errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|((c, code), n)| (*c, *code, *n))
            .collect();
        v.sort_unstable_by_key(|(c, code, _)| (c.as_str(), *code));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_bounded_above() {
        let l = Latency::default();
        for us in [50, 100, 101, 2_000, 20_000_000] {
            l.observe(Duration::from_micros(us));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.cumulative[0], (0.0001, 2));
        assert_eq!(s.cumulative[1].1, 3);
        assert_eq!(s.cumulative.last().map(|c| c.1), Some(5));
        assert!(s.cumulative.last().is_some_and(|c| c.0.is_infinite()));
        assert_eq!(s.cumulative[s.cumulative.len() - 2].1, 4);
    }
}
