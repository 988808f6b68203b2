//! A policy set: the loaded policies as one implementation of the phase trait. Guards run in
//! order (the first deny wins; a rewrite feeds the next guard), then one router; credentials once
//! per connection on a fresh instance. Kinds without a policy fall back to the built-in policy.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sluice_wit::router::exports::sluice::policy::routing;
use sluice_wit::types;
use sluice_wit::{
    credentials::exports::sluice::policy::identity, guard::exports::sluice::policy::safety,
};

use super::manifest::OnError;
use super::reuse::{RouteAsk, Shape};
use super::runtime::{Bound, CallError, Plugin, Warm};
use crate::config::{AuthPlugin, Config, Role};
use crate::facts::{self, QueryFacts, StatementKind};
use crate::phase::{
    BackendStatus, ClientIdentity, ColumnAction, ColumnInfo, ConfigPolicy, Grant, Policy,
    RouteDecision, SessionInfo, Verdict,
};
use sluice_wit::redactor::exports::sluice::policy::redaction;

/// The active policies.
pub struct PolicySet {
    pub guards: Vec<Arc<Plugin>>,
    pub router: Option<Arc<Plugin>>,
    pub redactor: Option<Arc<Plugin>>,
    pub credentials: Option<Arc<Plugin>>,
    pub builtin: ConfigPolicy,
    /// Redaction plans by result shape (digest + columns): planned once, applied per row.
    plans: std::sync::Mutex<std::collections::HashMap<u64, Arc<[ColumnAction]>>>,
}

/// Plans kept at most; the cache starts over beyond (a new shape costs one plan call).
const MAX_PLANS: usize = 10_000;

fn kind(k: StatementKind) -> types::StatementKind {
    use StatementKind as S;
    use types::StatementKind as T;
    match k {
        S::Select => T::Select,
        S::Insert => T::Insert,
        S::Update => T::Update,
        S::Delete => T::Delete,
        S::Replace => T::Replace,
        S::Ddl => T::Ddl,
        S::Transaction => T::Transaction,
        S::Set => T::Set,
        S::Use => T::Use,
        S::Show => T::Show,
        S::Call => T::Call,
        S::LoadData => T::LoadData,
        S::Other => T::Other,
    }
}

/// The scalar facts, passed to every policy by value (the text parts go through the imported
/// `statement` functions, which read the store's [`CallContext`]).
pub fn wit_facts(f: &QueryFacts, sql: &str) -> types::QueryFacts {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    types::QueryFacts {
        kind: kind(f.kind),
        read_only: f.read_only,
        locking_read: f.locking_read,
        has_where: f.has_where,
        multi_statement: f.multi_statement,
        length: count(sql.len()),
        table_count: count(f.tables.len()),
        hint_count: count(f.hints.len()),
        digest_hash: f.digest_hash,
    }
}

pub fn wit_session(s: &SessionInfo<'_>) -> types::SessionInfo {
    types::SessionInfo {
        connection_id: u64::from(s.connection_id),
        in_transaction: s.in_transaction,
        autocommit: s.autocommit,
        tls: s.tls,
        must_see_position: s.required_position.is_some(),
    }
}

/// One statement as a policy call sees it: the host's facts, the text, the session.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub facts: &'a QueryFacts,
    pub sql: &'a str,
    pub session: &'a SessionInfo<'a>,
}

impl Call<'_> {
    /// Runs `f` on a warm instance of `p` whose store holds this statement (what its
    /// `statement` and `session` handles read); `f` gets the facts and session passed by value.
    fn on<R: Send>(
        self,
        p: &Plugin,
        f: impl FnOnce(&mut Warm, types::QueryFacts, types::SessionInfo) -> wasmtime::Result<R> + Send,
    ) -> Result<R, CallError> {
        let q = wit_facts(self.facts, self.sql);
        let s = wit_session(self.session);
        p.call(|w| {
            w.store
                .data_mut()
                .context
                .load(self.facts, self.sql, self.session);
            f(w, q, s)
        })
    }
}

fn wit_backend(b: &BackendStatus) -> types::BackendStatus {
    types::BackendStatus {
        role: match b.role {
            Role::Primary => types::Role::Primary,
            Role::Replica => types::Role::Replica,
        },
        healthy: b.healthy,
        lag_ms: b.lag_ms,
        weight: b.weight,
    }
}

