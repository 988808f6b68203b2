//! What a session tells the recorder about each command: the statement's facts, the backend that
//! ran it, its rows, its error; and when a transaction starts and ends.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;

use super::{Flow, Session, SessionError};
use crate::config::AuditStatements;
use crate::facts::{QueryFacts, StatementKind};
use crate::pool::Backend;
use crate::protocol::command::Command;
use crate::telemetry::StatementRecord;
use crate::telemetry::audit::AuditEvent;
use crate::telemetry::metrics::CommandKind;
use crate::telemetry::trace::{self, Mark, Phase, StatementTrace, TransactionTrace};

/// The SQL of the statement, kept (by reference count) for the slow log's redacted text.
pub(super) enum Sql {
    Text(Bytes),
    Prepared(Arc<str>),
}

/// What the command being served did, filled in as it runs.
#[derive(Default)]
pub(super) struct StatementNote {
    pub started: Option<Instant>,
    pub bytes_before: u64,
    pub facts: Option<QueryFacts>,
    pub sql: Option<Sql>,
    pub backend: Option<Arc<Backend>>,
    pub rows_sent: u64,
    pub rows_affected: u64,
    /// Its phases, when it is traced.
    pub trace: Option<StatementTrace>,
    /// The traced transaction it ended, and whether that rolled back (its span ends with it).
    pub ended_transaction: Option<(TransactionTrace, bool)>,
}

/// The facts of a statement that failed before it was analysed (an unknown prepared statement).
static UNANALYSED: LazyLock<QueryFacts> = LazyLock::new(QueryFacts::default);

pub(super) fn command_kind(cmd: &Command) -> CommandKind {
    match cmd {
        Command::Query(_) => CommandKind::Query,
        Command::StmtPrepare(_) => CommandKind::Prepare,
        Command::StmtExecute { .. } => CommandKind::Execute,
        Command::StmtClose(_) => CommandKind::Close,
        Command::StmtSendLongData { .. } => CommandKind::LongData,
        Command::Ping => CommandKind::Ping,
        Command::InitDb(_) => CommandKind::InitDb,
        Command::ChangeUser(_) => CommandKind::ChangeUser,
        Command::ResetConnection => CommandKind::Reset,
        _ => CommandKind::Other,
    }
}

impl Session {
    /// Writes an audit event about this session (when auditing is on).
    pub(super) fn audit(&self, event: &'static str, detail: Option<&str>) {
        if self.gw.telemetry.audit.is_none() {
            return;
        }
        self.gw.telemetry.audit(&AuditEvent {
            event,
            connection_id: Some(self.id),
            user: Some(&self.user),
            client: Some(&self.entry.peer),
            backend: self.held.as_ref().map(|h| h.conn.backend.address()),
            schema: self.state.schema.as_deref(),
            tls: Some(self.tls),
            detail,
        });
    }

    /// The user's statement rate allows one more statement now (all its sessions share the
    /// bucket), or ERR 1226.
    pub(super) fn admit_statement(&self) -> Result<(), crate::error::GatewayError> {
        let rate = self.grant.max_statements_per_second;
        if rate > 0 && !self.user_stats.admit(rate, self.grant.statements_burst) {
            return Err(crate::error::GatewayError::StatementRateExceeded {
                user: self.user.clone(),
                limit: rate,
            });
        }
        Ok(())
    }

    /// A command starts.
    pub(super) fn begin_command(&mut self) {
        if self.gw.telemetry.enabled() {
            self.note.started = Some(Instant::now());
            self.note.bytes_before = self.stream.bytes_out();
        }
    }

    /// A statement with these facts starts running (the admin API shows it, as its digest), and
    /// is traced or not.
    pub(super) fn begin_statement(&mut self, facts: &QueryFacts, sql: &[u8]) {
        let Some(t) = self.note.started else {
            return;
        };
        self.entry.begin_statement(&facts.digest, t);
        if let Some(traces) = self.gw.telemetry.traces() {
            if !self.in_txn {
                self.txn_trace = None;
            }
            self.note.trace = traces.decide(sql, self.txn_trace.as_ref());
        }
    }

