//! A MySQL client at the byte level, for what the drivers cannot be made to send: malformed
//! packets, long data in chosen chunks, packets at the 0xFFFFFF boundary. The same client talks
//! to the gateway and directly to a server, so a test can compare the two.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mysql_common::scramble::scramble_native;
use sluice::protocol::buf::{Reader, put_lenenc_int};

/// The largest payload of one packet; a logical packet this long or longer continues.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Capabilities the raw client offers: 4.1 protocol, secure connection, plugin auth, multi
/// statements, multi results, PS multi results.
const BASE_CAPS: u32 =
    0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0001_0000 | 0x0002_0000 | 0x0004_0000;
/// CLIENT_CONNECT_WITH_DB.
const WITH_DB: u32 = 0x8;
/// CLIENT_LOCAL_FILES.
pub const LOCAL_FILES: u32 = 0x80;

pub struct Raw {
    pub s: TcpStream,
    seq: u8,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        // A safety net against a hang, not an assertion about speed.
        s.set_read_timeout(Some(Duration::from_mins(1)))
            .expect("timeout");
        Self { s, seq: 0 }
    }

    /// Sends one physical packet with sequence id `seq`.
    pub fn send(&mut self, seq: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        let mut p = vec![len[0], len[1], len[2], seq];
        p.extend_from_slice(payload);
        self.s.write_all(&p).expect("write");
        self.seq = seq.wrapping_add(1);
    }

    /// Sends a logical packet, split at 0xFFFFFF as the protocol says (a payload of exactly a
    /// multiple of 0xFFFFFF ends with an empty packet), continuing the current sequence.
    pub fn send_logical(&mut self, payload: &[u8]) {
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PAYLOAD);
            let seq = self.seq;
            self.send(seq, &rest[..n]);
            rest = &rest[n..];
            if n < MAX_PAYLOAD {
                return;
            }
        }
    }

    /// Starts a command: the sequence restarts at 0.
    pub fn send_command(&mut self, payload: &[u8]) {
        self.seq = 0;
        self.send_logical(payload);
    }

    /// The next physical packet, or `None` once the peer closed the connection.
    pub fn recv(&mut self) -> Option<Vec<u8>> {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).ok()?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        self.seq = h[3].wrapping_add(1);
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).ok()?;
        Some(p)
    }

    /// The next logical packet (continuation packets joined).
    pub fn recv_logical(&mut self) -> Option<Vec<u8>> {
        let mut out = self.recv()?;
        let mut last = out.len();
        while last == MAX_PAYLOAD {
            let more = self.recv()?;
            last = more.len();
            out.extend_from_slice(&more);
        }
        Some(out)
    }

    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }

    /// Reads the greeting and returns the 20-byte salt.
    pub fn greeting(&mut self) -> Vec<u8> {
        let g = self.recv().expect("greeting");
        assert_eq!(g[0], 10);
        let nul = g.iter().position(|&b| b == 0).expect("version end");
        let mut salt = g[nul + 5..nul + 13].to_vec();
        let rest = &g[nul + 13 + 1 + 2 + 1 + 2 + 2 + 1 + 10..];
        salt.extend_from_slice(&rest[..12]);
        salt
    }

    /// Logs in as app to database app with mysql_native_password.
    pub fn login(addr: SocketAddr) -> Self {
        Self::login_as(addr, "app", "app-secret", Some("app"), 0)
    }

    /// Logs in with mysql_native_password, offering `extra_caps` beside the base set.
    pub fn login_as(
        addr: SocketAddr,
        user: &str,
        pass: &str,
        db: Option<&str>,
        extra_caps: u32,
    ) -> Self {
        let mut r = Self::connect(addr);
        let salt = r.greeting();
        let caps = BASE_CAPS | extra_caps | if db.is_some() { WITH_DB } else { 0 };
        let mut p = Vec::new();
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(1u32 << 30).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let auth = scramble_native(&salt, pass.as_bytes()).expect("scramble");
        p.push(20);
        p.extend_from_slice(&auth);
        if let Some(db) = db {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(b"mysql_native_password\0");
        r.send(1, &p);
        let ok = r.recv().expect("auth reply");
        assert_eq!(ok[0], 0, "login failed: {}", String::from_utf8_lossy(&ok));
        r
    }

    /// Sends a command and returns the first packet of its reply.
    pub fn command(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.send_command(payload);
        self.recv_logical()
    }

    /// COM_QUERY; the whole reply.
    pub fn query(&mut self, sql: &str) -> Reply {
        let mut p = vec![0x03];
        p.extend_from_slice(sql.as_bytes());
        self.send_command(&p);
        self.reply()
    }

    /// COM_STMT_PREPARE; the statement id and its parameter count.
    pub fn prepare(&mut self, sql: &str) -> (u32, usize) {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        let ok = self.command(&p).expect("prepare reply");
        assert_eq!(ok[0], 0x00, "prepare: {}", String::from_utf8_lossy(&ok));
        let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
        let columns = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        for n in [params, columns] {
            if n > 0 {
                self.until_eof();
            }
        }
        (id, usize::from(params))
    }

    /// COM_STMT_SEND_LONG_DATA: no reply.
    pub fn send_long_data(&mut self, id: u32, param: u16, data: &[u8]) {
        let mut p = Vec::with_capacity(7 + data.len());
        p.push(0x18);
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&param.to_le_bytes());
        p.extend_from_slice(data);
        self.send_command(&p);
    }

    /// COM_STMT_EXECUTE binding every parameter as a BLOB whose value came as long data.
    pub fn execute_long(&mut self, id: u32, params: usize) -> Reply {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0]);
        p.extend(std::iter::repeat_n(0u8, params.div_ceil(8)));
        p.push(1);
        for _ in 0..params {
            p.extend_from_slice(&[0xfc, 0]);
        }
        self.send_command(&p);
        self.reply()
    }

    /// COM_STMT_EXECUTE with one VAR_STRING parameter sent inline.
    pub fn execute_inline(&mut self, id: u32, value: &[u8]) -> Reply {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0xfd, 0]);
        put_lenenc_int(&mut p, value.len() as u64);
        p.extend_from_slice(value);
        self.send_command(&p);
        self.reply()
    }

    /// Reads packets up to and including an EOF (0xFE, short).
    pub fn until_eof(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let p = self.recv_logical().expect("packet");
            let eof = p.first() == Some(&0xFE) && p.len() < 9;
            out.push(p);
            if eof {
                return out;
            }
        }
    }

    /// One command's reply: OK, ERR, or a result set (column count, definitions, rows).
    pub fn reply(&mut self) -> Reply {
        let first = self.recv_logical().expect("reply");
        match first.first() {
            Some(0x00) => Reply::Ok(first),
            Some(0xFF) => Reply::Err(
                u16::from_le_bytes([first[1], first[2]]),
                String::from_utf8_lossy(&first[9.min(first.len())..]).into_owned(),
            ),
            _ => {
                self.until_eof();
                let mut rows = self.until_eof();
                rows.pop();
                Reply::Rows(rows)
            }
        }
    }
}

