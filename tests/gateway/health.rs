//! Faults of the fleet: a black-holed replica (through the fault proxy) fails no read, and reads
//! move away from it and come back; a deadlock lost by an autocommit statement is run again.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use sluice::pool::Backend;
use sluice::pool::health::HealthState;

use crate::harness::{
    TestGateway, config_for, fleet, monitored, primary_only_config, start_private_fleet, wait_until,
};
use sluice::bench::fault::{Fault, FaultProxy};

/// Clients reading `SELECT @@port` in autocommit until stopped: how many reads ran, how many
/// the replica on `replica_port` served, and what failed.
struct Readers {
    reads: Arc<std::sync::atomic::AtomicU64>,
    on_replica: Arc<std::sync::atomic::AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(conns: Vec<mysql_async::Conn>, replica_port: u16) -> Self {
        let mut r = Self {
            reads: Arc::default(),
            on_replica: Arc::default(),
            failures: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        for mut conn in conns {
            let (reads, on_replica) = (Arc::clone(&r.reads), Arc::clone(&r.on_replica));
            let (failures, stop) = (Arc::clone(&r.failures), Arc::clone(&r.stop));
            r.tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match conn.query_first::<u16, _>("SELECT @@port").await {
                        Ok(Some(p)) if p == replica_port => {
                            on_replica.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => failures.lock().expect("lock").push(e.to_string()),
                    }
                    reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = conn.disconnect().await;
            }));
        }
        r
    }

    fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops them; asserts no read failed and the replica served some.
    async fn stop_without_failures(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("reader");
        }
        let failed = self.failures.lock().expect("lock").clone();
        assert!(failed.is_empty(), "autocommit reads failed: {failed:#?}");
        assert!(
            self.on_replica.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no read reached the replica"
        );
    }
}

/// Clients inserting with `insert` in autocommit until stopped: how many writes were
/// acknowledged, and the MySQL errors they got (anything else fails the test: a session must
/// always hear a proper error).
struct Writers {
    acknowledged: Arc<std::sync::atomic::AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(conns: Vec<mysql_async::Conn>, insert: &'static str) -> Self {
        let mut w = Self {
            acknowledged: Arc::default(),
            errors: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        for mut conn in conns {
            let (acknowledged, errors) = (Arc::clone(&w.acknowledged), Arc::clone(&w.errors));
            let stop = Arc::clone(&w.stop);
            w.tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match conn.query_drop(insert).await {
                        Ok(()) => {
                            acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(mysql_async::Error::Server(e)) => errors
                            .lock()
                            .expect("lock")
                            .push(format!("{} {}", e.code, e.message)),
                        Err(other) => panic!("not a MySQL error: {other}"),
                    }
                }
            }));
        }
        w
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops them: the writes acknowledged in all, and the errors they got ("code message").
    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("writer");
        }
        let errors = self.errors.lock().expect("lock").clone();
        (
            self.acknowledged.load(std::sync::atomic::Ordering::Relaxed),
            errors,
        )
    }
}

/// The fleet's primary and replica 1, reached through `proxy`, monitored, reads split.
fn through_proxy(f: &crate::harness::Fleet, proxy: &FaultProxy) -> sluice::config::Config {
    let mut c = monitored(config_for(f));
    c.backends.retain(|b| b.name != "replica2");
    replica1(&mut c).address = format!("127.0.0.1:{}", proxy.port);
    c.routing.read_write_split = true;
    c
}

