//! Backend health under faults: a black-holed replica (through the fault proxy) fails no read,
//! and reads move away from it and come back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use sluice::config::{Config, MonitorConfig};
use sluice::pool::Backend;
use sluice::pool::health::HealthState;

use crate::faults::{Fault, FaultProxy};
use crate::harness::{TestGateway, config_for, start_private_fleet};

fn monitored(mut c: Config) -> Config {
    c.monitor = Some(MonitorConfig {
        user: "sluice_monitor".into(),
        password: "monitor-secret".into(),
        interval_ms: 100,
    });
    c
}

/// Polls `cond` every 10 ms for at most `secs` seconds; panics with `what` if it never holds.
async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_replica_fails_no_read_and_reads_move_away_and_back() {
    let f = start_private_fleet("black-hole");
    let proxy = FaultProxy::start(f.port + 1);
    let mut c = monitored(config_for(&f));
    c.backends.retain(|b| b.name != "replica2");
    let b = c
        .backends
        .iter_mut()
        .find(|b| b.name == "replica1")
        .expect("replica1");
    b.address = format!("127.0.0.1:{}", proxy.port);
    b.read_timeout_ms = 1000;
    c.routing.read_write_split = true;
    let gw = TestGateway::start(c);
    let replica: Arc<Backend> = Arc::clone(gw.gateway.fleet.by_name("replica1").expect("backend"));
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
