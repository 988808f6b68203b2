//! Typed configuration: `config/sluice.toml` overridden by `SLUICE_...` environment variables,
//! with defaults, validated once at load.
//!
//! Environment keys nest with `__` and use `_` for `-`: `SLUICE_FRONTEND__LISTEN=0.0.0.0:6033`,
//! `SLUICE_FRONTEND__MAX_CONNECTIONS=100`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: Box<figment::Error>,
    },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[derive(Default)]
pub struct Config {
    pub frontend: FrontendConfig,
    pub log: LogConfig,
    pub routing: RoutingConfig,
    pub users: Vec<UserConfig>,
    pub backends: Vec<BackendConfig>,
    pub policies: PoliciesConfig,
    pub secrets: SecretsConfig,
    pub monitor: Option<MonitorConfig>,
    pub admin: AdminConfig,
    pub digests: DigestsConfig,
    pub metrics: MetricsConfig,
    pub audit: AuditConfig,
    pub limits: LimitsConfig,
    pub otlp: OtlpConfig,
    pub reload: ReloadConfig,
    pub capture: CaptureConfig,
    /// The file this configuration was loaded from (what a reload reads again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Health checks and replication lag, from an account of their own. Without it, replicas' lag is
/// unknown (lag-aware routers then keep reads on the primary).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MonitorConfig {
    pub user: String,
    pub password: String,
    pub interval_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            user: "sluice_monitor".into(),
            password: String::new(),
            interval_ms: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PoliciesConfig {
    /// The policy directory (manifests and `.wasm` files). Absent: the built-in policy only.
    pub dir: Option<PathBuf>,
    /// false: ignore `dir` and run the built-in policy only (`SLUICE_POLICIES__ENABLED=false`).
    pub enabled: bool,
    /// Reload when the directory changes.
    pub watch: bool,
    /// Quiet time after a change before reloading (a burst of writes is one reload).
    pub debounce_ms: u64,
    /// Where compiled policies are kept across restarts (a directory private to the gateway's
    /// user, created 0700; one others can write is not used). Default
    /// `$XDG_CACHE_HOME/sluice/compiled` or `~/.cache/sluice/compiled`; empty: compile every
    /// start.
    pub compiled_cache: Option<PathBuf>,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            dir: None,
            enabled: true,
            watch: true,
            debounce_ms: 200,
            compiled_cache: default_compiled_cache(),
        }
    }
}

impl PoliciesConfig {
    /// The compiled-policy cache in use, if any.
    pub fn compiled_cache(&self) -> Option<&Path> {
        self.compiled_cache
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
    }
}

fn default_compiled_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sluice").join("compiled"))
}

/// Where policies' `host.secret(name)` may read. Nothing else is reachable.
/// Reloading the configuration file while running (SIGHUP and `POST /api/reload` always do).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the file, or a file it names (password files, TLS certificate and key,
    /// admin token), changes.
    pub watch: bool,
    /// Quiet time after a change before reloading (a burst of writes is one reload).
    pub debounce_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: 250,
        }
    }
}

