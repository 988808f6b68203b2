//! The connection phase: the server greeting, the client's reply, SSLRequest and auth switch.

use super::buf::{DecodeError, Reader};
use super::constants::cap;

/// Initial handshake packet (protocol version 10) that the gateway sends first.
#[derive(Debug, Clone)]
pub struct Handshake<'a> {
    pub server_version: &'a str,
    pub connection_id: u32,
    /// 20 bytes of scramble.
    pub salt: &'a [u8; 20],
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: &'a str,
}

impl Handshake<'_> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(10);
        out.extend_from_slice(self.server_version.as_bytes());
        out.push(0);
        out.extend_from_slice(&self.connection_id.to_le_bytes());
        out.extend_from_slice(&self.salt[..8]);
        out.push(0);
        out.extend_from_slice(&(self.capabilities as u16).to_le_bytes());
        out.push(self.charset);
        out.extend_from_slice(&self.status.to_le_bytes());
        out.extend_from_slice(&((self.capabilities >> 16) as u16).to_le_bytes());
        out.push(21); // length of the scramble including its NUL
        out.extend_from_slice(&[0u8; 10]); // reserved (MariaDB: extended capabilities, none)
        out.extend_from_slice(&self.salt[8..]);
        out.push(0);
        out.extend_from_slice(self.auth_plugin.as_bytes());
        out.push(0);
    }
}

/// The client's HandshakeResponse41 (or, when it is only the first 32 bytes with the SSL flag,
/// an SSLRequest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// What the client answered to the greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// The client asks to switch to TLS before it says who it is.
    SslRequest {
        capabilities: u32,
        charset: u8,
    },
    Response(HandshakeResponse),
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl ClientHello {
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32("client capabilities")?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(DecodeError::Malformed("client does not speak protocol 4.1"));
        }
        let max_packet = r.u32("max packet size")?;
        let charset = r.u8("character set")?;
        r.bytes(23, "filler")?;
        if r.is_empty() && capabilities & cap::SSL != 0 {
            return Ok(Self::SslRequest {
                capabilities,
                charset,
            });
        }
        let user = string(r.nul_bytes("user name")?);
        let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?.to_vec()
        } else if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")?;
            r.bytes(usize::from(n), "auth response")?.to_vec()
        } else {
            r.nul_bytes("auth response")?.to_vec()
        };
        let database = if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(string(r.nul_or_eof_bytes())).filter(|d| !d.is_empty())
        } else {
            None
        };
        let auth_plugin = if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(string(r.nul_or_eof_bytes()))
        } else {
            None
        };
        let attributes = if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            decode_attributes(&mut r)?
        } else {
            Vec::new()
        };
        Ok(Self::Response(HandshakeResponse {
            capabilities,
            max_packet,
            charset,
            user,
            auth_response,
            database,
            auth_plugin,
            attributes,
        }))
    }
}

/// Connection attributes: a length-encoded block of length-encoded key/value pairs.
pub fn decode_attributes(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let block = r.lenenc_bytes("connection attributes")?;
    let mut a = Reader::new(block);
    let mut out = Vec::new();
    while !a.is_empty() {
        let k = string(a.lenenc_bytes("attribute name")?);
        let v = string(a.lenenc_bytes("attribute value")?);
        out.push((k, v));
    }
    Ok(out)
}

/// Asks the client to authenticate again with another plugin and a fresh scramble.
pub fn encode_auth_switch(out: &mut Vec<u8>, plugin: &str, salt: &[u8; 20]) {
    out.push(0xFE);
    out.extend_from_slice(plugin.as_bytes());
    out.push(0);
    out.extend_from_slice(salt);
    out.push(0);
}

/// Extra data during authentication (caching_sha2_password's fast/full auth markers).
pub fn encode_auth_more_data(out: &mut Vec<u8>, data: &[u8]) {
    out.push(0x01);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::buf::put_lenenc_bytes;

    fn response_bytes(caps: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&caps.to_le_bytes());
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"app\0");
        put_lenenc_bytes(&mut p, &[1; 20]);
        p.extend_from_slice(b"appdb\0mysql_native_password\0");
        let mut attrs = Vec::new();
        put_lenenc_bytes(&mut attrs, b"_client_name");
        put_lenenc_bytes(&mut attrs, b"test");
        put_lenenc_bytes(&mut p, &attrs);
        p
    }

    #[test]
    fn decodes_a_full_response() {
        let caps = cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | cap::CONNECT_WITH_DB
            | cap::CONNECT_ATTRS;
        let ClientHello::Response(r) = ClientHello::decode(&response_bytes(caps)).expect("decode")
        else {
            panic!("expected a response");
        };
        assert_eq!(r.user, "app");
        assert_eq!(r.database.as_deref(), Some("appdb"));
        assert_eq!(r.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(r.attributes, vec![("_client_name".into(), "test".into())]);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_valid_response() {
        let caps = cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let full = response_bytes(caps | cap::CONNECT_ATTRS | cap::CONNECT_WITH_DB);
        for n in 0..full.len() {
            let _ = ClientHello::decode(&full[..n]);
        }
        assert!(ClientHello::decode(&full[..10]).is_err());
    }

    #[test]
    fn ssl_request_is_recognised() {
        let mut p = Vec::new();
        p.extend_from_slice(&(cap::PROTOCOL_41 | cap::SSL).to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        p.push(33);
        p.extend_from_slice(&[0; 23]);
        assert!(matches!(
            ClientHello::decode(&p),
            Ok(ClientHello::SslRequest { charset: 33, .. })
        ));
    }
}
