//! What a `sluice simulate` run found: per candidate router, the time in system's mean and
//! percentiles, each with its 95% interval (batch means, batch quantiles), over the whole run and
//! over the requests that arrived while a fault was active; errors; each server's share. Made
//! into the terminal table, JSON, and the same HTML report as `sluice bench` (its plots drawn from
//! [`crate::bench::report::RunReport`]s in virtual time).

use std::fmt::Write as _;

use serde::Serialize;

use super::driver::Outcome;
use super::scenario::Scenario;
use super::stats::{Estimate, batch_means, batch_quantile, quantile};
use crate::bench::html;
use crate::bench::report::{BackendSeries, Percentiles, RunReport, Second};

/// Timeline buckets a run is cut into for the plots.
const BUCKETS: usize = 60;

/// At most this many servers get a line of their own in the share plot.
const SHARE_LINES: usize = 8;

/// A figure in milliseconds and the half-width of its 95% interval (none when the batches are
/// too small for it).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Figure {
    pub ms: f64,
    pub half_width_ms: Option<f64>,
}

impl Figure {
    fn of(e: Option<Estimate>, fallback: f64) -> Self {
        match e {
            Some(e) => Self {
                ms: e.mean,
                half_width_ms: Some(e.half_width),
            },
            None => Self {
                ms: fallback,
                half_width_ms: None,
            },
        }
    }

    /// "12.3 ±0.4" (or "12.3" without an interval).
    pub fn human(&self) -> String {
        let v = |x: f64| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else if x >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        };
        match self.half_width_ms {
            Some(h) => format!("{} ±{}", v(self.ms), v(h)),
            None => v(self.ms),
        }
    }
}

/// The figures of a set of requests (times in system, ms, in arrival order).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    pub count: usize,
    pub mean: Figure,
    pub p50: Figure,
    pub p90: Figure,
    pub p95: Figure,
    pub p99: Figure,
    pub p999: Figure,
    pub max_ms: f64,
}

impl Figures {
    pub fn of(times: &[f64], batches: usize) -> Self {
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let q = |p: f64| Figure::of(batch_quantile(times, batches, p), quantile(times, p));
        Self {
            count: times.len(),
            mean: Figure::of(batch_means(times, 0, batches), mean),
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max_ms: times.iter().copied().fold(0.0, f64::max),
        }
    }

    fn cells(&self) -> [String; 7] {
        [
            self.mean.human(),
            self.p50.human(),
            self.p90.human(),
            self.p95.human(),
            self.p99.human(),
            self.p999.human(),
            Figure {
                ms: self.max_ms,
                half_width_ms: None,
            }
            .human(),
        ]
    }
}

/// One candidate's run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimRun {
    pub candidate: String,
    pub requests: u64,
    pub errors: u64,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
    /// After the warm-up.
    pub whole: Figures,
    /// Requests (after the warm-up) that arrived while a fault was active.
    pub during_faults: Option<Figures>,
    /// Requests each server answered (server 0 is the primary).
    pub served: Vec<u64>,
    /// What the HTML plots draw (virtual time, microseconds).
    #[serde(skip)]
    pub plot: RunReport,
}

impl SimRun {
    /// From the outcomes of the candidate's replications (each with its own warm-up dropped).
    pub fn of(candidate: &str, scenario: &Scenario, outs: &[Outcome], wall_secs: f64) -> Self {
        let warmup = |o: &Outcome| (scenario.warmup * o.time_in_system.len() as f64) as usize;
        let times: Vec<f64> = outs
            .iter()
            .flat_map(|o| o.answered_after(warmup(o)))
            .collect();
        let windows = scenario.fault_windows();
        let during_faults = (!windows.is_empty()).then(|| {
            let faulty: Vec<f64> = outs
                .iter()
                .flat_map(|o| {
                    o.arrived_at
                        .iter()
                        .zip(&o.time_in_system)
                        .skip(warmup(o))
                        .filter(|(a, t)| {
                            !t.is_nan() && windows.iter().any(|(_, f, u)| *a >= f && *a < u)
                        })
                        .map(|(_, t)| *t)
                })
                .collect();
            Figures::of(&faulty, scenario.batches)
        });
        let mut served = vec![0u64; outs.first().map_or(0, |o| o.served.len())];
        for o in outs {
            for (s, n) in served.iter_mut().zip(&o.served) {
                *s += n;
            }
        }
        Self {
            candidate: candidate.to_string(),
            requests: outs.iter().map(|o| o.time_in_system.len() as u64).sum(),
            errors: outs.iter().map(|o| o.errors).sum(),
            wall_secs,
            whole: Figures::of(&times, scenario.batches),
            during_faults,
            served,
            plot: plot_run(candidate, scenario, outs, &times),
        }
    }
}

/// A whole simulation: the scenario, its resolved rate, and every candidate's run.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub version: &'static str,
    pub scenario: Scenario,
    /// The arrival rate (requests per second of virtual time).
    pub rate_per_sec: f64,
    /// How long the arrivals lasted (virtual ms).
    pub span_ms: f64,
    /// Fault windows as (what, from ms, until ms).
    pub fault_windows: Vec<(String, f64, f64)>,
    pub runs: Vec<SimRun>,
}

