//! Test harness: one real MariaDB fleet (primary + 2 replicas) per test process on free loopback
//! ports, started by `scripts/fleet` and stopped by its watchdog when the process exits; and
//! in-process gateways on port 0, each on its own runtime thread.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use mysql_async::{Conn, Opts, OptsBuilder};
use sluice::config::{Config, Role};
use sluice::gateway::Gateway;
use tokio::sync::watch;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running fleet: primary on `port`, replicas on `port + 1` and `port + 2`.
pub struct Fleet {
    pub port: u16,
    pub replicas: u16,
    dir: PathBuf,
}

static FLEET: OnceLock<Fleet> = OnceLock::new();

/// `n` consecutive free loopback ports; `salt` keeps fleets started at once apart.
fn free_port_block(n: u16, salt: u64) -> u16 {
    let seed = u64::from(std::process::id()) * 7919 + salt * 20_011;
    for attempt in 0..2000u64 {
        let base = 20_000 + ((seed + attempt * 104_729) % 40_000) as u16;
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no block of {n} free ports");
}

pub fn fleet() -> &'static Fleet {
    FLEET.get_or_init(|| start_fleet("fleet", 2))
}

static SOLO: OnceLock<Fleet> = OnceLock::new();

/// A server of its own (no replicas) for tests that read server-wide counters, which the shared
/// fleet's other tests would disturb.
pub fn solo_server() -> &'static Fleet {
    SOLO.get_or_init(|| start_fleet("solo", 0))
}

/// A fleet (primary + 2 replicas) for one test alone: for tests that stop servers.
pub fn start_private_fleet(name: &str) -> Fleet {
    start_fleet(name, 2)
}

/// A server (no replicas) for one test alone.
pub fn start_private_server(name: &str) -> Fleet {
    start_fleet(name, 0)
}

fn start_fleet(name: &str, replicas: u16) -> Fleet {
    let salt = name.bytes().map(u64::from).sum::<u64>();
    let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    let fleet = |verb: &str, port: u16| {
        Command::new(repo_root().join("scripts/fleet"))
            .arg(verb)
            .env("FLEET_DIR", &dir)
            .env("FLEET_PORT", port.to_string())
            .env("FLEET_REPLICAS", replicas.to_string())
            .env("FLEET_OWNER_PID", std::process::id().to_string())
            .output()
            .expect("run scripts/fleet")
    };
    // The ports were free when picked; another test may take one before the servers bind it.
    // Then the block is given back and another one tried.
    let mut attempt = 0;
    let port = loop {
        let _ = std::fs::remove_dir_all(&dir);
        let port = free_port_block(replicas + 1, salt + attempt * 7);
        let out = fleet("up", port);
        if out.status.success() {
            break port;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            attempt < 2 && stderr.contains("Address already in use"),
            "fleet up failed:\n{stderr}"
        );
        let _ = fleet("down", port);
        attempt += 1;
    };
    Fleet {
        port,
        replicas,
        dir,
    }
}

impl Fleet {
    /// Stops node `node` (0: the primary) the way an operator would (SIGTERM, waits for exit).
    pub fn stop_node(&self, node: u16) {
        self.fleet_command("stop", node);
    }

    /// Starts node `node` again; returns once it answers.
    pub fn start_node(&self, node: u16) {
        self.fleet_command("start", node);
    }

