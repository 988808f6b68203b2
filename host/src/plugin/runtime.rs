//! The Wasm runtime: one engine with epoch interruption and the pooling allocator, a linker that
//! offers guests only the `sluice:policy` imports (`host`, `types`, `statement`, `session`,
//! `fleet`: see `context`),
//! compiled components cached by content, and per policy an `InstancePre` with a pool of warm,
//! configured instances.
//!
//! A call takes a warm instance, sets its deadline, makes a synchronous typed call and puts the
//! instance back. Any error discards the instance (the next call builds a fresh one from the
//! `InstancePre`), so a trapped guest never serves again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_wit::{credentials, fleet, guard, host, redactor, router, session, statement, types};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
};

use super::context::CallContext;
use super::manifest::{Kind, Manifest};
use super::reuse::{RouteMemo, VerdictCache};
use super::secrets::SecretSources;

/// Instances that can exist at once across every loaded policy (warm pools of at most 128 per
/// policy, fresh credentials instances, and the old and new sets side by side during a reload).
/// Each slot reserves (but does not commit) 4 GiB of address space for its memory, so that the
/// guest's bounds checks are done by guard pages.
const POOL_INSTANCES: u32 = 1000;

/// The largest memory any policy may have (`limits.memory-mib` caps each policy below it).
pub const MAX_MEMORY_BYTES: usize = 1 << 30;

/// The version of `wit/policy.wit` this host implements.
pub const POLICY_VERSION: &str = "0.8.0";

/// The epoch ticks every millisecond; deadlines are counted in ticks.
const TICK: Duration = Duration::from_millis(1);

/// Why a policy call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("timed out (deadline {0} ms)")]
    Timeout(u64),
    #[error("ran out of memory (cap {0} MiB)")]
    OutOfMemory(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("could not start an instance: {0}")]
    Instantiate(String),
}

/// What a guest's store carries: its limits, what the host interface needs, and the statement
/// being decided.
pub struct PluginState {
    pub(super) policy: Arc<str>,
    pub(super) secrets: Arc<SecretSources>,
    memory_cap: usize,
    memory_exceeded: bool,
    /// What the `statement` and `session` resources read during a call.
    pub context: CallContext,
    /// The fleet a router instance was last given (`fleet-changed`).
    pub fleet_seen: Option<Vec<types::BackendStatus>>,
    /// The empty WASI context of a `wasi = true` policy (made on first use).
    pub(super) wasi: Option<Box<super::sandbox::EmptyWasi>>,
}

impl ResourceLimiter for PluginState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The process-wide engine, its epoch ticker and the compiled-component cache.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<PluginState>,
    /// The same imports plus WASI, for `wasi = true` policies (an empty context).
    wasi_linker: Linker<PluginState>,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Compiled components on disk, across restarts (`policies.compiled-cache`).
    precompiled: Option<super::precompiled::PrecompiledDir>,
    /// Components compiled here (not found in memory or on disk).
    pub compilations: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
}

impl PluginEngine {
    /// An engine that compiles every component it has not seen in this process.
    pub fn new() -> Result<Arc<Self>, String> {
        Self::with_compiled_cache(None)
    }

