//! Per-statement work on the gateway's hot path, without I/O: statement facts, the policy's
//! check and route, encoding a result row, and recording the finished statement.
//!
//! Run: `cargo bench --bench hot_path` (criterion; reports median per iteration).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mysql_common::value::Value;
use sluice::config::{Config, Role};
use sluice::facts::analyze;
use sluice::phase::{BackendStatus, ConfigPolicy, Policy, SessionInfo};
use sluice::pool::Backend;
use sluice::protocol::resultset::encode_text_row;
use sluice::telemetry::{StatementRecord, Telemetry};

/// A 100-byte statement, the size the design's budget is stated for.
const SQL: &str = "SELECT id, name, email FROM customers WHERE id = 42 AND status = 'active' ORDER BY created_at LIMIT 10";

fn config() -> Config {
    Config::from_toml(
        r#"
        [routing]
        read-write-split = true
        [[backends]]
        name = "primary"
        address = "127.0.0.1:3307"
        role = "primary"
        [[backends]]
        name = "replica1"
        address = "127.0.0.1:3308"
        role = "replica"
        "#,
    )
    .expect("config")
}

fn bench(c: &mut Criterion) {
    assert!((95..=105).contains(&SQL.len()), "{}", SQL.len());
    c.bench_function("facts/100-byte select", |b| {
        b.iter(|| analyze(black_box(SQL)));
    });

    let policy = ConfigPolicy::new(config());
    let fleet = vec![
        BackendStatus {
            name: Arc::from("primary"),
            role: Role::Primary,
            healthy: true,
            lag_ms: None,
            in_use: 0,
            idle: 0,
            weight: 1,
            load: sluice::phase::BackendLoad::default(),
            caught_up: true,
            applied: None,
        },
        BackendStatus {
            name: Arc::from("replica1"),
            role: Role::Replica,
            healthy: true,
            lag_ms: Some(0),
            in_use: 0,
            idle: 0,
            weight: 1,
            load: sluice::phase::BackendLoad::default(),
            caught_up: true,
            applied: None,
        },
    ];
    let session = SessionInfo {
        connection_id: 7,
        user: "app",
        client_addr: "127.0.0.1",
        database: Some("app"),
        in_transaction: false,
        autocommit: true,
        tls: false,
        required_position: None,
    };
    c.bench_function("facts+check+route/native built-in policy", |b| {
        b.iter(|| {
            let facts = analyze(black_box(SQL));
            let verdict = policy.check(&facts, SQL, &session);
            let route = policy.route(&facts, &session, &fleet);
            black_box((verdict, route))
        });
    });

    let row: Vec<Option<Value>> = vec![
        Some(Value::Bytes(b"42".to_vec())),
        Some(Value::Bytes(b"Ada Lovelace".to_vec())),
        Some(Value::Bytes(b"ada@example.com".to_vec())),
        None,
    ];
    let mut out = Vec::with_capacity(256);
    c.bench_function("encode/text row of 4 columns", |b| {
        b.iter(|| {
            out.clear();
            encode_text_row(&mut out, black_box(&row));
            black_box(out.len())
        });
    });

    // Recording one finished statement: counters, latency buckets, its digest entry, the
    // user's and the backend's counts (the design budget: 200 ns).
    let config = config();
    let telemetry = Telemetry::new(&config);
    let backend = Backend::new(config.backends[1].clone());
    let user = telemetry.users.get("app");
    let facts = analyze(SQL);
    let record = StatementRecord {
        facts: &facts,
        user: "app",
        schema: Some("app"),
        backend: Some(&backend),
        duration: std::time::Duration::from_micros(110),
        rows_sent: 1,
        rows_affected: 0,
        bytes_out: 120,
        error: None,
    };
    c.bench_function("record/one statement (digest hit)", |b| {
        b.iter(|| telemetry.record(black_box(&record), &user, || None));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
