//! The gateway's own backend pool: state that rides on each connection (a restarted server hands
//! out the same thread ids again), bounded FIFO waits, idle transactions, generations after a
//! restart, drain, and backend groups.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, Error};
use sluice::config::{BackendConfig, Role};
use sluice::pool::Backend;
use sluice::pool::core::CloseReason;

use crate::harness::{
    Fleet, TestGateway, config_for, fleet, monitored, primary_only_config, secrets_config,
    start_private_fleet, start_private_server, wait_until,
};

fn server_code(e: &Error) -> Option<(u16, String)> {
    match e {
        Error::Server(s) => Some((s.code, s.state.clone())),
        _ => None,
    }
}

/// A reader's row: schema, time_zone, sql_mode, and the port of the server that answered.
type StateRow = (Option<String>, String, String, u16);

/// What the reading clients saw.
#[derive(Default)]
struct Reads {
    statements: AtomicU64,
    on_target: AtomicU64,
    /// Errors while the test counts them (outside an outage).
    errors: Mutex<Vec<String>>,
    outage_errors: AtomicU64,
    /// What the reads that failed during outages said.
    outage_messages: Mutex<Vec<String>>,
    wrong_state: Mutex<Vec<String>>,
    counting: AtomicBool,
    stop: AtomicBool,
    /// Set by the test; reads that start after it and reach the target are counted apart.
    mark: AtomicBool,
    on_target_after_mark: AtomicU64,
}

