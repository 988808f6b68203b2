//! The admin API, `/metrics`, the status page and the logs, against a gateway serving real
//! traffic: what an operator reads must match what the clients did.

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::harness::{
    GatewayProcess, TestGateway, base_config, counter, fleet, http, http_json, sysbench, wait_until,
};

/// The digest rows whose text is `digest`.
fn digest_rows(v: &Value, digest: &str) -> Vec<Value> {
    v["digests"]
        .as_array()
        .expect("digests")
        .iter()
        .filter(|d| d["digest"] == digest)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_backends_sessions_with_their_pins_and_digests() {
    let gw = TestGateway::start(base_config());
    let admin = gw.admin.expect("admin API enabled");
    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    assert_eq!(http(admin, "GET", "/readyz", None).0, 200);

    let backends = http_json(admin, "/api/backends");
    let names: Vec<&str> = backends
        .as_array()
        .expect("backends")
        .iter()
        .filter_map(|b| b["name"].as_str())
        .collect();
    assert_eq!(names, ["primary", "replica1", "replica2"]);
    assert_eq!(backends[0]["role"], "primary");
    assert_eq!(backends[0]["health"], "up");
    assert!(backends[0]["pool"]["max"].as_u64() > Some(0));

    let mut pinned = gw.app().await;
    let mut plain = gw.app().await;
    pinned.query_drop("SET @cart = 42").await.expect("set");
    for ids in ["1", "1, 2, 3", "4,5"] {
        plain
            .query_drop(format!("SELECT 1 FROM DUAL WHERE 1 IN ({ids})"))
            .await
            .expect("select");
    }
    // A session records a statement before it reads its next: once these answer, the ones
    // before are counted.
    plain.query_drop("DO 0").await.expect("barrier");
    pinned.query_drop("DO 0").await.expect("barrier");
    let pinned_id = pinned.id();
    let sessions = http_json(admin, "/api/sessions");
    let s = sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["id"] == pinned_id)
        .expect("the pinned session is listed");
    assert_eq!(s["user"], "app");
    assert_eq!(s["schema"], "app");
    assert_eq!(s["pinned"], true);
    assert_eq!(s["hold"], "pinned");
    assert_eq!(s["pinned_why"][0], "user variable (@name)");
    assert_eq!(s["pinned_by"], "SET @? = ?");
    assert!(s["backend"].is_string(), "{s}");
    let other = sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["id"] == plain.id())
        .expect("the other session is listed");
    assert_eq!(other["pinned"], false);

    // IN lists of any length are one digest.
    let d = http_json(admin, "/api/digests?sort=count&limit=1000");
    let selects = digest_rows(&d, "SELECT ? FROM DUAL WHERE ? IN(...)");
    let count: u64 = selects.iter().filter_map(|r| r["count"].as_u64()).sum();
    assert_eq!(count, 3, "{d}");
    assert!(
        selects
            .iter()
            .all(|r| r["user"] == "app" && r["schema"] == "app")
    );
    let set = digest_rows(&d, "SET @? = ?");
    assert_eq!(set.len(), 1, "{d}");
    assert_eq!(set[0]["backend"], "primary");
    assert!(set[0]["p99_us"].as_u64() >= set[0]["min_us"].as_u64());
    assert_eq!(
        http(admin, "GET", "/api/digests?sort=nonsense", None).0,
        400
    );
    assert_eq!(http(admin, "POST", "/api/digests/reset", None).0, 200);
    assert_eq!(http_json(admin, "/api/digests")["entries"], 0);

    let users = http_json(admin, "/api/users");
    let app = users
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["user"] == "app")
        .expect("app listed");
    assert_eq!(app["connections"], 2);
    assert!(app["statements"].as_u64() >= Some(4), "{app}");

    let policies = http_json(admin, "/api/policies");
    assert_eq!(policies["last_reload"]["ok"], true);

    // Killing a session through the API ends it: the client's next statement fails.
    let (status, body) = http(admin, "DELETE", &format!("/api/sessions/{pinned_id}"), None);
    assert_eq!(status, 200, "{body}");
    assert!(pinned.query_drop("SELECT 1").await.is_err());
    wait_until(10, "the killed session is gone", || {
        !gw.gateway
            .session_entries()
            .iter()
            .any(|(id, _)| *id == pinned_id)
    })
    .await;
    assert_eq!(
        http(admin, "DELETE", &format!("/api/sessions/{pinned_id}"), None).0,
        404
    );
    plain
        .query_drop("SELECT 1")
        .await
        .expect("the other session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_protects_everything_but_the_probes() {
    let mut c = base_config();
    c.admin.token = Some("adm1n-t0ken".into());
    let gw = TestGateway::start(c);
    let admin = gw.admin.expect("admin API enabled");
    assert_eq!(http(admin, "GET", "/healthz", None).0, 200);
    assert_eq!(http(admin, "GET", "/readyz", None).0, 200);
    for path in [
        "/",
        "/metrics",
        "/api/backends",
        "/api/sessions",
        "/api/digests",
    ] {
        assert_eq!(http(admin, "GET", path, None).0, 401, "{path}");
        assert_eq!(http(admin, "GET", path, Some("wrong")).0, 401, "{path}");
        assert_eq!(
            http(admin, "GET", path, Some("adm1n-t0ken")).0,
            200,
            "{path}"
        );
    }
    assert_eq!(http(admin, "POST", "/api/digests/reset", None).0, 401);
}

