//! The `guard` policy: query safety rules, each with a clear message and MySQL error code.
//!
//! Settings (JSON, every key optional):
//! - `deny-ddl` (true): CREATE/ALTER/DROP/TRUNCATE/RENAME... -> 1227
//! - `deny-load-data` (true): LOAD DATA -> 1227
//! - `deny-unbounded-writes` (true): UPDATE/DELETE without WHERE -> 1175
//! - `max-statement-bytes` (0 = no limit): longer statements -> 1105
//! - `deny-multi-statements` (false): more than one statement per query -> 1105
//! - `deny-digests` ([]): statements whose digest is listed -> 1105
//! - `deny-tables` ([]): `table`, `schema.table`, with `*` wildcards -> 1142
//! - `read-only-users` ([]): users that may only read -> 1290
//! - `rewrites` ([{digest, sql}]): run `sql` instead of statements with that digest
//! - `mode` ("enforce"): what every rule does with a statement it would deny: `enforce` refuses
//!   it; `report` lets it run, and the gateway logs (policy, digest, the denial) and counts it,
//!   so a rule can be rolled out safely
//! - `modes` ({}): a mode per rule, by its key above: `{"deny-unbounded-writes": "report"}`
//!
//! Rules are checked in the order above; the first *enforced* denial decides, else the first
//! reported one is reported. Every rule reads only what a statement's digest determines, plus
//! its user (`read-only-users`) and length (`max-statement-bytes`), so each verdict but a
//! rewrite tells the host how far it carries (`Settings::reuse`) and the host answers later
//! statements of the same shape without calling the guard.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use sluice_policy_sdk::wildcard_match;

sluice_policy_sdk::runtime!();

// Generated bindings contain `unsafe` (the canonical ABI glue); the policy's own code does not.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "guard" });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::exports::sluice::policy::safety::{
    Checked, Denial, Guest as Safety, QueryFacts, Reach, SessionInfo, Verdict,
};
pub use bindings::sluice::policy::types::StatementKind;
use bindings::sluice::policy::{session, statement};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub deny_ddl: bool,
    pub deny_load_data: bool,
    pub deny_unbounded_writes: bool,
    pub max_statement_bytes: usize,
    pub deny_multi_statements: bool,
    pub deny_digests: Vec<String>,
    pub deny_tables: Vec<String>,
    pub read_only_users: Vec<String>,
    pub rewrites: Vec<Rewrite>,
    pub mode: Mode,
    pub modes: BTreeMap<String, Mode>,
}

/// What a rule does with a statement it would deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

/// The rules, by their settings keys.
pub const RULES: [&str; 8] = [
    "read-only-users",
    "deny-ddl",
    "deny-load-data",
    "deny-unbounded-writes",
    "max-statement-bytes",
    "deny-multi-statements",
    "deny-tables",
    "deny-digests",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rewrite {
    pub digest: String,
    pub sql: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            deny_ddl: true,
            deny_load_data: true,
            deny_unbounded_writes: true,
            max_statement_bytes: 0,
            deny_multi_statements: false,
            deny_digests: Vec::new(),
            deny_tables: Vec::new(),
            read_only_users: Vec::new(),
            rewrites: Vec::new(),
            mode: Mode::Enforce,
            modes: BTreeMap::new(),
        }
    }
}

/// What the rules decide, independent of the bindings (unit-tested natively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(u16, String),
    /// Allowed; a rule in report mode would have denied it so.
    Report(u16, String),
    Rewrite(String),
}

impl Decision {
    /// The statement's decision from the flag rules' and the text rules' (in that order): an
    /// enforced denial first, then a rewrite, then the first report.
    pub fn then(self, text: Decision) -> Decision {
        match (self, text) {
            (d @ Decision::Deny(..), _) => d,
            (_, d @ (Decision::Deny(..) | Decision::Rewrite(_))) => d,
            (d @ Decision::Report(..), _) => d,
            (_, text) => text,
        }
    }
}

/// Rule outcomes as they are checked: the first enforced denial ends the check; reported ones
/// are remembered (the first).
struct Check<'a> {
    settings: &'a Settings,
    reported: Option<(u16, String)>,
}

