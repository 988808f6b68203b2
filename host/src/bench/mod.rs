//! `sluice bench`: runs a workload against the real fleet through an in-process gateway, once per
//! candidate router (a named strategy of the configured router, or a `.wasm` with settings),
//! round after round, with the workload's faults injected at the same moments of every run, and
//! compares them.
//!
//! The flow: [`workload`] is read and checked; the fault proxies ([`fault`]) are put in front of
//! the backends the faults name; the tables are made; a rate given as a share of the maximum is
//! calibrated by a closed-loop run; then each candidate gets a policy directory of its own
//! ([`candidate`]), a gateway bound to a free port, and the workload's connections ([`driver`]),
//! whose operations the [`report::Recorder`] collects. [`html`] draws the report.

pub mod candidate;
pub mod driver;
pub mod fault;
pub mod html;
pub mod report;
pub mod workload;

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};

use crate::config::Config;
use candidate::Candidate;
use fault::{Fault, FaultProxy};
use report::{BackendSeries, BenchReport, Recorder, RunReport};
use workload::{FaultKind, Mode, Rate, Workload};

/// The strategies compared when none are named.
pub const DEFAULT_STRATEGIES: [&str; 6] = [
    "round-robin",
    "least-in-use",
    "p2c",
    "peak-ewma",
    "c3",
    "adaptive",
];

/// What to run.
pub struct BenchOptions {
    pub config: Config,
    pub workload: Workload,
    pub candidates: Vec<Candidate>,
    /// Rounds: every candidate runs once per round, interleaved.
    pub repeat: u32,
    pub user: String,
    pub password: String,
    /// A progress line on stderr (a terminal), else one line per run.
    pub progress: bool,
}

/// The injected faults' means: a proxy per backend a proxy fault names, and the SQL account
/// for replication faults.
struct Faults {
    proxies: HashMap<String, FaultProxy>,
    /// Backend name -> its real address, for `lag` and `stop-replication`.
    servers: HashMap<String, SocketAddr>,
}

impl Faults {
    fn start(config: &Config, w: &Workload) -> anyhow::Result<Self> {
        let mut proxies = HashMap::new();
        let mut servers = HashMap::new();
        for (i, f) in w.faults.iter().enumerate() {
            let b = config
                .backends
                .iter()
                .find(|b| b.name == f.backend)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "faults[{i}].backend: `{}` is not a backend of the configuration",
                        f.backend
                    )
                })?;
            let addr = b
                .address
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    anyhow::anyhow!("backend {}: cannot resolve {}", b.name, b.address)
                })?;
            servers.insert(b.name.clone(), addr);
            if f.needs_proxy() && !proxies.contains_key(&b.name) {
                proxies.insert(b.name.clone(), FaultProxy::start(addr)?);
            }
        }
        Ok(Self { proxies, servers })
    }

    /// The configuration a candidate's gateway runs: its backends behind their proxies.
    fn route_through(&self, config: &mut Config) {
        for b in &mut config.backends {
            if let Some(p) = self.proxies.get(&b.name) {
                b.address = p.addr().to_string();
            }
        }
    }

    async fn apply(&self, w: &Workload, f: &workload::Fault, on: bool) -> anyhow::Result<()> {
        let proxy = self.proxies.get(&f.backend);
        match (f.kind, proxy) {
            (FaultKind::Slow, Some(p)) => p.set(if on {
                Fault::SlowRequests(Duration::from_millis(f.delay_ms))
            } else {
                Fault::Pass
            }),
            (FaultKind::Stall, Some(p)) => p.set(if on { Fault::Stall } else { Fault::Pass }),
            (FaultKind::Kill, Some(p)) => {
                if on {
                    p.set(Fault::Refuse);
                    p.drop_connections();
                } else {
                    p.set(Fault::Pass);
                }
            }
            (FaultKind::Lag | FaultKind::StopReplication, _) => {
                let addr =
                    self.servers.get(&f.backend).copied().ok_or_else(|| {
                        anyhow::anyhow!("fault on {}: no such backend", f.backend)
                    })?;
                let opts: Opts = OptsBuilder::default()
                    .ip_or_hostname(addr.ip().to_string())
                    .tcp_port(addr.port())
                    .user(Some(w.admin.user.clone()))
                    .pass(Some(w.admin.password.clone()))
                    .prefer_socket(false)
                    .into();
                let mut c = mysql_async::Conn::new(opts).await.map_err(|e| {
                    anyhow::anyhow!(
                        "fault on {}: connecting as {}: {e}",
                        f.backend,
                        w.admin.user
                    )
                })?;
                // MariaDB changes MASTER_DELAY only with both replication threads stopped.
                let delay = format!(
                    "CHANGE MASTER TO MASTER_DELAY = {}",
                    if on { f.delay_ms.div_ceil(1000) } else { 0 }
                );
                let steps: Vec<&str> = match (f.kind, on) {
                    (FaultKind::Lag, _) => vec!["STOP SLAVE", &delay, "START SLAVE"],
                    (_, true) => vec!["STOP SLAVE SQL_THREAD"],
                    (_, false) => vec!["START SLAVE SQL_THREAD"],
                };
                for sql in steps {
                    c.query_drop(sql)
                        .await
                        .map_err(|e| anyhow::anyhow!("fault on {}: {sql}: {e}", f.backend))?;
                }
                let _ = c.disconnect().await;
            }
            (_, None) => {}
        }
        Ok(())
    }

    /// Ends every fault (after a run, and before leaving on an error).
    async fn clear(&self, w: &Workload) {
        for f in &w.faults {
            if let Err(e) = self.apply(w, f, false).await {
                eprintln!("sluice bench: clearing a fault: {e}");
            }
        }
    }
}

