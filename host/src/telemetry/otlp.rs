//! OpenTelemetry over OTLP/HTTP: where traced statements' spans go (the SDK's batch processor and
//! exporter, on their own thread) and the `db.client.*` metrics of the database semantic
//! conventions (statement durations, the pools' connections), read and sent periodically.
//!
//! Spans are built by [`super::trace`] with the ids and clock readings the session kept, and
//! handed to the batch processor directly: the SDK's tracer would decide sampling and take the
//! time again, after the fact. Shutting down flushes both, from a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Histogram, MeterProvider};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanProcessor};

use super::trace::{StatementTrace, TransactionTrace, operation_of_kind, traceparent};
use crate::config::OtlpConfig;
use crate::facts::QueryFacts;
use crate::pool::Backend;
use crate::pool::core::PoolCounts;

/// Traces and metrics toward one collector.
pub struct Otlp {
    pub traces: Option<Traces>,
    pub metrics: Option<OtlpMetrics>,
}

impl Otlp {
    /// Starts the exporters the configuration asks for (`None`: no collector configured).
    pub fn start(config: &OtlpConfig, fleet: FleetHandle) -> anyhow::Result<Option<Self>> {
        let Some(base) = config.collector() else {
            return Ok(None);
        };
        let resource = Resource::builder()
            .with_service_name(
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| config.service_name.clone()),
            )
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let scope = InstrumentationScope::builder("sluice")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let timeout = Duration::from_millis(config.timeout_ms);
        let traces = if config.traces {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/traces"))
                .with_timeout(timeout)
                .build()
                .map_err(|e| anyhow::anyhow!("otlp.endpoint: {e}"))?;
            let mut processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(config.max_queue)
                        .with_scheduled_delay(Duration::from_millis(config.traces_delay_ms))
                        .build(),
                )
                .build();
            processor.set_resource(&resource);
            Some(Traces {
                processor: Arc::new(processor),
                scope: scope.clone(),
                threshold: (config.sampling_ratio * f64::from(u32::MAX)) as u64,
                all: config.sampling_ratio >= 1.0,
            })
        } else {
            None
        };
        let metrics = if config.metrics {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(format!("{base}/v1/metrics"))
                .with_timeout(timeout)
                .build()
                .map_err(|e| anyhow::anyhow!("otlp.endpoint: {e}"))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(Duration::from_millis(config.metrics_interval_ms))
                .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            Some(OtlpMetrics::new(provider, &scope, fleet))
        } else {
            None
        };
        tracing::info!(collector = %base, traces = traces.is_some(), metrics = metrics.is_some(), ratio = config.sampling_ratio, "exporting over OTLP");
        Ok(Some(Self { traces, metrics }))
    }

    /// Sends what is queued and stops the exporters. Their calls block (the HTTP client is a
    /// blocking one), so this runs on a blocking thread while the runtime stays up.
    pub async fn shutdown(&self) {
        let traces = self.traces.as_ref().map(|t| Arc::clone(&t.processor));
        let meters = self.metrics.as_ref().map(|m| m.provider.clone());
        let done = tokio::task::spawn_blocking(move || {
            if let Some(p) = traces
                && let Err(e) = p.shutdown()
            {
                tracing::warn!(error = %e, "OTLP: spans not all sent at shutdown");
            }
            if let Some(p) = meters
                && let Err(e) = p.shutdown()
            {
                tracing::warn!(error = %e, "OTLP: metrics not sent at shutdown");
            }
        })
        .await;
        if done.is_err() {
            tracing::warn!("OTLP: the flush at shutdown failed");
        }
    }
}

/// Which statements are traced, and where their spans go.
pub struct Traces {
    processor: Arc<BatchSpanProcessor>,
    pub scope: InstrumentationScope,
    /// A statement is traced when a random u32 falls below this (ratio × 2³²).
    threshold: u64,
    all: bool,
}

impl Traces {
    /// Whether the statement `sql` is traced, and under which parent: the client's
    /// `traceparent` (followed whether sampled or not), else the open transaction's decision,
    /// else the sampling ratio.
    pub fn decide(&self, sql: &[u8], txn: Option<&TransactionTrace>) -> Option<StatementTrace> {
        let parent = match traceparent(sql) {
            Some(tp) if tp.sampled => Some(tp.parent),
            Some(_) => return None,
            None => match txn {
                Some(t) if t.sampled => Some(t.as_parent()),
                Some(_) => return None,
                None if self.all || u64::from(rand::random::<u32>()) < self.threshold => None,
                None => return None,
            },
        };
        Some(StatementTrace::new(parent))
    }

    /// Queues finished spans for export (dropped, and counted by the SDK, when the queue is full).
    pub fn export(&self, spans: Vec<SpanData>) {
        for s in spans {
            self.processor.on_end(s);
        }
    }
}

/// The `db.client.*` instruments.
pub struct OtlpMetrics {
    provider: SdkMeterProvider,
    /// Per backend, its attributes, made once (their values are shared, not copied, per record).
    servers: Vec<(Arc<Backend>, [KeyValue; 2])>,
    duration: Histogram<f64>,
    wait_time: Histogram<f64>,
    create_time: Histogram<f64>,
}

