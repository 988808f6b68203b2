//! OpenTelemetry over OTLP, received by a real OTLP/HTTP receiver built from the official
//! `opentelemetry-proto` definitions: a statement's span tree and attributes (the database
//! semantic conventions), a client's `traceparent` continued, a span per transaction, the
//! `db.client.*` metrics, the flush at shutdown, and no literal of the SQL anywhere in what was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mysql_async::prelude::Queryable;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::harness::{PolicyDir, TestGateway, monitored, wait_until};

/// What the receiver got: decoded spans and metric names, and every body as sent.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<String>,
    raw: Vec<u8>,
}

/// An OTLP/HTTP (protobuf) receiver on its own thread and runtime.
struct Receiver {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    fn start() -> Self {
        let got = Arc::new(Mutex::new(Received::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&got);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let traces = Arc::clone(&shared);
                let app = axum::Router::new()
                    .route(
                        "/v1/traces",
                        axum::routing::post(move |body: axum::body::Bytes| {
                            let got = Arc::clone(&traces);
                            async move {
                                let req = ExportTraceServiceRequest::decode(body.as_ref())
                                    .expect("an OTLP trace request");
                                let mut g = got.lock().expect("lock");
                                g.raw.extend_from_slice(&body);
                                for rs in req.resource_spans {
                                    for ss in rs.scope_spans {
                                        g.spans.extend(ss.spans);
                                    }
                                }
                                protobuf(ExportTraceServiceResponse::default().encode_to_vec())
                            }
                        }),
                    )
                    .route(
                        "/v1/metrics",
                        axum::routing::post(move |body: axum::body::Bytes| {
                            let got = Arc::clone(&shared);
                            async move {
                                let req = ExportMetricsServiceRequest::decode(body.as_ref())
                                    .expect("an OTLP metrics request");
                                let mut g = got.lock().expect("lock");
                                g.raw.extend_from_slice(&body);
                                for rm in req.resource_metrics {
                                    for sm in rm.scope_metrics {
                                        g.metrics.extend(sm.metrics.into_iter().map(|m| m.name));
                                    }
                                }
                                protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
                            }
                        }),
                    );
                let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(l.local_addr().expect("addr")).expect("send");
                axum::serve(l, app).await.expect("serve");
            });
        });
        Self {
            addr: rx.recv().expect("receiver started"),
            got,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn protobuf(body: Vec<u8>) -> impl axum::response::IntoResponse {
    ([("content-type", "application/x-protobuf")], body)
}

fn attr(s: &Span, key: &str) -> Option<String> {
    let kv = s.attributes.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(v) => Some(v.clone()),
        Value::IntValue(v) => Some(v.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// The OTLP span flags bit that says the parent is remote (and the one that says it is known).
const PARENT_IS_REMOTE: u32 = 0x300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_traced_over_otlp_with_the_clients_traceparent_and_no_literal() {
    let f = crate::harness::fleet();
    f.sql(
        0,
        "CREATE TABLE IF NOT EXISTS app.otlp_orders (id INT PRIMARY KEY, email VARCHAR(100)); \
         REPLACE INTO app.otlp_orders VALUES (1, 'ada-secret@example.com')",
    );
    f.wait_replicas();
    let receiver = Receiver::start();
    let dir = PolicyDir::new("otlp");
    dir.plugin("mask", "mask.wasm");
    dir.write(
        "mask.toml",
        b"name = \"mask\"\nkind = \"redactor\"\nplugin = \"mask.wasm\"\n[settings]\nrules = [{ column = \"email\", action = \"mask\" }]\n",
    );
    let mut c = monitored(dir.config());
    c.otlp.endpoint = Some(receiver.url());
    // Only statements that bring a sampled traceparent are traced; nothing is sent before the
    // shutdown, which must flush.
    c.otlp.sampling_ratio = 0.0;
    c.otlp.traces_delay_ms = 600_000;
    c.otlp.metrics_interval_ms = 600_000;
    let gw = TestGateway::start(c);
    let primary = Arc::clone(gw.gateway.fleet().by_name("primary").expect("primary"));
    wait_until(30, "the monitor read the version", || {
        primary.version().is_some()
    })
    .await;

    let (t1, s1) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (t2, s2) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let t3 = "11111111111111111111111111111111";
    let mut conn = gw.app().await;
    // The session gives back the connection its driver's queries at connect ran on: the traced
    // statement borrows one.
    conn.reset().await.expect("reset");
    let email: Option<String> = conn
        .query_first(format!(
            "SELECT email FROM otlp_orders WHERE email = 'ada-secret@example.com' /*traceparent='00-{t1}-{s1}-01'*/"
        ))
        .await
        .expect("select");
    assert_eq!(
        email.as_deref(),
        Some("**********************"),
        "masked: {email:?}"
    );
    conn.query_drop("SELECT 'untraced-literal'")
        .await
        .expect("untraced");
    conn.query_drop(format!("BEGIN /*traceparent='00-{t2}-{s2}-01'*/"))
        .await
        .expect("begin");
    conn.query_drop("UPDATE otlp_orders SET email = 'bob-secret@example.com' WHERE id = 1")
        .await
        .expect("update");
    conn.query_drop("COMMIT").await.expect("commit");
    conn.query_drop(format!(
        "SELECT 'unsampled-literal' /*traceparent='00-{t3}-b7ad6b7169203331-00'*/"
    ))
    .await
    .expect("unsampled");
    conn.disconnect().await.expect("disconnect");
    assert!(
        receiver.got.lock().expect("lock").spans.is_empty(),
        "spans were sent before the shutdown"
    );
    gw.join();

    let got = receiver.got.lock().expect("lock");
    let by_id: HashMap<String, &Span> = got.spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    let servers: Vec<&Span> = got
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(
        servers.len(),
        4,
        "one SERVER span per traced statement: {:?}",
        servers.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(got.spans.iter().all(|s| hex(&s.trace_id) != t3));

    // The SELECT: the client's span is its parent; its children are the phases it went through.
    let select = servers
        .iter()
        .find(|s| hex(&s.trace_id) == t1)
        .expect("the SELECT's span, in the client's trace");
    assert_eq!(select.name, "SELECT otlp_orders");
    assert_eq!(hex(&select.parent_span_id), s1);
    assert_eq!(select.flags & PARENT_IS_REMOTE, PARENT_IS_REMOTE);
    assert_eq!(attr(select, "db.system.name").as_deref(), Some("mariadb"));
    assert_eq!(attr(select, "db.namespace").as_deref(), Some("app"));
    assert_eq!(attr(select, "db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(
        attr(select, "db.query.summary").as_deref(),
        Some("SELECT otlp_orders")
    );
    let text = attr(select, "db.query.text").expect("db.query.text");
    assert!(
        text.starts_with("SELECT email FROM otlp_orders WHERE"),
        "{text}"
    );
    assert_eq!(
        attr(select, "db.response.returned_rows").as_deref(),
        Some("1")
    );
    let ports: Vec<String> = (0..=f.replicas).map(|i| (f.port + i).to_string()).collect();
    let port = attr(select, "server.port").expect("server.port");
    assert!(ports.contains(&port), "{port} is not a fleet port");
    assert_eq!(attr(select, "server.address").as_deref(), Some("127.0.0.1"));
    let children: Vec<&Span> = got
        .spans
        .iter()
        .filter(|s| s.parent_span_id == select.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    for phase in [
        "policy.guard",
        "router.decide",
        "pool.acquire",
        "connection.execute",
        "result.redact",
    ] {
        assert!(names.contains(&phase), "{phase} missing from {names:?}");
    }
    let acquire = children
        .iter()
        .find(|s| s.name == "pool.acquire")
        .expect("acquire");
    assert_eq!(
        attr(acquire, "server.port"),
        Some(port.clone()),
        "from the pool that ran it"
    );
    let execute = children
        .iter()
        .find(|s| s.name == "connection.execute")
        .expect("execute");
    assert_eq!(execute.kind, SpanKind::Client as i32);
    assert_eq!(attr(execute, "server.port"), Some(port));
    assert_eq!(attr(execute, "db.system.name").as_deref(), Some("mariadb"));
    for c in &children {
        assert!(
            c.start_time_unix_nano >= select.start_time_unix_nano
                && c.end_time_unix_nano <= select.end_time_unix_nano,
            "{} lies outside its parent",
            c.name
        );
    }
    // A connection opened for a statement shows under the acquire that opened it.
    for create in got.spans.iter().filter(|s| s.name == "connection.create") {
        let parent = by_id
            .get(&hex(&create.parent_span_id))
            .expect("a known parent");
        assert_eq!(parent.name, "pool.acquire");
    }

    // The transaction: a span under the client's, with its three statements under it.
    let txn = got
        .spans
        .iter()
        .find(|s| s.name == "transaction")
        .expect("the transaction's span");
    assert_eq!(hex(&txn.trace_id), t2);
    assert_eq!(hex(&txn.parent_span_id), s2);
    assert_eq!(
        attr(txn, "sluice.transaction.statements").as_deref(),
        Some("3")
    );
    assert_eq!(
        attr(txn, "sluice.transaction.outcome").as_deref(),
        Some("commit")
    );
    let mut in_txn: Vec<&str> = servers
        .iter()
        .filter(|s| s.parent_span_id == txn.span_id)
        .map(|s| s.name.as_str())
        .collect();
    in_txn.sort_unstable();
    assert_eq!(in_txn, ["BEGIN", "COMMIT", "UPDATE otlp_orders"]);
    // Metrics went out at shutdown too.
    for m in [
        "db.client.operation.duration",
        "db.client.connection.count",
        "db.client.connection.max",
        "db.client.connection.wait_time",
    ] {
        assert!(got.metrics.iter().any(|n| n == m), "{m} not received");
    }
    // Nothing that was sent holds a literal of the statements.
    for literal in [
        "ada-secret",
        "bob-secret",
        "untraced-literal",
        "unsampled-literal",
    ] {
        assert!(
            !got.raw
                .windows(literal.len())
                .any(|w| w == literal.as_bytes()),
            "'{literal}' reached the collector"
        );
    }
}
