//! Bad input: truncated, oversized, out-of-order and garbage packets, unknown commands. The
//! gateway answers with a proper ERR where the protocol allows, closes cleanly where it does not,
//! and keeps serving everyone else. A raw client speaks the bytes.

use std::io::Write;
use std::net::SocketAddr;

use crate::harness::{TestGateway, cli, primary_only_config};
use crate::raw::{Raw, err_code};

fn still_serving(addr: SocketAddr) {
    let (ok, out, err) = cli(addr, "app", "app-secret", &[], "SELECT 'alive'");
    assert!(ok && out == "alive", "gateway stopped serving: {err}");
}

fn small_packet_config() -> sluice::config::Config {
    let mut c = primary_only_config();
    c.frontend.max_allowed_packet = 1 << 20;
    c
}

#[test]
fn malformed_handshakes_get_an_error_or_a_clean_close() {
    let gw = TestGateway::start(small_packet_config());
    // Truncated HandshakeResponse.
    let mut r = Raw::connect(gw.addr);
    r.greeting();
    r.send(1, &[0x00, 0x02, 0, 0, 1, 2]);
    let reply = r.recv().expect("an ERR");
    assert_eq!(err_code(&reply), Some(1835), "{reply:?}");
    assert!(r.closed());
    // Garbage that claims protocol 4.1 but has no user name terminator.
    let mut r = Raw::connect(gw.addr);
    r.greeting();
    let mut junk = vec![0x00, 0x02, 0x00, 0x00];
    junk.extend(std::iter::repeat_n(0x41u8, 60));
    r.send(1, &junk);
    assert_eq!(r.recv().as_deref().and_then(err_code), Some(1835));
    // A header that promises more than is sent, then hang up.
    let mut r = Raw::connect(gw.addr);
    r.greeting();
    r.s.write_all(&[0xE8, 0x03, 0x00, 0x01, 1, 2, 3])
        .expect("write");
    drop(r);
    // Out-of-order sequence id in the handshake.
    let mut r = Raw::connect(gw.addr);
    r.greeting();
    r.send(7, &[0; 40]);
    assert_eq!(
        r.recv().as_deref().and_then(err_code),
        None,
        "the handshake has no ERR for this; the gateway closes"
    );
    still_serving(gw.addr);
}

#[test]
fn bad_commands_get_errors_and_the_session_goes_on() {
    let gw = TestGateway::start(small_packet_config());
    let mut r = Raw::login(gw.addr);
    // Unknown command.
    assert_eq!(r.command(&[0x30]).as_deref().and_then(err_code), Some(1047));
    // Empty command packet.
    assert_eq!(r.command(&[]).as_deref().and_then(err_code), Some(1835));
    // Truncated COM_STMT_EXECUTE and COM_STMT_CLOSE.
    assert_eq!(
        r.command(&[0x17, 1]).as_deref().and_then(err_code),
        Some(1835)
    );
    // Unknown statement id.
    assert_eq!(
        r.command(&[0x17, 9, 0, 0, 0, 0, 1, 0, 0, 0])
            .as_deref()
            .and_then(err_code),
        Some(1243)
    );
    // COM_PING still answers OK.
    assert_eq!(r.command(&[0x0e]).expect("ping")[0], 0x00);
    // COM_STATISTICS: a bare string.
    let stats = r.command(&[0x09]).expect("statistics");
    assert!(
        stats.starts_with(b"Uptime: "),
        "{}",
        String::from_utf8_lossy(&stats)
    );
    // COM_SET_OPTION: EOF.
    assert_eq!(r.command(&[0x1b, 1, 0]).expect("set option")[0], 0xFE);
    // Multi-statements now off: a multi-statement query is refused with a syntax error.
    assert_eq!(
        r.command(b"\x03SELECT 1; SELECT 2")
            .as_deref()
            .and_then(err_code),
        Some(1064)
    );
    // ... but one compound statement with `;` in its body is one statement, as the server reads
    // it (a procedure's definition), and runs.
    let create = r
        .command(b"\x03CREATE OR REPLACE PROCEDURE app.bi_p() BEGIN SELECT 1; SELECT 2; END")
        .expect("create procedure");
    assert_eq!(create[0], 0x00, "{}", String::from_utf8_lossy(&create));
    // COM_INIT_DB to a database that does not exist: the server's error.
    let e = r.command(b"\x02no_such_db_here").expect("init db");
    assert!(matches!(err_code(&e), Some(1044 | 1049)), "{e:?}");
    // COM_FIELD_LIST: column definitions, then EOF.
    crate::harness::fleet().sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.fl_t (a INT, b VARCHAR(3))",
    );
    let mut field_list = |wildcard: &[u8]| {
        let mut columns = 0;
        r.send(0, &[b"\x04fl_t\0".as_slice(), wildcard].concat());
        loop {
            let p = r.recv().expect("field list");
            if p[0] == 0xFE && p.len() < 9 {
                break;
            }
            assert_ne!(
                p[0],
                0xFF,
                "field list failed: {}",
                String::from_utf8_lossy(&p)
            );
            columns += 1;
        }
        columns
    };
    assert_eq!(field_list(b""), 2);
    // The wildcard is a LIKE pattern, as the server reads it.
    assert_eq!(field_list(b"b%"), 1);
    assert_eq!(field_list(b"B"), 1);
    assert_eq!(field_list(b"_"), 2);
    assert_eq!(field_list(b"x%"), 0);
    // A query still works.
    let reply = r.command(b"\x03SELECT 1").expect("query");
    assert_eq!(reply, vec![1], "column count packet");
    still_serving(gw.addr);
}