fn wit_load(b: &BackendStatus) -> types::BackendLoad {
    types::BackendLoad {
        in_use: b.in_use,
        idle: b.idle,
        in_flight: b.load.in_flight,
        service_ewma_us: b.load.service_ewma_us,
        response_ewma_us: b.load.response_ewma_us,
        peak_ewma_us: b.load.peak_ewma_us,
    }
}

fn mismatch() -> wasmtime::Error {
    wasmtime::Error::msg("policy kind does not match its bindings")
}

impl PolicySet {
    /// Only the built-in policy.
    pub fn builtin(builtin: ConfigPolicy) -> Self {
        Self {
            guards: Vec::new(),
            router: None,
            redactor: None,
            credentials: None,
            builtin,
            plans: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Every loaded policy, for status reports.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.guards
            .iter()
            .chain(&self.router)
            .chain(&self.redactor)
            .chain(&self.credentials)
    }

    /// Runs one guard.
    pub fn run_guard(g: &Plugin, call: Call<'_>) -> Result<safety::Checked, CallError> {
        call.on(g, |w, q, s| match &w.bound {
            Bound::Guard(b) => b.sluice_policy_safety().call_check(&mut w.store, q, s),
            _ => Err(mismatch()),
        })
    }

    /// One guard's verdict: reused when an earlier one carries to this statement, else the
    /// guard's (remembered as far as it says it carries).
    pub fn guard_verdict(g: &Plugin, call: Call<'_>) -> Result<safety::Verdict, CallError> {
        let shape = Shape {
            facts: call.facts,
            length: call.sql.len(),
            user: call.session.user,
        };
        if let Some(v) = g.reuse.get(shape) {
            g.stats.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        let checked = Self::run_guard(g, call)?;
        g.reuse.remember(shape, &checked.verdict, checked.reach);
        Ok(checked.verdict)
    }

    /// Runs the router. The instance hears of the fleet's health only when it changed since
    /// its last call; the load it reads through `fleet.load`.
    pub fn run_router(
        r: &Plugin,
        call: Call<'_>,
        fleet: &[BackendStatus],
    ) -> Result<routing::Routed, CallError> {
        call.on(r, |w, q, s| {
            let Bound::Router(b) = &w.bound else {
                return Err(mismatch());
            };
            let data = w.store.data_mut();
            data.context.load.clear();
            data.context.load.extend(fleet.iter().map(wit_load));
            data.context.caught_up.clear();
            data.context
                .caught_up
                .extend(fleet.iter().map(|b| b.caught_up));
            data.context.applied.clear();
            // Positions as text only for a session that requires one (the WIT offers them
            // then): most statements need none, and each is an allocation per backend.
            if call.session.required_position.is_some() {
                data.context.applied.extend(
                    fleet
                        .iter()
                        .map(|b| b.applied.as_ref().map(ToString::to_string)),
                );
            }
            let seen = data.fleet_seen.as_deref().is_some_and(|seen| {
                seen.len() == fleet.len()
                    && seen.iter().zip(fleet).all(|(a, b)| *a == wit_backend(b))
            });
            if !seen {
                let now: Vec<types::BackendStatus> = fleet.iter().map(wit_backend).collect();
                b.sluice_policy_routing()
                    .call_fleet_changed(&mut w.store, &now)?;
                w.store.data_mut().fleet_seen = Some(now);
            }
            b.sluice_policy_routing().call_route(&mut w.store, q, s)
        })
    }

    /// Runs a credentials policy for one login, on a fresh instance: its grant, or the reason
    /// it refused.
    pub fn run_resolve(
        p: &Plugin,
        client: &ClientIdentity,
    ) -> Result<Result<identity::Grant, String>, CallError> {
        let hello = identity::ClientHello {
            user: client.user.clone(),
            client_addr: client.client_addr.clone(),
            database: client.database.clone(),
            tls: client.tls,
            attributes: client.attributes.clone(),
        };
        p.call_fresh(|w| match &w.bound {
            Bound::Credentials(b) => b
                .sluice_policy_identity()
                .call_resolve(&mut w.store, &hello),
            _ => Err(mismatch()),
        })
    }

    /// Runs the redactor's plan for a result shape.
    pub fn run_plan(
        r: &Plugin,
        call: Call<'_>,
        columns: &[types::Column],
    ) -> Result<Vec<redaction::Action>, CallError> {
        call.on(r, |w, q, s| match &w.bound {
            Bound::Redactor(b) => {
                b.sluice_policy_redaction()
                    .call_plan(&mut w.store, q, s, columns)
            }
            _ => Err(mismatch()),
        })
    }
}

impl Policy for PolicySet {
    /// The same loaded plugins (warm instances and all) over the new built-in policy.
    fn with_config(&self, config: &Config) -> Option<Box<dyn Policy>> {
        Some(Box::new(Self {
            guards: self.guards.clone(),
            router: self.router.clone(),
            redactor: self.redactor.clone(),
            credentials: self.credentials.clone(),
            builtin: ConfigPolicy::new(config.clone()),
            plans: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    fn resolve_credentials(&self, client: &ClientIdentity) -> Option<Grant> {
        let Some(p) = &self.credentials else {
            return self.builtin.resolve_credentials(client);
        };
        match Self::run_resolve(p, client) {
            Ok(Ok(g)) => Some(
                Grant {
                    password: g.password,
                    auth_plugin: if g.auth_plugin == "caching_sha2_password" {
                        AuthPlugin::CachingSha2Password
                    } else {
                        AuthPlugin::MysqlNativePassword
                    },
                    backend_user: g.backend_user,
                    backend_password: g.backend_password,
                    max_connections: g.max_connections as usize,
                    max_statements_per_second: g.max_statements_per_second,
                    statements_burst: g.statements_burst,
                    statement_timeout_ms: g.statement_timeout_ms,
                    backend_group: g.backend_group,
                }
                .with_defaults(&self.builtin.config().limits),
            ),
            Ok(Err(reason)) => {
                tracing::info!(policy = p.name(), user = %client.user, %reason, "login refused by policy");
                None
            }
            Err(e) => {
                tracing::warn!(policy = p.name(), user = %client.user, error = %e, "credentials policy failed");
                match p.manifest.on_error {
                    OnError::Allow => self.builtin.resolve_credentials(client),
                    OnError::Deny | OnError::Primary => None,
                }
            }
        }
    }

    fn check(&self, facts: &QueryFacts, sql: &str, session: &SessionInfo<'_>) -> Verdict {
        if self.guards.is_empty() {
            return Verdict::Allow;
        }
        let mut rewritten: Option<(QueryFacts, String)> = None;
        let mut reported: Option<Verdict> = None;
        for g in &self.guards {
            // A rewrite by an earlier guard is what the next one sees.
            let (facts, sql) = rewritten
                .as_ref()
                .map_or((facts, sql), |(f, s)| (f, s.as_str()));
            match Self::guard_verdict(
                g,
                Call {
                    facts,
                    sql,
                    session,
                },
            ) {
                Ok(safety::Verdict::Allow) => {}
                Ok(safety::Verdict::Deny(d)) => {
                    g.stats.verdict(false, d.code, &d.message);
                    return Verdict::Deny {
                        policy: g.name().to_string(),
                        code: d.code,
                        message: d.message,
                    };
                }
                Ok(safety::Verdict::Rewrite(new_sql)) => {
                    rewritten = Some((facts::analyze(&new_sql), new_sql));
                }
                Ok(safety::Verdict::Report(d)) => {
                    g.stats.verdict(true, d.code, &d.message);
                    reported.get_or_insert(Verdict::Report {
                        policy: g.name().to_string(),
                        code: d.code,
                        message: d.message,
                    });
                }
                Err(e) => {
                    tracing::warn!(policy = g.name(), error = %e, "guard failed");
                    if g.manifest.on_error != OnError::Allow {
                        return Verdict::Deny {
                            policy: g.name().to_string(),
                            code: 1105,
                            message: format!("the policy failed ({e}); the statement was not run"),
                        };
                    }
                }
            }
        }
        match (rewritten, reported) {
            (Some((_, sql)), _) => Verdict::Rewrite(sql),
            (None, Some(r)) => r,
            (None, None) => Verdict::Allow,
        }
    }

    fn route(
        &self,
        facts: &QueryFacts,
        session: &SessionInfo<'_>,
        fleet: &[BackendStatus],
    ) -> RouteDecision {
        let Some(r) = &self.router else {
            return self.builtin.route(facts, session, fleet);
        };
        let ask = RouteAsk {
            facts,
            session,
            fleet,
        };
        if let Some(d) = r.routes.get(ask) {
            r.stats.reused.fetch_add(1, Ordering::Relaxed);
            return d;
        }
        let call = Call {
            facts,
            sql: "",
            session,
        };
        match Self::run_router(r, call, fleet) {
            Ok(routed) => {
                let d = match routed.decision {
                    routing::RouteDecision::Primary => RouteDecision::Primary,
                    routing::RouteDecision::Backend(i) => {
                        RouteDecision::Backend(usize::try_from(i).unwrap_or(usize::MAX))
                    }
                    routing::RouteDecision::Named(name) => RouteDecision::Named(name),
                };
                r.routes.remember(ask, &d, routed.reach);
                d
            }
            Err(e) => {
                tracing::warn!(policy = r.name(), error = %e, "router failed; using the primary");
                RouteDecision::Primary
            }
        }
    }

    fn redacts(&self) -> bool {
        self.redactor.is_some()
    }

    fn plan_redaction(
        &self,
        facts: &QueryFacts,
        session: &SessionInfo<'_>,
        columns: &[ColumnInfo<'_>],
    ) -> Option<Arc<[ColumnAction]>> {
        let r = self.redactor.as_ref()?;
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            facts.digest_hash.hash(&mut h);
            for c in columns {
                (c.schema, c.org_table, c.org_name, c.name).hash(&mut h);
            }
            h.finish()
        };
        if let Some(p) = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Some(Arc::clone(p));
        }
        let call = Call {
            facts,
            sql: "",
            session,
        };
        let cols: Vec<types::Column> = columns
            .iter()
            .map(|c| types::Column {
                schema: c.schema.to_string(),
                table: c.table.to_string(),
                org_table: c.org_table.to_string(),
                name: c.name.to_string(),
                org_name: c.org_name.to_string(),
            })
            .collect();
        let planned = Self::run_plan(r, call, &cols);
        let plan: Arc<[ColumnAction]> = match planned {
            Ok(actions) => (0..columns.len())
                .map(|i| match actions.get(i) {
                    None | Some(redaction::Action::Keep) => ColumnAction::Keep,
                    Some(redaction::Action::Mask) => ColumnAction::Mask,
                    Some(redaction::Action::KeepLast(n)) => ColumnAction::KeepLast(*n),
                    Some(redaction::Action::Hash) => ColumnAction::Hash,
                    Some(redaction::Action::Null) => ColumnAction::Null,
                    Some(redaction::Action::Custom) => ColumnAction::Custom,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(policy = r.name(), error = %e, "redactor failed; withholding every column");
                // Fail closed: a result the redactor could not plan goes out with every value NULL.
                return Some(columns.iter().map(|_| ColumnAction::Null).collect());
            }
        };
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert(key, Arc::clone(&plan));
        Some(plan)
    }

    fn transform(
        &self,
        column: u32,
        cells: Vec<u8>,
        lengths: Vec<i32>,
    ) -> Option<(Vec<u8>, Vec<i32>)> {
        let r = self.redactor.as_ref()?;
        let out = r.call(|w| match &w.bound {
            Bound::Redactor(b) => {
                b.sluice_policy_redaction()
                    .call_transform(&mut w.store, column, &cells, &lengths)
            }
            _ => Err(mismatch()),
        });
        match out {
            Ok((cells, out_lengths)) if out_lengths.len() == lengths.len() => {
                Some((cells, out_lengths))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(policy = r.name(), error = %e, "transform failed; withholding the cells");
                None
            }
        }
    }

    fn redact_sql(&self, sql: &str) -> Option<String> {
        let r = self.redactor.as_ref()?;
        r.call(|w| match &w.bound {
            Bound::Redactor(b) => b
                .sluice_policy_redaction()
                .call_redact_sql(&mut w.store, sql),
            _ => Err(mismatch()),
        })
        .ok()
    }
}
