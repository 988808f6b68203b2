//! One task per client after authentication: reads commands, keeps the session state the gateway
//! needs to multiplex safely, and runs statements on borrowed or held backend connections.
//!
//! Outside a transaction a statement borrows a pooled connection. A transaction (seen in the
//! backend's IN_TRANS status) or state that cannot be replayed (a [`PinReason`]) holds the
//! connection until it ends or the client resets. Otherwise the connection stays *parked* with the
//! session after the statement: the next statement skips the pool when it routes to the same
//! backend, and `LAST_INSERT_ID()`, `ROW_COUNT()` and `SHOW WARNINGS` see the previous statement.
//! A parked connection goes back to the pool when the client is quiet for `affinity-ms`, when the
//! next statement routes elsewhere, or at once when another session finds the pool empty.

mod capture;
pub mod consistency;
pub mod load_data;
pub mod long_data;
pub mod optimistic;
pub mod prepared;
pub mod query;
mod record;
pub mod redact;
pub mod relay;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mysql_async::prelude::Queryable;

use crate::error::GatewayError;
use crate::facts::{PinReason, QueryFacts, TransactionAccess};
use crate::frontend::connect::{Authenticated, authenticate, refuse};
use crate::frontend::io::ClientIo;
use crate::gateway::{Gateway, SessionEntry};
use crate::phase::{ClientIdentity, Grant, RouteDecision, SessionInfo};
use crate::pool::fleet::Writer;
use crate::pool::{Account, Backend, BackendConn, Group};
use crate::protocol::command::Command;
use crate::protocol::constants::{cap, status};
use crate::protocol::handshake::HandshakeResponse;
use crate::protocol::reply::{ErrPacket, OkPacket, encode_eof};
use crate::protocol::{PacketError, PacketStream};
use crate::replay::ReplayState;
use prepared::Statements;

/// At most this much of a refused packet is read and discarded before closing.
const DRAIN_LIMIT: usize = 32 << 20;

/// While others wait in line for its backend, a session keeps its parked connection for at most
/// this many more statements sent back to back, then gives it back: waits stay short and fair
/// without a pool round trip (and a task hand-off) per statement.
const TURNS_UNDER_PRESSURE: u32 = 16;

/// While others wait, a parked connection is given back after this much client quiet.
const QUIET_UNDER_PRESSURE: Duration = Duration::from_millis(1);

/// How often a write waiting for a writer looks again (the monitor probes every interval).
const WRITER_POLL: Duration = Duration::from_millis(20);

/// Statements that change data (or open a transaction that will): they need the group's writer.
/// Anything else routed to the primary (`SET`, `USE`, reads pinned there) runs on it even while
/// the group has no writer.
fn needs_writer(facts: &QueryFacts) -> bool {
    use crate::facts::StatementKind as K;
    matches!(
        facts.kind,
        K::Insert | K::Update | K::Delete | K::Replace | K::Ddl | K::Call | K::LoadData
    ) || facts.starts_transaction == Some(TransactionAccess::ReadWrite)
}

/// The grant's statement timeout, or the routing default.
fn statement_timeout(config: &crate::config::Config, grant: &Grant) -> Option<Duration> {
    let ms = grant
        .statement_timeout_ms
        .unwrap_or(config.routing.statement_timeout_ms);
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Why a session holds its backend connection between statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Transaction,
    Pinned,
    /// Kept for affinity; given back on demand.
    Parked,
}

struct Held {
    conn: BackendConn,
    why: Hold,
}

/// What went wrong while serving a command.
#[derive(Debug)]
pub enum SessionError {
    /// Tell the client (ERR packet); the session goes on unless the error says otherwise.
    Reply(GatewayError),
    /// The client connection is broken: end the session.
    Client(PacketError),
}

impl From<GatewayError> for SessionError {
    fn from(e: GatewayError) -> Self {
        Self::Reply(e)
    }
}

impl From<PacketError> for SessionError {
    fn from(e: PacketError) -> Self {
        Self::Client(e)
    }
}

enum Flow {
    Continue,
    Quit,
}