/// 16 clients with their own schema and settings, reading in autocommit; each read checks that
/// the connection serving it carries them.
fn start_readers(
    gw: &TestGateway,
    target_port: u16,
    reads: &Arc<Reads>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..16)
        .map(|i| {
            let opts = gw.opts("app", "app-secret", Some("app"));
            let reads = Arc::clone(reads);
            tokio::spawn(async move {
                let mut c = Conn::new(opts).await.expect("connect");
                c.query_drop("SET time_zone = '+03:00', sql_mode = 'ANSI_QUOTES'")
                    .await
                    .expect("set");
                while !reads.stop.load(Ordering::Relaxed) {
                    let after_mark = reads.mark.load(Ordering::SeqCst);
                    let r: Result<Option<StateRow>, _> = c
                        .query_first("SELECT DATABASE(), @@time_zone, @@sql_mode, @@port")
                        .await;
                    match r {
                        Ok(Some((db, tz, mode, port))) => {
                            if db.as_deref() != Some("app") || tz != "+03:00" || mode != "ANSI_QUOTES" {
                                reads.wrong_state.lock().expect("lock").push(format!(
                                    "client {i} on port {port}: db {db:?}, time_zone {tz}, sql_mode {mode}"
                                ));
                            }
                            if port == target_port {
                                reads.on_target.fetch_add(1, Ordering::Relaxed);
                                if after_mark {
                                    reads.on_target_after_mark.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Ok(None) => panic!("no row"),
                        Err(e) => {
                            if reads.counting.load(Ordering::Relaxed) {
                                reads.errors.lock().expect("lock").push(format!("client {i}: {e}"));
                            } else {
                                reads.outage_errors.fetch_add(1, Ordering::Relaxed);
                                reads.outage_messages.lock().expect("lock").push(e.to_string());
                            }
                        }
                    }
                    reads.statements.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect()
}

/// Stops fleet node `node`, waits until the gateway sees `backend` down, keeps it down for
/// `outage`, starts it again and waits until the gateway sees it healthy.
async fn restart(f: &Arc<Fleet>, node: u16, backend: &Backend, outage: Duration) {
    let fl = Arc::clone(f);
    tokio::task::spawn_blocking(move || fl.stop_node(node))
        .await
        .expect("stop");
    wait_until(30, "the gateway sees the backend down", || {
        !backend.status().healthy
    })
    .await;
    tokio::time::sleep(outage).await;
    let fl = Arc::clone(f);
    tokio::task::spawn_blocking(move || fl.start_node(node))
        .await
        .expect("start");
    if node > 0 {
        // A restarted replica comes back writable (read_only is not persisted here): it is not
        // read from, and its health says why, until the operator sets it read-only again.
        wait_until(30, "the gateway sees the replica writable", || {
            backend.health().1.contains("writable")
        })
        .await;
        assert!(!backend.status().healthy);
        let fl = Arc::clone(f);
        tokio::task::spawn_blocking(move || fl.sql(node, "SET GLOBAL read_only = ON"))
            .await
            .expect("read_only");
    }
    wait_until(30, "the gateway sees the backend healthy", || {
        backend.status().healthy
    })
    .await;
}

fn backend(gw: &TestGateway, name: &str) -> Arc<Backend> {
    Arc::clone(gw.gateway.fleet().by_name(name).expect("backend"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_five_times_serves_every_session_with_its_state() {
    let f = Arc::new(start_private_fleet("restart-replica"));
    let mut cfg = monitored(config_for(&f));
    cfg.routing.read_write_split = true;
    let gw = TestGateway::start(cfg);
    let replica = backend(&gw, "replica1");
    let reads = Arc::new(Reads::default());
    reads.counting.store(true, Ordering::Relaxed);
    let tasks = start_readers(&gw, f.port + 1, &reads);
    let mut report = Vec::new();
    for round in 1..=5 {
        let before = reads.statements.load(Ordering::Relaxed);
        wait_until(30, "the clients read", || {
            reads.statements.load(Ordering::Relaxed) >= before + 160
        })
        .await;
        reads.counting.store(false, Ordering::Relaxed);
        // The outage itself: ten seconds down, as the acceptance asks.
        restart(&f, 1, &replica, Duration::from_secs(10)).await;
        reads.counting.store(true, Ordering::Relaxed);
        let served = reads.on_target.load(Ordering::Relaxed);
        wait_until(30, "reads reach the restarted replica", || {
            reads.on_target.load(Ordering::Relaxed) >= served + 200
        })
        .await;
        report.push(format!(
            "round {round}: {} errors during the outage",
            reads.outage_errors.swap(0, Ordering::Relaxed)
        ));
    }
    reads.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("reader");
    }
    println!("{}", report.join("\n"));
    // Reads outside transactions move to the other replica or the primary: none fails.
    let outage = reads.outage_messages.lock().expect("lock");
    assert!(
        outage.is_empty(),
        "reads failed during the outages: {outage:#?}"
    );
    let errors = reads.errors.lock().expect("lock");
    assert!(
        errors.is_empty(),
        "reads failed with the replica healthy: {errors:#?}"
    );
    let wrong = reads.wrong_state.lock().expect("lock");
    assert!(
        wrong.is_empty(),
        "reads ran without the session's state: {wrong:#?}"
    );
    assert!(replica.pool_status().counts.generation >= 5);
}

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_transactions_on_sixteen_connections_wait_bounded_and_in_line() {
    let f = fleet();
    f.create_user("hold", "hold-secret");
    let mut cfg = primary_only_config();
    cfg.backends[0].pool_max = 16;
    cfg.backends[0].acquire_timeout_ms = ACQUIRE_TIMEOUT.as_millis() as u64;
    cfg.users[0].backend_user = Some("hold".into());
    cfg.users[0].backend_password = Some("hold-secret".into());
    let gw = TestGateway::start(cfg);
    let mut clients = Vec::new();
    for _ in 0..500 {
        clients.push(
            Conn::new(gw.opts("app", "app-secret", Some("app")))
                .await
                .expect("connect"),
        );
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = c.query_drop("START TRANSACTION").await;
                let took = t0.elapsed();
                (
                    c,
                    r.err()
                        .map(|e| server_code(&e).unwrap_or((0, e.to_string()))),
                    took,
                )
            })
        })
        .collect();
    let mut holders = Vec::new();
    let mut refused = Vec::new();
    let mut longest = Duration::ZERO;
    for t in tasks {
        let (c, err, took) = t.await.expect("client");
        match err {
            None => holders.push(c),
            Some(code) => {
                assert_eq!(code, (9001, "HY000".to_string()));
                longest = longest.max(took);
                refused.push(c);
            }
        }
    }
    println!("{} refused, the longest after {longest:?}", refused.len());
    assert_eq!(holders.len(), 16, "pool-max connections proceed");
    assert_eq!(refused.len(), 484);
    assert!(
        longest < ACQUIRE_TIMEOUT + Duration::from_secs(1),
        "a refused client waited {longest:?} (acquire-timeout-ms 1000)"
    );
    let pool = gw
        .gateway
        .fleet()
        .by_name("primary")
        .expect("primary")
        .pool_status();
    assert_eq!(pool.counts.counters.timeouts, 484);
    assert_eq!(pool.counts.in_use, 16);
    for mut c in holders {
        c.query_drop("COMMIT").await.expect("commit");
    }
    // The refused sessions live on, and a new client is served at once.
    for c in refused.iter_mut().take(20) {
        let one: Option<i64> = c.query_first("SELECT 1").await.expect("after a refusal");
        assert_eq!(one, Some(1));
    }
    // (A wait for a slot that stayed taken would end in 9001, not in an answer.)
    let mut fresh = gw.app().await;
    let one: Option<i64> = fresh.query_first("SELECT 1").await.expect("new client");
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_loses_its_connection_and_hears_why() {
    let f = fleet();
    f.create_user("idletx", "idletx-secret");
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.idle_tx (id INT PRIMARY KEY)",
    );
    let mut cfg = primary_only_config();
    cfg.backends[0].pool_max = 1;
    cfg.backends[0].acquire_timeout_ms = 30_000;
    cfg.frontend.transaction_idle_timeout_secs = 2;
    cfg.users[0].backend_user = Some("idletx".into());
    cfg.users[0].backend_password = Some("idletx-secret".into());
    let gw = TestGateway::start(cfg);
    let mut quiet = gw.app().await;
    quiet.query_drop("BEGIN").await.expect("begin");
    quiet
        .query_drop("INSERT INTO idle_tx VALUES (1)")
        .await
        .expect("insert");
    // The only connection is held by the quiet transaction: this waits until the gateway
    // takes it back (the acquire timeout is far longer than the idle limit).
    let mut other = gw.app().await;
    let one: Option<i64> = other
        .query_first("SELECT 1")
        .await
        .expect("served once freed");
    assert_eq!(one, Some(1));
    drop(other);
    let err = quiet
        .query_drop("COMMIT")
        .await
        .expect_err("the transaction is gone");
    assert_eq!(server_code(&err), Some((9002, "HY000".into())), "{err}");
    assert!(
        err.to_string().contains("transaction-idle-timeout-secs"),
        "{err}"
    );
    let rows: Option<i64> = quiet
        .query_first("SELECT COUNT(*) FROM idle_tx WHERE id = 1")
        .await
        .expect("the session goes on");
    assert_eq!(rows, Some(0), "the idle transaction was rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_primary_restart_the_first_write_of_every_session_succeeds() {
    let f = Arc::new(start_private_server("restart-primary"));
    f.sql(
        0,
        "CREATE TABLE app.w (id INT AUTO_INCREMENT PRIMARY KEY, s INT)",
    );
    let mut cfg = monitored(config_for(&f));
    cfg.backends.retain(|b| b.role == Role::Primary);
    let gw = TestGateway::start(cfg);
    let primary = backend(&gw, "primary");
    let back = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let opts = gw.opts("app", "app-secret", Some("app"));
            let (back, written) = (Arc::clone(&back), Arc::clone(&written));
            tokio::spawn(async move {
                let mut c = Conn::new(opts).await.expect("connect");
                loop {
                    let after = back.load(Ordering::Relaxed);
                    let r = c.exec_drop("INSERT INTO w (s) VALUES (?)", (i,)).await;
                    if after {
                        return r.map_err(|e| format!("session {i}: {e}"));
                    }
                    match r {
                        Ok(()) => {
                            written.fetch_add(1, Ordering::Relaxed);
                        }
                        // The outage: errors are expected; pace the retries.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    wait_until(30, "the sessions write", || {
        written.load(Ordering::Relaxed) >= 200
    })
    .await;
    restart(&f, 0, &primary, Duration::ZERO).await;
    back.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await
            .expect("writer")
            .expect("the first write after the restart");
    }
    assert!(primary.pool_status().counts.generation >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_replica_closes_its_connections_without_failing_a_statement() {
    let f = fleet();
    f.create_user("drain", "drain-secret");
    let mut cfg = config_for(f);
    cfg.routing.read_write_split = true;
    cfg.users[0].backend_user = Some("drain".into());
    cfg.users[0].backend_password = Some("drain-secret".into());
    let gw = TestGateway::start(cfg);
    let replica = backend(&gw, "replica1");
    let reads = Arc::new(Reads::default());
    reads.counting.store(true, Ordering::Relaxed);
    let tasks = start_readers(&gw, f.port + 1, &reads);
    wait_until(30, "reads reach replica1", || {
        reads.on_target.load(Ordering::Relaxed) >= 100
    })
    .await;
    replica.drain();
    wait_until(30, "replica1's connections close", || {
        let c = replica.pool_status().counts;
        c.in_use + c.idle + c.opening == 0
    })
    .await;
    assert!(replica.pool_status().closed(CloseReason::Drained) > 0);
    reads.mark.store(true, Ordering::SeqCst);
    let statements = reads.statements.load(Ordering::Relaxed);
    wait_until(30, "reads continue on the others", || {
        reads.statements.load(Ordering::Relaxed) >= statements + 500
    })
    .await;
    assert_eq!(
        reads.on_target_after_mark.load(Ordering::Relaxed),
        0,
        "a read reached the drained replica"
    );
    // The server got its connections back too.
    let mut admin = Conn::new(f.direct_opts(1, "admin", "admin-secret", None))
        .await
        .expect("admin");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let n: Option<i64> = admin
            .query_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'drain'")
            .await
            .expect("processlist");
        if n == Some(0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "replica1 still has {n:?} connections of the pool"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Undrained, it serves again.
    replica.undrain();
    let served = reads.on_target.load(Ordering::Relaxed);
    wait_until(30, "reads reach replica1 again", || {
        reads.on_target.load(Ordering::Relaxed) >= served + 100
    })
    .await;
    reads.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("reader");
    }
    let errors = reads.errors.lock().expect("lock");
    assert!(
        errors.is_empty(),
        "statements failed during the drain: {errors:#?}"
    );
    assert!(reads.wrong_state.lock().expect("lock").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_reach_only_their_backend_group() {
    let f = fleet();
    let tenant = start_private_server("tenant-group");
    let mut cfg = secrets_config(
        "groups",
        br#"{"alice": {"password": "alice-pw", "backend-user": "app", "backend-password": "app-secret"},
            "bob": {"password": "bob-pw", "backend-user": "app", "backend-password": "app-secret",
                    "backend-group": "tenant"}}"#,
    );
    cfg.routing.read_write_split = true;
    cfg.backends.push(BackendConfig {
        name: "tenant-primary".into(),
        address: format!("127.0.0.1:{}", tenant.port),
        role: Role::Primary,
        group: "tenant".into(),
        ..BackendConfig::default()
    });
    let gw = TestGateway::start(cfg);
    let ports = |user: &'static str, pass: &'static str| {
        let opts = gw.opts(user, pass, Some("app"));
        async move {
            let mut c = Conn::new(opts).await.expect("connect");
            let mut seen = BTreeSet::new();
            for _ in 0..20 {
                let p: Option<u16> = c.query_first("SELECT @@port").await.expect("read");
                seen.insert(p.expect("port"));
                let p: Option<u16> = c
                    .query_first("SELECT @@port FROM DUAL FOR UPDATE")
                    .await
                    .expect("locking read");
                seen.insert(p.expect("port"));
            }
            c.query_drop("CREATE TABLE IF NOT EXISTS app.grp (who VARCHAR(10))")
                .await
                .expect("ddl");
            c.exec_drop("INSERT INTO app.grp VALUES (?)", (user,))
                .await
                .expect("write");
            seen
        }
    };
    let alice = ports("alice", "alice-pw").await;
    let bob = ports("bob", "bob-pw").await;
    let fleet_ports: BTreeSet<u16> = (0..3).map(|i| f.port + i).collect();
    assert!(alice.is_subset(&fleet_ports), "alice reached {alice:?}");
    assert!(
        alice.len() >= 2,
        "alice's reads and writes split: {alice:?}"
    );
    assert_eq!(bob, BTreeSet::from([tenant.port]), "bob reached {bob:?}");
    assert_eq!(
        tenant.sql(0, "SELECT GROUP_CONCAT(who) FROM app.grp"),
        "bob"
    );
    assert_eq!(
        f.sql(0, "SELECT COUNT(*) FROM app.grp WHERE who = 'bob'"),
        "0"
    );
}
