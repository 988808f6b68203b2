//! The decision points of a statement's life, as one trait: resolve credentials, check a
//! statement, choose a route, plan redaction. The session calls only this trait; whether the
//! built-in [`ConfigPolicy`] or Wasm policies stand behind it is invisible to it.

use crate::config::{AuthPlugin, Config, Role};
use crate::facts::{QueryFacts, StatementKind};

/// Who is knocking: what the client said in its handshake.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub user: String,
    pub client_addr: String,
    pub database: Option<String>,
    pub tls: bool,
    pub attributes: Vec<(String, String)>,
}

/// Who a client may log in as, and as which backend account it runs.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The password the client must prove it knows.
    pub password: String,
    pub auth_plugin: AuthPlugin,
    pub backend_user: String,
    pub backend_password: String,
    /// Connections the user may hold at once (0: no limit).
    pub max_connections: usize,
    /// Statements per second over all the user's sessions (0: no limit), and the burst above it.
    pub max_statements_per_second: u32,
    pub statements_burst: u32,
    /// The user's statement timeout (`None`: `routing.statement-timeout-ms`; 0: none).
    pub statement_timeout_ms: Option<u64>,
    /// The backend group the user's statements run on (`None`: the default group).
    pub backend_group: Option<String>,
}

impl Grant {
    /// The configured defaults where the grant sets no limit of its own.
    #[must_use]
    pub fn with_defaults(mut self, d: &crate::config::LimitsConfig) -> Self {
        if self.max_connections == 0 {
            self.max_connections = d.max_connections_per_user;
        }
        if self.max_statements_per_second == 0 {
            self.max_statements_per_second = d.max_statements_per_second;
        }
        if self.statements_burst == 0 {
            self.statements_burst = d.statements_burst;
        }
        self
    }
}

/// What a policy knows about the session a statement runs in.
#[derive(Debug, Clone)]
pub struct SessionInfo<'a> {
    pub connection_id: u32,
    pub user: &'a str,
    pub client_addr: &'a str,
    pub database: Option<&'a str>,
    pub in_transaction: bool,
    /// The session runs with autocommit on (off: every statement is part of a transaction).
    pub autocommit: bool,
    pub tls: bool,
    /// The position the session's reads must see (consistency `session`, after a write).
    pub required_position: Option<&'a crate::gtid::GtidPosition>,
}

impl<'a> SessionInfo<'a> {
    /// A plain session of `user` from loopback: autocommit on, no transaction, no database, no
    /// TLS, no position to see (the load's smoke call, the simulator's sessions, tests).
    pub fn plain(connection_id: u32, user: &'a str) -> Self {
        Self {
            connection_id,
            user,
            client_addr: "127.0.0.1",
            database: None,
            in_transaction: false,
            autocommit: true,
            tls: false,
            required_position: None,
        }
    }
}

/// The outcome of checking a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny {
        policy: String,
        code: u16,
        message: String,
    },
    Rewrite(String),
    /// Allowed, but a guard rule in report mode would have denied it so: logged and counted.
    Report {
        policy: String,
        code: u16,
        message: String,
    },
}

/// A backend as routing sees it.
#[derive(Debug, Clone)]
pub struct BackendStatus {
    pub name: std::sync::Arc<str>,
    pub role: Role,
    pub healthy: bool,
    pub lag_ms: Option<u32>,
    pub in_use: u32,
    pub idle: u32,
    pub weight: u32,
    /// Statements in flight and latency estimates ([`crate::pool::load`]).
    pub load: BackendLoad,
    /// Known to have applied the position the session's read must see (true when it needs none).
    pub caught_up: bool,
    /// What the backend is known to have applied, filled only when the session must see a
    /// position.
    pub applied: Option<crate::gtid::GtidPosition>,
}

