//! Client commands: the first packet of every exchange after the handshake.

use bytes::Bytes;

use super::buf::{DecodeError, Reader};
use super::constants::com;
use super::handshake::decode_attributes;

/// COM_CHANGE_USER's body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    pub user: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub charset: Option<u16>,
    pub auth_plugin: Option<String>,
    pub attributes: Vec<(String, String)>,
}

/// A decoded client command. Payloads that the session forwards (SQL, execute parameters) are
/// zero-copy slices of the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    InitDb(String),
    Query(Bytes),
    FieldList {
        table: String,
        wildcard: String,
    },
    Statistics,
    Ping,
    ChangeUser(ChangeUser),
    StmtPrepare(Bytes),
    /// Statement id and the rest of the packet (flags, iterations, parameters), decoded later
    /// against the statement's parameter count.
    StmtExecute {
        id: u32,
        body: Bytes,
    },
    StmtSendLongData {
        id: u32,
        param: u16,
        data: Bytes,
    },
    StmtClose(u32),
    StmtReset(u32),
    SetOption(u16),
    ResetConnection,
    /// A command the gateway does not implement; answered with ERR 1047.
    Unknown(u8),
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Command {
    /// Decodes a command packet. `secure_connection` and `plugin_auth` are the client's
    /// capabilities that shape COM_CHANGE_USER.
    pub fn decode(packet: &Bytes, client_caps: u32) -> Result<Self, DecodeError> {
        let Some(&code) = packet.first() else {
            return Err(DecodeError::Truncated("command byte"));
        };
        let body = packet.slice(1..);
        let mut r = Reader::new(&body);
        Ok(match code {
            com::QUIT => Self::Quit,
            com::INIT_DB => Self::InitDb(string(r.rest())),
            com::QUERY => Self::Query(body),
            com::FIELD_LIST => {
                let table = string(r.nul_or_eof_bytes());
                Self::FieldList {
                    table,
                    wildcard: string(r.rest()),
                }
            }
            com::STATISTICS => Self::Statistics,
            com::PING => Self::Ping,
            com::CHANGE_USER => Self::ChangeUser(decode_change_user(&mut r, client_caps)?),
            com::STMT_PREPARE => Self::StmtPrepare(body),
            com::STMT_EXECUTE => {
                let id = r.u32("statement id")?;
                Self::StmtExecute {
                    id,
                    body: body.slice(4..),
                }
            }
            com::STMT_SEND_LONG_DATA => {
                let id = r.u32("statement id")?;
                let param = r.u16("parameter index")?;
                Self::StmtSendLongData {
                    id,
                    param,
                    data: body.slice(6..),
                }
            }
            com::STMT_CLOSE => Self::StmtClose(r.u32("statement id")?),
            com::STMT_RESET => Self::StmtReset(r.u32("statement id")?),
            com::SET_OPTION => Self::SetOption(r.u16("option")?),
            com::RESET_CONNECTION => Self::ResetConnection,
            other => Self::Unknown(other),
        })
    }
}

fn decode_change_user(r: &mut Reader<'_>, caps: u32) -> Result<ChangeUser, DecodeError> {
    use super::constants::cap;
    let user = string(r.nul_bytes("user name")?);
    let auth_response = if caps & cap::SECURE_CONNECTION != 0 {
        let n = r.u8("auth response length")?;
        r.bytes(usize::from(n), "auth response")?.to_vec()
    } else {
        r.nul_bytes("auth response")?.to_vec()
    };
    let database = Some(string(r.nul_or_eof_bytes())).filter(|d| !d.is_empty());
    let mut out = ChangeUser {
        user,
        auth_response,
        database,
        ..ChangeUser::default()
    };
    if r.remaining() >= 2 {
        out.charset = Some(r.u16("character set")?);
    }
    if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
        out.auth_plugin = Some(string(r.nul_or_eof_bytes()));
    }
    if caps & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
        out.attributes = decode_attributes(r)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_simple_commands() {
        let caps = 0;
        assert_eq!(
            Command::decode(&Bytes::from_static(b"\x03SELECT 1"), caps),
            Ok(Command::Query(Bytes::from_static(b"SELECT 1")))
        );
        assert_eq!(
            Command::decode(&Bytes::from_static(b"\x19\x01\x00\x00\x00"), caps),
            Ok(Command::StmtClose(1))
        );
        assert_eq!(
            Command::decode(&Bytes::from_static(b"\xEE"), caps),
            Ok(Command::Unknown(0xEE))
        );
        assert!(Command::decode(&Bytes::from_static(b""), caps).is_err());
        assert!(Command::decode(&Bytes::from_static(b"\x17\x01"), caps).is_err());
    }
}
