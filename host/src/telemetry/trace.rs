//! Statement traces: which statements are traced (a client's W3C `traceparent`, sent the
//! sqlcommenter way as `/*traceparent='00-<trace>-<span>-01'*/`, or the sampling ratio), the
//! phases a traced statement goes through, and the spans they become, named and attributed as
//! OpenTelemetry's database semantic conventions say.
//!
//! A statement is decided once, when it arrives. An untraced one costs that decision and nothing
//! else; a traced one keeps a clock reading per phase, and its spans are built after its answer
//! went out, off the client's latency.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::facts::QueryFacts;
use crate::pool::Backend;

/// A step of a statement, reported as a child of its SERVER span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Guard,
    Route,
    Acquire,
    Create,
    Execute,
    Redact,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Guard => "policy.guard",
            Self::Route => "router.decide",
            Self::Acquire => "pool.acquire",
            Self::Create => "connection.create",
            Self::Execute => "connection.execute",
            Self::Redact => "result.redact",
        }
    }

    /// Executing and connecting talk to a backend: CLIENT spans; the rest is the gateway's own.
    fn kind(self) -> SpanKind {
        match self {
            Self::Execute | Self::Create => SpanKind::Client,
            _ => SpanKind::Internal,
        }
    }
}

/// One phase as it ran.
pub struct Mark {
    pub phase: Phase,
    pub start: Instant,
    pub end: Instant,
    /// The backend it talked to (acquire, create, execute).
    pub backend: Option<Arc<Backend>>,
}

/// The span a span hangs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The client's span (from its `traceparent`), not one of the gateway's.
    pub remote: bool,
}

/// A `traceparent` found in a statement's comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub parent: Parent,
    pub sampled: bool,
}

/// Finds a W3C `traceparent` (version 00) in the statement's text, as sqlcommenter writes it.
pub fn traceparent(sql: &[u8]) -> Option<Traceparent> {
    const KEY: &[u8] = b"traceparent=";
    let at = memchr::memmem::find(sql, KEY)?;
    let rest = &sql[at + KEY.len()..];
    let quote = *rest.first()?;
    if quote != b'\'' && quote != b'"' {
        return None;
    }
    // 00-<32 hex>-<16 hex>-<2 hex>
    let v = rest.get(1..56)?;
    if rest.get(56) != Some(&quote) || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    fn hex(b: &[u8]) -> Option<&str> {
        std::str::from_utf8(b).ok()
    }
    let trace_id = TraceId::from_hex(hex(&v[3..35])?).ok()?;
    let span_id = SpanId::from_hex(hex(&v[36..52])?).ok()?;
    let flags = u8::from_str_radix(hex(&v[53..55])?, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(Traceparent {
        parent: Parent {
            trace_id,
            span_id,
            remote: true,
        },
        sampled: flags & 1 == 1,
    })
}

pub fn new_trace_id() -> TraceId {
    TraceId::from(rand::random::<u128>().max(1))
}

pub fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

/// A traced statement while it runs.
pub struct StatementTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<Parent>,
    pub wall: SystemTime,
    pub start: Instant,
    pub marks: Vec<Mark>,
}

impl StatementTrace {
    pub fn new(parent: Option<Parent>) -> Self {
        Self {
            trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
            span_id: new_span_id(),
            parent,
            wall: SystemTime::now(),
            start: Instant::now(),
            marks: Vec::with_capacity(6),
        }
    }

    fn at(&self, t: Instant) -> SystemTime {
        self.wall + t.saturating_duration_since(self.start)
    }
}

/// A session's open transaction, as a span its statements hang under.
pub struct TransactionTrace {
    /// Not traced: its statements are not either (unless one brings a sampled `traceparent`).
    pub sampled: bool,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<Parent>,
    pub wall: SystemTime,
    pub start: Instant,
    pub statements: u32,
}

impl TransactionTrace {
    /// The transaction the statement `first` began (`None`: an untraced statement began it).
    pub fn began_by(first: Option<&mut StatementTrace>) -> Self {
        let Some(s) = first else {
            return Self {
                sampled: false,
                trace_id: TraceId::INVALID,
                span_id: SpanId::INVALID,
                parent: None,
                wall: SystemTime::now(),
                start: Instant::now(),
                statements: 0,
            };
        };
        let t = Self {
            sampled: true,
            trace_id: s.trace_id,
            span_id: new_span_id(),
            parent: s.parent,
            wall: s.wall,
            start: s.start,
            statements: 0,
        };
        s.parent = Some(t.as_parent());
        t
    }

    pub fn as_parent(&self) -> Parent {
        Parent {
            trace_id: self.trace_id,
            span_id: self.span_id,
            remote: false,
        }
    }
}

