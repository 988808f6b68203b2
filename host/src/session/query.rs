//! COM_QUERY: facts, policy check, the connection to run on, the statement's session effects
//! (pins, SET read-back, schema), and `KILL`, answered by the gateway itself.

use std::sync::Arc;

use bytes::Bytes;
use mysql_async::prelude::Queryable;

use super::optimistic::ResultDigest;
use super::relay::{self, Outcome, RelayMode};
use super::{Session, SessionError};
use crate::error::GatewayError;
use crate::facts::{self, QueryFacts, SetTarget};
use crate::phase::Verdict;
use crate::pool::BackendConn;
use crate::protocol::constants::status;
use crate::replay::NAMES_VARS;
use crate::telemetry::trace::Phase;

impl Session {
    pub(super) async fn com_query(&mut self, sql: Bytes) -> Result<(), SessionError> {
        self.gw
            .questions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut facts = facts::analyze(&String::from_utf8_lossy(&sql));
        self.begin_statement(&facts, &sql);
        let result = match self.admit_statement() {
            Ok(()) => self.query(&sql, &mut facts).await,
            Err(e) => Err(e.into()),
        };
        self.keep_statement(super::record::Sql::Text(sql), facts);
        result
    }

    /// Runs one text statement (`facts` become the rewritten statement's when a guard rewrites).
    async fn query(&mut self, sql: &Bytes, facts: &mut QueryFacts) -> Result<(), SessionError> {
        let text = String::from_utf8_lossy(sql);
        if facts.multi_statement && !self.multi_statements {
            return Err(GatewayError::Server {
                code: 1064,
                state: "42000".into(),
                message: "You have an error in your SQL syntax: multi-statements are not enabled on this connection (CLIENT_MULTI_STATEMENTS)".into(),
            }
            .into());
        }
        if let Some((query_only, id)) = facts.kill {
            return self
                .kill(query_only, id.unwrap_or(u64::from(self.id)))
                .await;
        }
        let mut sql_to_run: std::borrow::Cow<'_, [u8]> = std::borrow::Cow::Borrowed(sql);
        let t0 = self.trace_clock();
        let verdict = self.guard(facts, &text);
        self.trace_phase(Phase::Guard, t0, None);
        if let Some(new_sql) = verdict? {
            *facts = facts::analyze(&new_sql);
            sql_to_run = std::borrow::Cow::Owned(new_sql.into_bytes());
        }
        if facts.local_infile {
            if facts.multi_statement {
                return Err(GatewayError::Unsupported(
                    "LOAD DATA LOCAL INFILE within a multi-statement query (send it on its own)"
                        .into(),
                )
                .into());
            }
            if let Some(refusal) = self.local_infile_refusal() {
                return Err(refusal.into());
            }
        }
        let id_expr = facts
            .mentions_connection_id
            .then(|| format!("CAST({} AS UNSIGNED)", self.id));
        if let Some(e) = &id_expr {
            sql_to_run = std::borrow::Cow::Owned(replace_call(&sql_to_run, b"connection_id", e));
        }
        if facts.mentions_socket {
            sql_to_run =
                std::borrow::Cow::Owned(replace_sysvar(&sql_to_run, b"socket", SOCKET_ANSWER));
        }
        self.note_pin_cause(facts);
        self.pins.extend(facts.pins.iter().copied());
        if !self.in_txn {
            self.optimistic = None;
        }
        if self.optimistic.is_some()
            && (!Self::stays_optimistic(facts) || self.optimistic_log_full())
        {
            self.move_to_primary().await?;
        }
        let optimistic_start = self.starts_optimistic(facts);
        let mut digest =
            (optimistic_start || self.optimistic.is_some()).then(ResultDigest::default);

        let (mut conn, reused) = self.connection_for(facts).await?;
        if !reused {
            self.replay_last_insert_id(&mut conn, facts).await?;
        }
        // On another connection than the previous statement's, ROW_COUNT() would answer for
        // that connection's last statement: the gateway puts in the session's.
        let row_count_expr = (!reused && facts.mentions_row_count)
            .then(|| format!("CAST({} AS SIGNED)", self.last_row_count));
        if let Some(e) = &row_count_expr {
            sql_to_run = std::borrow::Cow::Owned(replace_call(&sql_to_run, b"row_count", e));
        }
        // The same for FOUND_ROWS() after a result set (SQL_CALC_FOUND_ROWS pins the connection,
        // so its count is always asked where it was made).
        let found_rows_expr = (!reused && facts.mentions_found_rows)
            .then(|| format!("CAST({} AS UNSIGNED)", self.last_found_rows));
        if let Some(e) = &found_rows_expr {
            sql_to_run = std::borrow::Cow::Owned(replace_call(&sql_to_run, b"found_rows", e));
        }
        if let Some(limit) = self.statement_timeout.filter(|_| {
            bounded_by_timeout(facts)
                && conn
                    .backend
                    .version()
                    .is_some_and(|v| v.contains("MariaDB"))
        }) {
            // The server stops the work itself (1969) when the limit passes.
            let mut bounded = format!(
                "SET STATEMENT max_statement_time={:.3} FOR ",
                limit.as_secs_f64()
            )
            .into_bytes();
            bounded.extend_from_slice(&sql_to_run);
            sql_to_run = std::borrow::Cow::Owned(bounded);
        }
        let mut renames: Vec<(&str, &str)> = Vec::new();
        if let Some(e) = &id_expr {
            renames.push((e.as_str(), "CONNECTION_ID()"));
        }
        if facts.mentions_socket {
            renames.push((SOCKET_ANSWER, "@@socket"));
        }
        if let Some(e) = &row_count_expr {
            renames.push((e.as_str(), "ROW_COUNT()"));
        }
        if let Some(e) = &found_rows_expr {
            renames.push((e.as_str(), "FOUND_ROWS()"));
        }
        // Redaction, when a redactor is active: the plan per result shape, applied per row.
        let scope = self.redaction_scope();
        let info = scope.as_ref().map(super::redact::RedactionScope::session);
        let timer = self.redact_timer();
        let redact = scope
            .as_ref()
            .zip(info.as_ref())
            .map(|(s, i)| s.redaction(facts, i, timer.as_ref()));
        let ssl = lists_session_status(facts, &text).then(|| self.own_status());
        let mode = RelayMode {
            redact,
            caps: self.caps,
            binary: false,
            base_status: self.last_status,
            rename: &renames,
            status: ssl.as_ref().map(|s| &s[..]),
            order: relay::StatementOrder::of(facts),
            read_timeout: conn.read_timeout(),
        };
        let before = self.stream.packets_out();
        let reply = self.stream.mark();
        let mut outcome = if facts.local_infile {
            self.run_load_local(&mut conn, &sql_to_run, mode).await
        } else {
            self.run_text(&mut conn, &sql_to_run, mode, digest.as_mut())
                .await
        };
        if self.lost_read(facts, &outcome)
            && (self.stream.packets_out() == before || self.stream.rewind(reply))
        {
            // A read on a backend that just went away, nothing of its reply sent yet (what was
            // queued is taken back): once more on the primary.
            tracing::warn!(
                backend = conn.backend.name(),
                "backend lost; retrying the read on the primary"
            );
            conn.backend.connection_lost();
            conn.discard();
            let primary = Arc::clone(self.group.primary());
            conn = self.borrow(&primary).await?;
            digest = digest.map(|_| ResultDigest::default());
            outcome = self
                .run_text(&mut conn, &sql_to_run, mode, digest.as_mut())
                .await;
        }
        let mut deadlocks = 0;
        while deadlocks < self.gw.config().routing.deadlock_retries
            && self.stream.packets_out() == before
            && self.deadlock_retryable(facts, &outcome)
        {
            deadlocks += 1;
            self.gw
                .deadlock_retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(10 << (deadlocks - 1))).await;
            digest = digest.map(|_| ResultDigest::default());
            outcome = self
                .run_text(&mut conn, &sql_to_run, mode, digest.as_mut())
                .await;
        }
        if self.stream.packets_out() == before
            && self.writer_refused(facts, &outcome)
            && let Some(writer) = self.moved_writer(&conn.backend).await
        {
            // Refused as read-only by the server that was the writer, and the monitor sees
            // another: the statement did not run; it runs on the new writer.
            tracing::info!(
                from = conn.backend.name(),
                to = writer.name(),
                "the writer moved; running the refused write on the new writer"
            );
            drop(conn);
            conn = self.borrow(&writer).await?;
            digest = digest.map(|_| ResultDigest::default());
            outcome = self
                .run_text(&mut conn, &sql_to_run, mode, digest.as_mut())
                .await;
        }
        self.trace_redaction(timer.as_ref());
        self.settle(conn, facts, outcome).await?;
        if let Some(d) = digest {
            self.log_optimistic(&sql_to_run, d.finish(), optimistic_start);
        }
        Ok(())
    }

    /// A read outside a transaction, on a session not bound to its connection, whose backend
    /// went away: run elsewhere, it gives the same answer (the caller checks nothing was sent).
    pub(super) fn lost_read(
        &self,
        facts: &QueryFacts,
        outcome: &Result<Outcome, SessionError>,
    ) -> bool {
        matches!(
            outcome,
            Err(SessionError::Reply(GatewayError::BackendLost { .. }))
        ) && facts.read_only
            && !self.in_txn
            && self.pins.is_empty()
    }

    /// A write the server refused as read-only (1290 with `--read-only`, not the other causes
    /// of 1290 such as `--secure-file-priv`), outside a transaction, on its own, on a session
    /// whose state is not bound to that connection: it may run elsewhere.
    fn writer_refused(&self, facts: &QueryFacts, outcome: &Result<Outcome, SessionError>) -> bool {
        matches!(
            outcome,
            Err(SessionError::Reply(GatewayError::Server { code: 1290, message, .. }))
                if message.contains("read-only") || message.contains("read_only")
        ) && !self.in_txn
            && !facts.multi_statement
            && !facts.local_infile
            && self.pins.is_empty()
    }

    /// A deadlock (1213) the server resolved by rolling back only this statement: it ran in
    /// autocommit, on its own, outside a transaction, and nothing of it reached the client.
    fn deadlock_retryable(
        &self,
        facts: &QueryFacts,
        outcome: &Result<Outcome, SessionError>,
    ) -> bool {
        matches!(
            outcome,
            Err(SessionError::Reply(GatewayError::Server { code: 1213, .. }))
        ) && !self.in_txn
            && self.autocommit()
            && !facts.multi_statement
            && !facts.local_infile
            && facts.starts_transaction.is_none()
    }

    /// The guards' verdict on a statement (text or prepared): refused with the policy's error,
    /// allowed (a report-mode denial is logged and counted), or `Some` SQL to run instead.
    pub(super) fn guard(
        &mut self,
        facts: &QueryFacts,
        text: &str,
    ) -> Result<Option<String>, GatewayError> {
        let verdict = self.gw.policy().check(facts, text, &self.info());
        if let Some(c) = &mut self.cap {
            c.guard = super::capture::outcome(&verdict);
        }
        match verdict {
            Verdict::Allow => Ok(None),
            Verdict::Deny {
                policy,
                code,
                message,
            } => {
                self.audit(
                    "denied",
                    Some(&format!(
                        "policy {policy}: {code} {message}; statement {}",
                        facts.digest
                    )),
                );
                Err(GatewayError::Denied {
                    policy,
                    code,
                    message,
                })
            }
            Verdict::Rewrite(new_sql) => Ok(Some(new_sql)),
            Verdict::Report {
                policy,
                code,
                message,
            } => {
                self.gw
                    .guard_reports
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    %policy,
                    digest = %facts.digest,
                    code,
                    %message,
                    "statement allowed: a guard rule in report mode would deny it"
                );
                self.audit(
                    "reported",
                    Some(&format!(
                        "policy {policy}: {code} {message}; statement {}",
                        facts.digest
                    )),
                );
                Ok(None)
            }
        }
    }

    /// The status variables that describe the client's connection, not the backend's.
    pub(super) fn own_status(&self) -> [(&'static str, &'static str); 3] {
        let tls = self.stream.io().tls_params();
        let compressed = if self.stream.is_compressed() {
            "ON"
        } else {
            "OFF"
        };
        [
            ("Ssl_cipher", tls.map_or("", |t| t.cipher)),
            ("Ssl_version", tls.map_or("", |t| t.version)),
            ("Compression", compressed),
        ]
    }

    /// Runs one COM_QUERY on `conn`, relaying its results.
    async fn run_text(
        &mut self,
        conn: &mut BackendConn,
        sql: &[u8],
        mode: RelayMode<'_>,
        digest: Option<&mut ResultDigest>,
    ) -> Result<Outcome, SessionError> {
        let backend = Arc::clone(&conn.backend);
        self.entry.set_running(Some((
            Arc::clone(&backend),
            self.account.clone(),
            conn.thread_id(),
        )));
        let t0 = self.trace_clock();
        let result = async {
            // In flight until the block ends (the result relayed, or an error).
            let mut flight = backend.load.begin();
            let mut result = relay::answer(
                mode.read_timeout,
                backend.name(),
                conn.conn().query_iter(sql),
            )
            .await?;
            flight.answered();
            let last =
                relay::relay_sets(&mut self.stream, &mut result, mode, backend.name(), digest)
                    .await;
            drop(result);
            relay::finish(&mut self.stream, conn.conn(), last?, self.caps)
        }
        .await;
        self.entry.set_running(None);
        self.trace_phase(Phase::Execute, t0, Some(&backend));
        result
    }

    /// After a statement on `conn`: learn its effects on the session, then keep or release the
    /// connection.
    pub(super) async fn settle(
        &mut self,
        mut conn: BackendConn,
        facts: &QueryFacts,
        outcome: Result<Outcome, SessionError>,
    ) -> Result<(), SessionError> {
        let was_in = self.in_txn;
        if self.note.started.is_some() {
            self.note.backend = Some(Arc::clone(&conn.backend));
        }
        if let Some(c) = &mut self.cap {
            c.backend = Some(Arc::from(conn.backend.name()));
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if matches!(e, SessionError::Reply(GatewayError::BackendLost { .. })) {
                    conn.backend.connection_lost();
                    self.in_txn = false;
                    conn.discard();
                } else {
                    // A server error leaves the connection and its transaction as they were,
                    // except a deadlock, which rolled the transaction back.
                    if matches!(
                        e,
                        SessionError::Reply(GatewayError::Server { code: 1213, .. })
                    ) {
                        self.in_txn = false;
                    }
                    self.after_statement(conn);
                }
                self.note_transaction(was_in, facts, true);
                return Err(e);
            }
        };
        self.note.rows_sent = outcome.found_rows.unwrap_or(0);
        self.note.rows_affected = outcome.affected_rows;
        // Only the flags that describe the session carry over to later replies (index use,
        // metadata changes, slowness are one statement's).
        self.last_status = outcome.status & status::SESSION_OWNED;
        self.in_txn = outcome.status & status::IN_TRANS != 0;
        if outcome.last_insert_id > 0 {
            self.last_insert_id = outcome.last_insert_id;
        }
        self.last_row_count = outcome.row_count;
        if let Some(rows) = outcome.found_rows {
            self.last_found_rows = rows;
        }
        if !facts.set_targets.is_empty() || facts.changes_schema {
            self.read_back_state(&mut conn, facts).await?;
        }
        self.note_write(&conn, facts);
        self.after_statement(conn);
        self.note_transaction(was_in, facts, false);
        self.stream.flush().await?;
        Ok(())
    }

    /// A SET or USE succeeded: record the values the server now holds, so they replay exactly.
    async fn read_back_state(
        &mut self,
        conn: &mut BackendConn,
        facts: &QueryFacts,
    ) -> Result<(), SessionError> {
        let mut names: Vec<String> = Vec::new();
        for t in &facts.set_targets {
            match t {
                SetTarget::Session(n) if is_plain_name(n) => names.push(n.clone()),
                SetTarget::Session(_) => {
                    self.pins.insert(crate::facts::PinReason::UnparsedSet);
                }
                SetTarget::Names => names.extend(NAMES_VARS.iter().map(|s| (*s).to_string())),
            }
        }
        names.sort();
        names.dedup();
        let backend = Arc::clone(&conn.backend);
        let mut next = (*self.state).clone();
        if let Err(e) = next.read_back(conn.conn(), &names).await {
            // The variable cannot be read back (not a session variable): keep the session on
            // this connection rather than lose the setting.
            tracing::debug!(error = %e, "SET read-back failed; pinning");
            self.pins.insert(crate::facts::PinReason::UnparsedSet);
        }
        if facts.changes_schema {
            let db: Option<Option<String>> = conn
                .conn()
                .query_first("SELECT DATABASE()")
                .await
                .map_err(|e| GatewayError::from_backend(backend.name(), e))?;
            next.schema = db.flatten();
        }
        let next = Arc::new(next);
        conn.set_applied(Some(Arc::clone(&next)));
        self.state = next;
        Ok(())
    }

    /// `LAST_INSERT_ID()` on a connection other than the one that did the insert (it went back to
    /// the pool): set it there first.
    async fn replay_last_insert_id(
        &mut self,
        conn: &mut BackendConn,
        facts: &QueryFacts,
    ) -> Result<(), SessionError> {
        if facts.needs_previous_connection && self.last_insert_id > 0 {
            let sql = format!("DO LAST_INSERT_ID({})", self.last_insert_id);
            let name = conn.backend.name().to_string();
            conn.conn()
                .query_drop(sql)
                .await
                .map_err(|e| GatewayError::from_backend(&name, e))?;
        }
        Ok(())
    }

    /// `KILL [QUERY] n`, where n is a gateway connection id.
    async fn kill(&mut self, query_only: bool, id: u64) -> Result<(), SessionError> {
        let target = u32::try_from(id)
            .ok()
            .and_then(|i| self.gw.session(i))
            .ok_or(GatewayError::NoSuchThread(id))?;
        if target.user != self.user {
            return Err(GatewayError::NotThreadOwner(id).into());
        }
        target.kill(query_only).await;
        if u64::from(self.id) == id && !query_only {
            return Err(GatewayError::ConnectionKilled.into());
        }
        self.send_ok(0, 0).await?;
        Ok(())
    }

    pub(super) async fn com_field_list(
        &mut self,
        table: &str,
        wildcard: &str,
    ) -> Result<(), SessionError> {
        let facts = QueryFacts::default();
        let (mut conn, _) = self.connection_for(&facts).await?;
        let name = conn.backend.name().to_string();
        let sql = format!(
            "SELECT * FROM {} LIMIT 0",
            crate::replay::quote_ident(table)
        );
        let columns = match conn.conn().query_iter(sql).await {
            Ok(r) => {
                let cols = r.columns();
                drop(r);
                cols
            }
            Err(e) => {
                self.after_statement(conn);
                return Err(GatewayError::from_backend(&name, e).into());
            }
        };
        let pattern = wildcard.trim_end_matches('\0').as_bytes();
        for c in columns.iter().flat_map(|c| c.iter()) {
            if !pattern.is_empty() && !like(pattern, c.name_ref()) {
                continue;
            }
            let (mark, buf) = self.stream.begin();
            crate::protocol::resultset::encode_column(buf, c);
            buf.push(0xFB); // default value: unknown
            self.stream.finish(mark);
        }
        let (mark, buf) = self.stream.begin();
        crate::protocol::reply::encode_eof(buf, 0, self.last_status);
        self.stream.finish(mark);
        self.after_statement(conn);
        self.stream.flush().await?;
        Ok(())
    }
}