impl Check<'_> {
    /// `rule` would deny: `Some` to stop at an enforced denial.
    fn deny(&mut self, rule: &str, code: u16, message: String) -> Option<Decision> {
        if self.settings.mode_of(rule) == Mode::Enforce {
            return Some(Decision::Deny(code, message));
        }
        self.reported.get_or_insert((code, message));
        None
    }

    fn finish(self) -> Decision {
        self.reported.map_or(Decision::Allow, |(code, message)| {
            Decision::Report(code, message)
        })
    }
}

/// The facts the rules read that come by value.
pub struct Statement {
    pub kind: StatementKind,
    pub read_only: bool,
    pub has_where: bool,
    pub multi_statement: bool,
    /// The statement's length in bytes.
    pub length: usize,
}

/// How far a decision carries to other statements of the same digest (the WIT's `reach`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// The decision read the user: only statements from the same user.
    pub per_user: bool,
    /// Only statements of at most this many bytes.
    pub max_length: u32,
}

/// The text parts the rules read, fetched only when a configured rule needs them (in the
/// component each is a call into the host that copies the text).
pub trait StatementText {
    fn digest(&self) -> Cow<'_, str>;
    /// The table at `index`, `None` past the last.
    fn table(&self, index: usize) -> Option<Cow<'_, str>>;
    fn user(&self) -> Cow<'_, str>;
}

impl Settings {
    /// Settings that name a rule that does not exist are refused.
    pub fn validate(&self) -> Result<(), String> {
        match self.modes.keys().find(|k| !RULES.contains(&k.as_str())) {
            Some(k) => Err(format!(
                "modes: no rule is called '{k}' (rules: {})",
                RULES.join(", ")
            )),
            None => Ok(()),
        }
    }

    pub fn mode_of(&self, rule: &str) -> Mode {
        self.modes.get(rule).copied().unwrap_or(self.mode)
    }

    pub fn decide(&self, s: &Statement, text: &impl StatementText) -> Decision {
        let flags = self.decide_flags(s, text);
        if matches!(flags, Decision::Deny(..)) {
            return flags;
        }
        flags.then(self.decide_text(text))
    }

    /// The rules on the statement's kind, size and user.
    pub fn decide_flags(&self, s: &Statement, text: &impl StatementText) -> Decision {
        let mut check = Check {
            settings: self,
            reported: None,
        };
        if is_write(s) && !self.read_only_users.is_empty() {
            let user = text.user();
            if self.read_only_users.iter().any(|u| *u == *user)
                && let Some(d) = check.deny(
                    "read-only-users",
                    1290,
                    format!("user '{user}' is read-only through this gateway"),
                )
            {
                return d;
            }
        }
        if self.deny_ddl
            && s.kind == StatementKind::Ddl
            && let Some(d) = check.deny(
                "deny-ddl",
                1227,
                String::from("DDL is not allowed through this gateway (guard: deny-ddl)"),
            )
        {
            return d;
        }
        if self.deny_load_data
            && s.kind == StatementKind::LoadData
            && let Some(d) = check.deny(
                "deny-load-data",
                1227,
                String::from(
                    "LOAD DATA is not allowed through this gateway (guard: deny-load-data)",
                ),
            )
        {
            return d;
        }
        if self.deny_unbounded_writes
            && matches!(s.kind, StatementKind::Update | StatementKind::Delete)
            && !s.has_where
            && let Some(d) = check.deny(
                "deny-unbounded-writes",
                1175,
                String::from(
                    "UPDATE or DELETE without a WHERE clause is not allowed (guard: deny-unbounded-writes)",
                ),
            )
        {
            return d;
        }
        if self.max_statement_bytes > 0
            && s.length > self.max_statement_bytes
            && let Some(d) = check.deny(
                "max-statement-bytes",
                1105,
                format!(
                    "statement of {} bytes exceeds the limit of {} (guard: max-statement-bytes)",
                    s.length, self.max_statement_bytes
                ),
            )
        {
            return d;
        }
        if self.deny_multi_statements
            && s.multi_statement
            && let Some(d) = check.deny(
                "deny-multi-statements",
                1105,
                String::from("multi-statements are not allowed (guard: deny-multi-statements)"),
            )
        {
            return d;
        }
        check.finish()
    }

