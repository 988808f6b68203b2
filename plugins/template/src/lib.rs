//! A template policy: a guard that refuses statements touching a configured table during a
//! configured "maintenance" flag. Copy this crate to start a policy of your own (see
//! `docs/policies.md`).
//!
//! Settings: `{"maintenance": false, "table": "orders"}`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use serde::Deserialize;

// The allocator entry point the component model needs (a no_std policy must define it).
sluice_policy_sdk::runtime!();

// Bindings for the world this policy implements: `guard` (also: `router`, `redactor`,
// `credentials`). Generated code contains `unsafe`; your code does not need any.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "guard" });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::exports::sluice::policy::safety::{
    Checked, Denial, Guest as Safety, QueryFacts, Reach, SessionInfo, Verdict,
};
use bindings::sluice::policy::host::{Level, log};
use bindings::sluice::policy::statement;

/// The policy's settings, from the manifest's `[settings]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub maintenance: bool,
    pub table: String,
}

impl Settings {
    /// The rule, as a plain function: unit-test it on the host.
    pub fn decide(&self, tables: &[String]) -> Option<String> {
        if !self.maintenance {
            return None;
        }
        let hit = tables
            .iter()
            .find(|t| t.rsplit('.').next() == Some(self.table.as_str()))?;
        Some(format!(
            "table '{hit}' is under maintenance; try again later"
        ))
    }
}

static SETTINGS: sluice_policy_sdk::Global<Settings> = sluice_policy_sdk::Global::new();

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        if s.maintenance {
            log(
                Level::Info,
                &format!("maintenance mode on for table {}", s.table),
            );
        }
        SETTINGS.with(|cur| *cur = s);
        Ok(())
    }
}

impl Safety for Policy {
    fn check(q: QueryFacts, _s: SessionInfo) -> Checked {
        // The rule reads only the tables, which the digest determines: the verdict holds for
        // every statement of this shape, so the host reuses it without calling again.
        let reach = Some(Reach {
            per_user: false,
            max_length: u32::MAX,
        });
        // Facts come by value; text parts cost a call into the host, so read them only when
        // the rule can use them.
        if q.table_count == 0 {
            return Checked {
                verdict: Verdict::Allow,
                reach,
            };
        }
        let verdict = match SETTINGS.with(|s| s.decide(&statement::tables())) {
            Some(message) => Verdict::Deny(Denial {
                code: 1105,
                message,
            }),
            None => Verdict::Allow,
        };
        Checked { verdict, reach }
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

    #[test]
    fn denies_only_the_table_under_maintenance() {
        let s = Settings {
            maintenance: true,
            table: "orders".into(),
        };
        assert!(s.decide(&[String::from("app.orders")]).is_some());
        assert!(s.decide(&[String::from("customers")]).is_none());
        assert!(
            Settings::default()
                .decide(&[String::from("orders")])
                .is_none()
        );
    }
}
