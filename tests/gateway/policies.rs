//! Wasm policies through real clients: the guard's denials, the rw-split router against a real
//! fleet (replicas, a stopped replica, both replicas down), the sandbox against purpose-built bad
//! plugins, and reloads (in place, corrupt, bad settings, ConfigMap symlink swap, under load).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mysql_async::prelude::*;
use mysql_async::{Conn, Error};

use crate::harness::{
    PolicyDir, TestGateway, start_private_fleet, wait_for_policy_error, wait_for_policy_version,
};

pub fn guard_manifest(name: &str, plugin: &str, on_error: &str, settings: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"guard\"\nplugin = \"{plugin}\"\non-error = \"{on_error}\"\n[limits]\ndeadline-ms = 20\nmemory-mib = 8\n[settings]\n{settings}\n"
    )
}

pub fn server_err(e: &Error) -> (u16, String) {
    match e {
        Error::Server(s) => (s.code, s.message.clone()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_denies_each_rule_with_its_message() {
    let f = crate::harness::fleet();
    f.sql(0, "CREATE TABLE IF NOT EXISTS app.open_keys (k INT)");
    f.wait_replicas();
    f.create_user("writer", "writer-secret");
    let dir = PolicyDir::new("guard-rules");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        guard_manifest(
            "guard",
            "guard.wasm",
            "deny",
            "max-statement-bytes = 200\ndeny-multi-statements = true\ndeny-tables = [\"app.secret_*\"]\ndeny-digests = [\"SELECT SLEEP(?)\"]\n",
        )
        .as_bytes(),
    );
    let mut cfg = dir.config();
    cfg.users.push(sluice::config::UserConfig {
        name: "writer".into(),
        password: Some("writer-secret".into()),
        ..Default::default()
    });
    let gw = TestGateway::start(cfg);
    let mut c = gw.app().await;
    // The same shape with an allowed table first: the guard caches its table rules by digest.
    c.query_drop("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')")
        .await
        .expect("ansi quotes");
    c.query_drop("SELECT * FROM \"app\".\"open_keys\"")
        .await
        .expect("an allowed table");
    let cases: &[(&str, u16, &str)] = &[
        ("DROP TABLE t", 1227, "DDL is not allowed"),
        ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", 1227, "LOAD DATA"),
        ("DELETE FROM t", 1175, "without a WHERE"),
        ("SELECT 1; SELECT 2", 1105, "multi-statements"),
        ("SELECT * FROM app.secret_keys", 1142, "secret_keys"),
        // Quoted every way a client can (backticks; double quotes under ANSI_QUOTES), and after
        // the same shape with an allowed table was cached by digest.
        ("SELECT * FROM `app`.`secret_keys`", 1142, "secret_keys"),
        ("SELECT * FROM \"app\".\"secret_keys\"", 1142, "secret_keys"),
        ("SELECT SLEEP(5)", 1105, "digest"),
    ];
    for (sql, code, text) in cases {
        let e = c.query_drop(*sql).await.expect_err(sql);
        let (got, message) = server_err(&e);
        assert_eq!(got, *code, "{sql}: {message}");
        assert!(
            message.contains("policy 'guard'") && message.contains(text),
            "{sql}: {message}"
        );
    }
    // A short statement of the long one's shape is allowed first: the verdict the gateway
    // reuses for the shape carries only up to the length limit.
    c.query_drop("SELECT 'short'").await.expect("short");
    let long = format!("SELECT '{}'", "x".repeat(300));
    let (code, message) = server_err(&c.query_drop(long).await.expect_err("too long"));
    assert!(
        code == 1105 && message.contains("max-statement-bytes"),
        "{message}"
    );
    // Allowed statements run, and the session goes on after every denial.
    for _ in 0..2 {
        let v: Option<i64> = c.query_first("SELECT 40 + 2").await.expect("allowed");
        assert_eq!(v, Some(42));
    }
    let guard_reused = |gw: &TestGateway| {
        gw.gateway
            .plugins()
            .iter()
            .find(|p| p.name() == "guard")
            .map(|p| p.stats.reused.load(Ordering::Relaxed))
    };
    assert!(
        guard_reused(&gw).is_some_and(|n| n >= 1),
        "a repeated shape is answered from the guard's earlier verdict"
    );
    // Per-user read-only.
    let v0 = gw.gateway.policy_status().version;
    dir.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "read-only-users = [\"app\"]").as_bytes(),
    );
    wait_for_policy_version(&gw.gateway, v0);
    assert_eq!(guard_reused(&gw), Some(0), "a reloaded guard starts afresh");
    let (code, message) = server_err(
        &c.query_drop("INSERT INTO app.open_keys VALUES (1)")
            .await
            .expect_err("read-only"),
    );
    assert!(code == 1290 && message.contains("read-only"), "{message}");
    // That verdict read the user: another user's statement of the same shape is its own.
    let mut w = Conn::new(gw.opts("writer", "writer-secret", Some("app")))
        .await
        .expect("writer connects");
    w.query_drop("INSERT INTO app.open_keys VALUES (2)")
        .await
        .expect("a user not listed writes");
    let (code, _) = server_err(
        &c.query_drop("INSERT INTO app.open_keys VALUES (3)")
            .await
            .expect_err("still read-only"),
    );
    assert_eq!(code, 1290);
    w.disconnect().await.expect("disconnect");
    let v: Option<i64> = c
        .query_first("SELECT 7")
        .await
        .expect("reads still allowed");
    assert_eq!(v, Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_split_follows_replica_health_and_lag() {
    // A fleet of its own: this test stops replication and then the replicas.
    let f = start_private_fleet("rwsplit");
    let dir = PolicyDir::new("rw-split");
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        b"name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n[settings]\nstrategy = \"sticky\"\nmax-lag-ms = 5000\n",
    );
    let mut cfg = dir.config();
    for (i, b) in cfg.backends.iter_mut().enumerate() {
        b.address = format!("127.0.0.1:{}", f.port + i as u16);
    }
    cfg.monitor = Some(sluice::config::MonitorConfig {
        user: "sluice_monitor".into(),
        password: "monitor-secret".into(),
        interval_ms: 50,
    });
    let gw = TestGateway::start(cfg);
    let wait_fleet = |want: &dyn Fn(&[sluice::phase::BackendStatus]) -> bool| {
        for _ in 0..400 {
            if want(&gw.gateway.fleet().statuses()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "fleet never reached the expected state: {:?}",
            gw.gateway.fleet().statuses()
        );
    };
    wait_fleet(&|s| s.iter().all(|b| b.healthy && b.lag_ms.is_some()));

    let opts = gw.opts("app", "app-secret", Some("app"));
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id", 6).await,
        vec![2, 3],
        "reads land on both replicas"
    );
    let mut c = gw.app().await;
    c.query_drop("CREATE TABLE IF NOT EXISTS app.rw_t (id INT PRIMARY KEY)")
        .await
        .expect("ddl");
    c.query_drop("BEGIN").await.expect("begin");
    c.query_drop("REPLACE INTO app.rw_t VALUES (1)")
        .await
        .expect("write");
    let in_tx: u32 = c
        .query_first("SELECT @@server_id")
        .await
        .expect("q")
        .expect("row");
    assert_eq!(in_tx, 1, "writes and transactions on the primary");
    c.query_drop("COMMIT").await.expect("commit");

    // A session whose reads stick to replica 1 (server 2). Sticky routes carry within the
    // session: after the first, its reads are routed without calling the router...
    let mut sticky = loop {
        let mut s = gw.app().await;
        let id: u32 = s
            .query_first("SELECT @@server_id")
            .await
            .expect("q")
            .expect("row");
        if id == 2 {
            break s;
        }
    };
    let router = || {
        gw.gateway
            .plugins()
            .into_iter()
            .find(|p| p.name() == "rw-split")
            .expect("router")
    };
    let reused = router().stats.reused.load(Ordering::Relaxed);
    for _ in 0..10 {
        let id: Option<u32> = sticky.query_first("SELECT @@server_id").await.expect("q");
        assert_eq!(id, Some(2));
    }
    assert!(
        router().stats.reused.load(Ordering::Relaxed) >= reused + 5,
        "the session's reads reuse its route"
    );

    // Replica 1's SQL thread stops: its lag is unknown, reads move away from it.
    f.sql(1, "STOP SLAVE SQL_THREAD");
    wait_fleet(&|s| s[1].lag_ms.is_none());
    // ... and a reused route does not outlive the fleet it was made for.
    let id: Option<u32> = sticky.query_first("SELECT @@server_id").await.expect("q");
    assert_eq!(id, Some(3), "the session's reads leave the lagging replica");
    drop(sticky);
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id", 6).await,
        vec![3],
        "reads avoid the replica that does not apply"
    );
    f.sql(1, "START SLAVE SQL_THREAD");

    // Both replicas down: reads go to the primary, with no errors.
    f.sql(1, "SHUTDOWN");
    f.sql(2, "SHUTDOWN");
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id", 4).await,
        vec![1],
        "no replica: the primary serves reads"
    );
    wait_fleet(&|s| !s[1].healthy && !s[2].healthy);
    assert_eq!(server_ids(&opts, "SELECT @@server_id", 4).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_turns_misbehaviour_into_the_on_error_outcome() {
    for (mode, expect) in [
        ("loop", "timed out"),
        ("memory-bomb", "ran out of memory"),
        ("panic", "trapped"),
    ] {
        let dir = PolicyDir::new(&format!("sandbox-{mode}"));
        dir.plugin("misbehave", "misbehave.wasm");
        dir.write(
            "bad.toml",
            guard_manifest(
                "bad",
                "misbehave.wasm",
                "deny",
                &format!("mode = \"{mode}\""),
            )
            .as_bytes(),
        );
        let gw = TestGateway::start(dir.config());
        let mut c = gw.app().await;
        for _ in 0..3 {
            let (code, message) =
                server_err(&c.query_drop("SELECT 'misbehave'").await.expect_err(mode));
            assert_eq!(code, 1105, "{mode}: {message}");
            assert!(
                message.contains("policy 'bad'") && message.contains(expect),
                "{mode}: {message}"
            );
        }
        c.ping().await.expect("the session survives");
        drop(c);
        // on-error = "allow": the statement runs despite the failing guard.
        dir.write(
            "bad.toml",
            guard_manifest(
                "bad",
                "misbehave.wasm",
                "allow",
                &format!("mode = \"{mode}\""),
            )
            .as_bytes(),
        );
        wait_for_policy_version(&gw.gateway, 1);
        let mut c = gw.app().await;
        let v: Option<String> = c
            .query_first("SELECT 'misbehave'")
            .await
            .expect("allowed on error");
        assert_eq!(v.as_deref(), Some("misbehave"));
    }
}

#[test]
fn a_loaded_policy_has_warm_instances_before_its_first_statement() {
    let dir = PolicyDir::new("prewarm");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "").as_bytes(),
    );
    let engine = sluice::plugin::runtime::PluginEngine::new().expect("engine");
    let set = dir.load(&engine).expect("loads");
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    assert_eq!(set.guards[0].warm_instances(), threads.min(32));
}