    /// How far `decision`, made for `s`, carries: to every statement with the same digest, from
    /// the same user when a rule read it, up to the length limit when one is set. A rewrite
    /// does not carry (the rewritten text is the policy's to produce each time), nor does a
    /// decision on a statement over the length limit.
    pub fn reuse(&self, s: &Statement, decision: &Decision) -> Option<Reuse> {
        if matches!(decision, Decision::Rewrite(_)) {
            return None;
        }
        let max_length = if self.max_statement_bytes == 0 {
            u32::MAX
        } else if s.length > self.max_statement_bytes {
            return None;
        } else {
            u32::try_from(self.max_statement_bytes).unwrap_or(u32::MAX)
        };
        Some(Reuse {
            per_user: !self.read_only_users.is_empty() && is_write(s),
            max_length,
        })
    }

    /// The rules on the statement's tables and digest, and the rewrites (the same outcome for
    /// every statement of one shape: the component caches it by digest hash).
    pub fn decide_text(&self, text: &impl StatementText) -> Decision {
        let mut check = Check {
            settings: self,
            reported: None,
        };
        if !self.deny_tables.is_empty() {
            let tables = (0..).map_while(|i| text.table(i));
            for t in tables {
                if self.deny_tables.iter().any(|p| table_matches(p, &t))
                    && let Some(d) = check.deny(
                        "deny-tables",
                        1142,
                        format!("access to table '{t}' is denied (guard: deny-tables)"),
                    )
                {
                    return d;
                }
            }
        }
        if self.deny_digests.is_empty() && self.rewrites.is_empty() {
            return check.finish();
        }
        let digest = text.digest();
        if self.deny_digests.iter().any(|d| *d == *digest)
            && let Some(d) = check.deny(
                "deny-digests",
                1105,
                format!("statement denied by digest: {digest} (guard: deny-digests)"),
            )
        {
            return d;
        }
        if let Some(r) = self.rewrites.iter().find(|r| *r.digest == *digest) {
            return Decision::Rewrite(r.sql.clone());
        }
        check.finish()
    }
}

/// Whether `read-only-users` applies to the statement.
fn is_write(s: &Statement) -> bool {
    !s.read_only
        && !matches!(
            s.kind,
            StatementKind::Set
                | StatementKind::Use
                | StatementKind::Show
                | StatementKind::Transaction
        )
}

/// `pattern` names a table (`t`, `*`) or a qualified one (`schema.t`, `schema.*`); an unqualified
/// pattern matches the table name in any schema.
fn table_matches(pattern: &str, table: &str) -> bool {
    let name = table.rsplit('.').next().unwrap_or(table);
    if pattern.contains('.') {
        wildcard_match(pattern, table)
    } else {
        wildcard_match(pattern, name)
    }
}

struct Policy;

#[derive(Default)]
struct State {
    settings: Settings,
    /// `decide_text` outcomes by `digest-hash`: the tables and digest of a statement shape are
    /// read from the host once, not per statement.
    by_digest: BTreeMap<u64, Decision>,
}

/// Digests remembered at most; the cache starts over beyond.
const MAX_CACHED_DIGESTS: usize = 4096;

static STATE: sluice_policy_sdk::Global<State> = sluice_policy_sdk::Global::new();

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        s.validate()?;
        STATE.with(|st| {
            st.settings = s;
            st.by_digest.clear();
        });
        Ok(())
    }
}

impl Safety for Policy {
    fn check(q: QueryFacts, _s: SessionInfo) -> Checked {
        let facts = Statement {
            kind: q.kind,
            read_only: q.read_only,
            has_where: q.has_where,
            multi_statement: q.multi_statement,
            length: q.length as usize,
        };
        let text = Host {
            table_count: q.table_count as usize,
        };
        let (decision, reuse) = STATE.with(|st| {
            let flags = st.settings.decide_flags(&facts, &text);
            let decision = if matches!(flags, Decision::Deny(..)) {
                flags
            } else {
                flags.then(by_text(st, &text, q.digest_hash))
            };
            let reuse = st.settings.reuse(&facts, &decision);
            (decision, reuse)
        });
        let verdict = match decision {
            Decision::Allow => Verdict::Allow,
            Decision::Deny(code, message) => Verdict::Deny(Denial { code, message }),
            Decision::Report(code, message) => Verdict::Report(Denial { code, message }),
            Decision::Rewrite(sql) => Verdict::Rewrite(sql),
        };
        Checked {
            verdict,
            reach: reuse.map(|r| Reach {
                per_user: r.per_user,
                max_length: r.max_length,
            }),
        }
    }
}