/// SQL `LIKE` as COM_FIELD_LIST's column wildcard uses it: `%` any run, `_` one character, `\`
/// escapes; ASCII case-insensitive, as column names are. Linear backtracking on the last `%`,
/// so a pattern of many `%` costs no more than one.
fn like(pattern: &[u8], text: &[u8]) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Any,
        One,
        Lit(u8),
    }
    let mut toks = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        toks.push(match pattern[i] {
            b'%' => Tok::Any,
            b'_' => Tok::One,
            b'\\' if i + 1 < pattern.len() => {
                i += 1;
                Tok::Lit(pattern[i])
            }
            c => Tok::Lit(c),
        });
        i += 1;
    }
    // The width of the UTF-8 character starting at text[at].
    let width = |at: usize| match text[at] {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    };
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                t = (t + width(t)).min(text.len());
            }
            Some(Tok::Lit(c)) if c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    let next = (st + width(st)).min(text.len());
                    star = Some((sp, next));
                    p = sp + 1;
                    t = next;
                }
                None => return false,
            },
        }
    }
    toks[p.min(toks.len())..].iter().all(|t| *t == Tok::Any)
}

/// `SHOW [SESSION] STATUS ...` or a read of `information_schema.SESSION_STATUS`: the listing of
/// the session's status variables, some of which describe the client connection, which the
/// backend connection knows nothing of.
pub(super) fn lists_session_status(facts: &QueryFacts, sql: &str) -> bool {
    let has = |word: &[u8]| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    match facts.kind {
        facts::StatementKind::Show => has(b"status") && !has(b"global"),
        facts::StatementKind::Select => facts.tables.iter().any(|t| {
            let t = t.as_bytes();
            t.len() >= 14 && t[t.len() - 14..].eq_ignore_ascii_case(b"session_status")
        }),
        _ => false,
    }
}

fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Statements `SET STATEMENT ... FOR` can bound: one plain DML statement (not a compound
/// block, a multi-statement query or a LOAD DATA).
fn bounded_by_timeout(facts: &QueryFacts) -> bool {
    use crate::facts::StatementKind as K;
    matches!(
        facts.kind,
        K::Select | K::Insert | K::Update | K::Delete | K::Replace
    ) && !facts.multi_statement
        && !facts.local_infile
}

/// `sql` with every call `name()` (any case, spaces allowed before and inside the parentheses)
/// replaced by `expr`.
fn replace_call(sql: &[u8], name: &[u8], expr: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        if sql.len() - i >= name.len()
            && sql[i..i + name.len()].eq_ignore_ascii_case(name)
            && (i == 0 || !is_ident(sql[i - 1]))
        {
            let mut j = i + name.len();
            while j < sql.len() && sql[j].is_ascii_whitespace() {
                j += 1;
            }
            if sql.get(j) == Some(&b'(') {
                let mut k = j + 1;
                while k < sql.len() && sql[k].is_ascii_whitespace() {
                    k += 1;
                }
                if sql.get(k) == Some(&b')') {
                    out.extend_from_slice(expr.as_bytes());
                    i = k + 1;
                    continue;
                }
            }
        }
        out.push(sql[i]);
        i += 1;
    }
    out
}

