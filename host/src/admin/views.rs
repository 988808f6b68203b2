//! What the admin API and the status page show, read from the gateway at request time: plain
//! serialisable structs, one per endpoint, built off the data path.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::config::Role;
use crate::gateway::Gateway;
use crate::pool::Backend;
use crate::pool::core::CloseReason;
use crate::pool::fleet::Writer;
use crate::telemetry::digests::{DigestRow, DigestSort};
use crate::telemetry::unix_ms_at;
use crate::telemetry::users::{UserCounters, UserRow};

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub in_use: usize,
    pub idle: usize,
    pub opening: usize,
    pub waiting: usize,
    pub max: usize,
    pub created: u64,
    pub closed: u64,
    /// Closed connections by reason.
    pub closed_by: Vec<(&'static str, u64)>,
    pub waited: u64,
    pub acquire_timeouts: u64,
    pub connect_failures: u64,
    pub acquire_p50_us: u64,
    pub acquire_p99_us: u64,
    pub acquire_max_us: u64,
}

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub name: String,
    /// Removed from the configuration by a reload: no new borrows, draining until its last
    /// connection closes (then it leaves this list).
    pub removed: bool,
    pub group: String,
    pub address: String,
    /// The configured role.
    pub role: &'static str,
    /// Whether the group's writes go here now (the detected writer).
    pub writer: bool,
    pub health: &'static str,
    pub why: String,
    pub lag_ms: Option<u32>,
    pub breaker_open: bool,
    pub version: Option<String>,
    pub pool: PoolView,
    pub statements: u64,
    pub errors: u64,
    pub bytes_out: u64,
    /// Health transitions since start, by the state entered.
    pub transitions: Transitions,
}

#[derive(Debug, Serialize)]
pub struct Transitions {
    pub up: u64,
    pub lagging: u64,
    pub down: u64,
    pub draining: u64,
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Replica => "replica",
    }
}

fn backend_view(gw: &Gateway, b: &Arc<Backend>) -> BackendView {
    let p = b.pool_status();
    let c = p.counts.counters;
    let writer = gw
        .fleet()
        .group(Some(b.group()))
        .is_some_and(|g| matches!(g.writer(), Writer::One(w) if Arc::ptr_eq(w, b)));
    BackendView {
        removed: false,
        name: b.name().to_string(),
        group: b.group().to_string(),
        address: b.address().to_string(),
        role: role(b.role()),
        writer,
        health: p.health.as_str(),
        why: p.why,
        lag_ms: b.lag_ms(),
        breaker_open: p.breaker_open,
        version: b.version().map(|v| v.to_string()),
        pool: PoolView {
            in_use: p.counts.in_use,
            idle: p.counts.idle,
            opening: p.counts.opening,
            waiting: p.counts.waiting,
            max: p.counts.max,
            created: c.created,
            closed: c.closed.iter().sum(),
            closed_by: CloseReason::ALL
                .iter()
                .zip(c.closed)
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
            waited: c.waited,
            acquire_timeouts: c.timeouts,
            connect_failures: c.connect_failures,
            acquire_p50_us: p.acquire_p50_us,
            acquire_p99_us: p.acquire_p99_us,
            acquire_max_us: p.acquire_max_us,
        },
        statements: b.traffic.statements.load(Ordering::Relaxed),
        errors: b.traffic.errors.load(Ordering::Relaxed),
        bytes_out: b.traffic.bytes_out.load(Ordering::Relaxed),
        transitions: Transitions {
            up: p.transitions[0],
            lagging: p.transitions[1],
            down: p.transitions[2],
            draining: p.transitions[3],
        },
    }
}

/// The fleet's backends, then those a reload removed that are still draining.
pub fn backends(gw: &Gateway) -> Vec<BackendView> {
    let mut out: Vec<BackendView> = gw
        .fleet()
        .backends()
        .iter()
        .map(|b| backend_view(gw, b))
        .collect();
    out.extend(gw.retired().iter().map(|b| BackendView {
        removed: true,
        ..backend_view(gw, b)
    }));
    out
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: u32,
    pub user: String,
    pub client: String,
    pub tls: bool,
    pub schema: Option<String>,
    /// `running` (a statement in flight), `in_transaction` (idle in one) or `idle`.
    pub state: &'static str,
    /// The statement running now, as its digest (no literal), and for how long.
    pub statement: Option<String>,
    pub statement_ms: Option<u64>,
    pub connected_at_ms: u64,
    pub connected_secs: u64,
    pub in_transaction: bool,
    /// Why it keeps its backend connection: `transaction`, `pinned`, `parked` (affinity).
    pub hold: Option<&'static str>,
    /// Backend name and server thread id of the held connection.
    pub backend: Option<String>,
    pub backend_thread: Option<u32>,
    pub pinned: bool,
    /// What pins it (user variables, temporary tables, ...).
    pub pinned_why: Vec<&'static str>,
    /// The statement that made the first pin (its digest).
    pub pinned_by: Option<String>,
}