    fn fleet_command(&self, verb: &str, node: u16) {
        let out = Command::new(repo_root().join("scripts/fleet"))
            .args([verb, &node.to_string()])
            .env("FLEET_DIR", &self.dir)
            .env("FLEET_PORT", self.port.to_string())
            .env("FLEET_REPLICAS", self.replicas.to_string())
            .output()
            .expect("run scripts/fleet");
        assert!(
            out.status.success(),
            "fleet {verb} {node} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL on a fleet node as the admin account; returns tab-separated output.
    pub fn sql(&self, node: u16, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                "-uadmin",
                "-padmin-secret",
                "-N",
                "-B",
            ])
            .arg(format!("-P{}", self.port + node))
            .arg("-e")
            .arg(sql)
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "sql on node {node} failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates an account with rights on `app` and `app_*`, on the primary (replicated).
    pub fn create_user(&self, user: &str, password: &str) {
        self.sql(
            0,
            &format!(
                "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'; \
                 GRANT ALL ON app.* TO '{user}'@'%'; GRANT ALL ON `app\\_%`.* TO '{user}'@'%'; \
                 GRANT PROCESS ON *.* TO '{user}'@'%';"
            ),
        );
        self.wait_replicas();
    }

    /// Waits (bounded) until both replicas applied everything the primary has.
    pub fn wait_replicas(&self) {
        let pos = self.sql(0, "SELECT @@gtid_binlog_pos");
        for node in 1..=self.replicas {
            let r = self.sql(node, &format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"));
            assert_eq!(r, "0", "replica {node} did not catch up to {pos}");
        }
    }

    /// mysql_async options for a direct connection to a node.
    pub fn direct_opts(&self, node: u16, user: &str, pass: &str, db: Option<&str>) -> Opts {
        client_opts(
            SocketAddr::from(([127, 0, 0, 1], self.port + node)),
            user,
            pass,
            db,
        )
    }
}

pub fn client_opts(addr: SocketAddr, user: &str, pass: &str, db: Option<&str>) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(Some(pass))
        .db_name(db)
        // Never follow @@socket to the backend: the gateway is the endpoint under test.
        .prefer_socket(false)
        .into()
}

/// The default test configuration: the fleet behind a gateway on a free port, self-signed TLS,
/// the `app` user.
pub fn base_config() -> Config {
    config_for(fleet())
}

/// The same as [`base_config`] in front of fleet `f`.
pub fn config_for(f: &Fleet) -> Config {
    let toml = format!(
        r#"
        [frontend]
        listen = "127.0.0.1:0"
        [admin]
        listen = "127.0.0.1:0"
        [frontend.tls]
        self-signed = true
        [[users]]
        name = "app"
        password = "app-secret"
        [[backends]]
        name = "primary"
        address = "127.0.0.1:{p0}"
        role = "primary"
        [[backends]]
        name = "replica1"
        address = "127.0.0.1:{p1}"
        role = "replica"
        [[backends]]
        name = "replica2"
        address = "127.0.0.1:{p2}"
        role = "replica"
        "#,
        p0 = f.port,
        p1 = f.port + 1,
        p2 = f.port + 2
    );
    Config::from_toml(&toml).expect("test config")
}

/// The shipped `config/sluice.toml` (its policies, routing and pools) in front of fleet `f`: what
/// a new user runs, on a free port.
pub fn shipped_config(f: &Fleet) -> Config {
    let mut c = Config::load(&repo_root().join("config/sluice.toml")).expect("shipped config");
    c.frontend.listen = "127.0.0.1:0".parse().expect("address");
    c.admin.listen = "127.0.0.1:0".parse().expect("address");
    for b in &mut c.backends {
        let port = match b.name.as_str() {
            "primary" => f.port,
            "replica1" => f.port + 1,
            "replica2" => f.port + 2,
            other => panic!("the shipped config has a backend the test does not know: {other}"),
        };
        b.address = format!("127.0.0.1:{port}");
    }
    c
}

/// `c` with the monitor probing every 100 ms (the fleet's monitor account).
pub fn monitored(mut c: Config) -> Config {
    c.monitor = Some(sluice::config::MonitorConfig {
        user: "sluice_monitor".into(),
        password: "monitor-secret".into(),
        interval_ms: 100,
    });
    c
}

/// Polls `cond` every 10 ms for at most `secs` seconds; panics with `what` if it never holds.
pub async fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the monitor has measured every replica's lag (reads may go to them).
pub async fn wait_for_replica_lag(gw: &Gateway) {
    wait_until(10, "the monitor has measured the replicas' lag", || {
        gw.fleet()
            .backends()
            .iter()
            .filter(|b| b.role() == sluice::config::Role::Replica)
            .all(|b| b.lag_ms().is_some())
    })
    .await;
}

/// Only the primary behind the gateway.
pub fn primary_only_config() -> Config {
    primary_only_config_for(fleet())
}

/// Only fleet `f`'s primary behind the gateway.
pub fn primary_only_config_for(f: &Fleet) -> Config {
    let mut c = config_for(f);
    c.backends.retain(|b| b.role == Role::Primary);
    c
}

/// A gateway running on its own runtime thread.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The admin API's address (when `admin.enabled`).
    pub admin: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestGateway {
    pub fn start(config: Config) -> Self {
        let (tx, rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let bound = sluice::bind(config, rx).await.expect("bind");
                ready_tx
                    .send((
                        bound.local_addr().expect("addr"),
                        bound.admin_addr(),
                        bound.gateway(),
                    ))
                    .expect("send addr");
                bound.run().await;
            });
        });
        let (addr, admin, gateway) = ready_rx.recv().expect("gateway started");
        Self {
            addr,
            admin,
            gateway,
            shutdown: tx,
            thread: Some(thread),
        }
    }

    pub fn opts(&self, user: &str, pass: &str, db: Option<&str>) -> Opts {
        client_opts(self.addr, user, pass, db)
    }

    pub async fn app(&self) -> Conn {
        Conn::new(self.opts("app", "app-secret", Some("app")))
            .await
            .expect("connect through the gateway")
    }

    /// Signals shutdown; `join` waits for the drain to end.
    pub fn signal_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    pub fn join(mut self) {
        self.signal_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.1 request to the admin API (`token`: a bearer token); (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_with_body(addr, method, path, token, None)
}

/// One HTTP/1.1 request with a JSON `body`; (status, body).
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the admin API");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let (kind, body) = json.map_or(("", ""), |b| ("Content-Type: application/json\r\n", b));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Bodies come chunked or with a length: undo the chunking.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// A JSON answer of the admin API (status 200).
pub fn http_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `mariadb` CLI through the gateway; returns (success, stdout, stderr).
pub fn cli(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    extra: &[&str],
    sql: &str,
) -> (bool, String, String) {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{}", addr.port()))
        .arg(format!("-u{user}"))
        .arg(format!("-p{pass}"))
        .args(extra)
        .arg("-e")
        .arg(sql)
        .output()
        .expect("run mariadb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Where cargo puts build output for this test process.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    // <target>/debug/deps/gateway-<hash>
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// The policy components (first-party and purpose-built bad ones), built once per test process.
pub fn plugin_artifacts() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // One build each: the std-based plugin must not share a feature resolution with the
        // no_std ones, and `cargo rustc` takes one package.
        for p in [
            "guard",
            "rw-split",
            "mask",
            "misbehave",
            "secrets",
            "wasi-import",
        ] {
            let out = Command::new(env!("CARGO"))
                .args([
                    "rustc",
                    "-p",
                    p,
                    "--profile",
                    "plugin",
                    "--target",
                    "wasm32-wasip2",
                ])
                .args(["--crate-type", "cdylib"])
                .current_dir(repo_root())
                .output()
                .expect("run cargo");
            assert!(
                out.status.success(),
                "building plugin {p} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        target_dir().join("wasm32-wasip2/plugin")
    })
}

/// The Python policies (`plugins/python/*`), built once per test process with
/// `scripts/build-python-policy` (which installs componentize-py if missing).
pub fn python_artifacts() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = target_dir().join("python-policies");
        let builds: Vec<_> = [
            ("guard", "guard"),
            ("credentials", "credentials"),
            ("misbehave", "guard"),
        ]
        .into_iter()
        .map(|(p, world)| {
            let child = Command::new(repo_root().join("scripts/build-python-policy"))
                .arg(repo_root().join("plugins/python").join(p))
                .arg(world)
                .arg(out.join(format!("py-{p}.wasm")))
                .stderr(Stdio::piped())
                .spawn()
                .expect("run scripts/build-python-policy");
            (p, child)
        })
        .collect();
        for (p, child) in builds {
            let done = child.wait_with_output().expect("build");
            assert!(
                done.status.success(),
                "building Python policy {p} failed:\n{}",
                String::from_utf8_lossy(&done.stderr)
            );
        }
        out
    })
}

