//! `GET /metrics`: the Prometheus text exposition. Labels are closed sets (backend, role,
//! command, route, policy, error class and code; `user` only with `metrics.per-user`), never a
//! digest or SQL, so the series count does not grow with the traffic.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::gateway::Gateway;
use crate::pool::core::CloseReason;
use crate::telemetry::metrics::{LATENCY_BOUNDS_US, LatencySnapshot};
use crate::telemetry::users::UserCounters;

/// A named counter or gauge read off one object: (name, help, read).
type Reading<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The exposition being written.
struct Exposition {
    out: String,
}

fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One family per reading, a sample per object (with its labels).
    fn readings<T>(
        &mut self,
        kind: &str,
        readings: &[Reading<T>],
        objects: &[(&T, Vec<(&str, &str)>)],
    ) {
        for (name, help, read) in readings {
            self.family(name, kind, help);
            for (o, labels) in objects {
                self.sample(name, labels, read(o));
            }
        }
    }

    /// One metric family with one sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The samples of one histogram (its family written by the caller).
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencySnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, n) in &h.cumulative {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                format!("{le}")
            };
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, n);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// Renders every metric.
pub fn render(gw: &Gateway) -> String {
    let mut e = Exposition {
        out: String::with_capacity(16 * 1024),
    };
    clients(&mut e, gw);
    statements(&mut e, gw);
    pools(&mut e, gw);
    backends(&mut e, gw);
    policies(&mut e, gw);
    let d = &gw.telemetry.digests;
    e.single(
        "sluice_digest_entries",
        "gauge",
        "Entries in the digest table.",
        d.len(),
    );
    e.single(
        "sluice_digest_evictions_total",
        "counter",
        "Digest entries evicted to make room (digests.max).",
        d.evictions(),
    );
    if gw.config().metrics.per_user {
        users(&mut e, gw);
    }
    e.out
}

fn clients(e: &mut Exposition, gw: &Gateway) {
    let m = &gw.telemetry.metrics;
    e.single(
        "sluice_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        gw.started.elapsed().as_secs(),
    );
    e.single(
        "sluice_client_connections",
        "gauge",
        "Client sessions now (authenticated).",
        gw.session_count(),
    );
    e.single(
        "sluice_client_connections_total",
        "counter",
        "Client sessions since start (authenticated).",
        m.connections_total.load(Ordering::Relaxed),
    );
    e.family(
        "sluice_client_connections_refused_total",
        "counter",
        "Client connections refused, by reason.",
    );
    let mut auth = 0;
    for (why, n) in m.refusals() {
        if why == crate::telemetry::metrics::Refusal::Auth {
            auth = n;
        }
        e.sample(
            "sluice_client_connections_refused_total",
            &[("reason", why.as_str())],
            n,
        );
    }
    e.single(
        "sluice_auth_failures_total",
        "counter",
        "Logins refused: wrong password, unknown user, TLS required.",
        auth,
    );
}

fn statements(e: &mut Exposition, gw: &Gateway) {
    let m = &gw.telemetry.metrics;
    e.family(
        "sluice_commands_total",
        "counter",
        "Client protocol commands, by command.",
    );
    for (c, n) in m.commands() {
        e.sample("sluice_commands_total", &[("command", c.as_str())], n);
    }
    e.family(
        "sluice_statements_total",
        "counter",
        "Client statements (text and prepared executes), by statement kind and where they ran.",
    );
    for (k, r, n) in m.statements() {
        e.sample(
            "sluice_statements_total",
            &[("command", k.as_str()), ("route", r.as_str())],
            n,
        );
    }
    e.family(
        "sluice_statement_duration_seconds",
        "histogram",
        "Statement latency at the gateway (command in to answer out), by statement kind.",
    );
    for (k, l) in m.latencies() {
        e.histogram(
            "sluice_statement_duration_seconds",
            &[("command", k.as_str())],
            &l.snapshot(),
        );
    }
    e.family(
        "sluice_errors_total",
        "counter",
        "Statements answered with an error, by class and MySQL error code.",
    );
    for (class, code, n) in m.errors() {
        let code = code.to_string();
        e.sample(
            "sluice_errors_total",
            &[("class", class.as_str()), ("code", &code)],
            n,
        );
    }
    e.single(
        "sluice_slow_statements_total",
        "counter",
        "Statements slower than log.slow-query-ms.",
        m.slow_statements.load(Ordering::Relaxed),
    );
    e.single(
        "sluice_transactions_total",
        "counter",
        "Transactions ended (committed or rolled back).",
        m.transactions.load(Ordering::Relaxed),
    );
    e.single(
        "sluice_transaction_rollbacks_total",
        "counter",
        "Transactions that ended in a rollback (ROLLBACK, a deadlock, a lost connection).",
        m.rollbacks.load(Ordering::Relaxed),
    );
    e.family(
        "sluice_transaction_duration_seconds",
        "histogram",
        "Transaction duration, first statement to end.",
    );
    e.histogram(
        "sluice_transaction_duration_seconds",
        &[],
        &m.transaction_time.snapshot(),
    );
    e.single(
        "sluice_deadlock_retries_total",
        "counter",
        "Autocommit statements run again after losing a deadlock.",
        gw.deadlock_retries.load(Ordering::Relaxed),
    );
}

