//! The gateway's routers as simulated pickers: each arrival becomes a statement routed by a
//! `phase::Policy` (the built-in policy, or a `PolicySet` of `.wasm` routers) over a fleet whose
//! load is what the gateway would have measured, in virtual time: requests in flight and the
//! pool's own latency estimates (`pool::load::LoadStats`, fed with each request's time in system).
//!
//! Clients are spread over several gateways (client `c` on gateway `c % gateways`), each with its
//! own view: only its own requests in flight and its own latency samples, as separate Sluice
//! instances have. A view can also be refreshed only periodically (`view_refresh`), as one read
//! from a shared, periodically published source would be. Health and lag come from the
//! simulator's checks (`Pick::observe`).
//!
//! Server 0 is the primary, the rest replicas; a decision for the primary lands on server 0, one
//! for a name on the server of that name.

use std::path::Path;
use std::sync::Arc;

use super::driver::Pick;
use super::model::Server;
use super::random::SimRng;
use crate::bench::candidate::{Candidate, CandidateDir, prepare_router};
use crate::config::{Config, Role};
use crate::facts::{QueryFacts, analyze};
use crate::phase::{BackendStatus, ConfigPolicy, Policy, RouteDecision, SessionInfo};
use crate::plugin::loader::load_dir;
use crate::plugin::runtime::PluginEngine;
use crate::plugin::secrets::SecretSources;
use crate::plugin::set::PolicySet;
use crate::pool::load::LoadStats;

/// A router loaded for the simulator: a candidate's policy set (its router only) and the
/// directory of manifests it was loaded from.
pub struct LoadedRouter {
    pub set: PolicySet,
    _dir: CandidateDir,
}

/// Loads `candidate` (a strategy of the router in `policies`, or a router component of one's own)
/// as a policy set of that router alone; `n` tells candidates' directories apart.
pub fn load_router(
    engine: &Arc<PluginEngine>,
    policies: &Path,
    candidate: &Candidate,
    n: usize,
) -> anyhow::Result<LoadedRouter> {
    let dir = prepare_router(policies, candidate, n)?;
    // The built-in policy behind the router: a primary (server 0) for what it leaves.
    let config = Config::from_toml(
        "[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\n",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = Arc::new(SecretSources::default());
    let set = load_dir(engine, &dir.path, ConfigPolicy::new(config), &secrets)
        .map_err(|e| anyhow::anyhow!("{}: {e}", candidate.name()))?;
    Ok(LoadedRouter { set, _dir: dir })
}

/// One simulated gateway's view of the fleet.
struct GatewayView {
    fleet: Vec<BackendStatus>,
    loads: Vec<LoadStats>,
    /// When `fleet`'s loads were last taken from `loads` (with a periodic refresh).
    viewed_at: f64,
}

/// A router driven by the simulator.
pub struct PolicyRouter<'a> {
    policy: &'a dyn Policy,
    facts: QueryFacts,
    gateways: Vec<GatewayView>,
    /// Nanoseconds per model time unit (1e6: the model counts milliseconds).
    unit_ns: f64,
    /// Refresh a gateway's view of load this often (model time); `None`: live.
    view_refresh: Option<f64>,
}

impl<'a> PolicyRouter<'a> {
    /// Routes `sql` (one statement class) over `servers` servers through `gateways` gateways,
    /// with one model time unit lasting `unit_ns` nanoseconds.
    pub fn new(
        policy: &'a dyn Policy,
        sql: &str,
        servers: usize,
        gateways: usize,
        unit_ns: f64,
    ) -> Self {
        let fleet: Vec<BackendStatus> = (0..servers)
            .map(|i| {
                if i == 0 {
                    BackendStatus::idle("primary", Role::Primary, true, Some(0))
                } else {
                    BackendStatus::idle(&format!("replica{i}"), Role::Replica, true, Some(0))
                }
            })
            .collect();
        Self {
            policy,
            facts: analyze(sql),
            gateways: (0..gateways.max(1))
                .map(|_| GatewayView {
                    fleet: fleet.clone(),
                    loads: (0..servers).map(|_| LoadStats::default()).collect(),
                    viewed_at: f64::NEG_INFINITY,
                })
                .collect(),
            unit_ns,
            view_refresh: None,
        }
    }

    /// Each gateway's view of load refreshed every `every` model time units instead of live.
    #[must_use]
    pub fn refreshed_every(mut self, every: f64) -> Self {
        self.view_refresh = (every > 0.0).then_some(every);
        self
    }

    fn ns(&self, t: f64) -> u64 {
        let ns = t * self.unit_ns;
        if ns.is_finite() && ns > 0.0 {
            ns as u64
        } else {
            0
        }
    }

    fn gateway(&self, client: u32) -> usize {
        client as usize % self.gateways.len()
    }
}