/// Every metric the operating docs name, in one scrape after some traffic.
const METRICS: &[&str] = &[
    "sluice_client_connections",
    "sluice_client_connections_total",
    "sluice_client_connections_refused_total",
    "sluice_auth_failures_total",
    "sluice_commands_total",
    "sluice_statements_total",
    "sluice_statement_duration_seconds_bucket",
    "sluice_statement_duration_seconds_sum",
    "sluice_statement_duration_seconds_count",
    "sluice_errors_total",
    "sluice_slow_statements_total",
    "sluice_transactions_total",
    "sluice_transaction_rollbacks_total",
    "sluice_transaction_duration_seconds_bucket",
    "sluice_pool_connections",
    "sluice_pool_waiting",
    "sluice_pool_max_connections",
    "sluice_pool_connections_created_total",
    "sluice_pool_connections_closed_total",
    "sluice_pool_acquire_seconds_bucket",
    "sluice_pool_acquire_timeouts_total",
    "sluice_replica_lag_seconds",
    "sluice_backend_statements_total",
    "sluice_backend_errors_total",
    "sluice_backend_bytes_out_total",
    "sluice_backend_health",
    "sluice_backend_breaker_open",
    "sluice_backend_health_transitions_total",
    "sluice_policy_calls_total",
    "sluice_policy_reused_verdicts_total",
    "sluice_policy_traps_total",
    "sluice_policy_deadline_hits_total",
    "sluice_policy_denials_total",
    "sluice_policy_reports_total",
    "sluice_policy_reloads_total",
    "sluice_digest_entries",
    "sluice_digest_evictions_total",
    "sluice_user_connections",
    "sluice_user_statements_total",
];

