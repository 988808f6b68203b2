//! Applying a redaction plan to rows, natively: the policy decided once per result shape what to
//! do with each column; here every row is changed accordingly, without calling the policy (except
//! for `Custom` columns, whose cells it transforms).

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
            tls: self.tls,
        }
    }

    pub fn redaction<'a>(
        &'a self,
        facts: &'a QueryFacts,
        session: &'a SessionInfo<'a>,
    ) -> Redaction<'a> {
        Redaction {
            policy: &**self.policy,
            facts,
            session,
        }
    }
}

/// What the relay needs to redact a statement's results.
#[derive(Clone, Copy)]
pub struct Redaction<'a> {
    pub policy: &'a dyn Policy,
    pub facts: &'a QueryFacts,
    pub session: &'a SessionInfo<'a>,
}

impl Redaction<'_> {
    /// The plan for a result set; `None` when every column is kept.
    pub fn plan(&self, columns: &[Column]) -> Option<std::sync::Arc<[ColumnAction]>> {
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

/// Applies `plan` to one row.
pub fn apply(
    plan: &[ColumnAction],
    columns: &[Column],
    values: &mut [Option<Value>],
    policy: &dyn Policy,
) {
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
            ColumnAction::Keep => {}
            ColumnAction::Null => *value = None,
            ColumnAction::Mask => *bytes = mask(bytes, 0),
            ColumnAction::KeepLast(n) => *bytes = mask(bytes, n as usize),
            ColumnAction::Hash => *bytes = hash(bytes),
            ColumnAction::Custom => {
                let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
                match policy.transform(i as u32, std::mem::take(bytes), vec![len]) {
                    Some((cells, lengths)) if lengths.first().is_some_and(|l| *l >= 0) => {
                        *bytes = cells;
                    }
                    _ => *value = None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_last_and_hash() {
        assert_eq!(mask("héllo".as_bytes(), 0), "*****".as_bytes());
        assert_eq!(mask(b"4111111111111111", 4), b"************1111");
        assert_eq!(hash(b"x").len(), 64);
    }
}
