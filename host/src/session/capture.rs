//! The session's side of a traffic capture ([`crate::capture`]): before a command, whether a
//! capture runs (one atomic load when none does) and what the command is; while it runs, what the
//! policies decided (guard verdict, backend, parameters); after it, one event to the recorder.
//! A session open when a capture starts announces itself (user, schema) at its next command.

use std::sync::Arc;
use std::time::Instant;

use super::{Flow, Session, SessionError};
use crate::capture::Recorder;
use crate::capture::format::{Done, Event, GuardOutcome, ParamValue, Route, What};
use crate::phase::Verdict;
use crate::protocol::command::Command;

/// The command being captured.
pub(super) struct CaptureNote {
    recorder: Arc<Recorder>,
    arrived: Instant,
    what: Pending,
    pub guard: GuardOutcome,
    pub backend: Option<Arc<str>>,
    /// The router's decision.
    pub route: Option<Route>,
    pub params: Vec<Option<ParamValue>>,
    /// The id a prepare gave the statement.
    pub prepared: Option<u32>,
}

/// What the command was, before it ran.
enum Pending {
    Query(bytes::Bytes),
    Prepare(bytes::Bytes),
    Execute(u32),
    Close(u32),
    InitDb(String),
    ChangeUser,
    Reset,
    Quit,
}

impl Session {
    /// A command arrives: note it when a capture runs and it is one a replay needs.
    pub(super) fn capture_begin(&mut self, cmd: &Command) {
        self.cap = None;
        let Some(recorder) = self.gw.capture() else {
            return;
        };
        let what = match cmd {
            Command::Query(sql) => Pending::Query(sql.clone()),
            Command::StmtPrepare(sql) => Pending::Prepare(sql.clone()),
            Command::StmtExecute { id, .. } => Pending::Execute(*id),
            Command::StmtClose(id) => Pending::Close(*id),
            Command::InitDb(db) => Pending::InitDb(db.clone()),
            Command::ChangeUser(_) => Pending::ChangeUser,
            Command::ResetConnection => Pending::Reset,
            Command::Quit => Pending::Quit,
            _ => return,
        };
        let arrived = Instant::now();
        if self.capture_seen != recorder.id {
            self.capture_seen = recorder.id;
            recorder.record(Event {
                t: recorder.offset_us(arrived),
                c: self.id,
                what: self.connect_event(),
            });
        }
        self.cap = Some(CaptureNote {
            recorder,
            arrived,
            what,
            guard: GuardOutcome::Allow,
            backend: None,
            route: None,
            params: Vec::new(),
            prepared: None,
        });
    }

    fn connect_event(&self) -> What {
        What::Connect {
            user: self.user.clone(),
            schema: self.state.schema.clone(),
            client: self.peer.clone(),
            tls: self.tls,
        }
    }

    /// The command ended with `result`: its event goes to the recorder.
    pub(super) fn capture_end(&mut self, result: &Result<Flow, SessionError>) {
        let Some(note) = self.cap.take() else {
            return;
        };
        let error = match result {
            Err(SessionError::Reply(e)) => Some(e.code_and_state().0),
            _ => None,
        };
        let done = || Done {
            us: u64::try_from(note.arrived.elapsed().as_micros()).unwrap_or(u64::MAX),
            backend: note.backend.as_deref().map(str::to_string),
            route: note.route.clone(),
            guard: note.guard.clone(),
            masked: Vec::new(),
            error,
            rows: 0,
        };
        let rec = &note.recorder;
        let sql = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            if rec.redacted {
                crate::facts::analyze(&text).digest
            } else {
                text.into_owned()
            }
        };
        let what = match &note.what {
            Pending::Query(b) => What::Query {
                sql: sql(b),
                done: done(),
            },
            Pending::Prepare(b) => What::Prepare {
                stmt: note.prepared,
                sql: sql(b),
                done: done(),
            },
            Pending::Execute(stmt) => What::Execute {
                stmt: *stmt,
                params: if rec.redacted {
                    Vec::new()
                } else {
                    note.params.clone()
                },
                done: done(),
            },
            Pending::Close(stmt) => What::CloseStatement { stmt: *stmt },
            Pending::InitDb(schema) if error.is_none() => What::InitDb {
                schema: schema.clone(),
            },
            Pending::ChangeUser if error.is_none() => What::ChangeUser {
                user: self.user.clone(),
                schema: self.state.schema.clone(),
            },
            Pending::Reset => What::Reset,
            Pending::Quit => {
                // Announced: the end of the session needs no second event.
                self.capture_seen = 0;
                What::Quit
            }
            Pending::InitDb(_) | Pending::ChangeUser => return,
        };
        rec.record(Event {
            t: rec.offset_us(note.arrived),
            c: self.id,
            what,
        });
    }

    /// The session ends without a COM_QUIT (the client went away, a timeout, a kill).
    pub(super) fn capture_gone(&mut self) {
        if let Some(rec) = self.gw.capture()
            && self.capture_seen == rec.id
        {
            rec.record(Event {
                t: rec.offset_us(Instant::now()),
                c: self.id,
                what: What::Quit,
            });
        }
    }
}

/// A guard verdict as the capture records it.
pub(super) fn outcome(v: &Verdict) -> GuardOutcome {
    match v {
        Verdict::Allow => GuardOutcome::Allow,
        Verdict::Deny { policy, code, .. } => GuardOutcome::Deny {
            policy: policy.clone(),
            code: *code,
        },
        Verdict::Report { policy, code, .. } => GuardOutcome::Report {
            policy: policy.clone(),
            code: *code,
        },
        Verdict::Rewrite(_) => GuardOutcome::Rewrite,
    }
}

/// A router decision as the capture records it, over the `backends` it was shown.
pub(super) fn route(
    d: &crate::phase::RouteDecision,
    backends: &[Arc<crate::pool::Backend>],
) -> Route {
    use crate::config::Role;
    use crate::phase::RouteDecision;
    match d {
        RouteDecision::Primary => Route::Primary,
        RouteDecision::Backend(i) => match backends.get(*i) {
            Some(b) if b.role() == Role::Replica => Route::Replica {
                backend: b.name().to_string(),
            },
            _ => Route::Primary,
        },
        RouteDecision::Named(name) => Route::Named {
            backend: name.clone(),
        },
    }
}