    /// An engine that also keeps compiled components in `dir` (see `precompiled`). A directory
    /// that cannot be trusted or created is not used (a warning says why): the engine compiles.
    pub fn with_compiled_cache(dir: Option<&std::path::Path>) -> Result<Arc<Self>, String> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // Policies are called synchronously; without the concurrency machinery a call costs
        // about half as much.
        config.concurrency_support(false);
        // Instances come from pre-reserved slots, reset in place when dropped: without the pool a
        // fresh instance (a login's credentials call, a recycle) spends most of its time in the
        // kernel mapping and unmapping its memory.
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(MAX_MEMORY_BYTES)
            // Reset the first pages of a freed slot with memset rather than madvise: a policy's
            // heap is small, and page faults plus TLB shootdowns cost more than the memset.
            .linear_memory_keep_resident(128 << 10)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e}"))?;
        // Only the host interface: any other import (WASI or anything else) fails
        // `instantiate_pre` with a message naming it.
        let linker = policy_linker(&engine)?;
        let mut wasi_linker = policy_linker(&engine)?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut wasi_linker).map_err(|e| e.to_string())?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = Arc::clone(&stop_ticker);
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match ticker_engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("epoch ticker: {e}"))?;
        let precompiled = dir.and_then(|d| {
            super::precompiled::PrecompiledDir::open(d, &engine)
                .inspect_err(|e| tracing::warn!("policies.compiled-cache not used: {e}"))
                .ok()
        });
        Ok(Arc::new(Self {
            engine,
            linker,
            wasi_linker,
            compiled: Mutex::new(HashMap::new()),
            precompiled,
            compilations: AtomicU64::new(0),
            stop_ticker,
        }))
    }

    /// Compiled components loaded from the disk cache, when one is in use.
    pub fn precompiled_hits(&self) -> Option<u64> {
        self.precompiled
            .as_ref()
            .map(|p| p.hits.load(Ordering::Relaxed))
    }

    /// Compiles (or finds compiled, in memory or on disk) a component. Slow (tens of ms, seconds
    /// for a Python policy): call off the async runtime.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        use sha2::Digest;
        self.compile_hashed(bytes, sha2::Sha256::digest(bytes).into())
    }

    /// `compile`, for a caller that has the bytes' SHA-256 already (hashing a Python policy's
    /// 18 MB costs tens of milliseconds).
    pub fn compile_hashed(&self, bytes: &[u8], key: [u8; 32]) -> Result<Component, String> {
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(c.clone());
        }
        let on_disk = self
            .precompiled
            .as_ref()
            .and_then(|p| p.load(&self.engine, &key));
        let c = if let Some(c) = on_disk {
            c
        } else {
            let c = Component::new(&self.engine, bytes)
                .map_err(|e| format!("not a valid component: {e:#}"))?;
            self.compilations.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = &self.precompiled {
                p.store(&key, &c);
            }
            c
        };
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, c.clone());
        Ok(c)
    }
}

/// A linker with the `sluice:policy` imports and nothing else.
fn policy_linker(engine: &Engine) -> Result<Linker<PluginState>, String> {
    let mut linker = Linker::new(engine);
    host::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    types::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    statement::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    session::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    fleet::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
        .map_err(|e| e.to_string())?;
    Ok(linker)
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// The typed entry points of one policy kind.
pub enum Pre {
    Guard(guard::GuardPre<PluginState>),
    Router(router::RouterPre<PluginState>),
    Redactor(redactor::RedactorPre<PluginState>),
    Credentials(credentials::CredentialsPre<PluginState>),
}

/// An instantiated policy.
pub enum Bound {
    Guard(guard::Guard),
    Router(router::Router),
    Redactor(redactor::Redactor),
    Credentials(credentials::Credentials),
}

/// A warm instance: its store and its typed exports.
pub struct Warm {
    pub store: Store<PluginState>,
    pub bound: Bound,
    /// Calls served; an instance is recycled after `RECYCLE_AFTER` so guest heaps do not grow
    /// without end.
    calls: u32,
}

/// Calls after which a warm instance is replaced by a fresh one.
const RECYCLE_AFTER: u32 = 100_000;

/// What a policy did since it was loaded, for operators.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    /// Decisions the host reused without a call (`reuse`): guard verdicts, routes.
    pub reused: AtomicU64,
    pub traps: AtomicU64,
    pub deadline_hits: AtomicU64,
    pub out_of_memory: AtomicU64,
    /// Statements a guard denied / reported, by its error code and message (its rule).
    verdicts: Mutex<std::collections::HashMap<(bool, u16, String), u64>>,
}

/// Distinct rules counted per policy at most (a guard with a message per statement would grow
/// the map otherwise); beyond, verdicts count under their code only.
const MAX_RULES: usize = 256;

/// A guard's verdicts of one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleCount {
    /// `deny` or `report`.
    pub verdict: &'static str,
    pub code: u16,
    pub message: String,
    pub count: u64,
}

