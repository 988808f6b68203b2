//! Backends: one `mysql_async` pool per (backend, account), health as seen by the traffic, and
//! the record of which session state each pooled connection carries.
//!
//! The driver's pool reset (`with_reset_connection`) is off: the gateway tracks session state
//! itself and replays only what differs ([`crate::session::state`]), so a borrowed connection costs
//! no extra round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod monitor;

use mysql_async::{Conn, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts};

use crate::config::{BackendConfig, Role};
use crate::error::GatewayError;
use crate::phase::BackendStatus;
use crate::session::state::ReplayState;

/// The backend account a session runs as, plus the client flags that change server behaviour and
/// so need their own pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub found_rows: bool,
}

/// One configured backend server.
pub struct Backend {
    pub config: BackendConfig,
    pools: Mutex<HashMap<Account, Pool>>,
    healthy: AtomicBool,
    in_use: AtomicU32,
    /// Replayable session state each live connection (by server thread id) carries.
    applied: Mutex<HashMap<u32, Arc<ReplayState>>>,
    /// Sessions keep their connection between statements (affinity) until the pool runs short:
    /// a borrower that finds every connection out bumps the epoch and wakes them to give back.
    pub pressure: tokio::sync::Notify,
    pressure_epoch: AtomicU64,
    name: Arc<str>,
    /// Replication lag from the monitor, in ms; `u64::MAX` when unknown.
    lag_ms: AtomicU64,
}

impl Backend {
    fn new(config: BackendConfig) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            pressure: tokio::sync::Notify::new(),
            pressure_epoch: AtomicU64::new(0),
            lag_ms: AtomicU64::new(u64::MAX),
            config,
            pools: Mutex::new(HashMap::new()),
            healthy: AtomicBool::new(true),
            in_use: AtomicU32::new(0),
            applied: Mutex::new(HashMap::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn pool(&self, account: &Account) -> Pool {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pools.get(account) {
            return p.clone();
        }
        let pool = Pool::new(self.opts(account));
        pools.insert(account.clone(), pool.clone());
        pool
    }

    /// What the monitor saw: reachable, and the replication lag (None: unknown).
    pub fn set_monitored(&self, healthy: bool, lag_ms: Option<u32>) {
        self.healthy.store(healthy, Ordering::Relaxed);
        self.lag_ms
            .store(lag_ms.map_or(u64::MAX, u64::from), Ordering::Relaxed);
    }

    pub fn lag_ms(&self) -> Option<u32> {
        u32::try_from(self.lag_ms.load(Ordering::Relaxed)).ok()
    }

    pub fn pressure_epoch(&self) -> u64 {
        self.pressure_epoch.load(Ordering::Relaxed)
    }

    fn opts(&self, account: &Account) -> OptsBuilder {
        let c = &self.config;
        let (host, port) = c
            .address
            .rsplit_once(':')
            .unwrap_or((c.address.as_str(), "3306"));
        let constraints = PoolConstraints::new(c.pool_min, c.pool_max).unwrap_or_default();
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_reset_connection(false)
            .with_inactive_connection_ttl(Duration::from_secs(c.idle_timeout_secs))
            .with_ttl_check_interval(Duration::from_secs(c.idle_timeout_secs.clamp(1, 30)))
            .with_abs_conn_ttl(Some(Duration::from_secs(c.max_lifetime_secs)));
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(host.trim_matches(['[', ']']))
            .tcp_port(port.parse().unwrap_or(3306))
            .user(Some(account.user.clone()))
            .pass(Some(account.password.clone()))
            .prefer_socket(false)
            .tcp_nodelay(true)
            .client_found_rows(account.found_rows)
            .stmt_cache_size(c.stmt_cache_size)
            .pool_opts(pool_opts);
        if c.tls {
            opts = opts.ssl_opts(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(c.tls_skip_verify)
                    .with_danger_skip_domain_validation(c.tls_skip_verify),
            );
        }
        opts
    }

    /// Borrows a connection; fails with a 2003-class error when the backend cannot be reached.
    pub async fn get(self: &Arc<Self>, account: &Account) -> Result<BackendConn, GatewayError> {
        if self.in_use.load(Ordering::Relaxed) as usize >= self.config.pool_max {
            self.pressure_epoch.fetch_add(1, Ordering::Relaxed);
            self.pressure.notify_waiters();
        }
        match self.pool(account).get_conn().await {
            Ok(conn) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.in_use.fetch_add(1, Ordering::Relaxed);
                Ok(BackendConn {
                    conn: Some(conn),
                    backend: Arc::clone(self),
                })
            }
            Err(mysql_async::Error::Server(s)) => Err(GatewayError::Server {
                code: s.code,
                state: s.state,
                message: s.message,
            }),
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                Err(GatewayError::BackendUnavailable {
                    backend: self.config.name.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }

    pub fn status(&self) -> BackendStatus {
        BackendStatus {
            name: Arc::clone(&self.name),
            role: self.config.role,
            healthy: self.healthy.load(Ordering::Relaxed),
            lag_ms: self.lag_ms(),
            in_use: self.in_use.load(Ordering::Relaxed),
            idle: 0,
            weight: self.config.weight,
        }
    }

    pub fn mark_unhealthy(&self) {
        self.healthy.store(false, Ordering::Relaxed);
    }

    pub fn applied_state(&self, thread_id: u32) -> Option<Arc<ReplayState>> {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&thread_id)
            .cloned()
    }

    pub fn set_applied_state(&self, thread_id: u32, state: Option<Arc<ReplayState>>) {
        let mut map = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match state {
            Some(s) => {
                // Entries of connections the pool has closed are never removed one by one; bound
                // the map instead (a forgotten entry only costs one replay).
                if map.len() > 16 * self.config.pool_max.max(16) {
                    map.clear();
                }
                map.insert(thread_id, s);
            }
            None => {
                map.remove(&thread_id);
            }
        }
    }

    async fn disconnect(&self) {
        let pools: Vec<Pool> = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in pools {
            let _ = p.disconnect().await;
        }
    }
}

/// A borrowed backend connection; returns to its pool when dropped.
pub struct BackendConn {
    conn: Option<Conn>,
    pub backend: Arc<Backend>,
}

impl BackendConn {
    pub fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("connection present until drop")
    }

    pub fn thread_id(&self) -> u32 {
        self.conn.as_ref().map_or(0, Conn::id)
    }

    /// Throws the connection away instead of returning it (its state is unknown).
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            self.backend.set_applied_state(conn.id(), None);
            tokio::spawn(async move {
                let _ = conn.disconnect().await;
            });
        }
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        self.backend.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All configured backends.
pub struct Fleet {
    backends: Vec<Arc<Backend>>,
}

impl Fleet {
    pub fn new(configs: &[BackendConfig]) -> Self {
        Self {
            backends: configs
                .iter()
                .cloned()
                .map(|c| Arc::new(Backend::new(c)))
                .collect(),
        }
    }

    pub fn primary(&self) -> &Arc<Backend> {
        self.backends
            .iter()
            .find(|b| b.config.role == Role::Primary)
            .unwrap_or(&self.backends[0])
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.config.name == name)
    }

    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends.iter().map(|b| b.status()).collect()
    }

    pub async fn disconnect(&self) {
        for b in &self.backends {
            b.disconnect().await;
        }
    }
}
