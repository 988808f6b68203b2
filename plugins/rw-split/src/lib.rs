//! The `rw-split` router: writes, transactions, locking reads and `/* sluice:route=primary */` go
//! to the primary; plain reads to a healthy replica whose replication lag is known and under
//! `max-lag-ms`. A replica whose lag is unknown (replication stopped, not yet measured) counts as
//! lagging. No usable replica: the primary.
//!
//! Settings (JSON, every key optional):
//! - `strategy` ("sticky"): how a read picks among usable replicas:
//!   - `sticky`: by connection id, so a session keeps its replica (and its connection);
//!   - `round-robin`: in turn, per statement;
//!   - `weighted`: in turn, each replica `weight` times per cycle;
//!   - `least-in-use`: the one with the fewest connections serving statements;
//!   - `lowest-latency`: the one with the lowest median latency.
//! - `max-lag-ms` (1000)
//!
//! Hints: `/* sluice:route=primary */`, `/* sluice:route=replica */` (a replica even for a
//! statement that is not a plain read, when one is usable), `/* sluice:route=<backend name> */`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::String;

use serde::Deserialize;

sluice_policy_sdk::runtime!();

// Generated bindings contain `unsafe` (the canonical ABI glue); the policy's own code does not.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "router" });
}

use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
pub use bindings::exports::sluice::policy::routing::BackendStatus;
use bindings::exports::sluice::policy::routing::{
    Guest as Routing, QueryFacts, RouteDecision, SessionInfo,
};
pub use bindings::sluice::policy::types::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Sticky,
    RoundRobin,
    Weighted,
    LeastInUse,
    LowestLatency,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub strategy: Strategy,
    pub max_lag_ms: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            strategy: Strategy::Sticky,
            max_lag_ms: 1000,
        }
    }
}

#[derive(Default)]
struct State {
    settings: Settings,
    /// Statements routed so far (round-robin and weighted cycles).
    turn: u64,
}

static STATE: sluice_policy_sdk::Global<State> = sluice_policy_sdk::Global::new();

/// The part of the facts routing reads.
pub struct Read<'a> {
    pub plain_read: bool,
    pub in_transaction: bool,
    pub route_hint: Option<&'a str>,
    pub connection_id: u64,
}

/// Where to go: `None` is the primary, `Some(i)` the fleet entry i.
pub fn choose(
    settings: &Settings,
    turn: u64,
    q: &Read<'_>,
    fleet: &[BackendStatus],
) -> Option<usize> {
    let usable = |b: &BackendStatus| {
        b.role == Role::Replica && b.healthy && b.lag_ms.is_some_and(|l| l <= settings.max_lag_ms)
    };
    match q.route_hint {
        Some("primary") => return None,
        Some("replica") => {}
        Some(name) => {
            if let Some(i) = fleet.iter().position(|b| b.name == name && b.healthy) {
                return Some(i);
            }
        }
        None => {
            if !q.plain_read || q.in_transaction {
                return None;
            }
        }
    }
    let candidates: alloc::vec::Vec<usize> =
        (0..fleet.len()).filter(|&i| usable(&fleet[i])).collect();
    if candidates.is_empty() {
        return None;
    }
    let pick = match settings.strategy {
        Strategy::Sticky => candidates[(q.connection_id % candidates.len() as u64) as usize],
        Strategy::RoundRobin => candidates[(turn % candidates.len() as u64) as usize],
        Strategy::Weighted => {
            let total: u64 = candidates
                .iter()
                .map(|&i| u64::from(fleet[i].weight.max(1)))
                .sum();
            let mut slot = turn % total;
            let mut chosen = candidates[0];
            for &i in &candidates {
                let w = u64::from(fleet[i].weight.max(1));
                if slot < w {
                    chosen = i;
                    break;
                }
                slot -= w;
            }
            chosen
        }
        Strategy::LeastInUse => *candidates
            .iter()
            .min_by_key(|&&i| fleet[i].in_use)
            .unwrap_or(&candidates[0]),
        Strategy::LowestLatency => *candidates
            .iter()
            .min_by_key(|&&i| fleet[i].latency_p50_us)
            .unwrap_or(&candidates[0]),
    };
    Some(pick)
}

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        STATE.with(|st| st.settings = s);
        Ok(())
    }
}

