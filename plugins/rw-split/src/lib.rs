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
//!   - `least-in-use`: the one with the fewest pooled connections lent out;
//!   - `lowest-latency`: the one with the lowest response-time EWMA;
//!   - `p2c`: power of two choices (Mitzenmacher; Envoy's LEAST_REQUEST): two random usable
//!     replicas, the one with fewer statements in flight wins;
//!   - `peak-ewma` (Finagle, linkerd): two random usable replicas, the lower
//!     `peak-ewma × (in-flight + 1)` wins; the peak-EWMA jumps to a slow response at once and
//!     decays over 10 s;
//!   - `c3` (Suresh et al., NSDI '15): every usable replica ranked by `R − T + q³·T`, lowest wins,
//!     with `q = 1 + in-flight`. MySQL reports neither a server's queue nor its service time, so
//!     the gateway's own figures stand in: `R` is its response-time EWMA, `T` its EWMA of the time
//!     to the first response packet, `q` counts only this gateway's statements (C3's rate control
//!     is not implemented);
//!   - `adaptive` (MaxScale's adaptive routing): a random replica, each with a chance
//!     proportional to `1 / R³` (`R` the response-time EWMA), but at least `adaptive-floor`
//!     (0.01), so a slow replica still gets some reads and is seen to recover.
//!
//!   Ties go to a random one of the tied replicas. The random draws come from the statement's
//!   turn (repeatable, no clock or entropy).
//! - `max-lag-ms` (1000)
//! - `consistency` ("session"): `session`: a read of a session that must see its last write
//!   goes to a usable replica known to have applied it, when the strategy's pick has not (none
//!   known: the pick, where the host waits for the write, bounded, else reads on the primary);
//!   `eventual`: the strategy's pick.
//! - `rules` ([]): routing without writing a policy, first match wins, for plain reads outside a
//!   transaction (a write goes to the primary whatever a rule says). Each rule names one or more
//!   of `digest` (the statement's digest, `*`/`?` wildcards), `table` (any table the statement
//!   names, as `schema.table` when qualified, wildcards), `user` (the client's user, exact), all
//!   of which must match, and `to`: `primary`, `replicas` (the strategy's pick) or a backend's
//!   name. A rule with `to = "primary"` applies to every statement. At most 64 rules; the digest
//!   and table parts are matched once per digest and cached; `user` costs a call into the host.
//!   Example: `rules = [{ table = "app.ledger", to = "primary" }, { user = "reports", to = "replica2" }]`.
//!
//! Hints (before rules): `/* sluice:route=primary */`, `/* sluice:route=replica */` (a replica
//! even for a statement that is not a plain read, when one is usable),
//! `/* sluice:route=<backend name> */`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

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
    Guest as Routing, QueryFacts, RouteDecision, RouteReach, Routed as Route, SessionInfo,
};
pub use bindings::sluice::policy::types::{BackendLoad, Role};
use bindings::sluice::policy::{session, statement};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    Sticky,
    RoundRobin,
    Weighted,
    LeastInUse,
    LowestLatency,
    P2c,
    PeakEwma,
    C3,
    Adaptive,
}

impl Strategy {
    /// Whether picking reads the fleet's load (`fleet.load`, a call into the host each).
    pub fn reads_load(self) -> bool {
        !matches!(self, Self::Sticky | Self::RoundRobin | Self::Weighted)
    }
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

/// A routing rule from the settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    pub to: String,
}

/// Where a rule sends what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Primary,
    Replicas,
    Named(&'a str),
}

impl Rule {
    pub fn target(&self) -> Target<'_> {
        match self.to.as_str() {
            "primary" => Target::Primary,
            "replicas" | "replica" => Target::Replicas,
            name => Target::Named(name),
        }
    }

    /// Whether the statement's text matches (the digest and table parts; `user` apart).
    fn matches_text(&self, digest: &str, tables: &[String]) -> bool {
        self.digest
            .as_deref()
            .is_none_or(|p| sluice_policy_sdk::wildcard_match(p, digest))
            && self.table.as_deref().is_none_or(|p| {
                tables
                    .iter()
                    .any(|t| sluice_policy_sdk::wildcard_match(p, t))
            })
    }
}

