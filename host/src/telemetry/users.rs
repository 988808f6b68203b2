//! Per-user counters (ProxySQL's `stats_mysql_users`): a session takes its user's counters once
//! at login and bumps them without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Default)]
pub struct UserCounters {
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
}
