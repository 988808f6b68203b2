//! Streams a statement's results from the backend driver to the client: column definitions, rows
//! (text or binary), multi-result sets and the final OK/EOF, with the client's status flags.
//!
//! Rows are encoded straight into the client's write buffer and flushed every 64 KiB, so a result
//! of any size passes in bounded memory.

use mysql_async::prelude::Protocol;
use mysql_async::{Column, Conn, QueryResult, Value};

use super::SessionError;
use super::redact;
use crate::error::GatewayError;
use crate::frontend::io::ClientIo;
use crate::phase::ColumnAction;
use crate::protocol::PacketStream;
use crate::protocol::constants::{cap, status};
use crate::protocol::reply::{OkPacket, encode_eof};
use crate::protocol::resultset::{
    encode_binary_row, encode_column, encode_column_count, encode_column_with, encode_text_row,
};
use mysql_common::constants::ColumnFlags;

/// How results are written for this client.
#[derive(Clone, Copy)]
pub struct RelayMode<'a> {
    pub caps: u32,
    pub binary: bool,
    /// Status flags for results before the last (the last takes the backend's own).
    pub base_status: u16,
    /// A column name to present under another name (`CONNECTION_ID()` substitution).
    pub rename: &'a [(&'a str, &'a str)],
    /// Redact results (when a redactor policy is active).
    pub redact: Option<super::redact::Redaction<'a>>,
    /// Status variables the gateway answers for the session (the client's TLS): in a result
    /// with a name and a value column (`SHOW STATUS`, `information_schema.SESSION_STATUS`), the
    /// rows with these names get these values.
    pub status: Option<&'a [(&'a str, &'a str)]>,
    /// The client's statements, to say in each result set's metadata whether more results
    /// follow, as the server does.
    pub order: StatementOrder,
    /// How long the backend may stay silent (`read-timeout-ms`; None: no limit).
    pub read_timeout: Option<std::time::Duration>,
}

/// The backend's next answer, waited for at most `read_timeout`: a backend that stays silent
/// past it fails the statement as a lost connection (the caller throws the connection away).
pub async fn answer<T>(
    read_timeout: Option<std::time::Duration>,
    backend: &str,
    next: impl Future<Output = Result<T, mysql_async::Error>>,
) -> Result<T, SessionError> {
    let mut next = std::pin::pin!(next);
    // Most answers (rows of a streaming result) are already read ahead: polled once, they
    // need no timer. Only an answer that has to wait gets one.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(next.as_mut().poll(cx))).await;
    let answered = match (first, read_timeout) {
        (std::task::Poll::Ready(r), _) => r,
        (std::task::Poll::Pending, None) => next.await,
        (std::task::Poll::Pending, Some(limit)) => match tokio::time::timeout(limit, next).await {
            Ok(r) => r,
            Err(_) => {
                return Err(SessionError::Reply(GatewayError::BackendLost {
                    backend: backend.to_string(),
                    reason: format!(
                        "no answer within {} ms (read-timeout-ms)",
                        limit.as_millis()
                    ),
                }));
            }
        },
    };
    answered.map_err(backend_err(backend))
}

/// The statements a packet holds, as far as their results go: a CALL (or an anonymous block)
/// answers with result sets and then an OK, any other statement once. The EOF after a result
/// set's column definitions carries MORE_RESULTS_EXISTS when more results follow the set; a
/// client reads it before the rows (Connector/C decides by it how to read a prepared CALL).
#[derive(Debug, Clone, Copy)]
pub struct StatementOrder {
    pub count: u32,
    pub calls: u64,
}

impl StatementOrder {
    pub fn of(facts: &crate::facts::QueryFacts) -> Self {
        Self {
            count: facts.statements.max(1),
            calls: facts.calls,
        }
    }

    fn is_call(&self, at: u32) -> bool {
        1u64.checked_shl(at).is_none_or(|bit| self.calls & bit != 0)
    }

    /// More results follow a result set of statement `at`.
    fn more_after_set(&self, at: u32) -> bool {
        self.is_call(at) || at + 1 < self.count
    }
}