/// The most rules a router takes (their matches are cached as a 64-bit mask per digest).
pub const MAX_RULES: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub strategy: Strategy,
    pub max_lag_ms: u32,
    pub consistency: Consistency,
    /// `adaptive`: the least chance any usable replica gets.
    pub adaptive_floor: f64,
    pub rules: Vec<Rule>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            strategy: Strategy::Sticky,
            max_lag_ms: 1000,
            consistency: Consistency::Session,
            adaptive_floor: 0.01,
            rules: Vec::new(),
        }
    }
}

impl Settings {
    /// Refuses settings that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.adaptive_floor) {
            return Err(alloc::format!(
                "adaptive-floor: {} is not between 0 and 1",
                self.adaptive_floor
            ));
        }
        if self.rules.len() > MAX_RULES {
            return Err(alloc::format!(
                "rules: {} rules, at most {MAX_RULES}",
                self.rules.len()
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.digest.is_none() && r.table.is_none() && r.user.is_none() {
                return Err(alloc::format!(
                    "rules[{i}]: names none of digest, table, user (it would match everything)"
                ));
            }
            if r.to.is_empty() {
                return Err(alloc::format!("rules[{i}].to: empty"));
            }
        }
        Ok(())
    }

    /// The rules whose digest and table parts match a statement, as a bit mask.
    pub fn text_matches(&self, digest: &str, tables: &[String]) -> u64 {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches_text(digest, tables))
            .fold(0, |m, (i, _)| m | (1 << i))
    }

    /// The first rule among `mask` that applies to this statement and user (`user` asked only
    /// when a candidate rule names one).
    pub fn rule_for(
        &self,
        mask: u64,
        plain_read: bool,
        user: impl FnOnce() -> String,
    ) -> Option<Target<'_>> {
        let mut user = Some(user);
        let mut known: Option<String> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            let target = r.target();
            if !plain_read && target != Target::Primary {
                continue;
            }
            if let Some(want) = &r.user {
                if known.is_none() {
                    known = user.take().map(|f| f());
                }
                if known.as_deref() != Some(want.as_str()) {
                    continue;
                }
            }
            return Some(target);
        }
        None
    }
}

/// A replica that may serve reads: healthy, its lag known and under `max-lag-ms`.
fn usable(settings: &Settings, b: &BackendStatus) -> bool {
    b.role == Role::Replica && b.healthy && b.lag_ms.is_some_and(|l| l <= settings.max_lag_ms)
}

/// Under `session` consistency, for a session that must see its last write: the pick if it has
/// applied it, else the strategy's pick among the usable replicas that have, else still the pick.
pub fn prefer_caught_up<'a>(
    settings: &Settings,
    choice: Choice<'a>,
    fleet: &[BackendStatus],
    caught_up: impl Fn(usize) -> bool,
    (turn, connection_id): (u64, u64),
    load: impl Fn(usize) -> BackendLoad,
) -> Choice<'a> {
    match choice {
        Choice::Replica(i) if settings.consistency == Consistency::Session && !caught_up(i) => {
            match pick_among(settings, turn, connection_id, fleet, load, &caught_up) {
                Choice::Primary => choice,
                other => other,
            }
        }
        other => other,
    }
}

/// Digests whose rule matches are cached, at most (then the cache starts over).
const RULE_CACHE: usize = 4096;

#[derive(Default)]
struct State {
    settings: Settings,
    /// Statements routed so far (round-robin and weighted cycles, random draws).
    turn: u64,
    /// The fleet as the host last described it (`fleet-changed`).
    fleet: Vec<BackendStatus>,
    /// Digest hash -> the rules its text matches.
    rule_matches: BTreeMap<u64, u64>,
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

/// A well-mixed 64-bit number from a counter (splitmix64): the random draws, repeatable.
pub fn mix(turn: u64) -> u64 {
    let mut z = turn.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// C3's score (lower is better), from the gateway's stand-ins (see the module doc).
pub fn c3_score(l: &BackendLoad) -> f64 {
    let t = f64::from(l.service_ewma_us.max(1));
    let r = f64::from(l.response_ewma_us).max(t);
    let q = 1.0 + f64::from(l.in_flight);
    r - t + q * q * q * t
}

/// Peak-EWMA's cost: the peak response time times the statements waiting with this one.
pub fn peak_cost(l: &BackendLoad) -> f64 {
    f64::from(l.peak_ewma_us.max(1)) * (f64::from(l.in_flight) + 1.0)
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
    pick_replica(settings, turn, q.connection_id, fleet, load)
}

/// The strategy's pick among the usable replicas (the primary when there is none).
pub fn pick_replica<'a>(
    settings: &Settings,
    turn: u64,
    connection_id: u64,
    fleet: &[BackendStatus],
    load: impl Fn(usize) -> BackendLoad,
) -> Choice<'a> {
    pick_among(settings, turn, connection_id, fleet, load, &|_| true)
}

