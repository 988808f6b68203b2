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
//! - `consistency` ("session"): `session`: a read of a session that must see its last write
//!   goes to a usable replica known to have applied it, when the strategy's pick has not (none
//!   known: the pick, where the host waits for the write, bounded, else reads on the primary);
//!   `eventual`: the strategy's pick.
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
    Guest as Routing, QueryFacts, RouteDecision, Session, SessionInfo, Statement,
};
pub use bindings::sluice::policy::types::{BackendLoad, Role};

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

/// What a read must see (the host enforces the gateway's own level whatever the router says;
/// this lets the router pick a replica that needs no wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    #[default]
    Session,
    Eventual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub strategy: Strategy,
    pub max_lag_ms: u32,
    pub consistency: Consistency,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            strategy: Strategy::Sticky,
            max_lag_ms: 1000,
            consistency: Consistency::Session,
        }
    }
}

/// A replica that may serve reads: healthy, its lag known and under `max-lag-ms`.
fn usable(settings: &Settings, b: &BackendStatus) -> bool {
    b.role == Role::Replica && b.healthy && b.lag_ms.is_some_and(|l| l <= settings.max_lag_ms)
}

/// Under `session` consistency, for a session that must see its last write: the pick if it has
/// applied it, else the first usable replica that has, else still the pick.
pub fn prefer_caught_up<'a>(
    settings: &Settings,
    choice: Choice<'a>,
    fleet: &[BackendStatus],
    caught_up: impl Fn(usize) -> bool,
) -> Choice<'a> {
    match choice {
        Choice::Replica(i) if settings.consistency == Consistency::Session && !caught_up(i) => (0
            ..fleet.len())
            .find(|&j| usable(settings, &fleet[j]) && caught_up(j))
            .map_or(choice, Choice::Replica),
        other => other,
    }
}

#[derive(Default)]
struct State {
    settings: Settings,
    /// Statements routed so far (round-robin and weighted cycles).
    turn: u64,
    /// The fleet as the host last described it (`fleet-changed`).
    fleet: alloc::vec::Vec<BackendStatus>,
}

static STATE: sluice_policy_sdk::Global<State> = sluice_policy_sdk::Global::new();

/// The part of the facts routing reads.
pub struct Read<'a> {
    pub plain_read: bool,
    pub in_transaction: bool,
    pub route_hint: Option<&'a str>,
    pub connection_id: u64,
}

/// Where a statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice<'a> {
    Primary,
    /// The fleet entry at this index.
    Replica(usize),
    /// The backend a hint names (the host checks it exists and is healthy).
    Named(&'a str),
}