/// The value of the sample `series` (name and labels exactly as exposed), a count.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_every_series_and_count_what_clients_did() {
    let f = fleet();
    let mut c = crate::harness::monitored(crate::harness::shipped_config(f));
    c.metrics.per_user = true;
    c.log.slow_query_ms = 50;
    let gw = TestGateway::start(c);
    let admin = gw.admin.expect("admin API enabled");
    crate::harness::wait_for_replica_lag(&gw.gateway).await;
    let mut conn = gw.app().await;
    conn.query_drop("DROP TABLE IF EXISTS admin_metrics")
        .await
        .expect("drop");
    conn.query_drop("CREATE TABLE admin_metrics (id INT PRIMARY KEY)")
        .await
        .expect("create");
    for i in 0..5 {
        conn.query_drop(format!("INSERT INTO admin_metrics VALUES ({i})"))
            .await
            .expect("insert");
    }
    conn.query_drop("BEGIN").await.expect("begin");
    conn.query_drop("INSERT INTO admin_metrics VALUES (100)")
        .await
        .expect("insert");
    conn.query_drop("ROLLBACK").await.expect("rollback");
    let _: Vec<u32> = conn
        .exec("SELECT id FROM admin_metrics WHERE id = ?", (1,))
        .await
        .expect("execute");
    assert!(
        conn.query_drop("SELECT * FROM no_such_table")
            .await
            .is_err()
    );
    conn.query_drop("SELECT SLEEP(0.1)").await.expect("slow");
    assert!(
        mysql_async::Conn::new(gw.opts("app", "wrong", None))
            .await
            .is_err()
    );
    conn.query_drop("DO 0")
        .await
        .expect("barrier: what came before is recorded");
    wait_until(10, "the refused login is counted", || {
        gw.gateway
            .telemetry
            .metrics
            .refusals()
            .any(|(r, n)| r == sluice::telemetry::metrics::Refusal::Auth && n == 1)
    })
    .await;

    let (status, text) = http(admin, "GET", "/metrics", None);
    assert_eq!(status, 200);
    for m in METRICS {
        assert!(
            text.lines()
                .any(|l| l.starts_with(m) && l[m.len()..].starts_with(['{', ' '])),
            "{m} is missing from /metrics:\n{text}"
        );
    }
    assert!(!text.contains("digest="), "no digest label");
    let get = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}:\n{text}"));
    assert_eq!(
        get(r#"sluice_statements_total{command="insert",route="primary"}"#),
        6
    );
    assert_eq!(
        get(r#"sluice_statements_total{command="ddl",route="primary"}"#),
        2
    );
    assert_eq!(get(r#"sluice_errors_total{class="server",code="1146"}"#), 1);
    assert_eq!(get("sluice_transactions_total"), 1);
    assert_eq!(get("sluice_transaction_rollbacks_total"), 1);
    assert!(get("sluice_slow_statements_total") >= 1);
    assert_eq!(
        get(r#"sluice_client_connections_refused_total{reason="auth"}"#),
        1
    );
    assert_eq!(get(r#"sluice_user_connections{user="app"}"#), 1);
    assert_eq!(get(r#"sluice_commands_total{command="execute"}"#), 1);
    assert_eq!(
        get(r#"sluice_backend_health{backend="primary",role="primary",state="up"}"#),
        1
    );
    // Every statement reaches the guard: by a call, or by a verdict it said carries to the
    // statement's shape.
    assert!(
        get(r#"sluice_policy_calls_total{policy="guard",kind="guard"}"#)
            + get(r#"sluice_policy_reused_verdicts_total{policy="guard",kind="guard"}"#)
            >= 10
    );
    // Every bucket line of a histogram is cumulative: never fewer than the one before.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(r#"sluice_statement_duration_seconds_bucket{command="insert""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(buckets.len(), 17);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&6));
}

/// A real Prometheus scrapes the gateway; a series is read back through its HTTP API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway() {
    let gw = TestGateway::start(base_config());
    let admin = gw.admin.expect("admin API enabled");
    let mut conn = gw.app().await;
    for _ in 0..3 {
        conn.query_drop("SELECT 1").await.expect("select");
    }
    let dir = std::env::temp_dir().join(format!("sluice-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .expect("prometheus config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut prom = std::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus (apt install prometheus)");
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // sum(sluice_statements_total{command="select"})
    let query = "/api/v1/query?query=sum%28sluice_statements_total%7Bcommand%3D%22select%22%7D%29";
    let mut value = None;
    wait_until(60, "Prometheus has scraped the gateway", || {
        let Ok(s) = std::net::TcpStream::connect(api) else {
            return false;
        };
        drop(s);
        let (status, body) = http(api, "GET", query, None);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        value = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|n| n.parse::<f64>().ok());
        status == 200 && value.is_some()
    })
    .await;
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(value >= Some(3.0), "{value:?}");
}

/// The status page, rendered by headless Chromium: the fleet, a pinned session and why, digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_a_browser() {
    let gw = TestGateway::start(base_config());
    let admin = gw.admin.expect("admin API enabled");
    let mut pinned = gw.app().await;
    pinned
        .query_drop("CREATE TEMPORARY TABLE cart (id INT)")
        .await
        .expect("temporary table");
    pinned
        .query_drop("SELECT * FROM cart")
        .await
        .expect("select");
    let (status, html) = http(admin, "GET", "/", None);
    assert_eq!(status, 200);
    for want in [
        "replica2",
        "temporary table",
        "CREATE TEMPORARY TABLE CART",
        "SELECT * FROM CART",
    ] {
        assert!(html.contains(want), "{want} missing from the page:\n{html}");
    }
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset"
    );

    let shot = std::env::temp_dir().join(format!("sluice-status-{}.png", std::process::id()));
    let _ = std::fs::remove_file(&shot);
    let profile = std::env::temp_dir().join(format!("sluice-chromium-{}", std::process::id()));
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{admin}/"))
        .output()
        .expect("run chromium (apt install chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    if let Ok(keep) = std::env::var("SLUICE_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }
    let _ = std::fs::remove_file(&shot);
}

/// Every sysbench query is counted under its digest: after a reset the digest's count equals
/// the queries sysbench reports. Its p99 is printed next to sysbench's own (compared in
/// docs/benchmarks.md: a measurement, not asserted here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_counts_every_sysbench_query() {
    let f = fleet();
    f.sql(0, "CREATE DATABASE IF NOT EXISTS app_digests");
    let mut c = base_config();
    c.routing.read_write_split = true;
    let gw = TestGateway::start(c);
    let admin = gw.admin.expect("admin API enabled");
    let port = gw.addr.port();
    let common = ["--tables=1", "--table-size=1000"];
    tokio::task::spawn_blocking(move || {
        let args = |more: &[&'static str]| [&common[..], more].concat();
        sysbench(
            f.port,
            "app_digests",
            &args(&["oltp_point_select", "cleanup"]),
        );
        sysbench(
            f.port,
            "app_digests",
            &args(&["oltp_point_select", "prepare"]),
        );
        f.wait_replicas();
    })
    .await
    .expect("prepare");
    assert_eq!(http(admin, "POST", "/api/digests/reset", None).0, 200);
    let report = tokio::task::spawn_blocking(move || {
        sysbench(
            port,
            "app_digests",
            &[
                "--tables=1",
                "--table-size=1000",
                "--threads=4",
                "--time=3",
                "--percentile=99",
                "--skip-trx=on",
                "oltp_point_select",
                "run",
            ],
        )
    })
    .await
    .expect("run");
    let queries = counter(&report, "read:");
    assert!(queries > 0 && queries != u64::MAX, "{report}");
    let shape = "SELECT C FROM sbtest1 WHERE ID = ?";
    let count = || {
        let d = http_json(admin, "/api/digests?sort=count&limit=100");
        digest_rows(&d, shape)
            .iter()
            .filter_map(|r| r["count"].as_u64())
            .sum::<u64>()
    };
    // The last answers reach sysbench just before their statements are recorded.
    wait_until(10, "every query is recorded", || count() >= queries).await;
    assert_eq!(count(), queries, "{report}");
    let d = http_json(admin, "/api/digests?sort=count&limit=100");
    let rows = digest_rows(&d, shape);
    let sysbench_p99 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("99th percentile:"))
        .map_or("?", str::trim);
    let p99: Vec<u64> = rows.iter().filter_map(|r| r["p99_us"].as_u64()).collect();
    println!("sysbench p99 {sysbench_p99} ms; digest p99 per backend (µs) {p99:?}");
}

/// JSON logs, no colour codes in a file, and a slow statement logged without its literals.
#[test]
fn logs_are_json_and_the_slow_log_holds_no_literal() {
    let f = fleet();
    let backends = format!(
        "[{{name=\"primary\",address=\"127.0.0.1:{}\",role=\"primary\"}}]",
        f.port
    );
    let gw = GatewayProcess::start_logged(
        &backends,
        &[
            ("SLUICE_LOG__FORMAT", "json"),
            ("SLUICE_LOG__SLOW_QUERY_MS", "20"),
        ],
    );
    let (ok, _, err) = crate::harness::cli(
        gw.addr,
        "app",
        "app-secret",
        &["app"],
        "SELECT SLEEP(0.1), 'card 4111-1111-1111-1111' AS note",
    );
    assert!(ok, "{err}");
    let log = gw.stop_log();
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let slow = lines
        .iter()
        .find(|l| l["target"] == "sluice::slow")
        .unwrap_or_else(|| panic!("no slow statement logged:\n{log}"));
    assert_eq!(slow["user"], "app");
    assert_eq!(slow["backend"], "primary");
    assert!(slow["duration_ms"].as_f64() >= Some(100.0), "{slow}");
    assert!(
        slow["sql"].as_str().is_some_and(|s| s.contains("SLEEP")),
        "{slow}"
    );
    assert!(!log.contains("4111"), "a literal reached the log:\n{log}");
    assert!(!log.contains("app-secret"), "a secret reached the log");
}

/// The audit log of a short session holds exactly its events, with their fields, and no secret
/// or literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_a_sessions_events_and_no_secret() {
    let dir = crate::harness::PolicyDir::new("audit");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        crate::policies::guard_manifest(
            "guard",
            "guard.wasm",
            "deny",
            "deny-tables = [\"mysql.*\"]\n",
        )
        .as_bytes(),
    );
    let log = dir.path.join("audit.jsonl");
    let mut c = dir.config();
    c.audit.enabled = true;
    c.audit.file = Some(log.clone());
    c.users.push(sluice::config::UserConfig {
        name: "ops".into(),
        password: Some("ops-s3cret".into()),
        backend_user: Some("app".into()),
        backend_password: Some("app-secret".into()),
        ..Default::default()
    });
    let gw = TestGateway::start(c);
    let mut conn = gw.app().await;
    let id = conn.id();
    let denied = conn
        .query_drop("SELECT * FROM mysql.user WHERE User = 'literal-9f3'")
        .await;
    assert!(denied.is_err(), "the guard denies mysql.*");
    conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("ops".into()))
            .with_pass(Some("ops-s3cret".into())),
    )
    .await
    .expect("change user");
    assert!(
        mysql_async::Conn::new(gw.opts("app", "wr0ng-pass", None))
            .await
            .is_err()
    );
    conn.disconnect().await.expect("disconnect");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // The refused login and the disconnect are written just after the client hears of them.
    wait_until(
        10,
        "the refused login and the disconnect are audited",
        || {
            let t = read();
            t.contains("\"disconnect\"") && t.contains("\"connect_failed\"")
        },
    )
    .await;
    let text = read();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let mut session: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "policy_reload")
        .collect();
    session.sort_unstable();
    assert_eq!(
        session,
        [
            "change_user",
            "connect",
            "connect_failed",
            "denied",
            "disconnect"
        ],
        "{text}"
    );
    let event = |name: &str| {
        events
            .iter()
            .find(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name}: {text}"))
    };
    let connect = event("connect");
    assert_eq!(connect["connection_id"], id);
    assert_eq!(connect["user"], "app");
    assert_eq!(connect["schema"], "app");
    assert_eq!(connect["tls"], false);
    assert!(
        connect["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    assert!(
        connect["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let d = event("denied");
    assert!(
        d["detail"]
            .as_str()
            .is_some_and(|s| s.contains("guard") && s.contains("mysql.user")),
        "{d}"
    );
    assert_eq!(event("change_user")["user"], "ops");
    assert_eq!(event("disconnect")["user"], "ops");
    let failed = event("connect_failed");
    assert_eq!(failed["user"], "app");
    assert!(
        failed["detail"]
            .as_str()
            .is_some_and(|s| s.contains("Access denied"))
    );
    for secret in ["app-secret", "ops-s3cret", "wr0ng-pass", "literal-9f3"] {
        assert!(
            !text.contains(secret),
            "{secret} reached the audit log:\n{text}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&log).expect("log").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
