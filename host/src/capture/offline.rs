//! `sluice replay FILE --policies DIR --offline`: a candidate policy set run over a capture's
//! statements without a fleet, and what it decides differently from what was recorded: guard
//! verdicts (denied, reported, rewritten, allowed) and routes (primary or replica, or a named
//! backend), counted per digest with examples. The check to run before deploying a policy.
//!
//! Each statement is judged as the gateway would: text statements and prepares by the guards,
//! text statements and executes by the router, with the session's user, schema and transaction
//! state followed through the capture. Routes are compared where the router was asked when the
//! capture was made (the host decides some alone), as primary versus replica (which replica a
//! load-aware strategy picks depends on the moment) or by name when a backend was named. The
//! fleet is the capture's as it was when the capture started (health, replication lag), idle.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::format::{Capture, GuardOutcome, Route, What};
use crate::config::Role;
use crate::facts::{QueryFacts, StatementKind, analyze};
use crate::phase::{BackendStatus, Policy, RouteDecision, SessionInfo, Verdict};

/// Examples kept per difference.
const EXAMPLES: usize = 3;

/// One kind of change on one digest.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    pub digest: String,
    /// What was recorded, and what the candidate decides ("allow", "deny 1142 (guard)").
    pub recorded: String,
    pub candidate: String,
    pub count: u64,
    /// Statements (as recorded) it happened to, the first few.
    pub examples: Vec<String>,
}

/// What an offline evaluation found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OfflineReport {
    /// Statements judged (text statements, prepares and executes).
    pub statements: u64,
    /// Routes compared (statements the router was asked about).
    pub routes_compared: u64,
    pub guard: Vec<Difference>,
    pub routes: Vec<Difference>,
}

impl OfflineReport {
    pub fn changes(&self) -> u64 {
        self.guard.iter().chain(&self.routes).map(|d| d.count).sum()
    }

    /// The terminal report: a line per difference, most frequent first.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} statements judged, {} routes compared: {} decisions differ",
            self.statements,
            self.routes_compared,
            self.changes()
        );
        for (title, diffs) in [("guard", &self.guard), ("routes", &self.routes)] {
            if diffs.is_empty() {
                let _ = writeln!(out, "\n{title}: no change");
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for d in diffs {
                let _ = writeln!(
                    out,
                    "  {:>6} x {}  {} -> {}",
                    d.count, d.digest, d.recorded, d.candidate
                );
                for e in &d.examples {
                    let _ = writeln!(out, "           e.g. {}", shorten(e, 120));
                }
            }
        }
        out
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}...")
}

/// A session as the capture followed it.
#[derive(Default)]
struct Session {
    user: String,
    schema: Option<String>,
    client: String,
    tls: bool,
    in_transaction: bool,
    statements: HashMap<u32, (String, QueryFacts)>,
}

impl Session {
    fn info(&self, connection_id: u32) -> SessionInfo<'_> {
        SessionInfo {
            connection_id,
            user: &self.user,
            client_addr: &self.client,
            database: self.schema.as_deref(),
            in_transaction: self.in_transaction,
            autocommit: true,
            tls: self.tls,
            required_position: None,
        }
    }

    /// What a statement that ran does to the transaction state.
    fn ran(&mut self, facts: &QueryFacts) {
        if facts.starts_transaction.is_some() {
            self.in_transaction = true;
        } else if facts.kind == StatementKind::Transaction
            && (facts.digest.starts_with("COMMIT") || facts.digest.starts_with("ROLLBACK"))
        {
            self.in_transaction = false;
        }
    }
}

/// Differences grouped by (digest, recorded, candidate).
#[derive(Default)]
struct Tally {
    by_key: HashMap<(String, String, String), Difference>,
}

impl Tally {
    fn add(&mut self, digest: &str, recorded: String, candidate: String, example: &str) {
        let d = self
            .by_key
            .entry((digest.to_string(), recorded.clone(), candidate.clone()))
            .or_insert_with(|| Difference {
                digest: digest.to_string(),
                recorded,
                candidate,
                count: 0,
                examples: Vec::new(),
            });
        d.count += 1;
        if d.examples.len() < EXAMPLES {
            d.examples.push(example.to_string());
        }
    }

