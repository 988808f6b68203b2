//! Prepared statements: the client's statements under gateway ids, prepared lazily on whichever
//! backend connection serves them.
//!
//! A backend statement lives in the driver's per-connection statement cache (`stmt-cache-size`),
//! which closes the least recently used one when full: the number of backend statements stays
//! bounded whatever clients do, and nothing leaks when a client forgets STMT_CLOSE.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;

use super::relay::{self, RelayMode};
use super::{Session, SessionError};
use crate::error::GatewayError;
use crate::facts::{self, QueryFacts};
use crate::pool::BackendConn;
use crate::protocol::buf::DecodeError;
use crate::protocol::resultset::{ExecuteBody, encode_prepare_ok};

pub use super::long_data::{LongData, LongDataHeld, LongDataLimits};

/// Statements one client may hold at once (MySQL's default `max_prepared_stmt_count` is 16382
/// for the whole server).
const MAX_STATEMENTS_PER_SESSION: usize = 4096;

struct ClientStatement {
    sql: Arc<str>,
    facts: QueryFacts,
    params: usize,
    /// The latest binding, two bytes (type, flags) per parameter.
    types: Vec<u8>,
    long_data: LongData,
}

/// A session's prepared statements.
pub struct Statements {
    next_id: u32,
    map: HashMap<u32, ClientStatement>,
    long_data: LongDataHeld,
}