/// The (name, value) column indexes of a status listing.
fn status_columns(columns: &[Column]) -> Option<(usize, usize)> {
    // Names compare in any case: `Variable_name` (SHOW) is `VARIABLE_NAME` (information_schema).
    let find = |names: &[&str]| {
        columns.iter().position(|c| {
            let n = c.name_ref();
            names.iter().any(|w| n.eq_ignore_ascii_case(w.as_bytes()))
        })
    };
    Some((
        find(&["Variable_name"])?,
        find(&["Value", "VARIABLE_VALUE"])?,
    ))
}

/// Puts the gateway's values into the rows `overrides` names.
fn override_status(
    values: &mut [Option<Value>],
    (name, value): (usize, usize),
    overrides: &[(&str, &str)],
) {
    let Some(Some(Value::Bytes(n))) = values.get(name) else {
        return;
    };
    if let Some((_, v)) = overrides
        .iter()
        .find(|(k, _)| n.eq_ignore_ascii_case(k.as_bytes()))
    {
        values[value] = Some(Value::Bytes(v.as_bytes().to_vec()));
    }
}

/// What the last result of a statement was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastResult {
    /// A result set of this many rows.
    ResultSet(u64),
    Ok,
}

/// What the session learns from the final packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub status: u16,
    pub affected_rows: u64,
    /// What `ROW_COUNT()` returns after this statement: the affected rows of a final OK, -1 after
    /// a result set.
    pub row_count: i64,
    pub last_insert_id: u64,
    pub warnings: u16,
    /// What `FOUND_ROWS()` returns after this statement, when it ended with a result set (its
    /// row count; the gateway answers it when the connection went back to the pool).
    pub found_rows: Option<u64>,
}

impl Outcome {
    /// A write or warnings: state the next statement may ask about.
    pub fn leaves_state(&self) -> bool {
        self.affected_rows > 0 || self.last_insert_id > 0 || self.warnings > 0
    }
}

fn backend_err(conn_name: &str) -> impl Fn(mysql_async::Error) -> SessionError + '_ {
    move |e| SessionError::Reply(GatewayError::from_backend(conn_name, e))
}

/// Flags that describe the backend connection rather than the client's session are kept; those
/// the gateway does not offer are dropped.
fn client_status(backend: u16) -> u16 {
    backend
        & !(status::SESSION_STATE_CHANGED
            | status::CURSOR_EXISTS
            | status::LAST_ROW_SENT
            | status::MORE_RESULTS_EXISTS)
}