impl SimReport {
    /// The terminal table: the whole run, then (with faults) the fault windows.
    pub fn table(&self) -> String {
        let s = &self.scenario;
        let mut out = String::new();
        let _ = writeln!(out, "scenario: {}", s.name);
        let _ = writeln!(out, "{}", describe(self));
        for (what, a, b) in &self.fault_windows {
            let _ = writeln!(out, "fault: {what} from {a:.0} ms to {b:.0} ms");
        }
        let header = format!(
            "{:<14} {:>8} {:>6} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>6}",
            "candidate",
            "requests",
            "errors",
            "mean ms",
            "p50",
            "p90",
            "p95",
            "p99",
            "p99.9",
            "max"
        );
        let rows = |out: &mut String, pick: &dyn Fn(&SimRun) -> Option<&Figures>| {
            let _ = writeln!(out, "{header}");
            for r in &self.runs {
                let Some(f) = pick(r) else { continue };
                let [mean, p50, p90, p95, p99, p999, max] = f.cells();
                let _ = writeln!(
                    out,
                    "{:<14} {:>8} {:>6} {mean:>13} {p50:>13} {p90:>13} {p95:>13} {p99:>13} {p999:>13} {max:>6}",
                    r.candidate, f.count, r.errors
                );
            }
        };
        let _ = writeln!(
            out,
            "\nafter warm-up (95% intervals: batch means / batch quantiles)"
        );
        rows(&mut out, &|r| Some(&r.whole));
        if self.runs.iter().any(|r| r.during_faults.is_some()) {
            let _ = writeln!(out, "\nrequests that arrived while a fault was active");
            rows(&mut out, &|r| r.during_faults.as_ref());
        }
        out
    }

    /// The self-contained HTML report: the tables with their intervals and `sluice bench`'s
    /// plots.
    pub fn html(&self) -> String {
        let mut out = html::page_start("sluice simulate");
        let _ = write!(
            out,
            "<h1>sluice simulate: {}</h1><p>{}</p>",
            html::escape(&self.scenario.name),
            html::escape(&describe(self))
        );
        for (what, a, b) in &self.fault_windows {
            let _ = write!(
                out,
                "<p>Fault: {} from {a:.0} ms to {b:.0} ms (shaded).</p>",
                html::escape(what)
            );
        }
        self.html_table(&mut out, "After warm-up", &|r| Some(&r.whole));
        if self.runs.iter().any(|r| r.during_faults.is_some()) {
            self.html_table(
                &mut out,
                "Requests that arrived while a fault was active",
                &|r| r.during_faults.as_ref(),
            );
        }
        let plots: Vec<RunReport> = self.runs.iter().map(|r| r.plot.clone()).collect();
        let windows: Vec<(String, f64, f64)> = self
            .fault_windows
            .iter()
            .map(|(w, a, b)| (w.clone(), a / 1000.0, b / 1000.0))
            .collect();
        html::plots(
            &mut out,
            &html::View {
                runs: &plots,
                fault_windows: &windows,
                bucket_secs: bucket_ms(self.span_ms) / 1000.0,
            },
        );
        let _ = write!(
            out,
            "<p>sluice {} · <code>sluice simulate</code> · virtual time; intervals are 95% \
             (batch means for the mean, batch quantiles for percentiles); seed {}.</p></body></html>",
            self.version, self.scenario.seed
        );
        out
    }

