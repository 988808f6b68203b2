//! The client side of `sluice bench`: connections that run the workload's operations against a
//! gateway over the real protocol (mysql_async), closed loop or open loop, and record each into
//! the [`Recorder`].
//!
//! Open loop, as wrk2 does it: each connection's operations are due at fixed times
//! (`connections / rate` apart, connections phase-shifted). An operation is timed from when it
//! was due if the connection was still busy then (the system is behind: that wait is latency),
//! else from when it was sent (the connection idled until due, and the runtime's timer wakes it
//! up to a millisecond late: that slack is the bench's, not the system's).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

use super::report::{Outcome, Recorder};
use super::workload::{Class, Workload};

/// What every connection of a run shares.
pub struct RunPlan {
    pub workload: Arc<Workload>,
    pub opts: Opts,
    /// Warm-up starts here; measuring at `start + warmup`.
    pub start: Instant,
    /// Open loop: operations per second over all connections.
    pub rate: Option<f64>,
    /// Makes write-then-read tokens unique across runs.
    pub nonce: u64,
}

impl RunPlan {
    pub fn end(&self) -> Instant {
        self.start + self.workload.warmup() + self.workload.duration()
    }
}

/// A small, fast, seedable generator (xorshift64*): the mix is the same run to run.
struct Draw(u64);

impl Draw {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Opens the run's connections (before the clock starts, so connecting is not measured).
pub async fn connect_all(opts: &Opts, n: u32) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        conns.push(
            Conn::new(opts.clone())
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the gateway: {e}"))?,
        );
    }
    Ok(conns)
}

/// Runs connection `index` until the plan ends.
pub async fn run_connection(
    plan: Arc<RunPlan>,
    index: u32,
    mut conn: Conn,
    recorder: Arc<Mutex<Recorder>>,
) {
    let w = &plan.workload;
    let mut draw = Draw::new(w.seed ^ (u64::from(index) << 32) ^ 0x51);
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(f64::from(w.connections) / r));
    let phase = interval.map(|i| i.mul_f64(f64::from(index) / f64::from(w.connections)));
    let mut ops = Ops {
        index,
        connections: w.connections,
        nonce: plan.nonce,
        written: 0,
    };
    let end = plan.end();
    let mut due = plan.start + phase.unwrap_or_default();
    let mut last_end = plan.start;
    loop {
        let now = Instant::now();
        if interval.is_some() {
            if due >= end {
                break;
            }
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        } else if now >= end {
            break;
        }
        let sent = Instant::now();
        // Behind schedule (the last operation ended after this one was due): timed from due.
        let from = match interval {
            Some(_) if last_end > due => due,
            _ => sent,
        };
        let class = w.class_for(draw.next());
        let table = &w.tables[draw.below(w.tables.len() as u64) as usize];
        let outcome = ops
            .run(&mut conn, class, &table.name, table.rows, &mut draw)
            .await;
        let ended = Instant::now();
        let broken = matches!(&outcome, Outcome::Error(e) if e.starts_with("connection:"));
        if let Ok(mut r) = recorder.lock() {
            r.record(class, from, ended, &outcome);
        }
        last_end = ended;
        if let Some(i) = interval {
            due += i;
        }
        if broken {
            // The connection is gone (a killed backend may take it along): a new one.
            if let Ok(c) = Conn::new(plan.opts.clone()).await {
                conn = c;
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = conn.disconnect().await;
}

/// The operations, with what a connection needs to make them.
struct Ops {
    index: u32,
    connections: u32,
    nonce: u64,
    /// Write-then-read writes so far.
    written: u64,
}

impl Ops {
    async fn run(
        &mut self,
        conn: &mut Conn,
        class: Class,
        table: &str,
        rows: u32,
        draw: &mut Draw,
    ) -> Outcome {
        let id = 1 + draw.below(u64::from(rows));
        let result = match class {
            Class::PointSelect => {
                query_drop(conn, format!("SELECT c FROM {table} WHERE id = {id}")).await
            }
            Class::RangeScan => {
                let lo = id.min(u64::from(rows).saturating_sub(100).max(1));
                query_drop(
                    conn,
                    format!(
                        "SELECT c FROM {table} WHERE id BETWEEN {lo} AND {}",
                        lo + 99
                    ),
                )
                .await
            }
            Class::Aggregate => {
                let lo = id.min(u64::from(rows).saturating_sub(1000).max(1));
                query_drop(
                    conn,
                    format!(
                        "SELECT COUNT(*), SUM(k) FROM {table} WHERE id BETWEEN {lo} AND {}",
                        lo + 999
                    ),
                )
                .await
            }
            Class::Insert => {
                query_drop(
                    conn,
                    format!(
                        "INSERT INTO {table} (k, c, pad) VALUES ({id}, 'bench-{}', 'insert')",
                        draw.next()
                    ),
                )
                .await
            }
            Class::Update => {
                query_drop(
                    conn,
                    format!("UPDATE {table} SET k = k + 1 WHERE id = {id}"),
                )
                .await
            }
            Class::Transaction => self.transaction(conn, table, rows, draw).await,
            Class::WriteThenRead => return self.write_then_read(conn, table, rows, draw).await,
        };
        match result {
            Ok(()) => Outcome::Ok,
            Err(e) => Outcome::Error(describe(&e)),
        }
    }

    async fn transaction(
        &mut self,
        conn: &mut Conn,
        table: &str,
        rows: u32,
        draw: &mut Draw,
    ) -> Result<(), mysql_async::Error> {
        let (a, b) = (
            1 + draw.below(u64::from(rows)),
            1 + draw.below(u64::from(rows)),
        );
        conn.query_drop("BEGIN").await?;
        let body = async {
            conn.query_drop(format!("SELECT c FROM {table} WHERE id = {a}"))
                .await?;
            conn.query_drop(format!("SELECT c FROM {table} WHERE id = {b}"))
                .await?;
            conn.query_drop(format!("UPDATE {table} SET k = k + 1 WHERE id = {a}"))
                .await?;
            conn.query_drop("COMMIT").await
        }
        .await;
        if body.is_err() {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        body
    }

    /// Writes a token into a row only this connection writes, then reads it back.
    async fn write_then_read(
        &mut self,
        conn: &mut Conn,
        table: &str,
        rows: u32,
        draw: &mut Draw,
    ) -> Outcome {
        let per = u64::from(rows / self.connections).max(1);
        let id = 1
            + u64::from(self.index % self.connections)
            + u64::from(self.connections) * draw.below(per);
        self.written += 1;
        let token = (self.nonce << 40) | (u64::from(self.index) << 24) | (self.written & 0xFF_FFFF);
        let token = token & 0x7FFF_FFFF_FFFF_FFFF;
        if let Err(e) = conn
            .query_drop(format!("UPDATE {table} SET k = {token} WHERE id = {id}"))
            .await
        {
            return Outcome::Error(describe(&e));
        }
        match conn
            .query_first::<i64, _>(format!("SELECT k FROM {table} WHERE id = {id}"))
            .await
        {
            Ok(Some(k)) if k as u64 == token => Outcome::Ok,
            Ok(_) => Outcome::Stale,
            Err(e) => Outcome::Error(describe(&e)),
        }
    }
}

async fn query_drop(conn: &mut Conn, sql: String) -> Result<(), mysql_async::Error> {
    conn.query_drop(sql).await
}

/// An error as the report lists it: the server's code and message, or what broke.
fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} ({}): {}", s.code, s.state, s.message),
        other => format!("connection: {other}"),
    }
}

