//! Generic replies: OK, ERR and EOF.

use super::buf::{put_lenenc_bytes, put_lenenc_int};

/// An OK packet. With `eof_header` it is the OK that ends a result set under DEPRECATE_EOF.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket<'a> {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: &'a [u8],
}

impl OkPacket<'_> {
    pub fn encode(&self, out: &mut Vec<u8>, eof_header: bool) {
        out.push(if eof_header { 0xFE } else { 0x00 });
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&self.warnings.to_le_bytes());
        if !self.info.is_empty() {
            // Length-encoded, as MariaDB sends it (libmariadb always reads it so; the gateway
            // offers CLIENT_SESSION_TRACK so every client agrees, and never sends state changes).
            put_lenenc_bytes(out, self.info);
        }
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    pub code: u16,
    pub sqlstate: &'a str,
    pub message: &'a str,
}

impl ErrPacket<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(0xFF);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        let state = self.sqlstate.as_bytes();
        let mut s = [b'H', b'Y', b'0', b'0', b'0'];
        if state.len() == 5 {
            s.copy_from_slice(state);
        }
        out.extend_from_slice(&s);
        out.extend_from_slice(self.message.as_bytes());
    }
}

/// A classic EOF packet (clients without DEPRECATE_EOF).
pub fn encode_eof(out: &mut Vec<u8>, warnings: u16, status: u16) {
    out.push(0xFE);
    out.extend_from_slice(&warnings.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn err_packet_layout() {
        let mut out = Vec::new();
        ErrPacket {
            code: 1045,
            sqlstate: "28000",
            message: "denied",
        }
        .encode(&mut out);
        assert_eq!(out, b"\xFF\x15\x04#28000denied");
        let mut out = Vec::new();
        ErrPacket {
            code: 1105,
            sqlstate: "bad",
            message: "x",
        }
        .encode(&mut out);
        assert_eq!(&out[3..9], b"#HY000");
    }

    #[test]
    fn ok_packet_layout() {
        let mut out = Vec::new();
        OkPacket {
            affected_rows: 3,
            last_insert_id: 300,
            status: 2,
            warnings: 1,
            info: b"hi",
        }
        .encode(&mut out, false);
        assert_eq!(out, b"\x00\x03\xFC\x2C\x01\x02\x00\x01\x00\x02hi");
    }
}
