//! The backend pools the gateway owns: per backend, a synchronous core ([`core`]: who gets which
//! connection, who waits, what closes and why) inside an async shell ([`backend`]: connecting,
//! pinging, closing, bounded FIFO waits). Each pooled connection carries its own state — the
//! session state applied to it, its prepared statements (the driver's per-connection cache),
//! created-at, last-used and the backend generation it belongs to — so nothing is keyed by a
//! server thread id, which a restarted server hands out again.
//!
//! `mysql_async::Pool` cannot carry data with a connection, and it resets every connection
//! returned to it (an extra round trip and a wiped statement cache): the gateway pools
//! `mysql_async::Conn`s itself and tracks session state ([`crate::replay`]).

pub mod backend;
pub mod connect;
pub mod core;
pub mod fleet;
pub mod health;
pub mod load;
pub mod maintain;
pub mod monitor;

pub use backend::{Backend, BackendConn, PoolStatus};
pub use fleet::{Fleet, Group};

/// The backend account a session runs as, plus the client flags that change server behaviour
/// (so a connection serves only sessions that agree on them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub found_rows: bool,
}
