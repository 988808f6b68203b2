//! An open-loop run: requests arrive as a Poisson process at a target utilisation of the fleet,
//! a [`Pick`] chooses each one's server from what it can see, and the run goes on until every
//! request has left. The result is each request's time in system, in arrival order.

use super::clock::Clock;
use super::model::Server;
use super::random::SimRng;

/// Chooses the server for a request that arrives at virtual time `now`.
pub trait Pick {
    fn pick(&mut self, servers: &[Server], now: f64, rng: &mut SimRng) -> usize;

    /// A request `server` served left at `now`, `time_in_system` after it arrived (what a
    /// gateway measures of a backend).
    fn finished(&mut self, _server: usize, _time_in_system: f64, _now: f64) {}
}

/// Samples `d` distinct servers uniformly and takes the one with the fewest requests outstanding,
/// the first sampled on a tie: `d = 1` is random routing, `d = 2` the power of two choices (as a
/// router does it: two different replicas).
#[derive(Debug, Clone, Copy)]
pub struct Sampled {
    pub d: usize,
}

impl Pick for Sampled {
    fn pick(&mut self, servers: &[Server], _now: f64, rng: &mut SimRng) -> usize {
        let n = servers.len();
        let first = rng.below(n);
        let mut best = first;
        if self.d >= 2 && n >= 2 {
            // A second, different server: uniform over the others.
            let second = (first + 1 + rng.below(n - 1)) % n;
            if servers[second].outstanding() < servers[best].outstanding() {
                best = second;
            }
            for _ in 2..self.d {
                let i = rng.below(n);
                if servers[i].outstanding() < servers[best].outstanding() {
                    best = i;
                }
            }
        }
        best
    }
}

/// What a run is asked for.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Arrivals per time unit.
    pub rate: f64,
    pub requests: u64,
    pub seed: u64,
    /// Time-varying service rates (absim's model), if any.
    pub fluctuation: Option<Fluctuation>,
}

/// Every `every` time units, each server independently runs at full speed or `factor` times
/// slower, with probability one half each (the C3 paper's time-varying scenario: a rate changes by
/// a factor D with probability 0.5 every T ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fluctuation {
    pub every: f64,
    pub factor: f64,
}

