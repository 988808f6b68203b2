//! Facts + guard + router per statement: the first-party Wasm policies on warm pooled instances
//! against the same logic compiled natively (the plugin crates' own functions).
//!
//! Needs the plugins built: `scripts/build-policies`. Run: `cargo bench --bench policy_chain`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::config::{Config, Role};
use sluice::facts::analyze;
use sluice::phase::{BackendStatus, ConfigPolicy, Policy, SessionInfo};
use sluice::plugin::loader::load_dir;
use sluice::plugin::runtime::PluginEngine;
use sluice::plugin::secrets::SecretSources;
use sluice::plugin::set::PolicySet;

/// A 100-byte statement, the size the design's budget is stated for.
const SQL: &str = "SELECT id, name, email FROM customers WHERE id = 42 AND status = 'active' ORDER BY created_at LIMIT 10";

fn fleet() -> Vec<BackendStatus> {
    let b = |name: &str, role, lag| BackendStatus {
        name: Arc::from(name),
        role,
        healthy: true,
        lag_ms: lag,
        in_use: 0,
        idle: 0,
        weight: 1,
        load: sluice::phase::BackendLoad::default(),
        caught_up: true,
        applied: None,
    };
    vec![
        b("primary", Role::Primary, Some(0)),
        b("replica1", Role::Replica, Some(0)),
        b("replica2", Role::Replica, Some(0)),
    ]
}

