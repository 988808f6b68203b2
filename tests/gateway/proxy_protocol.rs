//! The PROXY protocol on the listener: behind a real HAProxy sending v2 headers the gateway sees
//! the real client's address (sessions, the audit log); a header from an address it does not
//! trust is refused, and so is a trusted balancer's connection without one.

use std::io::{Read, Write};
use std::process::{Child, Command};

use crate::harness::{PolicyDir, TestGateway, base_config};
use sluice::config::Config;
use sluice::frontend::proxy::Cidr;

fn trusting(mut c: Config, networks: &[&str]) -> Config {
    let p = &mut c.frontend.proxy_protocol;
    p.enabled = true;
    p.trusted = networks.iter().map(ToString::to_string).collect();
    p.networks = networks
        .iter()
        .map(|n| Cidr::parse(n).expect("cidr"))
        .collect();
    c
}

/// HAProxy in TCP mode in front of `target`, sending PROXY v2 headers; stopped on drop.
struct Haproxy {
    port: u16,
    child: Child,
}

impl Haproxy {
    fn start(dir: &std::path::Path, target: std::net::SocketAddr) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
                 backend b\n  server gw {target} send-proxy-v2\n"
            ),
        )
        .expect("write haproxy.cfg");
        let bin = if std::path::Path::new("/usr/sbin/haproxy").exists() {
            "/usr/sbin/haproxy"
        } else {
            "haproxy"
        };
        let mut child = Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .spawn()
            .expect("start haproxy (scripts/deps installs it)");
        // Bounded: HAProxy listens within a moment of starting.
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, child };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("haproxy did not listen on {port}");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_haproxy_the_gateway_sees_the_real_client() {
    let dir = PolicyDir::new("proxy-v2");
    let log = dir.path.join("audit.jsonl");
    let mut c = trusting(base_config(), &["127.0.0.1/32"]);
    c.audit.enabled = true;
    c.audit.file = Some(log.clone());
    let gw = TestGateway::start(c);
    let lb = Haproxy::start(&dir.path, gw.addr);
    let admin = gw.admin.expect("admin API");
    // The client connects to HAProxy from 127.0.0.2; HAProxy reaches the gateway from 127.0.0.1.
    let script = r#"
import json, sys, urllib.request, pymysql
port, admin = int(sys.argv[1]), sys.argv[2]
c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret",
                    database="app", bind_address="127.0.0.2")
cur = c.cursor()
cur.execute("SELECT 1")
assert cur.fetchone() == (1,)
sessions = json.load(urllib.request.urlopen(f"http://{admin}/api/sessions"))
print(json.dumps({"local": "%s:%d" % c._sock.getsockname(), "sessions": sessions}))
c.close()
"#;
    let out = Command::new("python3")
        .args(["-c", script, &lb.port.to_string(), &admin.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let local = v["local"].as_str().expect("local address").to_string();
    assert!(local.starts_with("127.0.0.2:"), "{local}");
    let clients: Vec<&str> = v["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["client"].as_str())
        .collect();
    assert_eq!(
        clients,
        [local.as_str()],
        "the session shows the real client"
    );
    drop(gw);
    let audit = std::fs::read_to_string(&log).expect("audit log");
    let connect = audit
        .lines()
        .find(|l| l.contains("\"event\":\"connect\""))
        .expect("a connect event");
    assert!(
        connect.contains(&format!("\"client\":\"{local}\"")),
        "{connect}"
    );
}

/// Connects, reads the first packet the gateway sends (after writing `first`, when given).
fn first_answer(
    addr: std::net::SocketAddr,
    before_greeting: &[u8],
    after_greeting: &[u8],
) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(before_greeting).expect("write");
    let mut packet = read_packet(&mut s);
    if !after_greeting.is_empty() {
        assert_eq!(packet.get(4), Some(&10), "a greeting (protocol 10)");
        s.write_all(after_greeting).expect("write");
        packet = read_packet(&mut s);
    }
    packet
}

fn read_packet(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).expect("a packet header");
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("a packet body");
    [head.to_vec(), body].concat()
}

fn err_of(packet: &[u8]) -> (u16, String) {
    assert_eq!(packet.get(4), Some(&0xff), "an ERR packet: {packet:?}");
    let code = u16::from_le_bytes([packet[5], packet[6]]);
    (code, String::from_utf8_lossy(&packet[13..]).into_owned())
}

#[test]
fn a_proxy_header_from_an_untrusted_address_is_refused() {
    let gw = TestGateway::start(trusting(base_config(), &["10.0.0.0/8"]));
    let answer = first_answer(
        gw.addr,
        b"",
        b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 6033\r\n",
    );
    let (code, message) = err_of(&answer);
    assert_eq!(code, 1043, "{message}");
    assert!(
        message.contains("not in frontend.proxy-protocol.trusted"),
        "{message}"
    );
    // The same without PROXY protocol enabled at all.
    let plain = TestGateway::start(base_config());
    let v2 =
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x7f\x00\x00\x01\x15\xb3\x17\x91";
    let (code, _) = err_of(&first_answer(plain.addr, b"", v2));
    assert_eq!(code, 1043);
}

#[test]
fn a_trusted_balancer_must_send_a_header() {
    let gw = TestGateway::start(trusting(base_config(), &["127.0.0.1"]));
    let (code, message) = err_of(&first_answer(gw.addr, b"HELLO there\r\n", b""));
    assert_eq!(code, 1043, "{message}");
    assert!(
        message.contains("did not start with a PROXY protocol header"),
        "{message}"
    );
    let (code, message) = err_of(&first_answer(gw.addr, b"PROXY TCP4 nonsense\r\n", b""));
    assert_eq!(code, 1043, "{message}");
    // A v1 header naming a client, then the greeting as usual.
    let greeting = first_answer(
        gw.addr,
        b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 6033\r\n",
        b"",
    );
    assert_eq!(greeting.get(4), Some(&10), "a greeting after a good header");
}