/// Relays every result set and intermediate OK of `result`; the final packet is written by
/// [`finish`] once the driver has released the connection.
pub async fn relay_sets<P: Protocol>(
    stream: &mut PacketStream<ClientIo>,
    result: &mut QueryResult<'_, '_, P>,
    mode: RelayMode<'_>,
    backend: &str,
    mut digest: Option<&mut super::optimistic::ResultDigest>,
) -> Result<LastResult, SessionError> {
    let deprecate_eof = mode.caps & cap::DEPRECATE_EOF != 0;
    let more_status = mode.base_status | status::MORE_RESULTS_EXISTS;
    // The statement the next result answers.
    let mut at = 0u32;
    loop {
        let Some(columns) = result.columns() else {
            // No result pending, or the driver holds a later statement's error (a
            // multi-statement whose second statement failed): `next` gives it up.
            answer(mode.read_timeout, backend, result.next()).await?;
            return Ok(LastResult::Ok);
        };
        if columns.is_empty() {
            if let Some(d) = digest.as_deref_mut() {
                d.ok(result.affected_rows());
            }
            at += 1;
            // An OK result. Is another result behind it?
            if result.is_empty() {
                return Ok(LastResult::Ok);
            }
            let info = result.info().into_owned();
            let (mark, buf) = stream.begin();
            OkPacket {
                affected_rows: result.affected_rows(),
                last_insert_id: result.last_insert_id().unwrap_or(0),
                status: more_status,
                warnings: result.warnings(),
                info: info.as_bytes(),
            }
            .encode(buf, false);
            stream.finish(mark);
            answer(mode.read_timeout, backend, result.next()).await?;
            continue;
        }
        let plan = mode.redact.and_then(|r| r.plan(&columns));
        let status = mode
            .status
            .and_then(|o| status_columns(&columns).map(|c| (c, o)));
        let metadata_status = if mode.order.more_after_set(at) {
            more_status
        } else {
            mode.base_status
        };
        if !mode.order.is_call(at) {
            at += 1;
        }
        write_columns(stream, &columns, mode, plan.as_deref(), metadata_status);
        if let Some(d) = digest.as_deref_mut() {
            d.columns(columns.len());
        }
        // Rows held back while a `custom` column's cells wait for one transform call.
        let mut batch = plan
            .as_deref()
            .filter(|p| redact::has_custom(p))
            .zip(mode.redact)
            .map(|(plan, r)| RowBatch::new(plan, r.policy));
        let mut rows = 0u64;
        while let Some(row) = answer(mode.read_timeout, backend, result.next()).await? {
            rows += 1;
            let mut values = row.unwrap_raw();
            if let Some(d) = digest.as_deref_mut() {
                d.row(&values);
            }
            if let Some((cols, overrides)) = status {
                override_status(&mut values, cols, overrides);
            }
            if let Some(plan) = &plan {
                redact::apply(plan, &columns, &mut values);
            }
            if let Some(b) = &mut batch {
                if b.push(values) {
                    b.flush(stream, &columns, mode.binary).await?;
                }
            } else {
                write_row(stream, &columns, mode.binary, &values);
                stream.flush_if_full().await?;
            }
        }
        if let Some(b) = &mut batch {
            b.flush(stream, &columns, mode.binary).await?;
        }
        // The set ended; the driver has already read the next result's header, if any.
        let more = if result.columns().is_some() {
            true
        } else {
            match answer(mode.read_timeout, backend, result.next()).await {
                Ok(_) => false,
                Err(e) => {
                    // An error result follows this set (or the backend fell silent).
                    write_terminator(stream, deprecate_eof, result.warnings(), more_status);
                    return Err(e);
                }
            }
        };
        if !more {
            return Ok(LastResult::ResultSet(rows));
        }
        write_terminator(stream, deprecate_eof, result.warnings(), more_status);
    }
}

fn write_row(
    stream: &mut PacketStream<ClientIo>,
    columns: &[Column],
    binary: bool,
    values: &[Option<Value>],
) {
    let (mark, buf) = stream.begin();
    if binary {
        encode_binary_row(buf, columns, values);
    } else {
        encode_text_row(buf, values);
    }
    stream.finish(mark);
}

/// Redacted rows waiting for their `custom` cells' transform (bounded by rows and bytes).
struct RowBatch<'a> {
    plan: &'a [ColumnAction],
    policy: &'a dyn crate::phase::Policy,
    rows: Vec<Vec<Option<Value>>>,
    bytes: usize,
}

