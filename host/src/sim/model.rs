//! A simulated server: concurrency slots, a FIFO queue in front of them, and a service-time
//! distribution scaled by a rate factor (a slowed or sped-up server).

use std::collections::VecDeque;

use super::random::SimRng;

/// How long a request holds a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServiceTime {
    Exponential {
        mean: f64,
    },
    /// exp(N(mu, sigma²)).
    LogNormal {
        mu: f64,
        sigma: f64,
    },
}

impl ServiceTime {
    pub fn sample(&self, rng: &mut SimRng) -> f64 {
        match *self {
            Self::Exponential { mean } => rng.exponential(mean),
            Self::LogNormal { mu, sigma } => (mu + sigma * rng.normal()).exp(),
        }
    }
}

/// One server: `slots` requests in service at once, the rest wait in arrival order.
#[derive(Debug, Clone)]
pub struct Server {
    pub slots: u32,
    pub service: ServiceTime,
    /// Service times are multiplied by this (2.0: a server at half speed).
    pub slowdown: f64,
    busy: u32,
    waiting: VecDeque<u64>,
}

impl Server {
    pub fn new(slots: u32, service: ServiceTime) -> Self {
        Self {
            slots: slots.max(1),
            service,
            slowdown: 1.0,
            busy: 0,
            waiting: VecDeque::new(),
        }
    }

    /// Requests in service or waiting: what a router sees as the server's in-flight count.
    pub fn outstanding(&self) -> u32 {
        self.busy
            .saturating_add(u32::try_from(self.waiting.len()).unwrap_or(u32::MAX))
    }

    /// Request `id` arrives: `Some(service time)` when a slot takes it now, else it waits.
    pub fn arrive(&mut self, id: u64, rng: &mut SimRng) -> Option<f64> {
        if self.busy < self.slots {
            self.busy += 1;
            Some(self.service_time(rng))
        } else {
            self.waiting.push_back(id);
            None
        }
    }

    /// A request left its slot: the next waiting one (its id and service time) takes it.
    pub fn depart(&mut self, rng: &mut SimRng) -> Option<(u64, f64)> {
        let next = self.waiting.pop_front();
        if next.is_none() {
            self.busy = self.busy.saturating_sub(1);
        }
        next.map(|id| (id, self.service_time(rng)))
    }

    fn service_time(&self, rng: &mut SimRng) -> f64 {
        self.service.sample(rng) * self.slowdown
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
        assert_eq!(s.depart(&mut rng).map(|(id, _)| id), Some(3));
        assert_eq!(s.depart(&mut rng).map(|(id, _)| id), Some(4));
        assert_eq!(s.depart(&mut rng), None);
        assert_eq!(s.outstanding(), 1);
    }
}
