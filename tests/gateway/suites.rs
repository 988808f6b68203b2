//! Third-party client suites (SQLAlchemy's dialect compliance suite over PyMySQL, mysqlclient's
//! tests over Connector/C, MariaDB Connector/Python's integration tests) run directly against the
//! primary and through the shipped config; every test must end the same way both times, except
//! those listed with a reason in `tests/suites/differences.toml` (`tests/suites/suites.py`).

use std::process::Command;

use crate::harness::{TestGateway, fleet, repo_root, shipped_config};

fn same_outcomes(suite: &str) {
    let f = fleet();
    let gw = TestGateway::start(shipped_config(f));
    let out = Command::new("python3")
        .arg(repo_root().join("tests/suites/suites.py"))
        .arg(suite)
        .args(["--direct", &f.port.to_string()])
        .args(["--gateway", &gw.addr.port().to_string()])
        .args(["--replicas", &format!("{},{}", f.port + 1, f.port + 2)])
        .output()
        .expect("run tests/suites/suites.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "{suite}:\n{report}");
}

#[test]
fn sqlalchemy_compliance_suite_ends_as_direct() {
    same_outcomes("sqlalchemy");
}

#[test]
fn mysqlclient_tests_end_as_direct() {
    same_outcomes("mysqlclient");
}

#[test]
fn mariadb_connector_python_tests_end_as_direct_but_for_listed_gaps() {
    same_outcomes("mariadb-connector");
}

/// A prepared CALL across re-definitions of its procedure (other result sets, other columns)
/// and a prepared SELECT across ALTER TABLE, with Connector/Python's prepared cursor: the same
/// results through the shipped config as direct.
#[test]
fn prepared_results_follow_procedure_and_table_changes() {
    let f = fleet();
    let gw = TestGateway::start(shipped_config(f));
    let python = std::env::var_os("SUITES_DIR")
        .map_or_else(
            || {
                std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                    .join(".cache/sluice/suites")
            },
            std::path::PathBuf::from,
        )
        .join("venv/bin/python");
    let run = |port: u16| {
        let out = Command::new(&python)
            .arg(repo_root().join("tests/clients/reshape_check.py"))
            .arg(port.to_string())
            .output()
            .expect("run tests/clients/reshape_check.py (scripts/suites-install)");
        assert!(
            out.status.success(),
            "port {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let direct = run(f.port);
    assert!(direct.contains("'three'"), "{direct}");
    assert_eq!(run(gw.addr.port()), direct);
}