fn pools(e: &mut Exposition, gw: &Gateway) {
    let backends = gw.all_backends();
    let statuses: Vec<_> = backends.iter().map(|b| b.pool_status()).collect();
    e.family(
        "sluice_pool_connections",
        "gauge",
        "Backend connections of the gateway's pool, by state (active: lent to a session).",
    );
    for (b, p) in backends.iter().zip(&statuses) {
        for (state, n) in [
            ("active", p.counts.in_use),
            ("idle", p.counts.idle),
            ("opening", p.counts.opening),
        ] {
            e.sample(
                "sluice_pool_connections",
                &[("backend", b.name()), ("state", state)],
                n,
            );
        }
    }
    let gauges: [Reading<crate::pool::PoolStatus>; 2] = [
        (
            "sluice_pool_waiting",
            "Sessions waiting in line for a backend connection.",
            |p| p.counts.waiting as u64,
        ),
        (
            "sluice_pool_max_connections",
            "The pool's size limit (pool-max).",
            |p| p.counts.max as u64,
        ),
    ];
    let objects: Vec<_> = backends
        .iter()
        .zip(&statuses)
        .map(|(b, p)| (p, vec![("backend", b.name())]))
        .collect();
    e.readings("gauge", &gauges, &objects);
    let counters: [Reading<crate::pool::PoolStatus>; 3] = [
        (
            "sluice_pool_connections_created_total",
            "Backend connections opened.",
            |p| p.counts.counters.created,
        ),
        (
            "sluice_pool_acquire_timeouts_total",
            "Borrowers that gave up waiting for a connection (ERR 9001).",
            |p| p.counts.counters.timeouts,
        ),
        (
            "sluice_pool_connect_failures_total",
            "Backend connection attempts that failed.",
            |p| p.counts.counters.connect_failures,
        ),
    ];
    e.readings("counter", &counters, &objects);
    e.family(
        "sluice_pool_connections_closed_total",
        "counter",
        "Backend connections closed, by reason.",
    );
    for (b, p) in backends.iter().zip(&statuses) {
        for r in CloseReason::ALL {
            e.sample(
                "sluice_pool_connections_closed_total",
                &[("backend", b.name()), ("reason", r.as_str())],
                p.closed(r),
            );
        }
    }
    e.family(
        "sluice_pool_acquire_seconds",
        "histogram",
        "Time from asking the pool to holding a connection.",
    );
    for b in backends {
        let (cumulative, sum_us, count) = b.acquire_histogram(&LATENCY_BOUNDS_US);
        let snapshot = LatencySnapshot {
            cumulative: LATENCY_BOUNDS_US
                .iter()
                .map(|us| *us as f64 / 1e6)
                .zip(cumulative)
                .chain([(f64::INFINITY, count)])
                .collect(),
            sum_seconds: sum_us / 1e6,
            count,
        };
        e.histogram(
            "sluice_pool_acquire_seconds",
            &[("backend", b.name())],
            &snapshot,
        );
    }
}

fn backends(e: &mut Exposition, gw: &Gateway) {
    let backends = &gw.all_backends();
    let role = |b: &crate::pool::Backend| match b.role() {
        crate::config::Role::Primary => "primary",
        crate::config::Role::Replica => "replica",
    };
    e.family(
        "sluice_backend_health",
        "gauge",
        "1 for the backend's current health state (up, lagging, down, draining).",
    );
    for b in backends {
        let (now, _) = b.health();
        for s in ["up", "lagging", "down", "draining"] {
            e.sample(
                "sluice_backend_health",
                &[("backend", b.name()), ("role", role(b)), ("state", s)],
                u8::from(now.as_str() == s),
            );
        }
    }
    e.family(
        "sluice_backend_breaker_open",
        "gauge",
        "1 while the backend's circuit breaker is open.",
    );
    for b in backends {
        e.sample(
            "sluice_backend_breaker_open",
            &[("backend", b.name())],
            u8::from(b.pool_status().breaker_open),
        );
    }
    e.family(
        "sluice_replica_lag_seconds",
        "gauge",
        "Replication lag the monitor measured (absent while unknown).",
    );
    for b in backends {
        if let Some(ms) = b.lag_ms() {
            e.sample(
                "sluice_replica_lag_seconds",
                &[("backend", b.name()), ("role", role(b))],
                f64::from(ms) / 1e3,
            );
        }
    }
    let counters: [Reading<crate::pool::Backend>; 3] = [
        (
            "sluice_backend_statements_total",
            "Statements run on the backend.",
            |b| b.traffic.statements.load(Ordering::Relaxed),
        ),
        (
            "sluice_backend_errors_total",
            "Statements run on the backend that ended in an error.",
            |b| b.traffic.errors.load(Ordering::Relaxed),
        ),
        (
            "sluice_backend_bytes_out_total",
            "Bytes of the backend's answers sent to clients.",
            |b| b.traffic.bytes_out.load(Ordering::Relaxed),
        ),
    ];
    let objects: Vec<_> = backends
        .iter()
        .map(|b| (&**b, vec![("backend", b.name()), ("role", role(b))]))
        .collect();
    e.readings("counter", &counters, &objects);
    e.family(
        "sluice_backend_health_transitions_total",
        "counter",
        "Health transitions, by the state entered.",
    );
    for b in backends {
        let t = b.pool_status().transitions;
        for (s, n) in ["up", "lagging", "down", "draining"].iter().zip(t) {
            e.sample(
                "sluice_backend_health_transitions_total",
                &[("backend", b.name()), ("to", s)],
                n,
            );
        }
    }
}

