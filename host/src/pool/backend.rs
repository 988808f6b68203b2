//! One configured backend server: its pool (the [`PoolCore`] behind a mutex, plus connecting,
//! pinging and closing), its health as the monitor and the traffic see it, and the guard a
//! borrower holds ([`BackendConn`]), which gives the connection back when dropped.
//!
//! A borrower waits at most `acquire-timeout-ms`, in line (FIFO): a connection given back goes
//! straight to the head of the line through a oneshot channel. What travels on the channel is a
//! guard itself, so a waiter that timed out as it was served drops it and the connection returns.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use tokio::sync::oneshot;

use super::Account;
use super::connect::{self, ConnectError, Link};
use super::core::{CloseReason, PoolCore, PoolCounts, PoolLimits, Pooled, Put, Take};
use super::health::{BreakerConfig, Health, HealthState, Probe, Replication, Transition};
use crate::config::BackendConfig;
use crate::error::GatewayError;
use crate::gtid::GtidPosition;
use crate::phase::BackendStatus;
use crate::replay::ReplayState;

fn limits(c: &BackendConfig) -> PoolLimits {
    PoolLimits {
        min: c.pool_min,
        max: c.pool_max,
        idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        max_lifetime: Duration::from_secs(c.max_lifetime_secs),
        validate_after: Duration::from_millis(c.validate_after_ms),
    }
}

fn breaker(c: &BackendConfig) -> BreakerConfig {
    BreakerConfig {
        failures: c.breaker_failures,
        window: Duration::from_millis(c.breaker_window_ms),
    }
}

/// What a waiter is given.
enum Grant {
    Conn(BackendConn),
    /// A free slot: open a connection in it.
    Slot(Slot),
    /// The backend started draining.
    Refused,
}

type Core = PoolCore<Link, oneshot::Sender<Grant>>;

struct Shared {
    core: Core,
    /// Microseconds from asking to holding a connection.
    acquire_us: Histogram<u64>,
    /// The account of the last borrow: warm connections (`pool-min`) are opened as it.
    warm_account: Option<Arc<Account>>,
}

/// What a backend served, for operators: statements, those that failed, bytes relayed.
#[derive(Debug, Default)]
pub struct Traffic {
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    /// Bytes of results sent on to clients.
    pub bytes_out: AtomicU64,
}

impl Traffic {
    pub fn count(&self, error: bool, bytes_out: u64) {
        self.statements.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }
}

/// A health transition, kept for the status page.
#[derive(Debug, Clone)]
pub struct RecentTransition {
    pub at: std::time::SystemTime,
    pub from: HealthState,
    pub to: HealthState,
    pub why: String,
}

/// Transitions kept per backend.
const RECENT_TRANSITIONS: usize = 16;

/// One configured backend server.
pub struct Backend {
    pub traffic: Traffic,
    /// Statements in flight and latency estimates, for load-aware routing.
    pub load: super::load::LoadStats,
    /// The last few health transitions.
    recent: Mutex<std::collections::VecDeque<RecentTransition>>,
    /// Settings a reload may change in place (sizes, timeouts, weight); a change of address,
    /// role, group or TLS makes a new backend instead.
    config: arc_swap::ArcSwap<BackendConfig>,
    name: Arc<str>,
    address: Arc<str>,
    group: Arc<str>,
    role: crate::config::Role,
    weight: AtomicU32,
    shared: Mutex<Shared>,
    /// Mirrors of the core's counts, read by every routing decision without the lock.
    in_use: AtomicU32,
    idle: AtomicU32,
    waiting: AtomicU32,
    generation: AtomicU64,
    draining: AtomicBool,
    /// Removed from the configuration by a reload (draining for good).
    retired: AtomicBool,
    retired_notify: tokio::sync::Notify,
    /// The health state machine; `healthy` mirrors whether it is usable, for routing without a
    /// lock.
    health: Mutex<Health>,
    healthy: AtomicBool,
    /// Health transitions since start, by the state entered (up, lagging, down, draining).
    transitions: [AtomicU64; 4],
    /// Whether the last probe found it writable and not replicating ([`WriterView`]).
    writer_view: std::sync::atomic::AtomicU8,
    /// The monitor's own view (its last probe answered), apart from the traffic's: a backend the
    /// traffic already marked unhealthy still starts a new generation when the monitor loses it.
    monitor_up: AtomicBool,
    /// Replication lag from the monitor, in ms; `u64::MAX` when unknown.
    lag_ms: AtomicU64,
    /// A position this server is known to have applied (from the monitor and from reads that
    /// waited for one): reads that need no more skip the wait.
    applied: Mutex<GtidPosition>,
    /// The server's `@@version`, once the monitor has read it.
    version: arc_swap::ArcSwapOption<String>,
    /// Sessions keep their connection between statements (affinity) until the pool runs short:
    /// a borrower that joins the line wakes one quiet session to give its connection back (and
    /// a drain wakes them all).
    pub pressure: tokio::sync::Notify,
}

