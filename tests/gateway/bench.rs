//! `sluice bench` end to end on a fleet of its own: two candidates on a short workload with one
//! replica slowed 50 ms per statement for the whole run. Every operation succeeds, none reads
//! stale, each backend's share is sampled, the reports render; and p2c, which counts statements
//! in flight, sends the slowed replica a small share of the reads where round-robin sends it
//! half. (A 50 ms delay against sub-millisecond reads: the share differs a hundredfold, not by a
//! margin a busy machine could erase.)

use sluice::bench::candidate::Candidate;
use sluice::bench::report::RunReport;
use sluice::bench::workload::Workload;

use crate::harness::{PolicyDir, config_for, monitored, start_private_fleet};

const WORKLOAD: &str = r#"
name = "test mix"
duration-secs = 4
warmup-secs = 1
connections = 8
[[tables]]
name = "bench_test_items"
rows = 1000
[[classes]]
kind = "point-select"
weight = 9
[[classes]]
kind = "write-then-read"
weight = 1
[[faults]]
kind = "slow"
backend = "replica1"
delay-ms = 50
from = 0.0
until = 1.0
"#;

fn served(run: &RunReport, backend: &str) -> u64 {
    run.backends
        .iter()
        .find(|b| b.backend == backend)
        .map_or(0, |b| b.statements.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_compares_strategies_and_p2c_keeps_reads_off_a_slowed_replica() {
    let fleet = start_private_fleet("bench");
    let dir = PolicyDir::new("bench");
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        b"name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n[settings]\nmax-lag-ms = 10000\n",
    );
    let mut config = monitored(config_for(&fleet));
    config.policies.dir = Some(dir.path.clone());
    let report = sluice::bench::run(sluice::bench::BenchOptions {
        config,
        workload: Workload::from_toml(WORKLOAD).expect("workload"),
        candidates: vec![
            Candidate::Strategy("round-robin".into()),
            Candidate::Strategy("p2c".into()),
        ],
        repeat: 1,
        user: "app".into(),
        password: "app-secret".into(),
        progress: false,
    })
    .await
    .expect("bench runs");
    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        assert!(run.ops > 0, "{}: no operations", run.candidate);
        assert_eq!(run.errors, 0, "{}: {:?}", run.candidate, run.error_samples);
        assert_eq!(
            run.stale_reads, 0,
            "{}: a read missed its own write",
            run.candidate
        );
        assert!(run.fault_latency.is_some());
        assert_eq!(run.timeline.len(), 4);
        assert_eq!(run.backends.len(), 3);
        assert!(run.backends.iter().all(|b| b.statements.len() == 4));
        assert!(run.classes.iter().any(|(c, _)| c == "write-then-read"));
    }
    let (rr, p2c) = (&report.runs[0], &report.runs[1]);
    let (rr1, rr2) = (served(rr, "replica1"), served(rr, "replica2"));
    assert!(
        rr1 > 0 && rr2 > 0,
        "round-robin uses both replicas: {rr1} / {rr2}"
    );
    let (p1, p2) = (served(p2c, "replica1"), served(p2c, "replica2"));
    assert!(
        p1 * 4 < p2,
        "p2c sends the slowed replica little: replica1 {p1}, replica2 {p2}"
    );
    let page = sluice::bench::html::render(&report);
    assert!(page.contains("round-robin") && page.contains("p2c"));
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["runs"][1]["candidate"], "p2c");
    assert!(report.table().contains("while a fault was active"));
}