/// Traffic capture for `sluice replay` (`docs/capture.md`): off unless `dir` is set; started
/// through `POST /api/capture/start` or at boot with `start`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CaptureConfig {
    /// The directory captures are written to (the admin API names only files in it).
    pub dir: Option<PathBuf>,
    /// A capture to start at boot: its file name in `dir`.
    pub start: Option<String>,
    /// A capture stops when its file reaches this size...
    pub max_bytes: u64,
    /// ...or after this long.
    pub max_secs: u64,
    /// Statements written as their digests (literals replaced by `?`): such a capture can be
    /// evaluated offline, not replayed against a fleet.
    pub redact_literals: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            dir: None,
            start: None,
            max_bytes: 1 << 30,
            max_secs: 3600,
            redact_literals: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SecretsConfig {
    /// `secret("db-password")` reads the environment variable `<env-prefix>DB_PASSWORD`.
    pub env_prefix: Option<String>,
    /// `secret("users.json")` reads `<dir>/users.json` (e.g. a mounted Kubernetes Secret).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct FrontendConfig {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// Client connections beyond this get ERR 1040.
    pub max_connections: usize,
    /// Largest client packet accepted (bytes), after reassembly; also the longest parameter a
    /// client may send by COM_STMT_SEND_LONG_DATA (as the server's `max_allowed_packet`).
    pub max_allowed_packet: usize,
    /// Bytes of COM_STMT_SEND_LONG_DATA one session may hold until its executes (all its
    /// statements' parameters together): the gateway holds long data until the execute, since
    /// statements are prepared on whichever backend connection serves it. Beyond it the
    /// execute fails with ERR 1105 and nothing is sent.
    pub max_long_data: usize,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a client may stay idle between commands before it is disconnected.
    pub idle_timeout_secs: u64,
    /// Seconds sessions get to finish their statement in flight at shutdown.
    pub drain_timeout_secs: u64,
    /// Milliseconds a session keeps its backend connection after a statement while the client
    /// is quiet (affinity: the next statement skips the pool). A session gives it back at once
    /// when another session needs it.
    pub affinity_ms: u64,
    /// Version presented to clients (prefixed with `5.5.5-`, the MariaDB convention). Unset:
    /// the primary's own `@@version`, as a direct client would see it (clients pick features
    /// by it), or `10.11.0-MariaDB` before the monitor has read it.
    pub server_version: Option<String>,
    /// When true, each user's first caching_sha2_password login needs full authentication (over
    /// TLS), like a freshly started MySQL server; later ones take the fast path.
    pub sha2_cold_cache: bool,
    /// Seconds a client may hold an open transaction without sending anything (0: no limit).
    /// Past it the gateway rolls the transaction back, frees the backend connection, and tells
    /// the client when it next speaks (ProxySQL's `max_transaction_idle_time`).
    pub transaction_idle_timeout_secs: u64,
    pub tls: TlsConfig,
    pub proxy_protocol: ProxyProtocolConfig,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6033)),
            max_connections: 4096,
            max_allowed_packet: 64 << 20,
            max_long_data: 256 << 20,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 28_800,
            drain_timeout_secs: 30,
            affinity_ms: 500,
            server_version: None,
            sha2_cold_cache: false,
            transaction_idle_timeout_secs: 14_400,
            tls: TlsConfig::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
        }
    }
}

/// The PROXY protocol (v1 and v2) from TCP balancers: connections from `trusted` networks must
/// start with a header naming the real client; others are served as they are (and refused if
/// they send a header).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    pub enabled: bool,
    /// Networks of the balancers (`10.0.0.0/8`, `192.0.2.10`, `fd00::/8`).
    pub trusted: Vec<String>,
    /// Parsed from `trusted` at load.
    #[serde(skip)]
    pub networks: Vec<crate::frontend::proxy::Cidr>,
}

impl ProxyProtocolConfig {
    /// Whether a connection from `ip` must start with a PROXY header.
    pub fn expects_header(&self, ip: std::net::IpAddr) -> bool {
        self.enabled && self.networks.iter().any(|n| n.contains(ip))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsConfig {
    /// Generate a self-signed certificate at start (development only).
    pub self_signed: bool,
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Refuse clients that do not switch to TLS.
    pub require: bool,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `sluice=debug`, ...
    pub level: String,
    pub format: LogFormat,
    /// Statements slower than this many ms are logged (redacted) and counted; 0: off.
    pub slow_query_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
            slow_query_ms: 1_000,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// The admin HTTP API, status page and `/metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AdminConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The bearer token every endpoint but `/healthz` and `/readyz` requires, from this
    /// environment variable or file (required when `listen` is not on loopback).
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Resolved from `token-env` / `token-file` at load; never logged.
    #[serde(skip)]
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 6070)),
            token_env: None,
            token_file: None,
            token: None,
        }
    }
}

/// The statement digest table (`/api/digests`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DigestsConfig {
    pub enabled: bool,
    /// Entries kept at most (digest, user, schema, backend); the least recently used goes.
    pub max: usize,
}

impl Default for DigestsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max: 10_000,
        }
    }
}

