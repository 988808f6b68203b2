//! An open-loop run: requests arrive as a Poisson process at a target utilisation of the fleet,
//! each from one of the run's clients, a [`Pick`] chooses its server from what it can see, and the
//! run goes on until every request has been answered or has failed. On the way: a network delay
//! each way, time-varying service rates, replication lag, faults in windows of time (a server
//! stalled, slowed or down), and health checks through which a router sees the fleet's state.
//! The result is each request's time in system, in arrival order.

use super::clock::Clock;
use super::model::Server;
use super::random::SimRng;

/// Chooses the server for a request that arrives at virtual time `now`.
pub trait Pick {
    fn pick(&mut self, client: u32, servers: &[Server], now: f64, rng: &mut SimRng) -> usize;

    /// A request of `client` that `server` served was answered at `now`, `time_in_system` after
    /// it arrived (what a gateway measures of a backend).
    fn finished(&mut self, _client: u32, _server: usize, _time_in_system: f64, _now: f64) {}

    /// A request of `client` failed at `now` (its server was down).
    fn failed(&mut self, _client: u32, _server: usize, _now: f64) {}

    /// A health check at `now` reads the servers' state (up or down, replication lag).
    fn observe(&mut self, _servers: &[Server], _now: f64) {}
}

/// Samples `d` distinct servers uniformly and takes the one with the fewest requests outstanding,
/// the first sampled on a tie: `d = 1` is random routing, `d = 2` the power of two choices (as a
/// router does it: two different replicas).
#[derive(Debug, Clone, Copy)]
pub struct Sampled {
    pub d: usize,
}

impl Pick for Sampled {
    fn pick(&mut self, _client: u32, servers: &[Server], _now: f64, rng: &mut SimRng) -> usize {
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
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Arrivals per time unit.
    pub rate: f64,
    pub requests: u64,
    pub seed: u64,
    /// The clients requests come from, uniformly (a router may tell them apart).
    pub clients: u32,
    /// One-way network delay between a gateway and a server, each way.
    pub network: f64,
    /// Time-varying service rates (absim's model), if any.
    pub fluctuation: Option<Fluctuation>,
    /// Replication lag coming and going on the replicas, if any.
    pub lag: Option<LagProcess>,
    pub faults: Vec<Fault>,
    /// How often health checks read the fleet's state; 0: routers see a change at once.
    pub check_every: f64,
}

impl Default for OpenLoop {
    fn default() -> Self {
        Self {
            rate: 1.0,
            requests: 0,
            seed: 1,
            clients: 1,
            network: 0.0,
            fluctuation: None,
            lag: None,
            faults: Vec::new(),
            check_every: 0.0,
        }
    }
}

/// Every `every` time units, each server independently runs at full speed or `factor` times
/// slower, with probability one half each (the C3 paper's time-varying scenario: a rate changes by
/// a factor D with probability 0.5 every T ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fluctuation {
    pub every: f64,
    pub factor: f64,
}

/// Every `every` time units, each replica (every server but the first, the primary) is
/// independently `lag_ms` behind with probability `probability`, else caught up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagProcess {
    pub every: f64,
    pub probability: f64,
    pub lag_ms: u32,
}

/// Something wrong with one server from `from` until `until` (virtual time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub server: usize,
    pub from: f64,
    pub until: f64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Stuck: every request reaching it is answered `latency` later, whatever its load (the
    /// linkerd experiment's backend stuck at 2 s).
    Stall { latency: f64 },
    /// Service times `factor` times longer.
    Slow { factor: f64 },
    /// Down: what it holds and what reaches it fails.
    Down,
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
    /// Each request's time in system (network, waiting and service), in arrival order; NaN for a
    /// request that failed.
    pub time_in_system: Vec<f64>,
    /// When each request arrived.
    pub arrived_at: Vec<f64>,
    /// The server each request was sent to.
    pub server: Vec<u32>,
    /// Requests each server served.
    pub served: Vec<u64>,
    pub errors: u64,
    /// The virtual time the last request was answered.
    pub ended_at: f64,
}