    fn html_table(
        &self,
        out: &mut String,
        title: &str,
        pick: &dyn Fn(&SimRun) -> Option<&Figures>,
    ) {
        let _ = write!(
            out,
            "<h3>{}</h3><table><tr><th>candidate</th><th>requests</th><th>errors</th><th>mean ms</th>\
             <th>p50</th><th>p90</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th></tr>",
            html::escape(title)
        );
        for r in &self.runs {
            let Some(f) = pick(r) else { continue };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                html::escape(&r.candidate),
                f.count,
                r.errors
            );
            for c in f.cells() {
                let _ = write!(out, "<td>{}</td>", html::escape(&c));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
}

/// One line on the fleet and the load.
fn describe(r: &SimReport) -> String {
    let s = &r.scenario;
    format!(
        "{} replicas x {} slots, {:?} service (mean {:.2} ms), utilisation {:.2} ({:.0} requests/s \
         for {:.0} ms), {} clients through {} gateway(s), {} requests x {} replication(s), first \
         {:.0}% of each dropped",
        s.servers.replicas,
        s.servers.slots,
        s.servers.service,
        s.service().mean(),
        s.utilisation,
        r.rate_per_sec,
        r.span_ms,
        s.clients,
        s.gateways,
        s.requests,
        s.replications,
        s.warmup * 100.0
    )
}

fn bucket_ms(span_ms: f64) -> f64 {
    (span_ms / BUCKETS as f64).max(1e-3)
}

/// The run as the HTML plots take it: latencies in µs, a timeline of [`BUCKETS`] intervals of
/// virtual time, and the servers' shares (the busiest and the faulty ones, the rest as a mean).
fn plot_run(candidate: &str, scenario: &Scenario, outs: &[Outcome], times: &[f64]) -> RunReport {
    let width = bucket_ms(scenario.span_ms());
    let buckets = BUCKETS + 1;
    let mut per_bucket: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    let mut errors = vec![0u64; buckets];
    let servers = outs.first().map_or(0, |o| o.served.len());
    let mut by_server = vec![vec![0u64; buckets]; servers];
    for o in outs {
        for ((a, t), s) in o.arrived_at.iter().zip(&o.time_in_system).zip(&o.server) {
            let b = ((a / width) as usize).min(buckets - 1);
            if t.is_nan() {
                errors[b] += 1;
            } else {
                per_bucket[b].push(t * 1000.0);
            }
            if let Some(row) = by_server.get_mut(*s as usize) {
                row[b] += 1;
            }
        }
    }
    let us = |ms: f64| (ms * 1000.0).round().max(1.0) as u64;
    let percentiles = Percentiles {
        count: times.len() as u64,
        mean: times.iter().sum::<f64>() * 1000.0 / times.len().max(1) as f64,
        p50: us(quantile(times, 0.5)),
        p90: us(quantile(times, 0.9)),
        p99: us(quantile(times, 0.99)),
        p999: us(quantile(times, 0.999)),
        max: us(times.iter().copied().fold(0.0, f64::max)),
    };
    let cdf = [
        0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0,
    ]
    .iter()
    .map(|&q| (q, us(quantile(times, q))))
    .collect();
    let timeline = per_bucket
        .iter()
        .zip(&errors)
        .map(|(v, e)| Second {
            ops: v.len() as u64,
            errors: *e,
            p50_us: if v.is_empty() {
                0
            } else {
                quantile(v, 0.5).round() as u64
            },
            p99_us: if v.is_empty() {
                0
            } else {
                quantile(v, 0.99).round() as u64
            },
        })
        .collect();
    RunReport {
        candidate: candidate.to_string(),
        round: 0,
        seconds: scenario.span_ms() / 1000.0,
        ops: times.len() as u64,
        throughput: times.len() as f64 * 1000.0 / scenario.span_ms().max(1e-9),
        errors: outs.iter().map(|o| o.errors).sum(),
        error_samples: Vec::new(),
        stale_reads: 0,
        latency: percentiles,
        fault_latency: None,
        clear_latency: None,
        classes: Vec::new(),
        timeline,
        backends: share_series(scenario, by_server),
        cdf,
    }
}

/// The servers the share plot draws: all when few; else the faulty ones, the busiest, and the
/// mean of the rest.
fn share_series(scenario: &Scenario, by_server: Vec<Vec<u64>>) -> Vec<BackendSeries> {
    let name = |i: usize| {
        if i == 0 {
            "primary".to_string()
        } else {
            format!("replica{i}")
        }
    };
    if by_server.len() <= SHARE_LINES + 1 {
        return by_server
            .into_iter()
            .enumerate()
            .map(|(i, statements)| BackendSeries {
                backend: name(i),
                statements,
            })
            .collect();
    }
    let mut order: Vec<usize> = (0..by_server.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(by_server[i].iter().sum::<u64>()));
    let mut shown: Vec<usize> = scenario.faults.iter().map(|f| f.replica).collect();
    for i in order {
        if shown.len() >= SHARE_LINES {
            break;
        }
        if !shown.contains(&i) {
            shown.push(i);
        }
    }
    let rest: Vec<&Vec<u64>> = by_server
        .iter()
        .enumerate()
        .filter(|(i, _)| !shown.contains(i))
        .map(|(_, v)| v)
        .collect();
    let buckets = by_server.first().map_or(0, Vec::len);
    let mean: Vec<u64> = (0..buckets)
        .map(|b| rest.iter().map(|v| v[b]).sum::<u64>() / rest.len().max(1) as u64)
        .collect();
    let mut series: Vec<BackendSeries> = shown
        .into_iter()
        .filter_map(|i| {
            Some(BackendSeries {
                backend: name(i),
                statements: by_server.get(i)?.clone(),
            })
        })
        .collect();
    series.push(BackendSeries {
        backend: format!("mean of {} others", rest.len()),
        statements: mean,
    });
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_carry_intervals_when_the_batches_allow_and_print_with_them() {
        let times: Vec<f64> = (0..30_000).map(|i| f64::from(i % 100)).collect();
        let f = Figures::of(&times, 30);
        assert_eq!(f.count, 30_000);
        assert!(f.mean.half_width_ms.is_some() && f.p99.half_width_ms.is_some());
        assert!(
            f.p999.half_width_ms.is_none(),
            "a batch of 1000 holds one value above p99.9"
        );
        assert_eq!(f.p50.human(), "49.0 ±0.00");
        assert!((f.max_ms - 99.0).abs() < f64::EPSILON);
    }
}