impl<'a> RowBatch<'a> {
    fn new(plan: &'a [ColumnAction], policy: &'a dyn crate::phase::Policy) -> Self {
        Self {
            plan,
            policy,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// Holds a row back; `true` when the batch is full and must be flushed.
    fn push(&mut self, values: Vec<Option<Value>>) -> bool {
        self.bytes += redact::custom_bytes(self.plan, &values);
        self.rows.push(values);
        self.rows.len() >= redact::BATCH_ROWS || self.bytes >= redact::BATCH_BYTES
    }

    /// Transforms the held rows' `custom` cells in one call per column and sends the rows.
    async fn flush(
        &mut self,
        stream: &mut PacketStream<ClientIo>,
        columns: &[Column],
        binary: bool,
    ) -> Result<(), SessionError> {
        redact::transform_batch(self.plan, columns, &mut self.rows, self.policy);
        for values in self.rows.drain(..) {
            write_row(stream, columns, binary, &values);
            stream.flush_if_full().await?;
        }
        self.bytes = 0;
        Ok(())
    }
}

fn write_columns(
    stream: &mut PacketStream<ClientIo>,
    columns: &[Column],
    mode: RelayMode<'_>,
    plan: Option<&[ColumnAction]>,
    metadata_status: u16,
) {
    let (mark, buf) = stream.begin();
    encode_column_count(buf, columns.len());
    stream.finish(mark);
    for (i, c) in columns.iter().enumerate() {
        let (mark, buf) = stream.begin();
        let name = mode
            .rename
            .iter()
            .find(|(from, _)| c.name_ref() == from.as_bytes())
            .map_or(c.name_ref(), |(_, to)| to.as_bytes());
        let mut flags = c.flags();
        if plan
            .and_then(|p| p.get(i))
            .is_some_and(|a| super::redact::may_become_null(*a, c))
        {
            flags.remove(ColumnFlags::NOT_NULL_FLAG);
        }
        encode_column_with(buf, c, name, flags);
        stream.finish(mark);
    }
    if mode.caps & cap::DEPRECATE_EOF == 0 {
        let (mark, buf) = stream.begin();
        encode_eof(buf, 0, metadata_status);
        stream.finish(mark);
    }
}

/// Column definitions for PREPARE_OK (params or columns), each list followed by EOF unless
/// DEPRECATE_EOF.
pub fn write_definitions(
    stream: &mut PacketStream<ClientIo>,
    columns: &[Column],
    caps: u32,
    status: u16,
) {
    if columns.is_empty() {
        return;
    }
    for c in columns {
        let (mark, buf) = stream.begin();
        encode_column(buf, c);
        stream.finish(mark);
    }
    if caps & cap::DEPRECATE_EOF == 0 {
        let (mark, buf) = stream.begin();
        encode_eof(buf, 0, status);
        stream.finish(mark);
    }
}

fn write_terminator(
    stream: &mut PacketStream<ClientIo>,
    deprecate_eof: bool,
    warnings: u16,
    status: u16,
) {
    let (mark, buf) = stream.begin();
    if deprecate_eof {
        OkPacket {
            status,
            warnings,
            ..OkPacket::default()
        }
        .encode(buf, true);
    } else {
        encode_eof(buf, warnings, status);
    }
    stream.finish(mark);
}

/// Queues the statement's final packet from the backend's last OK/EOF. The caller flushes once
/// it has settled the session, so a client never runs ahead of the session's bookkeeping.
pub fn finish(
    stream: &mut PacketStream<ClientIo>,
    conn: &Conn,
    last: LastResult,
    caps: u32,
) -> Result<Outcome, SessionError> {
    let (affected_rows, last_insert_id, backend_status, warnings, info) = conn
        .last_ok_packet()
        .map_or((0, 0, status::AUTOCOMMIT, 0, Vec::new()), |ok| {
            (
                ok.affected_rows(),
                ok.last_insert_id().unwrap_or(0),
                ok.status_flags().bits(),
                ok.warnings(),
                ok.info_ref().map(<[u8]>::to_vec).unwrap_or_default(),
            )
        });
    let status = client_status(backend_status);
    match last {
        LastResult::ResultSet(_) => {
            write_terminator(stream, caps & cap::DEPRECATE_EOF != 0, warnings, status);
        }
        LastResult::Ok => {
            let (mark, buf) = stream.begin();
            OkPacket {
                affected_rows,
                last_insert_id,
                status,
                warnings,
                info: &info,
            }
            .encode(buf, false);
            stream.finish(mark);
        }
    }
    Ok(Outcome {
        status,
        affected_rows: if last == LastResult::Ok {
            affected_rows
        } else {
            0
        },
        row_count: if last == LastResult::Ok {
            i64::try_from(affected_rows).unwrap_or(i64::MAX)
        } else {
            -1
        },
        last_insert_id,
        warnings,
        found_rows: match last {
            LastResult::ResultSet(rows) => Some(rows),
            LastResult::Ok => None,
        },
    })
}
