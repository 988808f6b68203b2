//! The monitor: per backend, a connection of its own that probes it every `monitor.interval-ms`:
//! `@@read_only` and, on replicas, replication (`SHOW SLAVE STATUS`: both threads running, the
//! lag) and the GTID position applied. What it sees feeds the backend's health
//! ([`super::health`]): a replica that stopped replicating, reports no lag or turned writable is
//! `lagging` and not read from; a probe answering closes an open breaker.
//!
//! A probe that fails on the transport (refused, lost, or no answer within the interval: the
//! server stopped, restarted or stalls, which always breaks the monitor's own connection) marks
//! the backend down, and the pool starts a new generation. A monitor account the server refuses
//! says nothing about the backend's health: it is logged and the probe is skipped.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::Backend;
use super::health::{Probe, Replication};
use crate::config::{MonitorConfig, Role};

/// Watches `backend` until `shutdown` turns true or a reload removes the backend. `settings`
/// is the `[monitor]` section in force: a reload that changes it applies at the next probe (a
/// new account reconnects), one that removes it pauses the probes.
pub async fn run(
    backend: Arc<Backend>,
    mut settings: tokio::sync::watch::Receiver<Option<MonitorConfig>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut conn: Option<Conn> = None;
    let mut refused_logged = false;
    let mut current: Option<MonitorConfig> = None;
    loop {
        if backend.is_retired() || *shutdown.borrow() {
            return;
        }
        let Some(cfg) = settings.borrow_and_update().clone() else {
            tokio::select! {
                r = settings.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        };
        if current
            .as_ref()
            .is_some_and(|c| c.user != cfg.user || c.password != cfg.password)
        {
            conn = None;
            refused_logged = false;
        }
        let interval = Duration::from_millis(cfg.interval_ms.max(10));
        current = Some(cfg.clone());
        let mut refused = false;
        if conn.is_none() {
            match tokio::time::timeout(
                interval.max(Duration::from_secs(1)),
                Conn::new(opts(&backend, &cfg)),
            )
            .await
            {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(mysql_async::Error::Server(e))) => {
                    refused = true;
                    if !refused_logged {
                        tracing::warn!(backend = backend.name(), code = e.code, error = %e.message, "the monitor account cannot log in; health checks skipped");
                        refused_logged = true;
                    }
                }
                _ => {}
            }
        }
        let probed = match conn.as_mut() {
            Some(c) => {
                tokio::time::timeout(interval.max(Duration::from_secs(1)), probe(&backend, c))
                    .await
                    .unwrap_or_else(|_| Err("no answer to the probe in time".into()))
            }
            None if refused => Ok(None),
            None => Err("cannot connect".into()),
        };
        match probed {
            Ok(Some((probe, lag))) => backend.set_probed(probe, lag),
            Ok(None) => {}
            Err(reason) => {
                conn = None;
                backend.set_unreachable(reason);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
            () = backend.retired_notify() => {}
        }
    }
}

fn opts(backend: &Backend, cfg: &MonitorConfig) -> OptsBuilder {
    let (host, port) = super::connect::host_port(backend.address());
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
}

/// One check: what it saw and the replication lag, or why the server could not be probed.
async fn probe(backend: &Backend, c: &mut Conn) -> Result<Option<(Probe, Option<u32>)>, String> {
    let lost = |e: mysql_async::Error| e.to_string();
    // The version doubles as the liveness check: clients are greeted with the primary's.
    let (version, read_only): (String, bool) = c
        .query_first("SELECT @@version, @@read_only")
        .await
        .map_err(lost)?
        .ok_or("the probe returned no row")?;
    backend.set_version(&version);
    // Every server's replication is read, the primary's too: the writer is the one server that
    // is writable and not replicating, whatever its configured role.
    let replication = match c.query_first::<Row, _>("SHOW SLAVE STATUS").await {
        Ok(Some(row)) => {
            let running = |col: &str| {
                row.get_opt::<String, _>(col)
                    .and_then(Result::ok)
                    .is_some_and(|v| v == "Yes")
            };
            let behind: Option<u64> = row
                .get_opt::<Option<u64>, _>("Seconds_Behind_Master")
                .and_then(Result::ok)
                .flatten();
            if running("Slave_IO_Running") && running("Slave_SQL_Running") {
                Replication::Running {
                    lag_ms: behind
                        .map(|s| u32::try_from(s.saturating_mul(1000)).unwrap_or(u32::MAX)),
                }
            } else {
                Replication::Stopped
            }
        }
        Ok(None) => Replication::None,
        // The monitor account may not read replication status: nothing known of it.
        Err(mysql_async::Error::Server(_)) => Replication::Unknown,
        Err(e) => return Err(lost(e)),
    };
    if backend.role() == Role::Primary {
        let probe = Probe {
            read_only,
            replication,
        };
        return Ok(Some((probe, Some(0))));
    }
    // What it has applied, for read-your-writes without a wait.
    if let Ok(Some(pos)) = c.query_first::<String, _>("SELECT @@gtid_slave_pos").await
        && let Some(p) = crate::gtid::GtidPosition::parse(&pos)
    {
        backend.note_applied(&p);
    }
    let lag = match replication {
        Replication::Running { lag_ms } => lag_ms,
        _ => None,
    };
    Ok(Some((
        Probe {
            read_only,
            replication,
        },
        lag,
    )))
}