fn policies(e: &mut Exposition, gw: &Gateway) {
    let plugins = gw.plugins();
    let counters: [Reading<crate::plugin::runtime::Plugin>; 7] = [
        ("sluice_policy_calls_total", "Calls into the policy.", |p| {
            p.stats.calls.load(Ordering::Relaxed)
        }),
        (
            "sluice_policy_reused_verdicts_total",
            "Guard verdicts the gateway reused for a statement of a shape the guard had decided, without a call.",
            |p| p.stats.reused.load(Ordering::Relaxed),
        ),
        (
            "sluice_policy_traps_total",
            "Calls that trapped (or could not start an instance).",
            |p| p.stats.traps.load(Ordering::Relaxed),
        ),
        (
            "sluice_policy_deadline_hits_total",
            "Calls stopped at the policy's deadline.",
            |p| p.stats.deadline_hits.load(Ordering::Relaxed),
        ),
        (
            "sluice_policy_out_of_memory_total",
            "Calls stopped at the policy's memory cap.",
            |p| p.stats.out_of_memory.load(Ordering::Relaxed),
        ),
        (
            "sluice_policy_denials_total",
            "Statements the guard denied.",
            |p| p.stats.verdict_totals().0,
        ),
        (
            "sluice_policy_reports_total",
            "Statements a guard rule in report mode would have denied.",
            |p| p.stats.verdict_totals().1,
        ),
    ];
    let objects: Vec<_> = plugins
        .iter()
        .map(|p| {
            (
                &**p,
                vec![("policy", p.name()), ("kind", p.manifest.kind.name())],
            )
        })
        .collect();
    e.readings("counter", &counters, &objects);
    let st = gw.policy_status();
    e.family(
        "sluice_policy_reloads_total",
        "counter",
        "Policy directory loads, by result.",
    );
    e.sample(
        "sluice_policy_reloads_total",
        &[("result", "ok")],
        st.version,
    );
    e.sample(
        "sluice_policy_reloads_total",
        &[("result", "failed")],
        st.errors,
    );
    let cfg = gw.reload_status();
    e.family(
        "sluice_config_reloads_total",
        "counter",
        "Configuration file reloads: ok (applied a change), failed (refused; nothing changed).",
    );
    e.sample(
        "sluice_config_reloads_total",
        &[("result", "ok")],
        cfg.version,
    );
    e.sample(
        "sluice_config_reloads_total",
        &[("result", "failed")],
        cfg.errors,
    );
}

fn users(e: &mut Exposition, gw: &Gateway) {
    let users = gw.telemetry.users.all();
    let mut live = std::collections::HashMap::<String, usize>::new();
    for (_, s) in gw.session_entries() {
        *live.entry(s.user.clone()).or_default() += 1;
    }
    e.family(
        "sluice_user_connections",
        "gauge",
        "Client sessions now, by user.",
    );
    for (u, _) in &users {
        e.sample(
            "sluice_user_connections",
            &[("user", u)],
            live.get(u).copied().unwrap_or(0),
        );
    }
    let counters: [Reading<UserCounters>; 4] = [
        (
            "sluice_user_statements_total",
            "Statements, by user.",
            |c| UserCounters::load(&c.statements),
        ),
        (
            "sluice_user_errors_total",
            "Statements that failed, by user.",
            |c| UserCounters::load(&c.errors),
        ),
        (
            "sluice_user_denials_total",
            "Statements denied by a policy, by user.",
            |c| UserCounters::load(&c.denials),
        ),
        (
            "sluice_user_connections_refused_total",
            "Logins refused, by user.",
            |c| UserCounters::load(&c.refused),
        ),
    ];
    let objects: Vec<_> = users
        .iter()
        .map(|(u, c)| (&**c, vec![("user", u.as_str())]))
        .collect();
    e.readings("counter", &counters, &objects);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition { out: String::new() };
        e.sample("m", &[("user", "a\"b\\c\nd")], 1);
        assert_eq!(e.out, "m{user=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
