//! Policies written in Python (componentize-py, `plugins/python/`): they run with an empty
//! WASI context and are otherwise held to the same sandbox as Rust ones.

use mysql_async::Conn;
use mysql_async::prelude::*;

use crate::harness::{PolicyDir, TestGateway, fleet, secrets_config};
use crate::policies::server_err;

fn py_manifest(name: &str, kind: &str, plugin: &str, wasi: bool, extra: &str) -> String {
    format!("name = \"{name}\"\nkind = \"{kind}\"\nplugin = \"{plugin}\"\nwasi = {wasi}\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_guard_denies_what_its_settings_say() {
    let f = fleet();
    f.sql(0, "CREATE TABLE IF NOT EXISTS app.py_orders (id INT)");
    f.sql(0, "CREATE TABLE IF NOT EXISTS app.py_open (id INT)");
    f.wait_replicas();
    f.create_user("py_reader", "reader-secret");
    let dir = PolicyDir::new("py-guard");
    dir.python_plugin("py-guard", "py-guard.wasm");
    dir.write(
        "py-guard.toml",
        py_manifest(
            "py-guard",
            "guard",
            "py-guard.wasm",
            true,
            "[limits]\nmemory-mib = 64\n[settings]\nmaintenance = [\"py_orders\"]\nread-only-users = [\"py_reader\"]\ncode = 1142\n",
        )
        .as_bytes(),
    );
    let mut cfg = dir.config();
    cfg.users.push(sluice::config::UserConfig {
        name: "py_reader".into(),
        password: Some("reader-secret".into()),
        ..Default::default()
    });
    let gw = TestGateway::start(cfg);
    let mut c = gw.app().await;
    for sql in [
        "SELECT * FROM app.py_orders",
        "INSERT INTO py_orders VALUES (1)",
    ] {
        let (code, message) = server_err(&c.query_drop(sql).await.expect_err(sql));
        assert_eq!(code, 1142, "{message}");
        assert!(
            message.contains("'app.py_orders'") || message.contains("'py_orders'"),
            "{message}"
        );
        assert!(message.contains("under maintenance"), "{message}");
    }
    c.query_drop("INSERT INTO app.py_open VALUES (1)")
        .await
        .expect("another table is open");
    let n: Option<u64> = c
        .query_first("SELECT COUNT(*) FROM app.py_open")
        .await
        .expect("read");
    assert!(n.is_some_and(|n| n >= 1));
    let mut r = Conn::new(gw.opts("py_reader", "reader-secret", Some("app")))
        .await
        .expect("reader connects");
    r.query_drop("SELECT * FROM app.py_open")
        .await
        .expect("a read-only user reads");
    let (code, message) = server_err(
        &r.query_drop("INSERT INTO app.py_open VALUES (2)")
            .await
            .expect_err("a read-only user's write"),
    );
    assert_eq!(code, 1142);
    assert!(message.contains("may only read"), "{message}");
    // The rules follow from the statement's shape: later statements of a digest are answered
    // without a call.
    let plugin = &gw.gateway.plugins()[0];
    let calls = plugin
        .stats
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    for id in 10..20 {
        c.query_drop(format!("INSERT INTO app.py_open VALUES ({id})"))
            .await
            .expect("insert");
    }
    assert!(
        plugin
            .stats
            .calls
            .load(std::sync::atomic::Ordering::Relaxed)
            <= calls + 1,
        "one call for the new digest at most"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_policy_gets_no_files_network_environment_or_clock() {
    let dir = PolicyDir::new("py-sandbox");
    dir.python_plugin("py-misbehave", "bad.wasm");
    dir.write(
        "bad.toml",
        py_manifest(
            "bad",
            "guard",
            "bad.wasm",
            true,
            "on-error = \"deny\"\n[limits]\ndeadline-ms = 200\nmemory-mib = 64\n",
        )
        .as_bytes(),
    );
    // Environment the gateway process has: none of it may reach the guest.
    let gw = TestGateway::start(dir.config());
    let mut c = gw.app().await;
    for what in ["open-file", "list-dir", "connect", "resolve"] {
        let (code, message) = outcome(&mut c, what).await;
        assert_eq!(code, 1105, "{message}");
        assert!(
            message.contains(&format!("'bad': {what}: refused ")),
            "{what} must fail in the sandbox: {message}"
        );
    }
    let (_, message) = outcome(&mut c, "environ").await;
    assert!(message.ends_with("environ: environment {}"), "{message}");
    let (_, message) = outcome(&mut c, "clock").await;
    assert!(message.ends_with("clock: time 0.0"), "{message}");
    for (what, expect) in [
        ("loop", "timed out"),
        ("memory-bomb", "ran out of memory"),
        ("raise", "trapped"),
    ] {
        let (code, message) = outcome(&mut c, what).await;
        assert_eq!(code, 1105, "{what}: {message}");
        assert!(
            message.contains("policy 'bad'") && message.contains(expect),
            "{what}: {message}"
        );
    }
    c.ping().await.expect("the session survives");
    c.query_drop("SELECT 1").await.expect("and is served");
}

async fn outcome(c: &mut Conn, what: &str) -> (u16, String) {
    let sql = format!("SELECT 'misbehave:{what}'");
    server_err(&c.query_drop(sql).await.expect_err(what))
}

#[test]
fn a_python_policy_without_wasi_in_its_manifest_is_refused_with_the_way_out() {
    let dir = PolicyDir::new("py-no-wasi");
    dir.python_plugin("py-guard", "py-guard.wasm");
    dir.write(
        "py-guard.toml",
        py_manifest("py-guard", "guard", "py-guard.wasm", false, "").as_bytes(),
    );
    let engine = sluice::plugin::runtime::PluginEngine::new().expect("engine");
    let e = dir.load(&engine).err().expect("refused");
    assert!(e.reason.contains("wasi = true"), "{}", e.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_credentials_policy_resolves_logins() {
    let mut cfg = secrets_config(
        "py-credentials",
        br#"{"py_alice": {"password": "alice-pw", "backend-user": "app", "backend-password": "app-secret"}}"#,
    );
    let dir = cfg.policies.dir.clone().expect("dir");
    std::fs::remove_file(dir.join("secrets.toml")).expect("rust policy out");
    let pd = PolicyDir { path: dir };
    pd.python_plugin("py-credentials", "py-credentials.wasm");
    pd.write(
        "py-credentials.toml",
        py_manifest(
            "py-credentials",
            "credentials",
            "py-credentials.wasm",
            true,
            "[limits]\nmemory-mib = 64\n[settings]\nsecret = \"users.json\"\n",
        )
        .as_bytes(),
    );
    cfg.policies.dir = Some(pd.path.clone());
    let gw = TestGateway::start(cfg);
    let mut c = Conn::new(gw.opts("py_alice", "alice-pw", Some("app")))
        .await
        .expect("a user the Python policy knows logs in");
    let user: Option<String> = c
        .query_first("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
        .await
        .expect("who");
    assert_eq!(user.as_deref(), Some("app"), "as its backend account");
    let e = Conn::new(gw.opts("py_alice", "wrong", Some("app")))
        .await
        .expect_err("wrong password");
    assert_eq!(server_err(&e).0, 1045);
    let e = Conn::new(gw.opts("nobody", "x", Some("app")))
        .await
        .expect_err("unknown user");
    assert_eq!(server_err(&e).0, 1045);
}