impl Routing for Policy {
    fn route(
        q: QueryFacts,
        s: SessionInfo,
        fleet: alloc::vec::Vec<BackendStatus>,
    ) -> RouteDecision {
        let hint = q
            .hints
            .iter()
            .find(|(k, _)| k == "route")
            .map(|(_, v)| v.as_str());
        let read = Read {
            plain_read: q.read_only && !q.locking_read,
            in_transaction: s.in_transaction,
            route_hint: hint,
            connection_id: s.connection_id,
        };
        let chosen = STATE.with(|st| {
            st.turn = st.turn.wrapping_add(1);
            choose(&st.settings, st.turn, &read, &fleet)
        });
        match chosen {
            Some(i) => RouteDecision::Backend(fleet[i].name.clone()),
            None => RouteDecision::Primary,
        }
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

    fn backend(
        name: &str,
        role: Role,
        healthy: bool,
        lag: Option<u32>,
        in_use: u32,
        weight: u32,
        latency: u32,
    ) -> BackendStatus {
        BackendStatus {
            name: name.into(),
            role,
            healthy,
            lag_ms: lag,
            in_use,
            idle: 0,
            weight,
            latency_p50_us: latency,
        }
    }

    fn fleet() -> alloc::vec::Vec<BackendStatus> {
        alloc::vec![
            backend("primary", Role::Primary, true, None, 0, 1, 100),
            backend("r1", Role::Replica, true, Some(10), 5, 1, 300),
            backend("r2", Role::Replica, true, Some(20), 1, 3, 200),
        ]
    }

    fn read(id: u64) -> Read<'static> {
        Read {
            plain_read: true,
            in_transaction: false,
            route_hint: None,
            connection_id: id,
        }
    }

    #[test]
    fn writes_transactions_and_hints_go_to_the_primary() {
        let s = Settings::default();
        let f = fleet();
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    plain_read: false,
                    ..read(1)
                },
                &f
            ),
            None
        );
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    in_transaction: true,
                    ..read(1)
                },
                &f
            ),
            None
        );
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    route_hint: Some("primary"),
                    ..read(1)
                },
                &f
            ),
            None
        );
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    route_hint: Some("r2"),
                    plain_read: false,
                    ..read(1)
                },
                &f
            ),
            Some(2)
        );
    }

    #[test]
    fn lagging_stopped_and_down_replicas_are_skipped() {
        let s = Settings {
            max_lag_ms: 15,
            ..Settings::default()
        };
        let f = fleet();
        for id in 0..4 {
            assert_eq!(choose(&s, 0, &read(id), &f), Some(1), "r2 lags 20 ms > 15");
        }
        let mut f = fleet();
        f[1].lag_ms = None; // replication stopped
        f[2].healthy = false;
        assert_eq!(
            choose(&s, 0, &read(1), &f),
            None,
            "no usable replica: primary"
        );
    }

    #[test]
    fn strategies() {
        let f = fleet();
        let mut s = Settings::default();
        assert_ne!(
            choose(&s, 0, &read(1), &f),
            choose(&s, 0, &read(2), &f),
            "sticky spreads sessions"
        );
        assert_eq!(
            choose(&s, 0, &read(1), &f),
            choose(&s, 9, &read(1), &f),
            "and keeps each"
        );
        s.strategy = Strategy::RoundRobin;
        assert_ne!(choose(&s, 0, &read(1), &f), choose(&s, 1, &read(1), &f));
        s.strategy = Strategy::Weighted;
        let picks: alloc::vec::Vec<_> = (0..4).map(|t| choose(&s, t, &read(1), &f)).collect();
        assert_eq!(
            picks.iter().filter(|p| **p == Some(2)).count(),
            3,
            "weight 3 of 4: {picks:?}"
        );
        s.strategy = Strategy::LeastInUse;
        assert_eq!(choose(&s, 0, &read(1), &f), Some(2));
        s.strategy = Strategy::LowestLatency;
        assert_eq!(choose(&s, 0, &read(1), &f), Some(2));
    }
}