impl Outcome {
    /// The times in system of the answered requests after the first `warmup` arrivals.
    pub fn answered_after(&self, warmup: usize) -> Vec<f64> {
        self.time_in_system
            .iter()
            .skip(warmup)
            .copied()
            .filter(|t| !t.is_nan())
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Event {
    Arrival,
    Fluctuate,
    Lag,
    Check,
    FaultStarts(usize),
    FaultEnds(usize),
    /// A request reaches its server (after the network).
    Reach(u64),
    /// A request leaves its server's slot.
    Departure(u64),
    /// A request's answer reaches its gateway.
    Answer(u64),
}

/// The run in progress: the fleet, the clock and what is known of each request.
struct Run<'a> {
    spec: &'a OpenLoop,
    servers: Vec<Server>,
    pick: &'a mut dyn Pick,
    rng: SimRng,
    clock: Clock<Event>,
    arrived_at: Vec<f64>,
    client: Vec<u32>,
    server: Vec<u32>,
    /// Failed or answered: later events of it are stale.
    settled: Vec<bool>,
    time_in_system: Vec<f64>,
    served: Vec<u64>,
    errors: u64,
    ended_at: f64,
    arriving: bool,
    /// Faults in force (their indexes in the spec).
    active: Vec<usize>,
}

/// Runs `spec` over `servers`, routing with `pick`.
pub fn run(spec: &OpenLoop, servers: Vec<Server>, pick: &mut dyn Pick) -> Outcome {
    let n = usize::try_from(spec.requests).unwrap_or(usize::MAX);
    let count = servers.len();
    let mut run = Run {
        spec,
        servers,
        pick,
        rng: SimRng::seeded(spec.seed),
        clock: Clock::default(),
        arrived_at: Vec::with_capacity(n),
        client: Vec::with_capacity(n),
        server: Vec::with_capacity(n),
        settled: Vec::with_capacity(n),
        time_in_system: Vec::with_capacity(n),
        served: vec![0; count],
        errors: 0,
        ended_at: 0.0,
        arriving: n > 0,
        active: Vec::new(),
    };
    if count > 0 && spec.rate > 0.0 && n > 0 {
        run.start();
        while let Some(event) = run.clock.advance() {
            run.handle(event, n);
        }
    }
    Outcome {
        time_in_system: run.time_in_system,
        arrived_at: run.arrived_at,
        server: run.server,
        served: run.served,
        errors: run.errors,
        ended_at: run.ended_at,
    }
}

impl Run<'_> {
    fn start(&mut self) {
        let first = self.rng.exponential(1.0 / self.spec.rate);
        self.clock.after(first, Event::Arrival);
        if let Some(f) = self.spec.fluctuation.filter(|f| f.every > 0.0) {
            self.clock.after(f.every, Event::Fluctuate);
        }
        if self.spec.lag.is_some_and(|l| l.every > 0.0) {
            self.clock.after(0.0, Event::Lag);
        }
        if self.spec.check_every > 0.0 {
            self.clock.after(self.spec.check_every, Event::Check);
        }
        for (i, f) in self.spec.faults.iter().enumerate() {
            if f.server < self.servers.len() && f.until > f.from {
                self.clock.after(f.from, Event::FaultStarts(i));
                self.clock.after(f.until, Event::FaultEnds(i));
            }
        }
        self.pick.observe(&self.servers, 0.0);
    }

    fn handle(&mut self, event: Event, n: usize) {
        // Periodic events stop with the arrivals, so the run ends.
        match event {
            Event::Arrival => self.arrival(n),
            Event::Fluctuate => {
                if let Some(f) = self.spec.fluctuation.filter(|_| self.arriving) {
                    for s in &mut self.servers {
                        s.varying = if self.rng.unit() < 0.5 { f.factor } else { 1.0 };
                    }
                    self.clock.after(f.every, Event::Fluctuate);
                }
            }
            Event::Lag => {
                if let Some(l) = self.spec.lag.filter(|_| self.arriving) {
                    for s in self.servers.iter_mut().skip(1) {
                        let behind = self.rng.unit() < l.probability;
                        s.lag_ms = Some(if behind { l.lag_ms } else { 0 });
                    }
                    self.fleet_changed();
                    self.clock.after(l.every, Event::Lag);
                }
            }
            Event::Check => {
                if self.arriving {
                    self.pick.observe(&self.servers, self.clock.now());
                    self.clock.after(self.spec.check_every, Event::Check);
                }
            }
            Event::FaultStarts(i) => self.fault(i, true),
            Event::FaultEnds(i) => self.fault(i, false),
            Event::Reach(id) => self.reach(id),
            Event::Departure(id) => self.departure(id),
            Event::Answer(id) => self.answer(id),
        }
    }

