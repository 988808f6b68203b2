//! The capture file: JSON Lines, a header line then one line per event, documented in
//! `docs/capture.md`. A reader of version N reads every version up to N; the version goes up
//! when a field changes meaning (new optional fields do not change it).
//!
//! Times are microseconds from the capture's start; an event's time is when its command
//! arrived. Events of one connection are in their order; events of different connections are in
//! the order their commands ended.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

pub use crate::protocol::params::ParamValue;

/// What the first line says a file is.
pub const FORMAT: &str = "sluice-capture";

/// The version this build writes (and the newest it reads).
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The gateway that wrote it.
    pub sluice: String,
    pub started_unix_ms: u64,
    /// Literals were replaced by `?` (statements are their digests): decisions can be replayed,
    /// statements cannot be run.
    pub redacted: bool,
    /// The fleet when the capture started, for routes to be read against.
    pub backends: Vec<BackendInfo>,
}

/// A backend as routing saw it when the capture started (what offline routes are decided on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    pub name: String,
    pub role: String,
    #[serde(default = "yes")]
    pub healthy: bool,
    /// Replication lag; `null` when unknown (routers treat that as lagging).
    #[serde(default)]
    pub lag_ms: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One line after the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds from the capture's start to the command's arrival.
    pub t: u64,
    /// The gateway's connection id.
    pub c: u32,
    #[serde(flatten)]
    pub what: What,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "kebab-case")]
pub enum What {
    /// A session logged in (or was already open when the capture started).
    Connect {
        user: String,
        schema: Option<String>,
        client: String,
        tls: bool,
    },
    /// COM_QUERY.
    Query {
        sql: String,
        #[serde(flatten)]
        done: Done,
    },
    /// COM_STMT_PREPARE: the client's statement id it was given (none when it was refused).
    Prepare {
        stmt: Option<u32>,
        sql: String,
        #[serde(flatten)]
        done: Done,
    },
    /// COM_STMT_EXECUTE of a prepared statement, with its parameters.
    Execute {
        stmt: u32,
        /// Each parameter's value, `null` for NULL.
        params: Vec<Option<ParamValue>>,
        #[serde(flatten)]
        done: Done,
    },
    CloseStatement {
        stmt: u32,
    },
    /// COM_INIT_DB.
    InitDb {
        schema: String,
    },
    /// COM_CHANGE_USER.
    ChangeUser {
        user: String,
        schema: Option<String>,
    },
    /// COM_RESET_CONNECTION.
    Reset,
    /// The session ended (COM_QUIT or the connection closed).
    Quit,
    /// The last line of a capture that stopped: why, and events it could not keep.
    End {
        reason: String,
        dropped: u64,
    },
}

/// How a statement ended and what the policies decided on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// Microseconds it took.
    pub us: u64,
    /// The backend that ran it (none when it did not reach one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// What the router decided, when it was asked (the host decides alone for a one-backend
    /// fleet, a writable transaction, a pinned or parked connection the statement must use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// The guards' verdict.
    pub guard: GuardOutcome,
    /// Result columns a redactor masked or dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// The error code the client got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u16>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A router's decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "kebab-case")]
pub enum Route {
    Primary,
    /// A replica of the router's choosing.
    Replica {
        backend: String,
    },
    /// A backend the router named (a routing rule, a hint).
    Named {
        backend: String,
    },
}

/// A guard verdict as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum GuardOutcome {
    #[default]
    Allow,
    Deny {
        policy: String,
        code: u16,
    },
    Report {
        policy: String,
        code: u16,
    },
    Rewrite,
}

/// A capture read back.
#[derive(Debug)]
pub struct Capture {
    pub header: Header,
    pub events: Vec<Event>,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("empty file: not a capture")]
    Empty,
    #[error("line 1: not a sluice capture header: {0}")]
    NotACapture(String),
    #[error("written by a newer sluice (capture version {0}; this one reads up to {VERSION})")]
    TooNew(u32),
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
}

