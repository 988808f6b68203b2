//! The monitor: per backend, a connection of its own that checks health and, on replicas, reads
//! replication lag (`SHOW SLAVE STATUS`) every `monitor.interval-ms`. A replica whose replication
//! threads are not both running, or whose lag the server does not report, has an unknown lag.
//!
//! A probe that fails on the transport (refused, lost: the server stopped or restarted, which
//! always breaks the monitor's own connection) marks the backend down, and the pool starts a new
//! generation. A monitor account the server refuses says nothing about the backend's health:
//! it is logged and the probe is skipped.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};

use super::Backend;
use crate::config::{MonitorConfig, Role};

/// Watches `backend` until `shutdown` turns true.
pub async fn run(
    backend: Arc<Backend>,
    cfg: MonitorConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(cfg.interval_ms.max(10));
    let mut conn: Option<Conn> = None;
    let mut refused_logged = false;
    loop {
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
        let ok = match conn.as_mut() {
            Some(c) => {
                tokio::time::timeout(interval.max(Duration::from_secs(1)), probe(&backend, c))
                    .await
                    .unwrap_or(false)
            }
            None => refused,
        };
        if !ok {
            conn = None;
            backend.set_monitored(false, None);
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn opts(backend: &Backend, cfg: &MonitorConfig) -> OptsBuilder {
    let (host, port) = super::connect::host_port(&backend.config.address);
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
}

/// One check; false when the connection failed.
async fn probe(backend: &Backend, c: &mut Conn) -> bool {
    if backend.config.role == Role::Primary {
        // The version doubles as the liveness check: clients are greeted with it.
        let Ok(version) = c.query_first::<String, _>("SELECT @@version").await else {
            return false;
        };
        if let Some(v) = version {
            backend.set_version(&v);
        }
        backend.set_monitored(true, Some(0));
        return true;
    }
    match c.query_first::<Row, _>("SHOW SLAVE STATUS").await {
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
            let lag = if running("Slave_IO_Running") && running("Slave_SQL_Running") {
                behind.map(|s| u32::try_from(s.saturating_mul(1000)).unwrap_or(u32::MAX))
            } else {
                None
            };
            backend.set_monitored(true, lag);
            // What it has applied, for read-your-writes without a wait.
            if let Ok(Some(pos)) = c.query_first::<String, _>("SELECT @@gtid_slave_pos").await
                && let Some(p) = crate::gtid::GtidPosition::parse(&pos)
            {
                backend.note_applied(&p);
            }
            true
        }
        Ok(None) => {
            // Not replicating at all.
            backend.set_monitored(true, None);
            true
        }
        Err(mysql_async::Error::Server(_)) => {
            backend.set_monitored(true, None);
            true
        }
        Err(_) => false,
    }
}
