//! What a `sluice bench` run measured: per candidate router, throughput, latency percentiles
//! (HDR histograms, microseconds), errors, stale reads, per-second timelines and each backend's
//! share; and the terminal table and JSON made from it (the HTML report is [`super::html`]).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::workload::{Class, Workload};

/// The longest latency recorded; slower operations count at this value.
const MAX_US: u64 = 600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("static histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// p50, p90, p99, p99.9 and max as a person reads them (the table columns).
    pub fn human(&self) -> [String; 5] {
        [self.p50, self.p90, self.p99, self.p999, self.max].map(human_us)
    }

    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// How one operation ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok,
    /// It read back something other than the session's own write.
    Stale,
    Error(String),
}

/// One second of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    pub ops: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Statements a backend served, per second of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackendSeries {
    pub backend: String,
    pub statements: Vec<u64>,
}

/// One candidate's run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub candidate: String,
    /// Which repetition (0-based): candidates run interleaved, round by round.
    pub round: u32,
    pub seconds: f64,
    pub ops: u64,
    pub throughput: f64,
    pub errors: u64,
    /// The most frequent error messages, with counts.
    pub error_samples: Vec<(String, u64)>,
    pub stale_reads: u64,
    pub latency: Percentiles,
    /// Operations due while a fault was active.
    pub fault_latency: Option<Percentiles>,
    /// Operations due outside every fault window (when there are faults).
    pub clear_latency: Option<Percentiles>,
    pub classes: Vec<(String, Percentiles)>,
    pub timeline: Vec<Second>,
    pub backends: Vec<BackendSeries>,
    /// (quantile, latency µs) points of the latency distribution.
    pub cdf: Vec<(f64, u64)>,
}

/// A whole bench: the workload, the resolved rate and every run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub version: &'static str,
    pub workload: Workload,
    /// Closed-loop maximum measured for a rate given as a share (operations per second).
    pub calibrated_maximum: Option<f64>,
    /// The open loop's rate (operations per second).
    pub rate: Option<f64>,
    /// Fault windows, seconds from the end of warm-up.
    pub fault_windows: Vec<(String, f64, f64)>,
    pub runs: Vec<RunReport>,
}

/// The quantiles a CDF is drawn through (dense in the tail).
const CDF_QUANTILES: [f64; 30] = [
    0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0,
];

/// Collects a run's operations (shared by its connections behind one lock: a few hundred
/// nanoseconds per operation, far below what an operation costs).
pub struct Recorder {
    start: Instant,
    duration: Duration,
    windows: Vec<(Duration, Duration)>,
    all: Histogram<u64>,
    fault: Histogram<u64>,
    clear: Histogram<u64>,
    classes: Vec<Histogram<u64>>,
    seconds: Vec<(Histogram<u64>, u64)>,
    errors: u64,
    error_samples: std::collections::HashMap<String, u64>,
    stale: u64,
}

impl Recorder {
    /// Operations due in `[start, start + duration)` count; fault `windows` are offsets from
    /// `start`.
    pub fn new(start: Instant, duration: Duration, windows: Vec<(Duration, Duration)>) -> Self {
        let secs = duration.as_secs_f64().ceil() as usize;
        Self {
            start,
            duration,
            windows,
            all: histogram(3),
            fault: histogram(3),
            clear: histogram(3),
            classes: Class::ALL.iter().map(|_| histogram(3)).collect(),
            seconds: (0..secs.max(1)).map(|_| (histogram(2), 0)).collect(),
            errors: 0,
            error_samples: std::collections::HashMap::new(),
            stale: 0,
        }
    }

    /// An operation of `class` due (or sent) at `from` ended at `end`.
    pub fn record(&mut self, class: Class, from: Instant, end: Instant, outcome: &Outcome) {
        let Some(offset) = from.checked_duration_since(self.start) else {
            return; // warm-up
        };
        if offset >= self.duration {
            return;
        }
        let us = end
            .saturating_duration_since(from)
            .as_micros()
            .clamp(1, u128::from(MAX_US)) as u64;
        let last = self.seconds.len() - 1;
        let second = &mut self.seconds[(offset.as_secs() as usize).min(last)];
        match outcome {
            Outcome::Error(e) => {
                self.errors += 1;
                second.1 += 1;
                if self.error_samples.len() < 32 || self.error_samples.contains_key(e) {
                    *self.error_samples.entry(e.clone()).or_default() += 1;
                }
                return;
            }
            Outcome::Stale => self.stale += 1,
            Outcome::Ok => {}
        }
        let _ = self.all.record(us);
        let _ = second.0.record(us);
        if let Some(i) = Class::ALL.iter().position(|c| *c == class) {
            let _ = self.classes[i].record(us);
        }
        if !self.windows.is_empty() {
            let faulty = self
                .windows
                .iter()
                .any(|(a, b)| offset >= *a && offset < *b);
            let _ = if faulty {
                &mut self.fault
            } else {
                &mut self.clear
            }
            .record(us);
        }
    }

