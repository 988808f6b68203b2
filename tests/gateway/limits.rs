//! Per-user limits enforced by the host: sessions per user (1203) and statements per second over
//! all of a user's sessions (1226), as MySQL answers its own resource limits.

use mysql_async::prelude::Queryable;

use crate::harness::{TestGateway, base_config};

fn capped_user(name: &str) -> sluice::config::UserConfig {
    sluice::config::UserConfig {
        name: name.into(),
        password: Some(format!("{name}-pass")),
        backend_user: Some("app".into()),
        backend_password: Some("app-secret".into()),
        ..Default::default()
    }
}

fn server_code(e: &mysql_async::Error) -> Option<(u16, String)> {
    match e {
        mysql_async::Error::Server(s) => Some((s.code, s.message.clone())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_that_crosses_max_connections_gets_1203() {
    let mut c = base_config();
    let mut two = capped_user("two");
    two.max_connections = 2;
    c.users.push(two);
    let gw = TestGateway::start(c);
    let opts = gw.opts("two", "two-pass", Some("app"));
    let mut a = mysql_async::Conn::new(opts.clone()).await.expect("first");
    let b = mysql_async::Conn::new(opts.clone()).await.expect("second");
    let third = mysql_async::Conn::new(opts.clone())
        .await
        .expect_err("the third crosses the limit");
    let (code, message) = server_code(&third).unwrap_or_else(|| panic!("{third:?}"));
    assert_eq!(code, 1203, "{message}");
    assert!(message.contains("max_user_connections"), "{message}");
    // Other users are not limited by it; a freed slot is usable again.
    let _app = gw.app().await;
    drop(b);
    crate::harness::wait_until(10, "the second session is gone", || {
        gw.gateway.user_session_count("two") < 2
    })
    .await;
    let mut again = mysql_async::Conn::new(opts)
        .await
        .expect("a slot was freed");
    again.query_drop("SELECT 1").await.expect("works");
    a.query_drop("SELECT 1")
        .await
        .expect("the first still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_its_statement_rate_gets_1226_and_others_do_not() {
    let mut c = base_config();
    let mut capped = capped_user("capped");
    capped.max_statements_per_second = Some(1);
    capped.statements_burst = Some(2);
    c.users.push(capped);
    let gw = TestGateway::start(c);
    let mut slow = mysql_async::Conn::new(gw.opts("capped", "capped-pass", Some("app")))
        .await
        .expect("connect");
    let mut free = gw.app().await;
    let started = std::time::Instant::now();
    let (mut passed, mut refused) = (0u64, 0u64);
    for i in 0..20 {
        match slow.query_first::<u32, _>(format!("SELECT {i}")).await {
            Ok(_) => passed += 1,
            Err(e) => {
                let (code, message) = server_code(&e).unwrap_or_else(|| panic!("{e:?}"));
                assert_eq!(code, 1226, "{message}");
                assert!(
                    message.contains("'capped'") && message.contains("max_statements_per_second"),
                    "{message}"
                );
                refused += 1;
            }
        }
        free.query_drop("SELECT 1").await.expect("app has no limit");
    }
    // The burst (less what the driver's own queries at connect took), plus one a second of
    // whatever time the loop took.
    let allowed = 2 + started.elapsed().as_secs() + 1;
    assert!(
        passed >= 1 && passed <= allowed,
        "{passed} passed, {allowed} allowed"
    );
    assert_eq!(passed + refused, 20);
    let users = gw.gateway.telemetry.users.get("capped");
    assert_eq!(
        sluice::telemetry::users::UserCounters::load(&users.rate_limited),
        refused
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_a_credentials_policy_grants_are_enforced() {
    let cfg = crate::harness::secrets_config(
        "granted-limits",
        br#"{"metered": {"password": "metered-pw", "backend-user": "app", "backend-password": "app-secret",
                         "max-connections": 1, "max-statements-per-second": 1, "statements-burst": 2,
                         "statement-timeout-ms": 250}}"#,
    );
    let gw = TestGateway::start(cfg);
    let identity = sluice::phase::ClientIdentity {
        user: "metered".into(),
        client_addr: "127.0.0.1:1".into(),
        database: None,
        tls: false,
        attributes: Vec::new(),
    };
    let grant = gw
        .gateway
        .policy()
        .resolve_credentials(&identity)
        .expect("granted");
    assert_eq!(grant.statement_timeout_ms, Some(250));
    let opts = gw.opts("metered", "metered-pw", Some("app"));
    let mut first = mysql_async::Conn::new(opts.clone()).await.expect("first");
    let second = mysql_async::Conn::new(opts)
        .await
        .expect_err("the grant allows one session");
    assert_eq!(server_code(&second).map(|c| c.0), Some(1203), "{second:?}");
    let started = std::time::Instant::now();
    let mut passed = 0u64;
    for i in 0..10 {
        match first.query_first::<u32, _>(format!("SELECT {i}")).await {
            Ok(_) => passed += 1,
            Err(e) => assert_eq!(server_code(&e).map(|c| c.0), Some(1226), "{e:?}"),
        }
    }
    let allowed = 2 + started.elapsed().as_secs() + 1;
    assert!(passed <= allowed, "{passed} passed, {allowed} allowed");
    assert!(passed < 10, "the grant's rate was not applied");
}
