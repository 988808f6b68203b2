//! The connection phase: greeting, optional TLS upgrade, and authentication of the client
//! against the password its credential resolver gave (`mysql_native_password`,
//! `caching_sha2_password` fast and full auth, auth switch).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::io::ClientIo;
use crate::auth;
use crate::config::AuthPlugin;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::phase::{ClientIdentity, Grant};
use crate::protocol::constants::{cap, status};
use crate::protocol::handshake::{
    ClientHello, Handshake, HandshakeResponse, encode_auth_more_data, encode_auth_switch,
};
use crate::protocol::reply::ErrPacket;
use crate::protocol::{PacketError, PacketStream};

/// Capabilities the gateway offers (SSL is added when TLS is configured).
pub const SERVER_CAPABILITIES: u32 = cap::FOUND_ROWS
    | cap::LONG_FLAG
    | cap::CONNECT_WITH_DB
    | cap::ODBC
    | cap::IGNORE_SPACE
    | cap::PROTOCOL_41
    | cap::INTERACTIVE
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::CONNECT_ATTRS
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::SESSION_TRACK
    | cap::DEPRECATE_EOF
    | cap::COMPRESS
    | cap::LOCAL_FILES;

/// An authenticated client, ready for its first command (the final OK is not sent yet: the
/// session sends it once the requested database is confirmed).
pub struct Authenticated {
    pub stream: PacketStream<ClientIo>,
    pub hello: HandshakeResponse,
    pub capabilities: u32,
    pub grant: Grant,
    pub tls: bool,
    pub peer: SocketAddr,
    /// The greeting's scramble: COM_CHANGE_USER proves the password against it again, as the
    /// server does (clients scramble with it; an auth switch there trips some, Connector/C).
    pub salt: [u8; 20],
}

/// Why the connection phase ended without a session.
#[derive(Debug)]
pub enum ConnectError {
    /// The client was told (ERR sent) or hung up.
    Refused(GatewayError),
    Io(PacketError),
}

impl From<PacketError> for ConnectError {
    fn from(e: PacketError) -> Self {
        Self::Io(e)
    }
}

/// Sends an ERR in the connection phase and returns the error.
pub async fn refuse(stream: &mut PacketStream<ClientIo>, e: GatewayError) -> ConnectError {
    let (code, state) = e.code_and_state();
    let message = e.to_string();
    let (mark, buf) = stream.begin();
    ErrPacket {
        code,
        sqlstate: state,
        message: &message,
    }
    .encode(buf);
    stream.finish(mark);
    let _ = stream.flush().await;
    ConnectError::Refused(e)
}

