//! A deliberately bad guard, for the sandbox tests: `{"mode": "loop" | "memory-bomb" | "panic" |
//! "deny" | "allow" | "refuse-settings"}`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;

sluice_policy_sdk::runtime!();

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "guard" });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::exports::sluice::policy::safety::{
    Checked, Denial, Guest as Safety, QueryFacts, SessionInfo, Verdict,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    #[default]
    Allow,
    Deny,
    Loop,
    MemoryBomb,
    Panic,
    RefuseSettings,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Settings {
    mode: Mode,
}

static SETTINGS: sluice_policy_sdk::Global<Settings> = sluice_policy_sdk::Global::new();

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        if matches!(s.mode, Mode::RefuseSettings) {
            return Err(String::from("these settings are refused on purpose"));
        }
        SETTINGS.with(|cur| *cur = s);
        Ok(())
    }
}

impl Safety for Policy {
    fn check(q: QueryFacts, s: SessionInfo) -> Checked {
        // It reads the SQL text, so its verdict holds for this statement only.
        Checked {
            verdict: verdict(q, s),
            reach: None,
        }
    }
}

fn verdict(q: QueryFacts, _s: SessionInfo) -> Verdict {
    // Misbehave only on statements that ask for it, so connecting and the load's smoke call
    // work.
    if !bindings::sluice::policy::statement::sql().contains("misbehave") {
        return Verdict::Allow;
    }
    match SETTINGS.with(|s| s.mode.clone()) {
        Mode::Allow | Mode::RefuseSettings => Verdict::Allow,
        Mode::Deny => Verdict::Deny(Denial {
            code: 1105,
            message: String::from("misbehave says no"),
        }),
        Mode::Loop => loop {
            core::hint::black_box(&q);
        },
        Mode::MemoryBomb => {
            // Grow memory without touching it, so the cap (not the deadline) stops it
            // however slow page faults are on a loaded machine.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(Vec::with_capacity(1 << 20));
                core::hint::black_box(&hoard);
            }
        }
        Mode::Panic => panic!("misbehave panics on purpose"),
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
