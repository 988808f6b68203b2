//! The listener: accepts clients, enforces the connection cap and the handshake timeout, runs
//! the connection phase and hands each client to its session task. On shutdown it stops
//! accepting and gives sessions the drain time to finish their statement in flight.

pub mod connect;
pub mod io;
pub mod proxy;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::protocol::PacketStream;
use crate::protocol::reply::ErrPacket;
use crate::session::Session;
use crate::telemetry::metrics::Refusal;
use connect::{ConnectError, connection_phase};

/// Counts clients from accept to disconnect (the cap applies before authentication too).
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts clients until shutdown, then drains.
pub async fn run(listener: TcpListener, gw: Arc<Gateway>) {
    let clients = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    let mut shutdown = gw.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let n = clients.fetch_add(1, Ordering::Relaxed) + 1;
                let slot = ClientSlot(Arc::clone(&clients));
                let gw = Arc::clone(&gw);
                // The acceptor in force now: a rotated certificate serves the clients after it.
                let tls = gw.tls();
                tasks.spawn(async move {
                    let _slot = slot;
                    if n > gw.config().frontend.max_connections {
                        gw.telemetry.login_refused(
                            Refusal::TooMany,
                            None,
                            None,
                            peer,
                            "Too many connections (frontend.max-connections)",
                        );
                        err_first(
                            tcp,
                            gw.config().frontend.max_allowed_packet,
                            &GatewayError::TooManyConnections,
                        )
                        .await;
                        return;
                    }
                    handle_client(tcp, peer, gw, tls).await;
                });
                while tasks.try_join_next().is_some() {}
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = Duration::from_secs(gw.config().frontend.drain_timeout_secs);
    tracing::info!(
        sessions = tasks.len(),
        drain_secs = drain.as_secs(),
        "draining"
    );
    if tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "drain time over; closing remaining sessions"
        );
        tasks.abort_all();
    }
    // The fleet's backends and those a reload removed that still hold connections.
    for b in gw.all_backends() {
        b.disconnect().await;
    }
}

/// `e` as the connection's first packet, then close (the connection cap's 1040, as MySQL does;
/// a bad PROXY header).
async fn err_first(tcp: TcpStream, max_packet: usize, e: &GatewayError) {
    let mut stream = PacketStream::new(tcp, max_packet);
    let (code, state) = e.code_and_state();
    let msg = e.to_string();
    let (mark, buf) = stream.begin();
    ErrPacket {
        code,
        sqlstate: state,
        message: &msg,
    }
    .encode(buf);
    stream.finish(mark);
    let _ = stream.flush().await;
    stream.shutdown().await;
}

async fn handle_client(
    tcp: TcpStream,
    peer: SocketAddr,
    gw: Arc<Gateway>,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let id = gw.next_connection_id();
    let timeout = Duration::from_secs(gw.config().frontend.handshake_timeout_secs);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tcp = tcp;
    let mut peer = peer;
    if gw
        .config()
        .frontend
        .proxy_protocol
        .expects_header(peer.ip())
    {
        match tokio::time::timeout_at(deadline, proxy::read_header(&mut tcp)).await {
            Ok(Ok(proxy::Source::Client(client))) => peer = client,
            Ok(Ok(proxy::Source::Local)) => {}
            Ok(Err(e)) => {
                let e = GatewayError::ProxyHeader(format!("{e} (from {peer}, a trusted balancer)"));
                gw.telemetry
                    .login_refused(Refusal::Other, Some(id), None, peer, &e.to_string());
                tracing::info!(id, %peer, error = %e, "connection refused");
                err_first(tcp, gw.config().frontend.max_allowed_packet, &e).await;
                return;
            }
            Err(_) => {
                tracing::info!(id, %peer, "no PROXY protocol header within the handshake timeout");
                return;
            }
        }
    }
    let phase = tokio::time::timeout_at(
        deadline,
        connection_phase(tcp, peer, &gw, id, tls.as_deref()),
    )
    .await;
    match phase {
        Ok(Ok(authenticated)) => {
            tracing::debug!(id, user = %authenticated.hello.user, %peer, tls = authenticated.tls, "client connected");
            Session::run(authenticated, gw, id).await;
            tracing::debug!(id, "client left");
        }
        Ok(Err(ConnectError::Refused(e))) => {
            let why = match e.class() {
                crate::error::ErrorClass::Auth => Refusal::Auth,
                _ => Refusal::Other,
            };
            gw.telemetry
                .login_refused(why, Some(id), e.user(), peer, &e.to_string());
            tracing::info!(id, %peer, error = %e, "connection refused");
        }
        Ok(Err(ConnectError::Io(e))) => {
            tracing::debug!(id, %peer, error = %e, "client left during handshake");
        }
        Err(_) => {
            gw.telemetry.login_refused(
                Refusal::HandshakeTimeout,
                Some(id),
                None,
                peer,
                "the handshake did not finish in time",
            );
            tracing::info!(id, %peer, "handshake timeout");
        }
    }
}