impl Pick for PolicyRouter<'_> {
    fn pick(&mut self, client: u32, servers: &[Server], now: f64, _rng: &mut SimRng) -> usize {
        let now_ns = self.ns(now);
        let g = self.gateway(client);
        let refresh = self.view_refresh;
        let view = &mut self.gateways[g];
        if refresh.is_none_or(|every| now - view.viewed_at >= every) {
            view.viewed_at = now;
            for (b, l) in view.fleet.iter_mut().zip(&view.loads) {
                b.load = l.snapshot_at(now_ns);
                b.in_use = b.load.in_flight;
            }
        }
        let session = SessionInfo::plain(client + 1, "sim");
        let chosen = match self.policy.route(&self.facts, &session, &view.fleet) {
            RouteDecision::Primary => 0,
            RouteDecision::Backend(i) => i,
            RouteDecision::Named(name) => view
                .fleet
                .iter()
                .position(|b| *b.name == *name)
                .unwrap_or(0),
        };
        let chosen = chosen.min(servers.len().saturating_sub(1));
        if let Some(l) = view.loads.get(chosen) {
            l.started();
        }
        chosen
    }

    fn finished(&mut self, client: u32, server: usize, time_in_system: f64, now: f64) {
        // MySQL reports no service time: the gateway's stand-in (send to first packet) sees the
        // whole time in system, and so does this.
        let us = time_in_system * self.unit_ns / 1e3;
        let now_ns = self.ns(now);
        let g = self.gateway(client);
        if let Some(l) = self.gateways[g].loads.get(server) {
            l.finished_at(us, us, now_ns);
        }
    }

    fn failed(&mut self, client: u32, server: usize, _now: f64) {
        let g = self.gateway(client);
        if let Some(l) = self.gateways[g].loads.get(server) {
            l.abandoned();
        }
    }

    fn observe(&mut self, servers: &[Server], _now: f64) {
        for view in &mut self.gateways {
            for (b, s) in view.fleet.iter_mut().zip(servers) {
                b.healthy = s.up;
                b.lag_ms = s.lag_ms;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::{Fault, FaultKind, OpenLoop, run};
    use super::super::model::ServiceTime;
    use super::*;

    #[test]
    fn the_built_in_split_sends_reads_to_the_replicas_and_writes_to_the_primary() {
        let config = Config::from_toml(
            "[routing]\nread-write-split = true\n[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\n",
        )
        .expect("config");
        let policy = ConfigPolicy::new(config);
        let servers = || vec![Server::new(4, ServiceTime::Exponential { mean: 1.0 }); 3];
        let at = OpenLoop {
            rate: OpenLoop::rate_for(0.5, 3, 4, 1.0),
            requests: 3000,
            seed: 1,
            clients: 16,
            ..OpenLoop::default()
        };
        let mut reads = PolicyRouter::new(&policy, "SELECT c FROM t WHERE id = 1", 3, 2, 1e6);
        let out = run(&at, servers(), &mut reads);
        assert_eq!(out.served[0], 0, "no read on the primary: {:?}", out.served);
        assert!(out.served[1] > 0 && out.served[2] > 0, "{:?}", out.served);
        let mut writes = PolicyRouter::new(&policy, "UPDATE t SET c = 1 WHERE id = 1", 3, 2, 1e6);
        let out = run(&at, servers(), &mut writes);
        assert_eq!(out.served, vec![3000, 0, 0]);
    }

    #[test]
    fn a_replica_down_fails_what_it_holds_and_is_avoided_from_the_next_health_check() {
        let config = Config::from_toml(
            "[routing]\nread-write-split = true\n[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\n",
        )
        .expect("config");
        let policy = ConfigPolicy::new(config);
        let rate = OpenLoop::rate_for(0.5, 3, 4, 1.0);
        let requests = 20_000;
        let span = requests as f64 / rate;
        let (from, until, check) = (0.3 * span, 0.6 * span, 5.0);
        let at = OpenLoop {
            rate,
            requests,
            seed: 2,
            clients: 64,
            network: 0.1,
            check_every: check,
            faults: vec![Fault {
                server: 1,
                from,
                until,
                kind: FaultKind::Down,
            }],
            ..OpenLoop::default()
        };
        let mut reads = PolicyRouter::new(&policy, "SELECT c FROM t WHERE id = 1", 4, 4, 1e6);
        let servers = vec![Server::new(4, ServiceTime::Exponential { mean: 1.0 }); 4];
        let out = run(&at, servers, &mut reads);
        let sent_to_1 = |a: f64, b: f64| {
            out.arrived_at
                .iter()
                .zip(&out.server)
                .filter(|(t, s)| **t >= a && **t < b && **s == 1)
                .count()
        };
        assert!(out.errors > 0, "what it held and what reached it failed");
        assert!(out.errors < requests / 100, "{} errors", out.errors);
        assert_eq!(sent_to_1(from + check, until), 0, "avoided once checked");
        assert!(
            sent_to_1(until + check, span) > 0,
            "back after it recovered"
        );
        let failed = out.time_in_system.iter().filter(|t| t.is_nan()).count();
        assert_eq!(failed as u64, out.errors);
    }
}