/// What a command answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(Vec<u8>),
    Err(u16, String),
    Rows(Vec<Vec<u8>>),
}

impl Reply {
    /// The rows as text-protocol values (one `Vec` of columns per row).
    pub fn text_rows(&self) -> Vec<Vec<Option<Vec<u8>>>> {
        let Reply::Rows(rows) = self else {
            panic!("expected rows, got {self:?}");
        };
        rows.iter()
            .map(|row| {
                let mut r = &row[..];
                let mut cols = Vec::new();
                while !r.is_empty() {
                    if r[0] == 0xFB {
                        cols.push(None);
                        r = &r[1..];
                    } else {
                        let (len, n) = lenenc(r);
                        cols.push(Some(r[n..n + len].to_vec()));
                        r = &r[n + len..];
                    }
                }
                cols
            })
            .collect()
    }
}

pub fn err_code(p: &[u8]) -> Option<u16> {
    (p.first() == Some(&0xFF)).then(|| u16::from_le_bytes([p[1], p[2]]))
}

/// The value of a length-encoded string at the start of `r`.
pub fn lenenc_value(r: &[u8]) -> &[u8] {
    let (len, n) = lenenc(r);
    &r[n..n + len]
}

/// A length-encoded integer: its value and how many bytes it took.
fn lenenc(r: &[u8]) -> (usize, usize) {
    let mut reader = Reader::new(r);
    let n = reader
        .lenenc_int("length")
        .expect("a length-encoded integer");
    (n as usize, r.len() - reader.remaining())
}