pub struct Session {
    stream: PacketStream<ClientIo>,
    gw: Arc<Gateway>,
    entry: Arc<SessionEntry>,
    id: u32,
    caps: u32,
    user: String,
    peer: String,
    tls: bool,
    grant: Grant,
    account: Arc<Account>,
    /// The backend group (cluster) this session's statements run on.
    group: Arc<Group>,
    /// The fleet epoch `group` was resolved in ([`Gateway::fleet_epoch`]).
    fleet_epoch: u64,
    /// The gateway rolled back an idle transaction; the client hears of it when it next speaks.
    transaction_timed_out: bool,
    state: Arc<ReplayState>,
    held: Option<Held>,
    /// Statements the parked connection may still serve while others wait for it.
    turns: u32,
    /// The position the session's committed writes reached (read-your-writes).
    written: Option<crate::gtid::GtidPosition>,
    /// A write ran since `written` was last learned (learned when no transaction is open).
    unsynced_write: bool,
    /// When the session's last write succeeded.
    last_write: Option<std::time::Instant>,
    /// What `publish_view` last showed: (hold, pins, backend thread, in transaction).
    published: (Option<Hold>, usize, u32, bool),
    pins: BTreeSet<PinReason>,
    in_txn: bool,
    multi_statements: bool,
    /// Status flags of the last reply (the client's view).
    last_status: u16,
    last_insert_id: u64,
    /// `ROW_COUNT()` after the last statement (answered by the gateway when that statement's
    /// connection went back to the pool).
    last_row_count: i64,
    /// `FOUND_ROWS()`: the rows of the last result set (answered by the gateway as above).
    last_found_rows: u64,
    stmts: Statements,
    /// The greeting's scramble (COM_CHANGE_USER is proven against it).
    salt: [u8; 20],
    /// How long this user's statements may run on the server (None: no limit).
    statement_timeout: Option<Duration>,
    /// The transaction runs optimistically on a replica: what it ran there.
    optimistic: Option<optimistic::OptimisticLog>,
    /// What the command being served did (for the recorder).
    note: record::StatementNote,
    /// The command being captured, when a capture runs.
    cap: Option<capture::CaptureNote>,
    /// The capture this session announced itself to (0: none).
    capture_seen: u64,
    user_stats: Arc<crate::telemetry::users::UserCounters>,
    /// When the open transaction began.
    txn_started: Option<std::time::Instant>,
    /// The open transaction's span, when tracing (its statements hang under it).
    txn_trace: Option<crate::telemetry::trace::TransactionTrace>,
    /// The schema `publish_view` last showed.
    published_schema: Option<String>,
}

impl Session {
    fn new(a: Authenticated, gw: Arc<Gateway>, id: u32, group: Arc<Group>) -> Self {
        let entry = gw.register(id, &a.hello.user, a.peer.to_string(), a.tls);
        let user_stats = gw.telemetry.users.get(&a.hello.user);
        user_stats
            .connections_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gw.telemetry
            .metrics
            .connections_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = Arc::new(Account {
            user: a.grant.backend_user.clone(),
            password: a.grant.backend_password.clone(),
            found_rows: a.capabilities & cap::FOUND_ROWS != 0,
        });
        let mut state = ReplayState::for_client_charset(a.hello.charset);
        state.schema.clone_from(&a.hello.database);
        let statement_timeout = statement_timeout(&gw.config(), &a.grant);
        Self {
            stream: a.stream,
            entry,
            id,
            caps: a.capabilities,
            user: a.hello.user.clone(),
            peer: a.peer.ip().to_string(),
            tls: a.tls,
            grant: a.grant,
            account,
            // Resolved before this session existed: the first statement looks again.
            fleet_epoch: u64::MAX,
            group,
            transaction_timed_out: false,
            state: Arc::new(state),
            held: None,
            turns: TURNS_UNDER_PRESSURE,
            written: None,
            unsynced_write: false,
            last_write: None,
            published: (None, 0, 0, false),
            pins: BTreeSet::new(),
            in_txn: false,
            multi_statements: a.capabilities & cap::MULTI_STATEMENTS != 0,
            last_status: status::AUTOCOMMIT,
            last_insert_id: 0,
            last_row_count: -1,
            last_found_rows: 0,
            stmts: Statements::new(prepared::LongDataLimits {
                per_parameter: gw.config().frontend.max_allowed_packet,
                per_session: gw.config().frontend.max_long_data,
            }),
            salt: a.salt,
            statement_timeout,
            optimistic: None,
            note: record::StatementNote::default(),
            cap: None,
            capture_seen: 0,
            user_stats,
            txn_started: None,
            txn_trace: None,
            published_schema: None,
            gw,
        }
    }