/// OpenTelemetry over OTLP (HTTP/protobuf): statement traces and metrics, to a collector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://host:4318`; `/v1/traces` and `/v1/metrics` are added;
    /// plain HTTP: the exporter carries no TLS stack, send to a collector next to the gateway).
    /// Unset: `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: OTLP is off.
    pub endpoint: Option<String>,
    pub traces: bool,
    pub metrics: bool,
    /// The share of statements traced (0..=1) when the client sent no `traceparent`; a client's
    /// sampled `traceparent` is always followed, an unsampled one never.
    pub sampling_ratio: f64,
    /// `service.name` of the exported resource (`OTEL_SERVICE_NAME` wins when set).
    pub service_name: String,
    /// How often spans are sent in a batch, and metrics read and sent.
    pub traces_delay_ms: u64,
    pub metrics_interval_ms: u64,
    /// Spans waiting for export at most; more are dropped (counted).
    pub max_queue: usize,
    pub timeout_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            traces: true,
            metrics: true,
            sampling_ratio: 0.01,
            service_name: "sluice".into(),
            traces_delay_ms: 2000,
            metrics_interval_ms: 10_000,
            max_queue: 8192,
            timeout_ms: 5000,
        }
    }
}

impl OtlpConfig {
    /// The collector URL in use: the configured one, else the standard environment variable.
    pub fn collector(&self) -> Option<String> {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .filter(|e| !e.is_empty())
    }
}

/// Per-user limit defaults, for users without their own (and users a credentials policy
/// grants). Limits hold per gateway instance: N instances allow N times the rate.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sessions a user may hold at once (0: no limit); over it, ERR 1203.
    pub max_connections_per_user: usize,
    /// Statements per second a user may run, all its sessions together (0: no limit); over
    /// it, ERR 1226.
    pub max_statements_per_second: u32,
    /// Statements a user may run at once above the rate (0: one second's worth).
    pub statements_burst: u32,
}

/// The audit log (`telemetry::audit`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Where lines go (appended, created 0600); unset: stderr.
    pub file: Option<PathBuf>,
    /// Which statements are audited besides denials and reports.
    pub statements: AuditStatements,
}

/// Statements the audit log records (`server_audit`'s QUERY_DML / QUERY_DDL events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatements {
    #[default]
    None,
    /// Everything but reads (SELECT, SHOW).
    Writes,
    All,
}

/// Prometheus `/metrics` and the statement counters behind it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Label per-user series with `user` (one series per user: keep off for many users).
    pub per_user: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_user: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RoutingConfig {
    /// The built-in router: reads outside transactions go to replicas (round-robin); everything
    /// else to the primary. Off: everything to the primary.
    pub read_write_split: bool,
    /// What a read a router sends to a replica must see, whichever router chose it.
    pub consistency: Consistency,
    /// Milliseconds a read waits on its replica for the position it must see
    /// (`MASTER_GTID_WAIT`) before it runs on the primary instead.
    pub consistency_wait_ms: u64,
    /// `session`: a read within this many milliseconds of the session's last write runs on the
    /// write's own primary connection, still held for affinity (no replica could have caught up
    /// yet; asking one costs two round trips).
    pub read_after_write_primary_ms: u64,
    /// Implicit transactions (autocommit off) that begin with a read start on a replica and
    /// move to the primary at their first write, if what they read there matches (MaxScale's
    /// `optimistic_trx`); else they fail with 9003 (SQLSTATE 40001). Off: they run on the
    /// primary from their first statement.
    pub optimistic_transactions: bool,
    /// A statement that runs in autocommit on its own (not in a transaction, not one of a
    /// multi-statement query) and loses a deadlock (1213) is run again this many times at most,
    /// after 10, 20, 40 ... ms: the server rolled back only that statement. In a transaction a
    /// deadlock rolled the whole transaction back and is relayed. 0: never.
    pub deadlock_retries: u32,
    /// Milliseconds a write waits for the group to have exactly one writer (a server writable
    /// and not replicating) when it has none (a failover or switchover in progress) or several
    /// (split brain); then it fails with 9004 or 9005. A write refused with 1290 (read-only) by
    /// the server that was the writer waits as long for the monitor to see another and runs
    /// there (the refused statement did not run).
    pub failover_wait_ms: u64,
    /// Milliseconds a text SELECT, INSERT, UPDATE, DELETE or REPLACE may run on a MariaDB
    /// server (0: no limit): the gateway sends it as `SET STATEMENT max_statement_time=... FOR`,
    /// so the server stops the work itself and answers 1969. Per user: `statement-timeout-ms`.
    pub statement_timeout_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            read_write_split: false,
            consistency: Consistency::Session,
            consistency_wait_ms: 10,
            read_after_write_primary_ms: 10,
            optimistic_transactions: false,
            deadlock_retries: 3,
            failover_wait_ms: 3_000,
            statement_timeout_ms: 0,
        }
    }
}

