//! Applying a redaction plan to rows, natively: the policy decided once per result shape what to
//! do with each column; here every row is changed accordingly, without calling the policy. Cells
//! of `Custom` columns go to the policy's `transform` a batch of rows at a time, as one flat
//! buffer per column (one call per column per batch, not per cell).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::Value;
use mysql_common::constants::ColumnType;
use mysql_common::packets::Column;
use sha2::{Digest, Sha256};

use crate::facts::QueryFacts;
use crate::phase::{ColumnAction, ColumnInfo, Policy, SessionInfo};

/// What redaction needs for a whole statement, owned so it outlives the statement's awaits: the
/// policy set the statement started with, and the session as the policy sees it.
pub struct RedactionScope {
    pub policy: std::sync::Arc<Box<dyn Policy>>,
    pub user: String,
    pub peer: String,
    pub database: Option<String>,
    pub connection_id: u32,
    pub in_transaction: bool,
    pub autocommit: bool,
    pub tls: bool,
}

impl RedactionScope {
    pub fn session(&self) -> SessionInfo<'_> {
        SessionInfo {
            connection_id: self.connection_id,
            user: &self.user,
            client_addr: &self.peer,
            database: self.database.as_deref(),
            in_transaction: self.in_transaction,
            autocommit: self.autocommit,
            tls: self.tls,
            required_position: None,
        }
    }

    pub fn redaction<'a>(
        &'a self,
        facts: &'a QueryFacts,
        session: &'a SessionInfo<'a>,
        timer: Option<&'a RedactTimer>,
    ) -> Redaction<'a> {
        Redaction {
            policy: &**self.policy,
            facts,
            session,
            timer,
        }
    }
}

/// How long a traced statement's redaction plans took (the `result.redact` phase): from the
/// first plan asked, for as long as planning took in all.
#[derive(Default)]
pub struct RedactTimer {
    first: std::sync::OnceLock<Instant>,
    nanos: AtomicU64,
}

impl RedactTimer {
    fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let _ = self.first.set(start);
        let out = f();
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    /// When planning began and when it would have ended had it run in one go.
    pub fn span(&self) -> Option<(Instant, Instant)> {
        let first = *self.first.get()?;
        Some((
            first,
            first + Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        ))
    }
}

/// What the relay needs to redact a statement's results.
#[derive(Clone, Copy)]
pub struct Redaction<'a> {
    pub policy: &'a dyn Policy,
    pub facts: &'a QueryFacts,
    pub session: &'a SessionInfo<'a>,
    /// Set when the statement is traced.
    pub timer: Option<&'a RedactTimer>,
}

impl Redaction<'_> {
    /// The plan for a result set; `None` when every column is kept.
    pub fn plan(&self, columns: &[Column]) -> Option<std::sync::Arc<[ColumnAction]>> {
        match self.timer {
            Some(t) => t.time(|| self.plan_now(columns)),
            None => self.plan_now(columns),
        }
    }

    fn plan_now(&self, columns: &[Column]) -> Option<std::sync::Arc<[ColumnAction]>> {
        // Borrowed names: planning is cached by the policy, so this runs per result set and must
        // not allocate per column.
        let infos: Vec<ColumnInfo<'_>> = columns
            .iter()
            .map(|c| ColumnInfo {
                schema: text(c.schema_ref()),
                table: text(c.table_ref()),
                org_table: text(c.org_table_ref()),
                name: text(c.name_ref()),
                org_name: text(c.org_name_ref()),
            })
            .collect();
        let plan = self
            .policy
            .plan_redaction(self.facts, self.session, &infos)?;
        plan.iter()
            .any(|a| *a != ColumnAction::Keep)
            .then_some(plan)
    }
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