    /// Finishes the connection phase (confirms the requested database) and serves commands until
    /// the client leaves.
    pub async fn run(a: Authenticated, gw: Arc<Gateway>, id: u32) {
        let limit = a.grant.max_connections;
        if limit > 0 && gw.user_session_count(&a.hello.user) >= limit {
            let e = GatewayError::TooManyUserConnections {
                user: a.hello.user.clone(),
                limit,
            };
            gw.telemetry.login_refused(
                crate::telemetry::metrics::Refusal::UserLimit,
                Some(id),
                Some(&a.hello.user),
                a.peer,
                &e.to_string(),
            );
            let mut stream = a.stream;
            let _ = refuse(&mut stream, e).await;
            return;
        }
        let Some(group) = gw.fleet().group(a.grant.backend_group.as_deref()).cloned() else {
            let e = GatewayError::UnknownBackendGroup {
                user: a.hello.user.clone(),
                group: a.grant.backend_group.clone().unwrap_or_default(),
            };
            tracing::warn!(user = %a.hello.user, error = %e, "login refused");
            let mut stream = a.stream;
            let _ = refuse(&mut stream, e).await;
            return;
        };
        let mut s = Self::new(a, gw, id, group);
        let ready = match s.confirm_database().await {
            Ok(()) => {
                let ok = s.send_ok(0, 0).await.is_ok();
                // The connection phase ends with that OK; the compressed protocol starts after it.
                if s.caps & cap::COMPRESS != 0 {
                    s.stream.enable_compression();
                }
                ok
            }
            Err(SessionError::Reply(e)) => {
                let _ = s.send_err(&e).await;
                false
            }
            Err(SessionError::Client(_)) => false,
        };
        if ready {
            s.audit("connect", None);
            s.serve().await;
            s.capture_gone();
            s.audit("disconnect", None);
        }
        s.finish().await;
    }

    async fn confirm_database(&mut self) -> Result<(), SessionError> {
        if self.state.schema.is_none() {
            return Ok(());
        }
        let primary = Arc::clone(self.group.primary());
        let conn = self.borrow(&primary).await?;
        drop(conn);
        Ok(())
    }

