//! A `sluice simulate` scenario, from TOML: the fleet (replicas, their slots and service-time
//! distribution, a slow fraction), the load (utilisation, clients, gateways), the network, the
//! time-varying rates, replication lag, faults in windows, and how the figures are estimated.
//! Validated once at load, errors naming the file and key. Times are milliseconds.
//!
//! ```toml
//! name = "absim: time-varying service rates"
//! requests = 200000
//! utilisation = 0.7      # of the replicas' mean capacity
//! clients = 300
//! gateways = 10          # each with its own view of load
//! [servers]
//! replicas = 20
//! slots = 4
//! service = "exponential" # exponential, log-normal (sigma), empirical (quantiles, from-bench
//!                         # or from-capture)
//! mean-ms = 4.0
//! [fluctuation]
//! every-ms = 500
//! factor = 3.0
//! [[faults]]
//! kind = "stall"         # stall (latency-ms), slow (factor), down
//! replica = 1
//! latency-ms = 2000
//! from = 0.333           # share of the run
//! until = 0.667
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::driver::{Fault, FaultKind, Fluctuation, LagProcess, OpenLoop};
use super::model::{Server, ServiceTime};

/// How long a request holds a replica's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Exponential,
    LogNormal,
    /// Piecewise linear between (quantile, ms) points: `quantiles`, or a `sluice bench` run's
    /// latency distribution (`from-bench`, a JSON report).
    Empirical,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Servers {
    /// Replicas the reads are spread over (a primary comes on top, for what routers leave).
    pub replicas: usize,
    pub slots: u32,
    pub service: Service,
    /// The mean service time (exponential and log-normal).
    pub mean_ms: f64,
    /// The log-normal's shape (the standard deviation of the log).
    pub sigma: f64,
    /// The empirical distribution's points: [quantile, ms], quantiles rising from 0 to 1.
    pub quantiles: Vec<[f64; 2]>,
    /// Or a `sluice bench --json` report whose latency distribution to take (resolved against
    /// the scenario's directory).
    pub from_bench: Option<String>,
    /// Which of its candidates (the first run when absent).
    pub bench_candidate: Option<String>,
    /// Or a capture (`docs/capture.md`) whose statements' recorded times to take: those the
    /// replicas answered (all answered ones when none were). The gateway's time for a
    /// statement stands in for the server's, as the router's latency does.
    pub from_capture: Option<String>,
    /// A share of the replicas (the last ones) slower by `slow-factor`, for the whole run.
    pub slow_fraction: f64,
    pub slow_factor: f64,
}

