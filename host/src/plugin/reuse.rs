//! Decisions the host reuses. A guard that says its verdict carries to every statement of the
//! same digest (`safety.reach` in the WIT) is not called again for them, and a router that says
//! its route carries within the session (`routing.route-reach`) is not called again for the
//! session's statements of the same kind while the fleet and the session stay as they were: the
//! host answers from here, in tens of nanoseconds instead of a call into Wasm. Both belong to one
//! loaded policy, so a reload (new code or settings) starts empty.
//!
//! A verdict hit compares the digest itself, not only its hash, and the user when the verdict
//! read it; a route hit compares the connection id, the statement's class, fingerprints of the
//! session's facts and of the fleet's status, and the digest for a same-digest route.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_wit::guard::exports::sluice::policy::safety;
use sluice_wit::router::exports::sluice::policy::routing;

use crate::facts::{self, QueryFacts};
use crate::phase::{BackendStatus, RouteDecision, SessionInfo};

/// Verdicts kept at most; past it the cache starts over (the shapes in use come back at once).
const CAPACITY: usize = 4096;

/// One loaded guard's reusable verdicts, by digest (and user, for verdicts that read it).
#[derive(Default)]
pub struct VerdictCache {
    entries: RwLock<HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>>,
    /// Some verdict read the user: a miss on the digest alone looks for the user's entry.
    any_per_user: AtomicBool,
}

/// `user` is the keyed hash of the user for a verdict that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    digest_hash: u64,
    user: Option<u64>,
}

struct Entry {
    digest: Box<str>,
    user: Option<Box<str>>,
    max_length: u32,
    verdict: safety::Verdict,
}

/// The statement a verdict is looked up or remembered for.
#[derive(Clone, Copy)]
pub struct Shape<'a> {
    pub facts: &'a QueryFacts,
    pub length: usize,
    pub user: &'a str,
}

impl Shape<'_> {
    fn key(&self, per_user: bool) -> Key {
        Key {
            digest_hash: self.facts.digest_hash,
            user: per_user.then(|| facts::digest_hash(self.user)),
        }
    }

    fn fits(&self, e: &Entry) -> bool {
        *e.digest == *self.facts.digest
            && u32::try_from(self.length).is_ok_and(|n| n <= e.max_length)
            && e.user.as_deref().is_none_or(|u| u == self.user)
    }
}

impl VerdictCache {
    /// The verdict reused for `shape`, if one carries to it.
    pub fn get(&self, shape: Shape<'_>) -> Option<safety::Verdict> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.is_empty() {
            return None;
        }
        let found = |per_user: bool| {
            entries
                .get(&shape.key(per_user))
                .filter(|e| shape.fits(e))
                .map(|e| e.verdict.clone())
        };
        found(false).or_else(|| {
            self.any_per_user
                .load(Ordering::Relaxed)
                .then(|| found(true))
                .flatten()
        })
    }

    /// Remembers `verdict`, decided for `shape`, as far as `reach` carries it (a rewrite never
    /// carries: the policy produces its text).
    pub fn remember(
        &self,
        shape: Shape<'_>,
        verdict: &safety::Verdict,
        reach: Option<safety::Reach>,
    ) {
        let Some(reach) = reach else { return };
        if matches!(verdict, safety::Verdict::Rewrite(_)) {
            return;
        }
        let entry = Entry {
            digest: shape.facts.digest.as_str().into(),
            user: reach.per_user.then(|| shape.user.into()),
            max_length: reach.max_length,
            verdict: verdict.clone(),
        };
        if !shape.fits(&entry) {
            // A reach that does not even cover the statement it was given for.
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        if reach.per_user {
            self.any_per_user.store(true, Ordering::Relaxed);
        }
        entries.insert(shape.key(reach.per_user), entry);
    }
}

/// Route slots per router policy: sessions and statement classes beyond it share slots (a
/// shared slot holds the latest; the others miss and ask the router).
const ROUTE_SLOTS: usize = 4096;

/// One loaded router's reusable routes, a slot per session and statement class (and digest,
/// for same-digest routes).
pub struct RouteMemo {
    slots: Box<[std::sync::Mutex<Option<RouteEntry>>]>,
    /// Some route carried session-wide / per digest: which slots a lookup probes.
    any_session_wide: AtomicBool,
    any_same_digest: AtomicBool,
}

struct RouteEntry {
    connection_id: u32,
    class: u64,
    session: u64,
    fleet: u64,
    /// A same-digest route: the digest it was decided for.
    digest: Option<Box<str>>,
    decision: RouteDecision,
}

impl Default for RouteMemo {
    fn default() -> Self {
        Self {
            slots: (0..ROUTE_SLOTS)
                .map(|_| std::sync::Mutex::new(None))
                .collect(),
            any_session_wide: AtomicBool::new(false),
            any_same_digest: AtomicBool::new(false),
        }
    }
}