    /// The time now, when the statement is traced (a phase begins).
    pub(super) fn trace_clock(&self) -> Option<Instant> {
        self.note.trace.as_ref().map(|_| Instant::now())
    }

    /// A phase of a traced statement ended (begun at `start`, from [`Self::trace_clock`]).
    pub(super) fn trace_phase(
        &mut self,
        phase: Phase,
        start: Option<Instant>,
        backend: Option<&Arc<Backend>>,
    ) {
        if let Some(start) = start {
            self.trace_mark(phase, (start, Instant::now()), backend);
        }
    }

    /// A phase of a traced statement, that ran from `start` to `end`.
    pub(super) fn trace_mark(
        &mut self,
        phase: Phase,
        (start, end): (Instant, Instant),
        backend: Option<&Arc<Backend>>,
    ) {
        if let Some(t) = &mut self.note.trace {
            t.marks.push(Mark {
                phase,
                start,
                end,
                backend: backend.cloned(),
            });
        }
    }

    /// A timer for the statement's redaction plans, when it is traced.
    pub(super) fn redact_timer(&self) -> Option<super::redact::RedactTimer> {
        self.note
            .trace
            .as_ref()
            .map(|_| super::redact::RedactTimer::default())
    }

    /// The `result.redact` phase, from the statement's redaction timer (when it planned any).
    pub(super) fn trace_redaction(&mut self, timer: Option<&super::redact::RedactTimer>) {
        if let Some(span) = timer.and_then(super::redact::RedactTimer::span) {
            self.trace_mark(Phase::Redact, span, None);
        }
    }

    /// A connection was borrowed from `backend`'s pool after waiting since `start`: the
    /// `pool.acquire` phase (and `connection.create`, when it was opened for this), and the
    /// OTLP pool metrics.
    pub(super) fn note_acquired(
        &mut self,
        backend: &Arc<Backend>,
        start: Option<Instant>,
        opened: Option<(Instant, Instant)>,
    ) {
        let Some(start) = start else {
            return;
        };
        let end = Instant::now();
        if let Some(m) = self.gw.telemetry.otlp_metrics() {
            m.acquired(backend, end - start, opened.map(|(a, b)| b - a));
        }
        self.trace_mark(Phase::Acquire, (start, end), Some(backend));
        if let Some(o) = opened {
            self.trace_mark(Phase::Create, o, Some(backend));
        }
    }

    /// When a connection borrow starts: now, if it is traced or the pool is measured over OTLP.
    pub(super) fn acquire_clock(&self) -> Option<Instant> {
        (self.note.trace.is_some() || self.gw.telemetry.otlp_metrics().is_some()).then(Instant::now)
    }

    /// Keeps the statement's SQL and facts for the recorder (when recording).
    pub(super) fn keep_statement(&mut self, sql: Sql, facts: QueryFacts) {
        if self.note.started.is_some() {
            self.note.sql = Some(sql);
            self.note.facts = Some(facts);
        }
    }

