//! The protocol's long tail, compared with the server itself: long data and packets at the
//! 0xFFFFFF boundary, LOAD DATA LOCAL INFILE, result sets that change shape between executions.

use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use crate::harness::{Fleet, TestGateway, primary_only_config_for, start_private_server};
use crate::raw::{MAX_PAYLOAD, Raw, Reply};

/// The sizes either side of 2^24 (a payload of exactly 0xFFFFFF bytes continues in another
/// packet).
const BOUNDARY: [usize; 4] = [(1 << 24) - 2, (1 << 24) - 1, 1 << 24, (1 << 24) + 1];

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(salt)) as u8)
        .collect()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn outcome(reply: &Reply) -> String {
    match reply {
        Reply::Ok(_) => "ok".into(),
        Reply::Err(code, msg) => format!("error {code}: {msg}"),
        Reply::Rows(r) => format!("{} rows", r.len()),
    }
}

/// What is stored: `id, LENGTH(b), SHA2(b, 256)` per row.
fn stored(r: &mut Raw) -> Vec<String> {
    r.query("SELECT id, LENGTH(b), SHA2(b, 256) FROM app.ld ORDER BY id")
        .text_rows()
        .into_iter()
        .map(|row| {
            row.iter()
                .map(|c| {
                    c.as_deref()
                        .map_or("NULL".into(), |c| String::from_utf8_lossy(c).into_owned())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Inserts one value per size by long data, the first chunk filling a packet to exactly
/// 0xFFFFFF bytes (so an empty packet follows it), the rest in 1 MiB chunks. Returns each
/// execute's outcome and then what the table holds.
fn long_data_run(addr: SocketAddr, sizes: &[usize]) -> (Vec<String>, Vec<String>) {
    let mut r = Raw::login(addr);
    let created =
        r.query("CREATE OR REPLACE TABLE app.ld (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB)");
    assert!(matches!(created, Reply::Ok(_)), "{created:?}");
    let (id, params) = r.prepare("INSERT INTO app.ld (b) VALUES (?)");
    assert_eq!(params, 1);
    let mut outcomes = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let data = pattern(size, i as u8);
        let first = size.min(MAX_PAYLOAD - 7);
        r.send_long_data(id, 0, &data[..first]);
        for chunk in data[first..].chunks(1 << 20) {
            r.send_long_data(id, 0, chunk);
        }
        outcomes.push(format!("{size}: {}", outcome(&r.execute_long(id, 1))));
        // Long data for a parameter the statement does not have fails the next execute.
        r.send_long_data(id, 3, b"x");
        outcomes.push(format!("bad index: {}", outcome(&r.execute_long(id, 1))));
        // A failed execute leaves the statement usable after a reset.
        let mut reset = vec![0x1a];
        reset.extend_from_slice(&id.to_le_bytes());
        assert!(matches!(r.command(&reset), Some(p) if p[0] == 0));
    }
    (outcomes, stored(&mut r))
}

/// Text statements whose COM_QUERY payload is each boundary size, then rows whose text and
/// binary row packets are each boundary size, read back both ways: per step its outcome, and
/// per row its length and checksum.
fn boundary_run(addr: SocketAddr) -> Vec<String> {
    let mut r = Raw::login(addr);
    let mut out = Vec::new();
    let created =
        r.query("CREATE OR REPLACE TABLE app.ld (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB)");
    assert!(matches!(created, Reply::Ok(_)), "{created:?}");
    for &payload in &BOUNDARY {
        let head = "INSERT INTO app.ld (b) VALUES ('";
        let filler = 1 + head.len() + 2;
        let value: String = (0..payload - filler)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let sql = format!("{head}{value}')");
        assert_eq!(1 + sql.len(), payload);
        out.push(format!("query of {payload}: {}", outcome(&r.query(&sql))));
    }
    // A text row is a 4-byte length and the value; a binary row adds a header byte and the
    // NULL bitmap.
    for &payload in &BOUNDARY {
        for len in [payload - 4, payload - 6] {
            let sql = format!(
                "INSERT INTO app.ld (b) VALUES (LEFT(REPEAT('0123456789abcdef', {}), {len}))",
                len / 16 + 1
            );
            assert!(matches!(r.query(&sql), Reply::Ok(_)));
        }
    }
    let ids: Vec<String> = r
        .query("SELECT id FROM app.ld ORDER BY id")
        .text_rows()
        .into_iter()
        .map(|row| String::from_utf8_lossy(row[0].as_deref().expect("id")).into_owned())
        .collect();
    let (stmt, _) = r.prepare("SELECT b FROM app.ld WHERE id = ?");
    for id in &ids {
        let text = r.query(&format!("SELECT b FROM app.ld WHERE id = {id}"));
        let value = text.text_rows().remove(0).remove(0).expect("value");
        out.push(format!("text row {id}: {} {}", value.len(), sha(&value)));
        let binary = r.execute_inline(stmt, id.as_bytes());
        let Reply::Rows(rows) = binary else {
            panic!("binary select: {binary:?}");
        };
        // Header byte, one bitmap byte, then the length-encoded value.
        let value = crate::raw::lenenc_value(&rows[0][2..]);
        out.push(format!("binary row {id}: {} {}", value.len(), sha(value)));
    }
    out
}

fn solo_at(name: &str, max_allowed_packet: usize) -> Fleet {
    let f = start_private_server(name);
    f.sql(
        0,
        &format!("SET GLOBAL max_allowed_packet = {max_allowed_packet}"),
    );
    f
}

#[test]
fn long_data_at_the_packet_boundary_matches_the_server() {
    let f = solo_at("longdata", 1 << 24);
    let direct = SocketAddr::from(([127, 0, 0, 1], f.port));
    let (direct_outcomes, direct_rows) = long_data_run(direct, &BOUNDARY);
    // The server takes long data up to max_allowed_packet and refuses the byte beyond.
    assert_eq!(
        direct_outcomes
            .iter()
            .filter(|o| o.ends_with(": ok") && !o.starts_with("bad"))
            .count(),
        3,
        "{direct_outcomes:?}"
    );
    let gw = TestGateway::start(primary_only_config_for(&f));
    let (outcomes, rows) = long_data_run(gw.addr, &BOUNDARY);
    assert_eq!(outcomes, direct_outcomes);
    assert_eq!(rows, direct_rows);
    // Byte for byte: what was sent is what is stored.
    let expected: Vec<String> = BOUNDARY[..3]
        .iter()
        .enumerate()
        .map(|(i, &size)| format!("{} {size} {}", i + 1, sha(&pattern(size, i as u8))))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn packets_at_the_boundary_and_long_data_beyond_it_round_trip() {
    let f = solo_at("boundary", 64 << 20);
    let direct_addr = SocketAddr::from(([127, 0, 0, 1], f.port));
    let direct = boundary_run(direct_addr);
    assert!(
        direct.iter().all(|o| !o.contains("error")),
        "the server takes them all: {direct:?}"
    );
    let gw = TestGateway::start(primary_only_config_for(&f));
    assert_eq!(boundary_run(gw.addr), direct);
    // 48 MiB by long data, beyond what one packet carries.
    let size = 48 << 20;
    let (outcomes, rows) = long_data_run(gw.addr, &[size]);
    assert_eq!(outcomes[0], format!("{size}: ok"));
    assert_eq!(rows, vec![format!("1 {size} {}", sha(&pattern(size, 0)))]);
}

#[test]
fn long_data_the_gateway_cannot_hold_is_refused_at_the_execute() {
    let f = crate::harness::fleet();
    let mut c = primary_only_config_for(f);
    c.frontend.max_long_data = 1 << 20;
    let gw = TestGateway::start(c);
    let mut r = Raw::login(gw.addr);
    let created = r.query(
        "CREATE OR REPLACE TABLE app.ld_refused (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB)",
    );
    assert!(matches!(created, Reply::Ok(_)), "{created:?}");
    let (id, _) = r.prepare("INSERT INTO app.ld_refused (b) VALUES (?)");
    for _ in 0..3 {
        r.send_long_data(id, 0, &vec![b'x'; 512 << 10]);
    }
    let Reply::Err(code, message) = r.execute_long(id, 1) else {
        panic!("more than the session may hold was executed");
    };
    assert_eq!(code, 1105);
    assert!(message.contains("frontend.max-long-data"), "{message}");
    // Nothing was inserted, nothing truncated; the statement and the session go on.
    r.send_long_data(id, 0, b"small");
    assert!(matches!(r.execute_long(id, 1), Reply::Ok(_)));
    // A parameter the statement does not have: the server's answer.
    r.send_long_data(id, 7, b"x");
    assert_eq!(
        r.execute_long(id, 1),
        Reply::Err(
            1210,
            "Incorrect arguments to mysqld_stmt_send_long_data".into()
        )
    );
    let rows = r.query("SELECT LENGTH(b) FROM app.ld_refused").text_rows();
    assert_eq!(rows, vec![vec![Some(b"5".to_vec())]]);
}

/// Every packet of one command's reply: result sets, OKs and EOFs until one without
/// MORE_RESULTS_EXISTS, or an ERR.
fn whole_reply(r: &mut Raw) -> Vec<Vec<u8>> {
    let status_of_ok = |p: &[u8]| {
        let mut at = 1;
        for _ in 0..2 {
            at += match p[at] {
                0xFC => 3,
                0xFD => 4,
                0xFE => 9,
                _ => 1,
            };
        }
        u16::from_le_bytes([p[at], p[at + 1]])
    };
    let mut got = Vec::new();
    loop {
        let first = r.recv_logical().expect("reply");
        got.push(first.clone());
        match first[0] {
            0xFF => return got,
            0x00 if status_of_ok(&first) & 8 == 0 => return got,
            0x00 => continue,
            _ => {}
        }
        // Column definitions and their EOF, then rows and theirs. The gateway streams rows, so
        // the metadata EOF cannot carry what the driver tells only at the end of the set
        // (NO_INDEX_USED, NO_GOOD_INDEX_USED, METADATA_CHANGED: the final EOF does): those
        // flags are left out of it here.
        let mut defs = r.until_eof();
        if let Some(eof) = defs.last_mut() {
            eof[3] &= !0x30;
            eof[4] &= !0x04;
        }
        got.extend(defs);
        got.extend(r.until_eof());
        let eof = got.last().expect("eof");
        if u16::from_le_bytes([eof[3], eof[4]]) & 8 == 0 {
            return got;
        }
    }
}

/// Prepared statements executed across changes of what they return, and text statements that
/// return several sets: every packet as the server sends it.
fn reshape_run(addr: SocketAddr) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut r = Raw::login(addr);
    let mut out = Vec::new();
    for setup in [
        "CREATE OR REPLACE PROCEDURE app.rp(IN n INT) BEGIN SELECT n AS a; END",
        "CREATE OR REPLACE TABLE app.rt (a INT)",
        "INSERT INTO app.rt VALUES (1)",
    ] {
        assert!(matches!(r.query(setup), Reply::Ok(_)), "{setup}");
    }
    let (call, _) = r.prepare("CALL app.rp(?)");
    let (select, _) = r.prepare("SELECT * FROM app.rt WHERE a > ?");
    let changes = [
        "CREATE OR REPLACE PROCEDURE app.rp(IN n INT) BEGIN SELECT 'x' AS b, 2.5 AS c, n; SELECT n + 1; SELECT 'three' AS z, NULL; END",
        "CREATE OR REPLACE PROCEDURE app.rp(IN n INT) BEGIN UPDATE app.rt SET a = a + n; END",
        "CREATE OR REPLACE PROCEDURE app.rp(IN n INT) BEGIN SELECT n, n, n, n; SELECT CAST(n AS CHAR) AS s; END",
        "ALTER TABLE app.rt ADD COLUMN b VARCHAR(10) DEFAULT 'bee', ADD COLUMN c DOUBLE DEFAULT 1.5",
        "ALTER TABLE app.rt DROP COLUMN b",
    ];
    for (i, change) in std::iter::once("").chain(changes).enumerate() {
        if !change.is_empty() {
            assert!(matches!(r.query(change), Reply::Ok(_)), "{change}");
        }
        for (name, id) in [("call", call), ("select", select)] {
            let mut e = vec![0x17];
            e.extend_from_slice(&id.to_le_bytes());
            e.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0x08, 0]);
            e.extend_from_slice(&(i as i64).to_le_bytes());
            r.send_command(&e);
            out.push((format!("{name} after change {i}"), whole_reply(&mut r)));
        }
    }
    for sql in [
        "CALL app.rp(7)",
        "SELECT 1; CALL app.rp(2); SELECT 2",
        "BEGIN NOT ATOMIC SELECT 1; SELECT 2 AS two; END",
        "SELECT 1 AS one; SELECT 2 AS two",
    ] {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        r.send_command(&p);
        out.push((sql.to_string(), whole_reply(&mut r)));
    }
    out
}

#[test]
fn results_are_what_the_server_sends_for_each_execution() {
    let f = crate::harness::fleet();
    let direct = reshape_run(SocketAddr::from(([127, 0, 0, 1], f.port)));
    // The procedure's sets, as re-defined, are there.
    assert!(
        direct
            .iter()
            .any(|(_, p)| p.iter().any(|p| p.ends_with(b"three")))
    );
    let gw = TestGateway::start(primary_only_config_for(f));
    let through = reshape_run(gw.addr);
    for ((what, want), (_, got)) in direct.iter().zip(&through) {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(through.len(), direct.len());
}
