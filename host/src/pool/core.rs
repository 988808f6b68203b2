//! The pool's synchronous core: which connection a borrower gets, who waits and in which order,
//! and what is closed and why. No I/O and no clock of its own: the async shell
//! ([`super::backend`]) passes the time in and does the connecting, pinging and closing, so the
//! rules are tested here without a network (and a simulator can drive them).
//!
//! Invariants: a connection is idle, in use, or being opened (`opening`), and the three never add
//! up to more than `max`. Waiters are served strictly first come, first served: a newcomer never
//! overtakes a waiter, and a returned connection goes to the head of the line (or, when the head
//! runs as another account, is closed so the head may open one of its own).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Account;

/// Sizes and times of one backend's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// Connections kept open at least (warmed by the shell's maintenance).
    pub min: usize,
    /// Connections open at most, all accounts together.
    pub max: usize,
    /// An idle connection above `min` is closed after this long unused.
    pub idle_timeout: Duration,
    /// Any connection is closed once it is this old (when it is next idle).
    pub max_lifetime: Duration,
    /// A connection idle for longer is pinged before it is lent.
    pub validate_after: Duration,
}

/// A connection with what the pool knows of it.
#[derive(Debug)]
pub struct Pooled<C> {
    pub conn: C,
    pub account: Arc<Account>,
    /// The backend's generation when the connection was opened.
    pub generation: u64,
    pub created: Instant,
    pub last_used: Instant,
}

/// Why the pool closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Unused for `idle-timeout-secs` while above `pool-min`.
    IdleTimeout,
    /// Older than `max-lifetime-secs`.
    Lifetime,
    /// Opened before the backend went down (an older generation).
    Stale,
    /// Given back in an unknown state (a lost connection, a failed reset).
    Broken,
    /// The backend is draining.
    Drained,
    /// Failed its ping before being lent.
    Validation,
    /// Made room for a connection of another account.
    Evicted,
    /// Above a `pool-max` a reload lowered.
    Resized,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::Lifetime => "lifetime",
            Self::Stale => "stale",
            Self::Broken => "broken",
            Self::Drained => "drained",
            Self::Validation => "validation",
            Self::Evicted => "evicted",
            Self::Resized => "resized",
        }
    }

    pub const ALL: [CloseReason; 8] = [
        Self::IdleTimeout,
        Self::Lifetime,
        Self::Stale,
        Self::Broken,
        Self::Drained,
        Self::Validation,
        Self::Evicted,
        Self::Resized,
    ];
}

/// What a borrower gets.
#[derive(Debug)]
pub enum Take<C> {
    /// An idle connection of its account; ping it first when `validate`.
    Ready { conn: Pooled<C>, validate: bool },
    /// A slot is reserved for a new connection; close `evict` (an idle connection of another
    /// account) to make room for it.
    Open { evict: Option<Pooled<C>> },
    /// Every slot is taken: wait in line ([`PoolCore::enqueue`]).
    Wait,
    /// The backend is draining: no new borrows.
    Draining,
}

/// What becomes of a connection given back.
#[derive(Debug)]
pub enum Put<C, W> {
    /// Kept idle.
    Idle,
    /// Lent at once to the waiter at the head of the line.
    Handoff(W, Pooled<C>),
    /// To be closed; `permit` is a waiter that may open a connection in the freed slot.
    Close {
        conn: Pooled<C>,
        reason: CloseReason,
        permit: Option<W>,
    },
}

struct Waiter<W> {
    id: u64,
    account: Arc<Account>,
    token: W,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub created: u64,
    /// Closed, by [`CloseReason`] (in the order of [`CloseReason::ALL`]).
    pub closed: [u64; 8],
    /// Borrowers that had to wait in line.
    pub waited: u64,
    /// Borrowers that gave up waiting (acquire timeout).
    pub timeouts: u64,
    /// Connections that failed their ping before being lent.
    pub validation_failures: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
}

/// The pool's state at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub in_use: usize,
    pub idle: usize,
    pub opening: usize,
    pub waiting: usize,
    pub max: usize,
    pub generation: u64,
    pub draining: bool,
    pub counters: PoolCounters,
}

impl PoolCounts {
    /// Connections open or being opened.
    pub fn open(&self) -> usize {
        self.in_use + self.idle + self.opening
    }
}

