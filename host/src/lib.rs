//! Sluice: a MySQL gateway whose policies are sandboxed WebAssembly plugins.
//!
//! The flow, from `main` to a packet on the wire: [`config`] loads the settings; [`serve`] binds
//! the listener and builds the shared [`gateway::Gateway`]; [`frontend`] accepts a client and runs
//! the connection phase ([`frontend::connect`]); [`session`] serves its commands, asking the
//! [`phase::Policy`] what may run and where, borrowing connections from [`backend`] pools and
//! relaying results through [`protocol`].

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod facts;
pub mod frontend;
pub mod gateway;
pub mod phase;
pub mod protocol;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Config;
use gateway::Gateway;
use phase::ConfigPolicy;

/// A gateway bound to its port, ready to run (tests bind port 0 and read the address).
pub struct Bound {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        Arc::clone(&self.gateway)
    }

    /// Serves until `shutdown` turns true, then drains.
    pub async fn run(self) {
        frontend::run(self.listener, self.gateway, self.tls).await;
    }
}

/// Binds the listener and builds the gateway with the built-in policy.
pub async fn bind(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Bound> {
    let tls = frontend::tls::acceptor(&config.frontend.tls)?;
    let listener = TcpListener::bind(config.frontend.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "frontend.listen: cannot listen on {}: {e}",
                config.frontend.listen
            )
        })?;
    let policy = Arc::new(ConfigPolicy::new(config.clone()));
    let gateway = Arc::new(Gateway::new(config, policy, shutdown));
    Ok(Bound {
        listener,
        gateway,
        tls,
    })
}