/// Columns whose values are text the gateway can rewrite in place; others become NULL when
/// masked, since a masked number would not parse as one.
pub fn is_text(c: &Column) -> bool {
    use ColumnType as T;
    matches!(
        c.column_type(),
        T::MYSQL_TYPE_VARCHAR
            | T::MYSQL_TYPE_VAR_STRING
            | T::MYSQL_TYPE_STRING
            | T::MYSQL_TYPE_TINY_BLOB
            | T::MYSQL_TYPE_MEDIUM_BLOB
            | T::MYSQL_TYPE_LONG_BLOB
            | T::MYSQL_TYPE_BLOB
            | T::MYSQL_TYPE_JSON
            | T::MYSQL_TYPE_ENUM
            | T::MYSQL_TYPE_SET
    )
}

/// Whether a column may turn NULL under `action` (its NOT_NULL flag must then be cleared).
pub fn may_become_null(action: ColumnAction, c: &Column) -> bool {
    match action {
        ColumnAction::Keep => false,
        ColumnAction::Null | ColumnAction::Custom => true,
        ColumnAction::Mask | ColumnAction::KeepLast(_) | ColumnAction::Hash => !is_text(c),
    }
}

fn mask(b: &[u8], keep_last: usize) -> Vec<u8> {
    match std::str::from_utf8(b) {
        Ok(s) => {
            let n = s.chars().count();
            s.chars()
                .enumerate()
                .map(|(i, ch)| if i + keep_last >= n { ch } else { '*' })
                .collect::<String>()
                .into_bytes()
        }
        Err(_) => b
            .iter()
            .enumerate()
            .map(|(i, &x)| if i + keep_last >= b.len() { x } else { b'*' })
            .collect(),
    }
}

fn hash(b: &[u8]) -> Vec<u8> {
    let d = Sha256::digest(b);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    d.iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]])
        .collect()
}

/// Applies the native actions of `plan` to one row (`Custom` columns are left to
/// [`transform_batch`]).
pub fn apply(plan: &[ColumnAction], columns: &[Column], values: &mut [Option<Value>]) {
    for (i, (action, value)) in plan.iter().zip(values.iter_mut()).enumerate() {
        let Some(column) = columns.get(i) else { break };
        let bytes = match value {
            Some(Value::Bytes(b)) if is_text(column) => b,
            Some(Value::NULL) | None => continue,
            Some(_) => {
                if *action != ColumnAction::Keep && *action != ColumnAction::Custom {
                    *value = None;
                }
                continue;
            }
        };
        match *action {
            ColumnAction::Keep | ColumnAction::Custom => {}
            ColumnAction::Null => *value = None,
            ColumnAction::Mask => *bytes = mask(bytes, 0),
            ColumnAction::KeepLast(n) => *bytes = mask(bytes, n as usize),
            ColumnAction::Hash => *bytes = hash(bytes),
        }
    }
}

/// Rows held back at most before their `Custom` cells are transformed and the rows sent.
pub const BATCH_ROWS: usize = 64;
/// Bytes of `Custom` cells held back at most (a few large cells make a batch too).
pub const BATCH_BYTES: usize = 256 << 10;

/// Whether any column of `plan` needs the policy's `transform`.
pub fn has_custom(plan: &[ColumnAction]) -> bool {
    plan.contains(&ColumnAction::Custom)
}

/// The bytes of a row's `Custom` text cells (what a batch holds back).
pub fn custom_bytes(plan: &[ColumnAction], values: &[Option<Value>]) -> usize {
    plan.iter()
        .zip(values)
        .filter(|(a, _)| **a == ColumnAction::Custom)
        .map(|(_, v)| match v {
            Some(Value::Bytes(b)) => b.len(),
            _ => 0,
        })
        .sum()
}

