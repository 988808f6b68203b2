//! What every session shares: the configuration, the policy behind the phase trait, the backend
//! fleet, the registry of live sessions (for connection ids and KILL) and counters.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::facts::PinReason;
use crate::phase::Policy;
use crate::plugin::loader::LoadError;
use crate::plugin::runtime::Plugin;
use crate::plugin::set::PolicySet;
use crate::pool::{Account, Backend, Fleet};
use crate::session::Hold;
use crate::telemetry::{Telemetry, unix_ms};

/// What a session holds right now, for operators (and tests): why it keeps a backend connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionView {
    pub pins: Vec<PinReason>,
    pub hold: Option<Hold>,
    /// Backend name and server thread id of the held connection.
    pub backend: Option<(String, u32)>,
    /// The digest of the statement that made the first pin (no literal of it).
    pub pinned_by: Option<String>,
    pub schema: Option<String>,
    pub in_transaction: bool,
}

/// The statement a session runs right now (its digest: no literal) and since when.
#[derive(Debug, Default)]
pub struct Activity {
    pub statement: String,
    pub since: Option<Instant>,
}

/// Where a session's statement runs right now: backend, account, server thread id.
pub type Running = (Arc<Backend>, Arc<Account>, u32);

/// A live session as other sessions see it (for `KILL`).
pub struct SessionEntry {
    pub user: String,
    /// The client's address (ip:port).
    pub peer: String,
    pub tls: bool,
    pub connected: Instant,
    /// Milliseconds since the Unix epoch at login.
    pub connected_at_ms: u64,
    pub activity: Mutex<Activity>,
    pub killed: AtomicBool,
    pub kill_notify: Notify,
    /// The backend thread running this session's statement right now.
    pub running: Mutex<Option<Running>>,
    pub view: Mutex<SessionView>,
}

impl SessionEntry {
    pub fn set_running(&self, r: Option<Running>) {
        *self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = r;
    }

