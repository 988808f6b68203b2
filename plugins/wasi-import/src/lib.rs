//! A guard built with `std` that reads an environment variable: on `wasm32-wasip2` that imports
//! `wasi:cli/environment`, which the gateway's sandbox does not offer. Loading it must fail.

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "guard" });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::exports::sluice::policy::safety::{
    Checked, Guest as Safety, QueryFacts, SessionInfo, Verdict,
};

struct Policy;

impl Lifecycle for Policy {
    fn configure(_settings: String) -> Result<(), String> {
        Ok(())
    }
}

impl Safety for Policy {
    fn check(_q: QueryFacts, _s: SessionInfo) -> Checked {
        let verdict = if std::env::var("SLUICE_ESCAPE").is_ok() {
            Verdict::Rewrite("SELECT 'escaped'".into())
        } else {
            Verdict::Allow
        };
        Checked {
            verdict,
            reach: None,
        }
    }
}

#[allow(unsafe_code)]
mod export {
    use super::{Policy, bindings};
    bindings::export!(Policy with_types_in bindings);
}
