//! A simulated server: concurrency slots, a FIFO queue in front of them, and a service-time
//! distribution scaled by a rate factor (a slowed or sped-up server).

use std::collections::VecDeque;
use std::sync::Arc;

use super::random::SimRng;

/// How long a request holds a slot.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceTime {
    Exponential {
        mean: f64,
    },
    /// exp(N(mu, sigma²)).
    LogNormal {
        mu: f64,
        sigma: f64,
    },
    /// Piecewise linear between (quantile, time) points, quantiles rising from 0 to 1 (a
    /// measured distribution).
    Empirical(Arc<[(f64, f64)]>),
}

impl ServiceTime {
    /// From [quantile, time] points (as validated by the scenario).
    pub fn empirical(points: &[[f64; 2]]) -> Self {
        Self::Empirical(points.iter().map(|p| (p[0], p[1])).collect())
    }

    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match self {
            Self::Exponential { mean } => rng.exponential(*mean),
            Self::LogNormal { mu, sigma } => (mu + sigma * rng.normal()).exp(),
            Self::Empirical(points) => inverse_cdf(points, rng.unit()),
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            Self::Exponential { mean } => *mean,
            Self::LogNormal { mu, sigma } => (mu + sigma * sigma / 2.0).exp(),
            // Each segment is uniform between its end points.
            Self::Empirical(points) => points
                .windows(2)
                .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
                .sum(),
        }
    }
}

/// The time at quantile `u` of a piecewise linear distribution.
fn inverse_cdf(points: &[(f64, f64)], u: f64) -> f64 {
    let i = points
        .partition_point(|p| p.0 <= u)
        .clamp(1, points.len().max(2) - 1);
    match (points.get(i - 1), points.get(i)) {
        (Some(&(q0, t0)), Some(&(q1, t1))) if q1 > q0 => t0 + (t1 - t0) * (u - q0) / (q1 - q0),
        (Some(&(_, t)), _) => t,
        _ => 0.0,
    }
}

/// One server: `slots` requests in service at once, the rest wait in arrival order.
#[derive(Debug, Clone)]
pub struct Server {
    pub slots: u32,
    pub service: ServiceTime,
    /// Service times are multiplied by this (2.0: a server at half speed), for good.
    pub slowdown: f64,
    /// And by this, which the time-varying rates change.
    pub varying: f64,
    /// And by this, which a slowdown fault sets for its window.
    pub fault: f64,
    /// Whether it answers; a failed server's requests fail.
    pub up: bool,
    /// Its replication lag, as a health check would read it.
    pub lag_ms: Option<u32>,
    in_service: Vec<u64>,
    waiting: VecDeque<u64>,
}

impl Server {
    pub fn new(slots: u32, service: ServiceTime) -> Self {
        Self {
            slots: slots.max(1),
            service,
            slowdown: 1.0,
            varying: 1.0,
            fault: 1.0,
            up: true,
            lag_ms: Some(0),
            in_service: Vec::new(),
            waiting: VecDeque::new(),
        }
    }

    /// Requests in service or waiting: what a router sees as the server's in-flight count.
    pub fn outstanding(&self) -> u32 {
        u32::try_from(self.in_service.len() + self.waiting.len()).unwrap_or(u32::MAX)
    }

    /// Request `id` arrives: `Some(service time)` when a slot takes it now, else it waits.
    pub fn arrive(&mut self, id: u64, rng: &mut SimRng) -> Option<f64> {
        if self.in_service.len() < self.slots as usize {
            self.in_service.push(id);
            Some(self.service_time(rng))
        } else {
            self.waiting.push_back(id);
            None
        }
    }

    /// Request `id` left its slot: the next waiting one (its id and service time) takes it.
    /// `None` also when `id` was not in service (a request the server lost when it failed).
    pub fn depart(&mut self, id: u64, rng: &mut SimRng) -> Option<(u64, f64)> {
        let at = self.in_service.iter().position(|r| *r == id)?;
        self.in_service.swap_remove(at);
        let next = self.waiting.pop_front()?;
        self.in_service.push(next);
        Some((next, self.service_time(rng)))
    }

    /// The server fails: every request in service or waiting is lost (their ids).
    pub fn fail(&mut self) -> Vec<u64> {
        self.up = false;
        let mut lost = std::mem::take(&mut self.in_service);
        lost.extend(self.waiting.drain(..));
        lost
    }

    fn service_time(&self, rng: &mut SimRng) -> f64 {
        self.service.sample(rng) * self.slowdown * self.varying * self.fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_beyond_the_slots_wait_in_order() {
        let mut rng = SimRng::seeded(1);
        let mut s = Server::new(2, ServiceTime::Exponential { mean: 1.0 });
        assert!(s.arrive(1, &mut rng).is_some());
        assert!(s.arrive(2, &mut rng).is_some());
        assert!(s.arrive(3, &mut rng).is_none());
        assert!(s.arrive(4, &mut rng).is_none());
        assert_eq!(s.outstanding(), 4);
        assert_eq!(s.depart(1, &mut rng).map(|(id, _)| id), Some(3));
        assert_eq!(s.depart(2, &mut rng).map(|(id, _)| id), Some(4));
        assert_eq!(s.depart(3, &mut rng), None);
        assert_eq!(s.outstanding(), 1);
        assert_eq!(s.depart(3, &mut rng), None, "not in service any more");
        assert_eq!(s.fail(), vec![4]);
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn an_empirical_distribution_is_sampled_between_its_points() {
        let e = ServiceTime::empirical(&[[0.0, 1.0], [0.5, 2.0], [1.0, 10.0]]);
        assert!((e.mean() - (0.5 * 1.5 + 0.5 * 6.0)).abs() < 1e-12);
        let mut rng = SimRng::seeded(3);
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|_| e.sample(&mut rng)).collect();
        assert!(draws.iter().all(|t| (1.0..=10.0).contains(t)));
        let mean = draws.iter().sum::<f64>() / f64::from(n);
        assert!((mean - e.mean()).abs() < 0.05, "{mean}");
        let below_two = draws.iter().filter(|t| **t < 2.0).count() as f64 / f64::from(n);
        assert!((below_two - 0.5).abs() < 0.01, "{below_two}");
    }
}
