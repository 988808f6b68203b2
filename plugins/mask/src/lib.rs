//! The `mask` redactor: what clients see of sensitive columns, and what logs see of SQL.
//!
//! Settings (JSON):
//! - `rules`: `[{"column": PATTERN, "action": "mask" | "keep-last" | "hash" | "null", "keep": N}]`,
//!   first match wins. A PATTERN with dots matches `schema.table.column` (the underlying names),
//!   otherwise the column name; `*` and `?` are wildcards, matching ignores ASCII case.
//! - `detect` (`[]`): column patterns whose text is scanned for e-mail addresses and card numbers
//!   (13-19 digits passing the Luhn check), which are masked in place (a `custom` transform).
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;
use sluice_policy_sdk::wildcard_match;

sluice_policy_sdk::runtime!();

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "redactor", additional_derives: [PartialEq] });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::exports::sluice::policy::redaction::{
    Action, Column, Guest as Redaction, QueryFacts, SessionInfo,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Mask,
    KeepLast,
    Hash,
    Null,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rule {
    pub column: String,
    pub action: Kind,
    #[serde(default)]
    pub keep: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub rules: Vec<Rule>,
    pub detect: Vec<String>,
}

fn matches(pattern: &str, c: &Column) -> bool {
    if pattern.contains('.') {
        let full = alloc::format!("{}.{}.{}", c.schema, c.org_table, c.org_name);
        wildcard_match(pattern, &full)
    } else {
        wildcard_match(pattern, &c.name) || wildcard_match(pattern, &c.org_name)
    }
}

impl Settings {
    /// One action per column.
    pub fn plan(&self, columns: &[Column]) -> Vec<Action> {
        columns
            .iter()
            .map(|c| {
                if let Some(r) = self.rules.iter().find(|r| matches(&r.column, c)) {
                    return match r.action {
                        Kind::Mask => Action::Mask,
                        Kind::KeepLast => Action::KeepLast(r.keep),
                        Kind::Hash => Action::Hash,
                        Kind::Null => Action::Null,
                    };
                }
                if self.detect.iter().any(|p| matches(p, c)) {
                    Action::Custom
                } else {
                    Action::Keep
                }
            })
            .collect()
    }
}

/// Masks e-mail addresses (all but the domain) and Luhn-valid card numbers (all but the last 4
/// digits) in `text`.
pub fn scrub(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = chars.clone();
    // E-mail: a run of address characters around one '@' with a dot after it.
    let is_local = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-');
    for (at, _) in chars.iter().enumerate().filter(|(_, c)| **c == '@') {
        let mut start = at;
        while start > 0 && is_local(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len()
            && (chars[end].is_ascii_alphanumeric() || matches!(chars[end], '.' | '-'))
        {
            end += 1;
        }
        let domain: String = chars[at + 1..end].iter().collect();
        if start < at && domain.contains('.') {
            for c in &mut out[start..at] {
                *c = '*';
            }
        }
    }
    // Card numbers: 13-19 digits, spaces or dashes allowed between them.
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut digits: Vec<usize> = Vec::new();
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || (matches!(chars[j], ' ' | '-')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()))
        {
            if chars[j].is_ascii_digit() {
                digits.push(j);
            }
            j += 1;
        }
        if (13..=19).contains(&digits.len()) && luhn(digits.iter().map(|&k| chars[k])) {
            for &k in &digits[..digits.len() - 4] {
                out[k] = '*';
            }
        }
        i = j;
    }
    out.into_iter().collect()
}

fn luhn(digits: impl DoubleEndedIterator<Item = char>) -> bool {
    let mut sum = 0u32;
    for (n, d) in digits.rev().enumerate() {
        let mut v = d.to_digit(10).unwrap_or(0);
        if n % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// The SQL with string and number literals replaced by `?`, for logs.
pub fn redact_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut prev_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let q = c;
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == q {
                        if chars.peek() == Some(&q) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push('?');
                prev_word = false;
            }
            c if c.is_ascii_digit() && !prev_word => {
                while chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.')
                {
                    chars.next();
                }
                out.push('?');
            }
            c => {
                prev_word = c.is_alphanumeric() || c == '_';
                out.push(c);
            }
        }
    }
    out
}

static SETTINGS: sluice_policy_sdk::Global<Settings> = sluice_policy_sdk::Global::new();

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        SETTINGS.with(|cur| *cur = s);
        Ok(())
    }
}

impl Redaction for Policy {
    fn plan(_q: QueryFacts, _s: SessionInfo, columns: Vec<Column>) -> Vec<Action> {
        SETTINGS.with(|s| s.plan(&columns))
    }

    fn transform(_column: u32, cells: Vec<u8>, lengths: Vec<i32>) -> (Vec<u8>, Vec<i32>) {
        let mut out = Vec::with_capacity(cells.len());
        let mut out_lengths = Vec::with_capacity(lengths.len());
        let mut at = 0usize;
        for len in lengths {
            let Ok(n) = usize::try_from(len) else {
                out_lengths.push(-1);
                continue;
            };
            let cell = cells.get(at..at + n).unwrap_or_default();
            at += n;
            match core::str::from_utf8(cell) {
                Ok(text) => {
                    let scrubbed = scrub(text);
                    out.extend_from_slice(scrubbed.as_bytes());
                    out_lengths.push(i32::try_from(scrubbed.len()).unwrap_or(i32::MAX));
                }
                Err(_) => {
                    out.extend_from_slice(cell);
                    out_lengths.push(len);
                }
            }
        }
        (out, out_lengths)
    }

    fn redact_sql(sql: String) -> String {
        redact_sql(&sql)
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Policy, bindings};
    bindings::export!(Policy with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(schema: &str, table: &str, name: &str) -> Column {
        Column {
            schema: schema.into(),
            table: table.into(),
            org_table: table.into(),
            name: name.into(),
            org_name: name.into(),
        }
    }

    #[test]
    fn rules_and_detection() {
        let s: Settings = sluice_policy_sdk::settings(
            r#"{"rules": [{"column": "*email*", "action": "mask"}, {"column": "app.customers.card", "action": "keep-last", "keep": 4},
                          {"column": "ssn", "action": "hash"}, {"column": "secret", "action": "null"}], "detect": ["note"]}"#,
        )
        .expect("settings");
        let plan = s.plan(&[
            col("app", "customers", "email"),
            col("app", "customers", "card"),
            col("app", "x", "ssn"),
            col("app", "x", "secret"),
            col("app", "x", "note"),
            col("app", "x", "id"),
        ]);
        assert_eq!(
            plan,
            alloc::vec![
                Action::Mask,
                Action::KeepLast(4),
                Action::Hash,
                Action::Null,
                Action::Custom,
                Action::Keep
            ]
        );
    }

    #[test]
    fn scrubbing_and_sql() {
        assert_eq!(
            scrub("mail ada@example.com now"),
            "mail ***@example.com now"
        );
        assert_eq!(
            scrub("card 4111 1111 1111 1111."),
            "card **** **** **** 1111."
        );
        assert_eq!(
            scrub("order 1234567890123"),
            "order 1234567890123",
            "not Luhn-valid"
        );
        assert_eq!(
            redact_sql("SELECT * FROM t WHERE a = 'x''y' AND b = 42 AND c3 = 1.5"),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c3 = ?"
        );
    }
}