    pub fn running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn view(&self) -> SessionView {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The session starts a statement with this digest (the buffer is reused: no allocation
    /// once it has grown to the session's longest digest).
    pub fn begin_statement(&self, digest: &str, since: Instant) {
        let mut a = self
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        a.statement.clear();
        a.statement.push_str(digest);
        a.since = Some(since);
    }

    pub fn end_statement(&self) {
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .since = None;
    }

    /// The running statement and how long it has run.
    pub fn current(&self) -> Option<(String, std::time::Duration)> {
        let a = self
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        a.since.map(|t| (a.statement.clone(), t.elapsed()))
    }

    /// Stops the statement it runs (`KILL QUERY` on its backend thread) and, unless
    /// `query_only`, ends the session.
    pub async fn kill(&self, query_only: bool) {
        use mysql_async::prelude::Queryable;
        if let Some((backend, account, thread)) = self.running()
            && let Ok(mut c) = backend.acquire(&account).await
        {
            let _ = c.conn().query_drop(format!("KILL QUERY {thread}")).await;
        }
        if !query_only {
            self.killed.store(true, Ordering::Relaxed);
            self.kill_notify.notify_one();
        }
    }

    pub fn set_view(&self, v: SessionView) {
        *self
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
    }
}

/// What the policy directory last did: for operators (admin API) and tests.
#[derive(Debug, Clone, Default)]
pub struct PolicyStatus {
    /// Incremented at every successful load.
    pub version: u64,
    /// The active policies ("name (kind)").
    pub active: Vec<String>,
    /// The last refused reload: file and reason. Cleared by a successful one.
    pub last_error: Option<LoadError>,
    /// Refused reloads since start.
    pub errors: u64,
    /// The last reload attempt, ok or refused (ms since the Unix epoch).
    pub last_attempt_ms: u64,
}

pub struct Gateway {
    /// The configuration in force; replaced whole by a reload ([`crate::reload`]).
    config: ArcSwap<Config>,
    /// The active policies behind the phase trait; swapped whole on reload.
    policy: arc_swap::ArcSwap<Box<dyn Policy>>,
    policy_status: Mutex<PolicyStatus>,
    /// The loaded policies of the active set (for their counters).
    plugins: Mutex<Vec<Arc<Plugin>>>,
    /// The routable backends; replaced whole when a reload adds, removes or moves one.
    fleet: Arc<ArcSwap<Fleet>>,
    /// Bumped with every fleet swap: a session re-resolves its group when it sees a new one.
    fleet_epoch: AtomicU64,
    /// Backends a reload removed, draining until their last connection closes.
    retired: Mutex<Vec<Arc<Backend>>>,
    /// The frontend TLS acceptor (`None`: TLS off); a reload or a certificate change swaps it
    /// for the clients that connect next.
    tls: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// The last configuration reloads, for the admin API.
    reloads: Mutex<ReloadStatus>,
    /// Held by a configuration or policy reload from build to swap: one at a time, so neither
    /// installs a policy set built over the other's stale configuration.
    pub reload_lock: tokio::sync::Mutex<()>,
    /// The `[monitor]` section in force, for every backend's monitor task.
    monitor: watch::Sender<Option<crate::config::MonitorConfig>>,
    /// Per-statement recording: digests, metrics, per-user counts, the slow log.
    pub telemetry: Telemetry,
    sessions: Mutex<HashMap<u32, Arc<SessionEntry>>>,
    next_id: AtomicU32,
    /// Users who completed caching_sha2 full authentication since start (the "cache").
    sha2_cache: Mutex<HashSet<String>>,
    pub started: Instant,
    pub questions: AtomicU64,
    /// Statements a guard rule in report mode would have denied (they ran).
    pub guard_reports: AtomicU64,
    /// Optimistic transactions that moved to the primary with matching results.
    pub optimistic_moves: AtomicU64,
    /// Optimistic transactions whose results differed on the primary (failed with 9003).
    pub optimistic_conflicts: AtomicU64,
    /// Autocommit statements run again after losing a deadlock.
    pub deadlock_retries: AtomicU64,
    /// The traffic capture running (or the last one, stopped), for `sluice replay`.
    capture: ArcSwapOption<crate::capture::Recorder>,
    captures: AtomicU64,
    pub shutdown: watch::Receiver<bool>,
}

/// Configuration reloads since start.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Reloads that changed something (0: the configuration the gateway started with).
    pub version: u64,
    /// What the last applied reload changed.
    pub last_change: Option<String>,
    /// Why the last reload was refused, until one is applied.
    pub last_error: Option<String>,
    pub errors: u64,
    pub last_attempt_ms: u64,
}

/// The greeting's version before the monitor has read the primary's.
const FALLBACK_VERSION: &str = "10.11.0-MariaDB";

impl Gateway {
    pub fn new(config: Config, policy: Box<dyn Policy>, shutdown: watch::Receiver<bool>) -> Self {
        let fleet = Fleet::new(&config.backends);
        let telemetry = Telemetry::new(&config);
        Self {
            monitor: watch::Sender::new(config.monitor.clone()),
            config: ArcSwap::from_pointee(config),
            fleet_epoch: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
            tls: ArcSwapOption::empty(),
            reloads: Mutex::new(ReloadStatus::default()),
            reload_lock: tokio::sync::Mutex::new(()),
            policy: arc_swap::ArcSwap::from_pointee(policy),
            policy_status: Mutex::new(PolicyStatus::default()),
            plugins: Mutex::new(Vec::new()),
            telemetry,
            fleet: Arc::new(ArcSwap::from_pointee(fleet)),
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            sha2_cache: Mutex::new(HashSet::new()),
            started: Instant::now(),
            questions: AtomicU64::new(0),
            guard_reports: AtomicU64::new(0),
            optimistic_moves: AtomicU64::new(0),
            optimistic_conflicts: AtomicU64::new(0),
            deadlock_retries: AtomicU64::new(0),
            capture: ArcSwapOption::empty(),
            captures: AtomicU64::new(0),
            shutdown,
        }
    }

    /// The capture taking events now, if any (one atomic load when none).
    pub fn capture(&self) -> Option<Arc<crate::capture::Recorder>> {
        let c = self.capture.load();
        c.as_ref().filter(|r| r.running()).map(Arc::clone)
    }

