//! `sluice replay FILE --target ADDR`: a capture run again against a server (a gateway with a
//! candidate strategy, or MySQL itself), open loop: one task per recorded connection sending its
//! commands in their order, each when it is due (its recorded time over the speed factor, idle
//! gaps longer than `skip_idle` shortened to it), and timed from when it was due, so a slower
//! target shows as latency rather than as fewer statements.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Statement, Value};
use serde::Serialize;

use super::format::{Capture, Event, ParamValue, What};
use crate::bench::report::Percentiles;

/// Prepared statements a replayed connection keeps open at once.
const STATEMENTS: usize = 16_384;

/// How to replay.
#[derive(Debug, Clone)]
pub struct PlayOptions {
    /// `host:port`.
    pub target: String,
    pub user: String,
    pub password: String,
    /// 2.0: twice as fast as recorded.
    pub speed: f64,
    /// Gaps in the whole capture longer than this are cut to it.
    pub skip_idle: Option<Duration>,
}

/// What a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct PlayReport {
    /// Statements (text and prepared executes) the capture holds, and those sent.
    pub recorded_statements: u64,
    pub statements: u64,
    pub errors: u64,
    /// Errors where the recorded statement had none.
    pub unexpected_errors: u64,
    pub error_samples: Vec<(String, u64)>,
    /// From the first command to the last answer.
    pub seconds: f64,
    /// The capture's span, after the speed factor and idle-gap skipping.
    pub scheduled_seconds: f64,
    pub throughput: f64,
    /// Microseconds from when each statement was due.
    pub latency: Percentiles,
    pub connections: usize,
}

impl PlayReport {
    pub fn table(&self) -> String {
        let [p50, p90, p99, p999, max] = self.latency.human();
        let mut out = format!(
            "{} of {} recorded statements over {} connections in {:.1} s (scheduled {:.1} s): {:.0} statements/s\n\
             latency from when due: p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  max {max}\n\
             errors: {} ({} where the recorded statement had none)\n",
            self.statements,
            self.recorded_statements,
            self.connections,
            self.seconds,
            self.scheduled_seconds,
            self.throughput,
            self.errors,
            self.unexpected_errors
        );
        for (e, n) in &self.error_samples {
            let _ = writeln!(out, "  {n} x {e}");
        }
        out
    }
}

/// What one connection's task measured.
#[derive(Default)]
struct Tally {
    statements: u64,
    errors: u64,
    unexpected: u64,
    samples: HashMap<String, u64>,
    latencies_us: Vec<u64>,
    last: Option<Instant>,
}

/// Each event's due offset: recorded time over `speed`, idle gaps beyond `skip` cut to it.
fn schedule(events: &[Event], speed: f64, skip: Option<Duration>) -> Vec<Duration> {
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| events[i].t);
    let skip_us = skip.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut due = vec![Duration::ZERO; events.len()];
    let (mut removed, mut previous) = (0u64, None::<u64>);
    for i in order {
        let t = events[i].t;
        if let (Some(p), Some(s)) = (previous, skip_us) {
            removed += t.saturating_sub(p).saturating_sub(s);
        }
        previous = Some(t);
        let at = t.saturating_sub(removed) as f64 / speed.max(1e-6);
        due[i] = Duration::from_micros(at as u64);
    }
    due
}

fn value(p: Option<&ParamValue>) -> Value {
    match p {
        None => Value::NULL,
        Some(ParamValue::Int(i)) => Value::Int(*i),
        Some(ParamValue::Uint(u)) => Value::UInt(*u),
        Some(ParamValue::Double(d)) => Value::Double(*d),
        Some(ParamValue::Text(s) | ParamValue::Date(s) | ParamValue::Time(s)) => {
            Value::Bytes(s.as_bytes().to_vec())
        }
        Some(ParamValue::Hex(h)) => Value::Bytes(
            (0..h.len() / 2)
                .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                .collect(),
        ),
    }
}

/// Replays `capture` as `opts` says.
pub async fn play(capture: &Capture, opts: &PlayOptions) -> anyhow::Result<PlayReport> {
    if capture.header.redacted {
        anyhow::bail!(
            "this capture's literals were redacted: it can be evaluated offline (--offline), not run"
        );
    }
    let due = schedule(&capture.events, opts.speed, opts.skip_idle);
    let mut by_connection: HashMap<u32, Vec<(Duration, Event)>> = HashMap::new();
    let mut recorded = 0u64;
    for (e, d) in capture.events.iter().zip(&due) {
        if e.c == 0 {
            continue;
        }
        if matches!(e.what, What::Query { .. } | What::Execute { .. }) {
            recorded += 1;
        }
        by_connection.entry(e.c).or_default().push((*d, e.clone()));
    }
    let scheduled = due.iter().max().copied().unwrap_or_default();
    let connections = by_connection.len();
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for (_, events) in by_connection {
        let opts = opts.clone();
        tasks.spawn(async move { connection(events, &opts, start).await });
    }
    let mut all = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.map_err(|e| anyhow::anyhow!("a replay task failed: {e}"))?;
        all.statements += t.statements;
        all.errors += t.errors;
        all.unexpected += t.unexpected;
        for (k, v) in t.samples {
            *all.samples.entry(k).or_default() += v;
        }
        all.latencies_us.extend(t.latencies_us);
        all.last = all.last.max(t.last);
    }
    let seconds = all
        .last
        .map_or(0.0, |l| l.saturating_duration_since(start).as_secs_f64());
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    for us in &all.latencies_us {
        let _ = h.record((*us).clamp(1, 600_000_000));
    }
    let mut samples: Vec<(String, u64)> = all.samples.into_iter().collect();
    samples.sort_by_key(|s| std::cmp::Reverse(s.1));
    samples.truncate(5);
    Ok(PlayReport {
        recorded_statements: recorded,
        statements: all.statements,
        errors: all.errors,
        unexpected_errors: all.unexpected,
        error_samples: samples,
        seconds,
        scheduled_seconds: scheduled.as_secs_f64(),
        throughput: all.statements as f64 / seconds.max(1e-9),
        latency: Percentiles::of(&h),
        connections,
    })
}

