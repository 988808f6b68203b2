//! The audit log: who did what, one JSON object per line, to a file (created 0600) or stderr, on
//! its own switch (`[audit]`). Events: connect, connect_failed, disconnect, change_user,
//! change_user_failed, denied, reported, statement (by `audit.statements`), admin (API actions),
//! policy_reload. SQL appears only as the redactor writes it (or as its digest); passwords and
//! tokens never.

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::{AuditConfig, AuditStatements};

/// One audit event and who it is about.
#[derive(Debug, Default, Serialize)]
pub struct AuditEvent<'a> {
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    #[serde(flatten)]
    event: &'a AuditEvent<'a>,
}

/// Where audit lines go.
pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
    pub statements: AuditStatements,
}

impl AuditLog {
    /// The configured log, or `None` when auditing is off. The file is opened for appending,
    /// created readable by its owner only.
    pub fn open(c: &AuditConfig) -> std::io::Result<Option<Self>> {
        if !c.enabled {
            return Ok(None);
        }
        let sink: Box<dyn Write + Send> = match &c.file {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
            None => Box::new(std::io::stderr()),
        };
        Ok(Some(Self {
            sink: Mutex::new(sink),
            statements: c.statements,
        }))
    }

    /// Writes one event as a line (a failed write is logged once per event, never fatal).
    pub fn write(&self, event: &AuditEvent<'_>) {
        let line = Line {
            timestamp: rfc3339(std::time::SystemTime::now()),
            event,
        };
        let Ok(mut text) = serde_json::to_vec(&line) else {
            return;
        };
        text.push(b'\n');
        let mut sink = self
            .sink
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = sink.write_all(&text).and_then(|()| sink.flush()) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// `2026-12-02T07:01:02.345Z`.
fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_796_194_862_345);
        assert_eq!(rfc3339(t), "2026-12-02T07:01:02.345Z");
        assert_eq!(rfc3339(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = std::time::UNIX_EPOCH + std::time::Duration::from_hours(264_384);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
