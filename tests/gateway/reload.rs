//! Configuration reload while traffic flows: a replica added to the file serves reads, one
//! removed drains to zero connections, a password changed in a Secret-style mount (a `..data`
//! symlink swap) stops the old one working for new logins, a rotated certificate is what new TLS
//! clients get; no statement of the running load fails. A bad edit changes nothing and says
//! which key is wrong; a key that needs a restart keeps its value and is named.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::harness::{Fleet, PolicyDir, TestGateway, fleet, start_private_fleet, wait_until};
use sluice::config::Config;
use sluice::gateway::Gateway;

/// A directory mounted the way Kubernetes mounts a Secret: `<key> -> ..data/<key>`,
/// `..data -> ..<version>`; [`SecretMount::swap`] replaces every key at once.
struct SecretMount {
    dir: PathBuf,
    version: u32,
}

impl SecretMount {
    fn new(dir: PathBuf, files: &[(&str, &[u8])]) -> Self {
        std::fs::create_dir_all(&dir).expect("mount dir");
        let mut m = Self { dir, version: 0 };
        m.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), m.dir.join(name))
                .expect("key symlink");
        }
        m
    }

    fn swap(&mut self, files: &[(&str, &[u8])]) {
        self.version += 1;
        let data = format!("..v{}", self.version);
        std::fs::create_dir_all(self.dir.join(&data)).expect("data dir");
        for (name, bytes) in files {
            std::fs::write(self.dir.join(&data).join(name), bytes).expect("secret file");
        }
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&data, &tmp).expect("data symlink");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }
}

fn certificate() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    (
        ck.cert.pem().into_bytes(),
        ck.signing_key.serialize_pem().into_bytes(),
        ck.cert.der().to_vec(),
    )
}

/// The gateway's configuration file, with these replicas of fleet `f`.
fn config_text(f: &Fleet, replicas: &[u16], extra: &str) -> String {
    let mut t = format!(
        r#"
[frontend]
listen = "127.0.0.1:0"
[frontend.tls]
cert = "tls/cert.pem"
key = "tls/key.pem"
[admin]
listen = "127.0.0.1:0"
[routing]
read-write-split = true
[reload]
debounce-ms = 50
[monitor]
user = "sluice_monitor"
password = "monitor-secret"
interval-ms = 100
[[users]]
name = "app"
password-file = "secrets/app-password"
backend-user = "app"
backend-password = "app-secret"
[[backends]]
name = "primary"
address = "127.0.0.1:{}"
role = "primary"
"#,
        f.port
    );
    for r in replicas {
        let _ = writeln!(
            t,
            "[[backends]]\nname = \"replica{r}\"\naddress = \"127.0.0.1:{}\"\nrole = \"replica\"",
            f.port + r
        );
    }
    t.push_str(extra);
    t
}

/// Writes the file the way an editor or `kubectl cp` would: a temporary file renamed in place.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

async fn wait_version(gw: &Gateway, version: u64, what: &str) {
    wait_until(30, what, || gw.reload_status().version >= version).await;
}

async fn wait_refusal(gw: &Gateway, errors: u64) -> String {
    wait_until(30, "the reload is refused", || {
        gw.reload_status().errors >= errors
    })
    .await;
    gw.reload_status().last_error.unwrap_or_default()
}

fn opts(addr: std::net::SocketAddr, pass: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some("app"))
        .pass(Some(pass))
        .db_name(Some("app"))
        .prefer_socket(false)
}

/// The certificate (DER) the gateway presents to a TLS client connecting now: the greeting, an
/// SSLRequest, then the handshake.
async fn served_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = [0u8; 4];
    tcp.read_exact(&mut head).await.expect("greeting header");
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut greeting = vec![0u8; len];
    tcp.read_exact(&mut greeting).await.expect("greeting");
    // CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION, 16 MiB, utf8mb4.
    let caps: u32 = 0x0200 | 0x0800 | 0x8000;
    let mut req = vec![32, 0, 0, 1];
    req.extend_from_slice(&caps.to_le_bytes());
    req.extend_from_slice(&(16u32 << 20).to_le_bytes());
    req.push(45);
    req.extend_from_slice(&[0; 23]);
    tcp.write_all(&req).await.expect("ssl request");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .to_vec()
}