/// One recorded connection, in its order.
async fn connection(events: Vec<(Duration, Event)>, opts: &PlayOptions, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut schema: Option<String> = None;
    let mut stmts: HashMap<u32, Statement> = HashMap::new();
    for (due, e) in events {
        let due = start + due;
        tokio::time::sleep_until(due.into()).await;
        if let What::Connect { schema: s, .. } = &e.what {
            schema.clone_from(s);
        }
        if matches!(e.what, What::Quit) {
            if let Some(c) = conn.take() {
                let _ = c.disconnect().await;
            }
            stmts.clear();
            continue;
        }
        if conn.is_none() {
            let o = OptsBuilder::default()
                .ip_or_hostname(opts.target.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h))
                .tcp_port(
                    opts.target
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(3306),
                )
                .user(Some(opts.user.clone()))
                .pass(Some(opts.password.clone()))
                .db_name(schema.clone())
                // To the target itself: the driver would otherwise move to the Unix socket a
                // `SELECT @@socket` names, which through a gateway is a backend's.
                .prefer_socket(false)
                // The driver closes statements its cache evicts: keep every one the capture
                // holds open (it closes them itself).
                .stmt_cache_size(STATEMENTS);
            match Conn::new(o).await {
                Ok(c) => conn = Some(c),
                Err(err) => {
                    tally.note_error(&format!("connect: {err}"), true);
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result: Option<(Result<(), mysql_async::Error>, bool)> = match &e.what {
            What::Query { sql, done } => {
                Some((c.query_drop(sql.as_str()).await, done.error.is_none()))
            }
            What::Prepare {
                stmt: Some(id),
                sql,
                ..
            } => {
                if let Ok(s) = c.prep(sql.as_str()).await {
                    stmts.insert(*id, s);
                }
                None
            }
            What::Execute { stmt, params, done } => match stmts.get(stmt) {
                Some(s) => {
                    let values: Vec<Value> = params.iter().map(|p| value(p.as_ref())).collect();
                    let params = if values.is_empty() {
                        mysql_async::Params::Empty
                    } else {
                        mysql_async::Params::Positional(values)
                    };
                    Some((c.exec_drop(s, params).await, done.error.is_none()))
                }
                None => Some((
                    Err(mysql_async::Error::Other(
                        "statement was never prepared".into(),
                    )),
                    done.error.is_none(),
                )),
            },
            What::CloseStatement { stmt } => {
                if let Some(s) = stmts.remove(stmt) {
                    let _ = c.close(s).await;
                }
                None
            }
            What::InitDb { schema: s } => {
                let _ = c
                    .query_drop(format!("USE `{}`", s.replace('`', "``")))
                    .await;
                None
            }
            What::Reset => {
                let _ = c.reset().await;
                stmts.clear();
                None
            }
            _ => None,
        };
        if let Some((r, expected_ok)) = result {
            tally.statements += 1;
            let now = Instant::now();
            tally.latencies_us.push(
                u64::try_from(now.saturating_duration_since(due).as_micros()).unwrap_or(u64::MAX),
            );
            tally.last = Some(now);
            if let Err(err) = r {
                tally.note_error(&err.to_string(), expected_ok);
            }
        }
    }
    if let Some(c) = conn.take() {
        let _ = c.disconnect().await;
    }
    tally
}

impl Tally {
    fn note_error(&mut self, what: &str, unexpected: bool) {
        self.errors += 1;
        if unexpected {
            self.unexpected += 1;
        }
        if self.samples.len() < 16 || self.samples.contains_key(what) {
            *self.samples.entry(what.to_string()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64) -> Event {
        Event {
            t,
            c: 1,
            what: What::Quit,
        }
    }

    #[test]
    fn the_schedule_divides_by_the_speed_and_cuts_long_gaps() {
        let events = vec![at(0), at(1_000_000), at(11_000_000), at(11_500_000)];
        let plain = schedule(&events, 1.0, None);
        assert_eq!(plain[2], Duration::from_secs(11));
        let fast = schedule(&events, 2.0, None);
        assert_eq!(fast[3], Duration::from_millis(5750));
        // The 10 s gap is cut to 2 s.
        let cut = schedule(&events, 1.0, Some(Duration::from_secs(2)));
        assert_eq!(cut[2], Duration::from_secs(3));
        assert_eq!(cut[3], Duration::from_millis(3500));
        assert_eq!(
            value(Some(&ParamValue::Hex("ff00".into()))),
            Value::Bytes(vec![255, 0])
        );
    }
}