    /// The run's report (`backends`: the per-second statement counts sampled meanwhile).
    pub fn report(&self, candidate: &str, round: u32, backends: Vec<BackendSeries>) -> RunReport {
        let seconds = self.duration.as_secs_f64();
        let mut error_samples: Vec<(String, u64)> = self
            .error_samples
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        error_samples.sort_by_key(|e| std::cmp::Reverse(e.1));
        error_samples.truncate(5);
        let faults = !self.windows.is_empty();
        RunReport {
            candidate: candidate.to_string(),
            round,
            seconds,
            ops: self.all.len(),
            throughput: self.all.len() as f64 / seconds,
            errors: self.errors,
            error_samples,
            stale_reads: self.stale,
            latency: Percentiles::of(&self.all),
            fault_latency: faults.then(|| Percentiles::of(&self.fault)),
            clear_latency: faults.then(|| Percentiles::of(&self.clear)),
            classes: Class::ALL
                .iter()
                .zip(&self.classes)
                .filter(|(_, h)| !h.is_empty())
                .map(|(c, h)| (c.name().to_string(), Percentiles::of(h)))
                .collect(),
            timeline: self
                .seconds
                .iter()
                .map(|(h, errors)| Second {
                    ops: h.len(),
                    errors: *errors,
                    p50_us: if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(0.5)
                    },
                    p99_us: if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(0.99)
                    },
                })
                .collect(),
            backends,
            cdf: if self.all.is_empty() {
                Vec::new()
            } else {
                CDF_QUANTILES
                    .iter()
                    .map(|&q| (q, self.all.value_at_quantile(q)))
                    .collect()
            },
        }
    }

    /// Operations so far, errors, and the p99 so far (the progress line).
    pub fn progress(&self) -> (u64, u64, u64) {
        let p99 = if self.all.is_empty() {
            0
        } else {
            self.all.value_at_quantile(0.99)
        };
        (self.all.len(), self.errors, p99)
    }
}

pub use crate::telemetry::human_us;

impl BenchReport {
    /// The terminal table: one row per run, then (with faults) the fault window's percentiles.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "workload: {}", self.workload.name);
        if let Some(m) = self.calibrated_maximum {
            let _ = writeln!(out, "closed-loop maximum: {m:.0} ops/s");
        }
        if let Some(r) = self.rate {
            let _ = writeln!(out, "open loop at {r:.0} ops/s");
        }
        for (what, a, b) in &self.fault_windows {
            let _ = writeln!(out, "fault: {what} from {a:.1} s to {b:.1} s");
        }
        let header = format!(
            "{:<16} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
            "candidate", "round", "ops/s", "p50", "p90", "p99", "p99.9", "max", "errors", "stale"
        );
        let row = |out: &mut String,
                   name: &str,
                   round: u32,
                   tput: f64,
                   p: &Percentiles,
                   r: &RunReport| {
            let [p50, p90, p99, p999, max] = p.human();
            let _ = writeln!(
                out,
                "{:<16} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}",
                name,
                round + 1,
                tput,
                p50,
                p90,
                p99,
                p999,
                max,
                r.errors,
                r.stale_reads
            );
        };
        let _ = writeln!(out, "\nwhole run\n{header}");
        for r in &self.runs {
            row(&mut out, &r.candidate, r.round, r.throughput, &r.latency, r);
        }
        if self.runs.iter().any(|r| r.fault_latency.is_some()) {
            let _ = writeln!(out, "\nwhile a fault was active\n{header}");
            for r in &self.runs {
                if let Some(p) = &r.fault_latency {
                    let secs: f64 = self.fault_windows.iter().map(|(_, a, b)| b - a).sum();
                    row(
                        &mut out,
                        &r.candidate,
                        r.round,
                        p.count as f64 / secs.max(1e-9),
                        p,
                        r,
                    );
                }
            }
        }
        for r in self.runs.iter().filter(|r| !r.error_samples.is_empty()) {
            let _ = writeln!(out, "\nerrors of {} (round {}):", r.candidate, r.round + 1);
            for (e, n) in &r.error_samples {
                let _ = writeln!(out, "  {n} x {e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_count_by_when_they_were_due_and_fault_windows_split_them() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Recorder::new(t0, s(10), vec![(s(4), s(6))]);
        let ms = Duration::from_millis;
        // Warm-up and after the end: not counted.
        let before = t0.checked_sub(ms(1)).expect("a millisecond ago");
        r.record(Class::PointSelect, before, t0 + ms(1), &Outcome::Ok);
        r.record(Class::PointSelect, t0 + s(10), t0 + s(11), &Outcome::Ok);
        // Due in the fault window, even though it ended after it.
        r.record(Class::PointSelect, t0 + s(5), t0 + s(7), &Outcome::Ok);
        r.record(
            Class::WriteThenRead,
            t0 + s(1),
            t0 + s(1) + ms(2),
            &Outcome::Stale,
        );
        r.record(
            Class::PointSelect,
            t0 + s(2),
            t0 + s(2),
            &Outcome::Error("1105".into()),
        );
        let rep = r.report("p2c", 0, Vec::new());
        assert_eq!((rep.ops, rep.errors, rep.stale_reads), (2, 1, 1));
        let fault = rep.fault_latency.expect("fault window");
        assert_eq!(fault.count, 1);
        assert!(fault.p50 >= 1_990_000, "{fault:?}");
        assert_eq!(rep.clear_latency.expect("clear").count, 1);
        assert_eq!(rep.timeline[5].ops, 1);
        assert_eq!(rep.timeline[2].errors, 1);
        assert_eq!(rep.classes.len(), 2);
        assert_eq!(rep.cdf.last().map(|p| p.0), Some(1.0));
    }
}
