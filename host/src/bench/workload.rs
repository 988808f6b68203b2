//! A `sluice bench` workload, from TOML: the tables to create and fill, the mix of statement
//! classes, how many client connections, for how long, closed loop or open loop at a rate, and
//! the faults to inject while it runs. Validated once at load, errors naming the file and key.
//!
//! ```toml
//! name = "point selects + write-then-read"
//! duration-secs = 30
//! warmup-secs = 3
//! connections = 32
//! [load]
//! mode = "open"        # or "closed"
//! rate = "60%"         # statements per second, or a share of the closed-loop maximum
//! [[tables]]
//! name = "bench_items"
//! rows = 10000
//! [[classes]]
//! kind = "point-select"
//! weight = 90
//! [[classes]]
//! kind = "write-then-read"
//! weight = 10
//! [[faults]]
//! kind = "slow"        # slow, stall, kill, lag, stop-replication
//! backend = "replica1"
//! delay-ms = 5
//! from = 0.333         # share of the run (after warm-up)
//! until = 0.667
//! ```

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one operation of the mix does (each is timed as one operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// `SELECT c FROM t WHERE id = ?`.
    PointSelect,
    /// `SELECT c FROM t WHERE id BETWEEN ? AND ? + 99`.
    RangeScan,
    /// `SELECT COUNT(*), SUM(k) FROM t WHERE id BETWEEN ? AND ? + 999`.
    Aggregate,
    /// `INSERT INTO t (k, c, pad) VALUES (...)`.
    Insert,
    /// `UPDATE t SET k = k + 1 WHERE id = ?`.
    Update,
    /// `BEGIN`, two point selects, an update, `COMMIT`.
    Transaction,
    /// An update of a row only this connection writes, then a read of it: a read that misses
    /// the session's own write counts as a stale read.
    WriteThenRead,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::PointSelect,
        Class::RangeScan,
        Class::Aggregate,
        Class::Insert,
        Class::Update,
        Class::Transaction,
        Class::WriteThenRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::PointSelect => "point-select",
            Class::RangeScan => "range-scan",
            Class::Aggregate => "aggregate",
            Class::Insert => "insert",
            Class::Update => "update",
            Class::Transaction => "transaction",
            Class::WriteThenRead => "write-then-read",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClassWeight {
    pub kind: Class,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Table {
    pub name: String,
    pub rows: u32,
}

/// Closed loop: each connection sends its next operation when the last one ended. Open loop:
/// operations are due at a fixed rate whatever the latency, and each is timed from when it was
/// due (wrk2's correction for coordinated omission), so a slow backend shows as latency rather
/// than as fewer operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Closed,
    Open,
}

/// An open loop's rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Rate {
    PerSecond(f64),
    /// A share of the closed-loop maximum, measured first (`calibrate-secs`).
    OfMaximum(f64),
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Rate::PerSecond(n)),
            Raw::S(s) => {
                let t = s.trim();
                let parsed = if let Some(p) = t.strip_suffix('%') {
                    p.trim().parse::<f64>().map(|p| Rate::OfMaximum(p / 100.0))
                } else {
                    t.parse::<f64>().map(Rate::PerSecond)
                };
                parsed.map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}`: a rate is operations per second (2000) or a share of the \
                         closed-loop maximum (\"60%\")"
                    ))
                })
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Load {
    pub mode: Mode,
    pub rate: Option<Rate>,
    /// How long the closed-loop maximum is measured for a rate given as a share.
    pub calibrate_secs: u64,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            mode: Mode::Closed,
            rate: None,
            calibrate_secs: 10,
        }
    }
}

/// What a fault does to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Each statement sent to it waits `delay-ms` (the fault proxy).
    Slow,
    /// Nothing reaches it or comes back; connections stay open (a black hole).
    Stall,
    /// Its connections are dropped and new ones refused (a server that died).
    Kill,
    /// Replication delayed by `delay-ms` (`CHANGE MASTER TO MASTER_DELAY`, whole seconds).
    Lag,
    /// Its SQL thread stopped: lag unknown, which routers must treat as lagging.
    StopReplication,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Fault {
    pub kind: FaultKind,
    pub backend: String,
    #[serde(default)]
    pub delay_ms: u64,
    /// When it starts and ends, as shares of the measured run (0..=1).
    pub from: f64,
    pub until: f64,
}

impl Fault {
    /// Whether the fault works through the proxy (else through SQL on the server).
    pub fn needs_proxy(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::Slow | FaultKind::Stall | FaultKind::Kill
        )
    }
}

/// The account `lag` and `stop-replication` faults use on the replica itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdminAccount {
    pub user: String,
    pub password: String,
}

impl Default for AdminAccount {
    fn default() -> Self {
        Self {
            user: "admin".into(),
            password: "admin-secret".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub connections: u32,
    /// The random mix's seed (same seed, same sequence of operations per connection).
    pub seed: u64,
    pub load: Load,
    pub tables: Vec<Table>,
    pub classes: Vec<ClassWeight>,
    pub faults: Vec<Fault>,
    pub admin: AdminAccount,
    /// The schema the tables live in (the client's database).
    pub database: String,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            name: "workload".into(),
            duration_secs: 30,
            warmup_secs: 3,
            connections: 16,
            seed: 1,
            load: Load::default(),
            tables: vec![Table {
                name: "bench_items".into(),
                rows: 10_000,
            }],
            classes: vec![ClassWeight {
                kind: Class::PointSelect,
                weight: 1,
            }],
            faults: Vec::new(),
            admin: AdminAccount::default(),
            database: "app".into(),
        }
    }
}

impl Workload {
    /// Reads and validates a workload file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let w: Workload = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        w.validate()?;
        Ok(w)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let fail = |key: &str, why: String| Err(anyhow::anyhow!("{key}: {why}"));
        if self.duration_secs == 0 {
            return fail("duration-secs", "must be at least 1".into());
        }
        if self.connections == 0 {
            return fail("connections", "must be at least 1".into());
        }
        if self.classes.is_empty() || self.classes.iter().all(|c| c.weight == 0) {
            return fail("classes", "name at least one class with a weight".into());
        }
        if self.tables.is_empty() {
            return fail("tables", "name at least one table".into());
        }
        for (i, t) in self.tables.iter().enumerate() {
            if t.name.is_empty()
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return fail(
                    &format!("tables[{i}].name"),
                    format!("`{}`: letters, digits and _ only", t.name),
                );
            }
            if t.rows < 1000 {
                return fail(
                    &format!("tables[{i}].rows"),
                    "at least 1000 (range scans and aggregates read up to 1000 rows)".into(),
                );
            }
        }
        match (self.load.mode, self.load.rate) {
            (Mode::Open, None) => return fail("load.rate", "open loop needs a rate".into()),
            (Mode::Closed, Some(_)) => {
                return fail("load.rate", "a rate needs mode = \"open\"".into());
            }
            (_, Some(Rate::PerSecond(r))) if !(r > 0.0 && r.is_finite()) => {
                return fail("load.rate", format!("{r}: must be above 0"));
            }
            (_, Some(Rate::OfMaximum(p))) if !(p > 0.0 && p <= 10.0) => {
                return fail("load.rate", format!("{}%: must be above 0%", p * 100.0));
            }
            _ => {}
        }
        for (i, f) in self.faults.iter().enumerate() {
            if !(0.0..=1.0).contains(&f.from)
                || !(0.0..=1.0).contains(&f.until)
                || f.from >= f.until
            {
                return fail(
                    &format!("faults[{i}]"),
                    format!(
                        "from = {} until = {}: shares of the run, 0 <= from < until <= 1",
                        f.from, f.until
                    ),
                );
            }
            if matches!(f.kind, FaultKind::Slow | FaultKind::Lag) && f.delay_ms == 0 {
                return fail(
                    &format!("faults[{i}].delay-ms"),
                    "a slow or lag fault needs a delay".into(),
                );
            }
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    /// The measured run's part `[from, until)` as offsets from the end of warm-up.
    pub fn window(&self, f: &Fault) -> (Duration, Duration) {
        let d = self.duration().as_secs_f64();
        (
            Duration::from_secs_f64(d * f.from),
            Duration::from_secs_f64(d * f.until),
        )
    }

    /// The class of the `draw`-th operation (a uniform random number).
    pub fn class_for(&self, draw: u64) -> Class {
        let total: u64 = self.classes.iter().map(|c| u64::from(c.weight)).sum();
        let mut slot = draw % total.max(1);
        for c in &self.classes {
            let w = u64::from(c.weight);
            if slot < w {
                return c.kind;
            }
            slot -= w;
        }
        self.classes[0].kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "mix"
duration-secs = 30
connections = 8
[load]
mode = "open"
rate = "60%"
[[tables]]
name = "bench_items"
rows = 10000
[[classes]]
kind = "point-select"
weight = 3
[[classes]]
kind = "write-then-read"
weight = 1
[[faults]]
kind = "slow"
backend = "replica1"
delay-ms = 5
from = 0.25
until = 0.5
"#;

    #[test]
    fn the_documented_example_loads() {
        let w = Workload::from_toml(EXAMPLE).expect("loads");
        assert_eq!(w.load.rate, Some(Rate::OfMaximum(0.6)));
        assert_eq!(
            w.window(&w.faults[0]),
            (Duration::from_secs_f64(7.5), Duration::from_secs(15))
        );
        let picks: Vec<Class> = (0..4).map(|d| w.class_for(d)).collect();
        assert_eq!(
            picks,
            [
                Class::PointSelect,
                Class::PointSelect,
                Class::PointSelect,
                Class::WriteThenRead
            ]
        );
        let doc = include_str!("workload.rs");
        let start = doc.find("//! ```toml").expect("doc example");
        let block: String = doc[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        Workload::from_toml(&block).expect("the module doc's example loads");
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |edit: &str| {
            Workload::from_toml(&format!("{EXAMPLE}\n{edit}"))
                .map(|_| ())
                .expect_err("refused")
                .to_string()
        };
        let e = Workload::from_toml(&EXAMPLE.replace("rate = \"60%\"", "rate = \"fast\""))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("fast") && e.contains("60%"), "{e}");
        let e = Workload::from_toml(&EXAMPLE.replace("until = 0.5", "until = 0.2"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("faults[0]"), "{e}");
        let e = bad("[[tables]]\nname = \"x; drop\"\nrows = 5000");
        assert!(e.contains("tables[1].name"), "{e}");
        let e = Workload::from_toml(&EXAMPLE.replace("mode = \"open\"", "mode = \"closed\""))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("load.rate"), "{e}");
        let e = Workload::from_toml(&EXAMPLE.replace("connections = 8", "conections = 8"))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("conections"), "{e}");
    }
}