/// A policy directory of a test's own.
pub struct PolicyDir {
    pub path: PathBuf,
}

impl PolicyDir {
    pub fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("sluice-policies-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("policy dir");
        Self { path }
    }

    /// Copies a built Python plugin (`py-guard`, `py-credentials`, `py-misbehave`) in as `file`.
    pub fn python_plugin(&self, artifact: &str, file: &str) {
        let src = python_artifacts().join(format!("{artifact}.wasm"));
        self.write(
            file,
            &std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())),
        );
    }

    /// Copies a built plugin (`guard`, `rw-split`, `misbehave`, `wasi-import`) in as `file`.
    pub fn plugin(&self, artifact: &str, file: &str) {
        let src = plugin_artifacts().join(format!("{}.wasm", artifact.replace('-', "_")));
        self.write(
            file,
            &std::fs::read(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())),
        );
    }

    /// Writes a file the way deployment tools do: a temporary file renamed into place.
    pub fn write(&self, file: &str, bytes: &[u8]) {
        let tmp = self.path.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, self.path.join(file)).expect("rename");
    }

    pub fn config(&self) -> Config {
        let mut c = base_config();
        c.policies.dir = Some(self.path.clone());
        c.policies.debounce_ms = 50;
        c
    }
}

impl PolicyDir {
    /// Loads this directory as a gateway would (compile, link, configure, smoke-call), over a
    /// built-in policy with one unreachable primary, without a fleet.
    pub fn load(
        &self,
        engine: &Arc<sluice::plugin::runtime::PluginEngine>,
    ) -> Result<sluice::plugin::set::PolicySet, sluice::plugin::loader::LoadError> {
        let config = Config::from_toml(
            "[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\n",
        )
        .expect("config");
        sluice::plugin::loader::load_dir(
            engine,
            &self.path,
            sluice::phase::ConfigPolicy::new(config),
            &Arc::new(sluice::plugin::secrets::SecretSources::default()),
        )
    }
}

