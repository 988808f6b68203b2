//! The shipped router's strategies, as Wasm, in the simulator (issue #14): the scenarios of
//! `benches/scenarios/` that reproduce published experiments, run as `sluice simulate` runs them.

use sluice::bench::candidate::Candidate;
use sluice::sim::experiment::{self, Progress};
use sluice::sim::report::{Figures, SimReport};
use sluice::sim::scenario::Scenario;

use crate::harness::{PolicyDir, repo_root};

/// `scenario` (a file of `benches/scenarios/`) through the shipped router with `strategies`.
fn simulate(scenario: &str, strategies: &[&str]) -> SimReport {
    let dir = PolicyDir::new(&format!("sim-{scenario}"));
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        b"name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n",
    );
    let scenario = Scenario::load(&repo_root().join("benches/scenarios").join(scenario))
        .expect("the shipped scenario is valid");
    let candidates: Vec<Candidate> = strategies
        .iter()
        .map(|s| Candidate::Strategy(s.to_string()))
        .collect();
    let report = experiment::run(&scenario, &dir.path, &candidates, &mut |_: Progress<'_>| {})
        .expect("the simulation runs");
    eprintln!("{}", report.table());
    for r in &report.runs {
        assert_eq!(
            r.served[0], 0,
            "{}: reads stay off the primary",
            r.candidate
        );
        assert_eq!(r.errors, 0, "{}", r.candidate);
    }
    report
}

fn figures<'a>(report: &'a SimReport, strategy: &str, during_faults: bool) -> &'a Figures {
    let run = report
        .runs
        .iter()
        .find(|r| r.candidate == strategy)
        .expect("a run per strategy");
    if during_faults {
        run.during_faults
            .as_ref()
            .expect("the scenario has a fault")
    } else {
        &run.whole
    }
}

/// absim's time-varying rates through 30 gateways, each seeing only its own requests: C3's
/// latency feedback carries what one gateway's in-flight counts cannot, as in the paper.
#[test]
fn absim_time_varying_rates_c3_beats_round_robin_and_least_in_use_at_p999() {
    let report = simulate("absim.toml", &["round-robin", "least-in-use", "c3"]);
    let p999 = |s: &str| figures(&report, s, false).p999;
    let (rr, least, c3) = (p999("round-robin"), p999("least-in-use"), p999("c3"));
    // Beaten beyond the intervals, not by a point estimate alone.
    let upper = c3.ms + c3.half_width_ms.unwrap_or(0.0);
    for (name, other) in [("round-robin", rr), ("least-in-use", least)] {
        let lower = other.ms - other.half_width_ms.unwrap_or(0.0);
        assert!(upper < lower, "p99.9: c3 {c3:?} vs {name} {other:?}");
    }
}

/// The linkerd experiment: with one replica stuck at 2 s, round-robin degrades from p95,
/// least-loaded (p2c over requests in flight, Finagle's) from p99, peak-EWMA only at p99.9.
#[test]
fn linkerd_stuck_replica_degrades_round_robin_at_p95_least_loaded_at_p99_peak_ewma_at_p999() {
    let report = simulate("linkerd.toml", &["round-robin", "p2c", "peak-ewma"]);
    // Degraded: the stuck replica's 2 s answers reach that percentile.
    let degraded_from = |s: &str| {
        let f = figures(&report, s, true);
        let levels = [
            ("p90", f.p90.ms),
            ("p95", f.p95.ms),
            ("p99", f.p99.ms),
            ("p99.9", f.p999.ms),
        ];
        levels
            .iter()
            .find(|(_, ms)| *ms >= 1000.0)
            .map(|(name, _)| *name)
    };
    assert_eq!(degraded_from("round-robin"), Some("p95"));
    assert_eq!(degraded_from("p2c"), Some("p99"));
    assert_eq!(degraded_from("peak-ewma"), Some("p99.9"));
}

/// A scenario of one's own through the command: a fault, health checks, network delay, an
/// empirical service-time distribution; the table, the JSON and the HTML report. Then replication
/// lag beyond the router's `max-lag-ms` on every replica: every read goes to the primary. And a
/// bad scenario: exit 2 naming the key.
#[test]
fn the_simulate_command_reports_table_json_and_html_and_names_a_bad_key() {
    let dir = PolicyDir::new("sim-cli");
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        b"name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n[settings]\nmax-lag-ms = 1000\n",
    );
    let work = PolicyDir::new("sim-cli-work");
    let common = "requests = 20000\nclients = 40\ngateways = 2\nnetwork-ms = 0.2\n\
                  [servers]\nreplicas = 4\nslots = 2\nservice = \"empirical\"\n\
                  quantiles = [[0.0, 0.5], [0.5, 1.0], [0.99, 4.0], [1.0, 20.0]]\n";
    work.write(
        "down.toml",
        format!(
            "name = \"down\"\ncheck-every-ms = 20\n{common}\
             [[faults]]\nkind = \"down\"\nreplica = 2\nfrom = 0.4\nuntil = 0.6\n"
        )
        .as_bytes(),
    );
    let (json, html) = (work.path.join("down.json"), work.path.join("down.html"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("simulate")
        .arg(work.path.join("down.toml"))
        .arg("--policies")
        .arg(&dir.path)
        .args(["--strategies", "round-robin,p2c", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("round-robin")
            && stdout.contains("p2c")
            && stdout.contains("while a fault was active"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    let runs = report["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for r in runs {
        let errors = r["errors"].as_u64().expect("errors");
        assert!(errors > 0 && errors < 1000, "{r}");
        assert!(r["whole"]["p99"]["half_width_ms"].as_f64().is_some(), "{r}");
    }
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.contains("<svg") && page.contains("replica2 down") && !page.contains("<script"));

    work.write(
        "lag.toml",
        format!(
            "name = \"lag\"\n{common}[lag]\nevery-ms = 100\nprobability = 1.0\nlag-ms = 5000\n"
        )
        .as_bytes(),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("simulate")
        .arg(work.path.join("lag.toml"))
        .arg("--policies")
        .arg(&dir.path)
        .args(["--strategies", "p2c", "--json"])
        .arg(&json)
        .output()
        .expect("run");
    assert!(out.status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    assert_eq!(report["runs"][0]["served"][0].as_u64(), Some(20_000));

    work.write("bad.toml", b"requests = 20000\n[servers]\nslots = 0\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("simulate")
        .arg(work.path.join("bad.toml"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("servers.slots"),
        "{stderr}"
    );
}
