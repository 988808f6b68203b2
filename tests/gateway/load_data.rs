//! LOAD DATA LOCAL INFILE through the gateway, compared with the server: the file request
//! reaches the client, the file streams to the backend, the result comes back; refusals are the
//! server's or the guard's; a client that breaks off mid-file loads nothing.

use std::net::SocketAddr;

use crate::harness::{GatewayProcess, PolicyDir, TestGateway, cli, fleet, primary_only_config};
use crate::raw::{LOCAL_FILES, Raw, Reply};

const ROWS: &[u8] = b"1\tone\n2\ttwo\n3\tthree\n";

/// Sends `sql`; when the server asks for a file, answers with `file` in `pieces` packets.
/// Returns the file name asked for (if any) and the reply.
fn load(r: &mut Raw, sql: &str, file: &[u8], pieces: usize) -> (Option<Vec<u8>>, Reply) {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    r.send_command(&p);
    let first = r.recv_logical().expect("reply");
    if first.first() != Some(&0xFB) {
        return (None, reply_of(first));
    }
    let name = first[1..].to_vec();
    for chunk in file.chunks(file.len().div_ceil(pieces).max(1)) {
        r.send_logical(chunk);
    }
    r.send_logical(&[]);
    (Some(name), reply_of(r.recv_logical().expect("result")))
}

fn reply_of(p: Vec<u8>) -> Reply {
    match p.first() {
        Some(0x00) => Reply::Ok(p),
        Some(0xFF) => Reply::Err(
            u16::from_le_bytes([p[1], p[2]]),
            String::from_utf8_lossy(&p[9.min(p.len())..]).into_owned(),
        ),
        _ => panic!("unexpected reply {p:?}"),
    }
}

/// An OK's affected rows and info text (status flags and ids aside).
fn ok_summary(reply: &Reply) -> String {
    match reply {
        Reply::Ok(p) => {
            let affected = p[1];
            // affected rows < 251 and insert id 0 here: 1 + 1 + 1 + status 2 + warnings 2.
            let info = String::from_utf8_lossy(&p[7.min(p.len())..]);
            format!(
                "ok {affected} {}",
                info.trim_start_matches(|c: char| c.is_control())
            )
        }
        Reply::Err(code, msg) => format!("error {code}: {msg}"),
        Reply::Rows(_) => "rows".into(),
    }
}

fn count(r: &mut Raw, table: &str) -> String {
    let rows = r
        .query(&format!("SELECT COUNT(*) FROM {table}"))
        .text_rows();
    String::from_utf8_lossy(rows[0][0].as_deref().expect("count")).into_owned()
}

/// The same script directly and through the gateway: per step what was asked and answered.
fn script(addr: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    let mut r = Raw::login_as(addr, "app", "app-secret", Some("app"), LOCAL_FILES);
    let created = r.query("CREATE OR REPLACE TABLE app.ldl (id INT, name TEXT)");
    assert!(matches!(created, Reply::Ok(_)), "{created:?}");
    let (name, reply) = load(
        &mut r,
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE app.ldl",
        ROWS,
        3,
    );
    out.push(format!(
        "asked {:?}: {}",
        name.map(|n| String::from_utf8_lossy(&n).into_owned()),
        ok_summary(&reply)
    ));
    out.push(format!("rows {}", count(&mut r, "app.ldl")));
    // An empty file loads nothing.
    let (_, reply) = load(
        &mut r,
        "LOAD DATA LOCAL INFILE 'empty.tsv' INTO TABLE app.ldl",
        b"",
        1,
    );
    out.push(format!("empty: {}", ok_summary(&reply)));
    // A table that does not exist: refused before the file is asked for.
    let (name, reply) = load(
        &mut r,
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE app.no_such_ldl",
        ROWS,
        1,
    );
    out.push(format!("asked {}: {}", name.is_some(), ok_summary(&reply)));
    // Warnings (a bad integer) come back in the OK.
    let (_, reply) = load(
        &mut r,
        "LOAD DATA LOCAL INFILE 'bad.tsv' INTO TABLE app.ldl",
        b"x\tbad\n",
        1,
    );
    out.push(format!("warnings: {}", ok_summary(&reply)));
    out.push(format!("rows {}", count(&mut r, "app.ldl")));
    // A client that did not offer CLIENT_LOCAL_FILES: the server's refusal.
    let mut plain = Raw::login(addr);
    let (name, reply) = load(
        &mut plain,
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE app.ldl",
        ROWS,
        1,
    );
    out.push(format!(
        "without the capability, asked {}: {}",
        name.is_some(),
        ok_summary(&reply)
    ));
    out
}