/// Transforms the `Custom` text cells of a batch of rows in place: per column, the non-NULL
/// cells back to back with their lengths, in one call. A failed call, or an answer of the wrong
/// shape, withholds those cells (NULL): fail closed.
pub fn transform_batch(
    plan: &[ColumnAction],
    columns: &[Column],
    rows: &mut [Vec<Option<Value>>],
    policy: &dyn Policy,
) {
    for (i, _) in plan
        .iter()
        .enumerate()
        .filter(|(_, a)| **a == ColumnAction::Custom)
    {
        if !columns.get(i).is_some_and(is_text) {
            continue;
        }
        let mut cells = Vec::new();
        let mut lengths = Vec::new();
        let mut members = Vec::new();
        for (r, row) in rows.iter_mut().enumerate() {
            if let Some(Some(Value::Bytes(b))) = row.get_mut(i) {
                cells.extend_from_slice(b);
                lengths.push(i32::try_from(b.len()).unwrap_or(i32::MAX));
                members.push(r);
            }
        }
        if members.is_empty() {
            continue;
        }
        let column = u32::try_from(i).unwrap_or(u32::MAX);
        let out = policy
            .transform(column, cells, lengths)
            .filter(|(_, lens)| lens.len() == members.len());
        let mut offset = 0usize;
        for (k, &r) in members.iter().enumerate() {
            let cell = out.as_ref().and_then(|(bytes, lens)| {
                let len = usize::try_from(lens[k]).ok()?;
                let piece = bytes.get(offset..offset + len)?;
                offset += len;
                Some(piece.to_vec())
            });
            rows[r][i] = cell.map(Value::Bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy whose transform upper-cases cells, counting its calls; or answers one cell short.
    struct Upper {
        calls: std::sync::atomic::AtomicUsize,
        short: bool,
    }

    impl Policy for Upper {
        fn resolve_credentials(
            &self,
            _: &crate::phase::ClientIdentity,
        ) -> Option<crate::phase::Grant> {
            None
        }

        fn route(
            &self,
            _: &QueryFacts,
            _: &SessionInfo<'_>,
            _: &[crate::phase::BackendStatus],
        ) -> crate::phase::RouteDecision {
            crate::phase::RouteDecision::Primary
        }

        fn transform(
            &self,
            _column: u32,
            cells: Vec<u8>,
            mut lengths: Vec<i32>,
        ) -> Option<(Vec<u8>, Vec<i32>)> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.short {
                lengths.pop();
            }
            Some((cells.to_ascii_uppercase(), lengths))
        }
    }

    fn rows() -> Vec<Vec<Option<Value>>> {
        (0..5)
            .map(|i| {
                let note = match i {
                    1 => Some(Value::NULL),
                    3 => None,
                    _ => Some(Value::Bytes(format!("cell {i}").into_bytes())),
                };
                vec![Some(Value::Int(i)), note]
            })
            .collect()
    }

    #[test]
    fn custom_cells_are_transformed_in_one_call_per_column() {
        let columns = [
            Column::new(ColumnType::MYSQL_TYPE_LONGLONG),
            Column::new(ColumnType::MYSQL_TYPE_VAR_STRING),
        ];
        let plan = [ColumnAction::Keep, ColumnAction::Custom];
        let policy = Upper {
            calls: 0.into(),
            short: false,
        };
        let mut batch = rows();
        transform_batch(&plan, &columns, &mut batch, &policy);
        assert_eq!(policy.calls.into_inner(), 1);
        let notes: Vec<_> = batch.iter().map(|r| r[1].clone()).collect();
        assert_eq!(
            notes,
            vec![
                Some(Value::Bytes(b"CELL 0".to_vec())),
                Some(Value::NULL),
                Some(Value::Bytes(b"CELL 2".to_vec())),
                None,
                Some(Value::Bytes(b"CELL 4".to_vec())),
            ]
        );
        assert_eq!(batch[4][0], Some(Value::Int(4)), "other columns untouched");

        // An answer of the wrong shape withholds the column's cells.
        let policy = Upper {
            calls: 0.into(),
            short: true,
        };
        let mut batch = rows();
        transform_batch(&plan, &columns, &mut batch, &policy);
        assert!(
            batch
                .iter()
                .all(|r| matches!(r[1], None | Some(Value::NULL)))
        );
    }

    #[test]
    fn masks_keep_last_and_hash() {
        assert_eq!(mask("héllo".as_bytes(), 0), "*****".as_bytes());
        assert_eq!(mask(b"4111111111111111", 4), b"************1111");
        assert_eq!(hash(b"x").len(), 64);
    }
}