/// One run's shape.
#[derive(Clone, Copy)]
struct RunShape {
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
    faults: bool,
}

struct Bench {
    opts: BenchOptions,
    workload: Arc<Workload>,
    faults: Arc<Faults>,
    base: PathBuf,
    runs: usize,
}

/// Runs the bench: every candidate, `repeat` rounds.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let base = crate::policy_dir(&opts.config)
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "policies.dir: sluice bench compares routers: configure a policy directory"
            )
        })?;
    anyhow::ensure!(!opts.candidates.is_empty(), "no candidates to compare");
    let faults = Arc::new(Faults::start(&opts.config, &opts.workload)?);
    let workload = Arc::new(opts.workload.clone());
    let mut bench = Bench {
        opts,
        workload,
        faults,
        base,
        runs: 0,
    };
    let result = bench.run_all().await;
    bench.faults.clear(&bench.workload).await;
    result
}

impl Bench {
    async fn run_all(&mut self) -> anyhow::Result<BenchReport> {
        let w = Arc::clone(&self.workload);
        let first = self.opts.candidates[0].clone();
        self.prepare(&first).await?;
        let (calibrated, rate) = match (w.load.mode, w.load.rate) {
            (Mode::Open, Some(Rate::PerSecond(r))) => (None, Some(r)),
            (Mode::Open, Some(Rate::OfMaximum(share))) => {
                let shape = RunShape {
                    rate: None,
                    warmup: Duration::from_secs(2),
                    duration: Duration::from_secs(w.load.calibrate_secs.max(1)),
                    faults: false,
                };
                let r = self.run_once(&first, 0, shape, "calibration").await?;
                (Some(r.throughput), Some(r.throughput * share))
            }
            _ => (None, None),
        };
        let shape = RunShape {
            rate,
            warmup: w.warmup(),
            duration: w.duration(),
            faults: true,
        };
        let mut runs = Vec::new();
        for round in 0..self.opts.repeat.max(1) {
            for c in self.opts.candidates.clone() {
                runs.push(self.run_once(&c, round, shape, c.name()).await?);
            }
        }
        Ok(BenchReport {
            version: env!("CARGO_PKG_VERSION"),
            workload: (*w).clone(),
            calibrated_maximum: calibrated,
            rate,
            fault_windows: w
                .faults
                .iter()
                .map(|f| {
                    let (a, b) = w.window(f);
                    (
                        format!("{:?} {}", f.kind, f.backend).to_lowercase(),
                        a.as_secs_f64(),
                        b.as_secs_f64(),
                    )
                })
                .collect(),
            runs,
        })
    }

