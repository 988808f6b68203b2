//! Policies as sandboxed WebAssembly components: manifests in a watched directory, compiled and
//! linked against `wit/policy.wit`, run on pooled warm instances under a deadline and a memory
//! cap, and composed into a [`set::PolicySet`] that implements the phase trait.

pub mod cases;
pub mod context;
pub mod loader;
pub mod manifest;
pub mod precompiled;
pub mod reuse;
pub mod runtime;
pub mod sandbox;
pub mod secrets;
pub mod set;
pub mod watch;