/// What the monitor last saw of a backend as a writer candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WriterView {
    /// Not probed yet (or no monitor): the configured primary is taken for the writer.
    Unknown = 0,
    /// Writable and not replicating.
    Candidate = 1,
    /// Read-only, or replicating.
    NotCandidate = 2,
    Unreachable = 3,
}

/// The pool of a backend, for operators: sizes, waits and what happened since start.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    pub backend: String,
    pub counts: PoolCounts,
    pub healthy: bool,
    /// The health state and why.
    pub health: HealthState,
    pub why: String,
    pub breaker_open: bool,
    /// Health transitions since start, by the state entered (up, lagging, down, draining).
    pub transitions: [u64; 4],
    /// Acquire time percentiles in microseconds: p50, p99, max; and how many were measured.
    pub acquire_p50_us: u64,
    pub acquire_p99_us: u64,
    pub acquire_max_us: u64,
    pub acquires: u64,
}

impl PoolStatus {
    /// Connections closed for `reason` since start.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.counts.counters.closed[i])
    }
}

impl Backend {
    pub fn new(config: BackendConfig) -> Self {
        let limits = limits(&config);
        Self {
            role: config.role,
            address: Arc::from(config.address.as_str()),
            group: Arc::from(config.group.as_str()),
            weight: AtomicU32::new(config.weight),
            traffic: Traffic::default(),
            load: super::load::LoadStats::default(),
            recent: Mutex::new(std::collections::VecDeque::new()),
            name: Arc::from(config.name.as_str()),
            shared: Mutex::new(Shared {
                core: PoolCore::new(limits),
                acquire_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .expect("static histogram bounds"),
                warm_account: None,
            }),
            in_use: AtomicU32::new(0),
            idle: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            retired_notify: tokio::sync::Notify::new(),
            health: Mutex::new(Health::new(config.role, breaker(&config))),
            healthy: AtomicBool::new(true),
            transitions: Default::default(),
            writer_view: std::sync::atomic::AtomicU8::new(WriterView::Unknown as u8),
            monitor_up: AtomicBool::new(true),
            lag_ms: AtomicU64::new(u64::MAX),
            applied: Mutex::new(GtidPosition::default()),
            version: arc_swap::ArcSwapOption::empty(),
            pressure: tokio::sync::Notify::new(),
            config: arc_swap::ArcSwap::from_pointee(config),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The group (cluster) it belongs to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The backend's settings now.
    pub fn config(&self) -> arc_swap::Guard<Arc<BackendConfig>> {
        self.config.load()
    }

    /// The configured role (a promoted replica keeps it; [`super::Group::writer`] follows the
    /// monitor).
    pub fn role(&self) -> crate::config::Role {
        self.role
    }

    /// Whether `new` can apply to this backend in place: the same server, reached the same way.
    pub fn same_server(&self, new: &BackendConfig) -> bool {
        let c = self.config();
        c.address == new.address
            && c.role == new.role
            && c.group == new.group
            && c.tls == new.tls
            && c.tls_skip_verify == new.tls_skip_verify
            && c.tls_ca == new.tls_ca
    }

    /// Applies reloaded settings (a [`Backend::same_server`] change): pool sizes and timeouts,
    /// the breaker, the weight. Connections above a lowered `pool-max` close as they come back.
    pub fn retune(self: &Arc<Self>, new: BackendConfig) {
        let (excess, permits) = {
            let mut g = self.lock();
            let r = g.core.resize(limits(&new));
            self.mirror(&g.core);
            r
        };
        self.health_mut().set_breaker(breaker(&new));
        self.weight.store(new.weight, Ordering::Relaxed);
        self.config.store(Arc::new(new));
        for p in excess {
            connect::close(p.conn);
        }
        for w in permits {
            self.grant_slot(Some(w));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refreshes the lock-free mirrors after a change (called with the lock held).
    fn mirror(&self, core: &Core) {
        let c = core.counts();
        self.in_use.store(c.in_use as u32, Ordering::Relaxed);
        self.idle.store(c.idle as u32, Ordering::Relaxed);
        self.waiting.store(c.waiting as u32, Ordering::Relaxed);
        self.generation.store(c.generation, Ordering::Relaxed);
        self.draining.store(c.draining, Ordering::Relaxed);
    }

    /// Borrows a connection for `account`: an idle one (pinged first if it was idle long or the
    /// backend is suspect), a new one, or the one given back first while waiting in line. Fails
    /// with a 9001 error after `acquire-timeout-ms`, a 2003-class one when the backend cannot be
    /// reached or is draining.
    pub async fn acquire(
        self: &Arc<Self>,
        account: &Arc<Account>,
    ) -> Result<BackendConn, GatewayError> {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(self.config().acquire_timeout_ms);
        loop {
            let step = {
                let mut g = self.lock();
                g.warm_account = Some(Arc::clone(account));
                let take = g.core.take(account, Instant::now());
                let step = match take {
                    Take::Ready { conn, validate } => Step::Ready(conn, validate),
                    Take::Open { evict } => Step::Open(evict),
                    Take::Draining => Step::Draining,
                    Take::Wait => {
                        let (tx, rx) = oneshot::channel();
                        let id = g.core.enqueue(Arc::clone(account), tx);
                        Step::Wait(id, rx)
                    }
                };
                self.mirror(&g.core);
                step
            };
            let conn = match step {
                Step::Ready(p, validate) => {
                    let mut conn = BackendConn::new(Arc::clone(self), p);
                    if validate && !conn.ping().await {
                        conn.fail_validation();
                        continue;
                    }
                    conn
                }
                Step::Open(evict) => {
                    if let Some(p) = evict {
                        connect::close(p.conn);
                    }
                    self.open(account, Slot::new(Arc::clone(self))).await?
                }
                Step::Draining => return Err(self.draining_error()),
                Step::Wait(id, rx) => {
                    self.pressure.notify_one();
                    match self.wait(id, rx, deadline).await? {
                        Grant::Conn(c) => c,
                        Grant::Slot(slot) => self.open(account, slot).await?,
                        Grant::Refused => return Err(self.draining_error()),
                    }
                }
            };
            self.record_acquire(start.elapsed());
            return Ok(conn);
        }
    }

    /// Waits in line until served or `deadline`.
    async fn wait(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<Grant>,
        deadline: Instant,
    ) -> Result<Grant, GatewayError> {
        let waited = tokio::time::timeout_at(deadline.into(), &mut rx).await;
        if let Ok(r) = waited {
            return r.map_err(|_| self.draining_error());
        }
        let cancelled = {
            let mut g = self.lock();
            let c = g.core.cancel(id);
            self.mirror(&g.core);
            c
        };
        if cancelled {
            let (max, waited_ms) = (self.config().pool_max, self.config().acquire_timeout_ms);
            return Err(GatewayError::PoolTimeout {
                backend: self.name().to_string(),
                waited_ms,
                max,
            });
        }
        // Served as the wait ran out: what was given is on its way.
        rx.await.map_err(|_| self.draining_error())
    }

    /// Opens a connection in `slot`.
    async fn open(
        self: &Arc<Self>,
        account: &Arc<Account>,
        slot: Slot,
    ) -> Result<BackendConn, GatewayError> {
        let began = Instant::now();
        match connect::open(&self.config(), account).await {
            Ok(link) => {
                self.health_mut().traffic_success();
                let p = {
                    let mut g = self.lock();
                    let p = g.core.opened(link, Arc::clone(account), Instant::now());
                    self.mirror(&g.core);
                    p
                };
                slot.used();
                let mut conn = BackendConn::new(Arc::clone(self), p);
                conn.opened = Some((began, Instant::now()));
                Ok(conn)
            }
            Err(ConnectError::Server(s)) => {
                drop(slot);
                Err(GatewayError::Server {
                    code: s.code,
                    state: s.state,
                    message: s.message,
                })
            }
            Err(ConnectError::Transport(reason)) => {
                slot.failed();
                let t = self.health_mut().traffic_failure(Instant::now());
                self.note(t);
                // Not a writer until the monitor's probe answers again (when a monitor probes
                // it at all: without one, the next connect decides).
                let _ = self.writer_view.compare_exchange(
                    WriterView::Candidate as u8,
                    WriterView::Unreachable as u8,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                // Unreachable: whatever was open before is of a server that went away.
                self.went_down();
                Err(GatewayError::BackendUnavailable {
                    backend: self.name().to_string(),
                    reason,
                })
            }
        }
    }

    fn draining_error(&self) -> GatewayError {
        GatewayError::BackendUnavailable {
            backend: self.name().to_string(),
            reason: "the backend is draining".into(),
        }
    }

    fn record_acquire(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.lock().acquire_us.record(us);
    }

    /// A connection comes back (the guard's drop).
    fn put(self: &Arc<Self>, p: Pooled<Link>, reusable: bool) {
        let put = {
            let mut g = self.lock();
            let put = g.core.put(p, reusable, Instant::now());
            self.mirror(&g.core);
            put
        };
        match put {
            Put::Idle => {}
            Put::Handoff(tx, p) => {
                // A waiter that has just given up drops the guard, which brings it back here.
                let _ = tx.send(Grant::Conn(BackendConn::new(Arc::clone(self), p)));
            }
            Put::Close { conn, permit, .. } => {
                connect::close(conn.conn);
                self.grant_slot(permit);
            }
        }
    }

    /// Gives a waiter a free slot (an unused slot comes back through the guard's drop).
    fn grant_slot(self: &Arc<Self>, waiter: Option<oneshot::Sender<Grant>>) {
        if let Some(tx) = waiter {
            let _ = tx.send(Grant::Slot(Slot::new(Arc::clone(self))));
        }
    }

    fn health_mut(&self) -> MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs and counts a health transition, and mirrors the health for routing.
    fn note(&self, t: Option<Transition>) {
        let usable = self.health_mut().usable();
        self.healthy.store(usable, Ordering::Relaxed);
        let Some(t) = t else { return };
        let i = match t.to {
            HealthState::Up => 0,
            HealthState::Lagging => 1,
            HealthState::Down => 2,
            HealthState::Draining => 3,
        };
        self.transitions[i].fetch_add(1, Ordering::Relaxed);
        {
            let mut recent = self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if recent.len() == RECENT_TRANSITIONS {
                recent.pop_front();
            }
            recent.push_back(RecentTransition {
                at: std::time::SystemTime::now(),
                from: t.from,
                to: t.to,
                why: t.why.to_string(),
            });
        }
        if t.to == HealthState::Up {
            tracing::info!(backend = %self.name, from = %t.from, to = %t.to, reason = %t.why, "backend health changed");
        } else {
            tracing::warn!(backend = %self.name, from = %t.from, to = %t.to, reason = %t.why, "backend health changed");
        }
    }

    /// The monitor's probe answered: what it saw, and the replication lag (None: unknown).
    pub fn set_probed(&self, probe: Probe, lag_ms: Option<u32>) {
        self.monitor_up.store(true, Ordering::Relaxed);
        // Writable and not replicating (no replication configured: a stopped one still names
        // its source); with replication unknown, the configured role decides.
        let candidate = !probe.read_only
            && match probe.replication {
                Replication::Running { .. } | Replication::Stopped => false,
                Replication::Unknown => self.role() == crate::config::Role::Primary,
                Replication::None => true,
            };
        let view = if candidate {
            WriterView::Candidate
        } else {
            WriterView::NotCandidate
        };
        self.writer_view.store(view as u8, Ordering::Relaxed);
        self.lag_ms
            .store(lag_ms.map_or(u64::MAX, u64::from), Ordering::Relaxed);
        let t = self.health_mut().probed(probe);
        self.note(t);
    }

    /// The monitor's probe failed on the transport. A backend that stops answering starts a new
    /// generation: nothing opened before is lent again.
    pub fn set_unreachable(&self, reason: String) {
        self.lag_ms.store(u64::MAX, Ordering::Relaxed);
        self.writer_view
            .store(WriterView::Unreachable as u8, Ordering::Relaxed);
        let t = self.health_mut().unreachable(reason);
        self.note(t);
        if self.monitor_up.swap(false, Ordering::Relaxed) {
            self.went_down();
        }
    }

    /// The backend went away (a connect failed, the monitor lost it): a new generation.
    pub fn went_down(&self) {
        let stale = {
            let mut g = self.lock();
            let stale = g.core.new_generation();
            self.mirror(&g.core);
            stale
        };
        if !stale.is_empty() {
            tracing::info!(backend = %self.name, closed = stale.len(), "backend unreachable: closing its pooled connections");
        }
        for p in stale {
            connect::close(p.conn);
        }
    }

    /// A connection to this backend was lost mid-statement: a failure for the breaker, and
    /// every idle connection is pinged before it is lent again.
    pub fn connection_lost(&self) {
        let t = self.health_mut().traffic_failure(Instant::now());
        self.note(t);
        let mut g = self.lock();
        g.core.suspect(Instant::now());
    }

    pub fn writer_view(&self) -> WriterView {
        match self.writer_view.load(Ordering::Relaxed) {
            1 => WriterView::Candidate,
            2 => WriterView::NotCandidate,
            3 => WriterView::Unreachable,
            _ => WriterView::Unknown,
        }
    }

    /// The health state and why (for operators and logs).
    pub fn health(&self) -> (HealthState, String) {
        let h = self.health_mut();
        (h.state(), h.why().to_string())
    }

    /// Whether this server is known to have applied `position`.
    pub fn has_applied(&self, position: &GtidPosition) -> bool {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .covers(position)
    }

    /// The server's version string (`@@version`), when the monitor has read it.
    pub fn version(&self) -> Option<Arc<String>> {
        self.version.load_full()
    }

    /// `mariadb` or `mysql`, from the version the monitor read (unknown: `mysql`).
    pub fn system_name(&self) -> &'static str {
        crate::telemetry::trace::system_name(self.version.load().as_deref().map(String::as_str))
    }

    pub fn set_version(&self, version: &str) {
        if self.version.load().as_deref().map(String::as_str) != Some(version) {
            self.version.store(Some(Arc::new(version.to_string())));
        }
    }

    /// This server has applied `position` (positions only grow).
    pub fn note_applied(&self, position: &GtidPosition) {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .merge(position);
    }

    pub fn lag_ms(&self) -> Option<u32> {
        u32::try_from(self.lag_ms.load(Ordering::Relaxed)).ok()
    }

    /// Borrowers are waiting in line: a session must not keep a connection for affinity.
    pub fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// No new borrows; statements in flight and open transactions finish, then the connections
    /// close. Sessions keeping an idle connection for affinity give it back at once.
    pub fn drain(&self) {
        let (idle, waiters) = {
            let mut g = self.lock();
            let d = g.core.drain();
            self.mirror(&g.core);
            d
        };
        let t = self.health_mut().set_draining(true);
        self.note(t);
        for p in idle {
            connect::close(p.conn);
        }
        for w in waiters {
            let _ = w.send(Grant::Refused);
        }
        self.pressure.notify_waiters();
    }

    /// Removed by a reload: drains for good; its upkeep tasks stop.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.drain();
        self.retired_notify.notify_waiters();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Resolves when the backend is retired (after the call began).
    pub async fn retired_notify(&self) {
        self.retired_notify.notified().await;
    }

    pub fn undrain(&self) {
        {
            let mut g = self.lock();
            g.core.undrain();
            self.mirror(&g.core);
        }
        let t = self.health_mut().set_draining(false);
        self.note(t);
    }

    /// Closes idle connections that are due, and opens warm ones up to `pool-min`.
    pub async fn maintain(self: &Arc<Self>) {
        let (due, warm) = {
            let mut g = self.lock();
            let due = g.core.close_idle(Instant::now());
            let healthy = self.healthy.load(Ordering::Relaxed);
            let account = g.warm_account.clone();
            let warm = account.filter(|_| healthy && g.core.reserve_warm());
            self.mirror(&g.core);
            (due, warm)
        };
        for p in due {
            connect::close(p.conn);
        }
        if let Some(account) = warm {
            // Opened as a borrower would, then given back: it waits idle (or serves the line).
            if let Ok(conn) = self.open(&account, Slot::new(Arc::clone(self))).await {
                drop(conn);
            }
        }
    }

    /// The backend as routing sees it.
    pub fn status(&self) -> BackendStatus {
        self.status_at(Instant::now())
    }

    /// The backend as routing sees it at `now` (one clock read for a whole fleet).
    pub fn status_at(&self, now: Instant) -> BackendStatus {
        BackendStatus {
            name: Arc::clone(&self.name),
            role: self.role,
            healthy: self.healthy.load(Ordering::Relaxed) && !self.is_draining(),
            lag_ms: self.lag_ms(),
            in_use: self.in_use.load(Ordering::Relaxed),
            idle: self.idle.load(Ordering::Relaxed),
            weight: self.weight.load(Ordering::Relaxed),
            load: self.load.snapshot(now),
            caught_up: true,
            applied: None,
        }
    }

    /// Whether this backend is known to have applied `position`, and what it applied (for
    /// routers of a session that must see `position`).
    pub fn progress(&self, position: &GtidPosition) -> (bool, GtidPosition) {
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (applied.covers(position), applied.clone())
    }

    /// The pool, for operators.
    pub fn pool_status(&self) -> PoolStatus {
        let (health, why) = self.health();
        let breaker_open = self.health_mut().breaker_open();
        let g = self.lock();
        PoolStatus {
            backend: self.name().to_string(),
            counts: g.core.counts(),
            healthy: self.healthy.load(Ordering::Relaxed),
            health,
            why,
            breaker_open,
            transitions: std::array::from_fn(|i| self.transitions[i].load(Ordering::Relaxed)),
            acquire_p50_us: g.acquire_us.value_at_quantile(0.5),
            acquire_p99_us: g.acquire_us.value_at_quantile(0.99),
            acquire_max_us: g.acquire_us.max(),
            acquires: g.acquire_us.len(),
        }
    }

    /// The last few health transitions, oldest first.
    pub fn recent_transitions(&self) -> Vec<RecentTransition> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Acquire times as a Prometheus histogram: for each bound (µs) the acquires at or below
    /// it, then the sum (µs) and the count.
    pub fn acquire_histogram(&self, bounds_us: &[u64]) -> (Vec<u64>, f64, u64) {
        let g = self.lock();
        let h = &g.acquire_us;
        let cumulative = bounds_us.iter().map(|b| h.count_between(0, *b)).collect();
        (cumulative, h.mean() * h.len() as f64, h.len())
    }

    /// Closes every idle connection (shutdown).
    pub async fn disconnect(&self) {
        let idle = {
            let mut g = self.lock();
            let (idle, _) = g.core.drain();
            self.mirror(&g.core);
            idle
        };
        for p in idle {
            let _ = p.conn.conn.disconnect().await;
        }
    }
}

enum Step {
    Ready(Pooled<Link>, bool),
    Open(Option<Pooled<Link>>),
    Wait(u64, oneshot::Receiver<Grant>),
    Draining,
}

/// A reserved slot to open a connection in; given back to the line if dropped unused.
struct Slot {
    backend: Option<Arc<Backend>>,
}

impl Slot {
    fn new(backend: Arc<Backend>) -> Self {
        Self {
            backend: Some(backend),
        }
    }

    /// The connection was opened (the core counted it).
    fn used(mut self) {
        self.backend = None;
    }

    fn failed(mut self) {
        if let Some(b) = self.backend.take() {
            b.release_slot(true);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(b) = self.backend.take() {
            b.release_slot(false);
        }
    }
}

impl Backend {
    fn release_slot(self: &Arc<Self>, connect_failed: bool) {
        let next = {
            let mut g = self.lock();
            let n = g.core.slot_unused(connect_failed);
            self.mirror(&g.core);
            n
        };
        self.grant_slot(next);
    }
}

/// A borrowed backend connection; goes back to its pool when dropped.
pub struct BackendConn {
    pub backend: Arc<Backend>,
    pooled: Option<Pooled<Link>>,
    reusable: bool,
    /// When this borrow opened the connection: when connecting began and ended (traces).
    pub opened: Option<(Instant, Instant)>,
}

impl BackendConn {
    fn new(backend: Arc<Backend>, pooled: Pooled<Link>) -> Self {
        Self {
            backend,
            pooled: Some(pooled),
            reusable: true,
            opened: None,
        }
    }

    fn link(&mut self) -> &mut Link {
        &mut self.pooled.as_mut().expect("a connection until drop").conn
    }

    pub fn conn(&mut self) -> &mut Conn {
        &mut self.link().conn
    }

    /// How long the backend may stay silent during a statement (`read-timeout-ms`).
    pub fn read_timeout(&self) -> Option<Duration> {
        let ms = self.backend.config().read_timeout_ms;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn thread_id(&self) -> u32 {
        self.pooled.as_ref().map_or(0, |p| p.conn.conn.id())
    }

    /// The session state this connection carries (`None`: unknown, reset it first).
    pub fn applied(&self) -> Option<&Arc<ReplayState>> {
        self.pooled.as_ref().and_then(|p| p.conn.applied.as_ref())
    }

    pub fn set_applied(&mut self, state: Option<Arc<ReplayState>>) {
        self.link().applied = state;
    }

    /// Of the backend's current generation (opened since it last went down).
    pub fn is_current(&self) -> bool {
        self.pooled
            .as_ref()
            .is_some_and(|p| p.generation == self.backend.generation.load(Ordering::Relaxed))
    }

    /// Throws the connection away instead of giving it back (its state is unknown).
    pub fn discard(mut self) {
        self.reusable = false;
    }

    /// A ping within the connect timeout.
    async fn ping(&mut self) -> bool {
        let timeout = Duration::from_millis(self.backend.config().connect_timeout_ms);
        matches!(
            tokio::time::timeout(timeout, self.conn().ping()).await,
            Ok(Ok(()))
        )
    }

    fn fail_validation(mut self) {
        if let Some(p) = self.pooled.take() {
            connect::close(p.conn);
            let next = {
                let mut g = self.backend.lock();
                let n = g.core.failed_validation();
                self.backend.mirror(&g.core);
                n
            };
            self.backend.grant_slot(next);
        }
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        if let Some(p) = self.pooled.take() {
            // A statement abandoned mid-way (its future dropped) leaves the driver's connection
            // marked disconnected: never lend it again.
            let reusable = self.reusable && !p.conn.conn.is_disconnected();
            self.backend.put(p, reusable);
        }
    }
}
