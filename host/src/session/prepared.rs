//! Prepared statements: the client's statements under gateway ids, prepared lazily on whichever
//! backend connection serves them.
//!
//! A backend statement lives in the driver's per-connection statement cache (`stmt-cache-size`),
//! which closes the least recently used one when full: the number of backend statements stays
//! bounded whatever clients do, and nothing leaks when a client forgets STMT_CLOSE.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use mysql_async::Params;
use mysql_async::prelude::Queryable;

use super::relay::{self, RelayMode};
use super::{Session, SessionError};
use crate::error::GatewayError;
use crate::facts::{self, QueryFacts};
use crate::protocol::resultset::{ParamType, decode_execute_params, encode_prepare_ok};

/// Statements one client may hold at once (MySQL's default `max_prepared_stmt_count` is 16382
/// for the whole server).
const MAX_STATEMENTS_PER_SESSION: usize = 4096;

struct ClientStatement {
    sql: Arc<str>,
    facts: QueryFacts,
    params: usize,
    types: Vec<ParamType>,
    long_data: Vec<Option<Vec<u8>>>,
}

/// A session's prepared statements.
pub struct Statements {
    next_id: u32,
    map: HashMap<u32, ClientStatement>,
    max_long_data: usize,
}

impl Statements {
    pub fn new(max_long_data: usize) -> Self {
        Self {
            next_id: 1,
            map: HashMap::new(),
            max_long_data,
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn close(&mut self, id: u32) {
        self.map.remove(&id);
    }

    pub fn reset(&mut self, id: u32) -> Result<(), GatewayError> {
        let s = self
            .map
            .get_mut(&id)
            .ok_or(GatewayError::UnknownStatement {
                id,
                command: "mysqld_stmt_reset",
            })?;
        s.long_data.iter_mut().for_each(|d| *d = None);
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA has no reply; bad ids and indexes are ignored here and the
    /// following EXECUTE reports them.
    pub fn send_long_data(&mut self, id: u32, param: u16, data: &[u8]) {
        let max = self.max_long_data;
        if let Some(s) = self.map.get_mut(&id)
            && let Some(slot) = s.long_data.get_mut(usize::from(param))
        {
            let buf = slot.get_or_insert_with(Vec::new);
            if buf.len() + data.len() <= max {
                buf.extend_from_slice(data);
            }
        }
    }
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
        let name = conn.backend.name().to_string();
        let prepared = conn.conn().prep(text.as_ref()).await;
        let stmt = match prepared {
            Ok(s) => s,
            Err(e) => {
                let e = GatewayError::from_backend(&name, e);
                if matches!(e, GatewayError::BackendLost { .. }) {
                    conn.discard();
                } else {
                    self.after_statement(conn);
                }
                return Err(e.into());
            }
        };
        let id = self.stmts.next_id;
        self.stmts.next_id = self.stmts.next_id.wrapping_add(1).max(1);
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
                long_data: vec![None; params],
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
        let s = self
            .stmts
            .map
            .get_mut(&id)
            .ok_or(GatewayError::UnknownStatement {
                id,
                command: "mysqld_stmt_execute",
            })?;
        let values = decode_execute_params(body, s.params, &mut s.types, &mut s.long_data)
            .map_err(GatewayError::from)?;
        let sql = Arc::clone(&s.sql);
        let facts = s.facts.clone();
        self.pins.extend(facts.pins.iter().copied());
        let (mut conn, _) = self.connection_for(&facts).await?;
        let backend = Arc::clone(&conn.backend);
        self.entry.set_running(Some((
            Arc::clone(&backend),
            self.account.clone(),
            conn.thread_id(),
        )));
        // Redaction, when a redactor is active: the plan per result shape, applied per row.
        let scope = self.redaction_scope();
        let info = scope.as_ref().map(super::redact::RedactionScope::session);
        let redact = scope
            .as_ref()
            .zip(info.as_ref())
            .map(|(s, i)| s.redaction(&facts, i));
        let ssl = super::query::lists_session_status(&facts, &sql).then(|| self.own_status());
        let mode = RelayMode {
            redact,
            caps: self.caps,
            binary: true,
            base_status: self.last_status,
            rename: &[],
            status: ssl.as_ref().map(|s| &s[..]),
        };
        let outcome = async {
            let stmt = conn
                .conn()
                .prep(sql.as_ref())
                .await
                .map_err(|e| GatewayError::from_backend(backend.name(), e))?;
            let params = if values.is_empty() {
                Params::Empty
            } else {
                Params::Positional(values)
            };
            let mut result = conn
                .conn()
                .exec_iter(stmt, params)
                .await
                .map_err(|e| GatewayError::from_backend(backend.name(), e))?;
            let last =
                relay::relay_sets(&mut self.stream, &mut result, mode, backend.name(), None).await;
            drop(result);
            relay::finish(&mut self.stream, conn.conn(), last?, self.caps)
        }
        .await;
        self.entry.set_running(None);
        self.settle(conn, &facts, outcome).await
    }
}