impl PluginStats {
    fn failed(&self, e: &CallError) {
        let c = match e {
            CallError::Timeout(_) => &self.deadline_hits,
            CallError::OutOfMemory(_) => &self.out_of_memory,
            CallError::Trap(_) | CallError::Instantiate(_) => &self.traps,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A guard denied (`report` false) or reported a statement.
    pub fn verdict(&self, report: bool, code: u16, message: &str) {
        let mut v = self
            .verdicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let message =
            if v.len() >= MAX_RULES && !v.contains_key(&(report, code, message.to_string())) {
                String::new()
            } else {
                message.to_string()
            };
        *v.entry((report, code, message)).or_default() += 1;
    }

    /// Verdicts by rule, most frequent first.
    pub fn rules(&self) -> Vec<RuleCount> {
        let mut v: Vec<RuleCount> = self
            .verdicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|((report, code, message), n)| RuleCount {
                verdict: if *report { "report" } else { "deny" },
                code: *code,
                message: message.clone(),
                count: *n,
            })
            .collect();
        v.sort_unstable_by_key(|r| std::cmp::Reverse(r.count));
        v
    }

    /// (denials, reports) in all.
    pub fn verdict_totals(&self) -> (u64, u64) {
        self.verdicts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .fold(
                (0, 0),
                |(d, r), ((report, ..), n)| {
                    if *report { (d, r + n) } else { (d + n, r) }
                },
            )
    }
}

/// A loaded policy: its manifest, its `InstancePre` and its warm instances.
pub struct Plugin {
    pub manifest: Manifest,
    pub stats: PluginStats,
    /// SHA-256 of the component file (hex), to tell which build is serving.
    pub content_sha256: String,
    pub loaded_at: std::time::SystemTime,
    engine: Arc<PluginEngine>,
    secrets: Arc<SecretSources>,
    pre: Pre,
    /// Boxed, so that taking one out and putting it back moves a pointer, not the store and
    /// every typed export.
    #[allow(clippy::vec_box)] // the point: moves of a pointer
    pool: Mutex<Vec<Box<Warm>>>,
    name: Arc<str>,
    /// A guard's verdicts that carry to later statements of the same shape.
    pub reuse: VerdictCache,
    /// A router's decisions that carry to later statements of the same session.
    pub routes: RouteMemo,
}

impl Plugin {
    /// Links a compiled component for its manifest's kind. An import other than the host
    /// interface, or a world that does not match the kind, is refused here.
    pub fn link(
        engine: &Arc<PluginEngine>,
        manifest: Manifest,
        component: &Component,
        secrets: Arc<SecretSources>,
    ) -> Result<Self, String> {
        let linker = if manifest.wasi {
            &engine.wasi_linker
        } else {
            &engine.linker
        };
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            let e = format!("{e:#}");
            if e.contains("wasi:") && !manifest.wasi {
                format!("imports an interface the sandbox does not offer (only sluice:policy/host, types, statement, session and fleet are available; a plugin built by a toolchain that needs WASI, such as componentize-py, runs with `wasi = true` in its manifest and gets an empty WASI context): {e}")
            } else if e.contains("sluice:policy/") && !e.contains(POLICY_VERSION) {
                format!("was built against another version of the policy interface (this gateway offers sluice:policy@{POLICY_VERSION}): rebuild it against wit/policy.wit: {e}")
            } else {
                format!("cannot be linked: {e}")
            }
        })?;
        let wrong_world = |e: wasmtime::Error| {
            format!(
                "does not export the `{}` world: {e:#}",
                manifest.kind.name()
            )
        };
        let pre = match manifest.kind {
            Kind::Guard => Pre::Guard(guard::GuardPre::new(instance_pre).map_err(wrong_world)?),
            Kind::Router => Pre::Router(router::RouterPre::new(instance_pre).map_err(wrong_world)?),
            Kind::Redactor => {
                Pre::Redactor(redactor::RedactorPre::new(instance_pre).map_err(wrong_world)?)
            }
            Kind::Credentials => Pre::Credentials(
                credentials::CredentialsPre::new(instance_pre).map_err(wrong_world)?,
            ),
        };
        let name: Arc<str> = Arc::from(manifest.name.as_str());
        Ok(Self {
            manifest,
            stats: PluginStats::default(),
            content_sha256: String::new(),
            loaded_at: std::time::SystemTime::now(),
            engine: Arc::clone(engine),
            secrets,
            pre,
            pool: Mutex::new(Vec::new()),
            name,
            reuse: VerdictCache::default(),
            routes: RouteMemo::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn deadline_ticks(&self) -> u64 {
        self.manifest.limits.deadline_ms.max(1)
    }

    /// A new instance, configured with the manifest's settings.
    pub fn instantiate(&self) -> Result<Warm, CallError> {
        self.in_sandbox(|| self.instantiate_here())
    }

    /// Runs a call into the guest where its imports can serve it (see `sandbox::off_runtime`).
    #[inline]
    fn in_sandbox<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.manifest.wasi {
            super::sandbox::off_runtime(f)
        } else {
            f()
        }
    }

    fn instantiate_here(&self) -> Result<Warm, CallError> {
        let state = PluginState {
            policy: Arc::clone(&self.name),
            secrets: Arc::clone(&self.secrets),
            memory_cap: usize::try_from(self.manifest.limits.memory_mib << 20)
                .unwrap_or(usize::MAX),
            memory_exceeded: false,
            context: CallContext::default(),
            fleet_seen: None,
            wasi: None,
        };
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| s);
        store.set_epoch_deadline(self.deadline_ticks().saturating_mul(20).max(100));
        let fail = |e: wasmtime::Error| CallError::Instantiate(format!("{e:#}"));
        let bound = match &self.pre {
            Pre::Guard(p) => Bound::Guard(p.instantiate(&mut store).map_err(fail)?),
            Pre::Router(p) => Bound::Router(p.instantiate(&mut store).map_err(fail)?),
            Pre::Redactor(p) => Bound::Redactor(p.instantiate(&mut store).map_err(fail)?),
            Pre::Credentials(p) => Bound::Credentials(p.instantiate(&mut store).map_err(fail)?),
        };
        let settings = self.manifest.settings_json.as_str();
        let configured = match &bound {
            Bound::Guard(b) => b
                .sluice_policy_lifecycle()
                .call_configure(&mut store, settings),
            Bound::Router(b) => b
                .sluice_policy_lifecycle()
                .call_configure(&mut store, settings),
            Bound::Redactor(b) => b
                .sluice_policy_lifecycle()
                .call_configure(&mut store, settings),
            Bound::Credentials(b) => b
                .sluice_policy_lifecycle()
                .call_configure(&mut store, settings),
        };
        match configured {
            Ok(Ok(())) => Ok(Warm {
                store,
                bound,
                calls: 0,
            }),
            Ok(Err(reason)) => Err(CallError::Instantiate(format!(
                "configure refused the settings: {reason}"
            ))),
            Err(e) => Err(CallError::Instantiate(format!("configure failed: {e:#}"))),
        }
    }

