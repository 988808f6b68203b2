//! Policy cases: a file of statements (or logins) and the decision one policy must make for
//! each, run by `sluice policy test` so that a policy's author checks it in their own CI.
//!
//! ```toml
//! policy = "../../policies/guard.toml"   # the manifest, relative to this file
//! # plugin = "guard.wasm"                # instead of the manifest's plugin
//! [settings]                             # over the manifest's settings (key by key)
//! mode = "enforce"
//! [defaults]                             # session facts of every case
//! user = "app"
//! [[case]]
//! name = "DDL is refused"
//! sql = "DROP TABLE t"
//! expect = "deny"                        # allow | deny | report | rewrite | route | masked |
//! code = 1227                            # login | refuse
//! message = "DDL"                        # a part of the message
//! ```
//!
//! The policy is loaded the way the gateway loads it (compiled, linked, configured,
//! smoke-called), in any language. Routers decide over `[[backend]]` (default: a primary and
//! two replicas), redactors over a case's `columns`, credentials for a case's `user` with the
//! file's `[secrets]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_wit::types;

use super::manifest::{Kind, Manifest};
use super::runtime::{Plugin, PluginEngine};
use super::secrets::SecretSources;
use super::set::{Call, PolicySet};
use crate::config::Role;
use crate::phase::{BackendStatus, ClientIdentity, SessionInfo};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CaseFile {
    policy: PathBuf,
    plugin: Option<PathBuf>,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default, rename = "backend")]
    backends: Vec<CaseBackend>,
    #[serde(default)]
    defaults: SessionFacts,
    #[serde(rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CaseBackend {
    name: String,
    role: Role,
    #[serde(default = "yes")]
    healthy: bool,
    #[serde(default)]
    lag_ms: Option<u32>,
}

fn yes() -> bool {
    true
}

/// Session facts; a case's override the file's `[defaults]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct SessionFacts {
    user: Option<String>,
    database: Option<String>,
    client_addr: Option<String>,
    tls: Option<bool>,
    in_transaction: Option<bool>,
    autocommit: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    sql: String,
    user: Option<String>,
    database: Option<String>,
    client_addr: Option<String>,
    tls: Option<bool>,
    in_transaction: Option<bool>,
    autocommit: Option<bool>,
    /// Result columns for a redactor: `name`, `table.name` or `schema.table.name`.
    #[serde(default)]
    columns: Vec<String>,
    expect: Expect,
    code: Option<u16>,
    message: Option<String>,
    /// The SQL a rewrite must produce.
    rewrite: Option<String>,
    /// `primary`, `replica` (any replica) or a backend's name.
    backend: Option<String>,
    /// The columns a redactor must not keep as they are.
    masked: Option<Vec<String>>,
    /// The backend account a login must run as.
    backend_user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Expect {
    Allow,
    Deny,
    Report,
    Rewrite,
    Route,
    Masked,
    Login,
    Refuse,
}

/// One case's outcome.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub expected: String,
    pub actual: String,
}

/// A case file's outcome.
#[derive(Debug, Serialize)]
pub struct FileResult {
    pub file: String,
    pub policy: String,
    pub kind: &'static str,
    pub cases: Vec<CaseResult>,
}

impl FileResult {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }
}

/// Loads the file's policy and runs every case. An error means the file or the policy could
/// not be used (not a failed case).
pub fn run_file(engine: &Arc<PluginEngine>, file: &Path) -> Result<FileResult, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let cases: CaseFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    if cases.cases.is_empty() {
        return Err("no [[case]]".into());
    }
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let mut manifest = Manifest::load(&base.join(&cases.policy))
        .map_err(|e| format!("policy {}: {e}", cases.policy.display()))?;
    if let Some(p) = &cases.plugin {
        manifest.plugin = base.join(p);
    }
    if !cases.settings.is_empty() {
        let mut settings: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&manifest.settings_json).map_err(|e| e.to_string())?;
        for (k, v) in &cases.settings {
            settings.insert(
                k.clone(),
                serde_json::to_value(v).map_err(|e| format!("key `settings.{k}`: {e}"))?,
            );
        }
        manifest.settings_json = serde_json::Value::Object(settings).to_string();
    }
    let secrets = Arc::new(SecretSources {
        inline: cases.secrets.clone(),
        ..SecretSources::default()
    });
    let plugin = super::loader::load_plugin(engine, manifest, &secrets)
        .map_err(|e| format!("policy {}: {}", cases.policy.display(), e.reason))?;
    let fleet = fleet(&cases.backends);
    let results = cases
        .cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let actual = decide(&plugin, case, &cases.defaults, &fleet);
            let passed = matches(case, &actual);
            CaseResult {
                name: if case.name.is_empty() {
                    format!("case {}", i + 1)
                } else {
                    case.name.clone()
                },
                passed,
                expected: expected(case),
                actual: actual.to_string(),
            }
        })
        .collect();
    Ok(FileResult {
        file: file.display().to_string(),
        policy: plugin.name().to_string(),
        kind: plugin.manifest.kind.name(),
        cases: results,
    })
}