/// The text rules' decision for a statement shape: cached by digest hash, so the tables and
/// digest are read from the host once per shape.
fn by_text(st: &mut State, text: &Host, digest_hash: u64) -> Decision {
    if let Some(d) = st.by_digest.get(&digest_hash) {
        return d.clone();
    }
    let d = st.settings.decide_text(text);
    if st.by_digest.len() >= MAX_CACHED_DIGESTS {
        st.by_digest.clear();
    }
    st.by_digest.insert(digest_hash, d.clone());
    d
}

/// The text parts, read from the host during the call.
struct Host {
    table_count: usize,
}

impl StatementText for Host {
    fn digest(&self) -> Cow<'_, str> {
        Cow::Owned(statement::digest())
    }

    fn table(&self, index: usize) -> Option<Cow<'_, str>> {
        if index >= self.table_count {
            return None;
        }
        let i = u32::try_from(index).ok()?;
        statement::table(i).map(Cow::Owned)
    }

    fn user(&self) -> Cow<'_, str> {
        Cow::Owned(session::user())
    }
}

/// The text parts as plain values (natively: tests, the benchmark's native baseline).
pub struct Text<'a> {
    pub digest: &'a str,
    pub tables: &'a [String],
    pub user: &'a str,
}

impl StatementText for Text<'_> {
    fn digest(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.digest)
    }

    fn table(&self, index: usize) -> Option<Cow<'_, str>> {
        self.tables.get(index).map(|t| Cow::Borrowed(t.as_str()))
    }

    fn user(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.user)
    }
}