impl OpenLoop {
    /// The arrival rate that keeps `servers` at `utilisation`, each with `slots` slots and
    /// `mean_service` time units per request.
    pub fn rate_for(utilisation: f64, servers: usize, slots: u32, mean_service: f64) -> f64 {
        utilisation * servers as f64 * f64::from(slots) / mean_service
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Each request's time in system (waiting and service), in arrival order.
    pub time_in_system: Vec<f64>,
    /// Requests each server served.
    pub served: Vec<u64>,
    /// The virtual time the last request left.
    pub ended_at: f64,
}

enum Event {
    Arrival,
    Fluctuate,
    Departure { server: usize, request: u64 },
}

/// Runs `run` over `servers`, routing with `pick`.
pub fn run(run: OpenLoop, mut servers: Vec<Server>, pick: &mut dyn Pick) -> Outcome {
    let mut rng = SimRng::seeded(run.seed);
    let mut clock = Clock::default();
    let n = usize::try_from(run.requests).unwrap_or(usize::MAX);
    let mut arrived_at: Vec<f64> = Vec::with_capacity(n);
    let mut time_in_system = vec![0.0; n];
    let mut served = vec![0u64; servers.len()];
    if servers.is_empty() || run.rate <= 0.0 {
        return Outcome {
            time_in_system: Vec::new(),
            served,
            ended_at: 0.0,
        };
    }
    let mean_gap = 1.0 / run.rate;
    clock.after(rng.exponential(mean_gap), Event::Arrival);
    if let Some(f) = run.fluctuation.filter(|f| f.every > 0.0) {
        clock.after(f.every, Event::Fluctuate);
    }
    let mut arriving = true;
    while let Some(event) = clock.advance() {
        match event {
            Event::Fluctuate => {
                // Rates change only while requests arrive, so the run still ends.
                if let Some(f) = run.fluctuation.filter(|_| arriving) {
                    for s in &mut servers {
                        s.slowdown = if rng.unit() < 0.5 { f.factor } else { 1.0 };
                    }
                    clock.after(f.every, Event::Fluctuate);
                }
            }
            Event::Arrival => {
                let id = arrived_at.len() as u64;
                arrived_at.push(clock.now());
                let s = pick
                    .pick(&servers, clock.now(), &mut rng)
                    .min(servers.len() - 1);
                if let Some(service) = servers[s].arrive(id, &mut rng) {
                    clock.after(
                        service,
                        Event::Departure {
                            server: s,
                            request: id,
                        },
                    );
                }
                if arrived_at.len() < n {
                    clock.after(rng.exponential(mean_gap), Event::Arrival);
                } else {
                    arriving = false;
                }
            }
            Event::Departure { server, request } => {
                let i = request as usize;
                time_in_system[i] = clock.now() - arrived_at[i];
                served[server] += 1;
                pick.finished(server, time_in_system[i], clock.now());
                if let Some((next, service)) = servers[server].depart(&mut rng) {
                    clock.after(
                        service,
                        Event::Departure {
                            server,
                            request: next,
                        },
                    );
                }
            }
        }
    }
    Outcome {
        time_in_system,
        served,
        ended_at: clock.now(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::ServiceTime;
    use super::super::stats::{batch_means, quantile};
    use super::*;

    /// `servers` single-slot servers with unit mean exponential service, at utilisation `lambda`,
    /// routed by sampling `d`: the mean time in system and its interval.
    fn mean_time(
        d: usize,
        servers: usize,
        lambda: f64,
        requests: u64,
    ) -> super::super::stats::Estimate {
        let fleet = vec![Server::new(1, ServiceTime::Exponential { mean: 1.0 }); servers];
        let out = run(
            OpenLoop {
                rate: OpenLoop::rate_for(lambda, servers, 1, 1.0),
                requests,
                seed: 42,
                fluctuation: None,
            },
            fleet,
            &mut Sampled { d },
        );
        let warmup = out.time_in_system.len() / 10;
        batch_means(&out.time_in_system, warmup, 30).expect("enough requests")
    }

    /// The supermarket model's mean time in system for two choices: Σ_{i≥1} λ^(2^i − 2).
    fn supermarket(lambda: f64) -> f64 {
        (1..64)
            .map(|i| lambda.powf(2f64.powi(i) - 2.0))
            .take_while(|t| *t > 1e-12)
            .sum()
    }

    #[test]
    fn random_routing_to_mm1_servers_gives_one_over_one_minus_lambda() {
        // Near saturation the queues swing slowly: more requests for a tight interval.
        for (lambda, requests) in [(0.5, 1_000_000), (0.8, 2_000_000), (0.9, 5_000_000)] {
            let want = 1.0 / (1.0 - lambda);
            let e = mean_time(1, 100, lambda, requests);
            let err = (e.mean - want).abs() / want;
            assert!(
                err < 0.03 && e.contains(want),
                "λ={lambda}: want {want}, got {e:?}"
            );
        }
    }

    #[test]
    fn two_choices_over_many_servers_gives_the_supermarket_value() {
        // The closed form is the limit of many servers: a thousand come close enough for the
        // interval of two million requests.
        for lambda in [0.5, 0.8, 0.9] {
            let want = supermarket(lambda);
            let e = mean_time(2, 1000, lambda, 2_000_000);
            let err = (e.mean - want).abs() / want;
            assert!(
                err < 0.03 && e.contains(want),
                "λ={lambda}: want {want}, got {e:?}"
            );
        }
    }

    #[test]
    fn with_time_varying_rates_two_choices_keep_the_tail_shorter_than_random() {
        let p999 = |d: usize| {
            let fleet = vec![Server::new(4, ServiceTime::Exponential { mean: 4.0 }); 50];
            let out = run(
                OpenLoop {
                    rate: OpenLoop::rate_for(0.7, 50, 4, 4.0),
                    requests: 300_000,
                    seed: 3,
                    fluctuation: Some(Fluctuation {
                        every: 500.0,
                        factor: 3.0,
                    }),
                },
                fleet,
                &mut Sampled { d },
            );
            quantile(&out.time_in_system[30_000..], 0.999)
        };
        let (random, two) = (p999(1), p999(2));
        assert!(
            two < random / 2.0,
            "p99.9: random {random}, two choices {two}"
        );
    }

    #[test]
    fn a_seed_is_a_run() {
        let a = mean_time(2, 10, 0.7, 20_000);
        let b = mean_time(2, 10, 0.7, 20_000);
        assert_eq!(a, b);
    }
}