/// What a route is looked up or remembered for.
#[derive(Clone, Copy)]
pub struct RouteAsk<'a> {
    pub facts: &'a QueryFacts,
    pub session: &'a SessionInfo<'a>,
    pub fleet: &'a [BackendStatus],
}

impl RouteAsk<'_> {
    /// Hints and positions to see are never reused (a hint is not in the digest; caught-up
    /// changes with every write).
    fn reusable(&self) -> bool {
        self.facts.hints.is_empty() && self.session.required_position.is_none()
    }

    /// The facts a session-wide route may follow from.
    fn class(&self) -> u64 {
        let f = self.facts;
        (f.kind as u64)
            | u64::from(f.read_only) << 8
            | u64::from(f.locking_read) << 9
            | u64::from(f.multi_statement) << 10
    }

    fn session_print(&self) -> u64 {
        let s = self.session;
        let mut h = KeyHasher::default();
        h.write(s.user.as_bytes());
        h.write_u64(0xff);
        h.write(s.database.unwrap_or_default().as_bytes());
        h.write_u64(
            u64::from(s.database.is_some())
                | u64::from(s.in_transaction) << 1
                | u64::from(s.autocommit) << 2
                | u64::from(s.tls) << 3,
        );
        h.finish()
    }

    fn fleet_print(&self) -> u64 {
        let mut h = KeyHasher::default();
        for b in self.fleet {
            h.write(b.name.as_bytes());
            h.write_u64(
                u64::from(b.role == crate::config::Role::Primary)
                    | u64::from(b.healthy) << 1
                    | u64::from(b.lag_ms.is_some()) << 2
                    | u64::from(b.lag_ms.unwrap_or(0)) << 3
                    | u64::from(b.weight) << 35,
            );
        }
        h.finish()
    }

    fn slot(&self, class: u64, digest: Option<u64>) -> usize {
        let mut h = KeyHasher::default();
        h.write_u64(u64::from(self.session.connection_id));
        h.write_u64(class);
        if let Some(d) = digest {
            h.write_u64(d);
        }
        (h.finish() >> 20) as usize % ROUTE_SLOTS
    }
}

impl RouteMemo {
    /// The route reused for `ask`, if one carries to it.
    pub fn get(&self, ask: RouteAsk<'_>) -> Option<RouteDecision> {
        let (wide, by_digest) = (
            self.any_session_wide.load(Ordering::Relaxed),
            self.any_same_digest.load(Ordering::Relaxed),
        );
        if !(wide || by_digest) || !ask.reusable() {
            return None;
        }
        let class = ask.class();
        let (session, fleet) = (ask.session_print(), ask.fleet_print());
        let probe = |digest: Option<u64>| {
            let slot = self.slots[ask.slot(class, digest)]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.as_ref()
                .filter(|e| {
                    e.connection_id == ask.session.connection_id
                        && e.class == class
                        && e.session == session
                        && e.fleet == fleet
                        && e.digest.as_deref().map(str::as_bytes)
                            == digest.map(|_| ask.facts.digest.as_bytes())
                })
                .map(|e| e.decision.clone())
        };
        wide.then(|| probe(None)).flatten().or_else(|| {
            by_digest
                .then(|| probe(Some(ask.facts.digest_hash)))
                .flatten()
        })
    }

    /// Remembers `decision`, made for `ask`, as far as `reach` carries it.
    pub fn remember(
        &self,
        ask: RouteAsk<'_>,
        decision: &RouteDecision,
        reach: Option<routing::RouteReach>,
    ) {
        let Some(reach) = reach else { return };
        if !ask.reusable() {
            return;
        }
        let class = ask.class();
        let digest = reach.same_digest.then_some(ask.facts.digest_hash);
        let entry = RouteEntry {
            connection_id: ask.session.connection_id,
            class,
            session: ask.session_print(),
            fleet: ask.fleet_print(),
            digest: reach.same_digest.then(|| ask.facts.digest.as_str().into()),
            decision: decision.clone(),
        };
        *self.slots[ask.slot(class, digest)]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entry);
        let flag = if reach.same_digest {
            &self.any_same_digest
        } else {
            &self.any_session_wide
        };
        flag.store(true, Ordering::Relaxed);
    }
}

