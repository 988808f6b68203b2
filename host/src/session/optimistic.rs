//! Optimistic transactions (opt-in, `routing.optimistic-transactions`), after MaxScale's
//! `optimistic_trx`: an implicit transaction (autocommit off) that begins with a read starts on
//! a replica. Its statements are logged with a digest of their results. At the first statement
//! that is not a plain read, the replica's transaction is rolled back and the log is re-run on the
//! primary; only if every result matches does the transaction go on there, else it fails with ERR
//! 9003 (SQLSTATE 40001: retry it). A transaction that only reads ends on the replica.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use mysql_async::Value;
use mysql_async::prelude::Queryable;

use super::{Held, Hold, Session, SessionError};
use crate::error::GatewayError;
use crate::facts::{QueryFacts, StatementKind};

/// Statements an optimistic transaction logs before it moves to the primary anyway (a long read
/// transaction is cheaper to keep where it can write than to replay).
const MAX_LOGGED: usize = 256;

/// What a result looked like: column count, then each row's values, hashed.
#[derive(Default)]
pub struct ResultDigest(std::collections::hash_map::DefaultHasher);

impl ResultDigest {
    pub fn columns(&mut self, n: usize) {
        n.hash(&mut self.0);
    }

    pub fn row(&mut self, values: &[Option<Value>]) {
        for v in values {
            match v {
                None | Some(Value::NULL) => 0u8.hash(&mut self.0),
                Some(Value::Bytes(b)) => {
                    1u8.hash(&mut self.0);
                    b.hash(&mut self.0);
                }
                // The text protocol gives bytes; anything else is hashed by its SQL form.
                Some(other) => {
                    2u8.hash(&mut self.0);
                    other.as_sql(false).hash(&mut self.0);
                }
            }
        }
    }

    pub fn ok(&mut self, affected_rows: u64) {
        affected_rows.hash(&mut self.0);
    }

    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// The statements an optimistic transaction ran on its replica, with their result digests.
#[derive(Default)]
pub struct OptimisticLog {
    statements: Vec<(Bytes, u64)>,
}

impl Session {
    /// Optimistic transactions are on and this statement would open a writable implicit
    /// transaction with a read: it may start on a replica.
    pub(super) fn starts_optimistic(&self, facts: &QueryFacts) -> bool {
        self.gw.config().routing.optimistic_transactions
            && self.optimistic.is_none()
            && !self.in_txn
            && facts.starts_transaction.is_none()
            && facts.read_only
            && self.pins.is_empty()
            && !self.autocommit()
            && !self.transactions_read_only()
    }

    /// A statement that may run in the optimistic transaction as it stands (on its replica).
    pub(super) fn stays_optimistic(facts: &QueryFacts) -> bool {
        facts.read_only
            || (facts.kind == StatementKind::Transaction && facts.starts_transaction.is_none())
    }

    /// After a statement of an optimistic transaction (or one that may start it): log it, or
    /// forget the log once the transaction ended.
    pub(super) fn log_optimistic(&mut self, sql: &[u8], digest: u64, started_here: bool) {
        if !self.in_txn {
            self.optimistic = None;
            return;
        }
        let on_replica = self
            .held
            .as_ref()
            .is_some_and(|h| !Arc::ptr_eq(&h.conn.backend, self.group.primary()));
        if started_here && on_replica {
            self.optimistic = Some(OptimisticLog::default());
        }
        if let Some(log) = &mut self.optimistic {
            log.statements.push((Bytes::copy_from_slice(sql), digest));
        }
    }

    /// The log is full: the transaction should move to the primary now.
    pub(super) fn optimistic_log_full(&self) -> bool {
        self.optimistic
            .as_ref()
            .is_some_and(|l| l.statements.len() >= MAX_LOGGED)
    }

    /// The first write of an optimistic transaction: roll back on the replica, re-run the log on
    /// the primary, and keep the primary's connection for the rest of the transaction if every
    /// result matched.
    pub(super) async fn move_to_primary(&mut self) -> Result<(), SessionError> {
        let Some(log) = self.optimistic.take() else {
            return Ok(());
        };
        let replica = match self.held.take() {
            Some(mut h) => {
                let name = h.conn.backend.name().to_string();
                if h.conn.conn().query_drop("ROLLBACK").await.is_err() {
                    h.conn.discard();
                }
                name
            }
            None => String::new(),
        };
        // The replica's transaction is gone whatever happens next.
        self.in_txn = false;
        self.last_status &= !crate::protocol::constants::status::IN_TRANS;
        self.publish_view();
        let primary = Arc::clone(self.group.primary());
        let mut conn = self.borrow(&primary).await?;
        for (sql, expected) in &log.statements {
            let seen = replay_digest(&mut conn, sql).await;
            if seen.ok() != Some(*expected) {
                if conn.conn().query_drop("ROLLBACK").await.is_err() {
                    conn.discard();
                }
                self.gw
                    .optimistic_conflicts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(id = self.id, replica = %replica, "optimistic transaction conflicted on the primary");
                return Err(GatewayError::OptimisticConflict { replica }.into());
            }
        }
        self.gw
            .optimistic_moves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.in_txn = true;
        self.held = Some(Held {
            conn,
            why: Hold::Transaction,
        });
        self.publish_view();
        Ok(())
    }
}

/// Runs `sql` on `conn` and digests its results the way the relay did for the client.
async fn replay_digest(
    conn: &mut crate::pool::BackendConn,
    sql: &Bytes,
) -> Result<u64, mysql_async::Error> {
    let mut digest = ResultDigest::default();
    let mut result = conn.conn().query_iter(sql.as_ref()).await?;
    loop {
        let Some(columns) = result.columns() else {
            result.next().await?;
            break;
        };
        if columns.is_empty() {
            digest.ok(result.affected_rows());
            if result.is_empty() {
                break;
            }
            result.next().await?;
            continue;
        }
        digest.columns(columns.len());
        while let Some(row) = result.next().await? {
            digest.row(&row.unwrap_raw());
        }
        if result.is_empty() {
            break;
        }
    }
    Ok(digest.finish())
}