fn replica1(c: &mut sluice::config::Config) -> &mut sluice::config::BackendConfig {
    c.backends
        .iter_mut()
        .find(|b| b.name == "replica1")
        .expect("replica1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_replica_fails_no_read_and_reads_move_away_and_back() {
    let f = start_private_fleet("black-hole");
    let proxy =
        FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], f.port + 1))).expect("proxy");
    let mut c = through_proxy(&f, &proxy);
    replica1(&mut c).read_timeout_ms = 1000;
    let gw = TestGateway::start(c);
    let replica: Arc<Backend> =
        Arc::clone(gw.gateway.fleet().by_name("replica1").expect("backend"));
    wait_until(30, "the monitor probed the replica", || {
        replica.health().1 == "the probe answers"
    })
    .await;
    let mut conn = gw.app().await;
    let port = |p: Option<u16>| p.expect("a row");
    assert_eq!(
        port(conn.query_first("SELECT @@port").await.expect("read")),
        f.port + 1,
        "reads go to the replica"
    );

    // Black-holed with a read on its way: the read gets no answer, waits for the read timeout
    // and runs again on the primary (nothing of it had reached the client).
    proxy.set(Fault::Stall);
    let served = port(
        conn.query_first("SELECT @@port")
            .await
            .expect("the read succeeds"),
    );
    assert_eq!(
        served, f.port,
        "the read in the black hole moved to the primary"
    );
    // The monitor's probe gets no answer either: the replica is down, and new reads go elsewhere.
    wait_until(30, "the replica is down", || {
        replica.health().0 == HealthState::Down
    })
    .await;
    assert!(!replica.status().healthy);
    for _ in 0..20 {
        let served = port(conn.query_first("SELECT @@port").await.expect("read"));
        assert_eq!(served, f.port);
    }

    // The network heals: the monitor reconnects, and the replica serves reads again.
    proxy.set(Fault::Pass);
    wait_until(30, "the replica is up", || replica.status().healthy).await;
    let mut back = false;
    for _ in 0..200 {
        if port(conn.query_first("SELECT @@port").await.expect("read")) == f.port + 1 {
            back = true;
            break;
        }
    }
    assert!(back, "reads did not come back to the replica");
    let status = replica.pool_status();
    assert!(
        status.transitions[2] >= 1,
        "the outage was counted: {:?}",
        status.transitions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_lost_by_an_autocommit_statement_is_run_again_and_in_a_transaction_relayed() {
    let f = fleet();
    let gw = TestGateway::start(primary_only_config());
    for explicit in [false, true] {
        let table = if explicit {
            "app.dl_txn"
        } else {
            "app.dl_auto"
        };
        f.sql(
            0,
            &format!(
                "CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
                 INSERT INTO {table} VALUES (1, 0), (2, 0); \
                 CREATE OR REPLACE TABLE {table}_heavy (id INT PRIMARY KEY, x INT) ENGINE=InnoDB; \
                 INSERT INTO {table}_heavy SELECT seq, 0 FROM app.seq_1_to_1000"
            ),
        );
        // H, directly: the heavier transaction (1000 rows changed) holds row 2.
        let mut h = mysql_async::Conn::new(f.direct_opts(0, "app", "app-secret", Some("app")))
            .await
            .expect("direct");
        h.query_drop("BEGIN").await.expect("begin");
        h.query_drop(format!("UPDATE {table}_heavy SET x = x + 1"))
            .await
            .expect("heavy");
        h.query_drop(format!("SELECT * FROM {table} WHERE id = 2 FOR UPDATE"))
            .await
            .expect("row 2");
        // A, through the gateway: locks row 1, then waits for row 2.
        let mut a = gw.app().await;
        if explicit {
            a.query_drop("BEGIN").await.expect("begin");
        }
        let update = format!("UPDATE {table} SET v = v + 1 ORDER BY id");
        let task = tokio::spawn(async move {
            let r = a.query_drop(update).await;
            (r, a)
        });
        wait_until(30, "A waits for H's lock", || {
            f.sql(
                0,
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
            ) != "0"
        })
        .await;
        // H asks for row 1: a deadlock, and InnoDB rolls back the lighter A.
        h.query_drop(format!("SELECT * FROM {table} WHERE id = 1 FOR UPDATE"))
            .await
            .expect("H wins");
        h.query_drop("COMMIT").await.expect("commit");
        let (r, mut a) = task.await.expect("A");
        let rows: Vec<(i32, i32)> = a
            .query(format!("SELECT id, v FROM {table} ORDER BY id"))
            .await
            .expect("rows");
        if explicit {
            let Err(mysql_async::Error::Server(e)) = r else {
                panic!("a deadlock in a transaction was not relayed: {r:?}");
            };
            assert_eq!(e.code, 1213);
            assert_eq!(
                rows,
                vec![(1, 0), (2, 0)],
                "the transaction was rolled back"
            );
        } else {
            r.expect("the autocommit statement was run again");
            assert_eq!(rows, vec![(1, 1), (2, 1)], "it ran once, whole");
        }
    }
    let retries = gw
        .gateway
        .deadlock_retries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(retries >= 1, "{retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_replica_fails_no_autocommit_read() {
    let f = start_private_fleet("flapping");
    let proxy = Arc::new(
        FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], f.port + 1))).expect("proxy"),
    );
    let gw = TestGateway::start(through_proxy(&f, &proxy));
    // A slow network as well: every chunk waits 2 ms.
    proxy.set(Fault::Delay(Duration::from_millis(2)));
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(gw.app().await);
    }
    let readers = Readers::start(conns, f.port + 1);
    // Every connection through the proxy dropped, five times, with reads running between.
    for _ in 0..5 {
        let before = readers.reads();
        wait_until(30, "the clients read", || readers.reads() >= before + 100).await;
        proxy.drop_connections();
    }
    readers.stop_without_failures().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_switchover_moves_writes_to_the_new_primary_without_an_error() {
    let f = Arc::new(start_private_fleet("switchover"));
    let mut c = monitored(config_for(&f));
    c.routing.read_write_split = true;
    c.routing.failover_wait_ms = 20_000;
    let gw = TestGateway::start(c);
    let group = Arc::clone(gw.gateway.fleet().group(None).expect("group"));
    wait_until(30, "the monitor probed every backend", || {
        group
            .backends()
            .iter()
            .all(|b| b.health().1 == "the probe answers")
    })
    .await;
    let mut setup = gw.app().await;
    setup
        .query_drop("CREATE OR REPLACE TABLE app.sw (id INT AUTO_INCREMENT PRIMARY KEY, port INT)")
        .await
        .expect("table");
    // A client writing in autocommit all along: every write must succeed.
    let writers = Writers::start(
        vec![gw.app().await],
        "INSERT INTO app.sw (port) VALUES (@@port)",
    );
    let writes = || writers.acknowledged();
    wait_until(30, "writes run", || writes() >= 50).await;
    // The switchover: the old primary stops taking writes, replica 1 catches up and is
    // promoted, replica 2 follows it.
    let p1 = f.port + 1;
    let fl = Arc::clone(&f);
    tokio::task::spawn_blocking(move || {
        fl.sql(0, "SET GLOBAL read_only = ON");
        let pos = fl.sql(0, "SELECT @@gtid_binlog_pos");
        assert_eq!(
            fl.sql(1, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)")),
            "0"
        );
        fl.sql(1, "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF");
        fl.sql(
            2,
            &format!(
                "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={p1}, \
                 MASTER_USER='repl', MASTER_PASSWORD='repl-secret', MASTER_USE_GTID=slave_pos; \
                 START SLAVE"
            ),
        );
    })
    .await
    .expect("switchover");
    wait_until(30, "the gateway sees replica1 as the writer", || {
        group.primary().name() == "replica1"
    })
    .await;
    let at_switch = writes();
    wait_until(30, "writes go on", || writes() >= at_switch + 50).await;
    let (acknowledged, errors) = writers.stop().await;
    assert!(
        errors.is_empty(),
        "writes failed across the switchover: {errors:#?}"
    );
    // Every acknowledged write is on the new primary, and the writes after the switch ran there.
    assert_eq!(
        f.sql(1, "SELECT COUNT(*) FROM app.sw"),
        acknowledged.to_string()
    );
    let on_new: u64 = f
        .sql(1, &format!("SELECT COUNT(*) FROM app.sw WHERE port = {p1}"))
        .parse()
        .expect("count");
    assert!(
        on_new >= acknowledged - at_switch,
        "{on_new} writes on the new primary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_over_the_users_timeout_is_stopped_by_the_server() {
    let mut c = monitored(primary_only_config());
    c.users[0].statement_timeout_ms = Some(200);
    let gw = TestGateway::start(c);
    // The greeting's version comes from the monitor: the timeout needs to know it is MariaDB.
    let primary = Arc::clone(gw.gateway.fleet().by_name("primary").expect("primary"));
    wait_until(30, "the monitor read the version", || {
        primary.version().is_some()
    })
    .await;
    let mut conn = gw.app().await;
    let long = conn.query_drop("SELECT SLEEP(5)").await;
    let Err(mysql_async::Error::Server(e)) = long else {
        panic!("the long statement was not stopped: {long:?}");
    };
    assert_eq!(e.code, 1969, "{}", e.message);
    // Short statements run as before, and the session goes on.
    let one: Option<u32> = conn.query_first("SELECT 1").await.expect("short");
    assert_eq!(one, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_restarted_under_writes_answers_mysql_errors_and_keeps_every_acknowledged_write()
{
    let f = Arc::new(crate::harness::start_private_server("restart-writes"));
    let gw = TestGateway::start(monitored(crate::harness::primary_only_config_for(&f)));
    let mut setup = gw.app().await;
    setup
        .query_drop("CREATE OR REPLACE TABLE app.rw (id INT AUTO_INCREMENT PRIMARY KEY, n INT)")
        .await
        .expect("table");
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(gw.app().await);
    }
    let writers = Writers::start(conns, "INSERT INTO app.rw (n) VALUES (1)");
    let writes = || writers.acknowledged();
    wait_until(30, "writes run", || writes() >= 100).await;
    let fl = Arc::clone(&f);
    tokio::task::spawn_blocking(move || {
        fl.stop_node(0);
        fl.start_node(0);
    })
    .await
    .expect("restart");
    let after = writes();
    wait_until(60, "writes run again", || writes() >= after + 100).await;
    let (acknowledged, errors) = writers.stop().await;
    // Every acknowledged write is in the table. A write whose answer the restart cut off may
    // have committed too (as with MySQL direct: error 2013 leaves it unknown), but no more than
    // those: a write run twice would show as more rows than that.
    let rows: usize = f
        .sql(0, "SELECT COUNT(*) FROM app.rw")
        .parse()
        .expect("a count");
    let acknowledged = usize::try_from(acknowledged).expect("a count");
    assert!(
        (acknowledged..=acknowledged + errors.len()).contains(&rows),
        "{rows} rows for {acknowledged} acknowledged writes and {} errors",
        errors.len()
    );
    println!("{} errors during the restart: {errors:#?}", errors.len());
    for e in &errors {
        let code: u16 = e
            .split(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(
            matches!(code, 2003 | 2013 | 9004),
            "an error other than the backend being away: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_flapping_for_a_minute_fails_no_read_and_leaks_nothing() {
    let f = start_private_fleet("soak");
    let proxy =
        FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], f.port + 1))).expect("proxy");
    // The gateway binary with the shipped config and policies: its memory is its own.
    let gw = crate::harness::GatewayProcess::start(&format!(
        "[{{name=\"primary\",address=\"127.0.0.1:{}\",role=\"primary\"}},\
         {{name=\"replica1\",address=\"127.0.0.1:{}\",role=\"replica\"}}]",
        f.port, proxy.port
    ));
    let threads_connected = || -> u64 {
        f.sql(1, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'THREADS_CONNECTED'")
            .parse()
            .expect("a count")
    };
    let mut conns = Vec::new();
    for _ in 0..16 {
        conns.push(
            mysql_async::Conn::new(crate::harness::client_opts(
                gw.addr,
                "app",
                "app-secret",
                Some("app"),
            ))
            .await
            .expect("connect"),
        );
    }
    let readers = Readers::start(conns, f.port + 1);
    wait_until(30, "the clients warm up", || readers.reads() >= 5_000).await;
    let rss_before = gw.status_kib("VmRSS:");
    let threads_before = threads_connected();
    // Down and up every 5 s for a minute: the flapping is the scenario, not a synchronisation.
    for _ in 0..6 {
        proxy.set(Fault::Refuse);
        proxy.drop_connections();
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.set(Fault::Pass);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let rss_after = gw.status_kib("VmRSS:");
    let reads = readers.reads();
    readers.stop_without_failures().await;
    println!(
        "{reads} reads; gateway RSS {rss_before} -> {rss_after} KiB; replica threads {threads_before}"
    );
    assert!(
        rss_after * 10 <= rss_before * 11,
        "the gateway grew by more than 10%: {rss_before} -> {rss_after} KiB"
    );
    // The replica's connections go back to what they were (no connection left behind).
    wait_until(
        30,
        "the replica's connections are back to their baseline",
        || threads_connected() <= threads_before,
    )
    .await;
}
