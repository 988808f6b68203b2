//! The `sluice bench` report as one self-contained HTML file: tables of the percentiles, and
//! inline SVG plots (latency by percentile per candidate; p99 over time with the fault windows
//! shaded; each backend's statements per second under each candidate). No scripts, no network.

use std::fmt::Write as _;

use super::report::{BenchReport, Percentiles, RunReport, human_us};

/// What the plots are drawn from: runs, the fault windows (seconds) and how long one timeline
/// bucket lasts (a second for `sluice bench`; the simulator's runs are shorter).
pub struct View<'a> {
    pub runs: &'a [RunReport],
    pub fault_windows: &'a [(String, f64, f64)],
    pub bucket_secs: f64,
}

const COLORS: [&str; 9] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f",
];

/// One axis: a value range, linear or log10.
#[derive(Clone, Copy)]
struct Axis {
    min: f64,
    max: f64,
    log: bool,
}

impl Axis {
    fn unit(self, v: f64) -> f64 {
        let (a, b, v) = if self.log {
            (self.min.log10(), self.max.log10(), v.max(self.min).log10())
        } else {
            (self.min, self.max, v)
        };
        if b > a {
            ((v - a) / (b - a)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A plot area in an SVG of `W` x `H` pixels.
struct Plot {
    x: Axis,
    y: Axis,
    svg: String,
}

const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

impl Plot {
    fn new(title: &str, x: Axis, y: Axis) -> Self {
        let mut svg = String::new();
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11"><title>{}</title><rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            escape(title),
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        Self { x, y, svg }
    }

    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        (
            LEFT + self.x.unit(x) * (W - LEFT - RIGHT),
            H - BOTTOM - self.y.unit(y) * (H - TOP - BOTTOM),
        )
    }

    fn x_tick(&mut self, v: f64, label: &str) {
        let (x, _) = self.px(v, self.y.min);
        let _ = write!(
            self.svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 14.0,
            escape(label)
        );
    }

    fn y_tick(&mut self, v: f64, label: &str) {
        let (_, y) = self.px(self.x.min, v);
        let _ = write!(
            self.svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            escape(label)
        );
    }

    fn axis_labels(&mut self, x: &str, y: &str) {
        let _ = write!(
            self.svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            H - 6.0,
            escape(x),
            TOP + (H - TOP - BOTTOM) / 2.0,
            TOP + (H - TOP - BOTTOM) / 2.0,
            escape(y)
        );
    }

    fn band(&mut self, from: f64, to: f64, label: &str) {
        let (a, _) = self.px(from, self.y.min);
        let (b, _) = self.px(to, self.y.min);
        let _ = write!(
            self.svg,
            r##"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#f5c6c6" opacity="0.5"><title>{}</title></rect>"##,
            (b - a).max(0.0),
            H - TOP - BOTTOM,
            escape(label)
        );
    }

    fn line(&mut self, points: &[(f64, f64)], color: &str, width: f64, opacity: f64) {
        let mut d = String::new();
        for (i, &(x, y)) in points.iter().enumerate() {
            let (px, py) = self.px(x, y);
            let _ = write!(d, "{}{px:.1},{py:.1}", if i == 0 { "M" } else { " L" });
        }
        let _ = write!(
            self.svg,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="{width}" opacity="{opacity}"/>"#
        );
    }

    fn legend(&mut self, i: usize, label: &str, color: &str) {
        let y = TOP + 14.0 * i as f64 + 8.0;
        let x = W - RIGHT + 10.0;
        let _ = write!(
            self.svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 18.0,
            x + 24.0,
            y + 4.0,
            escape(label)
        );
    }

    /// A time axis over a run: the fault windows shaded, a tick every tenth (whole seconds, or
    /// tenths for a run shorter than ten seconds).
    fn timeline(&mut self, view: &View, seconds: f64) {
        for (what, a, b) in view.fault_windows {
            self.band(*a, *b, what);
        }
        let fine = seconds < 10.0;
        let step = if fine {
            ((seconds / 10.0) * 10.0).ceil().max(1.0) / 10.0
        } else {
            (seconds / 10.0).ceil().max(1.0)
        };
        let mut t = 0.0;
        while t <= seconds * 1.0001 {
            let label = if fine {
                format!("{t:.1} s")
            } else {
                format!("{t:.0} s")
            };
            self.x_tick(t, &label);
            t += step;
        }
    }

    /// A line per run (in its candidate's color, later rounds fainter), a legend, the SVG.
    fn runs(
        mut self,
        view: &View,
        names: &[&str],
        width: f64,
        points: impl Fn(&RunReport) -> Vec<(f64, f64)>,
    ) -> String {
        for r in view.runs {
            let opacity = if r.round == 0 { 1.0 } else { 0.45 };
            self.line(&points(r), color(names, &r.candidate), width, opacity);
        }
        for (i, n) in names.iter().enumerate() {
            self.legend(i, n, color(names, n));
        }
        self.finish()
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>");
        self.svg
    }
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Log-axis ticks (1, 2, 5 per decade) between `min` and `max` microseconds.
fn latency_ticks(plot: &mut Plot) {
    let mut v = 1.0;
    while v <= plot.y.max * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let t = v * m;
            if t >= plot.y.min && t <= plot.y.max {
                plot.y_tick(t, &human_us(t as u64));
            }
        }
        v *= 10.0;
    }
}

/// The candidates in first-seen order, with a color each.
fn candidates(runs: &[RunReport]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.candidate.as_str()) {
            names.push(&r.candidate);
        }
    }
    names
}