/// What the SERVER span says about a finished statement.
pub struct StatementSpan<'a> {
    pub facts: &'a QueryFacts,
    pub schema: Option<&'a str>,
    pub user: &'a str,
    pub client: &'a str,
    pub connection_id: u32,
    pub backend: Option<&'a Backend>,
    /// The product the backends run (`db.system.name`).
    pub system: &'static str,
    /// The statement as the redactor writes it (else the digest): never a literal.
    pub query_text: String,
    pub rows: u64,
    pub error: Option<u16>,
}

/// `mariadb` or `mysql`, from the server's version string (unknown: `mysql`).
pub fn system_name(version: Option<&str>) -> &'static str {
    if version.is_some_and(|v| v.contains("MariaDB")) {
        "mariadb"
    } else {
        "mysql"
    }
}

/// `db.operation.name`: the statement's first keyword(s) as the digest writes them; `BATCH` for
/// several statements.
fn operation(facts: &QueryFacts) -> &str {
    if facts.multi_statement {
        return "BATCH";
    }
    let d = facts.digest.trim_start();
    d.split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .filter(|w| !w.is_empty())
        .unwrap_or("UNKNOWN")
}

/// `db.operation.name` for metrics: from the statement's kind, so a malformed statement cannot
/// add a series.
pub fn operation_of_kind(facts: &QueryFacts) -> &'static str {
    use crate::facts::StatementKind as K;
    if facts.multi_statement {
        return "BATCH";
    }
    match facts.kind {
        K::Select => "SELECT",
        K::Insert => "INSERT",
        K::Update => "UPDATE",
        K::Delete => "DELETE",
        K::Replace => "REPLACE",
        K::Ddl => "DDL",
        K::Transaction => "TRANSACTION",
        K::Set => "SET",
        K::Use => "USE",
        K::Show => "SHOW",
        K::Call => "CALL",
        K::LoadData => "LOAD",
        K::Other => "OTHER",
    }
}

/// `db.query.summary`: the operation and the tables it names (`SELECT orders`), at most three.
pub fn summary(facts: &QueryFacts) -> String {
    let mut s = operation(facts).to_string();
    for t in facts.tables.iter().take(3) {
        s.push(' ');
        s.push_str(t);
    }
    s
}

fn server_attributes(attrs: &mut Vec<KeyValue>, b: &Backend) {
    let (host, port) = split_address(b.address());
    attrs.push(KeyValue::new("server.address", host.to_string()));
    if let Some(p) = port {
        attrs.push(KeyValue::new("server.port", i64::from(p)));
    }
    attrs.push(KeyValue::new("sluice.backend", b.name().to_string()));
}

fn split_address(addr: &str) -> (&str, Option<u16>) {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.trim_matches(['[', ']']), p.parse().ok()),
        _ => (addr, None),
    }
}

fn context(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::NONE,
    )
}