    /// The configuration a candidate's gateway runs with.
    fn gateway_config(&self, policies: PathBuf) -> Config {
        let mut c = self.opts.config.clone();
        c.frontend.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.frontend.drain_timeout_secs = 2;
        c.admin.enabled = false;
        c.reload.watch = false;
        c.source = None;
        c.policies.dir = Some(policies);
        c.policies.enabled = true;
        c.policies.watch = false;
        c.otlp.endpoint = None;
        c.otlp.traces = false;
        c.otlp.metrics = false;
        c.audit.enabled = false;
        self.faults.route_through(&mut c);
        c
    }

    fn client_opts(&self, addr: SocketAddr) -> Opts {
        OptsBuilder::default()
            .ip_or_hostname(addr.ip().to_string())
            .tcp_port(addr.port())
            .user(Some(self.opts.user.clone()))
            .pass(Some(self.opts.password.clone()))
            .db_name(Some(self.workload.database.clone()))
            .prefer_socket(false)
            .into()
    }

    /// Creates and fills the tables through a gateway running `candidate`.
    async fn prepare(&mut self, candidate: &Candidate) -> anyhow::Result<()> {
        let gw = self.start_gateway(candidate).await?;
        let result = driver::prepare_tables(&self.client_opts(gw.addr), &self.workload).await;
        gw.stop().await;
        result
    }

    async fn start_gateway(&mut self, candidate: &Candidate) -> anyhow::Result<RunningGateway> {
        self.runs += 1;
        let dir = candidate::prepare(&self.base, candidate, self.runs)?;
        let config = self.gateway_config(dir.path.clone());
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let bound = crate::bind(config, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!("candidate {}: {e:#}", candidate.name()))?;
        let addr = bound.local_addr()?;
        let gateway = bound.gateway();
        let task = tokio::spawn(bound.run());
        Ok(RunningGateway {
            addr,
            gateway,
            stop,
            task,
            _dir: dir,
        })
    }

    async fn run_once(
        &mut self,
        candidate: &Candidate,
        round: u32,
        shape: RunShape,
        label: &str,
    ) -> anyhow::Result<RunReport> {
        let gw = self.start_gateway(candidate).await?;
        let result = self.drive(&gw, candidate, round, shape, label).await;
        self.faults.clear(&self.workload).await;
        gw.stop().await;
        result
    }