/// One backend's pool, without I/O. `C` is the connection, `W` what wakes a waiter.
pub struct PoolCore<C, W> {
    limits: PoolLimits,
    /// Oldest-returned first; lending takes from the back, so few connections stay hot and the
    /// cold ones at the front time out.
    idle: Vec<Pooled<C>>,
    in_use: usize,
    opening: usize,
    waiters: VecDeque<Waiter<W>>,
    next_waiter: u64,
    generation: u64,
    /// Idle connections last used before this are pinged before they are lent.
    suspect_before: Option<Instant>,
    draining: bool,
    counters: PoolCounters,
}

impl<C, W> PoolCore<C, W> {
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            limits,
            idle: Vec::new(),
            in_use: 0,
            opening: 0,
            waiters: VecDeque::new(),
            next_waiter: 0,
            generation: 0,
            suspect_before: None,
            draining: false,
            counters: PoolCounters::default(),
        }
    }

    fn open(&self) -> usize {
        self.in_use + self.idle.len() + self.opening
    }

    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            in_use: self.in_use,
            idle: self.idle.len(),
            opening: self.opening,
            waiting: self.waiters.len(),
            max: self.limits.max,
            generation: self.generation,
            draining: self.draining,
            counters: self.counters,
        }
    }

    fn count_close(&mut self, reason: CloseReason) {
        if let Some(i) = CloseReason::ALL.iter().position(|r| *r == reason) {
            self.counters.closed[i] += 1;
        }
    }

    /// A connection for `account`, a slot to open one in, or the line.
    pub fn take(&mut self, account: &Arc<Account>, now: Instant) -> Take<C> {
        if self.draining {
            return Take::Draining;
        }
        if !self.waiters.is_empty() {
            return Take::Wait;
        }
        if let Some(i) = self.idle.iter().rposition(|p| p.account == *account) {
            let conn = self.idle.remove(i);
            self.in_use += 1;
            let validate = now.saturating_duration_since(conn.last_used)
                >= self.limits.validate_after
                || self.suspect_before.is_some_and(|t| conn.last_used < t);
            return Take::Ready { conn, validate };
        }
        if self.open() < self.limits.max {
            self.opening += 1;
            return Take::Open { evict: None };
        }
        if !self.idle.is_empty() {
            // Full, but of idle connections of other accounts: the oldest makes room.
            let evict = self.idle.remove(0);
            self.count_close(CloseReason::Evicted);
            self.opening += 1;
            return Take::Open { evict: Some(evict) };
        }
        Take::Wait
    }

    /// Puts a borrower in line; the id cancels its wait.
    pub fn enqueue(&mut self, account: Arc<Account>, token: W) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.counters.waited += 1;
        self.waiters.push_back(Waiter { id, account, token });
        id
    }

    /// A waiter gives up (its acquire timeout). False: it was already served, and what it was
    /// given is on its way.
    pub fn cancel(&mut self, id: u64) -> bool {
        match self.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                self.waiters.remove(i);
                self.counters.timeouts += 1;
                true
            }
            None => false,
        }
    }

    /// A connection was opened in a reserved slot: it is lent to the one who opened it.
    pub fn opened(&mut self, conn: C, account: Arc<Account>, now: Instant) -> Pooled<C> {
        self.opening -= 1;
        self.in_use += 1;
        self.counters.created += 1;
        Pooled {
            conn,
            account,
            generation: self.generation,
            created: now,
            last_used: now,
        }
    }

    /// A reserved slot was not used (the connect failed, or its holder went away): the next
    /// waiter may open a connection in it.
    pub fn slot_unused(&mut self, connect_failed: bool) -> Option<W> {
        self.opening -= 1;
        if connect_failed {
            self.counters.connect_failures += 1;
        }
        self.next_permit()
    }

    /// The head of the line, given a slot to open a connection in, when one is free.
    fn next_permit(&mut self) -> Option<W> {
        if self.draining || self.open() >= self.limits.max {
            return None;
        }
        let w = self.waiters.pop_front()?;
        self.opening += 1;
        Some(w.token)
    }

    /// A lent connection comes back; `reusable` is false when its state is unknown.
    pub fn put(&mut self, mut conn: Pooled<C>, reusable: bool, now: Instant) -> Put<C, W> {
        self.in_use -= 1;
        let reason = if !reusable {
            Some(CloseReason::Broken)
        } else if conn.generation != self.generation {
            Some(CloseReason::Stale)
        } else if self.draining {
            Some(CloseReason::Drained)
        } else if now.saturating_duration_since(conn.created) >= self.limits.max_lifetime {
            Some(CloseReason::Lifetime)
        } else if self.open() >= self.limits.max && self.waiters.is_empty() {
            // Above a lowered `pool-max` (this one is no longer counted in `open`).
            Some(CloseReason::Resized)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.count_close(reason);
            let permit = self.next_permit();
            return Put::Close {
                conn,
                reason,
                permit,
            };
        }
        conn.last_used = now;
        match self.waiters.pop_front() {
            Some(w) if w.account == conn.account => {
                self.in_use += 1;
                Put::Handoff(w.token, conn)
            }
            Some(w) => {
                // The head runs as another account: this connection makes room for its own.
                self.count_close(CloseReason::Evicted);
                self.opening += 1;
                Put::Close {
                    conn,
                    reason: CloseReason::Evicted,
                    permit: Some(w.token),
                }
            }
            None => {
                self.idle.push(conn);
                Put::Idle
            }
        }
    }

    /// A lent connection failed its ping: it is closed, and its slot may serve the line.
    pub fn failed_validation(&mut self) -> Option<W> {
        self.in_use -= 1;
        self.counters.validation_failures += 1;
        self.count_close(CloseReason::Validation);
        self.next_permit()
    }

    /// Idle connections due to close at `now`: too old, of an older generation, or unused for
    /// the idle timeout while the pool is above its minimum.
    pub fn close_idle(&mut self, now: Instant) -> Vec<Pooled<C>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.idle.len() {
            let p = &self.idle[i];
            let reason = if p.generation != self.generation {
                Some(CloseReason::Stale)
            } else if now.saturating_duration_since(p.created) >= self.limits.max_lifetime {
                Some(CloseReason::Lifetime)
            } else if now.saturating_duration_since(p.last_used) >= self.limits.idle_timeout
                && self.open() > self.limits.min
            {
                Some(CloseReason::IdleTimeout)
            } else {
                None
            };
            match reason {
                Some(r) => {
                    self.count_close(r);
                    out.push(self.idle.remove(i));
                }
                None => i += 1,
            }
        }
        out
    }

    /// Reserves a slot to open a warm connection in, when the pool is below its minimum.
    pub fn reserve_warm(&mut self) -> bool {
        if self.draining || !self.waiters.is_empty() || self.open() >= self.limits.min {
            return false;
        }
        self.opening += 1;
        true
    }

    /// The backend went down (or restarted): every connection opened before is stale. Idle ones
    /// are returned to close now; lent ones close when they come back.
    pub fn new_generation(&mut self) -> Vec<Pooled<C>> {
        self.generation += 1;
        let stale = std::mem::take(&mut self.idle);
        for _ in &stale {
            self.count_close(CloseReason::Stale);
        }
        stale
    }

    /// A connection to the backend was lost: ping every idle connection before it is lent again.
    pub fn suspect(&mut self, now: Instant) {
        self.suspect_before = Some(now);
    }

    /// Starts draining: no new borrows; idle connections are returned to close and waiters to
    /// turn away. Lent connections close as they come back.
    pub fn drain(&mut self) -> (Vec<Pooled<C>>, Vec<W>) {
        self.draining = true;
        let idle = std::mem::take(&mut self.idle);
        for _ in &idle {
            self.count_close(CloseReason::Drained);
        }
        let waiters = self.waiters.drain(..).map(|w| w.token).collect();
        (idle, waiters)
    }

    /// New limits (a reload): idle connections above a lowered maximum are returned to close;
    /// waiters that a raised maximum makes room for are returned with a slot each. Lent
    /// connections above the maximum close as they come back.
    pub fn resize(&mut self, limits: PoolLimits) -> (Vec<Pooled<C>>, Vec<W>) {
        self.limits = limits;
        let mut excess = Vec::new();
        while self.open() > self.limits.max && !self.idle.is_empty() {
            self.count_close(CloseReason::Resized);
            excess.push(self.idle.remove(0));
        }
        let mut permits = Vec::new();
        while let Some(w) = self.next_permit() {
            permits.push(w);
        }
        (excess, permits)
    }

    pub fn undrain(&mut self) {
        self.draining = false;
    }

    /// Connections open or being opened.
    #[cfg(test)]
    fn total(&self) -> usize {
        self.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PoolLimits = PoolLimits {
        min: 0,
        max: 2,
        idle_timeout: Duration::from_mins(1),
        max_lifetime: Duration::from_hours(1),
        validate_after: Duration::from_secs(1),
    };

    fn account(user: &str) -> Arc<Account> {
        Arc::new(Account {
            user: user.into(),
            password: "pw".into(),
            found_rows: false,
        })
    }

    /// Takes a connection for `a`, opening one when the core says so.
    fn lend(core: &mut PoolCore<u32, &'static str>, a: &Arc<Account>, now: Instant) -> Pooled<u32> {
        match core.take(a, now) {
            Take::Ready { conn, .. } => conn,
            Take::Open { evict: None } => core.opened(7, Arc::clone(a), now),
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    #[test]
    fn waiters_are_served_in_order_and_never_overtaken() {
        let now = Instant::now();
        let mut core = PoolCore::new(LIMITS);
        let a = account("a");
        let c1 = lend(&mut core, &a, now);
        let _c2 = lend(&mut core, &a, now);
        assert!(matches!(core.take(&a, now), Take::Wait));
        core.enqueue(Arc::clone(&a), "first");
        core.enqueue(Arc::clone(&a), "second");
        // A newcomer queues behind them even when a connection comes back at this moment.
        match core.put(c1, true, now) {
            Put::Handoff(w, _) => assert_eq!(w, "first"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(core.take(&a, now), Take::Wait));
        assert_eq!(core.counts().waiting, 1);
        assert_eq!(core.counts().in_use, 2);
    }

    #[test]
    fn a_cancelled_waiter_leaves_the_line() {
        let now = Instant::now();
        let mut core = PoolCore::new(LIMITS);
        let a = account("a");
        let c1 = lend(&mut core, &a, now);
        let _c2 = lend(&mut core, &a, now);
        let id = core.enqueue(Arc::clone(&a), "gone");
        core.enqueue(Arc::clone(&a), "stays");
        assert!(core.cancel(id));
        assert!(!core.cancel(id));
        assert_eq!(core.counts().counters.timeouts, 1);
        assert!(matches!(core.put(c1, true, now), Put::Handoff("stays", _)));
    }

    #[test]
    fn the_head_of_another_account_gets_the_slot() {
        let now = Instant::now();
        let mut core = PoolCore::new(LIMITS);
        let (a, b) = (account("a"), account("b"));
        let c1 = lend(&mut core, &a, now);
        let _c2 = lend(&mut core, &a, now);
        core.enqueue(Arc::clone(&b), "b");
        match core.put(c1, true, now) {
            Put::Close {
                reason: CloseReason::Evicted,
                permit: Some("b"),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let c = core.opened(9, Arc::clone(&b), now);
        assert_eq!(c.account, b);
        assert_eq!(core.total(), 2);
    }

    #[test]
    fn idle_connections_of_another_account_make_room() {
        let now = Instant::now();
        let mut core: PoolCore<u32, ()> = PoolCore::new(LIMITS);
        let (a, b) = (account("a"), account("b"));
        let c1 = lend_unit(&mut core, &a, now);
        let c2 = lend_unit(&mut core, &a, now);
        core.put(c1, true, now);
        core.put(c2, true, now);
        assert!(matches!(core.take(&b, now), Take::Open { evict: Some(_) }));
        assert_eq!(core.total(), 2);
    }

    fn lend_unit(core: &mut PoolCore<u32, ()>, a: &Arc<Account>, now: Instant) -> Pooled<u32> {
        match core.take(a, now) {
            Take::Ready { conn, .. } => conn,
            Take::Open { evict: None } => core.opened(1, Arc::clone(a), now),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_generation_closes_what_was_open_before() {
        let now = Instant::now();
        let mut core: PoolCore<u32, ()> = PoolCore::new(LIMITS);
        let a = account("a");
        let lent = lend_unit(&mut core, &a, now);
        let idle = lend_unit(&mut core, &a, now);
        core.put(idle, true, now);
        let closed = core.new_generation();
        assert_eq!(closed.len(), 1);
        assert!(matches!(
            core.put(lent, true, now),
            Put::Close {
                reason: CloseReason::Stale,
                ..
            }
        ));
        // Nothing of the old generation is lent again.
        assert!(matches!(core.take(&a, now), Take::Open { evict: None }));
        let c = core.opened(2, Arc::clone(&a), now);
        assert_eq!(c.generation, 1);
    }

    #[test]
    fn long_idle_and_suspect_connections_are_validated() {
        let t0 = Instant::now();
        let mut core: PoolCore<u32, ()> = PoolCore::new(LIMITS);
        let a = account("a");
        let c = lend_unit(&mut core, &a, t0);
        core.put(c, true, t0);
        let c = match core.take(&a, t0 + Duration::from_millis(10)) {
            Take::Ready {
                conn,
                validate: false,
            } => conn,
            other => panic!("{other:?}"),
        };
        core.put(c, true, t0);
        let c = match core.take(&a, t0 + Duration::from_secs(2)) {
            Take::Ready {
                conn,
                validate: true,
            } => conn,
            other => panic!("{other:?}"),
        };
        core.put(c, true, t0);
        core.suspect(t0 + Duration::from_millis(1));
        assert!(matches!(
            core.take(&a, t0 + Duration::from_millis(2)),
            Take::Ready { validate: true, .. }
        ));
    }

    #[test]
    fn idle_timeout_keeps_the_minimum_and_lifetime_does_not() {
        let t0 = Instant::now();
        let limits = PoolLimits {
            min: 1,
            max: 3,
            ..LIMITS
        };
        let mut core: PoolCore<u32, ()> = PoolCore::new(limits);
        let a = account("a");
        let c1 = lend_unit(&mut core, &a, t0);
        let c2 = lend_unit(&mut core, &a, t0);
        core.put(c1, true, t0);
        core.put(c2, true, t0);
        assert!(core.close_idle(t0 + Duration::from_secs(1)).is_empty());
        let closed = core.close_idle(t0 + Duration::from_secs(61));
        assert_eq!(closed.len(), 1, "one is kept: pool-min");
        let closed = core.close_idle(t0 + Duration::from_secs(3601));
        assert_eq!(closed.len(), 1, "past its lifetime even below pool-min");
        let c = core.counts().counters;
        assert_eq!(c.closed[0], 1); // idle_timeout
        assert_eq!(c.closed[1], 1); // lifetime
        assert!(core.reserve_warm());
        assert!(!core.reserve_warm());
    }

    #[test]
    fn a_resize_closes_above_a_lower_max_and_serves_the_line_below_a_higher_one() {
        let now = Instant::now();
        let mut core = PoolCore::new(PoolLimits { max: 3, ..LIMITS });
        let a = account("a");
        let lent: Vec<_> = (0..3).map(|_| lend(&mut core, &a, now)).collect();
        let mut lent = lent.into_iter();
        let (c1, c2, c3) = (lent.next(), lent.next(), lent.next());
        core.put(c1.expect("c1"), true, now);
        // Max 1: the idle one closes now, one lent one as it comes back, the last stays.
        let (excess, permits) = core.resize(PoolLimits { max: 1, ..LIMITS });
        assert_eq!((excess.len(), permits.len()), (1, 0));
        assert!(matches!(
            core.put(c2.expect("c2"), true, now),
            Put::Close {
                reason: CloseReason::Resized,
                ..
            }
        ));
        assert!(matches!(core.take(&a, now), Take::Wait));
        core.enqueue(Arc::clone(&a), "w1");
        core.enqueue(Arc::clone(&a), "w2");
        // Max 3 again: two slots free, the two waiters get them in order.
        let (excess, permits) = core.resize(PoolLimits { max: 3, ..LIMITS });
        assert_eq!((excess.len(), permits), (0, vec!["w1", "w2"]));
        assert!(matches!(core.put(c3.expect("c3"), true, now), Put::Idle));
        assert_eq!(core.total(), 3);
    }

    #[test]
    fn draining_refuses_borrows_and_closes_what_comes_back() {
        let now = Instant::now();
        let mut core = PoolCore::new(LIMITS);
        let a = account("a");
        let c1 = lend(&mut core, &a, now);
        let c2 = lend(&mut core, &a, now);
        core.put(c2, true, now);
        core.enqueue(Arc::clone(&a), "w");
        // (A waiter with an idle connection cannot happen; drain turns both away.)
        let (idle, waiters) = core.drain();
        assert_eq!((idle.len(), waiters), (1, vec!["w"]));
        assert!(matches!(core.take(&a, now), Take::Draining));
        assert!(matches!(
            core.put(c1, true, now),
            Put::Close {
                reason: CloseReason::Drained,
                permit: None,
                ..
            }
        ));
        assert_eq!(core.total(), 0);
        core.undrain();
        assert!(matches!(core.take(&a, now), Take::Open { .. }));
    }

    #[test]
    fn a_failed_connect_passes_its_slot_on() {
        let now = Instant::now();
        let mut core: PoolCore<u32, &str> = PoolCore::new(PoolLimits { max: 1, ..LIMITS });
        let a = account("a");
        assert!(matches!(core.take(&a, now), Take::Open { evict: None }));
        core.enqueue(Arc::clone(&a), "next");
        assert_eq!(core.slot_unused(true), Some("next"));
        assert_eq!(core.counts().opening, 1);
        assert_eq!(core.counts().counters.connect_failures, 1);
        assert_eq!(core.slot_unused(false), None);
        assert_eq!(core.total(), 0);
    }
}