    /// A command ended: statements (text and prepared executes) are recorded.
    pub(super) fn end_command(&mut self, kind: CommandKind, result: &Result<Flow, SessionError>) {
        let note = std::mem::take(&mut self.note);
        let Some(started) = note.started else {
            return;
        };
        let t = &self.gw.telemetry;
        t.metrics.command(kind);
        if !matches!(kind, CommandKind::Query | CommandKind::Execute) {
            return;
        }
        self.entry.end_statement();
        let error = match result {
            Err(SessionError::Reply(e)) => Some((e.class(), e.code_and_state().0)),
            _ => None,
        };
        let facts = note.facts.as_ref().unwrap_or(&UNANALYSED);
        let record = StatementRecord {
            facts,
            user: &self.user,
            schema: self.state.schema.as_deref(),
            backend: note.backend.as_deref(),
            duration: started.elapsed(),
            rows_sent: note.rows_sent,
            rows_affected: note.rows_affected,
            bytes_out: self.stream.bytes_out() - note.bytes_before,
            error,
        };
        let redact = || {
            let sql = match note.sql.as_ref()? {
                Sql::Text(b) => String::from_utf8_lossy(b).into_owned(),
                Sql::Prepared(s) => s.to_string(),
            };
            self.gw.policy().redact_sql(&sql)
        };
        t.record(&record, &self.user_stats, redact);
        if let Some(tr) = &note.trace {
            self.export_trace(tr, &record, redact);
        }
        if let Some(txn) = &mut self.txn_trace {
            txn.statements += 1;
        }
        if let Some((mut txn, rolled_back)) = note.ended_transaction
            && let Some(traces) = t.traces()
        {
            txn.statements += 1;
            traces.export(vec![trace::transaction_span(
                &traces.scope,
                &txn,
                self.system_name(record.backend),
                record.schema,
                rolled_back,
                started + record.duration,
            )]);
        }
        if let Some(a) = &t.audit {
            let audited = match a.statements {
                AuditStatements::None => false,
                AuditStatements::Writes => {
                    !matches!(facts.kind, StatementKind::Select | StatementKind::Show)
                }
                AuditStatements::All => true,
            };
            if audited {
                let sql = redact().unwrap_or_else(|| facts.digest.clone());
                let detail = match error {
                    Some((_, code)) => format!("{sql} (error {code})"),
                    None => sql,
                };
                self.audit("statement", Some(&detail));
            }
        }
    }

    /// Builds a traced statement's spans and queues them for export.
    fn export_trace(
        &self,
        tr: &StatementTrace,
        record: &StatementRecord<'_>,
        redact: impl FnOnce() -> Option<String>,
    ) {
        let Some(traces) = self.gw.telemetry.traces() else {
            return;
        };
        let span = trace::StatementSpan {
            facts: record.facts,
            schema: record.schema,
            user: &self.user,
            client: &self.entry.peer,
            connection_id: self.id,
            backend: record.backend,
            system: self.system_name(record.backend),
            query_text: redact().unwrap_or_else(|| record.facts.digest.clone()),
            rows: record.rows_sent,
            error: record.error.map(|e| e.1),
        };
        let end = tr.start + record.duration;
        traces.export(trace::statement_spans(&traces.scope, tr, &span, end));
    }

    /// `db.system.name` of the backends: the one that ran the statement, else the primary.
    fn system_name(&self, backend: Option<&Backend>) -> &'static str {
        backend.unwrap_or(self.group.primary()).system_name()
    }

    /// After a statement: a transaction that began or ended is counted (with its duration and
    /// whether it rolled back: by ROLLBACK, or by the statement's failure).
    pub(super) fn note_transaction(&mut self, was_in: bool, facts: &QueryFacts, failed: bool) {
        match (was_in, self.in_txn) {
            (false, true) => {
                self.txn_started = Some(Instant::now());
                if self.gw.telemetry.traces().is_some() {
                    self.txn_trace = Some(TransactionTrace::began_by(self.note.trace.as_mut()));
                }
            }
            (true, false) => {
                let rolled_back = failed
                    || (facts.kind == StatementKind::Transaction
                        && facts.digest.starts_with("ROLLBACK"));
                if let Some(t) = self.txn_started.take() {
                    self.gw
                        .telemetry
                        .metrics
                        .transaction(t.elapsed(), rolled_back);
                }
                if let Some(txn) = self.txn_trace.take().filter(|t| t.sampled) {
                    self.note.ended_transaction = Some((txn, rolled_back));
                }
            }
            _ => {}
        }
    }
}