/// The strategy's pick among the usable replicas that are also `eligible`.
fn pick_among<'a>(
    settings: &Settings,
    turn: u64,
    connection_id: u64,
    fleet: &[BackendStatus],
    load: impl Fn(usize) -> BackendLoad,
    eligible: &dyn Fn(usize) -> bool,
) -> Choice<'a> {
    // The candidates, as fleet indexes, without collecting them.
    let candidates = || (0..fleet.len()).filter(|&i| usable(settings, &fleet[i]) && eligible(i));
    let count = candidates().count() as u64;
    if count == 0 {
        return Choice::Primary;
    }
    let nth = |n: u64| candidates().nth(n as usize);
    let random = mix(turn);
    // Candidates from a random one on, so ties go to a random replica.
    let rotated = || {
        let skip = (random % count) as usize;
        candidates().skip(skip).chain(candidates().take(skip))
    };
    let lowest = |key: &dyn Fn(usize) -> f64| {
        rotated()
            .map(|i| (i, key(i)))
            .fold(None::<(usize, f64)>, |best, (i, k)| match best {
                Some((_, b)) if b <= k => best,
                _ => Some((i, k)),
            })
            .map(|(i, _)| i)
    };
    // Two distinct random candidates (both when there are two), the lower key wins.
    let two = |key: &dyn Fn(usize) -> f64| {
        let a = random % count;
        let b = if count == 1 {
            a
        } else {
            (a + 1 + (random >> 32) % (count - 1)) % count
        };
        let (a, b) = (nth(a)?, nth(b)?);
        Some(if key(b) < key(a) { b } else { a })
    };
    let pick = match settings.strategy {
        Strategy::Sticky => nth(connection_id % count),
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
        Strategy::LeastInUse => lowest(&|i| f64::from(load(i).in_use)),
        Strategy::LowestLatency => lowest(&|i| f64::from(load(i).response_ewma_us)),
        Strategy::P2c => two(&|i| f64::from(load(i).in_flight)),
        Strategy::PeakEwma => two(&|i| peak_cost(&load(i))),
        Strategy::C3 => lowest(&|i| c3_score(&load(i))),
        Strategy::Adaptive => adaptive(settings.adaptive_floor, random, candidates, &load),
    };
    pick.map_or(Choice::Primary, Choice::Replica)
}

/// Roulette over the candidates by `1 / R³`, each chance floored at `floor`.
fn adaptive<I: Iterator<Item = usize>>(
    floor: f64,
    random: u64,
    candidates: impl Fn() -> I,
    load: &dyn Fn(usize) -> BackendLoad,
) -> Option<usize> {
    let weight = |i: usize| {
        let r = f64::from(load(i).response_ewma_us.max(1));
        1.0 / (r * r * r)
    };
    let weights: Vec<(usize, f64)> = candidates().map(|i| (i, weight(i))).collect();
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let floored: Vec<(usize, f64)> = weights
        .iter()
        .map(|&(i, w)| (i, (w / total).max(floor)))
        .collect();
    let sum: f64 = floored.iter().map(|(_, p)| p).sum();
    // A uniform draw in [0, sum).
    let mut u = (random >> 11) as f64 / (1u64 << 53) as f64 * sum;
    for &(i, p) in &floored {
        if u < p {
            return Some(i);
        }
        u -= p;
    }
    floored.last().map(|&(i, _)| i)
}

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        s.validate()?;
        STATE.with(|st| {
            st.settings = s;
            st.rule_matches.clear();
        });
        Ok(())
    }
}

/// The load of the backend at fleet index `i`, from the host (a saturated figure past its end,
/// so such a backend is never preferred).
fn host_load(i: usize) -> BackendLoad {
    u32::try_from(i)
        .ok()
        .and_then(bindings::sluice::policy::fleet::load)
        .unwrap_or(BackendLoad {
            in_use: u32::MAX,
            idle: 0,
            in_flight: u32::MAX,
            service_ewma_us: u32::MAX,
            response_ewma_us: u32::MAX,
            peak_ewma_us: u32::MAX,
        })
}