/// What `@@socket` reads as through the gateway: no socket (clients reach it over TCP only).
const SOCKET_ANSWER: &str = "CAST(NULL AS CHAR)";

/// Replaces each `@@name` / `@@global.name` (any case) with `expr`.
fn replace_sysvar(sql: &[u8], name: &[u8], expr: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len());
    let mut i = 0;
    while i < sql.len() {
        if sql[i..].starts_with(b"@@") {
            let mut j = i + 2;
            if sql.len() - j >= 7 && sql[j..j + 7].eq_ignore_ascii_case(b"global.") {
                j += 7;
            }
            let end = j + name.len();
            if sql.len() >= end
                && sql[j..end].eq_ignore_ascii_case(name)
                && !sql.get(end).copied().is_some_and(is_ident)
            {
                out.extend_from_slice(expr.as_bytes());
                i = end;
                continue;
            }
        }
        out.push(sql[i]);
        i += 1;
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_list_wildcards_are_like_patterns() {
        for (pattern, name, want) in [
            ("%", "anything", true),
            ("b%", "balance", true),
            ("B%", "balance", true),
            ("b%", "abc", false),
            ("_", "a", true),
            ("_", "ab", false),
            ("_", "é", true),
            ("a_c", "abc", true),
            ("%c", "abc", true),
            ("%x%", "abc", false),
            ("a\\%", "a%", true),
            ("a\\%", "ab", false),
            (
                "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%z",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            assert_eq!(
                like(pattern.as_bytes(), name.as_bytes()),
                want,
                "{pattern} / {name}"
            );
        }
    }

    #[test]
    fn socket_reads_are_answered_by_the_gateway() {
        assert_eq!(
            replace_sysvar(b"SELECT @@max_allowed_packet,@@socket", b"socket", "X"),
            b"SELECT @@max_allowed_packet,X"
        );
        assert_eq!(
            replace_sysvar(b"select @@GLOBAL.Socket, @@socket_x", b"socket", "X"),
            b"select X, @@socket_x"
        );
    }

    #[test]
    fn connection_id_is_replaced() {
        assert_eq!(
            replace_call(b"SELECT CONNECTION_ID()", b"connection_id", "42"),
            b"SELECT 42"
        );
        assert_eq!(
            replace_call(b"select connection_id ( ) + 1", b"connection_id", "7"),
            b"select 7 + 1"
        );
        assert_eq!(
            replace_call(b"SELECT my_connection_id()", b"connection_id", "7"),
            b"SELECT my_connection_id()"
        );
    }
}