fn fleet(backends: &[CaseBackend]) -> Vec<BackendStatus> {
    if backends.is_empty() {
        return vec![
            BackendStatus::idle("primary", Role::Primary, true, Some(0)),
            BackendStatus::idle("replica1", Role::Replica, true, Some(0)),
            BackendStatus::idle("replica2", Role::Replica, true, Some(0)),
        ];
    }
    backends
        .iter()
        .map(|b| BackendStatus::idle(&b.name, b.role, b.healthy, b.lag_ms))
        .collect()
}

/// What the policy decided for a case.
#[derive(Debug)]
enum Decision {
    Allow,
    Deny(u16, String),
    Report(u16, String),
    Rewrite(String),
    /// The backend's name and role.
    Route(String, Role),
    /// The columns not kept as they are.
    Masked(Vec<String>),
    Login(String),
    Refuse(String),
    /// The call itself failed (trap, deadline, memory), or the kind has no such decision.
    Failed(String),
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Allow => write!(f, "allow"),
            Self::Deny(code, m) => write!(f, "deny {code}: {m}"),
            Self::Report(code, m) => write!(f, "report {code}: {m}"),
            Self::Rewrite(sql) => write!(f, "rewrite: {sql}"),
            Self::Route(name, _) => write!(f, "route {name}"),
            Self::Masked(cols) => write!(f, "masked [{}]", cols.join(", ")),
            Self::Login(user) => write!(f, "login as {user}"),
            Self::Refuse(reason) => write!(f, "refuse: {reason}"),
            Self::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

fn decide(p: &Plugin, case: &Case, d: &SessionFacts, fleet: &[BackendStatus]) -> Decision {
    let user = case.user.as_deref().or(d.user.as_deref()).unwrap_or("app");
    let client_addr = case
        .client_addr
        .as_deref()
        .or(d.client_addr.as_deref())
        .unwrap_or("127.0.0.1");
    let database = case.database.as_deref().or(d.database.as_deref());
    let tls = case.tls.or(d.tls).unwrap_or(false);
    if p.manifest.kind == Kind::Credentials {
        let client = ClientIdentity {
            user: user.to_string(),
            client_addr: client_addr.to_string(),
            database: database.map(str::to_string),
            tls,
            attributes: Vec::new(),
        };
        return match PolicySet::run_resolve(p, &client) {
            Ok(Ok(g)) => Decision::Login(g.backend_user),
            Ok(Err(reason)) => Decision::Refuse(reason),
            Err(e) => Decision::Failed(e.to_string()),
        };
    }
    let facts = crate::facts::analyze(&case.sql);
    let session = SessionInfo {
        connection_id: 1,
        user,
        client_addr,
        database,
        in_transaction: case.in_transaction.or(d.in_transaction).unwrap_or(false),
        autocommit: case.autocommit.or(d.autocommit).unwrap_or(true),
        tls,
        required_position: None,
    };
    let call = Call {
        facts: &facts,
        sql: &case.sql,
        session: &session,
    };
    match p.manifest.kind {
        Kind::Guard => guard_decision(p, call),
        Kind::Router => route_decision(p, call, fleet),
        Kind::Redactor => plan_decision(p, call, &case.columns),
        Kind::Credentials => Decision::Failed("unreachable".into()),
    }
}

fn guard_decision(p: &Plugin, call: Call<'_>) -> Decision {
    use sluice_wit::guard::exports::sluice::policy::safety::Verdict;
    match PolicySet::run_guard(p, call) {
        Ok(checked) => match checked.verdict {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny(d) => Decision::Deny(d.code, d.message),
            Verdict::Report(d) => Decision::Report(d.code, d.message),
            Verdict::Rewrite(sql) => Decision::Rewrite(sql),
        },
        Err(e) => Decision::Failed(e.to_string()),
    }
}

fn route_decision(p: &Plugin, call: Call<'_>, fleet: &[BackendStatus]) -> Decision {
    use sluice_wit::router::exports::sluice::policy::routing::RouteDecision;
    let primary = || {
        fleet
            .iter()
            .find(|b| b.role == Role::Primary)
            .map_or_else(|| "primary".to_string(), |b| b.name.to_string())
    };
    // As the gateway does: an index out of range or an unknown name is the primary.
    match PolicySet::run_router(p, call, fleet).map(|r| r.decision) {
        Ok(RouteDecision::Primary) => Decision::Route(primary(), Role::Primary),
        Ok(RouteDecision::Backend(i)) => fleet.get(i as usize).map_or_else(
            || Decision::Route(primary(), Role::Primary),
            |b| Decision::Route(b.name.to_string(), b.role),
        ),
        Ok(RouteDecision::Named(n)) => fleet.iter().find(|b| *b.name == *n).map_or_else(
            || Decision::Route(primary(), Role::Primary),
            |b| Decision::Route(b.name.to_string(), b.role),
        ),
        Err(e) => Decision::Failed(e.to_string()),
    }
}

fn plan_decision(p: &Plugin, call: Call<'_>, columns: &[String]) -> Decision {
    use sluice_wit::redactor::exports::sluice::policy::redaction::Action;
    let cols: Vec<types::Column> = columns
        .iter()
        .map(|c| {
            let mut parts = c.rsplitn(3, '.');
            let name = parts.next().unwrap_or_default().to_string();
            let table = parts.next().unwrap_or_default().to_string();
            let schema = parts.next().unwrap_or_default().to_string();
            types::Column {
                schema,
                org_table: table.clone(),
                table,
                org_name: name.clone(),
                name,
            }
        })
        .collect();
    match PolicySet::run_plan(p, call, &cols) {
        Ok(actions) => Decision::Masked(
            cols.iter()
                .zip(actions.iter().map(Some).chain(std::iter::repeat(None)))
                .filter(|(_, a)| a.is_some_and(|a| !matches!(a, Action::Keep)))
                .map(|(c, _)| c.name.clone())
                .collect(),
        ),
        Err(e) => Decision::Failed(e.to_string()),
    }
}

fn message_matches(want: Option<&String>, got: &str) -> bool {
    want.is_none_or(|w| got.contains(w.as_str()))
}

fn matches(case: &Case, actual: &Decision) -> bool {
    let code = |got: u16| case.code.is_none_or(|c| c == got);
    match (case.expect, actual) {
        (Expect::Allow, Decision::Allow) => true,
        (Expect::Deny, Decision::Deny(c, m)) | (Expect::Report, Decision::Report(c, m)) => {
            code(*c) && message_matches(case.message.as_ref(), m)
        }
        (Expect::Rewrite, Decision::Rewrite(sql)) => case.rewrite.as_ref().is_none_or(|w| w == sql),
        (Expect::Route, Decision::Route(name, role)) => match case.backend.as_deref() {
            None => true,
            Some("primary") => *role == Role::Primary,
            Some("replica") => *role == Role::Replica,
            Some(want) => want == name,
        },
        (Expect::Masked, Decision::Masked(cols)) => case.masked.as_ref().is_none_or(|want| {
            let mut want: Vec<&str> = want
                .iter()
                .map(|c| c.rsplit('.').next().unwrap_or(c))
                .collect();
            let mut got: Vec<&str> = cols.iter().map(String::as_str).collect();
            want.sort_unstable();
            got.sort_unstable();
            want == got
        }),
        (Expect::Login, Decision::Login(user)) => {
            case.backend_user.as_ref().is_none_or(|w| w == user)
        }
        (Expect::Refuse, Decision::Refuse(reason)) => {
            message_matches(case.message.as_ref(), reason)
        }
        _ => false,
    }
}

/// The expectation, as the table shows it.
fn expected(case: &Case) -> String {
    let mut s = match case.expect {
        Expect::Allow => "allow".to_string(),
        Expect::Deny | Expect::Report => format!(
            "{}{}",
            if case.expect == Expect::Deny {
                "deny"
            } else {
                "report"
            },
            case.code.map(|c| format!(" {c}")).unwrap_or_default()
        ),
        Expect::Rewrite => case
            .rewrite
            .as_ref()
            .map_or_else(|| "rewrite".into(), |s| format!("rewrite: {s}")),
        Expect::Route => format!("route {}", case.backend.as_deref().unwrap_or("anywhere")),
        Expect::Masked => case
            .masked
            .as_ref()
            .map_or_else(|| "masked".into(), |m| format!("masked [{}]", m.join(", "))),
        Expect::Login => case
            .backend_user
            .as_ref()
            .map_or_else(|| "login".into(), |u| format!("login as {u}")),
        Expect::Refuse => "refuse".into(),
    };
    if let Some(m) = &case.message {
        use std::fmt::Write;
        let _ = write!(s, " ~ \"{m}\"");
    }
    s
}

/// The results as a table a person reads.
pub fn table(results: &[FileResult]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let (mut passed, mut failed) = (0, 0);
    for r in results {
        let _ = writeln!(out, "{} ({} `{}`)", r.file, r.kind, r.policy);
        let width = r
            .cases
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .min(60);
        for c in &r.cases {
            if c.passed {
                passed += 1;
                let _ = writeln!(out, "  pass  {:width$}  {}", c.name, c.actual);
            } else {
                failed += 1;
                let _ = writeln!(
                    out,
                    "  FAIL  {:width$}  expected {}\n        {:width$}  got      {}",
                    c.name, c.expected, "", c.actual
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases: {passed} passed, {failed} failed",
        passed + failed
    );
    out
}