    async fn drive(
        &self,
        gw: &RunningGateway,
        candidate: &Candidate,
        round: u32,
        shape: RunShape,
        label: &str,
    ) -> anyhow::Result<RunReport> {
        let mut w = (*self.workload).clone();
        w.warmup_secs = shape.warmup.as_secs();
        w.duration_secs = shape.duration.as_secs();
        let w = Arc::new(w);
        let opts = self.client_opts(gw.addr);
        let conns = driver::connect_all(&opts, w.connections).await?;
        let start = Instant::now() + Duration::from_millis(20);
        let measure = start + shape.warmup;
        let windows = if shape.faults {
            self.workload.faults.iter().map(|f| w.window(f)).collect()
        } else {
            Vec::new()
        };
        let recorder = Arc::new(Mutex::new(Recorder::new(measure, shape.duration, windows)));
        let plan = Arc::new(driver::RunPlan {
            workload: Arc::clone(&w),
            opts,
            start,
            rate: shape.rate,
            nonce: (u64::from(round) << 8 | (self.runs as u64 & 0xFF)) & 0xFF_FFFF,
        });
        let workers: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                tokio::spawn(driver::run_connection(
                    Arc::clone(&plan),
                    i as u32,
                    c,
                    Arc::clone(&recorder),
                ))
            })
            .collect();
        let sampler = tokio::spawn(sample_backends(
            Arc::clone(&gw.gateway),
            measure,
            shape.duration,
        ));
        let scheduled = if shape.faults {
            self.schedule_faults(&w, measure)
        } else {
            Vec::new()
        };
        let progress = self.show_progress(label, round, measure, shape.duration, &recorder);
        for h in workers {
            let _ = h.await;
        }
        progress.abort();
        for s in scheduled {
            s.abort();
        }
        let backends = sampler.await.unwrap_or_default();
        let report = recorder
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder poisoned"))?
            .report(candidate.name(), round, backends);
        if self.opts.progress {
            eprint!("\r\x1b[2K");
        }
        eprintln!(
            "{label} (round {}): {:.0} ops/s, p50 {}, p99 {}, {} errors, {} stale reads",
            round + 1,
            report.throughput,
            report::human_us(report.latency.p50),
            report::human_us(report.latency.p99),
            report.errors,
            report.stale_reads
        );
        Ok(report)
    }

    /// Starts and ends each fault at its moment of the run (a task each).
    fn schedule_faults(
        &self,
        w: &Arc<Workload>,
        measure: Instant,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        w.faults
            .iter()
            .cloned()
            .map(|f| {
                let (a, b) = w.window(&f);
                let w = Arc::clone(w);
                let faults = Arc::clone(&self.faults);
                tokio::spawn(async move {
                    tokio::time::sleep_until((measure + a).into()).await;
                    if let Err(e) = faults.apply(&w, &f, true).await {
                        eprintln!("\nsluice bench: {e}");
                    }
                    tokio::time::sleep_until((measure + b).into()).await;
                    if let Err(e) = faults.apply(&w, &f, false).await {
                        eprintln!("\nsluice bench: {e}");
                    }
                })
            })
            .collect()
    }

    fn show_progress(
        &self,
        label: &str,
        round: u32,
        measure: Instant,
        duration: Duration,
        recorder: &Arc<Mutex<Recorder>>,
    ) -> tokio::task::JoinHandle<()> {
        let show = self.opts.progress;
        let label = label.to_string();
        let recorder = Arc::clone(recorder);
        tokio::spawn(async move {
            if !show {
                return;
            }
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = Instant::now();
                let done = now.saturating_duration_since(measure).min(duration);
                let (ops, errors, p99) = recorder.lock().map(|r| r.progress()).unwrap_or_default();
                let share = done.as_secs_f64() / duration.as_secs_f64().max(1e-9);
                let filled = (share * 20.0).round() as usize;
                let bar: String = "#".repeat(filled) + &".".repeat(20 - filled.min(20));
                let rate = if done.is_zero() {
                    0.0
                } else {
                    ops as f64 / done.as_secs_f64()
                };
                let phase = if now < measure { "warm-up" } else { "" };
                eprint!(
                    "\r\x1b[2K{label} (round {}) [{bar}] {:>3.0}/{} s {phase} {rate:.0} ops/s p99 {} errors {errors}",
                    round + 1,
                    done.as_secs_f64(),
                    duration.as_secs(),
                    report::human_us(p99),
                );
                let _ = std::io::stderr().flush();
            }
        })
    }
}

/// A candidate's gateway while it runs.
struct RunningGateway {
    addr: SocketAddr,
    gateway: Arc<crate::gateway::Gateway>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: candidate::CandidateDir,
}

impl RunningGateway {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Statements each backend served, per second of the measured run.
async fn sample_backends(
    gw: Arc<crate::gateway::Gateway>,
    measure: Instant,
    duration: Duration,
) -> Vec<BackendSeries> {
    let counts = |gw: &crate::gateway::Gateway| -> Vec<(String, u64)> {
        gw.fleet()
            .backends()
            .iter()
            .map(|b| {
                (
                    b.name().to_string(),
                    b.traffic
                        .statements
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    };
    tokio::time::sleep_until(measure.into()).await;
    let mut last = counts(&gw);
    let mut series: Vec<BackendSeries> = last
        .iter()
        .map(|(n, _)| BackendSeries {
            backend: n.clone(),
            statements: Vec::new(),
        })
        .collect();
    let secs = duration.as_secs_f64().ceil() as u32;
    for s in 1..=secs {
        tokio::time::sleep_until((measure + Duration::from_secs(u64::from(s))).into()).await;
        let now = counts(&gw);
        for (i, (_, n)) in now.iter().enumerate() {
            if let (Some(series), Some((_, before))) = (series.get_mut(i), last.get(i)) {
                series.statements.push(n.saturating_sub(*before));
            }
        }
        last = now;
    }
    series
}

/// Whether stderr shows a progress line (a terminal).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}