    /// Starts a capture into `name` (a file in `capture.dir`), bounded by the configuration's
    /// limits (`max_bytes`, `max_secs` override them when given).
    pub fn start_capture(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_secs: Option<u64>,
        redact_literals: Option<bool>,
    ) -> Result<crate::capture::CaptureStatus, crate::capture::CaptureError> {
        use crate::capture::{CaptureError, CaptureOptions, Recorder, file_in};
        if let Some(running) = self.capture() {
            return Err(CaptureError::Running(running.status().file));
        }
        let config = self.config();
        let c = &config.capture;
        let opts = CaptureOptions {
            file: file_in(c.dir.as_deref(), name)?,
            max_bytes: max_bytes.unwrap_or(c.max_bytes).max(4096),
            max_secs: max_secs.unwrap_or(c.max_secs).max(1),
            redact_literals: redact_literals.unwrap_or(c.redact_literals),
        };
        let backends = self
            .fleet()
            .backends()
            .iter()
            .map(|b| {
                let s = b.status();
                crate::capture::format::BackendInfo {
                    name: b.name().to_string(),
                    role: match b.role() {
                        crate::config::Role::Primary => "primary".into(),
                        crate::config::Role::Replica => "replica".into(),
                    },
                    healthy: s.healthy,
                    lag_ms: s.lag_ms,
                }
            })
            .collect();
        let id = self.captures.fetch_add(1, Ordering::Relaxed) + 1;
        let rec = Recorder::start(id, &opts, backends)?;
        let status = rec.status();
        if let Some(old) = self.capture.swap(Some(rec)) {
            old.stop("replaced");
        }
        tracing::info!(file = %status.file, "capture started");
        Ok(status)
    }

    /// Stops the running capture: its status, `None` when none ran.
    pub fn stop_capture(&self, reason: &str) -> Option<crate::capture::CaptureStatus> {
        let rec = self.capture.load_full()?;
        let status = rec.stop(reason);
        tracing::info!(file = %status.file, events = status.events, "capture stopped");
        Some(status)
    }

    /// The running or last capture's status.
    pub fn capture_status(&self) -> Option<crate::capture::CaptureStatus> {
        self.capture.load().as_ref().map(|r| r.status())
    }

