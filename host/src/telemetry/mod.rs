//! The one place each statement is recorded: its digest, user, schema, backend, route, duration,
//! rows and error. From it the digest table, the Prometheus counters, per-user and per-backend
//! counts and the slow query log are fed; the admin API reads them off the data path.
//!
//! Recording is a few relaxed atomic adds and one sharded lock (the digest entry); nothing is
//! allocated unless a statement shape is new to the digest table.

pub mod audit;
pub mod digests;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod trace;
pub mod users;

use std::time::Duration;

use crate::config::Config;
use crate::error::ErrorClass;
use crate::facts::QueryFacts;
use crate::pool::Backend;
use digests::{DigestKey, DigestSample, DigestTable};
use metrics::{Metrics, Route};
use users::{UserCounters, UserTable};

/// Milliseconds since the Unix epoch (`t`, or now).
pub fn unix_ms_at(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Microseconds as a person reads them (`850 µs`, `1.25 ms`, `2.00 s`).
pub fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

pub fn unix_ms() -> u64 {
    unix_ms_at(std::time::SystemTime::now())
}

/// One finished client statement, as the session saw it.
pub struct StatementRecord<'a> {
    pub facts: &'a QueryFacts,
    pub user: &'a str,
    pub schema: Option<&'a str>,
    /// The backend that ran it (None: answered or refused by the gateway).
    pub backend: Option<&'a Backend>,
    /// From the command's arrival to its answer.
    pub duration: Duration,
    /// Rows of the (last) result set sent to the client.
    pub rows_sent: u64,
    pub rows_affected: u64,
    /// Bytes sent to the client for it.
    pub bytes_out: u64,
    pub error: Option<(ErrorClass, u16)>,
}

/// The recorder and what it feeds.
pub struct Telemetry {
    pub metrics: Metrics,
    pub digests: DigestTable,
    pub users: UserTable,
    /// The audit log, when `audit.enabled` (opened by `bind`).
    pub audit: Option<audit::AuditLog>,
    /// Traces and metrics over OTLP, when a collector is configured (started by `bind`).
    pub otlp: Option<otlp::Otlp>,
    digests_on: bool,
    metrics_on: bool,
    slow: Option<Duration>,
}

impl Telemetry {
    pub fn new(config: &Config) -> Self {
        Self {
            metrics: Metrics::default(),
            digests: DigestTable::new(config.digests.max),
            users: UserTable::default(),
            audit: None,
            otlp: None,
            digests_on: config.digests.enabled,
            metrics_on: config.metrics.enabled,
            slow: (config.log.slow_query_ms > 0)
                .then(|| Duration::from_millis(config.log.slow_query_ms)),
        }
    }

    /// Whether anything is recorded at all (off: the data path skips even the clock reads).
    pub fn enabled(&self) -> bool {
        self.digests_on
            || self.metrics_on
            || self.slow.is_some()
            || self.audit.is_some()
            || self.otlp.is_some()
    }

    /// Statement tracing, when exporting traces over OTLP.
    pub fn traces(&self) -> Option<&otlp::Traces> {
        self.otlp.as_ref()?.traces.as_ref()
    }

    /// The `db.client.*` metrics, when exporting metrics over OTLP.
    pub fn otlp_metrics(&self) -> Option<&otlp::OtlpMetrics> {
        self.otlp.as_ref()?.metrics.as_ref()
    }

    /// A login that was refused: counted by reason (and for its user, when it named one) and
    /// written to the audit log.
    pub fn login_refused(
        &self,
        why: metrics::Refusal,
        connection_id: Option<u32>,
        user: Option<&str>,
        client: std::net::SocketAddr,
        detail: &str,
    ) {
        self.metrics.refused(why);
        if let Some(u) = user {
            self.users
                .get(u)
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if self.audit.is_none() {
            return;
        }
        let client = client.to_string();
        self.audit(&audit::AuditEvent {
            event: "connect_failed",
            connection_id,
            user,
            client: Some(&client),
            detail: Some(detail),
            ..audit::AuditEvent::default()
        });
    }

    /// Writes an audit event, when auditing is on.
    pub fn audit(&self, event: &audit::AuditEvent<'_>) {
        if let Some(a) = &self.audit {
            a.write(event);
        }
    }

    /// Records one statement. `redact` gives the SQL for the slow log as the active redactor
    /// writes it (None: the digest is logged, which holds no literal).
    pub fn record(
        &self,
        r: &StatementRecord<'_>,
        user: &UserCounters,
        redact: impl FnOnce() -> Option<String>,
    ) {
        let route = match r.backend {
            Some(b) if b.role() == crate::config::Role::Primary => Route::Primary,
            Some(_) => Route::Replica,
            None => Route::Gateway,
        };
        if self.metrics_on {
            self.metrics.statement(r.facts.kind, route, r.duration);
            if let Some((class, code)) = r.error {
                self.metrics.error(class, code);
            }
            if let Some(b) = r.backend {
                b.traffic.count(r.error.is_some(), r.bytes_out);
            }
            user.count_statement(r.error.map(|(c, _)| c));
        }
        if self.digests_on {
            self.digests.record(
                &DigestKey {
                    digest_hash: r.facts.digest_hash,
                    digest: &r.facts.digest,
                    user: r.user,
                    schema: r.schema,
                    backend: r.backend.map_or("gateway", Backend::name),
                },
                &DigestSample {
                    duration: r.duration,
                    rows_sent: r.rows_sent,
                    rows_affected: r.rows_affected,
                    error: r.error.is_some(),
                },
            );
        }
        if let Some(m) = self.otlp_metrics() {
            let system = r.backend.map_or("mysql", Backend::system_name);
            m.operation(system, r.facts, r.backend, r.duration, r.error.map(|e| e.1));
        }
        if let Some(limit) = self.slow
            && r.duration >= limit
        {
            self.metrics
                .slow_statements
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            logs::slow_statement(r, route, redact().as_deref().unwrap_or(&r.facts.digest));
        }
    }
}

impl UserCounters {
    fn count_statement(&self, error: Option<ErrorClass>) {
        use std::sync::atomic::Ordering::Relaxed;
        self.statements.fetch_add(1, Relaxed);
        match error {
            Some(ErrorClass::Denied) => {
                self.errors.fetch_add(1, Relaxed);
                self.denials.fetch_add(1, Relaxed);
            }
            Some(_) => {
                self.errors.fetch_add(1, Relaxed);
            }
            None => {}
        }
    }
}
