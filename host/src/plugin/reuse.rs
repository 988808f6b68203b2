//! Guard verdicts the host reuses. A guard that says its verdict carries to every statement of
//! the same digest (`safety.reach` in the WIT) is not called again for them: the host answers
//! from here, in tens of nanoseconds instead of a call into Wasm. The cache belongs to one loaded
//! policy, so a reload (new code or settings) starts empty.
//!
//! A hit compares the digest itself, not only its hash, and the user when the verdict read it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_wit::guard::exports::sluice::policy::safety;

use crate::facts::{self, QueryFacts};

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

/// Keys are already keyed hashes (random per process): mixing them is enough.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
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