/// Runs the whole connection phase on a new client.
pub async fn connection_phase(
    tcp: TcpStream,
    peer: SocketAddr,
    gw: &Gateway,
    connection_id: u32,
    tls: Option<&TlsAcceptor>,
) -> Result<Authenticated, ConnectError> {
    let max_packet = gw.config().frontend.max_allowed_packet;
    let mut stream = PacketStream::new(ClientIo::Plain(tcp), max_packet);
    let salt = auth::new_salt();
    let mut server_caps = SERVER_CAPABILITIES;
    if tls.is_some() {
        server_caps |= cap::SSL;
    }
    let version = format!("5.5.5-{}", gw.server_version());
    let (mark, buf) = stream.begin();
    Handshake {
        server_version: &version,
        connection_id,
        salt: &salt,
        capabilities: server_caps,
        charset: 45,
        status: status::AUTOCOMMIT,
        auth_plugin: AuthPlugin::MysqlNativePassword.name(),
    }
    .encode(buf);
    stream.finish(mark);
    stream.flush().await?;

    if let ClientIo::Plain(tcp) = stream.io() {
        // A PROXY header where none is expected: someone claims to speak for another address.
        let mut start = [0u8; 5];
        if let Ok(n) = tcp.peek(&mut start).await
            && super::proxy::looks_like_header(&start[..n])
        {
            let e = GatewayError::ProxyHeader(format!(
                "a PROXY protocol header from {peer}, which is not in frontend.proxy-protocol.trusted"
            ));
            return Err(refuse(&mut stream, e).await);
        }
    }
    let first = stream.read_packet().await?;
    let hello = match ClientHello::decode(&first) {
        Ok(h) => h,
        Err(e) => return Err(refuse(&mut stream, e.into()).await),
    };
    let hello = match (hello, tls) {
        (ClientHello::SslRequest { .. }, Some(acceptor)) => {
            let seq = stream.seq();
            let (io, read_ahead) = stream.into_parts();
            let ClientIo::Plain(tcp) = io else {
                return Err(ConnectError::Refused(GatewayError::Internal(
                    "TLS requested twice".into(),
                )));
            };
            let tls_stream = acceptor
                .accept(super::io::Prefixed::new(read_ahead, tcp))
                .await
                .map_err(|e| ConnectError::Io(PacketError::Io(e)))?;
            stream = PacketStream::from_parts(
                ClientIo::Tls(Box::new(tls_stream)),
                bytes::BytesMut::new(),
                seq,
                max_packet,
            );
            let again = stream.read_packet().await?;
            match ClientHello::decode(&again) {
                Ok(ClientHello::Response(r)) => r,
                Ok(ClientHello::SslRequest { .. }) => {
                    return Err(refuse(
                        &mut stream,
                        GatewayError::Malformed(crate::protocol::DecodeError::Malformed(
                            "second SSLRequest",
                        )),
                    )
                    .await);
                }
                Err(e) => return Err(refuse(&mut stream, e.into()).await),
            }
        }
        (ClientHello::SslRequest { .. }, None) => {
            return Err(refuse(
                &mut stream,
                GatewayError::Unsupported("TLS: no certificate is configured".into()),
            )
            .await);
        }
        (ClientHello::Response(r), _) => r,
    };
    let is_tls = stream.io().is_tls();
    if gw.config().frontend.tls.require && !is_tls {
        return Err(refuse(
            &mut stream,
            GatewayError::TlsRequired {
                user: hello.user.clone(),
            },
        )
        .await);
    }
    let capabilities = hello.capabilities & (server_caps | cap::LONG_PASSWORD);
    let identity = ClientIdentity {
        user: hello.user.clone(),
        client_addr: peer.ip().to_string(),
        database: hello.database.clone(),
        tls: is_tls,
        attributes: hello.attributes.clone(),
    };
    let grant = authenticate(&mut stream, gw, &identity, &hello, &salt, is_tls).await?;
    Ok(Authenticated {
        stream,
        hello,
        capabilities,
        grant,
        tls: is_tls,
        peer,
        salt,
    })
}

/// Proves the client knows the password; `client_plugin` and `response` are what it sent first.
pub async fn authenticate(
    stream: &mut PacketStream<ClientIo>,
    gw: &Gateway,
    identity: &ClientIdentity,
    hello: &HandshakeResponse,
    salt: &[u8; 20],
    tls: bool,
) -> Result<Grant, ConnectError> {
    let denied = |using_password: bool| GatewayError::AccessDenied {
        user: identity.user.clone(),
        host: identity.client_addr.clone(),
        using_password,
    };
    let mut response = hello.auth_response.clone();
    let Some(grant) = gw.policy().resolve_credentials(identity) else {
        return Err(refuse(stream, denied(!response.is_empty())).await);
    };
    let plugin = grant.auth_plugin;
    let client_plugin = hello
        .auth_plugin
        .as_deref()
        .unwrap_or("mysql_native_password");
    if client_plugin != plugin.name() {
        if hello.capabilities & cap::PLUGIN_AUTH == 0 {
            return Err(refuse(
                stream,
                GatewayError::Unsupported(format!(
                    "clients without plugin auth for {}",
                    plugin.name()
                )),
            )
            .await);
        }
        let (mark, buf) = stream.begin();
        encode_auth_switch(buf, plugin.name(), salt);
        stream.finish(mark);
        stream.flush().await?;
        response = stream.read_packet().await?.to_vec();
    }
    let ok = match plugin {
        AuthPlugin::MysqlNativePassword => auth::verify_native(salt, &response, &grant.password),
        AuthPlugin::CachingSha2Password => {
            if gw.sha2_cached(&identity.user) {
                let ok = auth::verify_sha2(salt, &response, &grant.password);
                if ok {
                    let (mark, buf) = stream.begin();
                    encode_auth_more_data(buf, &[0x03]);
                    stream.finish(mark);
                }
                ok
            } else if !tls {
                return Err(refuse(
                    stream,
                    GatewayError::FullAuthNeedsTls {
                        user: identity.user.clone(),
                    },
                )
                .await);
            } else {
                let (mark, buf) = stream.begin();
                encode_auth_more_data(buf, &[0x04]);
                stream.finish(mark);
                stream.flush().await?;
                let cleartext = stream.read_packet().await?;
                let ok = auth::verify_cleartext(&cleartext, &grant.password);
                if ok {
                    gw.sha2_remember(&identity.user);
                }
                ok
            }
        }
    };
    if !ok {
        return Err(refuse(stream, denied(!response.is_empty())).await);
    }
    Ok(grant)
}