fn bench(c: &mut Criterion) {
    assert!((95..=105).contains(&SQL.len()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("policies");
    assert!(
        dir.join("guard.wasm").exists(),
        "run scripts/build-policies first"
    );
    let config = Config::from_toml(
        "[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:3307\"\nrole = \"primary\"\n",
    )
    .expect("config");
    let engine = PluginEngine::new().expect("engine");
    let set = load_dir(
        &engine,
        &dir,
        ConfigPolicy::new(config),
        &Arc::new(SecretSources {
            env_prefix: None,
            dir: Some(root.join("config/secrets")),
            ..SecretSources::default()
        }),
    )
    .expect("policies/ loads");
    assert!(!set.guards.is_empty() && set.router.is_some());
    let fleet = fleet();
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

    c.bench_function("facts+guard+router/wasm (pooled instances)", |b| {
        b.iter(|| {
            let facts = analyze(black_box(SQL));
            let verdict = set.check(&facts, SQL, &session);
            let route = set.route(&facts, &session, &fleet);
            black_box((verdict, route))
        });
    });

    // Each strategy of the shipped router, in the same chain (the budget: 1 µs for facts + guard
    // + router). The fleet's load is set so the load-aware strategies compare real figures.
    let mut loaded = fleet.clone();
    for (i, b) in loaded.iter_mut().enumerate() {
        b.load = sluice::phase::BackendLoad {
            in_flight: i as u32,
            service_ewma_us: 150 + 10 * i as u32,
            response_ewma_us: 200 + 10 * i as u32,
            peak_ewma_us: 250 + 10 * i as u32,
        };
    }
    for strategy in [
        "sticky",
        "round-robin",
        "weighted",
        "least-in-use",
        "lowest-latency",
        "p2c",
        "peak-ewma",
        "c3",
        "adaptive",
    ] {
        let candidate = sluice::bench::candidate::Candidate::Strategy(strategy.into());
        let cdir =
            sluice::bench::candidate::prepare(&dir, &candidate, 1000).expect("candidate dir");
        let config = Config::from_toml(
            "[[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:3307\"\nrole = \"primary\"\n",
        )
        .expect("config");
        let set = load_dir(
            &engine,
            &cdir.path,
            ConfigPolicy::new(config),
            &Arc::new(SecretSources {
                env_prefix: None,
                dir: Some(root.join("config/secrets")),
                ..SecretSources::default()
            }),
        )
        .expect("candidate loads");
        c.bench_function(&format!("facts+guard+router/wasm/{strategy}"), |b| {
            b.iter(|| {
                let facts = analyze(black_box(SQL));
                let verdict = set.check(&facts, SQL, &session);
                let route = set.route(&facts, &session, &loaded);
                black_box((verdict, route))
            });
        });
    }

    let facts = analyze(SQL);
    // The shipped guard says its verdict carries to the statement's shape, so the gateway
    // reuses it ...
    c.bench_function("guard only/wasm", |b| {
        b.iter(|| black_box(set.check(&facts, SQL, &session)));
    });
    // ... and this is the call into the guard that a reused verdict saves.
    let guard = set.guards.first().expect("a guard");
    let call = sluice::plugin::set::Call {
        facts: &facts,
        sql: SQL,
        session: &session,
    };
    c.bench_function("guard only/wasm, called", |b| {
        b.iter(|| black_box(PolicySet::run_guard(guard, call)));
    });
    // A statement shape the guard has not cached yet: its table and digest rules read the
    // table from the host.
    let mut fresh = analyze(SQL);
    c.bench_function("guard only/wasm, digest not cached", |b| {
        b.iter(|| {
            fresh.digest_hash = fresh.digest_hash.wrapping_add(1);
            black_box(set.check(&fresh, SQL, &session))
        });
    });
    // A login: the credentials policy on a fresh instance (secrets never stay in a warm one),
    // reading the demo's secret file through `host.secret`.
    let client = sluice::phase::ClientIdentity {
        user: "app".into(),
        client_addr: "127.0.0.1".into(),
        database: Some("app".into()),
        tls: false,
        attributes: Vec::new(),
    };
    assert!(
        set.resolve_credentials(&client).is_some(),
        "the demo user resolves"
    );
    c.bench_function("credentials per login/wasm (fresh instance)", |b| {
        b.iter(|| black_box(set.resolve_credentials(&client)));
    });
    // The shipped router (sticky) says its route carries within the session, so the gateway
    // reuses it while the fleet and the session stay as they were ...
    c.bench_function("router only/wasm", |b| {
        b.iter(|| black_box(set.route(&facts, &session, &fleet)));
    });
    // ... and this is the call into the router that a reused route saves.
    let router = set.router.as_ref().expect("a router");
    c.bench_function("router only/wasm, called", |b| {
        b.iter(|| black_box(PolicySet::run_router(router, call, &fleet)));
    });

    // The same rules natively: the plugin crates' own decision functions.
    let guard_settings: guard::Settings = sluice_policy_sdk_settings(&dir.join("guard.toml"));
    let router_settings: rw_split::Settings =
        sluice_policy_sdk_settings(&dir.join("rw-split.toml"));
    let wit_fleet: Vec<rw_split::BackendStatus> = fleet
        .iter()
        .map(|b| rw_split::BackendStatus {
            role: if b.role == Role::Primary {
                rw_split::Role::Primary
            } else {
                rw_split::Role::Replica
            },
            healthy: b.healthy,
            lag_ms: b.lag_ms,
            weight: b.weight,
        })
        .collect();
    c.bench_function("facts+guard+router/native", |b| {
        b.iter(|| {
            let facts = analyze(black_box(SQL));
            let statement = guard::Statement {
                kind: guard::StatementKind::Select,
                read_only: facts.read_only,
                has_where: facts.has_where,
                multi_statement: facts.multi_statement,
                length: SQL.len(),
            };
            let text = guard::Text {
                digest: &facts.digest,
                tables: &facts.tables,
                user: session.user,
            };
            let verdict = guard_settings.decide(&statement, &text);
            let hint = facts
                .hints
                .iter()
                .find(|(k, _)| k == "route")
                .map(|(_, v)| v.as_str());
            let read = rw_split::Read {
                plain_read: facts.read_only && !facts.locking_read,
                in_transaction: false,
                route_hint: hint,
                connection_id: 7,
            };
            let load = |i: usize| rw_split::BackendLoad {
                in_use: fleet[i].in_use,
                idle: fleet[i].idle,
                in_flight: fleet[i].load.in_flight,
                service_ewma_us: fleet[i].load.service_ewma_us,
                response_ewma_us: fleet[i].load.response_ewma_us,
                peak_ewma_us: fleet[i].load.peak_ewma_us,
            };
            let route = rw_split::choose(&router_settings, 1, &read, &wit_fleet, load);
            black_box(&route);
            black_box(verdict)
        });
    });
}

/// A manifest's `[settings]`, parsed the way the plugin parses them.
fn sluice_policy_sdk_settings<T: serde::de::DeserializeOwned>(manifest: &std::path::Path) -> T {
    let m = sluice::plugin::manifest::Manifest::load(manifest).expect("manifest");
    serde_json::from_str(&m.settings_json).expect("settings")
}

criterion_group!(benches, bench);
criterion_main!(benches);
