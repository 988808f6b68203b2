//! Log output: readable lines or JSON objects, colours only on a terminal, and the slow query log
//! (SQL only as the redactor writes it, or the digest, which holds no literal).

use std::io::IsTerminal;

use super::StatementRecord;
use super::metrics::Route;
use crate::config::{LogConfig, LogFormat};

/// Installs the process's log subscriber. `RUST_LOG` overrides the configured filter.
pub fn init(config: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}

/// One slow statement: a WARN line with target `sluice::slow`, so it can be filtered or routed
/// on its own (`RUST_LOG=sluice::slow=warn`).
pub fn slow_statement(r: &StatementRecord<'_>, route: Route, sql: &str) {
    tracing::warn!(
        target: "sluice::slow",
        duration_ms = r.duration.as_secs_f64() * 1e3,
        user = r.user,
        schema = r.schema.unwrap_or(""),
        backend = r.backend.map_or("gateway", crate::pool::Backend::name),
        route = route.as_str(),
        rows_sent = r.rows_sent,
        rows_affected = r.rows_affected,
        error = r.error.map_or(0, |(_, code)| code),
        sql,
        "slow statement"
    );
}