/// A span with these ids and times (attributes and status are the caller's to set).
fn span(
    scope: &InstrumentationScope,
    ctx: SpanContext,
    parent: Option<Parent>,
    kind: SpanKind,
    name: String,
    (start, end): (SystemTime, SystemTime),
) -> SpanData {
    SpanData {
        span_context: ctx,
        parent_span_id: parent.map_or(SpanId::INVALID, |p| p.span_id),
        parent_span_is_remote: parent.is_some_and(|p| p.remote),
        span_kind: kind,
        name: name.into(),
        start_time: start,
        end_time: end,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

/// The spans of a finished statement: its SERVER span and a child per phase.
pub fn statement_spans(
    scope: &InstrumentationScope,
    t: &StatementTrace,
    s: &StatementSpan<'_>,
    end: Instant,
) -> Vec<SpanData> {
    let summary = summary(s.facts);
    let operation = operation(s.facts).to_string();
    let mut common = vec![
        KeyValue::new("db.system.name", s.system),
        KeyValue::new("db.operation.name", operation),
        KeyValue::new("db.query.summary", summary.clone()),
    ];
    if let Some(schema) = s.schema {
        common.push(KeyValue::new("db.namespace", schema.to_string()));
    }
    let mut attrs = common.clone();
    attrs.push(KeyValue::new("db.query.text", s.query_text.clone()));
    attrs.push(KeyValue::new("db.response.returned_rows", s.rows as i64));
    attrs.push(KeyValue::new("client.address", s.client.to_string()));
    attrs.push(KeyValue::new("sluice.user", s.user.to_string()));
    attrs.push(KeyValue::new(
        "sluice.connection_id",
        i64::from(s.connection_id),
    ));
    if let Some(b) = s.backend {
        server_attributes(&mut attrs, b);
    }
    let status = match s.error {
        Some(code) => {
            attrs.push(KeyValue::new("db.response.status_code", code.to_string()));
            attrs.push(KeyValue::new("error.type", code.to_string()));
            Status::error(format!("MySQL error {code}"))
        }
        None => Status::Unset,
    };
    let me = Parent {
        trace_id: t.trace_id,
        span_id: t.span_id,
        remote: false,
    };
    let mut spans = Vec::with_capacity(1 + t.marks.len());
    // `connection.create` hangs under the `pool.acquire` that opened the connection.
    let mut acquire = me;
    for m in &t.marks {
        let id = new_span_id();
        let parent = if m.phase == Phase::Create {
            acquire
        } else {
            me
        };
        if m.phase == Phase::Acquire {
            acquire = Parent { span_id: id, ..me };
        }
        let mut a = Vec::with_capacity(common.len() + 3);
        if matches!(m.phase, Phase::Execute | Phase::Create) {
            a.extend(common.iter().cloned());
        }
        if let Some(b) = &m.backend {
            server_attributes(&mut a, b);
        }
        let mut child = span(
            scope,
            context(t.trace_id, id),
            Some(parent),
            m.phase.kind(),
            m.phase.name().to_string(),
            (t.at(m.start), t.at(m.end)),
        );
        child.attributes = a;
        spans.push(child);
    }
    let mut server = span(
        scope,
        context(t.trace_id, t.span_id),
        t.parent,
        SpanKind::Server,
        summary,
        (t.wall, t.at(end)),
    );
    server.attributes = attrs;
    server.status = status;
    spans.push(server);
    spans
}

/// The span of a finished transaction.
pub fn transaction_span(
    scope: &InstrumentationScope,
    t: &TransactionTrace,
    system: &'static str,
    schema: Option<&str>,
    rolled_back: bool,
    end: Instant,
) -> SpanData {
    let mut attrs = vec![
        KeyValue::new("db.system.name", system),
        KeyValue::new(
            "sluice.transaction.outcome",
            if rolled_back { "rollback" } else { "commit" },
        ),
        KeyValue::new("sluice.transaction.statements", i64::from(t.statements)),
    ];
    if let Some(schema) = schema {
        attrs.push(KeyValue::new("db.namespace", schema.to_string()));
    }
    let mut s = span(
        scope,
        context(t.trace_id, t.span_id),
        t.parent,
        SpanKind::Internal,
        "transaction".into(),
        (t.wall, t.wall + end.saturating_duration_since(t.start)),
    );
    s.attributes = attrs;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_sqlcommenter_traceparent() {
        let sql =
            b"SELECT 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/";
        let tp = traceparent(sql).expect("found");
        assert!(tp.sampled && tp.parent.remote);
        assert_eq!(
            tp.parent.trace_id,
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex")
        );
        assert_eq!(
            tp.parent.span_id,
            SpanId::from_hex("b7ad6b7169203331").expect("hex")
        );
        let unsampled =
            b"SELECT 1 /*traceparent=\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\"*/";
        assert!(!traceparent(unsampled).expect("found").sampled);
    }

    #[test]
    fn refuses_a_malformed_traceparent() {
        for sql in [
            &b"SELECT 1"[..],
            b"/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01*/",
            b"/*traceparent='01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/",
            b"/*traceparent='00-00000000000000000000000000000000-b7ad6b7169203331-01'*/",
            b"/*traceparent='00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01'*/",
            b"/*traceparent='00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01'*/",
            b"/*traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01*/",
            b"/*traceparent='00-",
        ] {
            assert_eq!(traceparent(sql), None, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn a_traceparent_does_not_change_the_digest() {
        let plain = crate::facts::analyze("SELECT c FROM t WHERE id = 7");
        for commented in [
            "SELECT c FROM t WHERE id = 7 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/",
            "/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/ SELECT c FROM t WHERE id = 7",
        ] {
            let f = crate::facts::analyze(commented);
            assert_eq!(f.digest, plain.digest, "{commented}");
            assert_eq!(f.kind, plain.kind);
            assert!(traceparent(commented.as_bytes()).is_some());
        }
    }

    #[test]
    fn summary_names_the_operation_and_tables() {
        let f = crate::facts::analyze("SELECT * FROM orders o JOIN customers c ON o.c = c.id");
        let s = summary(&f);
        assert!(s.starts_with("SELECT orders"), "{s}");
        assert_eq!(operation(&crate::facts::analyze("select 1")), "SELECT");
        assert_eq!(system_name(Some("10.11.6-MariaDB-0+deb12u1")), "mariadb");
        assert_eq!(system_name(Some("8.0.36")), "mysql");
        assert_eq!(split_address("127.0.0.1:3307"), ("127.0.0.1", Some(3307)));
        assert_eq!(split_address("[::1]:3307"), ("::1", Some(3307)));
    }
}