/// The rules whose digest and table parts match this statement, from the cache or matched now
/// (reading the digest and tables from the host once per digest).
fn rule_mask(settings: &Settings, cache: &mut BTreeMap<u64, u64>, q: &QueryFacts) -> u64 {
    if let Some(m) = cache.get(&q.digest_hash) {
        return *m;
    }
    let tables = if q.table_count > 0 {
        statement::tables()
    } else {
        Vec::new()
    };
    let m = settings.text_matches(&statement::digest(), &tables);
    if cache.len() >= RULE_CACHE {
        cache.clear();
    }
    cache.insert(q.digest_hash, m);
    m
}

impl Routing for Policy {
    fn fleet_changed(fleet: Vec<BackendStatus>) {
        STATE.with(|st| st.fleet = fleet);
    }

    fn route(q: QueryFacts, s: SessionInfo) -> Route {
        // Only a statement with hints pays for a call into the host.
        let hint = if q.hint_count > 0 {
            statement::hint("route")
        } else {
            None
        };
        let read = Read {
            plain_read: q.read_only && !q.locking_read,
            in_transaction: s.in_transaction,
            route_hint: hint.as_deref(),
            connection_id: s.connection_id,
        };
        let (chosen, reach) = STATE.with(|st| {
            st.turn = st.turn.wrapping_add(1);
            let turn = st.turn;
            let rule = if read.route_hint.is_none() && !st.settings.rules.is_empty() {
                let mask = rule_mask(&st.settings, &mut st.rule_matches, &q);
                let plain = read.plain_read && !read.in_transaction;
                (mask != 0)
                    .then(|| st.settings.rule_for(mask, plain, session::user))
                    .flatten()
            } else {
                None
            };
            let pick = match rule {
                Some(Target::Primary) => Choice::Primary,
                Some(Target::Named(n)) => Choice::Named(n),
                Some(Target::Replicas) => {
                    pick_replica(&st.settings, turn, read.connection_id, &st.fleet, host_load)
                }
                None => choose(&st.settings, turn, &read, &st.fleet, host_load),
            };
            let pick = if s.must_see_position {
                let caught_up = |i: usize| {
                    u32::try_from(i).is_ok_and(bindings::sluice::policy::fleet::caught_up)
                };
                prefer_caught_up(
                    &st.settings,
                    pick,
                    &st.fleet,
                    caught_up,
                    (turn, read.connection_id),
                    host_load,
                )
            } else {
                pick
            };
            let reach = carries(&st.settings, &read, s.must_see_position);
            let chosen = match pick {
                Choice::Primary => Routed::Primary,
                Choice::Replica(i) => Routed::Backend(i),
                Choice::Named(n) => Routed::Named(String::from(n)),
            };
            (chosen, reach)
        });
        let decision = match chosen {
            Routed::Primary => RouteDecision::Primary,
            Routed::Backend(i) => RouteDecision::Backend(u32::try_from(i).unwrap_or(u32::MAX)),
            Routed::Named(name) => RouteDecision::Named(name),
        };
        Route { decision, reach }
    }
}

/// How far a route carries in its session (the host then routes the session's statements of the
/// same kind itself while the fleet's status and the session stay as they were). What does not
/// read the fleet's load, the turn or a hint carries: every statement that is not a plain read
/// outside a transaction (the primary), and with `sticky` every read (by connection id). Rules
/// match by digest, so with rules a route carries to the same digest only.
pub fn carries(
    settings: &Settings,
    read: &Read<'_>,
    must_see_position: bool,
) -> Option<RouteReach> {
    if read.route_hint.is_some() || must_see_position {
        return None;
    }
    let primary_by_rule = !read.plain_read || read.in_transaction;
    (primary_by_rule || settings.strategy == Strategy::Sticky).then_some(RouteReach {
        same_digest: !settings.rules.is_empty(),
    })
}