    /// Fills the warm pool up to `n` instances (at most `limits.instances`), so that the first
    /// statements after a load find instances ready instead of instantiating.
    pub fn prewarm(&self, n: usize) -> Result<(), CallError> {
        let n = n.min(self.manifest.limits.instances);
        while self.warm_instances() < n {
            let warm = Box::new(self.instantiate()?);
            self.pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(warm);
        }
        Ok(())
    }

    /// Instances waiting in the pool.
    pub fn warm_instances(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Runs `f` on a warm instance under the deadline. A failure discards the instance.
    pub fn call<R: Send>(
        &self,
        f: impl FnOnce(&mut Warm) -> wasmtime::Result<R> + Send,
    ) -> Result<R, CallError> {
        let taken = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut warm = match taken {
            Some(w) => w,
            None => Box::new(self.instantiate()?),
        };
        warm.store.set_epoch_deadline(self.deadline_ticks());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        match self.in_sandbox(|| f(&mut warm)) {
            Ok(r) => {
                warm.calls += 1;
                warm.store.data_mut().context.trim();
                let mut pool = self
                    .pool
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if pool.len() < self.manifest.limits.instances && warm.calls < RECYCLE_AFTER {
                    pool.push(warm);
                }
                Ok(r)
            }
            Err(e) => {
                let e = self.classify(&warm, &e);
                self.stats.failed(&e);
                Err(e)
            }
        }
    }

    /// A fresh instance for one call, dropped afterwards (credentials: secrets never stay in a
    /// long-lived guest).
    pub fn call_fresh<R: Send>(
        &self,
        f: impl FnOnce(&mut Warm) -> wasmtime::Result<R> + Send,
    ) -> Result<R, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut warm = self.instantiate().inspect_err(|e| self.stats.failed(e))?;
        warm.store.set_epoch_deadline(self.deadline_ticks());
        self.in_sandbox(|| f(&mut warm)).map_err(|e| {
            let e = self.classify(&warm, &e);
            self.stats.failed(&e);
            e
        })
    }

    fn classify(&self, warm: &Warm, e: &wasmtime::Error) -> CallError {
        if warm.store.data().memory_exceeded {
            return CallError::OutOfMemory(self.manifest.limits.memory_mib);
        }
        if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
            && *trap == wasmtime::Trap::Interrupt
        {
            return CallError::Timeout(self.manifest.limits.deadline_ms);
        }
        CallError::Trap(
            format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    }
}
