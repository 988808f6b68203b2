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