/// A config whose logins the `secrets` credentials policy resolves from `users_json`, mounted
/// the way Kubernetes mounts a Secret (a directory with one file per key).
pub fn secrets_config(name: &str, users_json: &[u8]) -> Config {
    let dir = PolicyDir::new(name);
    dir.plugin("secrets", "secrets.wasm");
    dir.write(
        "secrets.toml",
        b"name = \"secrets\"\nkind = \"credentials\"\nplugin = \"secrets.wasm\"\n[settings]\nsecret = \"users.json\"\n",
    );
    let mounted = PolicyDir::new(&format!("{name}-secret"));
    mounted.write("users.json", users_json);
    let mut cfg = dir.config();
    cfg.secrets.dir = Some(mounted.path.clone());
    cfg
}

/// Waits (bounded) until the gateway's policy set version passes `version`.
pub fn wait_for_policy_version(gw: &Gateway, version: u64) -> sluice::gateway::PolicyStatus {
    for _ in 0..400 {
        let st = gw.policy_status();
        if st.version > version {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the policy set was not reloaded: {:?}", gw.policy_status());
}

/// Waits (bounded) until a reload has loaded policies that satisfy `loaded` (a reload can be
/// triggered by an intermediate step of a change, so the version alone does not say it is in).
pub fn wait_for_loaded_policies(
    gw: &Gateway,
    loaded: impl Fn(&[std::sync::Arc<sluice::plugin::runtime::Plugin>]) -> bool,
) {
    for _ in 0..400 {
        if loaded(&gw.plugins()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!(
        "the expected policies were not loaded: {:?}",
        gw.policy_status()
    );
}

/// Waits (bounded) until the gateway has refused more reloads than `errors`.
pub fn wait_for_policy_error(gw: &Gateway, errors: u64) -> sluice::gateway::PolicyStatus {
    for _ in 0..400 {
        let st = gw.policy_status();
        if st.errors > errors {
            return st;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("no reload was refused: {:?}", gw.policy_status());
}

/// The gateway binary with the shipped configuration (default policies) in front of `backends`
/// (a TOML array, as `SLUICE_BACKENDS` takes it): a process of its own, whose memory a test can
/// read.
pub struct GatewayProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl GatewayProcess {
    pub fn start(backends: &str) -> Self {
        Self::spawn(backends, &[], std::process::Stdio::null())
    }

    /// With more `SLUICE_...` settings, its log (stderr) kept for [`Self::stop_log`].
    pub fn start_logged(backends: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(backends, env, std::process::Stdio::piped())
    }

    fn spawn(backends: &str, env: &[(&str, &str)], stderr: std::process::Stdio) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(repo_root().join("config/sluice.toml"))
            .env("SLUICE_FRONTEND__LISTEN", format!("127.0.0.1:{port}"))
            .env("SLUICE_ADMIN__LISTEN", "127.0.0.1:0")
            .env("SLUICE_BACKENDS", backends)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn sluice");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut up = false;
        for _ in 0..400 {
            if std::net::TcpStream::connect(addr).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert!(up, "sluice did not start listening");
        Self { child, addr }
    }

    /// Stops the gateway (SIGTERM, then waits) and returns what it logged.
    pub fn stop_log(mut self) -> String {
        use std::io::Read;
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let _ = self.child.wait();
        log
    }

    /// A `/proc/<pid>/status` figure in KiB.
    pub fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in status"))
    }

    /// Resets the peak RSS and returns the current RSS (KiB).
    pub fn rss_baseline(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5")
            .expect("reset the peak RSS (clear_refs)");
        self.status_kib("VmRSS:")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sysbench against the gateway (or a server) on `port` as `app`; its report.
pub fn sysbench(port: u16, db: &str, args: &[&str]) -> String {
    let out = Command::new("sysbench")
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-user=app",
            "--mysql-password=app-secret",
        ])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-db={db}"))
        .args(args)
        .output()
        .expect("run sysbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A counter line of a sysbench report (`ignored errors:`, `reconnects:`, `transactions:`).
pub fn counter(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}