/// Seconds, from 100 µs (the semantic conventions' advice, shifted down: a pooled point select
/// through the gateway takes a few hundred microseconds).
const SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl OtlpMetrics {
    fn new(provider: SdkMeterProvider, scope: &InstrumentationScope, fleet: FleetHandle) -> Self {
        let meter = provider.meter_with_scope(scope.clone());
        let duration = meter
            .f64_histogram("db.client.operation.duration")
            .with_unit("s")
            .with_description(
                "Duration of database client operations (client statements through the gateway)",
            )
            .with_boundaries(SECONDS.to_vec())
            .build();
        let wait_time = meter
            .f64_histogram("db.client.connection.wait_time")
            .with_unit("s")
            .with_description("The time it took to obtain an open connection from the pool")
            .with_boundaries(SECONDS.to_vec())
            .build();
        let create_time = meter
            .f64_histogram("db.client.connection.create_time")
            .with_unit("s")
            .with_description("The time it took to create a new connection")
            .with_boundaries(SECONDS.to_vec())
            .build();
        let servers = fleet
            .load()
            .backends()
            .iter()
            .map(|b| (Arc::clone(b), server_attrs(b)))
            .collect();
        pool_gauge(
            &meter,
            ("db.client.connection.count", "{connection}"),
            "The number of connections that are currently in state described by the state attribute",
            &fleet,
            |c| vec![(c.idle, Some("idle")), (c.in_use, Some("used"))],
        );
        pool_gauge(
            &meter,
            ("db.client.connection.max", "{connection}"),
            "The maximum number of open connections allowed",
            &fleet,
            |c| vec![(c.max, None)],
        );
        pool_gauge(
            &meter,
            ("db.client.connection.pending_requests", "{request}"),
            "The number of current pending requests for an open connection",
            &fleet,
            |c| vec![(c.waiting, None)],
        );
        meter
            .u64_observable_counter("db.client.connection.timeouts")
            .with_unit("{timeout}")
            .with_description("The number of connection timeouts that have occurred trying to obtain a connection from the pool")
            .with_callback(move |o| {
                for b in fleet.load().backends() {
                    o.observe(b.pool_status().counts.counters.timeouts, &pool_attrs(b, None));
                }
            })
            .build();
        Self {
            provider,
            servers,
            duration,
            wait_time,
            create_time,
        }
    }

    /// One client statement's duration.
    pub fn operation(
        &self,
        system: &'static str,
        facts: &QueryFacts,
        backend: Option<&Backend>,
        took: Duration,
        error: Option<u16>,
    ) {
        let server = backend.and_then(|b| {
            self.servers
                .iter()
                .find(|(s, _)| std::ptr::eq(Arc::as_ptr(s), b))
                .map(|(_, kv)| kv)
        });
        // Backends a reload added since start are not cached: made here.
        let [address, name] = match (server, backend) {
            (Some(kv), _) => kv.clone(),
            (None, Some(b)) => server_attrs(b),
            (None, None) => [
                KeyValue::new("server.address", ""),
                KeyValue::new("sluice.backend", "gateway"),
            ],
        };
        let attrs = [
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation_of_kind(facts)),
            address,
            name,
            KeyValue::new(
                "error.type",
                error.map_or(StringValue::from(""), |c| StringValue::from(c.to_string())),
            ),
        ];
        // No error: the attribute is left out.
        let n = if error.is_some() { 5 } else { 4 };
        self.duration.record(took.as_secs_f64(), &attrs[..n]);
    }

    /// A connection obtained from `backend`'s pool, and how long opening it took when it was new.
    pub fn acquired(&self, backend: &Backend, waited: Duration, created: Option<Duration>) {
        let attrs = pool_attrs(backend, None);
        self.wait_time.record(waited.as_secs_f64(), &attrs);
        if let Some(c) = created {
            self.create_time.record(c.as_secs_f64(), &attrs);
        }
    }
}

/// A pool gauge's value, with its `db.client.connection.state` (`None`: none).
type Reading = (usize, Option<&'static str>);

/// A gauge read from every pool's counts: `read` gives its values, each with its connection
/// state (`None`: no state attribute).
fn pool_gauge(
    meter: &opentelemetry::metrics::Meter,
    (name, unit): (&'static str, &'static str),
    description: &'static str,
    fleet: &FleetHandle,
    read: fn(&PoolCounts) -> Vec<Reading>,
) {
    let fleet = Arc::clone(fleet);
    meter
        .i64_observable_gauge(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |o| {
            for b in fleet.load().backends() {
                for (value, state) in read(&b.pool_status().counts) {
                    o.observe(value as i64, &pool_attrs(b, state));
                }
            }
        })
        .build();
}

/// The fleet as a reload leaves it: the gauges report the backends in it at each reading.
pub type FleetHandle = Arc<arc_swap::ArcSwap<crate::pool::Fleet>>;

fn server_attrs(b: &Backend) -> [KeyValue; 2] {
    let address: Arc<str> = Arc::from(b.address());
    let name: Arc<str> = Arc::from(b.name());
    [
        KeyValue::new("server.address", StringValue::from(address)),
        KeyValue::new("sluice.backend", StringValue::from(name)),
    ]
}

fn pool_attrs(b: &Backend, state: Option<&'static str>) -> Vec<KeyValue> {
    let mut a = vec![KeyValue::new(
        "db.client.connection.pool.name",
        b.name().to_string(),
    )];
    if let Some(s) = state {
        a.push(KeyValue::new("db.client.connection.state", s));
    }
    a
}