impl Capture {
    pub fn read(reader: impl BufRead) -> Result<Self, ReadError> {
        let mut lines = reader.lines();
        let first = lines.next().ok_or(ReadError::Empty)??;
        let header: Header =
            serde_json::from_str(&first).map_err(|e| ReadError::NotACapture(e.to_string()))?;
        if header.format != FORMAT {
            return Err(ReadError::NotACapture(format!(
                "format is {:?}, not {FORMAT:?}",
                header.format
            )));
        }
        if header.version > VERSION {
            return Err(ReadError::TooNew(header.version));
        }
        let mut events = Vec::new();
        for (i, line) in lines.enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event = serde_json::from_str(&line).map_err(|e| ReadError::Line {
                line: i + 2,
                why: e.to_string(),
            })?;
            events.push(event);
        }
        Ok(Self { header, events })
    }

    pub fn open(path: &std::path::Path) -> Result<Self, ReadError> {
        let f = std::fs::File::open(path)?;
        Self::read(std::io::BufReader::new(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture written by version 1, checked in: every later reader must read it.
    #[test]
    fn a_checked_in_version_1_capture_still_reads() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/captures/v1-small.jsonl"
        );
        let cap = Capture::open(std::path::Path::new(file)).expect("a version 1 capture reads");
        assert_eq!(cap.header.version, 1);
        assert_eq!(cap.header.backends[2].lag_ms, None, "lag unknown");
        assert_eq!(cap.events.len(), 15);
        assert!(cap.events.iter().any(|e| matches!(
            &e.what,
            What::Execute { params, .. } if params == &vec![Some(ParamValue::Uint(2)), None]
        )));
        assert!(cap.events.iter().any(|e| matches!(
            &e.what,
            What::Query { done, .. } if done.guard == GuardOutcome::Deny { policy: "guard".into(), code: 1227 }
        )));
        assert!(matches!(
            cap.events.last().map(|e| &e.what),
            Some(What::End { dropped: 0, .. })
        ));
    }

    #[test]
    fn events_round_trip_and_a_newer_version_is_refused_by_name() {
        let header = Header {
            format: FORMAT.into(),
            version: VERSION,
            sluice: "0.1.0".into(),
            started_unix_ms: 1,
            redacted: false,
            backends: vec![BackendInfo {
                name: "primary".into(),
                role: "primary".into(),
                healthy: true,
                lag_ms: Some(0),
            }],
        };
        let events = vec![
            Event {
                t: 5,
                c: 7,
                what: What::Query {
                    sql: "SELECT 1".into(),
                    done: Done {
                        us: 80,
                        backend: Some("replica1".into()),
                        route: Some(Route::Replica {
                            backend: "replica1".into(),
                        }),
                        guard: GuardOutcome::Deny {
                            policy: "guard".into(),
                            code: 1105,
                        },
                        masked: vec!["email".into()],
                        error: Some(1105),
                        rows: 0,
                    },
                },
            },
            Event {
                t: 9,
                c: 7,
                what: What::Execute {
                    stmt: 1,
                    params: vec![None, Some(ParamValue::Hex("ff00".into()))],
                    done: Done::default(),
                },
            },
            Event {
                t: 10,
                c: 7,
                what: What::Quit,
            },
        ];
        let mut text = serde_json::to_string(&header).expect("json");
        for e in &events {
            text.push('\n');
            text.push_str(&serde_json::to_string(e).expect("json"));
        }
        let back = Capture::read(text.as_bytes()).expect("reads");
        assert_eq!(back.header, header);
        assert_eq!(back.events, events);
        assert!(text.contains(r#""e":"query""#) && text.contains(r#""verdict":"deny""#));

        let newer = text.replacen(&format!("\"version\":{VERSION}"), "\"version\":99", 1);
        let e = Capture::read(newer.as_bytes()).expect_err("too new");
        assert!(e.to_string().contains("newer"), "{e}");
        let broken = format!("{text}\n{{\"t\":1}}");
        let e = Capture::read(broken.as_bytes()).expect_err("bad line");
        assert!(e.to_string().starts_with("line 5"), "{e}");
    }
}