    /// The configuration in force. Hold the guard briefly: a reload replaces it for the next
    /// reader.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The configuration in force, to keep.
    pub fn config_full(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The routable backends.
    pub fn fleet(&self) -> arc_swap::Guard<Arc<Fleet>> {
        self.fleet.load()
    }

    /// Every backend with connections to look after: the fleet's, then the retired ones still
    /// draining (for operators' views).
    pub fn all_backends(&self) -> Vec<Arc<Backend>> {
        let mut all = self.fleet().backends().to_vec();
        all.extend(self.retired());
        all
    }

    /// The fleet as it is at each read, for readers outside the gateway (OTLP's pool gauges).
    pub fn fleet_handle(&self) -> Arc<ArcSwap<Fleet>> {
        Arc::clone(&self.fleet)
    }

    /// Changes with every fleet swap.
    pub fn fleet_epoch(&self) -> u64 {
        self.fleet_epoch.load(Ordering::Acquire)
    }

    /// The TLS acceptor new clients get, if TLS is on.
    pub fn tls(&self) -> Option<Arc<tokio_rustls::TlsAcceptor>> {
        self.tls.load_full()
    }

    pub fn set_tls(&self, tls: Option<tokio_rustls::TlsAcceptor>) {
        self.tls.store(tls.map(Arc::new));
    }

    /// Starts `b`'s upkeep: its pool's maintenance and its monitor (which follows the
    /// `[monitor]` in force). Both stop at shutdown or when a reload retires `b`.
    pub fn look_after(&self, b: &Arc<Backend>) {
        tokio::spawn(crate::pool::maintain::run(
            Arc::clone(b),
            self.shutdown.clone(),
        ));
        tokio::spawn(crate::pool::monitor::run(
            Arc::clone(b),
            self.monitor.subscribe(),
            self.shutdown.clone(),
        ));
    }

    /// Re-derives the active policies from `config` (the built-in policy's users, groups and
    /// limits; loaded plugins stay as they are).
    pub fn rebase_policies(&self, config: &Config) {
        if let Some(p) = self.policy().with_config(config) {
            self.policy.store(Arc::new(p));
        }
    }

    /// Installs a reloaded configuration with the fleet built for it (`None`: the fleet is
    /// unchanged); backends in `retired` drain until their last connection closes.
    pub fn install_config(&self, config: Config, fleet: Option<Fleet>, retired: Vec<Arc<Backend>>) {
        if let Some(f) = fleet {
            self.fleet.store(Arc::new(f));
            self.fleet_epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.monitor.send_if_modified(|m| {
            let changed = *m != config.monitor;
            m.clone_from(&config.monitor);
            changed
        });
        self.config.store(Arc::new(config));
        let mut r = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.extend(retired);
    }

    /// Backends removed by a reload that still have connections open; the drained ones are
    /// forgotten here.
    pub fn retired(&self) -> Vec<Arc<Backend>> {
        let mut r = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.retain(|b| b.pool_status().counts.open() > 0);
        r.clone()
    }

    /// Notes a reload's outcome: what it changed (`None`: nothing), or why it was refused.
    pub fn record_reload(&self, outcome: Result<Option<String>, String>) {
        let mut st = self
            .reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.last_attempt_ms = unix_ms();
        match outcome {
            Ok(summary) => {
                if summary.is_some() {
                    st.version += 1;
                    st.last_change = summary;
                }
                st.last_error = None;
            }
            Err(e) => {
                st.errors += 1;
                st.last_error = Some(e);
            }
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The active policies. Hold the guard only for one decision: a reload replaces the set for
    /// the next statement while this one finishes on the set it started with.
    pub fn policy(&self) -> arc_swap::Guard<Arc<Box<dyn Policy>>> {
        self.policy.load()
    }

    /// The active policies, to hold across a statement's awaits (redaction while streaming).
    pub fn policy_full(&self) -> Arc<Box<dyn Policy>> {
        self.policy.load_full()
    }

    /// Makes `set` the active policies.
    pub fn install_policies(&self, set: PolicySet) {
        let plugins: Vec<Arc<Plugin>> = set.plugins().cloned().collect();
        let names = plugins
            .iter()
            .map(|p| format!("{} ({})", p.name(), p.manifest.kind.name()))
            .collect();
        self.policy.store(Arc::new(Box::new(set)));
        *self
            .plugins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = plugins;
        let mut st = self
            .policy_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.version += 1;
        st.active = names;
        st.last_error = None;
        st.last_attempt_ms = unix_ms();
    }

    pub fn record_policy_error(&self, e: &LoadError) {
        let mut st = self
            .policy_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.last_error = Some(e.clone());
        st.errors += 1;
        st.last_attempt_ms = unix_ms();
    }

    /// The policies of the active set.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every live session (for the admin API), by connection id.
    pub fn session_entries(&self) -> Vec<(u32, Arc<SessionEntry>)> {
        let mut v: Vec<_> = self
            .sessions()
            .iter()
            .map(|(id, e)| (*id, Arc::clone(e)))
            .collect();
        v.sort_unstable_by_key(|(id, _)| *id);
        v
    }

    pub fn policy_status(&self) -> PolicyStatus {
        self.policy_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<SessionEntry>>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The version clients are greeted with (before the `5.5.5-` prefix): the configured one,
    /// else the default group's primary's (the greeting comes before the user, and so the
    /// group, is known).
    pub fn server_version(&self) -> std::borrow::Cow<'_, str> {
        if let Some(v) = &self.config().frontend.server_version {
            return std::borrow::Cow::Owned(v.clone());
        }
        self.fleet()
            .group(None)
            .and_then(|g| g.primary().version())
            .map_or(std::borrow::Cow::Borrowed(FALLBACK_VERSION), |v| {
                std::borrow::Cow::Owned(v.as_str().to_string())
            })
    }

    /// A fresh gateway connection id (never 0).
    pub fn next_connection_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    pub fn user_session_count(&self, user: &str) -> usize {
        self.sessions().values().filter(|s| s.user == user).count()
    }

    pub fn register(&self, id: u32, user: &str, peer: String, tls: bool) -> Arc<SessionEntry> {
        let entry = Arc::new(SessionEntry {
            user: user.to_string(),
            peer,
            tls,
            connected: Instant::now(),
            connected_at_ms: unix_ms(),
            activity: Mutex::new(Activity::default()),
            killed: AtomicBool::new(false),
            kill_notify: Notify::new(),
            running: Mutex::new(None),
            view: Mutex::new(SessionView::default()),
        });
        self.sessions().insert(id, Arc::clone(&entry));
        entry
    }

    pub fn unregister(&self, id: u32) {
        self.sessions().remove(&id);
    }

    pub fn session(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.sessions().get(&id).cloned()
    }

    pub fn sha2_cached(&self, user: &str) -> bool {
        !self.config().frontend.sha2_cold_cache
            || self
                .sha2_cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(user)
    }

    pub fn sha2_remember(&self, user: &str) {
        self.sha2_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(user.to_string());
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
