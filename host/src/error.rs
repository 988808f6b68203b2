//! Every error a client can see, as one enum, mapped once to a MySQL error code and SQLSTATE.

use thiserror::Error;

use crate::protocol::DecodeError;

#[derive(Debug, Error, Clone)]
pub enum GatewayError {
    #[error("Access denied for user '{user}'@'{host}' (using password: {})", if *.using_password { "YES" } else { "NO" })]
    AccessDenied {
        user: String,
        host: String,
        using_password: bool,
    },
    #[error(
        "Access denied for user '{user}': caching_sha2_password full authentication requires a TLS connection (connect with --ssl)"
    )]
    FullAuthNeedsTls { user: String },
    #[error("Access denied for user '{user}': this gateway requires TLS (connect with --ssl)")]
    TlsRequired { user: String },
    #[error("Access denied for user '{user}': its backend group '{group}' is not configured")]
    UnknownBackendGroup { user: String, group: String },
    #[error("Too many connections")]
    TooManyConnections,
    #[error(
        "User {user} already has more than 'max_user_connections' active connections ({limit})"
    )]
    TooManyUserConnections { user: String, limit: usize },
    /// The user's statements-per-second limit (a token bucket over all its sessions).
    #[error(
        "User '{user}' has exceeded the 'max_statements_per_second' resource (current value: {limit}); the statement did not run"
    )]
    StatementRateExceeded { user: String, limit: u32 },
    /// A PROXY protocol header missing, malformed, or sent from an untrusted address.
    #[error("Bad handshake: {0}")]
    ProxyHeader(String),
    #[error("Unknown command 0x{0:02x}")]
    UnknownCommand(u8),
    #[error("Malformed communication packet: {0}")]
    Malformed(#[from] DecodeError),
    #[error("Got a packet bigger than 'max_allowed_packet' bytes ({size} > {max})")]
    PacketTooLarge { size: usize, max: usize },
    /// An error the backend server returned: relayed with its own code, state and message.
    #[error("{message}")]
    Server {
        code: u16,
        state: String,
        message: String,
    },
    #[error("Can't connect to backend '{backend}': {reason}")]
    BackendUnavailable { backend: String, reason: String },
    #[error("Lost connection to backend '{backend}' during query: {reason}")]
    BackendLost { backend: String, reason: String },
    /// Every pooled connection of a backend stayed in use for the whole acquire timeout.
    #[error(
        "Timed out after {waited_ms} ms waiting for a connection to backend '{backend}': all {max} (pool-max) are in use; the statement did not run"
    )]
    PoolTimeout {
        backend: String,
        waited_ms: u64,
        max: usize,
    },
    /// No server of the group is writable and not replicating.
    #[error(
        "No writer in backend group '{group}': no server is writable and not replicating (waited {waited_ms} ms, routing.failover-wait-ms); the statement did not run"
    )]
    NoWriter { group: String, waited_ms: u64 },
    /// More than one server of the group is writable and not replicating.
    #[error(
        "Writes refused in backend group '{group}': {servers} are each writable and not replicating, and the gateway will not guess which is the writer; the statement did not run"
    )]
    SplitBrain { group: String, servers: String },
    /// The session's transaction sat idle past `transaction-idle-timeout-secs`.
    #[error(
        "The gateway rolled back this session's transaction: it was idle for more than {secs} s (transaction-idle-timeout-secs); session state bound to its connection (temporary tables, user variables, locks) is gone too. The statement did not run"
    )]
    TransactionIdleTimeout { secs: u64 },
    #[error("Unknown prepared statement handler ({id}) given to {command}")]
    UnknownStatement { id: u32, command: &'static str },
    #[error("Unknown thread id: {0}")]
    NoSuchThread(u64),
    #[error("You are not owner of thread {0}")]
    NotThreadOwner(u64),
    #[error("Sluice does not support {0}")]
    Unsupported(String),
    #[error("Statement denied by policy '{policy}': {message}")]
    Denied {
        policy: String,
        code: u16,
        message: String,
    },
    #[error("Connection was killed")]
    ConnectionKilled,
    #[error(
        "Transaction rolled back: its reads on replica '{replica}' did not match the primary's when it turned to write (optimistic transactions); retry it"
    )]
    OptimisticConflict { replica: String },
    #[error("Server shutdown in progress")]
    ShuttingDown,
    #[error("Unknown database '{0}'")]
    UnknownDatabase(String),
    #[error("Internal gateway error: {0}")]
    Internal(String),
}

/// What kind of error a client saw, for operators: who refused or failed the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The login failed.
    Auth,
    /// A policy denied the statement.
    Denied,
    /// The backend server answered with an error (syntax, constraint, deadlock ...).
    Server,
    /// No backend could run it: unreachable, lost, pool exhausted, no writer.
    Backend,
    /// A gateway limit: connections, idle transaction.
    Limit,
    /// The client sent something the gateway cannot serve.
    Client,
    /// The gateway itself: shutdown, kill, conflict, internal.
    Gateway,
}

impl ErrorClass {
    pub const ALL: [Self; 7] = [
        Self::Auth,
        Self::Denied,
        Self::Server,
        Self::Backend,
        Self::Limit,
        Self::Client,
        Self::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Denied => "denied",
            Self::Server => "server",
            Self::Backend => "backend",
            Self::Limit => "limit",
            Self::Client => "client",
            Self::Gateway => "gateway",
        }
    }
}

/// The SQLSTATE MySQL uses with a policy's chosen error code: access errors are 42000, the rest
/// (1105 unknown error, 1175 safe updates, 1290 read-only, ...) HY000.
fn denial_state(code: u16) -> &'static str {
    match code {
        1044 | 1045 | 1064 | 1142 | 1143 | 1227 | 1370 => "42000",
        _ => "HY000",
    }
}

