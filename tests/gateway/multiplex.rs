//! Multiplexing: many clients on few backend connections, session state replayed on shared
//! connections, pins (and why), prepared statements bounded on the backend, shutdown drain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use sluice::config::Config;
use sluice::facts::PinReason;
use sluice::session::Hold;

use crate::harness::{TestGateway, fleet, primary_only_config};

/// A config whose only backend is fleet node `node`, reached as `user`, with a pool of `max`.
fn single_backend(node: u16, user: &str, pass: &str, max: usize) -> Config {
    let f = fleet();
    let mut c = primary_only_config();
    c.backends[0].address = format!("127.0.0.1:{}", f.port + node);
    c.backends[0].pool_max = max;
    c.users[0].backend_user = Some(user.into());
    c.users[0].backend_password = Some(pass.into());
    c
}

async fn backend_connections(f: &crate::harness::Fleet, admin: &mut Conn, user: &str) -> i64 {
    let _ = f;
    admin
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
        ))
        .await
        .expect("processlist")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_the_pool() {
    let f = fleet();
    f.create_user("mux", "mux-secret");
    let gw = TestGateway::start(single_backend(0, "mux", "mux-secret", 8));
    let opts = gw.opts("app", "app-secret", Some("app"));
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(Conn::new(opts.clone()).await.expect("connect"));
    }
    let done = Arc::new(AtomicBool::new(false));
    let mut admin = Conn::new(f.direct_opts(0, "admin", "admin-secret", None))
        .await
        .expect("admin");
    let sampler = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(Ordering::Relaxed) {
                max = max.max(backend_connections(fleet(), &mut admin, "mux").await);
            }
            max = max.max(backend_connections(fleet(), &mut admin, "mux").await);
            max
        })
    };
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for j in 0..5 {
                let v: Option<i64> = c
                    .query_first(format!(
                        "SELECT {i} * 10 + {j} FROM DUAL WHERE SLEEP(0.002) = 0"
                    ))
                    .await
                    .expect("read");
                assert_eq!(v, Some(i as i64 * 10 + j));
            }
            c
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("client task"));
    }
    done.store(true, Ordering::Relaxed);
    let max = sampler.await.expect("sampler");
    assert!(
        max <= 8,
        "200 clients used {max} backend connections; the pool allows 8"
    );
    assert!(max >= 1);
    assert_eq!(gw.gateway.session_count(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_replay_on_one_shared_connection() {
    let f = fleet();
    f.create_user("replay", "replay-secret");
    f.sql(0, "CREATE DATABASE IF NOT EXISTS app_other");
    let gw = TestGateway::start(single_backend(0, "replay", "replay-secret", 1));
    let mut a = gw.app().await;
    let mut b = gw.app().await;
    a.query_drop("SET time_zone = '+03:00', sql_mode = 'ANSI_QUOTES'")
        .await
        .expect("set");
    a.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .expect("isolation");
    a.query_drop("SET NAMES latin1").await.expect("names");
    a.query_drop("USE app_other").await.expect("use");
    for _ in 0..3 {
        let ra: (String, String, String, String, String, u32) = a
            .query_first("SELECT @@time_zone, @@sql_mode, @@tx_isolation, @@character_set_client, DATABASE(), @@pseudo_thread_id")
            .await
            .expect("a")
            .expect("row");
        let rb: (String, String, String, String, String, u32) = b
            .query_first("SELECT @@time_zone, @@sql_mode, @@tx_isolation, @@character_set_client, DATABASE(), @@pseudo_thread_id")
            .await
            .expect("b")
            .expect("row");
        assert_eq!(
            (&ra.0[..], &ra.1[..], &ra.2[..], &ra.3[..], &ra.4[..]),
            (
                "+03:00",
                "ANSI_QUOTES",
                "READ-COMMITTED",
                "latin1",
                "app_other"
            )
        );
        assert_eq!(&rb.0, "SYSTEM");
        assert_ne!(&rb.1, "ANSI_QUOTES");
        assert_eq!(
            (&rb.2[..], &rb.3[..], &rb.4[..]),
            ("REPEATABLE-READ", "utf8mb4", "app")
        );
        assert_eq!(
            ra.5, rb.5,
            "both sessions ran on the one backend connection"
        );
    }
    // autocommit=0: the session holds the connection from its first statement to COMMIT.
    a.query_drop("CREATE TABLE IF NOT EXISTS app.ac_t (a INT) ENGINE=InnoDB")
        .await
        .expect("table");
    a.query_drop("SET autocommit = 0")
        .await
        .expect("autocommit");
    a.query_drop("SELECT COUNT(*) FROM app.ac_t")
        .await
        .expect("select");
    let id = a.id();
    assert_eq!(
        gw.gateway.session(id).expect("session").view().hold,
        Some(Hold::Transaction)
    );
    a.query_drop("COMMIT").await.expect("commit");
    assert_eq!(
        gw.gateway.session(id).expect("session").view().hold,
        Some(Hold::Parked),
        "released to the pool on demand"
    );
    let ac: Option<i64> = a.query_first("SELECT @@autocommit").await.expect("ac");
    assert_eq!(ac, Some(0));
    a.query_drop("COMMIT")
        .await
        .expect("end the implicit transaction");
    let ac: Option<i64> = b.query_first("SELECT @@autocommit").await.expect("ac");
    assert_eq!(ac, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pin_reason_pins_until_reset() {
    let f = fleet();
    f.sql(0, "CREATE TABLE IF NOT EXISTS app.pin_t (a INT)");
    let gw = TestGateway::start(primary_only_config());
    let cases: &[(&str, PinReason)] = &[
        ("SET @pin = 1", PinReason::UserVariable),
        (
            "CREATE TEMPORARY TABLE tmp_pin (a INT)",
            PinReason::TemporaryTable,
        ),
        ("SELECT GET_LOCK('sluice_pin', 1)", PinReason::GetLock),
        ("LOCK TABLES pin_t READ", PinReason::LockTables),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM pin_t",
            PinReason::SqlCalcFoundRows,
        ),
        ("PREPARE pin_stmt FROM 'SELECT 1'", PinReason::TextPrepare),
    ];
    for (sql, reason) in cases {
        let mut c = gw.app().await;
        let id = c.id();
        c.query_drop(*sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let view = gw.gateway.session(id).expect("session").view();
        assert_eq!(view.pins, vec![*reason], "{sql}");
        assert_eq!(view.hold, Some(Hold::Pinned), "{sql}");
        let thread = view.backend.expect("held backend").1;
        let again: Option<u32> = c.query_first("SELECT @@pseudo_thread_id").await.expect("q");
        assert_eq!(
            again,
            Some(thread),
            "{sql}: the pinned connection serves the next statement"
        );
        c.reset().await.expect("COM_RESET_CONNECTION");
        let view = gw.gateway.session(id).expect("session").view();
        assert!(
            view.pins.is_empty() && view.hold.is_none(),
            "{sql}: still pinned after reset: {view:?}"
        );
    }
    // A transaction holds without a pin, and releases at COMMIT.
    let mut c = gw.app().await;
    c.query_drop("BEGIN").await.expect("begin");
    assert_eq!(
        gw.gateway.session(c.id()).expect("s").view().hold,
        Some(Hold::Transaction)
    );
    c.query_drop("COMMIT").await.expect("commit");
    assert_eq!(
        gw.gateway.session(c.id()).expect("s").view().hold,
        Some(Hold::Parked)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_insert_id_and_row_count_follow_the_write() {
    let f = fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.lid (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    );
    f.create_user("lid", "lid-secret");
    let gw = TestGateway::start(single_backend(0, "lid", "lid-secret", 2));
    let mut a = gw.app().await;
    let mut b = gw.app().await;
    for _ in 0..5 {
        a.query_drop("INSERT INTO lid (v) VALUES (1)")
            .await
            .expect("insert a");
        let a_id = a.last_insert_id().expect("ok packet id");
        b.query_drop("INSERT INTO lid (v) VALUES (2), (3)")
            .await
            .expect("insert b");
        let seen: Option<u64> = a.query_first("SELECT LAST_INSERT_ID()").await.expect("lid");
        assert_eq!(seen, Some(a_id));
        a.query_drop("UPDATE lid SET v = v + 1 WHERE v = 1")
            .await
            .expect("update");
        let changed = a.affected_rows();
        let rc: Option<i64> = a
            .query_first("SELECT ROW_COUNT()")
            .await
            .expect("row count");
        assert_eq!(rc, Some(changed as i64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_answers_for_the_session_after_its_connection_went_back() {
    let f = fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.rc (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    );
    f.create_user("rc", "rc-secret");
    // One backend connection: another client's statement takes it from `a`.
    let gw = TestGateway::start(single_backend(0, "rc", "rc-secret", 1));
    let mut a = gw.app().await;
    let mut other = gw.app().await;
    a.query_drop("INSERT INTO rc (v) VALUES (1), (1), (1)")
        .await
        .expect("insert");
    a.query_drop("UPDATE rc SET v = v + 1 WHERE v = 1")
        .await
        .expect("update");
    assert_eq!(a.affected_rows(), 3);
    // The only connection goes to `other` (pressure takes it from `a`), which runs a SELECT on it:
    // that connection's own ROW_COUNT() is now -1.
    let one: Option<i64> = other.query_first("SELECT 1").await.expect("other");
    assert_eq!(one, Some(1));
    let row: Option<mysql_async::Row> = a.query_first("SELECT ROW_COUNT()").await.expect("rc");
    let row = row.expect("a row");
    assert_eq!(
        row.get::<i64, _>(0),
        Some(3),
        "the session's last statement"
    );
    assert_eq!(row.columns_ref()[0].name_str(), "ROW_COUNT()");
    // After a result set it is -1, as on the server.
    let rc: Option<i64> = a.query_first("SELECT ROW_COUNT()").await.expect("rc");
    assert_eq!(rc, Some(-1));
    // FOUND_ROWS(): the rows of the session's last result set, though `other` ran another
    // SELECT on the connection since.
    let rows: Vec<i64> = a
        .query("SELECT v FROM rc WHERE v = 2")
        .await
        .expect("select");
    assert!(rows.len() >= 3, "{rows:?}");
    let one: Option<i64> = other.query_first("SELECT 1").await.expect("other");
    assert_eq!(one, Some(1));
    let row: Option<mysql_async::Row> = a.query_first("SELECT FOUND_ROWS()").await.expect("fr");
    let row = row.expect("a row");
    assert_eq!(row.get::<u64, _>(0), Some(rows.len() as u64));
    assert_eq!(row.columns_ref()[0].name_str(), "FOUND_ROWS()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_stay_bounded_on_the_backend() {
    // A server of its own: Prepared_stmt_count is server-wide.
    let f = crate::harness::solo_server();
    f.create_user("stmts", "stmts-secret");
    let mut cfg = primary_only_config();
    cfg.backends[0].address = format!("127.0.0.1:{}", f.port);
    cfg.backends[0].pool_max = 4;
    cfg.backends[0].stmt_cache_size = 8;
    cfg.users[0].backend_user = Some("stmts".into());
    cfg.users[0].backend_password = Some("stmts-secret".into());
    let gw = TestGateway::start(cfg);
    let cap = 4 * 8;
    let opts: Opts = gw.opts("app", "app-secret", Some("app"));
    let mut tasks = Vec::new();
    for client in 0..50u32 {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.expect("connect");
            for i in 0..20u32 {
                let stmt = c
                    .prep(format!("SELECT ? + {}", client * 1000 + i))
                    .await
                    .expect("prepare");
                let v: Option<i64> = c.exec_first(&stmt, (1,)).await.expect("execute");
                assert_eq!(v, Some(i64::from(client * 1000 + i + 1)));
                c.close(stmt).await.expect("close");
            }
            c
        }));
    }
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.expect("client"));
    }
    let count: i64 = f
        .sql(0, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'")
        .parse()
        .expect("number");
    assert!(
        count <= cap,
        "{count} statements prepared on the backend; the bound is {cap} (1000 were prepared by clients)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_statement_in_flight_finish() {
    let gw = TestGateway::start(primary_only_config());
    let mut a = gw.app().await;
    let id = a.id();
    let running = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(1) + 5").await;
        (r, a)
    });
    let mut started = false;
    for _ in 0..200 {
        if gw.gateway.session(id).and_then(|s| s.running()).is_some() {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(started);
    gw.signal_shutdown();
    let (r, mut a) = running.await.expect("join");
    assert_eq!(r.expect("the statement in flight completes"), Some(5));
    let err = a
        .query_drop("SELECT 1")
        .await
        .expect_err("the session is closed after the drain");
    let _ = err;
    let addr = gw.addr;
    gw.join();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}