    fn arrival(&mut self, n: usize) {
        let now = self.clock.now();
        let id = self.arrived_at.len() as u64;
        // One client draws nothing, so single-client runs keep the oracles' random stream.
        let client = if self.spec.clients > 1 {
            u32::try_from(self.rng.below(self.spec.clients as usize)).unwrap_or(0)
        } else {
            0
        };
        let s = self
            .pick
            .pick(client, &self.servers, now, &mut self.rng)
            .min(self.servers.len() - 1);
        self.arrived_at.push(now);
        self.client.push(client);
        self.server.push(s as u32);
        self.settled.push(false);
        self.time_in_system.push(f64::NAN);
        if self.spec.network > 0.0 {
            self.clock.after(self.spec.network, Event::Reach(id));
        } else {
            self.reach(id);
        }
        if self.arrived_at.len() < n {
            let gap = self.rng.exponential(1.0 / self.spec.rate);
            self.clock.after(gap, Event::Arrival);
        } else {
            self.arriving = false;
        }
    }

    fn reach(&mut self, id: u64) {
        let i = id as usize;
        if self.settled[i] {
            return;
        }
        let s = self.server[i] as usize;
        if !self.servers[s].up {
            self.fail(id);
            return;
        }
        let stall = self.active.iter().find_map(|&f| {
            let f = &self.spec.faults[f];
            match f.kind {
                FaultKind::Stall { latency } if f.server == s => Some(latency),
                _ => None,
            }
        });
        if let Some(latency) = stall {
            self.clock.after(latency, Event::Departure(id));
        } else if let Some(service) = self.servers[s].arrive(id, &mut self.rng) {
            self.clock.after(service, Event::Departure(id));
        }
    }

    fn departure(&mut self, id: u64) {
        let i = id as usize;
        if self.settled[i] {
            return;
        }
        let s = self.server[i] as usize;
        // A stalled request held no slot: `depart` finds nothing to free.
        if let Some((next, service)) = self.servers[s].depart(id, &mut self.rng) {
            self.clock.after(service, Event::Departure(next));
        }
        if self.spec.network > 0.0 {
            self.clock.after(self.spec.network, Event::Answer(id));
        } else {
            self.answer(id);
        }
    }

    fn answer(&mut self, id: u64) {
        let i = id as usize;
        if self.settled[i] {
            return;
        }
        let now = self.clock.now();
        self.settled[i] = true;
        let t = now - self.arrived_at[i];
        self.time_in_system[i] = t;
        let s = self.server[i] as usize;
        self.served[s] += 1;
        self.ended_at = now;
        self.pick.finished(self.client[i], s, t, now);
    }

    fn fail(&mut self, id: u64) {
        let i = id as usize;
        if std::mem::replace(&mut self.settled[i], true) {
            return;
        }
        self.errors += 1;
        let now = self.clock.now();
        self.ended_at = self.ended_at.max(now);
        self.pick
            .failed(self.client[i], self.server[i] as usize, now);
    }

    fn fault(&mut self, i: usize, starts: bool) {
        let f = self.spec.faults[i];
        if starts {
            self.active.push(i);
        } else {
            self.active.retain(|&a| a != i);
        }
        let server = &mut self.servers[f.server];
        match f.kind {
            FaultKind::Stall { .. } => {}
            FaultKind::Slow { factor } => server.fault = if starts { factor } else { 1.0 },
            FaultKind::Down if starts => {
                for id in server.fail() {
                    self.fail(id);
                }
                self.fleet_changed();
            }
            FaultKind::Down => {
                server.up = true;
                self.fleet_changed();
            }
        }
    }

    /// Without periodic checks, routers see a change of health or lag at once.
    fn fleet_changed(&mut self) {
        if self.spec.check_every <= 0.0 {
            self.pick.observe(&self.servers, self.clock.now());
        }
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
            &OpenLoop {
                rate: OpenLoop::rate_for(lambda, servers, 1, 1.0),
                requests,
                seed: 42,
                ..OpenLoop::default()
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
                &OpenLoop {
                    rate: OpenLoop::rate_for(0.7, 50, 4, 4.0),
                    requests: 300_000,
                    seed: 3,
                    fluctuation: Some(Fluctuation {
                        every: 500.0,
                        factor: 3.0,
                    }),
                    ..OpenLoop::default()
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
