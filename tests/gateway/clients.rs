//! Real clients through Sluice: PyMySQL (plain, TLS, caching_sha2_password) and sysbench.

use std::process::Command;

use sluice::config::AuthPlugin;

use crate::harness::{
    TestGateway, base_config, counter, fleet, primary_only_config, repo_root, sysbench,
};

/// Runs the PyMySQL script; returns (success, stdout + stderr).
fn pymysql_run(port: u16, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/clients/pymysql_check.py"))
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run python3");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pymysql(port: u16, args: &[&str]) {
    let (ok, text) = pymysql_run(port, args);
    assert!(ok, "pymysql {args:?} failed:\n{text}");
}

#[test]
fn pymysql_plain_tls_and_caching_sha2() {
    let gw = TestGateway::start(primary_only_config());
    pymysql(gw.addr.port(), &[]);
    pymysql(
        gw.addr.port(),
        &["--ssl", "--expect-plugin", "mysql_native_password"],
    );
    let mut c = primary_only_config();
    c.users[0].auth_plugin = AuthPlugin::CachingSha2Password;
    c.frontend.sha2_cold_cache = true;
    let gw = TestGateway::start(c);
    // Cold cache: full authentication over TLS first, then the fast path without TLS.
    pymysql(
        gw.addr.port(),
        &["--ssl", "--expect-plugin", "caching_sha2_password"],
    );
    pymysql(
        gw.addr.port(),
        &["--expect-plugin", "caching_sha2_password"],
    );
}

#[test]
fn sysbench_oltp_read_write_runs_without_errors() {
    let f = fleet();
    f.sql(0, "CREATE DATABASE IF NOT EXISTS app_sysbench");
    let mut c = base_config();
    c.routing.read_write_split = true;
    let gw = TestGateway::start(c);
    let port = gw.addr.port();
    let secs = std::env::var("SYSBENCH_SECS").unwrap_or_else(|_| "30".into());
    sysbench(
        f.port,
        "app_sysbench",
        &[
            "--tables=4",
            "--table-size=10000",
            "oltp_read_write",
            "cleanup",
        ],
    );
    sysbench(
        f.port,
        "app_sysbench",
        &[
            "--tables=4",
            "--table-size=10000",
            "oltp_read_write",
            "prepare",
        ],
    );
    f.wait_replicas();
    for mode in ["auto", "disable"] {
        let ps = format!("--db-ps-mode={mode}");
        let time = format!("--time={secs}");
        let report = sysbench(
            port,
            "app_sysbench",
            &[
                "--threads=16",
                &time,
                &ps,
                "--tables=4",
                "--table-size=10000",
                "oltp_read_write",
                "run",
            ],
        );
        // sysbench stops with FATAL (and a failed exit, checked above) on any error it does not
        // ignore; it ignores only server deadlocks and lock wait timeouts, which the workload
        // also produces directly against MariaDB.
        assert!(!report.contains("FATAL"), "{report}");
        assert_eq!(counter(&report, "reconnects:"), 0, "{report}");
        assert!(counter(&report, "transactions:") > 0, "{report}");
        println!(
            "sysbench oltp_read_write ps-mode={mode}: transactions {} ignored errors (deadlocks) {}",
            counter(&report, "transactions:"),
            counter(&report, "ignored errors:")
        );
    }
}
