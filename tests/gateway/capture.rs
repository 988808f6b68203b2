//! Traffic capture (issue #15): started and stopped through the admin API, a session open before
//! it announced, text and prepared statements with their parameters and the policies' decisions,
//! a private file a reader of this version reads back; and a capture with its literals redacted.

use mysql_async::prelude::*;

use sluice::capture::format::{Capture, GuardOutcome, ParamValue, What};

use crate::harness::{PolicyDir, TestGateway, http_with_body};
use crate::policies::guard_manifest;

fn post(gw: &TestGateway, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let (status, text) = http_with_body(gw.admin.expect("admin API"), "POST", path, None, body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The client's QUIT is sent; the gateway records the session's end when it reads it.
async fn sessions_ended(gw: &TestGateway) {
    sessions_ended_but(gw, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_records_sessions_statements_parameters_and_decisions() {
    let policies = PolicyDir::new("capture-policies");
    policies.plugin("guard", "guard.wasm");
    policies.write(
        "guard.toml",
        guard_manifest(
            "guard",
            "guard.wasm",
            "deny",
            "deny-ddl = false\ndeny-digests = [\"SELECT ? AS PROBE\"]",
        )
        .as_bytes(),
    );
    let captures = PolicyDir::new("captures");
    let mut config = policies.config();
    config.capture.dir = Some(captures.path.clone());
    let gw = TestGateway::start(config);
    // Open before the capture starts: it announces itself at its first command.
    let mut c = gw.app().await;

    let (status, body) = post(&gw, "/api/capture/start", Some(r#"{"name": "t.jsonl"}"#));
    assert_eq!(status, 200, "{body}");
    let (status, _) = post(&gw, "/api/capture/start", Some(r#"{"name": "u.jsonl"}"#));
    assert_eq!(status, 409, "one capture at a time");
    let (status, _) = post(&gw, "/api/capture/start", Some(r#"{"name": "../x"}"#));
    assert_eq!(status, 409, "still running");

    c.query_drop("SELECT 1 AS probe")
        .await
        .expect_err("denied by the guard");
    c.query_drop("CREATE TABLE IF NOT EXISTS app.cap_t (id INT PRIMARY KEY, v VARCHAR(20))")
        .await
        .expect("create");
    c.query_drop("DELETE FROM app.cap_t WHERE id > 0")
        .await
        .expect("delete");
    c.exec_drop("INSERT INTO app.cap_t VALUES (?, ?)", (1, "héllo"))
        .await
        .expect("insert 1");
    c.exec_drop("INSERT INTO app.cap_t VALUES (?, ?)", (2, None::<String>))
        .await
        .expect("insert 2");
    let v: Option<String> = c
        .query_first("SELECT v FROM app.cap_t WHERE id = 1")
        .await
        .expect("select");
    assert_eq!(v.as_deref(), Some("héllo"));
    c.disconnect().await.expect("quit");
    sessions_ended(&gw).await;

    let (status, body) = post(&gw, "/api/capture/stop", None);
    assert_eq!(status, 200, "{body}");
    assert!(
        body["capture"]["events"].as_u64().unwrap_or(0) >= 8,
        "{body}"
    );

    let file = captures.path.join("t.jsonl");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the capture holds data: owner only");
    }
    let cap = Capture::open(&file).expect("a capture this version reads");
    assert!(!cap.header.redacted);
    assert!(cap.header.backends.iter().any(|b| b.role == "primary"));
    let mine: Vec<&What> = cap
        .events
        .iter()
        .filter(|e| e.c != 0)
        .map(|e| &e.what)
        .collect();
    assert!(
        matches!(mine.first(), Some(What::Connect { user, .. }) if user == "app"),
        "{mine:?}"
    );
    assert!(matches!(mine.last(), Some(What::Quit)), "{mine:?}");
    let denied = mine
        .iter()
        .find_map(|w| match w {
            What::Query { sql, done } if sql == "SELECT 1 AS probe" => Some(done),
            _ => None,
        })
        .expect("the denied statement is recorded");
    assert!(
        matches!(&denied.guard, GuardOutcome::Deny { policy, .. } if policy == "guard"),
        "{denied:?}"
    );
    assert!(denied.error.is_some() && denied.backend.is_none());
    let stmt = mine
        .iter()
        .find_map(|w| match w {
            What::Prepare { stmt, sql, .. } if sql.starts_with("INSERT INTO app.cap_t") => *stmt,
            _ => None,
        })
        .expect("the prepare, with the id the client got");
    let params: Vec<&Vec<Option<ParamValue>>> = mine
        .iter()
        .filter_map(|w| match w {
            What::Execute {
                stmt: s, params, ..
            } if *s == stmt => Some(params),
            _ => None,
        })
        .collect();
    assert_eq!(
        params,
        vec![
            &vec![
                Some(ParamValue::Int(1)),
                Some(ParamValue::Text("héllo".into()))
            ],
            &vec![Some(ParamValue::Int(2)), None],
        ]
    );
    let read = mine
        .iter()
        .find_map(|w| match w {
            What::Query { sql, done } if sql.starts_with("SELECT v FROM") => Some(done),
            _ => None,
        })
        .expect("the read");
    assert!(read.backend.is_some() && read.error.is_none(), "{read:?}");
    assert!(matches!(
        cap.events.last().map(|e| &e.what),
        Some(What::End { dropped: 0, .. })
    ));

    // Redacted: statements as digests, no parameter values.
    let (status, body) = post(
        &gw,
        "/api/capture/start",
        Some(r#"{"name": "r.jsonl", "redact-literals": true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let mut c = gw.app().await;
    let _: Option<String> = c
        .query_first("SELECT v FROM app.cap_t WHERE id = 1")
        .await
        .expect("select");
    c.exec_drop("SELECT v FROM app.cap_t WHERE id = ?", (2,))
        .await
        .expect("execute");
    c.disconnect().await.expect("quit");
    sessions_ended(&gw).await;
    let (status, _) = post(&gw, "/api/capture/stop", None);
    assert_eq!(status, 200);
    let cap = Capture::open(&captures.path.join("r.jsonl")).expect("reads");
    assert!(cap.header.redacted);
    let text = std::fs::read_to_string(captures.path.join("r.jsonl")).expect("read");
    assert!(
        !text.contains("id = 1") && text.contains("ID = ?"),
        "{text}"
    );
    assert!(cap.events.iter().all(|e| match &e.what {
        What::Execute { params, .. } => params.is_empty(),
        _ => true,
    }));
}

/// `sluice replay --offline` over a capture: a guard that denies one table lists exactly the
/// recorded statements on that table; a router rule sending one digest to the primary lists
/// exactly that digest's reads (text and prepared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_evaluation_lists_exactly_what_a_candidate_decides_differently() {
    let guard = |extra: &str| {
        guard_manifest(
            "guard",
            "guard.wasm",
            "deny",
            &format!("deny-ddl = false\n{extra}"),
        )
    };
    let router = |settings: &str| {
        format!(
            "name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n[settings]\nstrategy = \"sticky\"\n{settings}\n"
        )
    };
    let policies = PolicyDir::new("offline-policies");
    policies.plugin("guard", "guard.wasm");
    policies.plugin("rw-split", "rw-split.wasm");
    policies.write("guard.toml", guard("").as_bytes());
    policies.write("rw-split.toml", router("").as_bytes());
    let captures = PolicyDir::new("offline-captures");
    let mut config = crate::harness::monitored(policies.config());
    config.capture.dir = Some(captures.path.clone());
    let gw = TestGateway::start(config);
    // Replicas whose lag is known serve reads (the capture records the fleet as it starts).
    crate::harness::wait_for_replica_lag(&gw.gateway).await;
    let mut w = gw.app().await;
    for t in ["off_a", "off_b"] {
        w.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS app.{t} (id INT PRIMARY KEY, v VARCHAR(20))"
        ))
        .await
        .expect("create");
        w.query_drop(format!("DELETE FROM app.{t} WHERE id > 0"))
            .await
            .expect("clear");
    }

    let (status, body) = post(&gw, "/api/capture/start", Some(r#"{"name": "off.jsonl"}"#));
    assert_eq!(status, 200, "{body}");
    for id in 1..=3 {
        w.query_drop(format!("INSERT INTO app.off_a VALUES ({id}, 'a')"))
            .await
            .expect("insert a");
    }
    for id in 1..=2 {
        w.query_drop(format!("INSERT INTO app.off_b VALUES ({id}, 'b')"))
            .await
            .expect("insert b");
    }
    // Reads from a session that wrote nothing: the router decides them.
    let mut r = gw.app().await;
    for id in 1..=3 {
        let _: Option<String> = r
            .query_first(format!("SELECT v FROM app.off_a WHERE id = {id}"))
            .await
            .expect("read a");
    }
    for id in 1..=2 {
        let _: Option<String> = r
            .query_first(format!("SELECT v FROM app.off_b WHERE id = {id}"))
            .await
            .expect("read b");
    }
    for id in 1..=2 {
        let _: Option<String> = r
            .exec_first("SELECT v FROM app.off_a WHERE id = ?", (id,))
            .await
            .expect("prepared read a");
    }
    r.disconnect().await.expect("quit");
    w.disconnect().await.expect("quit");
    sessions_ended(&gw).await;
    let (status, _) = post(&gw, "/api/capture/stop", None);
    assert_eq!(status, 200);
    let file = captures.path.join("off.jsonl");

    let replay = |candidate: &PolicyDir| {
        let json = candidate.path.join("report.json");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("replay")
            .arg(&file)
            .arg("--offline")
            .arg("--policies")
            .arg(&candidate.path)
            .arg("--config")
            .arg(crate::harness::repo_root().join("config/sluice.toml"))
            .arg("--fail-on-change")
            .arg("--json")
            .arg(&json)
            .output()
            .expect("run");
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&json)
                .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr))),
        )
        .expect("json");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            report,
        )
    };
    let total = |diffs: &serde_json::Value| -> u64 {
        diffs
            .as_array()
            .expect("list")
            .iter()
            .map(|d| d["count"].as_u64().unwrap_or(0))
            .sum()
    };

    // The same policies: nothing differs.
    let (code, stdout, report) = replay(&policies);
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        total(&report["guard"]) + total(&report["routes"]),
        0,
        "{stdout}"
    );

    // A guard denying app.off_b: its two inserts and two reads, nothing else.
    let deny_b = PolicyDir::new("offline-deny-b");
    deny_b.plugin("guard", "guard.wasm");
    deny_b.plugin("rw-split", "rw-split.wasm");
    deny_b.write(
        "guard.toml",
        guard("deny-tables = [\"app.off_b\"]").as_bytes(),
    );
    deny_b.write("rw-split.toml", router("").as_bytes());
    let (code, stdout, report) = replay(&deny_b);
    assert_eq!(code, Some(1), "a change fails the check: {stdout}");
    assert_eq!(total(&report["guard"]), 4, "{stdout}");
    assert_eq!(total(&report["routes"]), 0, "{stdout}");
    for d in report["guard"].as_array().expect("list") {
        assert!(
            d["digest"].as_str().is_some_and(|s| s.contains("OFF_B")),
            "{d}"
        );
        assert_eq!(d["recorded"], "allow");
        assert!(
            d["candidate"]
                .as_str()
                .is_some_and(|s| s.starts_with("deny 1142")),
            "{d}"
        );
    }

    // A router rule sending app.off_a's point read to the primary: its three text reads and two
    // prepared executes.
    let digest = sluice::facts::analyze("SELECT v FROM app.off_a WHERE id = 1").digest;
    let to_primary = PolicyDir::new("offline-to-primary");
    to_primary.plugin("guard", "guard.wasm");
    to_primary.plugin("rw-split", "rw-split.wasm");
    to_primary.write("guard.toml", guard("").as_bytes());
    to_primary.write(
        "rw-split.toml",
        router(&format!(
            "rules = [{{ digest = \"{digest}\", to = \"primary\" }}]"
        ))
        .as_bytes(),
    );
    let (code, stdout, report) = replay(&to_primary);
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(total(&report["guard"]), 0, "{stdout}");
    let routes = report["routes"].as_array().expect("list");
    assert_eq!(routes.len(), 1, "{stdout}");
    assert_eq!(routes[0]["digest"].as_str(), Some(digest.as_str()));
    assert_eq!(routes[0]["count"].as_u64(), Some(5), "{stdout}");
    assert_eq!(
        (
            routes[0]["recorded"].as_str(),
            routes[0]["candidate"].as_str()
        ),
        (Some("a replica"), Some("primary"))
    );
}

/// `sluice replay --target`: a capture of four connections writing numbered rows (text and
/// prepared) replays every statement, and each connection's rows land in its own order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_every_statement_and_keeps_each_connections_order() {
    let policies = PolicyDir::new("replay-policies");
    policies.plugin("guard", "guard.wasm");
    policies.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "deny-ddl = false").as_bytes(),
    );
    let captures = PolicyDir::new("replay-captures");
    let mut config = policies.config();
    config.capture.dir = Some(captures.path.clone());
    let gw = TestGateway::start(config);
    let mut admin = gw.app().await;
    admin
        .query_drop(
            "CREATE TABLE IF NOT EXISTS app.marker (id INT AUTO_INCREMENT PRIMARY KEY, conn INT, seq INT)",
        )
        .await
        .expect("create");
    admin
        .query_drop("DELETE FROM app.marker WHERE id > 0")
        .await
        .expect("clear");
    let (status, body) = post(
        &gw,
        "/api/capture/start",
        Some(r#"{"name": "order.jsonl"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let mut writers = Vec::new();
    for k in 0..4 {
        let mut c = gw.app().await;
        writers.push(tokio::spawn(async move {
            for seq in 0..25 {
                if seq % 2 == 0 {
                    c.query_drop(format!(
                        "INSERT INTO app.marker (conn, seq) VALUES ({k}, {seq})"
                    ))
                    .await
                    .expect("insert");
                } else {
                    c.exec_drop("INSERT INTO app.marker (conn, seq) VALUES (?, ?)", (k, seq))
                        .await
                        .expect("insert");
                }
            }
            c.disconnect().await.expect("quit");
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    sessions_ended_but(&gw, 1).await;
    let (status, _) = post(&gw, "/api/capture/stop", None);
    assert_eq!(status, 200);
    admin
        .query_drop("DELETE FROM app.marker WHERE id > 0")
        .await
        .expect("clear");

    let json = captures.path.join("replay.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("replay")
        .arg(captures.path.join("order.jsonl"))
        .arg("--target")
        .arg(gw.addr.to_string())
        .args(["--speed", "2.0", "--fail-on-change", "--json"])
        .arg(&json)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("parses");
    let recorded = report["recorded_statements"].as_u64().expect("count");
    assert!(recorded >= 100, "{report}");
    assert_eq!(report["statements"].as_u64(), Some(recorded), "{stdout}");
    assert_eq!(report["unexpected_errors"].as_u64(), Some(0), "{stdout}");
    let rows: Vec<(i32, i32)> = admin
        .query("SELECT conn, seq FROM app.marker ORDER BY id")
        .await
        .expect("rows");
    assert_eq!(rows.len(), 100, "every insert replayed once");
    for k in 0..4 {
        let seqs: Vec<i32> = rows.iter().filter(|r| r.0 == k).map(|r| r.1).collect();
        assert_eq!(
            seqs,
            (0..25).collect::<Vec<_>>(),
            "connection {k} in its order"
        );
    }
}

/// Waits until only `left` sessions remain (their QUITs read and recorded).
async fn sessions_ended_but(gw: &TestGateway, left: usize) {
    crate::harness::wait_until(10, "the gateway has ended the sessions", || {
        gw.gateway.session_count() == left
    })
    .await;
}