impl Default for Servers {
    fn default() -> Self {
        Self {
            replicas: 20,
            slots: 4,
            service: Service::Exponential,
            mean_ms: 4.0,
            sigma: 0.5,
            quantiles: Vec::new(),
            from_bench: None,
            bench_candidate: None,
            from_capture: None,
            slow_fraction: 0.0,
            slow_factor: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FluctuationSpec {
    pub every_ms: f64,
    pub factor: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LagSpec {
    pub every_ms: f64,
    pub probability: f64,
    pub lag_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultSpecKind {
    Stall,
    Slow,
    Down,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultSpecKind,
    /// Which replica (1-based, as the fleet names them: replica1, replica2, ...).
    pub replica: usize,
    /// A stall's answer time.
    #[serde(default)]
    pub latency_ms: f64,
    /// A slowdown's factor.
    #[serde(default)]
    pub factor: f64,
    /// When it starts and ends, as shares of the run (0..=1).
    pub from: f64,
    pub until: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub requests: u64,
    /// Independent runs (seeds `seed`, `seed + 1`, ...) pooled, for a scenario whose interest is
    /// a transient (a fault window) rather than a steady state.
    pub replications: u32,
    /// The share of requests (the first of each run) dropped as warm-up.
    pub warmup: f64,
    /// Batches for the confidence intervals.
    pub batches: usize,
    /// Of the replicas' mean capacity: slots over mean service time, with the slow fraction and
    /// the time-varying rates' mean speed counted.
    pub utilisation: f64,
    pub clients: u32,
    pub gateways: usize,
    /// What the clients send (one statement class): it goes through the router as it would.
    pub statement: String,
    /// One-way delay between a gateway and a server.
    pub network_ms: f64,
    /// Health checks' period (how late routers see a server down or lagging); 0: at once.
    pub check_every_ms: f64,
    /// A gateway's view of load refreshed this often instead of live; 0: live.
    pub view_refresh_ms: f64,
    /// The strategies of the shipped router to compare (overridden by the command line).
    pub strategies: Vec<String>,
    pub servers: Servers,
    pub fluctuation: Option<FluctuationSpec>,
    pub lag: Option<LagSpec>,
    pub faults: Vec<FaultSpec>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "scenario".into(),
            seed: 1,
            requests: 200_000,
            replications: 1,
            warmup: 0.1,
            batches: 30,
            utilisation: 0.7,
            clients: 100,
            gateways: 1,
            statement: "SELECT c FROM sbtest1 WHERE id = 1".into(),
            network_ms: 0.0,
            check_every_ms: 0.0,
            view_refresh_ms: 0.0,
            strategies: Vec::new(),
            servers: Servers::default(),
            fluctuation: None,
            lag: None,
            faults: Vec::new(),
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut s =
            Self::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let beside = |f: &str| path.parent().unwrap_or(Path::new(".")).join(f);
        let measured = match (&s.servers.from_bench, &s.servers.from_capture) {
            (Some(f), _) => Some((
                "from-bench",
                beside(f),
                bench_quantiles(&beside(f), s.servers.bench_candidate.as_deref()),
            )),
            (None, Some(f)) => Some(("from-capture", beside(f), capture_quantiles(&beside(f)))),
            (None, None) => None,
        };
        if let Some((key, file, points)) = measured {
            s.servers.quantiles = points.map_err(|e| {
                anyhow::anyhow!("{}: servers.{key}: {}: {e}", path.display(), file.display())
            })?;
            s.validate()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(s)
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let s: Scenario = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let fail = |key: &str, why: String| Err(anyhow::anyhow!("{key}: {why}"));
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if self.requests < 1000 {
            return fail("requests", "at least 1000".into());
        }
        if !(1..=10_000).contains(&self.replications) {
            return fail("replications", format!("{}: from 1", self.replications));
        }
        if !(0.0..0.9).contains(&self.warmup) {
            return fail("warmup", format!("{}: a share from 0 to 0.9", self.warmup));
        }
        if !(2..=1000).contains(&self.batches) {
            return fail("batches", format!("{}: from 2 to 1000", self.batches));
        }
        if !(positive(self.utilisation) && self.utilisation < 1.5) {
            return fail(
                "utilisation",
                format!(
                    "{}: above 0 (1.0 is the fleet's capacity)",
                    self.utilisation
                ),
            );
        }
        if self.clients == 0 {
            return fail("clients", "at least 1".into());
        }
        if self.gateways == 0 || self.gateways > self.clients as usize {
            return fail(
                "gateways",
                format!("{}: from 1 to the number of clients", self.gateways),
            );
        }
        for (key, v) in [
            ("network-ms", self.network_ms),
            ("check-every-ms", self.check_every_ms),
            ("view-refresh-ms", self.view_refresh_ms),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return fail(key, format!("{v}: 0 or more"));
            }
        }
        let s = &self.servers;
        if s.replicas == 0 || s.replicas > 100_000 {
            return fail("servers.replicas", format!("{}: from 1", s.replicas));
        }
        if s.slots == 0 {
            return fail("servers.slots", "at least 1".into());
        }
        match s.service {
            Service::Exponential | Service::LogNormal if !positive(s.mean_ms) => {
                return fail("servers.mean-ms", format!("{}: above 0", s.mean_ms));
            }
            Service::LogNormal if !(positive(s.sigma) && s.sigma < 5.0) => {
                return fail("servers.sigma", format!("{}: from 0 to 5", s.sigma));
            }
            Service::Empirical => check_quantiles(
                &s.quantiles,
                s.from_bench.is_some() || s.from_capture.is_some(),
            )
            .or_else(|why| fail("servers.quantiles", why))?,
            _ => {}
        }
        if !(0.0..=1.0).contains(&s.slow_fraction) {
            return fail(
                "servers.slow-fraction",
                format!("{}: 0 to 1", s.slow_fraction),
            );
        }
        if !positive(s.slow_factor) {
            return fail("servers.slow-factor", format!("{}: above 0", s.slow_factor));
        }
        if let Some(f) = &self.fluctuation
            && !(positive(f.every_ms) && positive(f.factor))
        {
            return fail("fluctuation", "every-ms and factor above 0".into());
        }
        if let Some(l) = &self.lag
            && !(positive(l.every_ms) && (0.0..=1.0).contains(&l.probability))
        {
            return fail("lag", "every-ms above 0, probability 0 to 1".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            let key = format!("faults[{i}]");
            if f.replica == 0 || f.replica > s.replicas {
                return fail(
                    &format!("{key}.replica"),
                    format!("{}: from 1 to {}", f.replica, s.replicas),
                );
            }
            if !(0.0..=1.0).contains(&f.from)
                || !(0.0..=1.0).contains(&f.until)
                || f.from >= f.until
            {
                return fail(&key, "from < until, shares of the run (0..=1)".into());
            }
            match f.kind {
                FaultSpecKind::Stall if !positive(f.latency_ms) => {
                    return fail(
                        &format!("{key}.latency-ms"),
                        "a stall needs it above 0".into(),
                    );
                }
                FaultSpecKind::Slow if !positive(f.factor) => {
                    return fail(
                        &format!("{key}.factor"),
                        "a slowdown needs it above 0".into(),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The replicas' service-time distribution.
    pub fn service(&self) -> ServiceTime {
        let s = &self.servers;
        match s.service {
            Service::Exponential => ServiceTime::Exponential { mean: s.mean_ms },
            Service::LogNormal => ServiceTime::LogNormal {
                mu: s.mean_ms.ln() - s.sigma * s.sigma / 2.0,
                sigma: s.sigma,
            },
            Service::Empirical => ServiceTime::empirical(&s.quantiles),
        }
    }

    /// The fleet: the primary (server 0), then the replicas, the slow ones last.
    pub fn fleet(&self) -> Vec<Server> {
        let s = &self.servers;
        let service = self.service();
        let slow = self.slow_replicas();
        (0..=s.replicas)
            .map(|i| {
                let mut server = Server::new(s.slots, service.clone());
                if i > s.replicas - slow {
                    server.slowdown = s.slow_factor;
                }
                server
            })
            .collect()
    }

    fn slow_replicas(&self) -> usize {
        (self.servers.slow_fraction * self.servers.replicas as f64).round() as usize
    }

    /// Requests per millisecond at the scenario's utilisation of the replicas' mean capacity.
    pub fn rate(&self) -> f64 {
        let s = &self.servers;
        let slow = self.slow_replicas() as f64;
        let speed = (s.replicas as f64 - slow) + slow / s.slow_factor;
        let varying = self
            .fluctuation
            .map_or(1.0, |f| f64::midpoint(1.0, 1.0 / f.factor));
        let mean = self.service().mean();
        self.utilisation * f64::from(s.slots) * speed * varying / mean
    }

    /// How long the arrivals last, in milliseconds (what fault windows are shares of).
    pub fn span_ms(&self) -> f64 {
        self.requests as f64 / self.rate()
    }

    /// The run the driver makes of this scenario.
    pub fn open_loop(&self) -> OpenLoop {
        let span = self.span_ms();
        OpenLoop {
            rate: self.rate(),
            requests: self.requests,
            seed: self.seed,
            clients: self.clients,
            network: self.network_ms,
            fluctuation: self.fluctuation.map(|f| Fluctuation {
                every: f.every_ms,
                factor: f.factor,
            }),
            lag: self.lag.map(|l| LagProcess {
                every: l.every_ms,
                probability: l.probability,
                lag_ms: l.lag_ms,
            }),
            faults: self
                .faults
                .iter()
                .map(|f| Fault {
                    server: f.replica,
                    from: f.from * span,
                    until: f.until * span,
                    kind: match f.kind {
                        FaultSpecKind::Stall => FaultKind::Stall {
                            latency: f.latency_ms,
                        },
                        FaultSpecKind::Slow => FaultKind::Slow { factor: f.factor },
                        FaultSpecKind::Down => FaultKind::Down,
                    },
                })
                .collect(),
            check_every: self.check_every_ms,
        }
    }

    /// The fault windows as (what, from ms, until ms).
    pub fn fault_windows(&self) -> Vec<(String, f64, f64)> {
        let span = self.span_ms();
        self.faults
            .iter()
            .map(|f| {
                let what = match f.kind {
                    FaultSpecKind::Stall => {
                        format!("replica{} stalled at {} ms", f.replica, f.latency_ms)
                    }
                    FaultSpecKind::Slow => format!("replica{} {}x slower", f.replica, f.factor),
                    FaultSpecKind::Down => format!("replica{} down", f.replica),
                };
                (what, f.from * span, f.until * span)
            })
            .collect()
    }
}

fn check_quantiles(points: &[[f64; 2]], from_bench: bool) -> Result<(), String> {
    if points.is_empty() && from_bench {
        return Ok(()); // filled from the report at load
    }
    if points.len() < 2 {
        return Err("an empirical distribution needs at least two [quantile, ms] points".into());
    }
    let rising = points
        .windows(2)
        .all(|w| w[1][0] > w[0][0] && w[1][1] >= w[0][1]);
    let ends = points[0][0].abs() < 1e-12 && (points[points.len() - 1][0] - 1.0).abs() < 1e-12;
    if !rising || !ends || points.iter().any(|p| !(p[1] >= 0.0 && p[1].is_finite())) {
        return Err("quantiles rising from 0 to 1, times rising and not negative".into());
    }
    Ok(())
}

/// The quantiles a measured distribution is taken at (dense in the tail).
const MEASURED_QUANTILES: [f64; 18] = [
    0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
    1.0,
];

/// The recorded times of a capture's answered statements, as (quantile, ms): those a replica
/// ran, else all.
fn capture_quantiles(file: &Path) -> anyhow::Result<Vec<[f64; 2]>> {
    use crate::capture::format::{Capture, What};
    let cap = Capture::open(file)?;
    let replicas: Vec<&str> = cap
        .header
        .backends
        .iter()
        .filter(|b| b.role == "replica")
        .map(|b| b.name.as_str())
        .collect();
    let answered = |on_replica: bool| -> Vec<f64> {
        cap.events
            .iter()
            .filter_map(|e| match &e.what {
                What::Query { done, .. } | What::Execute { done, .. } => Some(done),
                _ => None,
            })
            .filter(|d| d.error.is_none())
            .filter(|d| {
                d.backend
                    .as_deref()
                    .is_some_and(|b| !on_replica || replicas.contains(&b))
            })
            .map(|d| d.us as f64 / 1000.0)
            .collect()
    };
    let mut times = answered(true);
    if times.is_empty() {
        times = answered(false);
    }
    if times.len() < 100 {
        anyhow::bail!(
            "{} answered statements: too few for a distribution (at least 100)",
            times.len()
        );
    }
    times.sort_unstable_by(f64::total_cmp);
    let last = times.len() - 1;
    let at = |q: f64| times[((q * last as f64).round() as usize).min(last)];
    Ok(MEASURED_QUANTILES.iter().map(|&q| [q, at(q)]).collect())
}

/// The latency distribution of one run of a `sluice bench --json` report, as (quantile, ms).
fn bench_quantiles(file: &Path, candidate: Option<&str>) -> anyhow::Result<Vec<[f64; 2]>> {
    let text = std::fs::read_to_string(file)?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let runs = report["runs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("not a sluice bench report (no runs)"))?;
    let run = runs
        .iter()
        .find(|r| candidate.is_none_or(|c| r["candidate"].as_str() == Some(c)))
        .ok_or_else(|| anyhow::anyhow!("no run of candidate {}", candidate.unwrap_or("?")))?;
    let points: Vec<[f64; 2]> = run["cdf"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("the run has no latency distribution (cdf)"))?
        .iter()
        .filter_map(|p| Some([p[0].as_f64()?, p[1].as_f64()? / 1000.0]))
        .collect();
    // Equal latencies at neighbouring quantiles are kept; equal quantiles are not.
    let mut out: Vec<[f64; 2]> = Vec::with_capacity(points.len());
    for p in points {
        if out.last().is_none_or(|l| p[0] > l[0]) {
            out.push([p[0], p[1].max(out.last().map_or(0.0, |l| l[1]))]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_reads_with_defaults_and_refuses_what_cannot_run() {
        let s = Scenario::from_toml(
            "name = \"x\"\nrequests = 10000\n[servers]\nreplicas = 10\nslots = 2\nmean-ms = 5.0\n\
             [[faults]]\nkind = \"stall\"\nreplica = 3\nlatency-ms = 2000\nfrom = 0.25\nuntil = 0.5\n",
        )
        .expect("valid");
        // 10 replicas x 2 slots / 5 ms at 70%: 2.8 requests per ms.
        assert!((s.rate() - 2.8).abs() < 1e-9, "{}", s.rate());
        let run = s.open_loop();
        assert_eq!(run.faults[0].server, 3);
        assert!((run.faults[0].from - s.span_ms() / 4.0).abs() < 1e-9);
        assert_eq!(s.fleet().len(), 11, "a primary and ten replicas");
        for (bad, key) in [
            ("gateways = 0", "gateways"),
            ("[servers]\nreplicas = 0", "servers.replicas"),
            (
                "[[faults]]\nkind = \"stall\"\nreplica = 1\nfrom = 0.1\nuntil = 0.2",
                "latency-ms",
            ),
            (
                "[[faults]]\nkind = \"down\"\nreplica = 99\nfrom = 0.1\nuntil = 0.2",
                "replica",
            ),
            (
                "[servers]\nservice = \"empirical\"\nquantiles = [[0.0, 1.0]]",
                "servers.quantiles",
            ),
            ("colour = 1", "colour"),
        ] {
            let e = Scenario::from_toml(bad).expect_err(bad).to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn service_times_come_from_a_bench_report_named_beside_the_scenario() {
        let dir = std::env::temp_dir().join(format!("sluice-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // The shape `sluice bench --json` writes: per run, (quantile, µs) points.
        std::fs::write(
            dir.join("bench.json"),
            r#"{"runs": [{"candidate": "p2c", "cdf": [[0.0, 400], [0.5, 900], [0.99, 6000], [1.0, 40000]]},
                         {"candidate": "c3", "cdf": [[0.0, 100], [0.5, 100], [1.0, 200]]}]}"#,
        )
        .expect("write");
        let write = |name: &str, candidate: &str| {
            let file = dir.join(name);
            std::fs::write(
                &file,
                format!(
                    "[servers]\nservice = \"empirical\"\nfrom-bench = \"bench.json\"\nbench-candidate = \"{candidate}\"\n"
                ),
            )
            .expect("write");
            file
        };
        let s = Scenario::load(&write("a.toml", "p2c")).expect("loads");
        assert_eq!(
            s.servers.quantiles,
            vec![[0.0, 0.4], [0.5, 0.9], [0.99, 6.0], [1.0, 40.0]]
        );
        let c3 = Scenario::load(&write("b.toml", "c3")).expect("loads");
        assert!((c3.service().mean() - 0.125).abs() < 1e-12);
        let e = Scenario::load(&write("c.toml", "nobody")).expect_err("no such run");
        assert!(e.to_string().contains("servers.from-bench"), "{e}");
        // From a capture: the times of the statements the replicas answered.
        let mut lines = vec![
            r#"{"format":"sluice-capture","version":1,"sluice":"t","started_unix_ms":0,"redacted":false,"backends":[{"name":"primary","role":"primary"},{"name":"replica1","role":"replica"}]}"#.to_string(),
        ];
        for i in 0..200u64 {
            let backend = if i % 2 == 0 { "replica1" } else { "primary" };
            let us = if i % 2 == 0 { 1000 + i * 10 } else { 99_000 };
            lines.push(format!(
                r#"{{"t":{i},"c":1,"e":"query","sql":"SELECT 1","us":{us},"backend":"{backend}","guard":{{"verdict":"allow"}}}}"#
            ));
        }
        std::fs::write(dir.join("cap.jsonl"), lines.join("\n")).expect("write");
        std::fs::write(
            dir.join("d.toml"),
            "[servers]\nservice = \"empirical\"\nfrom-capture = \"cap.jsonl\"\n",
        )
        .expect("write");
        let s = Scenario::load(&dir.join("d.toml")).expect("loads");
        let q = &s.servers.quantiles;
        assert_eq!(q.first(), Some(&[0.0, 1.0]), "the replicas' fastest");
        assert_eq!(q.last(), Some(&[1.0, 2.98]), "the primary's are left out");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn slow_replicas_and_varying_rates_count_in_the_capacity() {
        let s = Scenario::from_toml(
            "[servers]\nreplicas = 10\nslots = 1\nmean-ms = 1.0\nslow-fraction = 0.2\nslow-factor = 2.0\n\
             [fluctuation]\nevery-ms = 100\nfactor = 3.0\n",
        )
        .expect("valid");
        // 8 at full speed + 2 at half, times (1 + 1/3) / 2, at 70%.
        let want = 0.7 * 9.0 * (2.0 / 3.0);
        assert!((s.rate() - want).abs() < 1e-9, "{}", s.rate());
        let fleet = s.fleet();
        assert_eq!(
            fleet
                .iter()
                .filter(|f| (f.slowdown - 2.0).abs() < 1e-12)
                .count(),
            2
        );
        assert!(
            (fleet[10].slowdown - 2.0).abs() < 1e-12,
            "the last replicas are the slow ones"
        );
    }
}