pub fn sessions(gw: &Gateway) -> Vec<SessionView> {
    gw.session_entries()
        .into_iter()
        .map(|(id, e)| {
            let v = e.view();
            let current = e.current();
            let state = match (&current, v.in_transaction) {
                (Some(_), _) => "running",
                (None, true) => "in_transaction",
                (None, false) => "idle",
            };
            SessionView {
                id,
                user: e.user.clone(),
                client: e.peer.clone(),
                tls: e.tls,
                schema: v.schema.clone(),
                state,
                statement_ms: current.as_ref().map(|(_, d)| d.as_millis() as u64),
                statement: current.map(|(s, _)| s),
                connected_at_ms: e.connected_at_ms,
                connected_secs: e.connected.elapsed().as_secs(),
                in_transaction: v.in_transaction,
                hold: v.hold.map(|h| match h {
                    crate::session::Hold::Transaction => "transaction",
                    crate::session::Hold::Pinned => "pinned",
                    crate::session::Hold::Parked => "parked",
                }),
                backend_thread: v.backend.as_ref().map(|(_, t)| *t),
                backend: v.backend.map(|(b, _)| b),
                pinned: !v.pins.is_empty(),
                pinned_why: v.pins.iter().map(|p| p.describe()).collect(),
                pinned_by: v.pinned_by,
            }
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub name: String,
    pub kind: &'static str,
    /// The manifest file.
    pub file: String,
    /// The component file and its SHA-256.
    pub plugin: String,
    pub sha256: String,
    pub loaded_at_ms: u64,
    pub calls: u64,
    /// Guard verdicts reused without a call (the guard said they carry to the statement's shape).
    pub reused: u64,
    pub traps: u64,
    pub deadline_hits: u64,
    pub out_of_memory: u64,
    pub denials: u64,
    pub reports: u64,
    pub rules: Vec<crate::plugin::runtime::RuleCount>,
}

#[derive(Debug, Serialize)]
pub struct ReloadView {
    pub ok: bool,
    pub at_ms: Option<u64>,
    /// The refused file and why, when the last attempt was refused.
    pub file: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PoliciesView {
    /// The policy directory, when one is in use (else the built-in policy alone serves).
    pub dir: Option<String>,
    pub version: u64,
    pub policies: Vec<PolicyView>,
    pub last_reload: ReloadView,
    pub reloads_refused: u64,
}

pub fn policies(gw: &Gateway) -> PoliciesView {
    let st = gw.policy_status();
    let dir = gw
        .config()
        .policies
        .dir
        .as_ref()
        .filter(|_| gw.config().policies.enabled)
        .map(|d| d.display().to_string());
    let policies = gw
        .plugins()
        .iter()
        .map(|p| {
            let (denials, reports) = p.stats.verdict_totals();
            PolicyView {
                name: p.name().to_string(),
                kind: p.manifest.kind.name(),
                file: p.manifest.file.display().to_string(),
                plugin: p.manifest.plugin.display().to_string(),
                sha256: p.content_sha256.clone(),
                loaded_at_ms: unix_ms_at(p.loaded_at),
                calls: p.stats.calls.load(Ordering::Relaxed),
                reused: p.stats.reused.load(Ordering::Relaxed),
                traps: p.stats.traps.load(Ordering::Relaxed),
                deadline_hits: p.stats.deadline_hits.load(Ordering::Relaxed),
                out_of_memory: p.stats.out_of_memory.load(Ordering::Relaxed),
                denials,
                reports,
                rules: p.stats.rules(),
            }
        })
        .collect();
    PoliciesView {
        dir,
        version: st.version,
        policies,
        last_reload: ReloadView {
            ok: st.last_error.is_none(),
            at_ms: (st.last_attempt_ms > 0).then_some(st.last_attempt_ms),
            file: st.last_error.as_ref().map(|e| e.file.clone()),
            reason: st.last_error.as_ref().map(|e| e.reason.clone()),
        },
        reloads_refused: st.errors,
    }
}

/// The digest table, sorted and cut.
pub fn digests(gw: &Gateway, sort: DigestSort, limit: usize) -> Vec<DigestRow> {
    let mut rows = gw.telemetry.digests.rows();
    sort.apply(&mut rows);
    rows.truncate(limit);
    rows
}

pub fn users(gw: &Gateway) -> Vec<UserRow> {
    let mut live = std::collections::HashMap::<String, usize>::new();
    for (_, e) in gw.session_entries() {
        *live.entry(e.user.clone()).or_default() += 1;
    }
    let mut rows: Vec<UserRow> = gw
        .telemetry
        .users
        .all()
        .into_iter()
        .map(|(user, c)| UserRow {
            connections: live.get(&user).copied().unwrap_or(0),
            max_connections: gw.config().user(&user).map_or(0, |u| u.max_connections),
            connections_total: UserCounters::load(&c.connections_total),
            refused: UserCounters::load(&c.refused),
            statements: UserCounters::load(&c.statements),
            errors: UserCounters::load(&c.errors),
            denials: UserCounters::load(&c.denials),
            rate_limited: UserCounters::load(&c.rate_limited),
            user,
        })
        .collect();
    rows.sort_unstable_by(|a, b| a.user.cmp(&b.user));
    rows
}

/// Whether the gateway should get traffic: serving (not draining) and its policies loaded. A
/// backend outage does not count: replicas may still serve reads, and pulling every gateway out
/// of the balancer would turn a primary outage into a full one.
pub fn ready(gw: &Gateway) -> Result<(), &'static str> {
    if gw.shutting_down() {
        return Err("draining: shutting down");
    }
    let policies_in_use = gw.config().policies.enabled && gw.config().policies.dir.is_some();
    if policies_in_use && gw.policy_status().version == 0 {
        return Err("policies not loaded yet");
    }
    Ok(())
}