impl BackendStatus {
    /// A backend with nothing in flight and no latency measured (the simulator's and the
    /// offline evaluator's fleets), healthy or not, with this lag.
    pub fn idle(name: &str, role: Role, healthy: bool, lag_ms: Option<u32>) -> Self {
        Self {
            name: std::sync::Arc::from(name),
            role,
            healthy,
            lag_ms,
            in_use: 0,
            idle: 0,
            weight: 1,
            load: BackendLoad::default(),
            caught_up: true,
            applied: None,
        }
    }
}

/// How busy a backend is, as the data path measured it ([`crate::pool::load`]); times in whole
/// microseconds, 0 before the first sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendLoad {
    /// Statements sent and not yet answered in full.
    pub in_flight: u32,
    /// EWMA of send to first response packet (stands in for the server's service time).
    pub service_ewma_us: u32,
    /// EWMA of send to last packet.
    pub response_ewma_us: u32,
    /// Peak-EWMA of the response time (up at once, decays over 10 s).
    pub peak_ewma_us: u32,
}

/// Where a statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Primary,
    /// The backend at this index of the fleet the policy was shown.
    Backend(usize),
    /// The backend with this name in the configuration, if it is healthy (a hint names it).
    Named(String),
}

/// What to do to one result column before the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnAction {
    Keep,
    Mask,
    /// Keep the last n characters, mask the rest.
    KeepLast(u32),
    Hash,
    Null,
    /// The policy transforms the cells itself (`Policy::transform`).
    Custom,
}

/// A column as redaction sees it.
#[derive(Debug, Clone)]
pub struct ColumnInfo<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub org_table: &'a str,
    pub name: &'a str,
    pub org_name: &'a str,
}

/// The phase trait: every decision the gateway delegates.
pub trait Policy: Send + Sync {
    /// Once per connection (and on COM_CHANGE_USER): may this client log in, and as whom?
    fn resolve_credentials(&self, client: &ClientIdentity) -> Option<Grant>;

    /// Before a statement runs: allow, deny with a reason, or rewrite it.
    fn check(&self, _facts: &QueryFacts, _sql: &str, _session: &SessionInfo<'_>) -> Verdict {
        Verdict::Allow
    }

    /// Which backend serves a statement that is not tied to a connection already.
    fn route(
        &self,
        facts: &QueryFacts,
        session: &SessionInfo<'_>,
        fleet: &[BackendStatus],
    ) -> RouteDecision;