/// Keys are already keyed hashes (random per process): mixing them is enough.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(word) ^ (rest.len() as u64) << 59);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::analyze;

    fn reach(per_user: bool, max_length: u32) -> safety::Reach {
        safety::Reach {
            per_user,
            max_length,
        }
    }

    fn deny() -> safety::Verdict {
        safety::Verdict::Deny(safety::Denial {
            code: 1142,
            message: "no".into(),
        })
    }

    #[test]
    fn a_verdict_carries_to_the_same_shape_only() {
        let cache = VerdictCache::default();
        let a = analyze("SELECT * FROM t WHERE id = 1");
        let same_shape = analyze("select * from t where id = 2");
        let other = analyze("SELECT * FROM u WHERE id = 1");
        let at = |f| Shape {
            facts: f,
            length: 30,
            user: "app",
        };
        cache.remember(
            at(&a),
            &safety::Verdict::Allow,
            Some(reach(false, u32::MAX)),
        );
        assert!(matches!(
            cache.get(at(&same_shape)),
            Some(safety::Verdict::Allow)
        ));
        assert!(cache.get(at(&other)).is_none());
        // The same hash with another digest (a collision) is not a hit.
        let mut forged = other.clone();
        forged.digest_hash = a.digest_hash;
        assert!(cache.get(at(&forged)).is_none());
    }

    fn fleet(lag: u32) -> Vec<BackendStatus> {
        use crate::config::Role;
        vec![
            BackendStatus::idle("primary", Role::Primary, true, Some(0)),
            BackendStatus::idle("replica1", Role::Replica, true, Some(lag)),
        ]
    }

    #[test]
    fn a_route_carries_in_its_session_while_the_fleet_and_session_stay() {
        let memo = RouteMemo::default();
        let read = analyze("SELECT * FROM t WHERE id = 1");
        let other_read = analyze("SELECT name FROM u");
        let write = analyze("UPDATE t SET a = 1 WHERE id = 1");
        let hinted = analyze("SELECT /* sluice:route=primary */ 1");
        let s7 = SessionInfo::plain(7, "app");
        let f = fleet(10);
        let ask = |facts, session, fleet| RouteAsk {
            facts,
            session,
            fleet,
        };
        let wide = Some(routing::RouteReach { same_digest: false });
        memo.remember(ask(&read, &s7, &f), &RouteDecision::Backend(1), wide);
        assert_eq!(
            memo.get(ask(&other_read, &s7, &f)),
            Some(RouteDecision::Backend(1)),
            "another read of the session"
        );
        assert_eq!(memo.get(ask(&write, &s7, &f)), None, "another class");
        let s8 = SessionInfo::plain(8, "app");
        assert_eq!(memo.get(ask(&read, &s8, &f)), None, "another session");
        let lagged = fleet(11);
        assert_eq!(
            memo.get(ask(&read, &s7, &lagged)),
            None,
            "the fleet changed"
        );
        let in_txn = SessionInfo {
            in_transaction: true,
            ..s7.clone()
        };
        assert_eq!(
            memo.get(ask(&read, &in_txn, &f)),
            None,
            "the session changed"
        );
        let in_db = SessionInfo {
            database: Some("app"),
            ..s7.clone()
        };
        assert_eq!(memo.get(ask(&read, &in_db, &f)), None, "another schema");
        memo.remember(ask(&hinted, &s7, &f), &RouteDecision::Primary, wide);
        assert_eq!(
            memo.get(ask(&hinted, &s7, &f)),
            None,
            "hints are never reused"
        );
        // No reach: nothing kept.
        memo.remember(ask(&write, &s8, &f), &RouteDecision::Primary, None);
        assert_eq!(memo.get(ask(&write, &s8, &f)), None);
    }

    #[test]
    fn a_same_digest_route_carries_to_that_digest_only() {
        let memo = RouteMemo::default();
        let a = analyze("SELECT * FROM ledger WHERE id = 1");
        let same = analyze("SELECT * FROM ledger WHERE id = 2");
        let other = analyze("SELECT * FROM t WHERE id = 1");
        let s = SessionInfo::plain(3, "app");
        let f = fleet(0);
        let ask = |facts| RouteAsk {
            facts,
            session: &s,
            fleet: &f,
        };
        let by_digest = Some(routing::RouteReach { same_digest: true });
        memo.remember(ask(&a), &RouteDecision::Primary, by_digest);
        assert_eq!(memo.get(ask(&same)), Some(RouteDecision::Primary));
        assert_eq!(memo.get(ask(&other)), None);
        let mut forged = other.clone();
        forged.digest_hash = a.digest_hash;
        assert_eq!(
            memo.get(ask(&forged)),
            None,
            "a hash collision is not a hit"
        );
    }

    #[test]
    fn reach_by_user_and_length_is_kept() {
        let cache = VerdictCache::default();
        let f = analyze("DELETE FROM t WHERE id = 1");
        let shape = |user, length| Shape {
            facts: &f,
            length,
            user,
        };
        cache.remember(shape("ro", 26), &deny(), Some(reach(true, 100)));
        assert!(matches!(
            cache.get(shape("ro", 26)),
            Some(safety::Verdict::Deny(_))
        ));
        assert!(cache.get(shape("app", 26)).is_none(), "another user");
        assert!(
            cache.get(shape("ro", 101)).is_none(),
            "longer than the reach"
        );
        // A rewrite, and no reach at all, are never reused.
        let g = analyze("SELECT 1");
        let at = Shape {
            facts: &g,
            length: 8,
            user: "app",
        };
        cache.remember(
            at,
            &safety::Verdict::Rewrite("SELECT 2".into()),
            Some(reach(false, u32::MAX)),
        );
        cache.remember(at, &safety::Verdict::Allow, None);
        assert!(cache.get(at).is_none());
    }
}
