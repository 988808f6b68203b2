//! Session state the gateway replays on borrowed connections: the schema and session variables
//! the client changed (charset, collation, time_zone, sql_mode, isolation, autocommit, ...).
//!
//! After a client's SET succeeds, the gateway reads the resulting values back from the server
//! and stores them as SQL literals, so replay is exact whatever expression the client used.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use mysql_common::collations::{Collation, CollationId};
use mysql_common::constants::ColumnType;

/// The collation the backend pools connect with (utf8mb4_general_ci).
pub const POOL_COLLATION: u8 = 45;

/// What a connection must carry for a session's statements to mean the same on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayState {
    pub schema: Option<String>,
    /// Session variable -> SQL literal.
    pub vars: BTreeMap<String, String>,
}

impl ReplayState {
    /// The state implied by a client's handshake character set.
    pub fn for_client_charset(collation_id: u8) -> Self {
        let mut s = Self::default();
        s.set_collation(u16::from(collation_id));
        s
    }

    /// Sets the connection character set variables from a collation id, when it differs from
    /// the pools'.
    pub fn set_collation(&mut self, collation_id: u16) {
        if collation_id == u16::from(POOL_COLLATION) || collation_id == 0 {
            return;
        }
        let c = Collation::from(CollationId::from(collation_id));
        let (charset, collation) = (c.charset(), c.collation());
        if charset.is_empty() || collation.is_empty() || collation.contains("0900") {
            // Unknown here, or a MySQL 8 collation MariaDB lacks: the server falls back too.
            return;
        }
        for v in [
            "character_set_client",
            "character_set_connection",
            "character_set_results",
        ] {
            self.vars.insert(v.into(), quote(charset));
        }
        self.vars
            .insert("collation_connection".into(), quote(collation));
    }

    /// The statement that turns a connection carrying `applied` into one carrying `self`, or
    /// `None` when nothing differs.
    pub fn diff_from(&self, applied: &ReplayState) -> Option<String> {
        let mut sets = Vec::new();
        for (k, v) in &self.vars {
            if applied.vars.get(k) != Some(v) {
                sets.push(format!("{k} = {v}"));
            }
        }
        for k in applied.vars.keys() {
            if !self.vars.contains_key(k) {
                sets.push(format!("{k} = DEFAULT"));
            }
        }
        let mut sql = String::new();
        if !sets.is_empty() {
            sql.push_str("SET SESSION ");
            sql.push_str(&sets.join(", "));
        }
        if self.schema != applied.schema
            && let Some(db) = &self.schema
        {
            if !sql.is_empty() {
                sql.push_str("; ");
            }
            let _ = write!(sql, "USE {}", quote_ident(db));
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// Reads back `names` from the connection that just ran a SET and records them.
    pub async fn read_back(
        &mut self,
        conn: &mut Conn,
        names: &[String],
    ) -> Result<(), mysql_async::Error> {
        if names.is_empty() {
            return Ok(());
        }
        let select = names
            .iter()
            .map(|n| format!("@@SESSION.{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let row: Option<Row> = conn.query_first(format!("SELECT {select}")).await?;
        let Some(row) = row else { return Ok(()) };
        let columns = row.columns();
        for (i, name) in names.iter().enumerate() {
            let ty = columns
                .get(i)
                .map(mysql_common::packets::Column::column_type);
            let literal = match row.as_ref(i) {
                None | Some(Value::NULL) => "NULL".to_string(),
                Some(Value::Bytes(b)) => {
                    let s = String::from_utf8_lossy(b);
                    if ty.is_some_and(is_numeric) {
                        s.into_owned()
                    } else {
                        quote(&s)
                    }
                }
                Some(other) => other.as_sql(false),
            };
            self.vars.insert(name.clone(), literal);
        }
        Ok(())
    }
}

fn is_numeric(t: ColumnType) -> bool {
    use ColumnType as T;
    matches!(
        t,
        T::MYSQL_TYPE_TINY
            | T::MYSQL_TYPE_SHORT
            | T::MYSQL_TYPE_LONG
            | T::MYSQL_TYPE_INT24
            | T::MYSQL_TYPE_LONGLONG
            | T::MYSQL_TYPE_DECIMAL
            | T::MYSQL_TYPE_NEWDECIMAL
            | T::MYSQL_TYPE_FLOAT
            | T::MYSQL_TYPE_DOUBLE
    )
}

/// A single-quoted SQL string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A backtick-quoted identifier.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Names of the variables a `SET NAMES` / `SET CHARACTER SET` changes.
pub const NAMES_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_sets_changes_and_defaults_what_is_gone() {
        let mut a = ReplayState::default();
        a.vars.insert("sql_mode".into(), "'ANSI'".into());
        a.vars.insert("time_zone".into(), "'+00:00'".into());
        let mut b = ReplayState::default();
        b.vars.insert("sql_mode".into(), "'ANSI'".into());
        b.schema = Some("app".into());
        assert_eq!(
            b.diff_from(&a).as_deref(),
            Some("SET SESSION time_zone = DEFAULT; USE `app`")
        );
        assert_eq!(a.diff_from(&a), None);
    }

    #[test]
    fn client_charset_other_than_the_pools_is_replayed() {
        assert!(ReplayState::for_client_charset(45).vars.is_empty());
        let s = ReplayState::for_client_charset(8);
        assert_eq!(
            s.vars.get("character_set_client").map(String::as_str),
            Some("'latin1'")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b\\"), "'a''b\\\\'");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