#[test]
fn load_data_local_matches_the_server() {
    let f = fleet();
    let direct = script(SocketAddr::from(([127, 0, 0, 1], f.port)));
    assert!(
        direct[0].starts_with("asked Some(\"rows.tsv\"): ok 3"),
        "{direct:?}"
    );
    let gw = TestGateway::start(primary_only_config());
    assert_eq!(script(gw.addr), direct);

    // The mariadb CLI, reading a real file.
    let dir = std::env::temp_dir().join(format!("sluice-ldl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("cli.tsv");
    let rows = (0..5000).fold(String::new(), |mut s, i| {
        use std::fmt::Write;
        let _ = writeln!(s, "{i}\tname-{i}");
        s
    });
    std::fs::write(&file, rows).expect("write file");
    let (ok, out, err) = cli(
        gw.addr,
        "app",
        "app-secret",
        &["--local-infile=1", "app"],
        &format!(
            "CREATE OR REPLACE TABLE app.ldl_cli (id INT, name TEXT); LOAD DATA LOCAL INFILE '{}' INTO TABLE app.ldl_cli; SELECT COUNT(*), SUM(id) FROM app.ldl_cli",
            file.display()
        ),
    );
    assert!(ok, "{err}");
    assert_eq!(out, "5000\t12497500");
}

#[test]
fn a_client_that_breaks_off_mid_file_loads_nothing() {
    let f = fleet();
    let gw = TestGateway::start(primary_only_config());
    let mut r = Raw::login_as(gw.addr, "app", "app-secret", Some("app"), LOCAL_FILES);
    assert!(matches!(
        r.query("CREATE OR REPLACE TABLE app.ldl_broken (id INT, name TEXT) ENGINE=InnoDB"),
        Reply::Ok(_)
    ));
    r.send_command(b"\x03LOAD DATA LOCAL INFILE 'half.tsv' INTO TABLE app.ldl_broken");
    let request = r.recv_logical().expect("file request");
    assert_eq!(request[0], 0xFB);
    r.send_logical(ROWS);
    r.send_logical(ROWS);
    // Gone without the empty packet that ends the file.
    drop(r);
    // The server rolls the statement back once the gateway drops its connection: wait (bounded)
    // until no LOAD runs, then nothing may have been loaded.
    for _ in 0..600 {
        let running = f.sql(
            0,
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA LOCAL%ldl_broken%'",
        );
        if running == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(f.sql(0, "SELECT COUNT(*) FROM app.ldl_broken"), "0");
    // The gateway serves on, on a fresh connection.
    let mut again = Raw::login_as(gw.addr, "app", "app-secret", Some("app"), LOCAL_FILES);
    let (_, reply) = load(
        &mut again,
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE app.ldl_broken",
        ROWS,
        2,
    );
    assert!(ok_summary(&reply).starts_with("ok 3"), "{reply:?}");
}

#[test]
fn a_guard_that_denies_load_data_refuses_it_before_the_file_moves() {
    let dir = PolicyDir::new("deny-load-data");
    dir.plugin("guard", "guard.wasm");
    dir.write(
        "guard.toml",
        crate::policies::guard_manifest("guard", "guard.wasm", "deny", "deny-load-data = true\n")
            .as_bytes(),
    );
    let mut c = dir.config();
    c.backends
        .retain(|b| b.role == sluice::config::Role::Primary);
    let gw = TestGateway::start(c);
    let mut r = Raw::login_as(gw.addr, "app", "app-secret", Some("app"), LOCAL_FILES);
    let (asked, reply) = load(
        &mut r,
        "LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE app.ldl",
        ROWS,
        1,
    );
    assert_eq!(asked, None, "the file was asked for");
    let Reply::Err(code, message) = reply else {
        panic!("not refused: {reply:?}");
    };
    assert_eq!(code, 1227);
    assert!(message.contains("guard: deny-load-data"), "{message}");
}

/// A tab-separated file of `rows` rows of about 100 bytes, and what the server should report for
/// it: `COUNT(*)`, `SUM(id)`, `SUM(CRC32(payload))`.
fn big_file(path: &std::path::Path, rows: u64) -> String {
    use std::io::Write;
    let mut w =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("file"));
    let (mut sum_id, mut sum_crc) = (0u64, 0u64);
    let mut line = Vec::with_capacity(128);
    for i in 0..rows {
        line.clear();
        let seed = format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let payload = seed.repeat(6);
        let mut crc = flate2::Crc::new();
        crc.update(payload.as_bytes());
        sum_id += i;
        sum_crc += u64::from(crc.sum());
        writeln!(line, "{i}\t{payload}").expect("format");
        w.write_all(&line).expect("write");
    }
    w.flush().expect("flush");
    format!("{rows}\t{sum_id}\t{sum_crc}")
}

#[test]
fn a_200_mb_file_loads_in_bounded_gateway_memory() {
    // A server of its own: the load would make the shared fleet's replicas lag.
    let f = crate::harness::start_private_server("load-200mb");
    let gw = GatewayProcess::start(&format!(
        "[{{name=\"primary\",address=\"127.0.0.1:{}\",role=\"primary\"}}]",
        f.port
    ));
    let dir = std::env::temp_dir().join(format!("sluice-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("big.tsv");
    let expected = big_file(&file, 2_000_000);
    let size = std::fs::metadata(&file).expect("size").len();
    assert!(size > 200_000_000, "{size}");
    let table = "app.ld_big";
    let check = format!("SELECT COUNT(*), SUM(id), SUM(CRC32(payload)) FROM {table}");
    let (ok, _, err) = cli(
        gw.addr,
        "app",
        "app-secret",
        &["app"],
        &format!("CREATE OR REPLACE TABLE {table} (id BIGINT, payload VARCHAR(200))"),
    );
    assert!(ok, "{err}");

    // Each client loads the file into an empty table: every row arrives, and the gateway's peak
    // RSS stays within the bound.
    let loads: [(&str, &dyn Fn()); 2] = [
        ("mariadb --local-infile", &|| {
            let (ok, _, err) = cli(
                gw.addr,
                "app",
                "app-secret",
                &["--local-infile=1", "app"],
                &format!(
                    "LOAD DATA LOCAL INFILE '{}' INTO TABLE {table}",
                    file.display()
                ),
            );
            assert!(ok, "{err}");
        }),
        ("PyMySQL local_infile=True", &|| {
            let out = std::process::Command::new("python3")
                .arg(crate::harness::repo_root().join("tests/clients/load_data_check.py"))
                .arg(gw.addr.port().to_string())
                .arg(&file)
                .arg(table)
                .output()
                .expect("run python3");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000000");
        }),
    ];
    for (client, load) in loads {
        f.sql(0, &format!("TRUNCATE TABLE {table}"));
        let base = gw.rss_baseline();
        load();
        let growth = gw.status_kib("VmHWM:").saturating_sub(base);
        assert_eq!(f.sql(0, &check), expected, "{client}");
        eprintln!("{client}: {size} bytes loaded, gateway peak RSS +{growth} KiB");
        assert!(
            growth < 32 << 10,
            "the gateway grew by {growth} KiB for {client}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
