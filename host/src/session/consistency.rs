//! Read-your-writes: after a session's write commits, the gateway learns its GTID
//! (`@@last_gtid`, one round trip as the write's connection leaves the session, so nothing the
//! client may ask of that connection next is disturbed); a read a router sends to a replica
//! then runs there only if that replica has applied it — known from the monitor or an earlier
//! wait, or by waiting at most `routing.consistency-wait-ms` (`MASTER_GTID_WAIT`, which waits on
//! `gtid_slave_pos`: a replica's own local writes do not count) — and otherwise on the primary.
//! `global` asks the primary's `gtid_binlog_pos` at the read's start instead; `eventual` checks
//! nothing.

use std::sync::Arc;

use mysql_async::prelude::Queryable;

use super::{Session, SessionError};
use crate::config::{Consistency, Role};
use crate::facts::{QueryFacts, StatementKind};
use crate::gtid::GtidPosition;
use crate::pool::BackendConn;

impl Session {
    /// After a statement that succeeded on `conn`: remember that the session wrote. The
    /// position is learned when the connection leaves the session ([`Self::learn_written`]):
    /// a statement run on it now would clobber what the client may ask next (`ROW_COUNT()`,
    /// `SHOW WARNINGS`).
    pub(super) fn note_write(&mut self, conn: &BackendConn, facts: &QueryFacts) {
        if self.gw.config().routing.consistency != Consistency::Session
            || conn.backend.role() != Role::Primary
        {
            return;
        }
        // BEGIN and COMMIT write nothing themselves; a COMMIT is when the writes before it
        // become visible, so it restarts the read-after-write window.
        let wrote = !facts.read_only
            && !matches!(
                facts.kind,
                StatementKind::Set
                    | StatementKind::Use
                    | StatementKind::Show
                    | StatementKind::Transaction
            );
        self.unsynced_write |= wrote;
        if self.unsynced_write && (wrote || facts.kind == StatementKind::Transaction) {
            self.last_write = Some(std::time::Instant::now());
        }
    }

    /// A read right after the session's write, whose connection to the primary is still parked
    /// with the session: it runs there (it sees the write; no replica could have it yet).
    pub(super) fn reads_own_write(&self, facts: &QueryFacts, parked: &BackendConn) -> bool {
        let window =
            std::time::Duration::from_millis(self.gw.config().routing.read_after_write_primary_ms);
        // (Not a declared read-only transaction: that one asks to be offloaded.)
        facts.read_only
            && facts.starts_transaction.is_none()
            && self.unsynced_write
            && parked.backend.role() == Role::Primary
            && self.last_write.is_some_and(|t| t.elapsed() < window)
    }

    /// `conn` is leaving the session: if it ran a write whose position is not known yet and no
    /// transaction is open, read the position (`@@last_gtid`).
    pub(super) async fn learn_written(&mut self, conn: &mut BackendConn) {
        if !self.unsynced_write || self.in_txn || conn.backend.role() != Role::Primary {
            return;
        }
        let gtid: Result<Option<String>, _> = conn.conn().query_first("SELECT @@last_gtid").await;
        if let Some(p) = gtid.ok().flatten().as_deref().and_then(GtidPosition::parse) {
            self.unsynced_write = false;
            self.written
                .get_or_insert_with(GtidPosition::default)
                .merge(&p);
        }
    }

    /// The position this session's reads must see, as far as it is known before routing: its
    /// last write's under `session`. (`global` asks the primary after routing; `eventual` needs
    /// none.)
    pub(super) fn required_position(&self) -> Option<&GtidPosition> {
        if self.gw.config().routing.consistency == Consistency::Session {
            self.written.as_ref()
        } else {
            None
        }
    }

    /// The connection a read routed to a replica runs on: that one if the replica has applied
    /// what this session must see, else one of the primary's.
    pub(super) async fn consistent(
        &mut self,
        conn: BackendConn,
        reused: bool,
    ) -> Result<(BackendConn, bool), SessionError> {
        if conn.backend.role() == Role::Primary {
            return Ok((conn, reused));
        }
        let need = match self.gw.config().routing.consistency {
            Consistency::Eventual => return Ok((conn, reused)),
            Consistency::Session => {
                if self.unsynced_write && !self.in_txn {
                    // The write's connection left without telling its position: the primary's
                    // current one covers it.
                    match self.primary_position().await {
                        Some(p) => {
                            self.unsynced_write = false;
                            self.written
                                .get_or_insert_with(GtidPosition::default)
                                .merge(&p);
                        }
                        None => return self.on_primary(conn).await,
                    }
                }
                match &self.written {
                    Some(p) => p.clone(),
                    None => return Ok((conn, reused)),
                }
            }
            Consistency::Global => match self.primary_position().await {
                Some(p) => p,
                // The primary's position is unknown: the primary itself answers.
                None => return self.on_primary(conn).await,
            },
        };
        if need.is_empty() || conn.backend.has_applied(&need) {
            return Ok((conn, reused));
        }
        let mut conn = conn;
        if self.wait_for(&mut conn, &need).await {
            conn.backend.note_applied(&need);
            return Ok((conn, reused));
        }
        self.on_primary(conn).await
    }

    /// Gives `conn` back (it stays clean: only a wait ran on it) and borrows from the primary.
    async fn on_primary(&mut self, conn: BackendConn) -> Result<(BackendConn, bool), SessionError> {
        drop(conn);
        let primary = Arc::clone(self.group.primary());
        Ok((self.borrow(&primary).await?, false))
    }

    /// `MASTER_GTID_WAIT` on the replica, bounded by `consistency-wait-ms`: true when reached.
    async fn wait_for(&self, conn: &mut BackendConn, need: &GtidPosition) -> bool {
        let secs = self.gw.config().routing.consistency_wait_ms as f64 / 1000.0;
        // The position prints as digits, dashes and commas only.
        let sql = format!("SELECT MASTER_GTID_WAIT('{need}', {secs:.3})");
        matches!(conn.conn().query_first::<i64, _>(sql).await, Ok(Some(0)))
    }

    /// The primary's `gtid_binlog_pos` now (`global` consistency).
    async fn primary_position(&mut self) -> Option<GtidPosition> {
        let primary = Arc::clone(self.group.primary());
        let mut c = self.borrow(&primary).await.ok()?;
        let pos: Option<String> = c
            .conn()
            .query_first("SELECT @@gtid_binlog_pos")
            .await
            .ok()
            .flatten();
        pos.as_deref().and_then(GtidPosition::parse)
    }
}
