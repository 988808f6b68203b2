//! The gateway's routers as simulated pickers: each arrival becomes a statement routed by a
//! `phase::Policy` (the built-in policy, or a `PolicySet` of `.wasm` routers) over a fleet whose
//! load is what the gateway would have measured, in virtual time: requests in flight and the
//! pool's own latency estimates (`pool::load::LoadStats`, fed with each request's time in system).
//!
//! Server 0 is the primary, the rest replicas; a decision for the primary lands on server 0, one
//! for a name on the server of that name.

use std::sync::Arc;

use super::driver::Pick;
use super::model::Server;
use super::random::SimRng;
use crate::config::Role;
use crate::facts::{QueryFacts, analyze};
use crate::phase::{BackendStatus, Policy, RouteDecision, SessionInfo};
use crate::pool::load::LoadStats;

/// A router driven by the simulator.
pub struct PolicyRouter<'a> {
    policy: &'a dyn Policy,
    facts: QueryFacts,
    fleet: Vec<BackendStatus>,
    loads: Vec<LoadStats>,
    /// Nanoseconds per model time unit (1e6: the model counts milliseconds).
    unit_ns: f64,
    /// Sessions the statements come from, each with its own connection id.
    clients: u32,
}

impl<'a> PolicyRouter<'a> {
    /// Routes `sql` (one statement class) over `servers` servers, from `clients` sessions, with
    /// one model time unit lasting `unit_ns` nanoseconds.
    pub fn new(
        policy: &'a dyn Policy,
        sql: &str,
        servers: usize,
        clients: u32,
        unit_ns: f64,
    ) -> Self {
        let fleet = (0..servers)
            .map(|i| BackendStatus {
                name: Arc::from(if i == 0 {
                    String::from("primary")
                } else {
                    format!("replica{i}")
                }),
                role: if i == 0 { Role::Primary } else { Role::Replica },
                healthy: true,
                lag_ms: Some(0),
                in_use: 0,
                idle: 0,
                weight: 1,
                load: crate::phase::BackendLoad::default(),
                caught_up: true,
                applied: None,
            })
            .collect();
        Self {
            policy,
            facts: analyze(sql),
            fleet,
            loads: (0..servers).map(|_| LoadStats::default()).collect(),
            unit_ns,
            clients: clients.max(1),
        }
    }

    fn ns(&self, t: f64) -> u64 {
        let ns = t * self.unit_ns;
        if ns.is_finite() && ns > 0.0 {
            ns as u64
        } else {
            0
        }
    }
}

impl Pick for PolicyRouter<'_> {
    fn pick(&mut self, servers: &[Server], now: f64, rng: &mut SimRng) -> usize {
        let now_ns = self.ns(now);
        for (b, l) in self.fleet.iter_mut().zip(&self.loads) {
            b.load = l.snapshot_at(now_ns);
            b.in_use = b.load.in_flight;
        }
        let connection_id = 1 + u32::try_from(rng.below(self.clients as usize)).unwrap_or(0);
        let session = SessionInfo::plain(connection_id, "sim");
        let chosen = match self.policy.route(&self.facts, &session, &self.fleet) {
            RouteDecision::Primary => 0,
            RouteDecision::Backend(i) => i,
            RouteDecision::Named(name) => self
                .fleet
                .iter()
                .position(|b| *b.name == *name)
                .unwrap_or(0),
        };
        let chosen = chosen.min(servers.len().saturating_sub(1));
        if let Some(l) = self.loads.get(chosen) {
            l.started();
        }
        chosen
    }

    fn finished(&mut self, server: usize, time_in_system: f64, now: f64) {
        // MySQL reports no service time: the gateway's stand-in (send to first packet) sees the
        // whole time in system, and so does this.
        let us = time_in_system * self.unit_ns / 1e3;
        let now_ns = self.ns(now);
        if let Some(l) = self.loads.get(server) {
            l.finished_at(us, us, now_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::driver::{OpenLoop, run};
    use super::super::model::ServiceTime;
    use super::*;
    use crate::config::Config;
    use crate::phase::ConfigPolicy;

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
            fluctuation: None,
        };
        let mut reads = PolicyRouter::new(&policy, "SELECT c FROM t WHERE id = 1", 3, 16, 1e6);
        let out = run(at, servers(), &mut reads);
        assert_eq!(out.served[0], 0, "no read on the primary: {:?}", out.served);
        assert!(out.served[1] > 0 && out.served[2] > 0, "{:?}", out.served);
        let mut writes = PolicyRouter::new(&policy, "UPDATE t SET c = 1 WHERE id = 1", 3, 16, 1e6);
        let out = run(at, servers(), &mut writes);
        assert_eq!(out.served, vec![3000, 0, 0]);
    }
}