/// Creates and fills the workload's tables (through the gateway, like any client), in batches
/// of 1000 rows; a table that already has its rows is kept.
pub async fn prepare_tables(opts: &Opts, w: &Workload) -> anyhow::Result<()> {
    let mut conn = Conn::new(opts.clone())
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the gateway: {e}"))?;
    for t in &w.tables {
        let name = &t.name;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {name} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             k BIGINT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '', \
             pad CHAR(60) NOT NULL DEFAULT '', KEY k_idx (k)) ENGINE=InnoDB"
        ))
        .await
        .map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
        let have: Option<u64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM {name} /* sluice:route=primary */"
            ))
            .await
            .map_err(|e| anyhow::anyhow!("counting {name}: {e}"))?;
        let have = have.unwrap_or(0);
        if have >= u64::from(t.rows) {
            continue;
        }
        let mut id = 1u64;
        while id <= u64::from(t.rows) {
            let last = (id + 999).min(u64::from(t.rows));
            let values: Vec<String> = (id..=last)
                .map(|i| {
                    format!(
                        "({i}, {i}, 'row-{i:0>10}-{:x}', 'pad')",
                        i.wrapping_mul(2_654_435_761)
                    )
                })
                .collect();
            conn.query_drop(format!(
                "INSERT IGNORE INTO {name} (id, k, c, pad) VALUES {}",
                values.join(",")
            ))
            .await
            .map_err(|e| anyhow::anyhow!("filling {name}: {e}"))?;
            id = last + 1;
        }
    }
    let _ = conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_repeat_for_a_seed_and_spread() {
        let a: Vec<u64> = {
            let mut d = Draw::new(7);
            (0..5).map(|_| d.below(100)).collect()
        };
        let b: Vec<u64> = {
            let mut d = Draw::new(7);
            (0..5).map(|_| d.below(100)).collect()
        };
        assert_eq!(a, b);
        let mut d = Draw::new(1);
        let mut buckets = [0u32; 4];
        for _ in 0..40_000 {
            buckets[d.below(4) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (9_000..=11_000).contains(&n)),
            "{buckets:?}"
        );
    }
}