#[test]
fn plugins_that_import_wasi_are_refused_at_load() {
    let dir = PolicyDir::new("wasi-import");
    dir.plugin("wasi-import", "escape.wasm");
    dir.write(
        "escape.toml",
        guard_manifest("escape", "escape.wasm", "deny", "").as_bytes(),
    );
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = rt
        .block_on(sluice::bind(dir.config(), rx))
        .err()
        .expect("the load must fail")
        .to_string();
    assert!(
        err.contains("escape.toml") && err.contains("wasi:") && err.contains("sluice:policy/host"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_swap_atomically_and_refuse_broken_sets() {
    let dir = PolicyDir::new("reload");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "").as_bytes(),
    );
    let gw = TestGateway::start(dir.config());
    let v0 = gw.gateway.policy_status().version;

    // 16 clients run statements until told to stop; the policy is replaced once every client has
    // run some, and they stop once every client has run more on the new set. The swap happens
    // under load by construction, with no timing involved.
    let failures = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
    let mut clients = Vec::new();
    for i in 0..16u64 {
        let opts = gw.opts("app", "app-secret", Some("app"));
        let (failures, done, stop, progress) = (
            Arc::clone(&failures),
            Arc::clone(&done),
            Arc::clone(&stop),
            Arc::clone(&progress),
        );
        clients.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.expect("connect");
            let mut j = 0u64;
            while !stop.load(Ordering::Relaxed) && j < 100_000 {
                match c
                    .query_first::<u64, _>(format!("SELECT {i} * 1000000 + {j}"))
                    .await
                {
                    Ok(Some(v)) if v == i * 1_000_000 + j => {}
                    other => {
                        // Say what failed: a denial, a policy deadline, a wrong answer.
                        eprintln!("client {i} statement {j} during the reload: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                j += 1;
                progress[i as usize].store(j, Ordering::Relaxed);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let wait_progress = |at_least: &[u64]| {
        let progress = Arc::clone(&progress);
        let want = at_least.to_vec();
        async move {
            for _ in 0..2000 {
                if progress
                    .iter()
                    .zip(&want)
                    .all(|(p, w)| p.load(Ordering::Relaxed) >= *w)
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("clients made no progress");
        }
    };
    wait_progress(&[20; 16]).await;
    // In-place change: deny a digest.
    dir.write(
        "guard.toml",
        guard_manifest(
            "guard",
            "guard.wasm",
            "deny",
            "deny-digests = [\"SELECT ? AS PROBE\"]",
        )
        .as_bytes(),
    );
    let st = wait_for_policy_version(&gw.gateway, v0);
    let after: Vec<u64> = progress
        .iter()
        .map(|p| p.load(Ordering::Relaxed) + 20)
        .collect();
    wait_progress(&after).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "statements failed during the reload"
    );
    assert_eq!(done.load(Ordering::Relaxed), 16);
    let mut c = gw.app().await;
    let (code, _) = server_err(
        &c.query_drop("SELECT 1 AS probe")
            .await
            .expect_err("new behaviour"),
    );
    assert_eq!(code, 1105);

    // A corrupt plugin: refused, reported, the previous set keeps serving.
    dir.write("guard.wasm", b"\0asm garbage");
    let bad = wait_for_policy_error(&gw.gateway, 0);
    let e = bad.last_error.expect("reported");
    assert!(
        e.file.ends_with("guard.toml") && e.reason.contains("guard.wasm"),
        "{e:?}"
    );
    assert_eq!(gw.gateway.policy_status().version, st.version);
    assert!(
        c.query_drop("SELECT 2 AS probe").await.is_err(),
        "the old guard still denies"
    );

    // Bad settings: refused too.
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "no-such-setting = 1").as_bytes(),
    );
    let bad = wait_for_policy_error(&gw.gateway, bad.errors);
    assert!(
        bad.last_error
            .expect("reported")
            .reason
            .contains("no-such-setting")
    );
    assert!(
        c.query_drop("SELECT 3 AS probe").await.is_err(),
        "still the old guard"
    );
    let ok: Option<i64> = c.query_first("SELECT 4").await.expect("still serving");
    assert_eq!(ok, Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swaps_are_picked_up() {
    // The layout Kubernetes mounts: files are symlinks through `..data`, itself a symlink to a
    // timestamped directory that is swapped by renaming a new `..data` link over the old one.
    let dir = PolicyDir::new("configmap");
    let version_dir = |name: &str, settings: &str| {
        let d = dir.path.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::copy(
            crate::harness::plugin_artifacts().join("guard.wasm"),
            d.join("guard.wasm"),
        )
        .expect("copy");
        std::fs::write(
            d.join("guard.toml"),
            guard_manifest("guard", "guard.wasm", "deny", settings),
        )
        .expect("write");
    };
    version_dir("..2026_01", "");
    std::os::unix::fs::symlink("..2026_01", dir.path.join("..data")).expect("link");
    std::os::unix::fs::symlink("..data/guard.toml", dir.path.join("guard.toml")).expect("link");
    std::os::unix::fs::symlink("..data/guard.wasm", dir.path.join("guard.wasm")).expect("link");
    let gw = TestGateway::start(dir.config());
    let v0 = gw.gateway.policy_status().version;
    let mut c = gw.app().await;
    c.query_drop("SELECT 1 AS probe")
        .await
        .expect("allowed before the swap");

    version_dir("..2026_02", "deny-digests = [\"SELECT ? AS PROBE\"]");
    std::os::unix::fs::symlink("..2026_02", dir.path.join("..data_tmp")).expect("link");
    std::fs::rename(dir.path.join("..data_tmp"), dir.path.join("..data")).expect("swap");
    // Creating `..2026_02` may itself trigger a reload that still reads the old `..data`:
    // wait for the one that loaded the new settings.
    crate::harness::wait_for_loaded_policies(&gw.gateway, |loaded| {
        loaded
            .iter()
            .any(|p| p.manifest.settings_json.contains("SELECT ? AS PROBE"))
    });
    assert!(gw.gateway.policy_status().version > v0);
    let (code, _) = server_err(
        &c.query_drop("SELECT 1 AS probe")
            .await
            .expect_err("denied after the swap"),
    );
    assert_eq!(code, 1105);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_policy_admits_users_from_a_secret_file() {
    let cfg = crate::harness::secrets_config(
        "secrets",
        br#"{"alice": {"password": "alice-pw", "backend-user": "app", "backend-password": "app-secret"},
            "carol": {"password": "carol-pw", "backend-user": "app", "backend-password": "app-secret",
                      "auth-plugin": "caching_sha2_password"}}"#,
    );
    let gw = TestGateway::start(cfg);
    for user in ["alice", "carol"] {
        let mut c = Conn::new(gw.opts(user, &format!("{user}-pw"), Some("app")))
            .await
            .expect("admitted from the secret");
        let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.expect("query");
        assert_eq!(who.as_deref(), Some("app@%"), "runs as the backend account");
    }
    for (user, pass) in [("alice", "wrong"), ("app", "app-secret"), ("mallory", "x")] {
        let e = Conn::new(gw.opts(user, pass, None))
            .await
            .expect_err("refused");
        assert_eq!(server_err(&e).0, 1045, "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_redacts_columns_in_text_and_binary_results() {
    let f = crate::harness::fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.customers (id INT PRIMARY KEY, email VARCHAR(100) NOT NULL, card VARCHAR(30), \
         ssn VARCHAR(20), note TEXT, balance INT); \
         REPLACE INTO app.customers VALUES (1, 'ada@example.com', '4111 1111 1111 1111', '123-45-6789', \
         'call ada@example.com, card 4111111111111111', 42)",
    );
    f.wait_replicas();
    let dir = PolicyDir::new("mask");
    dir.plugin("mask", "mask.wasm");
    dir.write(
        "mask.toml",
        br#"name = "mask"
kind = "redactor"
plugin = "mask.wasm"
[settings]
rules = [{ column = "email", action = "mask" }, { column = "app.customers.card", action = "keep-last", keep = 4 },
         { column = "ssn", action = "hash" }, { column = "balance", action = "mask" }]
detect = ["note"]
"#,
    );
    let gw = TestGateway::start(dir.config());
    let mut c = gw.app().await;
    type Row = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
    );
    let text: Option<Row> = c
        .query_first("SELECT id, email, card, ssn, note, balance FROM customers WHERE id = 1")
        .await
        .expect("text");
    let stmt = c
        .prep("SELECT id, email, card, ssn, note, balance FROM customers WHERE id = ?")
        .await
        .expect("prepare");
    let binary: Option<Row> = c.exec_first(&stmt, (1,)).await.expect("binary");
    for (protocol, row) in [("text", text), ("binary", binary)] {
        let (id, email, card, ssn, note, balance) = row.expect("a row");
        assert_eq!(id, 1, "{protocol}: kept");
        assert_eq!(email, "***************", "{protocol}: masked");
        assert_eq!(
            card.as_deref(),
            Some("***************1111"),
            "{protocol}: keep-last 4"
        );
        let ssn = ssn.expect("hashed");
        assert!(
            ssn.len() == 64 && !ssn.contains("6789"),
            "{protocol}: {ssn}"
        );
        assert_eq!(
            note.as_deref(),
            Some("call ***@example.com, card ************1111"),
            "{protocol}: detected in text"
        );
        assert_eq!(balance, None, "{protocol}: a masked number is withheld");
    }

    // A `custom` column over many rows: its cells go to the policy a batch at a time; every row
    // must come back with its own cell, NULLs in place, across batch boundaries.
    let many = "SELECT seq, IF(seq % 3 = 0, NULL, CONCAT('mail u', seq, '@example.com')) AS note \
                FROM seq_1_to_150 WHERE seq <= ? ORDER BY seq";
    let expected = |seq: i64| {
        (seq % 3 != 0).then(|| format!("mail {}@example.com", "*".repeat(format!("u{seq}").len())))
    };
    let text: Vec<(i64, Option<String>)> =
        c.query(many.replace('?', "150")).await.expect("text rows");
    let binary: Vec<(i64, Option<String>)> = c.exec(many, (150,)).await.expect("binary rows");
    for (protocol, rows) in [("text", text), ("binary", binary)] {
        assert_eq!(rows.len(), 150, "{protocol}");
        for (seq, note) in rows {
            assert_eq!(note, expected(seq), "{protocol}: row {seq}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_split_rules_route_reads_by_table_digest_and_user_without_new_wasm() {
    let f = crate::harness::fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.rules_t (id INT PRIMARY KEY); \
         CREATE TABLE IF NOT EXISTS app.rules_pinned (id INT PRIMARY KEY); \
         REPLACE INTO app.rules_t VALUES (1); REPLACE INTO app.rules_pinned VALUES (1);",
    );
    f.wait_replicas();
    let dir = PolicyDir::new("rw-rules");
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        br#"name = "rw-split"
kind = "router"
plugin = "rw-split.wasm"
[settings]
strategy = "sticky"
max-lag-ms = 60000
rules = [
  { table = "app.rules_p*", to = "primary" },
  { table = "rules_t", to = "replica2" },
  { user = "app", digest = "*@@server_id*?", to = "replica1" },
  { table = "rules_t", to = "primary" },
]
"#,
    );
    let gw = TestGateway::start(crate::harness::monitored(dir.config()));
    crate::harness::wait_until(20, "replicas' lag known", || {
        gw.gateway
            .fleet()
            .statuses()
            .iter()
            .all(|b| b.healthy && b.lag_ms.is_some())
    })
    .await;
    let mut c = gw.app().await;
    let opts = gw.opts("app", "app-secret", Some("app"));
    // server_id: primary 1, replica1 2, replica2 3.
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id FROM app.rules_pinned", 6).await,
        [1],
        "table rule -> primary"
    );
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id FROM rules_t", 6).await,
        [3],
        "first matching rule -> replica2"
    );
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id + 0 * 42", 6).await,
        [2],
        "user + digest rule -> replica1"
    );
    assert_eq!(
        server_ids(&opts, "SELECT @@server_id", 6).await,
        [2, 3],
        "no rule: the strategy's replicas (sticky: by connection id)"
    );
    // A write matching a replica rule still goes to the primary.
    c.query_drop("REPLACE INTO rules_t VALUES (2)")
        .await
        .expect("a write on a table a replica rule names runs on the primary");
}

/// The distinct `@@server_id`s that `n` fresh sessions' runs of `sql` (a query whose first
/// column is it) land on: no read-your-writes or affinity in the way.
async fn server_ids(opts: &mysql_async::Opts, sql: &str, n: usize) -> Vec<u32> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut c = Conn::new(opts.clone()).await.expect("connect");
        let id: u32 = c.query_first(sql).await.expect("read").expect("row");
        ids.push(id);
        c.disconnect().await.expect("disconnect");
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Compiled policies kept on disk: written privately, loaded by the next engine instead of
/// compiling, a damaged artifact recompiled, a directory others can access not used.
#[test]
fn compiled_policies_are_kept_on_disk_privately_and_reused() {
    use sluice::plugin::runtime::PluginEngine;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    let dir = PolicyDir::new("precompiled");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        guard_manifest("guard", "guard.wasm", "deny", "").as_bytes(),
    );
    let cache = dir.path.join("cache/compiled");
    let load = |engine: &Arc<PluginEngine>| dir.load(engine).expect("loads");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    let artifacts = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .expect("cache dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .collect()
    };

    let first = PluginEngine::with_compiled_cache(Some(&cache)).expect("engine");
    load(&first);
    assert_eq!(first.compilations.load(Ordering::Relaxed), 1);
    assert_eq!(mode(&cache), 0o700, "created private");
    let written = artifacts();
    assert_eq!(written.len(), 1);
    assert_eq!(mode(&written[0]), 0o600);

    let second = PluginEngine::with_compiled_cache(Some(&cache)).expect("engine");
    load(&second);
    assert_eq!(
        second.compilations.load(Ordering::Relaxed),
        0,
        "loaded, not compiled"
    );
    assert_eq!(second.precompiled_hits(), Some(1));

    // A damaged artifact is a miss: compiled again and replaced.
    let mut bytes = std::fs::read(&written[0]).expect("artifact");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&written[0], &bytes).expect("damage");
    let third = PluginEngine::with_compiled_cache(Some(&cache)).expect("engine");
    load(&third);
    assert_eq!(third.compilations.load(Ordering::Relaxed), 1);
    let fourth = PluginEngine::with_compiled_cache(Some(&cache)).expect("engine");
    load(&fourth);
    assert_eq!(
        fourth.precompiled_hits(),
        Some(1),
        "the rewritten artifact serves"
    );

    // Others may read or write the directory: native code from it is not trusted.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let open = PluginEngine::with_compiled_cache(Some(&cache)).expect("engine");
    assert_eq!(open.precompiled_hits(), None, "not used");
    load(&open);
    assert_eq!(open.compilations.load(Ordering::Relaxed), 1);
}
