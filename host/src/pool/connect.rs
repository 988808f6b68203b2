//! Opening one backend connection for an account: driver options from the backend's config, a
//! bounded connect, and the [`Link`] that carries the connection's applied session state.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::{Conn, OptsBuilder, SslOpts};

use super::Account;
use crate::config::BackendConfig;
use crate::replay::ReplayState;

/// A driver connection and the session state it carries.
pub struct Link {
    pub conn: Conn,
    /// What was last applied to it; `None` when unknown (a replay failed half-way): the next
    /// borrower resets it first.
    pub applied: Option<Arc<ReplayState>>,
}

/// Why a connect failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered with an error (access denied, too many connections): it is up.
    Server(mysql_async::ServerError),
    /// No answer: refused, unreachable, a broken handshake, or no answer within the timeout.
    Transport(String),
}

/// The host and port of `host:port` (brackets around an IPv6 host removed).
pub fn host_port(address: &str) -> (&str, u16) {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
    (host.trim_matches(['[', ']']), port.parse().unwrap_or(3306))
}

/// Driver options for `account` on the backend `c`.
pub fn opts(c: &BackendConfig, account: &Account) -> OptsBuilder {
    let (host, port) = host_port(&c.address);
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(account.user.clone()))
        .pass(Some(account.password.clone()))
        .prefer_socket(false)
        .tcp_nodelay(true)
        .client_found_rows(account.found_rows)
        .stmt_cache_size(c.stmt_cache_size)
        // LOAD DATA LOCAL: the file comes from the session's client (crate::infile).
        .local_infile_handler(Some(crate::infile::backend_handler));
    if c.tls {
        let mut ssl = SslOpts::default()
            .with_danger_accept_invalid_certs(c.tls_skip_verify)
            .with_danger_skip_domain_validation(c.tls_skip_verify);
        if let Some(ca) = &c.tls_ca {
            // The driver reads the file for each new connection: a rotated CA applies at once.
            ssl = ssl.with_root_certs(vec![ca.clone().into()]);
        }
        opts = opts.ssl_opts(ssl);
    }
    opts
}

/// Opens a connection, giving up after `connect-timeout-ms`.
pub async fn open(c: &BackendConfig, account: &Account) -> Result<Link, ConnectError> {
    let timeout = Duration::from_millis(c.connect_timeout_ms);
    match tokio::time::timeout(timeout, Conn::new(opts(c, account))).await {
        Ok(Ok(conn)) => Ok(Link {
            conn,
            // A fresh connection: the server's defaults (the driver connects with no schema).
            applied: Some(Arc::new(ReplayState::default())),
        }),
        Ok(Err(mysql_async::Error::Server(e))) => Err(ConnectError::Server(e)),
        Ok(Err(e)) => Err(ConnectError::Transport(e.to_string())),
        Err(_) => Err(ConnectError::Transport(format!(
            "no answer within {} ms (connect-timeout-ms)",
            c.connect_timeout_ms
        ))),
    }
}

/// Says goodbye to the server (COM_QUIT frees what the connection held there: prepared
/// statements, temporary tables, locks) off the caller's path.
pub fn close(link: Link) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            let _ = link.conn.disconnect().await;
        });
    }
}
