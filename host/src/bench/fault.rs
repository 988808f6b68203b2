//! A fault-injecting TCP proxy in front of a real server (not a mock of MySQL): it passes bytes
//! through until told to slow the statements sent to the server, to add latency both ways, to
//! stall (a black hole: nothing is lost, nothing arrives), or to refuse and drop connections.
//! `sluice bench` puts one in front of a backend its workload's faults name; tests make slow,
//! flapping and black-holed backends with it, deterministically.
//!
//! It runs on a thread and runtime of its own, so the faults it makes do not compete with the
//! gateway for the gateway's runtime.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Every chunk, both ways, waits this long before it is forwarded.
    Delay(Duration),
    /// Every chunk sent to the server (a statement, for a gateway's connection) waits this long:
    /// the server looks this much slower per statement.
    SlowRequests(Duration),
    /// Nothing is forwarded (connections stay open): a black-holed server.
    Stall,
    /// New connections are closed at once: a server that is down (with
    /// [`FaultProxy::drop_connections`] for the open ones).
    Refuse,
}

pub struct FaultProxy {
    pub port: u16,
    fault: watch::Sender<(Fault, u64)>,
    _runtime: std::thread::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<Self> {
        let (tx, rx) = watch::channel((Fault::Pass, 0u64));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let runtime = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            return;
                        };
                        if rx.borrow().0 == Fault::Refuse {
                            drop(client);
                            continue;
                        }
                        tokio::spawn(relay(client, target, rx.clone()));
                    }
                });
            })?;
        Ok(Self {
            port,
            fault: tx,
            _runtime: runtime,
        })
    }

    /// Where clients of the proxy connect.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_modify(|f| f.0 = fault);
    }

    /// Closes every connection open now (new ones are accepted as usual).
    pub fn drop_connections(&self) {
        self.fault.send_modify(|f| f.1 += 1);
    }
}

async fn relay(client: TcpStream, target: SocketAddr, rx: watch::Receiver<(Fault, u64)>) {
    let generation = rx.borrow().1;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        () = pump(cr, sw, rx.clone(), generation, true) => {}
        () = pump(sr, cw, rx, generation, false) => {}
    }
}

/// Forwards `from` to `to` as the fault allows, until either side closes or the connections of
/// `generation` are dropped. `to_server`: this is the direction statements travel.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<(Fault, u64)>,
    generation: u64,
    to_server: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = rx.changed() => {
                if changed.is_err() || rx.borrow().1 != generation {
                    return;
                }
                continue;
            }
        };
        // Hold the chunk while the server is black-holed.
        loop {
            let (fault, g) = *rx.borrow_and_update();
            if g != generation {
                return;
            }
            match fault {
                Fault::Stall => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::SlowRequests(d) if to_server => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::SlowRequests(_) | Fault::Pass | Fault::Refuse => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