/// Picks a backend. `load` gives a backend's live load; only the load-based strategies ask.
pub fn choose<'a>(
    settings: &Settings,
    turn: u64,
    q: &Read<'a>,
    fleet: &[BackendStatus],
    load: impl Fn(usize) -> BackendLoad,
) -> Choice<'a> {
    match q.route_hint {
        Some("primary") => return Choice::Primary,
        Some("replica") => {}
        Some(name) => return Choice::Named(name),
        None => {
            if !q.plain_read || q.in_transaction {
                return Choice::Primary;
            }
        }
    }
    // The usable replicas, as fleet indexes, without collecting them.
    let candidates = || (0..fleet.len()).filter(|&i| usable(settings, &fleet[i]));
    let count = candidates().count() as u64;
    if count == 0 {
        return Choice::Primary;
    }
    let nth = |n: u64| candidates().nth(n as usize);
    let pick = match settings.strategy {
        Strategy::Sticky => nth(q.connection_id % count),
        Strategy::RoundRobin => nth(turn % count),
        Strategy::Weighted => {
            let weight = |i: usize| u64::from(fleet[i].weight.max(1));
            let total: u64 = candidates().map(weight).sum();
            let mut slot = turn % total;
            candidates().find(|&i| {
                let w = weight(i);
                if slot < w {
                    return true;
                }
                slot -= w;
                false
            })
        }
        Strategy::LeastInUse => candidates().min_by_key(|&i| load(i).in_use),
        Strategy::LowestLatency => candidates().min_by_key(|&i| load(i).latency_p50_us),
    };
    pick.map_or(Choice::Primary, Choice::Replica)
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
    fn fleet_changed(fleet: alloc::vec::Vec<BackendStatus>) {
        STATE.with(|st| st.fleet = fleet);
    }

    fn route(
        q: QueryFacts,
        statement: &Statement,
        s: SessionInfo,
        _session: &Session,
    ) -> RouteDecision {
        // Only a statement with hints pays for a call into the host.
        let hint = if q.hint_count > 0 {
            statement.hint("route")
        } else {
            None
        };
        let read = Read {
            plain_read: q.read_only && !q.locking_read,
            in_transaction: s.in_transaction,
            route_hint: hint.as_deref(),
            connection_id: s.connection_id,
        };
        let chosen = STATE.with(|st| {
            st.turn = st.turn.wrapping_add(1);
            let load = |i: usize| {
                u32::try_from(i)
                    .ok()
                    .and_then(bindings::sluice::policy::fleet::load)
                    .unwrap_or(BackendLoad {
                        in_use: u32::MAX,
                        idle: 0,
                        latency_p50_us: u32::MAX,
                    })
            };
            let pick = choose(&st.settings, st.turn, &read, &st.fleet, load);
            if s.must_see_position {
                let caught_up = |i: usize| {
                    u32::try_from(i).is_ok_and(bindings::sluice::policy::fleet::caught_up)
                };
                prefer_caught_up(&st.settings, pick, &st.fleet, caught_up)
            } else {
                pick
            }
        });
        match chosen {
            Choice::Primary => RouteDecision::Primary,
            Choice::Replica(i) => RouteDecision::Backend(u32::try_from(i).unwrap_or(u32::MAX)),
            Choice::Named(name) => RouteDecision::Named(String::from(name)),
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

    fn backend(role: Role, healthy: bool, lag: Option<u32>, weight: u32) -> BackendStatus {
        BackendStatus {
            role,
            healthy,
            lag_ms: lag,
            weight,
        }
    }

    /// The fleet's load: r1 busier and slower than r2.
    fn load(i: usize) -> BackendLoad {
        let (in_use, latency_p50_us) = [(0, 100), (5, 300), (1, 200)][i];
        BackendLoad {
            in_use,
            idle: 0,
            latency_p50_us,
        }
    }

    fn fleet() -> alloc::vec::Vec<BackendStatus> {
        alloc::vec![
            backend(Role::Primary, true, None, 1),
            backend(Role::Replica, true, Some(10), 1),
            backend(Role::Replica, true, Some(20), 3),
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
                &f,
                load
            ),
            Choice::Primary
        );
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    in_transaction: true,
                    ..read(1)
                },
                &f,
                load
            ),
            Choice::Primary
        );
        assert_eq!(
            choose(
                &s,
                0,
                &Read {
                    route_hint: Some("primary"),
                    ..read(1)
                },
                &f,
                load
            ),
            Choice::Primary
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
                &f,
                load
            ),
            Choice::Named("r2")
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
            assert_eq!(
                choose(&s, 0, &read(id), &f, load),
                Choice::Replica(1),
                "r2 lags 20 ms > 15"
            );
        }
        let mut f = fleet();
        f[1].lag_ms = None; // replication stopped
        f[2].healthy = false;
        assert_eq!(
            choose(&s, 0, &read(1), &f, load),
            Choice::Primary,
            "no usable replica: primary"
        );
    }

    #[test]
    fn strategies() {
        let f = fleet();
        let mut s = Settings::default();
        assert_ne!(
            choose(&s, 0, &read(1), &f, load),
            choose(&s, 0, &read(2), &f, load),
            "sticky spreads sessions"
        );
        assert_eq!(
            choose(&s, 0, &read(1), &f, load),
            choose(&s, 9, &read(1), &f, load),
            "and keeps each"
        );
        s.strategy = Strategy::RoundRobin;
        assert_ne!(
            choose(&s, 0, &read(1), &f, load),
            choose(&s, 1, &read(1), &f, load)
        );
        s.strategy = Strategy::Weighted;
        let picks: alloc::vec::Vec<_> = (0..4).map(|t| choose(&s, t, &read(1), &f, load)).collect();
        assert_eq!(
            picks.iter().filter(|p| **p == Choice::Replica(2)).count(),
            3,
            "weight 3 of 4: {picks:?}"
        );
        s.strategy = Strategy::LeastInUse;
        assert_eq!(choose(&s, 0, &read(1), &f, load), Choice::Replica(2));
        s.strategy = Strategy::LowestLatency;
        assert_eq!(choose(&s, 0, &read(1), &f, load), Choice::Replica(2));
    }

    #[test]
    fn a_session_that_must_see_its_write_prefers_a_replica_that_has_it() {
        let s = Settings::default();
        let f = fleet();
        // The pick (1) has not applied the write, 2 has: 2.
        let only_2 = |i: usize| i == 2;
        assert_eq!(
            prefer_caught_up(&s, Choice::Replica(1), &f, only_2),
            Choice::Replica(2)
        );
        // None has: the pick stays (the host waits there, bounded).
        assert_eq!(
            prefer_caught_up(&s, Choice::Replica(1), &f, |_| false),
            Choice::Replica(1)
        );
        // The primary stays the primary; `eventual` keeps the pick.
        assert_eq!(
            prefer_caught_up(&s, Choice::Primary, &f, only_2),
            Choice::Primary
        );
        let eventual = Settings {
            consistency: Consistency::Eventual,
            ..Settings::default()
        };
        assert_eq!(
            prefer_caught_up(&eventual, Choice::Replica(1), &f, only_2),
            Choice::Replica(1)
        );
    }
}