/// Accepts whatever certificate the server presents: the test compares it byte for byte.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sessions reading and writing until `stop`: each counts its statements and failures.
struct Load {
    stop: Arc<AtomicBool>,
    statements: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(addr: std::net::SocketAddr, pass: &str, sessions: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let statements = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..sessions {
            let mut c = Conn::new(opts(addr, pass)).await.expect("load session");
            let (stop, statements, failures) = (
                Arc::clone(&stop),
                Arc::clone(&statements),
                Arc::clone(&failures),
            );
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = if n.is_multiple_of(10) {
                        c.query_drop(format!("INSERT INTO reload_t (who) VALUES ({i})"))
                            .await
                    } else {
                        c.query_drop("SELECT COUNT(*) FROM reload_t WHERE who = 0")
                            .await
                    };
                    statements.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = r {
                        eprintln!("load session {i}: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = c.disconnect().await;
            }));
        }
        Self {
            stop,
            statements,
            failures,
            tasks,
        }
    }

    /// Waits until the load has run `more` statements beyond now.
    async fn run_for(&self, more: u64) {
        let target = self.statements.load(Ordering::Relaxed) + more;
        let s = Arc::clone(&self.statements);
        wait_until(60, "the load runs on", move || {
            s.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    async fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("load task");
        }
        (
            self.statements.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Load {
    /// A failed assertion stops the sessions too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_passwords_and_certificates_change_live_without_a_failed_statement() {
    // Its own servers: the load's writes must not lag the shared replicas other tests read.
    let f = &start_private_fleet("reload-live");
    let root = PolicyDir::new("reload-live").path;
    let mut secrets = SecretMount::new(root.join("secrets"), &[("app-password", b"front-one")]);
    let (cert1, key1, der1) = certificate();
    let mut tls = SecretMount::new(
        root.join("tls"),
        &[("cert.pem", &cert1), ("key.pem", &key1)],
    );
    let file = root.join("sluice.toml");
    write_config(&file, &config_text(f, &[1], ""));
    let gw = TestGateway::start(Config::load(&file).expect("config"));
    let g = Arc::clone(&gw.gateway);
    let mut c = Conn::new(opts(gw.addr, "front-one")).await.expect("login");
    c.query_drop(
        "CREATE TABLE IF NOT EXISTS reload_t (id INT AUTO_INCREMENT PRIMARY KEY, who INT)",
    )
    .await
    .expect("table");
    f.wait_replicas();
    assert_eq!(served_certificate(gw.addr).await, der1);

    let load = Load::start(gw.addr, "front-one", 8).await;
    load.run_for(200).await;

    // 1. A replica added to the file serves reads.
    write_config(&file, &config_text(f, &[1, 2], ""));
    wait_version(&g, 1, "the new replica is in").await;
    let replica2 = g
        .fleet()
        .by_name("replica2")
        .cloned()
        .expect("replica2 in the fleet");
    let served = Arc::clone(&replica2);
    wait_until(30, "replica2 serves reads", move || {
        served.traffic.statements.load(Ordering::Relaxed) > 0
    })
    .await;

    // 2. A replica removed leaves the fleet and drains to zero connections.
    let replica1 = g.fleet().by_name("replica1").cloned().expect("replica1");
    write_config(&file, &config_text(f, &[2], ""));
    wait_version(&g, 2, "replica1 is removed").await;
    assert!(g.fleet().by_name("replica1").is_none());
    let drained = Arc::clone(&replica1);
    wait_until(30, "replica1's connections close", move || {
        drained.pool_status().counts.open() == 0
    })
    .await;
    let before = replica1.traffic.statements.load(Ordering::Relaxed);
    load.run_for(200).await;
    assert_eq!(
        replica1.traffic.statements.load(Ordering::Relaxed),
        before,
        "a removed backend served statements"
    );
    wait_until(30, "the removed backend leaves the admin view", || {
        g.retired().is_empty()
    })
    .await;

    // 3. The password changed in the Secret: new logins need the new one.
    secrets.swap(&[("app-password", b"front-two")]);
    wait_version(&g, 3, "the new password is read").await;
    let old = Conn::new(opts(gw.addr, "front-one")).await;
    match old {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e:?}"),
        other => panic!("the old password still logs in: {other:?}"),
    }
    let mut fresh = Conn::new(opts(gw.addr, "front-two"))
        .await
        .expect("new password");
    fresh.query_drop("SELECT 1").await.expect("query");
    load.run_for(200).await;

    // 4. The certificate rotated: new TLS clients get the new one.
    let (cert2, key2, der2) = certificate();
    tls.swap(&[("cert.pem", &cert2), ("key.pem", &key2)]);
    wait_version(&g, 4, "the new certificate is loaded").await;
    assert_eq!(served_certificate(gw.addr).await, der2);
    let status = g.reload_status();
    assert!(
        status
            .last_change
            .as_deref()
            .is_some_and(|s| s.contains("certificate")),
        "{status:?}"
    );
    load.run_for(200).await;

    let (statements, failures) = load.finish().await;
    assert_eq!(failures, 0, "{failures} of {statements} statements failed");
    c.query_drop("DROP TABLE reload_t").await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_edit_changes_nothing_and_names_the_key() {
    let f = fleet();
    let root = PolicyDir::new("reload-bad").path;
    let _secrets = SecretMount::new(root.join("secrets"), &[("app-password", b"front-one")]);
    let (cert, key, _) = certificate();
    let _tls = SecretMount::new(root.join("tls"), &[("cert.pem", &cert), ("key.pem", &key)]);
    let file = root.join("sluice.toml");
    write_config(&file, &config_text(f, &[1], ""));
    let gw = TestGateway::start(Config::load(&file).expect("config"));
    let g = Arc::clone(&gw.gateway);

    // An address that is not host:port.
    write_config(
        &file,
        &config_text(f, &[1], "").replace(
            &format!("127.0.0.1:{}\"\nrole = \"replica\"", f.port + 1),
            "127.0.0.1\"\nrole = \"replica\"",
        ),
    );
    let e = wait_refusal(&g, 1).await;
    assert!(
        e.contains("backends[1].address") && e.contains("host:port"),
        "{e}"
    );
    assert!(e.contains("sluice.toml"), "names the file: {e}");
    // An unknown key.
    write_config(
        &file,
        &config_text(f, &[1], "").replace(
            "read-write-split = true",
            "read-write-split = true\nsplit-reads = true",
        ),
    );
    let e = wait_refusal(&g, 2).await;
    assert!(e.contains("split-reads"), "{e}");
    assert_eq!(g.reload_status().version, 0);
    assert!(g.fleet().by_name("replica1").is_some());
    let mut c = Conn::new(opts(gw.addr, "front-one"))
        .await
        .expect("still serving");
    assert_eq!(
        c.query_first::<i64, _>("SELECT 1").await.expect("query"),
        Some(1)
    );

    // A key read only at start keeps its value and is named; the rest applies.
    let text = config_text(f, &[1], "")
        .replace(
            "listen = \"127.0.0.1:0\"\n[frontend.tls]",
            "listen = \"127.0.0.1:1\"\n[frontend.tls]",
        )
        .replace("[routing]\n", "[routing]\ndeadlock-retries = 5\n");
    write_config(&file, &text);
    wait_version(&g, 1, "the valid part applies").await;
    let cfg = g.config();
    assert_eq!(cfg.routing.deadlock_retries, 5);
    assert_eq!(cfg.frontend.listen.port(), 0, "the listen address stays");
    let st = g.reload_status();
    let change = st.last_change.unwrap_or_default();
    assert!(change.contains("routing"), "{change}");
    let admin = gw.admin.expect("admin");
    let (code, body) = crate::harness::http(admin, "POST", "/api/reload", None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["config"]["changes"]["restart_required"][0], "frontend.listen",
        "{v}"
    );
    Conn::new(opts(gw.addr, "front-one"))
        .await
        .expect("the old listener serves");
}
