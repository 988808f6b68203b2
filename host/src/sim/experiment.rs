//! A scenario run once per candidate router: each candidate is loaded from the policy
//! directory (a strategy of its router, or a router component of one's own) exactly as the
//! gateway loads it, driven through the scenario's gateways, and measured into one
//! [`SimReport`]. Every candidate sees the same arrivals, faults and service draws up to where
//! its decisions make them differ (one seed).

use std::path::Path;
use std::time::Instant;

use super::driver;
use super::report::{SimReport, SimRun};
use super::router::{PolicyRouter, load_router};
use super::scenario::Scenario;
use crate::bench::candidate::Candidate;
use crate::plugin::runtime::PluginEngine;

/// Runs `scenario` for each of `candidates`, from the routers in `policies`; `progress` hears
/// of each candidate before and after its run.
pub fn run(
    scenario: &Scenario,
    policies: &Path,
    candidates: &[Candidate],
    progress: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<SimReport> {
    if candidates.is_empty() {
        anyhow::bail!("no candidate to simulate: name strategies or a router");
    }
    let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("policy engine: {e}"))?;
    let spec = scenario.open_loop();
    let mut runs = Vec::with_capacity(candidates.len());
    for (n, candidate) in candidates.iter().enumerate() {
        progress(Progress::Starting {
            candidate: candidate.name(),
            index: n,
            of: candidates.len(),
        });
        let router = load_router(&engine, policies, candidate, n)?;
        let started = Instant::now();
        let outs: Vec<_> = (0..u64::from(scenario.replications))
            .map(|r| {
                // Each replication starts from an empty fleet and fresh gateways.
                let mut pick = PolicyRouter::new(
                    &router.set,
                    &scenario.statement,
                    scenario.servers.replicas + 1,
                    scenario.gateways,
                    1e6,
                )
                .refreshed_every(scenario.view_refresh_ms);
                let spec = driver::OpenLoop {
                    seed: scenario.seed.wrapping_add(r),
                    ..spec.clone()
                };
                driver::run(&spec, scenario.fleet(), &mut pick)
            })
            .collect();
        let run = SimRun::of(
            candidate.name(),
            scenario,
            &outs,
            started.elapsed().as_secs_f64(),
        );
        progress(Progress::Done(&run));
        runs.push(run);
    }
    Ok(SimReport {
        version: env!("CARGO_PKG_VERSION"),
        scenario: scenario.clone(),
        rate_per_sec: spec.rate * 1000.0,
        span_ms: scenario.span_ms(),
        fault_windows: scenario.fault_windows(),
        runs,
    })
}

/// Where a simulation is.
pub enum Progress<'a> {
    Starting {
        candidate: &'a str,
        index: usize,
        of: usize,
    },
    Done(&'a SimRun),
}