    fn sorted(self) -> Vec<Difference> {
        let mut v: Vec<Difference> = self.by_key.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.digest.cmp(&b.digest)));
        v
    }
}

/// Runs `policy` over `capture`.
pub fn evaluate(capture: &Capture, policy: &dyn Policy) -> OfflineReport {
    let fleet: Vec<BackendStatus> = capture
        .header
        .backends
        .iter()
        .map(|b| {
            let role = if b.role == "primary" {
                Role::Primary
            } else {
                Role::Replica
            };
            BackendStatus::idle(&b.name, role, b.healthy, b.lag_ms)
        })
        .collect();
    let mut sessions: HashMap<u32, Session> = HashMap::new();
    let (mut guard, mut routes) = (Tally::default(), Tally::default());
    let (mut statements, mut routes_compared) = (0u64, 0u64);
    for e in &capture.events {
        let s = sessions.entry(e.c).or_default();
        match &e.what {
            What::Connect {
                user,
                schema,
                client,
                tls,
            } => {
                *s = Session {
                    user: user.clone(),
                    schema: schema.clone(),
                    client: client.clone(),
                    tls: *tls,
                    ..Session::default()
                };
            }
            What::Query { sql, done } => {
                statements += 1;
                let facts = analyze(sql);
                let info = s.info(e.c);
                let verdict = policy.check(&facts, sql, &info);
                compare_guard(&mut guard, &facts, sql, &done.guard, &verdict);
                if let Some(recorded) = &done.route {
                    routes_compared += 1;
                    let decided = route_of(&policy.route(&facts, &info, &fleet), &fleet);
                    compare_route(&mut routes, &facts, sql, recorded, &decided);
                }
                if done.error.is_none() {
                    s.ran(&facts);
                }
            }
            What::Prepare { stmt, sql, done } => {
                statements += 1;
                let facts = analyze(sql);
                let verdict = policy.check(&facts, sql, &s.info(e.c));
                compare_guard(&mut guard, &facts, sql, &done.guard, &verdict);
                if let Some(id) = stmt {
                    s.statements.insert(*id, (sql.clone(), facts));
                }
            }
            What::Execute { stmt, done, .. } => {
                statements += 1;
                let Some((sql, facts)) = s.statements.get(stmt) else {
                    continue;
                };
                if let Some(recorded) = &done.route {
                    routes_compared += 1;
                    let decided = route_of(&policy.route(facts, &s.info(e.c), &fleet), &fleet);
                    compare_route(&mut routes, facts, sql, recorded, &decided);
                }
                let facts = facts.clone();
                if done.error.is_none() {
                    s.ran(&facts);
                }
            }
            What::CloseStatement { stmt } => {
                s.statements.remove(stmt);
            }
            What::InitDb { schema } => s.schema = Some(schema.clone()),
            What::ChangeUser { user, schema } => {
                s.user.clone_from(user);
                s.schema.clone_from(schema);
                s.in_transaction = false;
                s.statements.clear();
            }
            What::Reset => {
                s.in_transaction = false;
                s.statements.clear();
            }
            What::Quit => {
                sessions.remove(&e.c);
            }
            What::End { .. } => {}
        }
    }
    OfflineReport {
        statements,
        routes_compared,
        guard: guard.sorted(),
        routes: routes.sorted(),
    }
}

fn compare_guard(
    tally: &mut Tally,
    facts: &QueryFacts,
    sql: &str,
    recorded: &GuardOutcome,
    verdict: &Verdict,
) {
    let (was, now) = (guard_label(recorded), verdict_label(verdict));
    if was != now {
        tally.add(&facts.digest, was, now, sql);
    }
}

fn guard_label(g: &GuardOutcome) -> String {
    match g {
        GuardOutcome::Allow => "allow".into(),
        GuardOutcome::Deny { policy, code } => format!("deny {code} ({policy})"),
        GuardOutcome::Report { policy, code } => format!("report {code} ({policy})"),
        GuardOutcome::Rewrite => "rewrite".into(),
    }
}

