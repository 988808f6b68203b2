//! The empty WASI context for policies whose toolchain needs WASI (`wasi = true` in the
//! manifest: componentize-py links CPython against wasi-libc). The guest sees WASI's shapes and
//! none of its capabilities: no preopened directories, no environment or arguments, stdin
//! closed, stdout and stderr discarded (`host.log` is the way out), no network (every address
//! refused, no name lookup) and clocks fixed at the epoch. Only randomness is real (CPython
//! seeds its hashes with it; it reveals nothing).
//!
//! wasmtime-wasi's synchronous bindings block on a Tokio runtime for stream and poll calls,
//! which is not allowed on a runtime's own threads: [`off_runtime`] runs such a policy's calls
//! where it is.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// A guest's WASI state.
pub struct EmptyWasi {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl EmptyWasi {
    pub fn new() -> Self {
        let ctx = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .build();
        Self {
            ctx,
            table: ResourceTable::new(),
        }
    }

    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Default for EmptyWasi {
    fn default() -> Self {
        Self::new()
    }
}

/// Time does not pass for a policy: a decision must not depend on it (the host reuses verdicts).
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl WasiView for super::runtime::PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Only plugins linked with WASI call this; one made on first use stays empty.
        self.wasi.get_or_insert_with(Box::default).view()
    }
}

/// Runs `f` where wasmtime-wasi may block on a runtime: in place off a runtime, after handing
/// the worker's other tasks away on a multi-threaded one, on a scoped thread on a
/// current-thread one (tests).
pub fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Ok(_) => tokio::task::block_in_place(f),
    }
}