#[test]
fn oversized_and_out_of_order_commands_close_cleanly() {
    let gw = TestGateway::start(small_packet_config());
    let mut r = Raw::login(gw.addr);
    let mut big = vec![0x03];
    big.extend(std::iter::repeat_n(b' ', 2 << 20));
    r.send(0, &big);
    let reply = r.recv().expect("ERR before close");
    assert_eq!(
        err_code(&reply),
        Some(1153),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(r.closed());

    let mut r = Raw::login(gw.addr);
    r.send(3, b"\x03SELECT 1");
    let reply = r.recv().expect("ERR before close");
    assert_eq!(err_code(&reply), Some(1835));
    assert!(r.closed());
    still_serving(gw.addr);
}

#[test]
fn random_garbage_never_takes_the_gateway_down() {
    let gw = TestGateway::start(small_packet_config());
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let mut r = if round % 2 == 0 {
            Raw::login(gw.addr)
        } else {
            Raw::connect(gw.addr)
        };
        if round % 2 == 1 {
            r.greeting();
        }
        let mut len = (next() % 200) as usize;
        if len == 32 {
            len = 33; // exactly 32 bytes with the SSL flag would be an SSLRequest awaiting TLS
        }
        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let seq = u8::from(round % 2 != 0);
        r.send(seq, &payload);
        // STMT_CLOSE and SEND_LONG_DATA have no reply; anything else gets one or a close.
        let silent = round % 2 == 0 && matches!(payload.first(), Some(0x18 | 0x19));
        if !silent {
            let _ = r.recv();
        }
    }
    still_serving(gw.addr);
}

#[test]
fn long_data_reset_and_close_of_prepared_statements() {
    let gw = TestGateway::start(small_packet_config());
    let mut r = Raw::login(gw.addr);
    let ok = r.command(b"\x16SELECT CONCAT(?, '!')").expect("prepare ok");
    assert_eq!(ok[0], 0x00, "{}", String::from_utf8_lossy(&ok));
    let id = [ok[1], ok[2], ok[3], ok[4]];
    assert_eq!(u16::from_le_bytes([ok[5], ok[6]]), 1, "one column");
    assert_eq!(u16::from_le_bytes([ok[7], ok[8]]), 1, "one parameter");
    r.until_eof(); // parameter definitions
    r.until_eof(); // column definitions
    // Two pieces of long data for parameter 0: no reply.
    for piece in [&b"abc"[..], &b"def"[..]] {
        let mut p = vec![0x18];
        p.extend_from_slice(&id);
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend_from_slice(piece);
        r.send(0, &p);
    }
    let execute = |r: &mut Raw| {
        let mut p = vec![0x17];
        p.extend_from_slice(&id);
        p.extend_from_slice(&[0, 1, 0, 0, 0]); // flags, iterations
        p.push(0); // NULL bitmap
        p.extend_from_slice(&[1, 0xfd, 0]); // new types: VAR_STRING
        r.send(0, &p);
        let count = r.recv().expect("column count");
        assert_eq!(count, vec![1], "{}", String::from_utf8_lossy(&count));
        r.until_eof();
        let rows = r.until_eof();
        rows[0].clone()
    };
    let row = execute(&mut r);
    assert_eq!(&row[..3], &[0x00, 0x00, 7]);
    assert_eq!(&row[3..], b"abcdef!");
    // The long data was consumed by the execute; after STMT_RESET it stays empty: the value is
    // absent from the packet, so the server sees what the gateway sends for a missing value.
    let mut reset = vec![0x1a];
    reset.extend_from_slice(&id);
    assert_eq!(r.command(&reset).expect("reset ok")[0], 0x00);
    // Close: no reply; a later execute names an unknown statement.
    let mut close = vec![0x19];
    close.extend_from_slice(&id);
    r.send(0, &close);
    let mut p = vec![0x17];
    p.extend_from_slice(&id);
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0xfd, 0, 1, b'x']);
    assert_eq!(r.command(&p).as_deref().and_then(err_code), Some(1243));
    assert_eq!(r.command(&[0x0e]).expect("ping")[0], 0x00);
}
