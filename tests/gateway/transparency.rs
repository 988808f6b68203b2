//! Applications cannot tell the gateway from MySQL with reads split to replicas: transactions
//! (explicit, implicit under `autocommit=0`, declared read-only) run where MySQL's rules say.

use std::process::Command;

use mysql_async::Conn;
use mysql_async::prelude::*;
use sluice::config::{Config, MonitorConfig};

use crate::harness::{PolicyDir, TestGateway, base_config, fleet, repo_root};

/// The built-in read/write split.
fn builtin_split() -> Config {
    let mut c = base_config();
    c.routing.read_write_split = true;
    c
}

/// The shipped `rw-split` router (Wasm), lag-aware, so with a monitor.
fn wasm_split(dir: &PolicyDir) -> Config {
    dir.plugin("rw-split", "rw-split.wasm");
    dir.write(
        "rw-split.toml",
        b"name = \"rw-split\"\nkind = \"router\"\nplugin = \"rw-split.wasm\"\n[settings]\nstrategy = \"sticky\"\nmax-lag-ms = 5000\n",
    );
    let mut c = dir.config();
    c.monitor = Some(MonitorConfig {
        user: "sluice_monitor".into(),
        password: "monitor-secret".into(),
        interval_ms: 50,
    });
    c
}

/// Waits (bounded) until the monitor has seen every replica's lag, so a lag-aware router
/// reads from replicas.
async fn replicas_known(gw: &TestGateway) {
    for _ in 0..400 {
        if gw
            .gateway
            .fleet()
            .statuses()
            .iter()
            .all(|b| b.healthy && b.lag_ms.is_some())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the monitor never saw the replicas");
}

async fn port(c: &mut Conn) -> u16 {
    c.query_first("SELECT @@port")
        .await
        .expect("port")
        .expect("row")
}

/// Read-then-write in one implicit transaction, a declared read-only transaction, and plain
/// autocommit reads, through `gw`, with the text and the binary protocol.
async fn transactions_follow_mysql_rules(gw: &TestGateway) {
    let f = fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.tx_rules (id INT PRIMARY KEY, v VARCHAR(10)); \
         INSERT IGNORE INTO app.tx_rules VALUES (1, 'a')",
    );
    f.wait_replicas();
    let mut c = gw.app().await;
    // Autocommit on: plain reads go to replicas (so the rest of this test can fail).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(port(&mut c).await);
    }
    assert!(
        !seen.contains(&f.port),
        "autocommit reads stay on replicas: {seen:?}"
    );

    c.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit off");
    for binary in [false, true] {
        let n: Option<i64> = if binary {
            c.exec_first("SELECT COUNT(*) FROM tx_rules WHERE id = ?", (1,))
                .await
                .expect("read")
        } else {
            c.query_first("SELECT COUNT(*) FROM tx_rules")
                .await
                .expect("read")
        };
        assert!(n >= Some(1));
        assert_eq!(
            port(&mut c).await,
            f.port,
            "an implicit transaction runs on the primary"
        );
        let write = if binary {
            c.exec_drop("UPDATE tx_rules SET v = ? WHERE id = 1", ("q",))
                .await
        } else {
            c.query_drop("UPDATE tx_rules SET v = 'q' WHERE id = 1")
                .await
        };
        write.expect("a write after a read in the same implicit transaction");
        c.query_drop("COMMIT").await.expect("commit");
    }
    // Still autocommit off: a transaction declared read-only may be served by a replica (once
    // the replicas have this session's writes: read-your-writes).
    f.wait_replicas();
    c.query_drop("START TRANSACTION READ ONLY")
        .await
        .expect("read only");
    let p = port(&mut c).await;
    assert_ne!(p, f.port, "a read-only transaction is served by a replica");
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM tx_rules")
        .await
        .expect("read");
    assert!(n >= Some(1));
    assert_eq!(
        port(&mut c).await,
        p,
        "the whole transaction stays on its replica"
    );
    c.query_drop("COMMIT").await.expect("commit");
    // Back to autocommit: reads leave the primary again.
    c.query_drop("SET autocommit = 1")
        .await
        .expect("autocommit on");
    c.query_drop("BEGIN").await.expect("begin");
    assert_eq!(
        port(&mut c).await,
        f.port,
        "BEGIN opens a transaction on the primary"
    );
    c.query_drop("COMMIT").await.expect("commit");
    f.wait_replicas();
    assert_ne!(port(&mut c).await, f.port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_follow_mysql_rules_with_the_builtin_split() {
    let gw = TestGateway::start(builtin_split());
    transactions_follow_mysql_rules(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_follow_mysql_rules_with_the_wasm_split() {
    let dir = PolicyDir::new("tx-rules");
    let gw = TestGateway::start(wasm_split(&dir));
    replicas_known(&gw).await;
    transactions_follow_mysql_rules(&gw).await;
}

/// mysql_async by default (`prefer_socket`) asks a server on loopback for `@@socket` and moves
/// to that Unix socket. Through the gateway there is none to move to: a backend's would take
/// the session past the gateway (to a read-only replica, here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_prefers_the_servers_socket_stays_on_the_gateway() {
    let gw = TestGateway::start(builtin_split());
    let opts = mysql_async::OptsBuilder::from_opts(gw.opts("app", "app-secret", Some("app")))
        .prefer_socket(true);
    let mut c = Conn::new(opts)
        .await
        .expect("connect with the driver's defaults");
    let socket: Option<Option<String>> = c.query_first("SELECT @@socket").await.expect("@@socket");
    assert_eq!(
        socket,
        Some(None),
        "the gateway has no local socket to offer"
    );
    c.query_drop("CREATE TABLE IF NOT EXISTS app.socket_probe (id INT PRIMARY KEY)")
        .await
        .expect("a write through the gateway, not on a replica's socket");
    c.query_drop("REPLACE INTO app.socket_probe VALUES (1)")
        .await
        .expect("write");
    let id: u32 = c
        .query_first("SELECT CONNECTION_ID()")
        .await
        .expect("id")
        .expect("row");
    assert!(
        gw.gateway.session(id).is_some(),
        "CONNECTION_ID() is the gateway's session"
    );
    c.disconnect().await.expect("disconnect");
}

/// `tests/clients/transactions_check.py` with a driver (PyMySQL, mysql-connector-python).
fn python_check(port: u16, driver: &str) {
    let out = Command::new("python3")
        .arg(repo_root().join("tests/clients/transactions_check.py"))
        .args([
            port.to_string(),
            fleet().port.to_string(),
            driver.to_string(),
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{driver}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers_with_their_default_autocommit_off() {
    let dir = PolicyDir::new("tx-python");
    let gw = TestGateway::start(wasm_split(&dir));
    replicas_known(&gw).await;
    let p = gw.addr.port();
    tokio::task::spawn_blocking(move || {
        python_check(p, "pymysql");
        python_check(p, "mysql.connector");
        python_check(p, "mysql.connector-prepared");
    })
    .await
    .expect("python");
}

#[test]
fn ssl_status_describes_the_client_connection() {
    // The backend connections use TLS too, so a plain client's empty answer is the gateway's.
    let mut cfg = builtin_split();
    for b in &mut cfg.backends {
        b.tls = true;
        b.tls_skip_verify = true;
    }
    let gw = TestGateway::start(cfg);
    let ask = |extra: &[&str], sql: &str| {
        let (ok, out, err) = crate::harness::cli(gw.addr, "app", "app-secret", extra, sql);
        assert!(ok, "{sql}: {err}");
        out
    };
    // TLS: the cipher and protocol the client negotiated with the gateway, in both forms.
    let out = ask(&["--ssl"], "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    let cipher = out.strip_prefix("Ssl_cipher\t").unwrap_or_default();
    assert!(
        cipher.starts_with("TLS_") || cipher.contains('-'),
        "{out:?}"
    );
    let out = ask(
        &["--ssl"],
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_version'",
    );
    assert!(out.starts_with("SSL_VERSION\tTLSv1."), "{out:?}");
    // Plain: empty, whatever the backend connection uses.
    assert_eq!(
        ask(&["--skip-ssl"], "SHOW STATUS LIKE 'Ssl_cipher'"),
        "Ssl_cipher"
    );
    assert_eq!(
        ask(&["--skip-ssl"], "SHOW STATUS LIKE 'Ssl_version'"),
        "Ssl_version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_guard_reports_what_correct_applications_do_and_enforces_mysql_tables() {
    let dir = PolicyDir::new("shipped-guard");
    dir.plugin("guard", "guard.wasm");
    let manifest =
        std::fs::read(repo_root().join("policies/guard.toml")).expect("shipped manifest");
    dir.write("guard.toml", &manifest);
    let gw = TestGateway::start(dir.config());
    let mut c = gw.app().await;
    let reports = || {
        gw.gateway
            .guard_reports
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Test clean-ups and queue tables: DDL and an unbounded DELETE run, and are reported.
    c.query_drop("CREATE TABLE IF NOT EXISTS app.queue_items (id INT)")
        .await
        .expect("DDL runs");
    c.query_drop("INSERT INTO queue_items VALUES (1), (2)")
        .await
        .expect("insert");
    let before = reports();
    c.query_drop("DELETE FROM queue_items")
        .await
        .expect("an unbounded DELETE runs");
    assert_eq!(c.affected_rows(), 2);
    assert_eq!(reports(), before + 1, "the would-be denial is counted");
    // Prepared statements pass the same guard.
    c.exec_drop("DELETE FROM queue_items", ())
        .await
        .expect("prepared, reported");
    assert_eq!(reports(), before + 2);
    // What no application needs stays refused, text and prepared.
    for prepared in [false, true] {
        let e = if prepared {
            c.prep("SELECT user FROM mysql.user").await.map(|_| ())
        } else {
            c.query_drop("SELECT user FROM mysql.user").await
        }
        .expect_err("mysql.* is enforced");
        match e {
            mysql_async::Error::Server(s) => assert_eq!(s.code, 1142, "{}", s.message),
            other => panic!("{other}"),
        }
    }
}

/// What a write-then-read run saw.
struct ReadYourWrites {
    stale: u64,
    delayed: u64,
    delayed_on_replicas: u64,
}

/// `pairs` write-then-read pairs on one connection (the read at once, by the new row's id), then
/// `delayed` pairs whose read is sent 20 ms after its write, while another client writes
/// continuously.
async fn write_then_read(gw: &TestGateway, pairs: u64, delayed: u64) -> ReadYourWrites {
    let f = fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.ryw (id INT AUTO_INCREMENT PRIMARY KEY, v INT); \
         CREATE TABLE IF NOT EXISTS app.ryw_noise (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    );
    f.wait_replicas();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = std::sync::Arc::clone(&stop);
        let mut c = gw.app().await;
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.query_drop("INSERT INTO ryw_noise (v) VALUES (1)")
                    .await
                    .expect("noise");
            }
        })
    };
    let mut c = gw.app().await;
    let mut seen = ReadYourWrites {
        stale: 0,
        delayed: 0,
        delayed_on_replicas: 0,
    };
    for i in 0..pairs + delayed {
        c.query_drop("INSERT INTO ryw (v) VALUES (1)")
            .await
            .expect("write");
        let id = c.last_insert_id().expect("an id");
        let late = i >= pairs;
        if late {
            // The scenario itself: a read issued 20 ms after its write.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (n, port): (i64, u16) = c
            .query_first(format!("SELECT COUNT(*), @@port FROM ryw WHERE id = {id}"))
            .await
            .expect("read")
            .expect("row");
        if n == 0 {
            seen.stale += 1;
        }
        if late {
            seen.delayed += 1;
            if port != f.port {
                seen.delayed_on_replicas += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.await.expect("noise");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_read_their_own_writes_from_replicas() {
    let mut cfg = builtin_split();
    cfg.routing.consistency = sluice::config::Consistency::Session;
    let gw = TestGateway::start(cfg);
    let r = write_then_read(&gw, 10_000, 200).await;
    println!(
        "session: {} stale of 10000; {} of {} reads 20 ms after their write on replicas",
        r.stale, r.delayed_on_replicas, r.delayed
    );
    assert_eq!(r.stale, 0, "a session missed its own write");
    assert!(
        r.delayed_on_replicas * 2 >= r.delayed,
        "only {} of {} late reads were served by replicas",
        r.delayed_on_replicas,
        r.delayed
    );
    drop(gw);
    // The same run without the guarantee shows why it is there (so this test can fail).
    let mut cfg = builtin_split();
    cfg.routing.consistency = sluice::config::Consistency::Eventual;
    let gw = TestGateway::start(cfg);
    let r = write_then_read(&gw, 10_000, 0).await;
    println!("eventual: {} stale of 10000", r.stale);
    assert!(
        r.stale > 0,
        "eventual consistency never read stale: the test proves nothing"
    );
}

/// Optimistic transactions (opt-in): an implicit transaction that begins with a read starts on a
/// replica; at its first write it moves to the primary when its reads match there, and fails with
/// 9003 / 40001 when they do not; a read-only one ends on its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_transactions_move_to_the_primary_at_their_first_write() {
    let f = fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.optimistic (id INT PRIMARY KEY, v INT); \
         REPLACE INTO app.optimistic VALUES (1, 10), (2, 20)",
    );
    f.wait_replicas();
    let mut c = builtin_split();
    c.routing.optimistic_transactions = true;
    // Reads right after the session's commits may use replicas (they are waited for below).
    c.routing.read_after_write_primary_ms = 0;
    let gw = TestGateway::start(c);
    let moves = || {
        gw.gateway
            .optimistic_moves
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut a = gw.app().await;
    // Where the transaction runs, from the gateway's view (asking the server, `SELECT @@port`,
    // would be a read of the transaction itself, whose answer differs between servers).
    let id = a.id();
    let held_on = || {
        gw.gateway
            .session(id)
            .and_then(|s| s.view().backend)
            .map(|(name, _)| name)
            .unwrap_or_default()
    };
    a.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit off");

    // Read-only: starts and ends on a replica.
    let v: Option<i32> = a
        .query_first("SELECT v FROM optimistic WHERE id = 2")
        .await
        .expect("read");
    assert_eq!(v, Some(20));
    assert!(
        held_on().starts_with("replica"),
        "an optimistic transaction reads on a replica"
    );
    a.query_drop("COMMIT").await.expect("commit");
    assert_eq!(moves(), 0);

    // Read, then write: the reads match on the primary, the transaction goes on there.
    let v: Option<i32> = a
        .query_first("SELECT v FROM optimistic WHERE id = 1")
        .await
        .expect("read");
    assert_eq!(v, Some(10));
    assert!(held_on().starts_with("replica"), "{}", held_on());
    a.query_drop("UPDATE optimistic SET v = v + 1 WHERE id = 1")
        .await
        .expect("the write after matching reads");
    assert_eq!(moves(), 1);
    assert_eq!(held_on(), "primary", "the rest runs on the primary");
    a.query_drop("COMMIT").await.expect("commit");
    assert_eq!(
        f.sql(0, "SELECT v FROM app.optimistic WHERE id = 1").trim(),
        "11"
    );
    f.wait_replicas();

    // Read, someone else changes the row, then write: the primary's answer differs -> 9003.
    let v: Option<i32> = a
        .query_first("SELECT v FROM optimistic WHERE id = 2")
        .await
        .expect("read");
    assert_eq!(v, Some(20));
    assert!(held_on().starts_with("replica"), "{}", held_on());
    f.sql(0, "UPDATE app.optimistic SET v = 21 WHERE id = 2");
    // The replica has it too; the transaction's snapshot there is still the older one.
    f.wait_replicas();
    let err = a
        .query_drop("UPDATE optimistic SET v = v * 2 WHERE id = 2")
        .await
        .expect_err("a conflict");
    match err {
        mysql_async::Error::Server(ref e) => {
            assert_eq!((e.code, e.state.as_str()), (9003, "40001"), "{e:?}");
        }
        other => panic!("expected 9003, got {other:?}"),
    }
    assert_eq!(
        f.sql(0, "SELECT v FROM app.optimistic WHERE id = 2").trim(),
        "21",
        "the conflicting write did not run"
    );
    // The session goes on: the retry sees the new value and writes.
    let v: Option<i32> = a
        .query_first("SELECT v FROM optimistic WHERE id = 2")
        .await
        .expect("retry read");
    assert_eq!(v, Some(21));
    a.query_drop("UPDATE optimistic SET v = v * 2 WHERE id = 2")
        .await
        .expect("retry write");
    a.query_drop("COMMIT").await.expect("commit");
    assert_eq!(
        f.sql(0, "SELECT v FROM app.optimistic WHERE id = 2").trim(),
        "42"
    );
}

/// Drivers that prepare `BEGIN` and `COMMIT` (sysbench does) and execute them, from a session
/// that has run nothing else yet: the transaction's write runs on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_begin_keeps_its_transaction_on_the_primary() {
    let gw = TestGateway::start(crate::harness::monitored(builtin_split()));
    replicas_known(&gw).await;
    let mut setup = gw.app().await;
    setup
        .query_drop("CREATE TABLE IF NOT EXISTS app.prep_begin (id INT PRIMARY KEY, k INT)")
        .await
        .expect("create");
    setup
        .query_drop("REPLACE INTO app.prep_begin VALUES (1, 0)")
        .await
        .expect("row");
    drop(setup);
    let mut c = gw.app().await;
    let begin = c.prep("BEGIN").await.expect("prepare BEGIN");
    let update = c
        .prep("UPDATE app.prep_begin SET k = k + 1 WHERE id = ?")
        .await
        .expect("prepare UPDATE");
    let commit = c.prep("COMMIT").await.expect("prepare COMMIT");
    for _ in 0..3 {
        c.exec_drop(&begin, ()).await.expect("BEGIN");
        c.exec_drop(&update, (1,))
            .await
            .expect("the write runs on the primary");
        c.exec_drop(&commit, ()).await.expect("COMMIT");
    }
}