// Exported only in the component: natively (unit tests, benchmarks) several policies link into
// one binary and their export symbols would collide.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Policy, bindings};
    bindings::export!(Policy with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statement whose digest is its text.
    struct Case<'a> {
        facts: Statement,
        text: Text<'a>,
    }

    fn stmt<'a>(
        sql: &'a str,
        kind: StatementKind,
        has_where: bool,
        tables: &'a [String],
        user: &'a str,
    ) -> Case<'a> {
        Case {
            facts: Statement {
                kind,
                read_only: kind == StatementKind::Select,
                has_where,
                multi_statement: false,
                length: sql.len(),
            },
            text: Text {
                digest: sql,
                tables,
                user,
            },
        }
    }

    impl Case<'_> {
        fn decided_by(&self, s: &Settings) -> Decision {
            s.decide(&self.facts, &self.text)
        }
    }

    #[test]
    fn report_mode_lets_statements_run_and_enforced_rules_still_deny() {
        let s: Settings = sluice_policy_sdk::settings(
            r#"{"mode": "report", "modes": {"deny-tables": "enforce"}, "deny-tables": ["mysql.*"]}"#,
        )
        .expect("settings");
        s.validate().expect("valid");
        let none: [String; 0] = [];
        assert!(matches!(
            stmt("DELETE FROM t", StatementKind::Delete, false, &none, "app").decided_by(&s),
            Decision::Report(1175, _)
        ));
        // A reported rule does not hide an enforced one that follows.
        let user = [String::from("mysql.user")];
        assert!(matches!(
            stmt(
                "DELETE FROM mysql.user",
                StatementKind::Delete,
                false,
                &user,
                "app"
            )
            .decided_by(&s),
            Decision::Deny(1142, _)
        ));
        assert_eq!(
            stmt("SELECT 1", StatementKind::Select, false, &none, "app").decided_by(&s),
            Decision::Allow
        );
        let bad: Settings =
            sluice_policy_sdk::settings(r#"{"modes": {"deny-everything": "report"}}"#)
                .expect("parses");
        assert!(
            bad.validate()
                .expect_err("unknown rule")
                .contains("deny-everything")
        );
    }

    #[test]
    fn each_rule_denies_with_its_code() {
        let s: Settings = sluice_policy_sdk::settings(
            r#"{"max-statement-bytes": 40, "deny-tables": ["app.secrets", "audit_*"], "read-only-users": ["reporter"],
                "deny-digests": ["SELECT SLEEP(?)"], "rewrites": [{"digest": "SELECT ?", "sql": "SELECT 2"}]}"#,
        )
        .expect("settings");
        let none: [String; 0] = [];
        assert!(matches!(
            stmt("DROP TABLE t", StatementKind::Ddl, false, &none, "app").decided_by(&s),
            Decision::Deny(1227, _)
        ));
        assert!(matches!(
            stmt(
                "LOAD DATA INFILE 'x'",
                StatementKind::LoadData,
                false,
                &none,
                "app"
            )
            .decided_by(&s),
            Decision::Deny(1227, _)
        ));
        assert!(matches!(
            stmt("DELETE FROM t", StatementKind::Delete, false, &none, "app").decided_by(&s),
            Decision::Deny(1175, _)
        ));
        assert_eq!(
            stmt(
                "DELETE FROM t WHERE a = 1",
                StatementKind::Delete,
                true,
                &none,
                "app"
            )
            .decided_by(&s),
            Decision::Allow
        );
        assert!(matches!(
            stmt(
                "SELECT 'a very long statement indeed, over forty'",
                StatementKind::Select,
                false,
                &none,
                "app"
            )
            .decided_by(&s),
            Decision::Deny(1105, _)
        ));
        let secret = [String::from("app.secrets")];
        assert!(matches!(
            stmt("SELECT 1", StatementKind::Select, false, &secret, "app").decided_by(&s),
            Decision::Deny(1142, _)
        ));
        let audit = [String::from("audit_log")];
        assert!(matches!(
            stmt("SELECT 1", StatementKind::Select, false, &audit, "app").decided_by(&s),
            Decision::Deny(1142, _)
        ));
        assert!(matches!(
            stmt(
                "INSERT INTO t VALUES (1)",
                StatementKind::Insert,
                false,
                &none,
                "reporter"
            )
            .decided_by(&s),
            Decision::Deny(1290, _)
        ));
        assert_eq!(
            stmt("SELECT 1", StatementKind::Select, false, &none, "reporter").decided_by(&s),
            Decision::Allow
        );
        assert!(matches!(
            stmt(
                "SELECT SLEEP(?)",
                StatementKind::Select,
                false,
                &none,
                "app"
            )
            .decided_by(&s),
            Decision::Deny(1105, _)
        ));
        assert_eq!(
            stmt("SELECT ?", StatementKind::Select, false, &none, "app").decided_by(&s),
            Decision::Rewrite("SELECT 2".into())
        );
    }

    #[test]
    fn unknown_settings_are_refused() {
        assert!(sluice_policy_sdk::settings::<Settings>(r#"{"deny-everything": true}"#).is_err());
    }

    #[test]
    fn decisions_carry_as_far_as_what_they_read() {
        let none: [String; 0] = [];
        let plain: Settings = sluice_policy_sdk::settings("{}").expect("settings");
        let select = stmt("SELECT 1", StatementKind::Select, false, &none, "app");
        let d = select.decided_by(&plain);
        assert_eq!(
            plain.reuse(&select.facts, &d),
            Some(Reuse {
                per_user: false,
                max_length: u32::MAX
            })
        );
        // A user rule makes a write's decision the user's; a read's stays everyone's.
        let users: Settings = sluice_policy_sdk::settings(
            r#"{"read-only-users": ["ro"], "max-statement-bytes": 64}"#,
        )
        .expect("settings");
        let delete = stmt(
            "DELETE FROM t WHERE id = 1",
            StatementKind::Delete,
            true,
            &none,
            "ro",
        );
        let d = delete.decided_by(&users);
        assert!(matches!(d, Decision::Deny(1290, _)));
        assert_eq!(
            users.reuse(&delete.facts, &d),
            Some(Reuse {
                per_user: true,
                max_length: 64
            })
        );
        assert_eq!(
            users
                .reuse(&select.facts, &Decision::Allow)
                .map(|r| r.per_user),
            Some(false)
        );
        // Over the length limit, and a rewrite: this statement only.
        let long = "SELECT 1 /* padding padding padding padding padding padding padding */";
        let long = stmt(long, StatementKind::Select, false, &none, "app");
        let d = long.decided_by(&users);
        assert!(matches!(d, Decision::Deny(1105, _)));
        assert_eq!(users.reuse(&long.facts, &d), None);
        assert_eq!(
            plain.reuse(&select.facts, &Decision::Rewrite("SELECT 2".into())),
            None
        );
    }
}
