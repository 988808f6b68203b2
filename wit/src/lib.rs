//! Host bindings generated from `wit/policy.wit`: one module per world. The `types` and `host`
//! interfaces are generated once (in `guard`) and shared by the other worlds, so a statement's
//! facts are converted once for every policy.

pub mod guard {
    wasmtime::component::bindgen!({
        world: "guard",
        path: "wit",
        // Routers get the fleet only when it changed: the host compares snapshots.
        additional_derives: [PartialEq],
    });
}

pub mod router {
    wasmtime::component::bindgen!({
        world: "router",
        path: "wit",
        with: {
            "sluice:policy/types": super::guard::sluice::policy::types,
            "sluice:policy/host": super::guard::sluice::policy::host,
            "sluice:policy/statement": super::guard::sluice::policy::statement,
            "sluice:policy/session": super::guard::sluice::policy::session,
        },
    });
}

pub mod redactor {
    wasmtime::component::bindgen!({
        world: "redactor",
        path: "wit",
        with: {
            "sluice:policy/types": super::guard::sluice::policy::types,
            "sluice:policy/host": super::guard::sluice::policy::host,
            "sluice:policy/statement": super::guard::sluice::policy::statement,
            "sluice:policy/session": super::guard::sluice::policy::session,
        },
    });
}

pub mod credentials {
    wasmtime::component::bindgen!({
        world: "credentials",
        path: "wit",
        with: {
            "sluice:policy/host": super::guard::sluice::policy::host,
        },
    });
}

/// The host interface guests import.
pub use guard::sluice::policy::host;
/// The types every world shares.
pub use guard::sluice::policy::types;
/// The text parts of the statement being decided, and of its session.
pub use guard::sluice::policy::{session, statement};
/// What routers read of the fleet's live load.
pub use router::sluice::policy::fleet;