    async fn serve(&mut self) {
        loop {
            match self.next_command().await {
                Ok(Some(packet)) => {
                    let cmd = match Command::decode(&packet, self.caps) {
                        Ok(c) => c,
                        Err(e) => {
                            if self.send_err(&e.into()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    // Told in answer to the next command that has an answer (not QUIT,
                    // STMT_CLOSE or STMT_SEND_LONG_DATA, which the client reads nothing for).
                    let answered = !matches!(
                        cmd,
                        Command::Quit | Command::StmtClose(_) | Command::StmtSendLongData { .. }
                    );
                    if self.transaction_timed_out && answered {
                        self.transaction_timed_out = false;
                        let e = GatewayError::TransactionIdleTimeout {
                            secs: self.gw.config().frontend.transaction_idle_timeout_secs,
                        };
                        if self.send_err(&e).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let kind = record::command_kind(&cmd);
                    self.begin_command();
                    self.capture_begin(&cmd);
                    let result = self.dispatch(cmd).await;
                    self.capture_end(&result);
                    self.end_command(kind, &result);
                    match result {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Quit) => return,
                        Err(SessionError::Reply(e)) => {
                            let close = e.closes_connection();
                            if self.send_err(&e).await.is_err() || close {
                                return;
                            }
                        }
                        Err(SessionError::Client(_)) => return,
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    // A broken packet: say why where the protocol allows it, then close.
                    let reply = match e {
                        PacketError::TooLarge { size, max } => {
                            Some(GatewayError::PacketTooLarge { size, max })
                        }
                        PacketError::OutOfOrder { .. } => Some(GatewayError::Malformed(
                            crate::protocol::DecodeError::Malformed("packets out of order"),
                        )),
                        PacketError::BadCompression(why) => Some(GatewayError::Malformed(
                            crate::protocol::DecodeError::Malformed(why),
                        )),
                        PacketError::Closed | PacketError::Io(_) => None,
                    };
                    if let Some(r) = reply {
                        let _ = self.send_err(&r).await;
                        // Let the client read the ERR: close our side, then discard what it is
                        // still sending (bounded) so the close is not a reset.
                        self.stream.drain_after_close(DRAIN_LIMIT).await;
                    }
                    return;
                }
            }
        }
    }

    /// Waits for the next command. `None`: the session should end (client gone, idle timeout,
    /// killed, or the gateway is draining).
    async fn next_command(&mut self) -> Result<Option<Bytes>, PacketError> {
        let idle = self.wait_timeout();
        let idle_deadline = tokio::time::Instant::now() + idle;
        let affinity = Duration::from_millis(self.gw.config().frontend.affinity_ms);
        let mut shutdown = self.gw.shutdown.clone();
        loop {
            if self.entry.killed.load(std::sync::atomic::Ordering::Relaxed) {
                // As the server does with a killed idle connection: close it, no packet (the
                // client sees 2013 and may reconnect).
                return Ok(None);
            }
            if *shutdown.borrow() {
                let _ = self.send_err(&GatewayError::ShuttingDown).await;
                return Ok(None);
            }
            if self.stream.has_buffered() {
                break;
            }
            let parked_on = match &self.held {
                Some(Held {
                    why: Hold::Parked,
                    conn,
                }) => Some(Arc::clone(&conn.backend)),
                _ => None,
            };
            let txn_idle =
                Duration::from_secs(self.gw.config().frontend.transaction_idle_timeout_secs);
            let in_txn_hold = !txn_idle.is_zero()
                && matches!(
                    self.held,
                    Some(Held {
                        why: Hold::Transaction,
                        ..
                    })
                );
            // Register for the pool's call before checking whether it already came.
            let pressure = parked_on.as_ref().map(|b| b.pressure.notified());
            tokio::pin!(pressure);
            if let Some(n) = pressure.as_mut().as_pin_mut() {
                n.enable();
            }
            if parked_on.as_ref().is_some_and(|b| b.is_draining()) {
                self.release_parked().await;
                continue;
            }
            let pressed = parked_on.as_ref().is_some_and(|b| b.has_waiters());
            if pressed && self.turns == 0 {
                self.release_parked().await;
                continue;
            }
            let now = tokio::time::Instant::now();
            let wait = if pressed {
                // Turns left: keep it only if the client is sending right away.
                QUIET_UNDER_PRESSURE.min(affinity)
            } else if parked_on.is_some() {
                affinity
            } else if in_txn_hold {
                txn_idle.min(idle_deadline.saturating_duration_since(now))
            } else {
                idle_deadline.saturating_duration_since(now)
            };
            tokio::select! {
                r = self.stream.wait_for_data() => {
                    match r {
                        Ok(()) => break,
                        Err(PacketError::Closed) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                () = tokio::time::sleep(wait) => {
                    if parked_on.is_some() {
                        self.release_parked().await;
                        continue;
                    }
                    if in_txn_hold && txn_idle <= idle {
                        self.abandon_idle_transaction().await;
                        continue;
                    }
                    tracing::debug!(id = self.id, "idle timeout");
                    return Ok(None);
                }
                () = async {
                    match pressure.as_mut().as_pin_mut() {
                        Some(n) if !pressed => n.await,
                        _ => std::future::pending().await,
                    }
                } => {
                    // Called on while quiet: loop to see whether someone waits (or a drain).
                }
                () = self.entry.kill_notify.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        if self.entry.killed.load(std::sync::atomic::Ordering::Relaxed) {
            // Killed while the client was sending: the command does not run.
            return Ok(None);
        }
        self.stream.reset_seq();
        self.stream.read_packet().await.map(Some)
    }

    async fn dispatch(&mut self, cmd: Command) -> Result<Flow, SessionError> {
        if self.optimistic.is_some()
            && !matches!(
                cmd,
                Command::Query(_)
                    | Command::Ping
                    | Command::Quit
                    | Command::Statistics
                    | Command::StmtClose(_)
                    | Command::SetOption(_)
            )
        {
            // Only text statements are logged for replay: anything else runs on the primary.
            self.move_to_primary().await?;
        }
        match cmd {
            Command::Quit => return Ok(Flow::Quit),
            Command::Ping => self.send_ok(0, 0).await?,
            Command::Query(sql) => self.com_query(sql).await?,
            Command::InitDb(db) => self.com_init_db(db).await?,
            Command::Statistics => self.com_statistics().await?,
            Command::FieldList { table, wildcard } => {
                self.com_field_list(&table, &wildcard).await?;
            }
            Command::StmtPrepare(sql) => self.com_stmt_prepare(sql).await?,
            Command::StmtExecute { id, body } => self.com_stmt_execute(id, &body).await?,
            Command::StmtSendLongData { id, param, data } => {
                self.stmts.send_long_data(id, param, &data);
            }
            Command::StmtClose(id) => self.stmts.close(id),
            Command::StmtReset(id) => {
                self.stmts.reset(id)?;
                self.send_ok(0, 0).await?;
            }
            Command::SetOption(opt) => {
                self.multi_statements = opt == 0;
                let (mark, buf) = self.stream.begin();
                encode_eof(buf, 0, self.last_status);
                self.stream.finish(mark);
                self.stream.flush().await?;
            }
            Command::ResetConnection => {
                self.reset_session().await;
                self.send_ok(0, 0).await?;
            }
            Command::ChangeUser(cu) => return self.com_change_user(cu).await,
            Command::Unknown(code) => return Err(GatewayError::UnknownCommand(code).into()),
        }
        Ok(Flow::Continue)
    }

    /// The redaction scope of a statement, when the active policies redact results.
    fn redaction_scope(&self) -> Option<redact::RedactionScope> {
        let policy = self.gw.policy_full();
        policy.redacts().then(|| redact::RedactionScope {
            policy,
            user: self.user.clone(),
            peer: self.peer.clone(),
            database: self.state.schema.clone(),
            connection_id: self.id,
            in_transaction: self.in_txn,
            autocommit: self.autocommit(),
            tls: self.tls,
        })
    }

    /// What a policy sees of this session.
    fn info(&self) -> SessionInfo<'_> {
        SessionInfo {
            connection_id: self.id,
            user: &self.user,
            client_addr: &self.peer,
            database: self.state.schema.as_deref(),
            in_transaction: self.in_txn,
            autocommit: self.autocommit(),
            tls: self.tls,
            required_position: self.required_position(),
        }
    }

    /// How long the client may stay quiet between commands: its session's `wait_timeout` when
    /// it set one (as the server would close it), else the gateway's idle timeout.
    fn wait_timeout(&self) -> Duration {
        let secs = self
            .state
            .vars
            .get("wait_timeout")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(self.gw.config().frontend.idle_timeout_secs, |s| s as u64);
        Duration::from_secs(secs.max(1))
    }

    /// The session's autocommit, as the server reported it in the last reply.
    pub(super) fn autocommit(&self) -> bool {
        self.last_status & status::AUTOCOMMIT != 0
    }

    /// `SET SESSION TRANSACTION READ ONLY` (or `transaction_read_only = 1`) is in force.
    fn transactions_read_only(&self) -> bool {
        ["tx_read_only", "transaction_read_only"]
            .iter()
            .any(|v| self.state.vars.get(*v).is_some_and(|x| x == "1"))
    }

    /// A statement that opens a transaction which may write runs on the primary from its first
    /// statement, whatever a router returns: explicitly (`BEGIN`, `START TRANSACTION` without
    /// `READ ONLY`) or implicitly (autocommit off and transactions not declared read-only). The
    /// server's IN_TRANS would tell only after the first statement ran: too late to choose.
    fn opens_writable_transaction(&self, facts: &QueryFacts) -> bool {
        match facts.starts_transaction {
            Some(TransactionAccess::ReadOnly) => false,
            Some(TransactionAccess::ReadWrite) => true,
            None => !self.autocommit() && !self.transactions_read_only(),
        }
    }

    /// The connection a statement with these facts runs on: the held one (`true`), or a routed
    /// borrow.
    async fn connection_for(
        &mut self,
        facts: &QueryFacts,
    ) -> Result<(BackendConn, bool), SessionError> {
        let mut parked = None;
        if let Some(h) = self.held.take() {
            if h.why != Hold::Parked {
                return Ok((h.conn, true));
            }
            // A parked connection opened before its backend went down is not used again, nor one
            // on a draining backend unless the statement needs the previous connection.
            let usable = h.conn.is_current()
                && (facts.needs_previous_connection || !h.conn.backend.is_draining());
            if usable && (facts.needs_previous_connection || self.reads_own_write(facts, &h.conn)) {
                return Ok((h.conn, true));
            }
            if usable {
                parked = Some(h);
            } else {
                let mut h = h;
                self.learn_written(&mut h.conn).await;
                drop(h);
                self.publish_view();
            }
        }
        self.refresh_group();
        let t0 = self.trace_clock();
        let mut backend = self.route(facts);
        self.trace_phase(crate::telemetry::trace::Phase::Route, t0, Some(&backend));
        if needs_writer(facts) && Arc::ptr_eq(&backend, self.group.primary()) {
            backend = self.writer().await?;
        }
        if let Some(h) = parked {
            if Arc::ptr_eq(&h.conn.backend, &backend) {
                return self.consistent(h.conn, true).await;
            }
            // Routed elsewhere: give the parked connection back first.
            let mut h = h;
            self.learn_written(&mut h.conn).await;
            drop(h);
            self.publish_view();
        }
        let conn = match self.borrow(&backend).await {
            Err(SessionError::Reply(GatewayError::BackendUnavailable { .. }))
                if needs_writer(facts) =>
            {
                // The writer cannot be reached and the statement was not sent: it waits for the
                // monitor to see a writer again (a restart, a failover), then goes there.
                let writer = self.writer().await?;
                self.borrow(&writer).await
            }
            Err(SessionError::Reply(GatewayError::BackendUnavailable { .. }))
                if !Arc::ptr_eq(&backend, self.group.primary()) =>
            {
                // A replica is down or draining: serve from the primary rather than fail the read.
                let primary = Arc::clone(self.group.primary());
                self.borrow(&primary).await
            }
            other => other,
        }?;
        self.consistent(conn, false).await
    }

    /// The group's writer, for a statement that writes: while the group has none (a failover
    /// in progress) or several (split brain), waits up to `routing.failover-wait-ms`, then
    /// refuses the statement rather than guess.
    async fn writer(&self) -> Result<Arc<Backend>, GatewayError> {
        let wait = Duration::from_millis(self.gw.config().routing.failover_wait_ms);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let refusal = match self.group.writer() {
                Writer::One(b) => return Ok(Arc::clone(b)),
                Writer::None => GatewayError::NoWriter {
                    group: self.group.name.clone(),
                    waited_ms: self.gw.config().routing.failover_wait_ms,
                },
                Writer::Several(names) => GatewayError::SplitBrain {
                    group: self.group.name.clone(),
                    servers: names.join(", "),
                },
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(refusal);
            }
            tokio::time::sleep(WRITER_POLL).await;
        }
    }

    /// After `old`, the writer, refused a write as read-only (1290): the new writer, once the
    /// monitor sees one (within `routing.failover-wait-ms`). None: `old` is still the writer
    /// (the refusal had another cause), or none appeared.
    pub(super) async fn moved_writer(&self, old: &Arc<Backend>) -> Option<Arc<Backend>> {
        let wait = Duration::from_millis(self.gw.config().routing.failover_wait_ms);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.group.writer() {
                Writer::One(b) if !Arc::ptr_eq(b, old) => return Some(Arc::clone(b)),
                // The monitor still sees `old` as the writer: the read-only error may not be
                // about the writer at all; ask again after its next probe.
                _ if tokio::time::Instant::now() >= deadline => return None,
                _ => tokio::time::sleep(WRITER_POLL).await,
            }
        }
    }

    /// After a reload changed the fleet: the session's group as it is now (backends added or
    /// removed), unless the reload removed the group itself.
    fn refresh_group(&mut self) {
        let epoch = self.gw.fleet_epoch();
        if epoch == self.fleet_epoch {
            return;
        }
        self.fleet_epoch = epoch;
        if let Some(g) = self.gw.fleet().group(Some(&self.group.name)) {
            self.group = Arc::clone(g);
        }
    }

    fn route(&mut self, facts: &QueryFacts) -> Arc<Backend> {
        let fleet = &self.group;
        if fleet.len() == 1
            || (self.opens_writable_transaction(facts) && !self.starts_optimistic(facts))
        {
            return Arc::clone(fleet.primary());
        }
        let mut statuses = fleet.statuses();
        let info = self.info();
        if let Some(need) = info.required_position {
            for (s, b) in statuses.iter_mut().zip(fleet.backends()) {
                let (caught_up, applied) = b.progress(need);
                s.caught_up = caught_up;
                s.applied = Some(applied);
            }
        }
        let decision = self.gw.policy().route(facts, &info, &statuses);
        if let Some(c) = &mut self.cap {
            c.route = Some(capture::route(&decision, fleet.backends()));
        }
        let chosen = match decision {
            RouteDecision::Primary => None,
            RouteDecision::Backend(i) => fleet.backends().get(i),
            RouteDecision::Named(name) => fleet.by_name(&name).filter(|b| b.status().healthy),
        };
        Arc::clone(chosen.unwrap_or_else(|| fleet.primary()))
    }

    /// Borrows a pooled connection and brings it to this session's state.
    async fn borrow(&mut self, backend: &Arc<Backend>) -> Result<BackendConn, SessionError> {
        let t0 = self.acquire_clock();
        let mut conn = backend.acquire(&self.account).await?;
        self.note_acquired(backend, t0, conn.opened);
        self.turns = TURNS_UNDER_PRESSURE;
        let applied = if let Some(a) = conn.applied() {
            Arc::clone(a)
        } else {
            // Unknown history: start from the server's defaults.
            if let Err(e) = conn.conn().reset().await {
                let e = GatewayError::from_backend(backend.name(), e);
                conn.discard();
                return Err(e.into());
            }
            Arc::new(ReplayState::default())
        };
        self.apply_state(&mut conn, &applied).await?;
        Ok(conn)
    }

    /// Brings `conn`, which carries `applied`, to the session's state (schema, variables).
    async fn apply_state(
        &self,
        conn: &mut BackendConn,
        applied: &Arc<ReplayState>,
    ) -> Result<(), SessionError> {
        if !Arc::ptr_eq(applied, &self.state) {
            if let Some(sql) = self.state.diff_from(applied) {
                conn.set_applied(None);
                let name = conn.backend.name().to_string();
                conn.conn()
                    .query_drop(sql)
                    .await
                    .map_err(|e| GatewayError::from_backend(&name, e))?;
            }
            conn.set_applied(Some(Arc::clone(&self.state)));
        }
        Ok(())
    }

    /// After a statement: keep the connection, for the transaction, the pin, or affinity.
    fn after_statement(&mut self, conn: BackendConn) {
        let why = if self.in_txn {
            Hold::Transaction
        } else if !self.pins.is_empty() {
            Hold::Pinned
        } else if conn.backend.has_waiters() && self.turns == 0 && !self.unsynced_write {
            // Others wait in line and this session had its turns: give it back now. (One that
            // just wrote stays parked a moment: its write's position is learned as it leaves.)
            drop(conn);
            self.publish_view();
            return;
        } else {
            if conn.backend.has_waiters() {
                self.turns -= 1;
            }
            Hold::Parked
        };
        self.held = Some(Held { conn, why });
        self.publish_view();
    }

    /// Gives a parked connection back to its pool (learning the position of a write it ran).
    async fn release_parked(&mut self) {
        if let Some(Held {
            why: Hold::Parked, ..
        }) = &self.held
            && let Some(mut h) = self.held.take()
        {
            self.learn_written(&mut h.conn).await;
            drop(h);
            self.publish_view();
        }
    }

    /// Shows what this session holds and why (admin API, tests).
    fn publish_view(&mut self) {
        let now = (
            self.held.as_ref().map(|h| h.why),
            self.pins.len(),
            self.held.as_ref().map_or(0, |h| h.conn.thread_id()),
            self.in_txn,
        );
        if now == self.published && self.published_schema == self.state.schema {
            return;
        }
        self.published = now;
        self.published_schema.clone_from(&self.state.schema);
        let pinned_by = if self.pins.is_empty() {
            None
        } else {
            self.entry.view().pinned_by
        };
        self.entry.set_view(crate::gateway::SessionView {
            pins: self.pins.iter().copied().collect(),
            hold: self.held.as_ref().map(|h| h.why),
            backend: self
                .held
                .as_ref()
                .map(|h| (h.conn.backend.name().to_string(), h.conn.thread_id())),
            pinned_by,
            schema: self.state.schema.clone(),
            in_transaction: self.in_txn,
        });
    }

    /// The statement whose facts pin the session, for operators: its digest (no literal).
    fn note_pin_cause(&self, facts: &QueryFacts) {
        if !facts.pins.is_empty() && self.entry.view().pinned_by.is_none() {
            let mut v = self.entry.view();
            v.pinned_by = Some(facts.digest.clone());
            self.entry.set_view(v);
        }
    }

    /// Forgets every connection-bound state: COM_RESET_CONNECTION, COM_CHANGE_USER.
    async fn reset_session(&mut self) {
        self.release_dirty().await;
        self.pins.clear();
        self.in_txn = false;
        self.stmts.clear();
        self.last_insert_id = 0;
        self.last_row_count = -1;
        self.last_found_rows = 0;
        let mut fresh = ReplayState::default();
        fresh.schema.clone_from(&self.state.schema);
        self.state = Arc::new(fresh);
        self.last_status = status::AUTOCOMMIT;
        self.publish_view();
    }

    /// Gives back a held connection; one that carries a transaction or pinned state is reset
    /// first (its state belongs to this session only).
    async fn release_dirty(&mut self) {
        self.optimistic = None;
        if let Some(mut h) = self.held.take() {
            if h.why == Hold::Parked {
                self.learn_written(&mut h.conn).await;
                return;
            }
            h.conn.set_applied(None);
            if h.conn.conn().reset().await.is_err() {
                h.conn.discard();
                return;
            }
            h.conn.set_applied(Some(Arc::new(ReplayState::default())));
        }
    }

    /// `transaction-idle-timeout-secs` ran out: roll the transaction back (a reset, which also
    /// ends pinned state), give the connection back, and tell the client when it next speaks.
    async fn abandon_idle_transaction(&mut self) {
        tracing::info!(
            id = self.id,
            user = %self.user,
            secs = self.gw.config().frontend.transaction_idle_timeout_secs,
            "idle transaction rolled back"
        );
        self.release_dirty().await;
        self.pins.clear();
        self.in_txn = false;
        self.last_status &= !status::IN_TRANS;
        self.transaction_timed_out = true;
        self.publish_view();
    }

    async fn finish(&mut self) {
        self.release_dirty().await;
        self.gw.unregister(self.id);
        self.stream.shutdown().await;
    }

    async fn com_change_user(
        &mut self,
        cu: crate::protocol::command::ChangeUser,
    ) -> Result<Flow, SessionError> {
        let identity = ClientIdentity {
            user: cu.user.clone(),
            client_addr: self.peer.clone(),
            database: cu.database.clone(),
            tls: self.tls,
            attributes: cu.attributes.clone(),
        };
        let hello = HandshakeResponse {
            capabilities: self.caps,
            user: cu.user.clone(),
            auth_response: cu.auth_response.clone(),
            database: cu.database.clone(),
            auth_plugin: cu.auth_plugin.clone(),
            ..HandshakeResponse::default()
        };
        self.reset_session().await;
        let salt = self.salt;
        match authenticate(
            &mut self.stream,
            &self.gw,
            &identity,
            &hello,
            &salt,
            self.tls,
        )
        .await
        {
            Ok(grant) => {
                self.account = Arc::new(Account {
                    user: grant.backend_user.clone(),
                    password: grant.backend_password.clone(),
                    found_rows: self.account.found_rows,
                });
                let Some(group) = self
                    .gw
                    .fleet()
                    .group(grant.backend_group.as_deref())
                    .cloned()
                else {
                    let e = GatewayError::UnknownBackendGroup {
                        user: cu.user.clone(),
                        group: grant.backend_group.clone().unwrap_or_default(),
                    };
                    let _ = self.send_err(&e).await;
                    return Ok(Flow::Quit);
                };
                self.group = group;
                self.fleet_epoch = self.gw.fleet_epoch();
                self.statement_timeout = statement_timeout(&self.gw.config(), &grant);
                self.grant = grant;
                self.user_stats = self.gw.telemetry.users.get(&cu.user);
                self.user_stats
                    .connections_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let from = std::mem::replace(&mut self.user, cu.user);
                let mut state = ReplayState::default();
                if let Some(cs) = cu.charset {
                    state.set_collation(cs);
                }
                state.schema = cu.database;
                self.state = Arc::new(state);
                self.audit("change_user", Some(&format!("from user '{from}'")));
                self.confirm_database().await?;
                self.send_ok(0, 0).await?;
                Ok(Flow::Continue)
            }
            // The ERR was sent by authenticate; a failed COM_CHANGE_USER closes the connection.
            Err(e) => {
                let why = match &e {
                    crate::frontend::connect::ConnectError::Refused(e) => e.to_string(),
                    crate::frontend::connect::ConnectError::Io(e) => e.to_string(),
                };
                self.audit(
                    "change_user_failed",
                    Some(&format!("to user '{}': {why}", identity.user)),
                );
                Ok(Flow::Quit)
            }
        }
    }

    async fn com_init_db(&mut self, db: String) -> Result<(), SessionError> {
        let mut next = (*self.state).clone();
        next.schema = Some(db);
        let previous = std::mem::replace(&mut self.state, Arc::new(next));
        let facts = QueryFacts::default();
        let (mut conn, reused) = match self.connection_for(&facts).await {
            Ok(c) => c,
            Err(e) => {
                self.state = previous;
                return Err(e);
            }
        };
        if reused {
            // A kept connection is still in the previous database: change it there (the
            // server checks that the database exists and may be used).
            let applied = conn
                .applied()
                .map_or_else(|| Arc::clone(&previous), Arc::clone);
            if let Err(e) = self.apply_state(&mut conn, &applied).await {
                self.state = previous;
                conn.set_applied(Some(Arc::clone(&self.state)));
                self.after_statement(conn);
                return Err(e);
            }
        }
        self.after_statement(conn);
        self.send_ok(0, 0).await?;
        Ok(())
    }

    async fn com_statistics(&mut self) -> Result<(), SessionError> {
        let uptime = self.gw.started.elapsed().as_secs();
        let text = format!(
            "Uptime: {uptime}  Threads: {}  Questions: {}  Slow queries: 0  Opens: 0  Open tables: 0  Queries per second avg: {:.3}",
            self.gw.session_count(),
            self.gw.questions.load(std::sync::atomic::Ordering::Relaxed),
            self.gw.questions.load(std::sync::atomic::Ordering::Relaxed) as f64
                / uptime.max(1) as f64
        );
        self.stream.write_packet(text.as_bytes());
        self.stream.flush().await?;
        Ok(())
    }

    pub(crate) async fn send_ok(
        &mut self,
        affected_rows: u64,
        last_insert_id: u64,
    ) -> Result<(), PacketError> {
        let (mark, buf) = self.stream.begin();
        OkPacket {
            affected_rows,
            last_insert_id,
            status: self.last_status,
            warnings: 0,
            info: b"",
        }
        .encode(buf, false);
        self.stream.finish(mark);
        self.stream.flush().await
    }

    pub(crate) async fn send_err(&mut self, e: &GatewayError) -> Result<(), PacketError> {
        let (code, state) = e.code_and_state();
        let message = e.to_string();
        let (mark, buf) = self.stream.begin();
        ErrPacket {
            code,
            sqlstate: state,
            message: &message,
        }
        .encode(buf);
        self.stream.finish(mark);
        self.stream.flush().await
    }
}