/// Consistency levels for reads on replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Any healthy replica (a session may miss its own latest writes).
    Eventual,
    /// A session reads its own writes: a replica serves it only once it applied the session's
    /// last write (`@@last_gtid`), else the primary does.
    #[default]
    Session,
    /// A read sees every write committed before it started (the primary's `gtid_binlog_pos`).
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthPlugin {
    #[default]
    MysqlNativePassword,
    CachingSha2Password,
}

impl AuthPlugin {
    pub fn name(self) -> &'static str {
        match self {
            Self::MysqlNativePassword => "mysql_native_password",
            Self::CachingSha2Password => "caching_sha2_password",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// The password clients log in with. Prefer `password-env` or `password-file`.
    pub password: Option<String>,
    /// Read the password from this environment variable at start.
    pub password_env: Option<String>,
    /// Read the password from this file at start (trailing newline trimmed).
    pub password_file: Option<PathBuf>,
    pub auth_plugin: AuthPlugin,
    /// Backend account; defaults to the same name and password.
    pub backend_user: Option<String>,
    pub backend_password: Option<String>,
    /// Connections this user may hold at once (0: no limit).
    pub max_connections: usize,
    /// The backend group (cluster) this user's statements run on; absent: the default group.
    pub backend_group: Option<String>,
    /// Milliseconds this user's statements may run on the server (absent: the routing
    /// default). See `routing.statement-timeout-ms`.
    pub statement_timeout_ms: Option<u64>,
    /// Statements per second over all this user's sessions (unset: `limits.max-statements-per-second`).
    pub max_statements_per_second: Option<u32>,
    /// Statements above the rate at once (unset: `limits.statements-burst`).
    pub statements_burst: Option<u32>,
}

/// The group of backends that do not name one, and of users whose grant names none.
pub const DEFAULT_GROUP: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub address: String,
    pub role: Role,
    /// The cluster this backend belongs to (a primary and its replicas). Users are mapped to a
    /// group by their grant; one gateway can front several tenants' clusters.
    pub group: String,
    pub weight: u32,
    /// Connections kept open at least, and at most (all accounts together).
    pub pool_min: usize,
    pub pool_max: usize,
    /// Milliseconds a statement waits for a connection when all `pool-max` are in use; past it
    /// the client gets ERR 9001 (HY000) and the session goes on.
    pub acquire_timeout_ms: u64,
    /// Milliseconds a new backend connection may take to connect and authenticate.
    pub connect_timeout_ms: u64,
    /// A connection idle for longer than this (ms) is pinged before it is lent.
    pub validate_after_ms: u64,
    pub idle_timeout_secs: u64,
    pub max_lifetime_secs: u64,
    /// Prepared statements kept per backend connection; the bound on backend statements.
    pub stmt_cache_size: usize,
    /// Connect to this backend with TLS.
    pub tls: bool,
    /// Accept any certificate (development only).
    pub tls_skip_verify: bool,
    /// PEM file of the CA(s) the backend's certificate must chain to, besides the system's.
    /// Read on every new connection, so a rotated CA file applies without a reload.
    pub tls_ca: Option<PathBuf>,
    /// The circuit breaker opens after this many of the traffic's connection failures (connects
    /// refused or timed out, connections lost mid-statement) within `breaker-window-ms`; the
    /// backend is then `down` until a monitor probe answers (within two monitor intervals).
    pub breaker_failures: usize,
    pub breaker_window_ms: u64,
    /// Milliseconds a statement may wait for the backend's next packet (0: no limit). Past it
    /// the statement fails with a 2013-class error and the connection counts as lost: a
    /// black-holed backend fails statements clearly instead of hanging them. A query that
    /// legitimately computes longer than this before its first row needs a larger value.
    pub read_timeout_ms: u64,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: String::new(),
            role: Role::Primary,
            group: DEFAULT_GROUP.into(),
            weight: 1,
            pool_min: 0,
            pool_max: 64,
            acquire_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
            validate_after_ms: 1_000,
            idle_timeout_secs: 60,
            max_lifetime_secs: 3600,
            stmt_cache_size: 128,
            tls: false,
            tls_skip_verify: false,
            tls_ca: None,
            breaker_failures: 5,
            breaker_window_ms: 10_000,
            read_timeout_ms: 30_000,
        }
    }
}