impl Statements {
    pub fn new(limits: LongDataLimits) -> Self {
        Self {
            next_id: 1,
            map: HashMap::new(),
            long_data: LongDataHeld::new(limits),
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.long_data.forget_all();
    }

    pub fn close(&mut self, id: u32) {
        if let Some(mut s) = self.map.remove(&id) {
            self.long_data.reset(&mut s.long_data);
        }
    }

    pub fn reset(&mut self, id: u32) -> Result<(), GatewayError> {
        let s = self
            .map
            .get_mut(&id)
            .ok_or(GatewayError::UnknownStatement {
                id,
                command: "mysqld_stmt_reset",
            })?;
        self.long_data.reset(&mut s.long_data);
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA has no reply: an unknown statement is ignored (its execute will
    /// name it), anything else refused is remembered and reported by the next execute.
    pub fn send_long_data(&mut self, id: u32, param: u16, data: &[u8]) {
        if let Some(s) = self.map.get_mut(&id) {
            self.long_data.append(&mut s.long_data, param, data);
        }
    }

    fn take_long_data(&mut self, id: u32) -> Result<Vec<(u16, Vec<u8>)>, GatewayError> {
        match self.map.get_mut(&id) {
            Some(s) => self.long_data.take(&mut s.long_data),
            None => Ok(Vec::new()),
        }
    }
}

/// Prepares `sql` on `conn` afresh, not from the driver's cache: the client learns the
/// statement as it is now.
async fn fresh_prepare(
    conn: &mut BackendConn,
    sql: &str,
) -> Result<mysql_async::Statement, SessionError> {
    let backend = Arc::clone(&conn.backend);
    relay::answer(
        conn.read_timeout(),
        backend.name(),
        conn.conn().prep_fresh(sql),
    )
    .await
}

impl Session {
    pub(super) async fn com_stmt_prepare(&mut self, sql: Bytes) -> Result<(), SessionError> {
        let mut text: Arc<str> = Arc::from(String::from_utf8_lossy(&sql).as_ref());
        let mut facts = facts::analyze(&text);
        // Guards see prepared statements as they see text ones (at prepare, once).
        if let Some(new_sql) = self.guard(&facts, &text)? {
            facts = facts::analyze(&new_sql);
            text = Arc::from(new_sql);
        }
        if self.stmts.map.len() >= MAX_STATEMENTS_PER_SESSION {
            return Err(GatewayError::Server {
                code: 1461,
                state: "42000".into(),
                message: format!("Can't create more than max_prepared_stmt_count statements (current value: {MAX_STATEMENTS_PER_SESSION})"),
            }
            .into());
        }
        let (mut conn, _) = self.connection_for(&facts).await?;
        let mut prepared = fresh_prepare(&mut conn, &text).await;
        if matches!(
            prepared,
            Err(SessionError::Reply(GatewayError::BackendLost { .. }))
        ) && !self.in_txn
            && self.pins.is_empty()
        {
            // The backend went away: a prepare runs as well on the primary.
            conn.backend.connection_lost();
            conn.discard();
            let primary = Arc::clone(self.group.primary());
            conn = self.borrow(&primary).await?;
            prepared = fresh_prepare(&mut conn, &text).await;
        }
        let stmt = match prepared {
            Ok(s) => s,
            Err(e) => {
                if matches!(e, SessionError::Reply(GatewayError::BackendLost { .. })) {
                    conn.backend.connection_lost();
                    conn.discard();
                } else {
                    self.after_statement(conn);
                }
                return Err(e);
            }
        };
        let id = self.stmts.next_id;
        self.stmts.next_id = self.stmts.next_id.wrapping_add(1).max(1);
        if let Some(c) = &mut self.cap {
            c.prepared = Some(id);
        }
        let params = usize::from(stmt.num_params());
        let (mark, buf) = self.stream.begin();
        encode_prepare_ok(buf, id, stmt.num_columns(), stmt.num_params(), 0);
        self.stream.finish(mark);
        relay::write_definitions(&mut self.stream, stmt.params(), self.caps, self.last_status);
        relay::write_definitions(
            &mut self.stream,
            &stmt.columns(),
            self.caps,
            self.last_status,
        );
        self.stmts.map.insert(
            id,
            ClientStatement {
                sql: text,
                facts,
                params,
                types: Vec::new(),
                long_data: LongData::new(params),
            },
        );
        self.after_statement(conn);
        self.stream.flush().await?;
        Ok(())
    }

    pub(super) async fn com_stmt_execute(
        &mut self,
        id: u32,
        body: &[u8],
    ) -> Result<(), SessionError> {
        self.gw
            .questions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let long_data = self.stmts.take_long_data(id)?;
        let s = self
            .stmts
            .map
            .get_mut(&id)
            .ok_or(GatewayError::UnknownStatement {
                id,
                command: "mysqld_stmt_execute",
            })?;
        let parts = ExecuteBody::decode(body, s.params).map_err(GatewayError::from)?;
        if let Some(types) = parts.new_types {
            s.types.clear();
            s.types.extend_from_slice(types);
        }
        if s.types.len() != s.params * 2 {
            return Err(GatewayError::from(DecodeError::Malformed(
                "parameters were never bound with types",
            ))
            .into());
        }
        let mut backend_body = Vec::new();
        parts.encode(&mut backend_body, &s.types);
        let captured = self.cap.is_some().then(|| {
            let long: Vec<(u16, &[u8])> =
                long_data.iter().map(|(i, d)| (*i, d.as_slice())).collect();
            crate::protocol::params::decode(
                s.params,
                parts.null_bitmap,
                &s.types,
                parts.values,
                &long,
            )
        });
        let sql = Arc::clone(&s.sql);
        let facts = s.facts.clone();
        if let (Some(c), Some(Ok(params))) = (&mut self.cap, captured) {
            c.params = params;
        }
        self.begin_statement(&facts, sql.as_bytes());
        let result = match self.admit_statement() {
            Ok(()) => self.execute(&sql, &facts, &long_data, &backend_body).await,
            Err(e) => Err(e.into()),
        };
        self.keep_statement(super::record::Sql::Prepared(sql), facts);
        result
    }

    /// Runs a prepared statement with its long data and parameters.
    async fn execute(
        &mut self,
        sql: &Arc<str>,
        facts: &QueryFacts,
        long_data: &[(u16, Vec<u8>)],
        backend_body: &[u8],
    ) -> Result<(), SessionError> {
        self.note_pin_cause(facts);
        self.pins.extend(facts.pins.iter().copied());
        let (mut conn, _) = self.connection_for(facts).await?;
        // Redaction, when a redactor is active: the plan per result shape, applied per row.
        let scope = self.redaction_scope();
        let info = scope.as_ref().map(super::redact::RedactionScope::session);
        let timer = self.redact_timer();
        let redact = scope
            .as_ref()
            .zip(info.as_ref())
            .map(|(s, i)| s.redaction(facts, i, timer.as_ref()));
        let ssl = super::query::lists_session_status(facts, sql).then(|| self.own_status());
        let mode = RelayMode {
            redact,
            caps: self.caps,
            binary: true,
            base_status: self.last_status,
            rename: &[],
            status: ssl.as_ref().map(|s| &s[..]),
            order: relay::StatementOrder::of(facts),
            read_timeout: conn.read_timeout(),
        };
        let long_data: Vec<(u16, &[u8])> =
            long_data.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        let before = self.stream.packets_out();
        let mut outcome = self
            .run_execute(&mut conn, sql, &long_data, backend_body, mode)
            .await;
        if self.stream.packets_out() == before && self.lost_read(facts, &outcome) {
            // A read on a backend that just went away, nothing sent yet: once more on the primary.
            conn.backend.connection_lost();
            conn.discard();
            let primary = Arc::clone(self.group.primary());
            conn = self.borrow(&primary).await?;
            outcome = self
                .run_execute(&mut conn, sql, &long_data, backend_body, mode)
                .await;
        }
        self.trace_redaction(timer.as_ref());
        self.settle(conn, facts, outcome).await
    }

    /// Prepares `sql` on `conn` (from its statement cache when it can) and executes it with the
    /// client's `body`, after its long data, relaying the results.
    async fn run_execute(
        &mut self,
        conn: &mut BackendConn,
        sql: &str,
        long_data: &[(u16, &[u8])],
        body: &[u8],
        mode: RelayMode<'_>,
    ) -> Result<relay::Outcome, SessionError> {
        let backend = Arc::clone(&conn.backend);
        self.entry.set_running(Some((
            Arc::clone(&backend),
            self.account.clone(),
            conn.thread_id(),
        )));
        let t0 = self.trace_clock();
        let outcome = async {
            let stmt =
                relay::answer(mode.read_timeout, backend.name(), conn.conn().prep(sql)).await?;
            // In flight until the block ends (the result relayed, or an error).
            let mut flight = backend.load.begin();
            let mut result = relay::answer(
                mode.read_timeout,
                backend.name(),
                conn.conn().exec_raw_iter(&stmt, long_data, body),
            )
            .await?;
            flight.answered();
            let last =
                relay::relay_sets(&mut self.stream, &mut result, mode, backend.name(), None).await;
            drop(result);
            relay::finish(&mut self.stream, conn.conn(), last?, self.caps)
        }
        .await;
        self.entry.set_running(None);
        self.trace_phase(crate::telemetry::trace::Phase::Execute, t0, Some(&backend));
        outcome
    }
}