fn verdict_label(v: &Verdict) -> String {
    match v {
        Verdict::Allow => "allow".into(),
        Verdict::Deny { policy, code, .. } => format!("deny {code} ({policy})"),
        Verdict::Report { policy, code, .. } => format!("report {code} ({policy})"),
        Verdict::Rewrite(_) => "rewrite".into(),
    }
}

fn route_of(d: &RouteDecision, fleet: &[BackendStatus]) -> Route {
    match d {
        RouteDecision::Primary => Route::Primary,
        RouteDecision::Backend(i) => match fleet.get(*i) {
            Some(b) if b.role == Role::Replica => Route::Replica {
                backend: b.name.to_string(),
            },
            _ => Route::Primary,
        },
        RouteDecision::Named(n) => Route::Named { backend: n.clone() },
    }
}

/// The same decision, as far as a route can be compared offline.
fn same_route(a: &Route, b: &Route) -> bool {
    match (a, b) {
        (Route::Primary, Route::Primary) | (Route::Replica { .. }, Route::Replica { .. }) => true,
        (
            Route::Named { backend: x },
            Route::Named { backend: y } | Route::Replica { backend: y },
        )
        | (Route::Replica { backend: y }, Route::Named { backend: x }) => x == y,
        _ => false,
    }
}

fn route_label(r: &Route) -> String {
    match r {
        Route::Primary => "primary".into(),
        Route::Replica { .. } => "a replica".into(),
        Route::Named { backend } => format!("named {backend}"),
    }
}

fn compare_route(tally: &mut Tally, facts: &QueryFacts, sql: &str, recorded: &Route, now: &Route) {
    if !same_route(recorded, now) {
        tally.add(&facts.digest, route_label(recorded), route_label(now), sql);
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{BackendInfo, Done, Event, FORMAT, Header, VERSION};
    use super::*;
    use crate::config::Config;
    use crate::phase::ConfigPolicy;

    fn capture(events: Vec<Event>) -> Capture {
        Capture {
            header: Header {
                format: FORMAT.into(),
                version: VERSION,
                sluice: "test".into(),
                started_unix_ms: 0,
                redacted: false,
                backends: vec![
                    BackendInfo {
                        name: "primary".into(),
                        role: "primary".into(),
                        healthy: true,
                        lag_ms: Some(0),
                    },
                    BackendInfo {
                        name: "replica1".into(),
                        role: "replica".into(),
                        healthy: true,
                        lag_ms: Some(0),
                    },
                ],
            },
            events,
        }
    }

    fn query(c: u32, sql: &str, route: Option<Route>) -> Event {
        Event {
            t: 0,
            c,
            what: What::Query {
                sql: sql.into(),
                done: Done {
                    route,
                    ..Done::default()
                },
            },
        }
    }

    #[test]
    fn routes_that_change_role_are_listed_per_digest_and_same_role_picks_are_not() {
        // The built-in split without read-write splitting: everything to the primary.
        let policy = ConfigPolicy::new(
            Config::from_toml(
                "[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\n",
            )
            .expect("config"),
        );
        let replica = || {
            Some(Route::Replica {
                backend: "replica1".into(),
            })
        };
        let cap = capture(vec![
            Event {
                t: 0,
                c: 1,
                what: What::Connect {
                    user: "app".into(),
                    schema: None,
                    client: "127.0.0.1".into(),
                    tls: false,
                },
            },
            query(1, "SELECT c FROM t WHERE id = 1", replica()),
            query(1, "SELECT c FROM t WHERE id = 2", replica()),
            query(1, "UPDATE t SET c = 1 WHERE id = 1", Some(Route::Primary)),
            query(1, "SELECT 1", None),
        ]);
        let r = evaluate(&cap, &policy);
        assert_eq!((r.statements, r.routes_compared), (4, 3));
        assert!(r.guard.is_empty());
        assert_eq!(r.routes.len(), 1, "{r:?}");
        let d = &r.routes[0];
        assert_eq!(
            (d.recorded.as_str(), d.candidate.as_str(), d.count),
            ("a replica", "primary", 2)
        );
        assert_eq!(d.examples.len(), 2);
        assert!(r.table().contains("a replica -> primary"));
    }
}
