//! What a backend is doing now, for load-aware routing: statements in flight and three latency
//! estimates, kept lock-free on the data path (a few relaxed atomics and two clock reads per
//! statement) and read by routers through `fleet.load`.
//!
//! - `service`: an EWMA of the time from sending a statement to its first response packet. MySQL
//!   reports no service time, so this stands in for it (the server's work, before streaming).
//! - `response`: an EWMA of the time from sending to the last packet relayed to the client.
//! - `peak`: Finagle's peak-EWMA of the response time: a slower sample replaces the estimate at
//!   once, faster ones pull it down with a time constant of [`PEAK_DECAY`], and so does time
//!   without samples (an idle backend becomes attractive again).
//!
//! Concurrent updates race benignly: a lost sample changes an estimate by at most one step.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::phase::BackendLoad;

/// The weight of a new sample in the `service` and `response` EWMAs (about the last ten).
const ALPHA: f64 = 0.1;

/// The peak-EWMA's time constant (Finagle's and linkerd's default).
pub const PEAK_DECAY: Duration = Duration::from_secs(10);

/// A backend's live load.
#[derive(Debug)]
pub struct LoadStats {
    born: Instant,
    in_flight: AtomicU32,
    /// f64 microseconds, as bits.
    service_us: AtomicU64,
    response_us: AtomicU64,
    peak_us: AtomicU64,
    /// When `peak_us` was last updated, nanoseconds since `born`.
    peak_at_ns: AtomicU64,
}

impl Default for LoadStats {
    fn default() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            service_us: AtomicU64::new(0),
            response_us: AtomicU64::new(0),
            peak_us: AtomicU64::new(0),
            peak_at_ns: AtomicU64::new(0),
        }
    }
}

impl LoadStats {
    /// A statement is sent: it counts as in flight until the guard drops.
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: self,
            sent: Instant::now(),
            answered: false,
        }
    }

    /// The estimates now (the peak decayed to `now`).
    pub fn snapshot(&self, now: Instant) -> BackendLoad {
        self.snapshot_at(self.nanos(now))
    }

    /// The estimates at `now_ns` nanoseconds on this estimate's own clock (the simulator's
    /// virtual time; the gateway's is nanoseconds since the pool was made).
    pub fn snapshot_at(&self, now_ns: u64) -> BackendLoad {
        let us = |a: &AtomicU64| clamp_us(f64::from_bits(a.load(Ordering::Relaxed)));
        let peak = f64::from_bits(self.peak_us.load(Ordering::Relaxed));
        let at = self.peak_at_ns.load(Ordering::Relaxed);
        let peak = peak * decay(now_ns.saturating_sub(at));
        BackendLoad {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            service_ewma_us: us(&self.service_us),
            response_ewma_us: us(&self.response_us),
            peak_ewma_us: clamp_us(peak),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    fn sample_service(&self, us: f64) {
        ewma(&self.service_us, us);
    }

    fn sample_response(&self, us: f64, now: Instant) {
        self.sample_response_at(us, self.nanos(now));
    }

    /// A statement sent at a time the caller keeps: it counts as in flight until
    /// [`Self::finished_at`] (the simulator's requests; the gateway's use [`Self::begin`]).
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A statement started with [`Self::started`] ended at `now_ns`, having taken `service_us`
    /// to its first response and `response_us` in all.
    pub fn finished_at(&self, service_us: f64, response_us: f64, now_ns: u64) {
        self.sample_service(service_us);
        self.sample_response_at(response_us, now_ns);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A statement started with [`Self::started`] failed without an answer: no sample.
    pub fn abandoned(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn sample_response_at(&self, us: f64, now_ns: u64) {
        ewma(&self.response_us, us);
        let at = self.peak_at_ns.swap(now_ns, Ordering::Relaxed);
        let old = f64::from_bits(self.peak_us.load(Ordering::Relaxed));
        let new = if us > old {
            us
        } else {
            let w = decay(now_ns.saturating_sub(at));
            old * w + us * (1.0 - w)
        };
        self.peak_us.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// The part of a peak estimate left after `ns` nanoseconds.
fn decay(ns: u64) -> f64 {
    (-(ns as f64) / PEAK_DECAY.as_nanos() as f64).exp()
}

fn ewma(a: &AtomicU64, sample: f64) {
    let old = f64::from_bits(a.load(Ordering::Relaxed));
    let new = if old == 0.0 {
        sample
    } else {
        old + ALPHA * (sample - old)
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

fn clamp_us(us: f64) -> u32 {
    if us.is_finite() && us > 0.0 {
        us.min(f64::from(u32::MAX)).round() as u32
    } else {
        0
    }
}

/// A statement in flight on a backend; dropping it ends it (and samples its response time).
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a LoadStats,
    sent: Instant,
    answered: bool,
}

impl InFlight<'_> {
    /// The first response packet arrived: samples the service time.
    pub fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            self.stats
                .sample_service(self.sent.elapsed().as_secs_f64() * 1e6);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let us = now.saturating_duration_since(self.sent).as_secs_f64() * 1e6;
        if !self.answered {
            self.stats.sample_service(us);
        }
        self.stats.sample_response(us, now);
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_statements_until_they_end() {
        let s = LoadStats::default();
        let a = s.begin();
        let b = s.begin();
        assert_eq!(s.snapshot(Instant::now()).in_flight, 2);
        drop(a);
        assert_eq!(s.snapshot(Instant::now()).in_flight, 1);
        drop(b);
        assert_eq!(s.snapshot(Instant::now()).in_flight, 0);
    }

    #[test]
    fn the_peak_jumps_to_a_slow_sample_and_decays_with_time() {
        let s = LoadStats::default();
        let t0 = s.born;
        s.sample_response(100.0, t0 + Duration::from_millis(1));
        s.sample_response(5_000.0, t0 + Duration::from_millis(2));
        let at = t0 + Duration::from_millis(2);
        assert_eq!(s.snapshot(at).peak_ewma_us, 5_000, "up at once");
        // A fast sample right after barely moves it (time constant 10 s).
        s.sample_response(100.0, at + Duration::from_millis(1));
        let p = s.snapshot(at + Duration::from_millis(1)).peak_ewma_us;
        assert!(p > 4_990, "{p}");
        // One time constant without samples: about 1/e of it.
        let later = s
            .snapshot(at + Duration::from_millis(1) + PEAK_DECAY)
            .peak_ewma_us;
        assert!((1_800..=1_880).contains(&later), "{later}");
        // The plain EWMA moves a tenth of the way per sample: 100, 590, 541.
        assert_eq!(s.snapshot(at).response_ewma_us, 541);
    }

    #[test]
    fn the_ewma_starts_at_the_first_sample_and_moves_a_tenth_per_sample() {
        let s = LoadStats::default();
        s.sample_service(1_000.0);
        assert_eq!(s.snapshot(Instant::now()).service_ewma_us, 1_000);
        s.sample_service(2_000.0);
        assert_eq!(s.snapshot(Instant::now()).service_ewma_us, 1_100);
    }
}