    /// Per result set shape: what to do to each column. `None`: send it as it is.
    fn plan_redaction(
        &self,
        _facts: &QueryFacts,
        _session: &SessionInfo<'_>,
        _columns: &[ColumnInfo<'_>],
    ) -> Option<std::sync::Arc<[ColumnAction]>> {
        None
    }

    /// Whether results are redacted at all (lets the relay skip planning).
    fn redacts(&self) -> bool {
        false
    }

    /// The same policies over a reloaded configuration (its users, groups, limits, routing),
    /// or `None` when this policy does not read the configuration.
    fn with_config(&self, _config: &Config) -> Option<Box<dyn Policy>> {
        None
    }

    /// A `Custom` column's cells, transformed: flat bytes plus lengths (-1 = NULL). `None`: the
    /// transform failed; the cells are withheld (NULL).
    fn transform(
        &self,
        _column: u32,
        _cells: Vec<u8>,
        _lengths: Vec<i32>,
    ) -> Option<(Vec<u8>, Vec<i32>)> {
        None
    }

    /// SQL as logs may show it.
    fn redact_sql(&self, _sql: &str) -> Option<String> {
        None
    }
}

/// The built-in policy: users from the config file; every statement to the primary, or reads to
/// a healthy replica when `routing.read-write-split` is on. Sessions are spread over replicas by
/// connection id and keep their replica while it stays healthy, so a session's reads reuse the
/// connection it already holds.
pub struct ConfigPolicy {
    config: Config,
}

impl ConfigPolicy {
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Policy for ConfigPolicy {
    fn with_config(&self, config: &Config) -> Option<Box<dyn Policy>> {
        Some(Box::new(Self::new(config.clone())))
    }

    fn resolve_credentials(&self, client: &ClientIdentity) -> Option<Grant> {
        let u = self.config.user(&client.user)?;
        Some(
            Grant {
                password: u.password().to_string(),
                auth_plugin: u.auth_plugin,
                backend_user: u.backend_user.clone().unwrap_or_else(|| u.name.clone()),
                backend_password: u
                    .backend_password
                    .clone()
                    .unwrap_or_else(|| u.password().to_string()),
                max_connections: u.max_connections,
                max_statements_per_second: u.max_statements_per_second.unwrap_or(0),
                statements_burst: u.statements_burst.unwrap_or(0),
                statement_timeout_ms: u.statement_timeout_ms,
                backend_group: u.backend_group.clone(),
            }
            .with_defaults(&self.config.limits),
        )
    }

    fn route(
        &self,
        facts: &QueryFacts,
        session: &SessionInfo<'_>,
        fleet: &[BackendStatus],
    ) -> RouteDecision {
        let wants_primary = facts
            .hints
            .iter()
            .any(|(k, v)| k == "route" && v == "primary");
        if !self.config.routing.read_write_split
            || wants_primary
            || session.in_transaction
            || !facts.read_only
            || !matches!(
                facts.kind,
                StatementKind::Select | StatementKind::Transaction
            )
        {
            return RouteDecision::Primary;
        }
        let replica = |b: &&BackendStatus| b.role == Role::Replica && b.healthy;
        let count = fleet.iter().filter(replica).count();
        if count == 0 {
            return RouteDecision::Primary;
        }
        let nth = session.connection_id as usize % count;
        let replicas = || fleet.iter().enumerate().filter(|(_, b)| replica(b));
        let Some((sticky, b)) = replicas().nth(nth) else {
            return RouteDecision::Primary;
        };
        // The session must see its last write: a replica known to have it saves the wait on
        // another (none known: the session's own, where the host waits, bounded).
        if !b.caught_up
            && let Some((i, _)) = replicas().find(|(_, b)| b.caught_up)
        {
            return RouteDecision::Backend(i);
        }
        RouteDecision::Backend(sticky)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, role: Role, caught_up: bool) -> BackendStatus {
        BackendStatus {
            name: std::sync::Arc::from(name),
            role,
            healthy: true,
            lag_ms: Some(0),
            in_use: 0,
            idle: 0,
            weight: 1,
            load: BackendLoad::default(),
            caught_up,
            applied: None,
        }
    }

    #[test]
    fn the_builtin_split_prefers_a_replica_that_has_the_sessions_write() {
        let mut config = Config::default();
        config.routing.read_write_split = true;
        let policy = ConfigPolicy::new(config);
        let facts = crate::facts::analyze("SELECT 1 FROM t");
        let position = crate::gtid::GtidPosition::parse("0-1-5").expect("position");
        let session = SessionInfo {
            connection_id: 0,
            user: "app",
            client_addr: "127.0.0.1",
            database: None,
            in_transaction: false,
            autocommit: true,
            tls: false,
            required_position: Some(&position),
        };
        // Connection 0 sticks to the first replica, which lacks the write; the second has it.
        let fleet = [
            status("primary", Role::Primary, true),
            status("replica1", Role::Replica, false),
            status("replica2", Role::Replica, true),
        ];
        assert_eq!(
            policy.route(&facts, &session, &fleet),
            RouteDecision::Backend(2)
        );
        // Neither has it: the session's own replica (the host waits there, bounded).
        let behind = [
            status("primary", Role::Primary, true),
            status("replica1", Role::Replica, false),
            status("replica2", Role::Replica, false),
        ];
        assert_eq!(
            policy.route(&facts, &session, &behind),
            RouteDecision::Backend(1)
        );
    }
}
