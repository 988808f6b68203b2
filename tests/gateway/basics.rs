//! Connecting, authenticating and the simple commands, with real clients.

use mysql_async::prelude::*;
use mysql_async::{Conn, Error, OptsBuilder};
use sluice::config::AuthPlugin;

use crate::harness::{TestGateway, base_config, cli, fleet, primary_only_config};

#[test]
fn mariadb_cli_with_and_without_tls() {
    let gw = TestGateway::start(primary_only_config());
    let (ok, out, err) = cli(gw.addr, "app", "app-secret", &["app"], "SELECT 1");
    assert!(ok, "{err}");
    assert_eq!(out, "1");
    let (ok, out, err) = cli(
        gw.addr,
        "app",
        "app-secret",
        &["--ssl", "app"],
        "SELECT 'tls'",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "tls");
    // The CLI's own status shows the cipher of the client connection.
    let (ok, out, err) = cli(gw.addr, "app", "app-secret", &["--ssl", "app"], "status");
    assert!(ok, "{err}");
    assert!(out.contains("Cipher in use"), "{out}");
}

#[test]
fn the_compressed_protocol_carries_small_and_large_packets() {
    let gw = TestGateway::start(primary_only_config());
    let compressed = |extra: &[&str], sql: &str| {
        let args = [&["--compress", "--max-allowed-packet=64M"], extra, &["app"]].concat();
        let (ok, out, err) = cli(gw.addr, "app", "app-secret", &args, sql);
        assert!(ok, "{sql}: {err}");
        out
    };
    assert_eq!(
        compressed(&[], "SHOW SESSION STATUS LIKE 'Compression'"),
        "Compression\tON"
    );
    let (ok, out, err) = cli(
        gw.addr,
        "app",
        "app-secret",
        &["app"],
        "SHOW SESSION STATUS LIKE 'Compression'",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "Compression\tOFF");
    // A statement and a row over 16 MiB (several packets, several frames), and inside TLS.
    // (Too long for an argument: the client reads it from a file.)
    let file = std::env::temp_dir().join(format!("sluice-compressed-{}.sql", std::process::id()));
    std::fs::write(
        &file,
        format!("SELECT LENGTH('{}'), 'end';\n", "x".repeat(17 << 20)),
    )
    .expect("write the statement");
    let out = compressed(&[], &format!("source {}", file.display()));
    let _ = std::fs::remove_file(&file);
    assert_eq!(out, format!("{}\tend", 17 << 20));
    assert_eq!(
        compressed(
            &["--ssl"],
            "SELECT MD5(x), LENGTH(x) FROM (SELECT REPEAT('ab', 9000000) AS x) t"
        ),
        "a469a0b8bd03cedd6c653763c61f0e90\t18000000"
    );
}

#[test]
fn wrong_password_and_unknown_user_get_1045() {
    let gw = TestGateway::start(primary_only_config());
    let (ok, _, err) = cli(gw.addr, "app", "nope", &[], "SELECT 1");
    assert!(!ok);
    assert!(
        err.contains("ERROR 1045 (28000)") && err.contains("Access denied for user 'app'"),
        "{err}"
    );
    let (ok, _, err) = cli(gw.addr, "mallory", "x", &[], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("ERROR 1045"), "{err}");
    // The gateway keeps serving.
    let (ok, _, err) = cli(gw.addr, "app", "app-secret", &[], "SELECT 1");
    assert!(ok, "{err}");
}