fn color(names: &[&str], name: &str) -> &'static str {
    let i = names.iter().position(|n| *n == name).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// The latency range (µs) a plot must show.
fn latency_range<'a>(values: impl Iterator<Item = &'a u64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| **v > 0)
        .fold((u64::MAX, 0), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if hi == 0 {
        return (1.0, 1000.0);
    }
    let lo = 10f64.powf((lo as f64).log10().floor());
    let hi = 10f64.powf((hi as f64).log10().ceil());
    (lo.max(1.0), hi.max(lo * 10.0))
}

/// x of a quantile on the "nines" axis: log10(1 / (1 - q)).
fn nines(q: f64) -> f64 {
    (1.0 / (1.0 - q.min(0.99999))).log10()
}

fn cdf_plot(view: &View, names: &[&str]) -> String {
    let (lo, hi) = latency_range(view.runs.iter().flat_map(|r| r.cdf.iter().map(|(_, v)| v)));
    let mut p = Plot::new(
        "Latency by percentile",
        Axis {
            min: 0.0,
            max: 4.0,
            log: false,
        },
        Axis {
            min: lo,
            max: hi,
            log: true,
        },
    );
    for (x, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        p.x_tick(x, label);
    }
    latency_ticks(&mut p);
    p.axis_labels("percentile", "latency");
    p.runs(view, names, 1.6, |r| {
        r.cdf
            .iter()
            .filter(|(q, _)| *q < 1.0)
            .map(|&(q, v)| (nines(q), v.max(1) as f64))
            .collect()
    })
}

fn p99_plot(view: &View, names: &[&str]) -> String {
    let buckets = view
        .runs
        .iter()
        .map(|r| r.timeline.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let seconds = buckets * view.bucket_secs;
    let (lo, hi) = latency_range(
        view.runs
            .iter()
            .flat_map(|r| r.timeline.iter().map(|s| &s.p99_us)),
    );
    let mut p = Plot::new(
        "p99 latency over time",
        Axis {
            min: 0.0,
            max: seconds,
            log: false,
        },
        Axis {
            min: lo,
            max: hi,
            log: true,
        },
    );
    p.timeline(view, seconds);
    latency_ticks(&mut p);
    p.axis_labels("time", "p99 of operations due then");
    let width = view.bucket_secs;
    p.runs(view, names, 1.4, |r| {
        r.timeline
            .iter()
            .enumerate()
            .filter(|(_, s)| s.ops > 0)
            .map(|(i, s)| ((i as f64 + 0.5) * width, s.p99_us.max(1) as f64))
            .collect()
    })
}

fn share_plot(view: &View, run: &RunReport) -> String {
    let width = view.bucket_secs;
    let seconds = run.timeline.len().max(1) as f64 * width;
    let top = run
        .backends
        .iter()
        .flat_map(|b| b.statements.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut p = Plot::new(
        &format!("{}: statements by backend over time", run.candidate),
        Axis {
            min: 0.0,
            max: seconds,
            log: false,
        },
        Axis {
            min: 0.0,
            max: top * 1.05,
            log: false,
        },
    );
    p.timeline(view, seconds);
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        p.y_tick(v, &format!("{v:.0}"));
    }
    p.axis_labels("time", "statements per interval");
    for (i, b) in run.backends.iter().enumerate() {
        let c = COLORS[(i + 4) % COLORS.len()];
        let pts: Vec<(f64, f64)> = b
            .statements
            .iter()
            .enumerate()
            .map(|(s, n)| ((s as f64 + 0.5) * width, *n as f64))
            .collect();
        p.line(&pts, c, 1.6, 1.0);
        p.legend(i, &b.backend, c);
    }
    p.finish()
}

fn table(out: &mut String, title: &str, rows: &[(&RunReport, Option<&Percentiles>)]) {
    let _ = write!(
        out,
        "<h3>{}</h3><table><tr><th>candidate</th><th>round</th><th>ops/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>errors</th><th>stale reads</th></tr>",
        escape(title)
    );
    for (r, p) in rows {
        let Some(p) = p else { continue };
        let [p50, p90, p99, p999, max] = p.human();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.candidate),
            r.round + 1,
            r.throughput,
            p50,
            p90,
            p99,
            p999,
            max,
            r.errors,
            r.stale_reads
        );
    }
    out.push_str("</table>");
}

