//! What a policy can read while it decides: the statement and session of the call in progress,
//! copied into the instance's store before the call (`CallContext`), and the host side of the
//! WIT's imports (`host`, `statement`, `session`, `fleet`).
//!
//! A store serves one call at a time, so `statement` and `session` need no handle: they can only
//! mean the statement (and session) of the call in progress.

use sluice_wit::{fleet, host, session, statement, types};

use super::runtime::PluginState;
use crate::facts::QueryFacts;
use crate::phase::SessionInfo;

/// The text parts of a statement and its session, copied into a store before a call. The store
/// is reused across calls, so after the first the copies reuse its buffers (no allocation).
#[derive(Debug, Default)]
pub struct CallContext {
    pub sql: String,
    pub digest: String,
    pub tables: Vec<String>,
    pub hints: Vec<(String, String)>,
    pub user: String,
    pub client_addr: String,
    pub database: Option<String>,
    /// The fleet's load, for a router's `fleet.load`.
    pub load: Vec<types::BackendLoad>,
    /// The position the session's reads must see (`session.required-position`).
    pub required: Option<String>,
    /// Per backend: applied the required position (`fleet.caught-up`).
    pub caught_up: Vec<bool>,
    /// Per backend, when a position is required: what it applied (`fleet.applied-position`).
    pub applied: Vec<Option<String>>,
}

impl CallContext {
    /// Buffers above this size are dropped after a call, so a warm instance that once saw a
    /// 16 MiB INSERT does not keep 16 MiB for good.
    const KEEP_BYTES: usize = 64 << 10;

    /// Lets go of what a call left behind that is larger than a statement usually is.
    pub(super) fn trim(&mut self) {
        if self.sql.capacity() > Self::KEEP_BYTES {
            self.sql = String::new();
        }
        if self.digest.capacity() > Self::KEEP_BYTES {
            self.digest = String::new();
        }
    }

    /// Copies what the policy may read, reusing this context's buffers.
    pub fn load(&mut self, facts: &QueryFacts, sql: &str, session: &SessionInfo<'_>) {
        self.sql.clear();
        self.sql.push_str(sql);
        self.digest.clone_from(&facts.digest);
        self.tables.clone_from(&facts.tables);
        self.hints.clone_from(&facts.hints);
        self.user.clear();
        self.user.push_str(session.user);
        self.client_addr.clear();
        self.client_addr.push_str(session.client_addr);
        match (&mut self.database, session.database) {
            (Some(d), Some(s)) => {
                d.clear();
                d.push_str(s);
            }
            (d, s) => *d = s.map(str::to_string),
        }
        match (&mut self.required, session.required_position) {
            (Some(r), Some(p)) => {
                use std::fmt::Write;
                r.clear();
                let _ = write!(r, "{p}");
            }
            (r, p) => *r = p.map(ToString::to_string),
        }
    }
}

impl host::Host for PluginState {
    fn secret(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name)
    }

    fn log(&mut self, level: host::Level, message: String) {
        let policy = &*self.policy;
        match level {
            host::Level::Trace => tracing::trace!(policy, "{message}"),
            host::Level::Debug => tracing::debug!(policy, "{message}"),
            host::Level::Info => tracing::info!(policy, "{message}"),
            host::Level::Warn => tracing::warn!(policy, "{message}"),
            host::Level::Error => tracing::error!(policy, "{message}"),
        }
    }
}

impl types::Host for PluginState {}

impl statement::Host for PluginState {
    fn sql(&mut self) -> String {
        self.context.sql.clone()
    }

    fn digest(&mut self) -> String {
        self.context.digest.clone()
    }

    fn tables(&mut self) -> Vec<String> {
        self.context.tables.clone()
    }

    fn table(&mut self, index: u32) -> Option<String> {
        let i = usize::try_from(index).ok()?;
        self.context.tables.get(i).cloned()
    }

    fn hint(&mut self, key: String) -> Option<String> {
        self.context
            .hints
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    fn hints(&mut self) -> Vec<(String, String)> {
        self.context.hints.clone()
    }
}

impl fleet::Host for PluginState {
    fn load(&mut self, backend: u32) -> Option<types::BackendLoad> {
        let i = usize::try_from(backend).ok()?;
        self.context.load.get(i).copied()
    }

    fn caught_up(&mut self, backend: u32) -> bool {
        usize::try_from(backend)
            .ok()
            .and_then(|i| self.context.caught_up.get(i).copied())
            .unwrap_or(false)
    }

    fn applied_position(&mut self, backend: u32) -> Option<String> {
        let i = usize::try_from(backend).ok()?;
        self.context.applied.get(i).cloned().flatten()
    }
}

impl session::Host for PluginState {
    fn user(&mut self) -> String {
        self.context.user.clone()
    }

    fn client_addr(&mut self) -> String {
        self.context.client_addr.clone()
    }

    fn database(&mut self) -> Option<String> {
        self.context.database.clone()
    }

    fn required_position(&mut self) -> Option<String> {
        self.context.required.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_statement_is_not_kept_by_the_instance() {
        let session = SessionInfo::plain(1, "app");
        let mut ctx = CallContext::default();
        let big = format!("INSERT INTO t VALUES ('{}')", "x".repeat(1 << 20));
        ctx.load(&crate::facts::analyze(&big), &big, &session);
        assert_eq!(ctx.sql.len(), big.len());
        ctx.trim();
        assert_eq!(ctx.sql.capacity(), 0);
        // A usual statement keeps its buffer for the next call.
        ctx.load(&crate::facts::analyze("SELECT 1"), "SELECT 1", &session);
        ctx.trim();
        assert!(ctx.sql.capacity() >= "SELECT 1".len());
    }
}