/// A decision, owning what it names (out of the state's borrow).
enum Routed {
    Primary,
    Backend(usize),
    Named(String),
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
        let (in_use, us) = [(0, 100), (5, 300), (1, 200)][i];
        BackendLoad {
            in_use,
            idle: 0,
            in_flight: in_use,
            service_ewma_us: us / 2,
            response_ewma_us: us,
            peak_ewma_us: us,
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
    fn routes_carry_in_the_session_only_when_they_read_no_load_turn_or_hint() {
        let sticky = Settings::default();
        let p2c = Settings {
            strategy: Strategy::P2c,
            ..Settings::default()
        };
        let with_rules = Settings {
            rules: alloc::vec![Rule {
                digest: None,
                table: Some("app.ledger".into()),
                user: None,
                to: "primary".into(),
            }],
            ..Settings::default()
        };
        let write = Read {
            plain_read: false,
            ..read(1)
        };
        let hinted = Read {
            route_hint: Some("replica"),
            ..read(1)
        };
        // Some(same-digest) when it carries.
        let reach = |s: &Settings, r: &Read<'_>, must_see: bool| {
            carries(s, r, must_see).map(|r| r.same_digest)
        };
        assert_eq!(
            reach(&sticky, &read(1), false),
            Some(false),
            "sticky: by connection id"
        );
        assert_eq!(reach(&p2c, &read(1), false), None, "p2c reads the load");
        assert_eq!(
            reach(&p2c, &write, false),
            Some(false),
            "a write: the primary"
        );
        assert_eq!(
            reach(&with_rules, &read(1), false),
            Some(true),
            "rules match by digest"
        );
        assert_eq!(reach(&sticky, &read(1), true), None, "a position to see");
        assert_eq!(reach(&sticky, &hinted, false), None, "a hint");
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
        for strategy in [
            Strategy::LowestLatency,
            Strategy::P2c,
            Strategy::PeakEwma,
            Strategy::C3,
        ] {
            s.strategy = strategy;
            for turn in 0..20 {
                assert_eq!(
                    choose(&s, turn, &read(1), &f, load),
                    Choice::Replica(2),
                    "{strategy:?}: r2 is idler and faster"
                );
            }
        }
    }

    /// Two replicas as the bench's slow-replica scenario sees them: r1 answers in 5 ms with
    /// statements queued, r2 in 0.2 ms.
    fn slow_r1(i: usize) -> BackendLoad {
        let (in_flight, us) = [(0, 100), (3, 5_000), (1, 200)][i];
        BackendLoad {
            in_use: in_flight,
            idle: 0,
            in_flight,
            service_ewma_us: us,
            response_ewma_us: us,
            peak_ewma_us: us,
        }
    }

    fn share_of_r1(s: &Settings, load: fn(usize) -> BackendLoad) -> usize {
        let f = fleet();
        (0..10_000)
            .filter(|&t| choose(s, t, &read(1), &f, load) == Choice::Replica(1))
            .count()
    }

    #[test]
    fn load_aware_strategies_keep_reads_off_a_slow_replica() {
        let mut s = Settings {
            strategy: Strategy::RoundRobin,
            ..Settings::default()
        };
        assert_eq!(share_of_r1(&s, slow_r1), 5_000);
        for strategy in [Strategy::P2c, Strategy::PeakEwma, Strategy::C3] {
            s.strategy = strategy;
            assert_eq!(share_of_r1(&s, slow_r1), 0, "{strategy:?}");
        }
        // Adaptive: (1/5000³) / (1/200³) is tiny, so r1 gets about the floor.
        s.strategy = Strategy::Adaptive;
        let n = share_of_r1(&s, slow_r1);
        assert!((50..=200).contains(&n), "{n} of 10,000 at a 1% floor");
        // No floor: its own chance, (200/5000)³ / (1 + that) = 6.4e-5.
        s.adaptive_floor = 0.0;
        assert!(share_of_r1(&s, slow_r1) <= 5);
    }

    #[test]
    fn ties_spread_over_the_tied_replicas() {
        let idle = |_: usize| BackendLoad {
            in_use: 0,
            idle: 0,
            in_flight: 0,
            service_ewma_us: 0,
            response_ewma_us: 0,
            peak_ewma_us: 0,
        };
        let mut s = Settings::default();
        for strategy in [
            Strategy::LeastInUse,
            Strategy::LowestLatency,
            Strategy::P2c,
            Strategy::PeakEwma,
            Strategy::C3,
            Strategy::Adaptive,
        ] {
            s.strategy = strategy;
            let n = share_of_r1(&s, idle);
            assert!((4_500..=5_500).contains(&n), "{strategy:?}: {n}");
        }
    }