/// The page's head and the opening of its body.
pub fn page_start(title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child{{text-align:left}}svg{{display:block;margin:0.5em 0 1.5em}}\
         </style></head><body>",
        escape(title)
    )
}

/// The plots: latency by percentile, p99 over time, each backend's share (first round).
pub fn plots(out: &mut String, view: &View) {
    let names = candidates(view.runs);
    out.push_str("<h2>Latency by percentile</h2><p>Every run; later rounds fainter.</p>");
    out.push_str(&cdf_plot(view, &names));
    out.push_str("<h2>p99 over time</h2>");
    out.push_str(&p99_plot(view, &names));
    out.push_str("<h2>Each backend's share</h2><p>First round of each candidate.</p>");
    for r in view.runs.iter().filter(|r| r.round == 0) {
        out.push_str(&share_plot(view, r));
    }
}

/// The whole report page.
pub fn render(report: &BenchReport) -> String {
    let w = &report.workload;
    let mut out = page_start("sluice bench");
    let _ = write!(
        out,
        "<h1>sluice bench: {}</h1><p>{} connections, {} s measured after {} s of warm-up, {}; mix: {}.</p>",
        escape(&w.name),
        w.connections,
        w.duration_secs,
        w.warmup_secs,
        match report.rate {
            Some(r) => format!(
                "open loop at {r:.0} operations/s{}",
                report
                    .calibrated_maximum
                    .map(|m| format!(" (closed-loop maximum {m:.0}/s)"))
                    .unwrap_or_default()
            ),
            None => "closed loop".into(),
        },
        escape(
            &w.classes
                .iter()
                .map(|c| format!("{} ×{}", c.kind.name(), c.weight))
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    for (what, a, b) in &report.fault_windows {
        let _ = write!(
            out,
            "<p>Fault: {} from {a:.1} s to {b:.1} s (shaded).</p>",
            escape(what)
        );
    }
    let whole: Vec<_> = report.runs.iter().map(|r| (r, Some(&r.latency))).collect();
    table(&mut out, "Whole run", &whole);
    if report.runs.iter().any(|r| r.fault_latency.is_some()) {
        let during: Vec<_> = report
            .runs
            .iter()
            .map(|r| (r, r.fault_latency.as_ref()))
            .collect();
        table(&mut out, "Operations due while a fault was active", &during);
    }
    plots(
        &mut out,
        &View {
            runs: &report.runs,
            fault_windows: &report.fault_windows,
            bucket_secs: 1.0,
        },
    );
    let _ = write!(
        out,
        "<p>sluice {} · <code>sluice bench</code> · latencies are HDR histograms; open-loop \
         operations are timed from when they were due.</p></body></html>",
        report.version
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{BackendSeries, Second};
    use crate::bench::workload::Workload;

    #[test]
    fn the_page_is_self_contained_and_names_every_candidate() {
        let run = |name: &str, p99: u64| RunReport {
            candidate: name.into(),
            round: 0,
            seconds: 2.0,
            ops: 10,
            throughput: 5.0,
            errors: 0,
            error_samples: Vec::new(),
            stale_reads: 0,
            latency: Percentiles {
                count: 10,
                p99,
                ..Percentiles::default()
            },
            fault_latency: Some(Percentiles::default()),
            clear_latency: None,
            classes: Vec::new(),
            timeline: vec![
                Second {
                    ops: 5,
                    errors: 0,
                    p50_us: 100,
                    p99_us: p99
                };
                2
            ],
            backends: vec![BackendSeries {
                backend: "replica<1>".into(),
                statements: vec![3, 4],
            }],
            cdf: vec![(0.0, 50), (0.5, 100), (0.99, p99), (1.0, p99)],
        };
        let report = BenchReport {
            version: "0",
            workload: Workload::default(),
            calibrated_maximum: Some(100.0),
            rate: Some(60.0),
            fault_windows: vec![("slow replica1".into(), 0.5, 1.0)],
            runs: vec![run("round-robin", 5000), run("p2c", 400)],
        };
        let page = render(&report);
        assert!(page.contains("round-robin") && page.contains("p2c"));
        assert!(page.contains("replica&lt;1&gt;"), "escaped");
        assert_eq!(page.matches("<svg").count(), 4, "cdf, p99, two share plots");
        assert!(
            !page.contains("<script") && !page.contains("src=\"http"),
            "no network, no scripts"
        );
    }
}