impl Config {
    /// Loads `path` (which must exist) and the environment, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        if !path.exists() {
            return Err(ConfigError::Invalid {
                file,
                key: "-".into(),
                reason: "file not found".into(),
            });
        }
        let figment = Figment::new().merge(Toml::file(path)).merge(
            Env::prefixed("SLUICE_")
                .map(|k| k.as_str().replace("__", ".").replace('_', "-").into()),
        );
        let mut config = Self::from_figment(&figment, &file)?;
        config.resolve_paths(path.parent().unwrap_or_else(|| Path::new(".")));
        config.validate(&file)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Relative paths in a config file are relative to that file, whatever the working directory.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.policies.dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self.secrets.dir.as_mut() {
            fix(p);
        }
        if let Some(p) = self
            .policies
            .compiled_cache
            .as_mut()
            .filter(|p| !p.as_os_str().is_empty())
        {
            fix(p);
        }
        if let Some(p) = self.frontend.tls.cert.as_mut() {
            fix(p);
        }
        if let Some(p) = self.frontend.tls.key.as_mut() {
            fix(p);
        }
        if let Some(p) = self.admin.token_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.audit.file.as_mut() {
            fix(p);
        }
        for u in &mut self.users {
            if let Some(p) = u.password_file.as_mut() {
                fix(p);
            }
        }
        for b in &mut self.backends {
            if let Some(p) = b.tls_ca.as_mut() {
                fix(p);
            }
        }
    }

    /// Parses a TOML string (tests and `check-config`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_figment(&Figment::new().merge(Toml::string(text)), "<string>")?;
        config.validate("<string>")?;
        Ok(config)
    }

    fn from_figment(figment: &Figment, file: &str) -> Result<Self, ConfigError> {
        figment.extract().map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            source: Box::new(e),
        })
    }

    fn validate(&mut self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, reason: &str| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason: reason.to_string(),
        };
        let f = &self.frontend;
        if f.max_connections == 0 {
            return Err(invalid(
                "frontend.max-connections".into(),
                "must be at least 1",
            ));
        }
        if f.max_allowed_packet < 1024 || f.max_allowed_packet > 1 << 30 {
            return Err(invalid(
                "frontend.max-allowed-packet".into(),
                "must be between 1 KiB and 1 GiB",
            ));
        }
        if f.max_long_data > 1 << 34 {
            return Err(invalid(
                "frontend.max-long-data".into(),
                "must be at most 16 GiB",
            ));
        }
        if f.tls.cert.is_some() != f.tls.key.is_some() {
            return Err(invalid(
                "frontend.tls.cert".into(),
                "cert and key must be given together",
            ));
        }
        if f.tls.require && !f.tls.enabled() {
            return Err(invalid(
                "frontend.tls.require".into(),
                "TLS is required but no certificate is configured (set cert/key or self-signed)",
            ));
        }
        if let Some(dir) = &self.policies.dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "policies.dir".into(),
                &format!("{} is not a directory", dir.display()),
            ));
        }
        if self
            .secrets
            .env_prefix
            .as_deref()
            .is_some_and(|p| p.starts_with("SLUICE_"))
        {
            return Err(invalid(
                "secrets.env-prefix".into(),
                "must not start with SLUICE_ (that prefix configures the gateway)",
            ));
        }
        self.validate_admin(file)?;
        self.validate_otlp(file)?;
        self.validate_capture(file)?;
        self.validate_proxy_protocol(file)?;
        if self.digests.max == 0 {
            return Err(invalid("digests.max".into(), "must be at least 1"));
        }
        if self.backends.is_empty() {
            return Err(invalid("backends".into(), "at least one backend is needed"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = |k: &str| format!("backends[{i}].{k}");
            if b.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if !names.insert(b.name.clone()) {
                return Err(invalid(key("name"), "duplicate backend name"));
            }
            if b.address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(invalid(key("address"), "must be host:port"));
            }
            if b.pool_max == 0 || b.pool_min > b.pool_max {
                return Err(invalid(
                    key("pool-max"),
                    "must be at least 1 and at least pool-min",
                ));
            }
            if b.weight == 0 {
                return Err(invalid(key("weight"), "must be at least 1"));
            }
            if b.group.is_empty() {
                return Err(invalid(key("group"), "must not be empty"));
            }
            if b.acquire_timeout_ms == 0 || b.connect_timeout_ms == 0 {
                return Err(invalid(
                    key("acquire-timeout-ms"),
                    "acquire-timeout-ms and connect-timeout-ms must be at least 1",
                ));
            }
            if b.breaker_failures == 0 || b.breaker_window_ms == 0 {
                return Err(invalid(
                    key("breaker-failures"),
                    "breaker-failures and breaker-window-ms must be at least 1",
                ));
            }
            if let Some(ca) = &b.tls_ca {
                if !b.tls {
                    return Err(invalid(key("tls-ca"), "needs tls = true"));
                }
                let pem = std::fs::read_to_string(ca).map_err(|e| {
                    invalid(key("tls-ca"), &format!("cannot read {}: {e}", ca.display()))
                })?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        key("tls-ca"),
                        &format!("{} holds no PEM certificate", ca.display()),
                    ));
                }
            }
        }
        for (i, b) in self.backends.iter().enumerate() {
            let primaries = self
                .backends
                .iter()
                .filter(|o| o.group == b.group && o.role == Role::Primary)
                .count();
            if primaries != 1 {
                return Err(invalid(
                    format!("backends[{i}].group"),
                    &format!(
                        "backend group '{}' must have exactly one backend with role = \"primary\" (it has {primaries})",
                        b.group
                    ),
                ));
            }
        }
        let mut users = std::collections::HashSet::new();
        for (i, u) in self.users.iter_mut().enumerate() {
            let key = |k: &str| format!("users[{i}].{k}");
            if u.name.is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            if !users.insert(u.name.clone()) {
                return Err(invalid(key("name"), "duplicate user"));
            }
            if let Some(g) = &u.backend_group
                && !self.backends.iter().any(|b| &b.group == g)
            {
                return Err(invalid(
                    key("backend-group"),
                    &format!("no backend is in group '{g}'"),
                ));
            }
            let sources = usize::from(u.password.is_some())
                + usize::from(u.password_env.is_some())
                + usize::from(u.password_file.is_some());
            if sources != 1 {
                return Err(invalid(
                    key("password"),
                    "give exactly one of password, password-env, password-file",
                ));
            }
            if let Some(var) = &u.password_env {
                let v = std::env::var(var).map_err(|_| {
                    invalid(
                        key("password-env"),
                        &format!("environment variable {var} is not set"),
                    )
                })?;
                u.password = Some(v);
            }
            if let Some(path) = &u.password_file {
                let v = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        key("password-file"),
                        &format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                u.password = Some(v.trim_end_matches(['\n', '\r']).to_string());
            }
        }
        Ok(())
    }

    /// The admin listener's token: from its source, and required off loopback.
    fn validate_admin(&mut self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        let a = &mut self.admin;
        if a.token_env.is_some() && a.token_file.is_some() {
            return Err(invalid(
                "admin.token-env",
                "give at most one of token-env, token-file".into(),
            ));
        }
        if let Some(var) = &a.token_env {
            let v = std::env::var(var).map_err(|_| {
                invalid(
                    "admin.token-env",
                    format!("environment variable {var} is not set"),
                )
            })?;
            a.token = Some(v);
        }
        if let Some(path) = &a.token_file {
            let v = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "admin.token-file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            a.token = Some(v.trim().to_string());
        }
        if a.token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("admin.token-env", "the token is empty".into()));
        }
        if a.enabled && a.token.is_none() && !a.listen.ip().is_loopback() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{} is not a loopback address: set admin.token-env or admin.token-file",
                    a.listen
                ),
            ));
        }
        Ok(())
    }

    fn validate_proxy_protocol(&mut self, file: &str) -> Result<(), ConfigError> {
        let p = &mut self.frontend.proxy_protocol;
        p.networks = p
            .trusted
            .iter()
            .enumerate()
            .map(|(i, t)| {
                crate::frontend::proxy::Cidr::parse(t).map_err(|reason| ConfigError::Invalid {
                    file: file.to_string(),
                    key: format!("frontend.proxy-protocol.trusted[{i}]"),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        if p.enabled && p.networks.is_empty() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                key: "frontend.proxy-protocol.trusted".into(),
                reason: "name the balancers' networks: a header from anyone else is refused".into(),
            });
        }
        Ok(())
    }

    fn validate_otlp(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        let o = &self.otlp;
        if !(0.0..=1.0).contains(&o.sampling_ratio) {
            return Err(invalid(
                "otlp.sampling-ratio",
                format!("{} is not between 0 and 1", o.sampling_ratio),
            ));
        }
        if let Some(url) = &o.endpoint
            && !url.starts_with("http://")
        {
            return Err(invalid(
                "otlp.endpoint",
                format!(
                    "'{url}' is not an http:// URL (the exporter has no TLS: send to a collector nearby)"
                ),
            ));
        }
        if o.max_queue == 0 || o.traces_delay_ms == 0 || o.metrics_interval_ms == 0 {
            return Err(invalid(
                "otlp.max-queue",
                "max-queue, traces-delay-ms and metrics-interval-ms must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_capture(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            reason,
        };
        let c = &self.capture;
        if c.max_bytes < 4096 || c.max_secs == 0 {
            return Err(invalid(
                "capture.max-bytes",
                "max-bytes must be at least 4096 and max-secs at least 1".into(),
            ));
        }
        if let Some(name) = &c.start {
            crate::capture::file_in(c.dir.as_deref(), name)
                .map_err(|e| invalid("capture.start", e.to_string()))?;
        }
        Ok(())
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

impl UserConfig {
    pub fn password(&self) -> &str {
        self.password.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
        [[backends]]
        name = "primary"
        address = "127.0.0.1:3307"
        role = "primary"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN).expect("valid");
        assert_eq!(c.frontend.listen.port(), 6033);
        assert_eq!(c.backends[0].pool_max, 64);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = format!("{MIN}\n[frontend]\nmax-connections = 0\n");
        let e = Config::from_toml(&bad).expect_err("invalid").to_string();
        assert!(e.contains("frontend.max-connections"), "{e}");
        let bad = MIN.replace("127.0.0.1:3307", "nowhere");
        let e = Config::from_toml(&bad).expect_err("invalid").to_string();
        assert!(e.contains("backends[0].address"), "{e}");
        let e = Config::from_toml("[frontend]\nlisten = 5\n")
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::from_toml(&format!("{MIN}\n[frontend]\nnope = 1\n"))
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn every_group_needs_one_primary() {
        let two = format!(
            "{MIN}\n[[backends]]\nname = \"b\"\naddress = \"127.0.0.1:3310\"\nrole = \"replica\"\ngroup = \"tenant\"\n"
        );
        let e = Config::from_toml(&two).expect_err("invalid").to_string();
        assert!(
            e.contains("backends[1].group") && e.contains("'tenant'"),
            "{e}"
        );
        let ok = two.replace("role = \"replica\"", "role = \"primary\"");
        let c = Config::from_toml(&ok).expect("valid");
        assert_eq!(c.backends[0].group, DEFAULT_GROUP);
        let bad =
            format!("{ok}\n[[users]]\nname = \"u\"\npassword = \"p\"\nbackend-group = \"nope\"\n");
        let e = Config::from_toml(&bad).expect_err("invalid").to_string();
        assert!(e.contains("users[0].backend-group"), "{e}");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let open = format!("{MIN}\n[admin]\nlisten = \"0.0.0.0:6070\"\n");
        let e = Config::from_toml(&open).expect_err("invalid").to_string();
        assert!(e.contains("admin.listen"), "{e}");
        let dir = std::env::temp_dir().join(format!("sluice-token-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").expect("write token");
        let with = format!("{open}token-file = \"{}\"\n", dir.display());
        let c = Config::from_toml(&with).expect("valid");
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        let _ = std::fs::remove_file(&dir);
        let e = Config::from_toml(&format!("{MIN}\n[digests]\nmax = 0\n"))
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("digests.max"), "{e}");
    }

    #[test]
    fn users_need_one_password_source() {
        let bad = format!("{MIN}\n[[users]]\nname = \"a\"\n");
        let e = Config::from_toml(&bad).expect_err("invalid").to_string();
        assert!(e.contains("users[0].password"), "{e}");
    }
}