impl GatewayError {
    /// The MySQL error code and SQLSTATE clients see.
    pub fn code_and_state(&self) -> (u16, &str) {
        match self {
            Self::AccessDenied { .. }
            | Self::FullAuthNeedsTls { .. }
            | Self::TlsRequired { .. }
            | Self::UnknownBackendGroup { .. } => (1045, "28000"),
            Self::TooManyConnections => (1040, "08004"),
            // ER_TOO_MANY_USER_CONNECTIONS, ER_USER_LIMIT_REACHED, as MySQL answers its own limits.
            Self::TooManyUserConnections { .. } => (1203, "42000"),
            Self::StatementRateExceeded { .. } => (1226, "42000"),
            Self::UnknownCommand(_) => (1047, "08S01"),
            Self::ProxyHeader(_) => (1043, "08S01"),
            Self::Malformed(_) => (1835, "HY000"),
            Self::PacketTooLarge { .. } => (1153, "08S01"),
            Self::Server { code, state, .. } => (*code, state.as_str()),
            Self::BackendUnavailable { .. } => (2003, "HY000"),
            Self::BackendLost { .. } => (2013, "HY000"),
            // Gateway codes (documented in docs/errors.md). 9001 as ProxySQL answers a
            // connection wait that ran out; not 1040/08004, which client pools read as a dead server.
            Self::PoolTimeout { .. } => (9001, "HY000"),
            Self::TransactionIdleTimeout { .. } => (9002, "HY000"),
            Self::NoWriter { .. } => (9004, "HY000"),
            Self::SplitBrain { .. } => (9005, "HY000"),
            Self::UnknownStatement { .. } => (1243, "HY000"),
            Self::NoSuchThread(_) => (1094, "HY000"),
            Self::NotThreadOwner(_) => (1095, "HY000"),
            Self::Unsupported(_) => (1235, "42000"),
            Self::Denied { code, .. } => (*code, denial_state(*code)),
            Self::ConnectionKilled => (1927, "70100"),
            // 40001: a serialization failure, which clients and ORMs retry.
            Self::OptimisticConflict { .. } => (9003, "40001"),
            Self::ShuttingDown => (1053, "08S01"),
            Self::UnknownDatabase(_) => (1049, "42000"),
            Self::Internal(_) => (1105, "HY000"),
        }
    }

    /// The class operators count errors by (a metric label, a digest column).
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::AccessDenied { .. }
            | Self::FullAuthNeedsTls { .. }
            | Self::TlsRequired { .. }
            | Self::UnknownBackendGroup { .. } => ErrorClass::Auth,
            Self::Denied { .. } => ErrorClass::Denied,
            Self::Server { .. } | Self::UnknownDatabase(_) => ErrorClass::Server,
            Self::BackendUnavailable { .. }
            | Self::BackendLost { .. }
            | Self::PoolTimeout { .. }
            | Self::NoWriter { .. }
            | Self::SplitBrain { .. } => ErrorClass::Backend,
            Self::TooManyConnections
            | Self::TooManyUserConnections { .. }
            | Self::StatementRateExceeded { .. }
            | Self::TransactionIdleTimeout { .. } => ErrorClass::Limit,
            Self::UnknownCommand(_)
            | Self::ProxyHeader(_)
            | Self::Malformed(_)
            | Self::PacketTooLarge { .. }
            | Self::UnknownStatement { .. }
            | Self::NoSuchThread(_)
            | Self::NotThreadOwner(_)
            | Self::Unsupported(_) => ErrorClass::Client,
            Self::ConnectionKilled
            | Self::OptimisticConflict { .. }
            | Self::ShuttingDown
            | Self::Internal(_) => ErrorClass::Gateway,
        }
    }

    /// The user a login error names, if it names one.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::AccessDenied { user, .. }
            | Self::TlsRequired { user }
            | Self::FullAuthNeedsTls { user }
            | Self::UnknownBackendGroup { user, .. }
            | Self::TooManyUserConnections { user, .. }
            | Self::StatementRateExceeded { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Errors after which the client connection cannot go on.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::AccessDenied { .. }
                | Self::FullAuthNeedsTls { .. }
                | Self::TlsRequired { .. }
                | Self::UnknownBackendGroup { .. }
                | Self::TooManyConnections
                | Self::TooManyUserConnections { .. }
                | Self::PacketTooLarge { .. }
                | Self::ShuttingDown
                | Self::ConnectionKilled
        )
    }

    /// Classifies a driver error from a backend.
    pub fn from_backend(backend: &str, e: mysql_async::Error) -> Self {
        match e {
            // ER_SERVER_SHUTDOWN: the server aborted the statement as it stops, and its
            // connections die with it: the connection is lost, whatever ran of the statement.
            mysql_async::Error::Server(s) if s.code == 1053 => Self::BackendLost {
                backend: backend.to_string(),
                reason: format!("the server is shutting down ({})", s.message),
            },
            mysql_async::Error::Server(s) => Self::Server {
                code: s.code,
                state: s.state,
                message: s.message,
            },
            other => Self::BackendLost {
                backend: backend.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = GatewayError::AccessDenied {
            user: "app".into(),
            host: "127.0.0.1".into(),
            using_password: true,
        };
        assert_eq!(e.code_and_state(), (1045, "28000"));
        assert_eq!(
            e.to_string(),
            "Access denied for user 'app'@'127.0.0.1' (using password: YES)"
        );
        assert_eq!(
            GatewayError::UnknownCommand(0x30).code_and_state(),
            (1047, "08S01")
        );
    }
}