    #[test]
    fn p2c_draws_two_distinct_replicas() {
        // Four replicas; the one with the fewest in flight is never picked when it is not
        // drawn, so the least loaded wins only about half the time (2 of 4 drawn).
        let f: Vec<BackendStatus> = (0..5)
            .map(|i| {
                let role = if i == 0 { Role::Primary } else { Role::Replica };
                backend(role, true, Some(0), 1)
            })
            .collect();
        let load = |i: usize| BackendLoad {
            in_use: 0,
            idle: 0,
            in_flight: [0, 1, 9, 9, 9][i],
            service_ewma_us: 0,
            response_ewma_us: 0,
            peak_ewma_us: 0,
        };
        let s = Settings {
            strategy: Strategy::P2c,
            ..Settings::default()
        };
        let picks: Vec<_> = (0..10_000)
            .map(|t| choose(&s, t, &read(1), &f, load))
            .collect();
        let best = picks.iter().filter(|p| **p == Choice::Replica(1)).count();
        assert!((4_500..=5_500).contains(&best), "{best}");
    }

    #[test]
    fn rules_route_by_digest_table_and_user() {
        let s: Settings = serde_json::from_str(
            r#"{"rules": [
                {"table": "app.ledger*", "to": "primary"},
                {"digest": "SELECT * FROM `report` *", "to": "r2"},
                {"user": "batch", "to": "replicas"},
                {"user": "audit", "table": "orders", "to": "r1"}
            ]}"#,
        )
        .expect("settings");
        s.validate().expect("valid");
        let ledger = s.text_matches("SELECT * FROM app.ledger_2026", &["app.ledger_2026".into()]);
        assert_eq!(
            s.rule_for(ledger, true, || "app".into()),
            Some(Target::Primary)
        );
        // A write on the ledger: the primary rule still applies.
        assert_eq!(
            s.rule_for(ledger, false, || "app".into()),
            Some(Target::Primary)
        );
        let report = s.text_matches("SELECT * FROM `report` WHERE id = ?", &["report".into()]);
        assert_eq!(
            s.rule_for(report, true, || "app".into()),
            Some(Target::Named("r2"))
        );
        assert_eq!(
            s.rule_for(report, false, || "app".into()),
            None,
            "a write: no replica rule"
        );
        let orders = s.text_matches("SELECT * FROM orders", &["orders".into()]);
        assert_eq!(
            s.rule_for(orders, true, || "batch".into()),
            Some(Target::Replicas)
        );
        assert_eq!(
            s.rule_for(orders, true, || "audit".into()),
            Some(Target::Named("r1"))
        );
        assert_eq!(s.rule_for(orders, true, || "app".into()), None);
        // No user rule among the candidates: the user is not asked.
        assert_eq!(
            s.rule_for(ledger & 1, true, || unreachable!("user asked")),
            Some(Target::Primary)
        );
        let bad: Settings =
            serde_json::from_str(r#"{"rules": [{"to": "primary"}]}"#).expect("parse");
        assert!(bad.validate().unwrap_err().contains("rules[0]"));
    }

    #[test]
    fn a_session_that_must_see_its_write_prefers_a_replica_that_has_it() {
        let s = Settings::default();
        let f = fleet();
        // The pick (1) has not applied the write, 2 has: 2.
        let only_2 = |i: usize| i == 2;
        assert_eq!(
            prefer_caught_up(&s, Choice::Replica(1), &f, only_2, (0, 1), load),
            Choice::Replica(2)
        );
        // None has: the pick stays (the host waits there, bounded).
        assert_eq!(
            prefer_caught_up(&s, Choice::Replica(1), &f, |_| false, (0, 1), load),
            Choice::Replica(1)
        );
        // The primary stays the primary; `eventual` keeps the pick.
        assert_eq!(
            prefer_caught_up(&s, Choice::Primary, &f, only_2, (0, 1), load),
            Choice::Primary
        );
        let eventual = Settings {
            consistency: Consistency::Eventual,
            ..Settings::default()
        };
        assert_eq!(
            prefer_caught_up(&eventual, Choice::Replica(1), &f, only_2, (0, 1), load),
            Choice::Replica(1)
        );
    }
}