#[test]
fn tls_required_refuses_plain_clients() {
    let mut c = primary_only_config();
    c.frontend.tls.require = true;
    let gw = TestGateway::start(c);
    let (ok, _, err) = cli(gw.addr, "app", "app-secret", &["--skip-ssl"], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("requires TLS"), "{err}");
    let (ok, out, err) = cli(gw.addr, "app", "app-secret", &["--ssl"], "SELECT 2");
    assert!(ok, "{err}");
    assert_eq!(out, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_fast_path_and_auth_switch() {
    let mut c = primary_only_config();
    c.users[0].auth_plugin = AuthPlugin::CachingSha2Password;
    let gw = TestGateway::start(c);
    // mysql_async offers mysql_native_password first: the gateway switches it to caching_sha2.
    let mut conn = gw.app().await;
    let v: Option<i64> = conn.query_first("SELECT 41 + 1").await.expect("query");
    assert_eq!(v, Some(42));
    conn.disconnect().await.expect("disconnect");
    let err = Conn::new(gw.opts("app", "bad", None))
        .await
        .expect_err("wrong password");
    assert!(
        matches!(err, Error::Server(ref s) if s.code == 1045),
        "{err:?}"
    );
}

#[test]
fn caching_sha2_full_auth_needs_tls() {
    let mut c = primary_only_config();
    c.users[0].auth_plugin = AuthPlugin::CachingSha2Password;
    c.frontend.sha2_cold_cache = true;
    let gw = TestGateway::start(c);
    // Cold cache, no TLS: refused with a message that says what to do.
    let (ok, _, err) = cli(gw.addr, "app", "app-secret", &["--skip-ssl"], "SELECT 1");
    assert!(!ok);
    assert!(err.contains("1045") && err.contains("TLS"), "{err}");
    // Over TLS the client sends the password (full auth); the cache is then warm...
    let (ok, out, err) = cli(gw.addr, "app", "app-secret", &["--ssl"], "SELECT 'full'");
    assert!(ok, "{err}");
    assert_eq!(out, "full");
    // ...and the fast path works without TLS.
    let (ok, out, err) = cli(
        gw.addr,
        "app",
        "app-secret",
        &["--skip-ssl"],
        "SELECT 'fast'",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "fast");
}

#[test]
fn connection_cap_answers_1040() {
    let mut c = primary_only_config();
    c.frontend.max_connections = 1;
    let gw = TestGateway::start(c);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut first = gw.app().await;
        let err = Conn::new(gw.opts("app", "app-secret", None))
            .await
            .expect_err("over the cap");
        assert!(
            matches!(err, Error::Server(ref s) if s.code == 1040),
            "{err:?}"
        );
        let one: Option<i32> = first
            .query_first("SELECT 1")
            .await
            .expect("first still works");
        assert_eq!(one, Some(1));
        drop(first);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_is_refused_at_connect() {
    let gw = TestGateway::start(primary_only_config());
    let err = Conn::new(gw.opts("app", "app-secret", Some("app_does_not_exist")))
        .await
        .expect_err("no such db");
    assert!(
        matches!(err, Error::Server(ref s) if s.code == 1044 || s.code == 1049),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_id_is_the_gateways_and_kill_query_works() {
    let gw = TestGateway::start(primary_only_config());
    let mut a = gw.app().await;
    let id: u32 = a
        .query_first("SELECT CONNECTION_ID()")
        .await
        .expect("q")
        .expect("row");
    assert_eq!(
        id,
        a.id(),
        "CONNECTION_ID() must be the id of the handshake"
    );
    let f = fleet();
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = a.query_first("SELECT SLEEP(60)").await;
        (r, a)
    });
    // Wait until the statement runs on the backend (bounded poll on a condition).
    let mut running = false;
    for _ in 0..200 {
        if gw.gateway.session(id).and_then(|s| s.running()).is_some() {
            running = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(running, "the SLEEP never started");
    let mut b = gw.app().await;
    b.query_drop(format!("KILL QUERY {id}"))
        .await
        .expect("kill query");
    let (r, mut a) = sleeper.await.expect("join");
    // MariaDB answers a killed SLEEP with 1 (interrupted) or error 1317.
    match r {
        Ok(v) => assert_eq!(v, Some(1)),
        Err(Error::Server(s)) => assert_eq!(s.code, 1317),
        Err(e) => panic!("unexpected {e:?}"),
    }
    // The killed session goes on.
    let two: Option<i32> = a.query_first("SELECT 2").await.expect("still alive");
    assert_eq!(two, Some(2));
    // KILL of an unknown id: 1094.
    let err = b.query_drop("KILL 999999").await.expect_err("unknown");
    assert!(
        matches!(err, Error::Server(ref s) if s.code == 1094),
        "{err:?}"
    );
    // KILL CONNECTION ends the other session.
    b.query_drop(format!("KILL {id}"))
        .await
        .expect("kill connection");
    let err = a.query_drop("SELECT 3").await.expect_err("killed");
    // As direct: the killed connection is closed, not answered (a lost connection, no ERR).
    assert!(!matches!(err, Error::Server(_)), "{err:?}");
    // A session that kills itself hears 1927, as from the server.
    let err = b
        .query_drop("KILL CONNECTION_ID()")
        .await
        .expect_err("self kill");
    assert!(
        matches!(err, Error::Server(ref s) if s.code == 1927),
        "{err:?}"
    );
    let _ = f;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_reset_change_user_and_init_db() {
    let f = fleet();
    f.create_user("other", "other-secret");
    let mut c = primary_only_config();
    c.users.push(sluice::config::UserConfig {
        name: "other".into(),
        password: Some("other-secret".into()),
        ..Default::default()
    });
    let gw = TestGateway::start(c);
    let mut conn = gw.app().await;
    conn.ping().await.expect("ping");
    conn.query_drop("SET @v = 5").await.expect("set");
    conn.reset().await.expect("reset");
    let v: Option<Option<i64>> = conn.query_first("SELECT @v").await.expect("select");
    assert_eq!(
        v,
        Some(None),
        "user variables are gone after COM_RESET_CONNECTION"
    );
    conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some("other".into()))
            .with_pass(Some("other-secret".into())),
    )
    .await
    .expect("change user");
    let who: Option<String> = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .expect("who");
    assert_eq!(who.as_deref(), Some("other@%"));
    let err = Conn::new(OptsBuilder::from_opts(gw.opts("other", "wrong", None)))
        .await
        .expect_err("bad");
    assert!(matches!(err, Error::Server(ref s) if s.code == 1045));
}

#[test]
fn replicas_serve_reads_and_the_primary_writes() {
    let f = fleet();
    let mut c = base_config();
    c.routing.read_write_split = true;
    let gw = TestGateway::start(c);
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.rw (id INT PRIMARY KEY, v INT)",
    );
    f.wait_replicas();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let mut c = gw.app().await;
        // Sessions spread over the replicas, each keeping its own.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2 {
            let mut s = gw.app().await;
            let first: u32 = s
                .query_first("SELECT @@server_id")
                .await
                .expect("q")
                .expect("row");
            let again: u32 = s
                .query_first("SELECT @@server_id")
                .await
                .expect("q")
                .expect("row");
            assert_eq!(first, again, "a session keeps its replica");
            seen.insert(first);
        }
        assert_eq!(
            seen,
            [2u32, 3].into_iter().collect(),
            "two sessions, two replicas"
        );
        let hinted: u32 = c
            .query_first("/* sluice:route=primary */ SELECT @@server_id")
            .await
            .expect("q")
            .expect("row");
        assert_eq!(hinted, 1);
        c.query_drop("BEGIN").await.expect("begin");
        let in_tx: u32 = c
            .query_first("SELECT @@server_id")
            .await
            .expect("q")
            .expect("row");
        assert_eq!(in_tx, 1, "reads in a transaction stay on the primary");
        c.query_drop("REPLACE INTO rw VALUES (1, 1)")
            .await
            .expect("write");
        c.query_drop("COMMIT").await.expect("commit");
        let locking: u32 = c
            .query_first("SELECT @@server_id FROM rw WHERE id = 1 FOR UPDATE")
            .await
            .expect("q")
            .expect("row");
        assert_eq!(locking, 1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_can_use_tls() {
    // A server of its own: its TLS handshake counter is server-wide. (Through the gateway,
    // `SHOW STATUS LIKE 'Ssl_cipher'` describes the client's TLS, not the backend's.)
    let f = crate::harness::start_private_server("backend-tls");
    let mut admin = Conn::new(f.direct_opts(0, "admin", "admin-secret", None))
        .await
        .expect("admin, plain");
    let before = ssl_accepts(&mut admin).await;
    let mut c = crate::harness::config_for(&f);
    c.backends
        .retain(|b| b.role == sluice::config::Role::Primary);
    c.backends[0].tls = true;
    // The test fleet's certificate is self-signed.
    c.backends[0].tls_skip_verify = true;
    let gw = TestGateway::start(c);
    let mut conn = gw.app().await;
    let one: Option<i64> = conn.query_first("SELECT 1").await.expect("query");
    assert_eq!(one, Some(1));
    assert!(
        ssl_accepts(&mut admin).await > before,
        "the backend connection is not encrypted"
    );
}

/// TLS handshakes the server accepted since it started.
async fn ssl_accepts(admin: &mut Conn) -> u64 {
    let row: Option<(String, u64)> = admin
        .query_first("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        .await
        .expect("status");
    row.expect("row").1
}
