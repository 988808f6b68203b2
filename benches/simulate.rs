//! The simulator's speed: requests through the shipped `rw-split` router as Wasm (strategy
//! `p2c`, load from the simulated fleet), 20 replicas at 70% utilisation, open loop. Issue #14's
//! budget: 1,000,000 simulated requests through a Wasm router in under a minute.
//!
//! `scripts/build-policies && cargo bench --bench simulate`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::bench::candidate::{Candidate, prepare};
use sluice::config::Config;
use sluice::phase::ConfigPolicy;
use sluice::plugin::loader::load_dir;
use sluice::plugin::runtime::PluginEngine;
use sluice::plugin::secrets::SecretSources;
use sluice::sim::driver::{OpenLoop, run};
use sluice::sim::model::{Server, ServiceTime};
use sluice::sim::router::PolicyRouter;

const REQUESTS: u64 = 100_000;
const SERVERS: usize = 21;

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("policies");
    assert!(
        dir.join("rw-split.wasm").exists(),
        "run scripts/build-policies first"
    );
    let cdir = prepare(&dir, &Candidate::Strategy("p2c".into()), 1).expect("candidate dir");
    let engine = PluginEngine::new().expect("engine");
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
        }),
    )
    .expect("candidate loads");
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.bench_function("100k requests, rw-split p2c as Wasm, 20 replicas", |b| {
        b.iter(|| {
            let servers = vec![Server::new(4, ServiceTime::Exponential { mean: 4.0 }); SERVERS];
            let mut router = PolicyRouter::new(
                &set,
                "SELECT c FROM sbtest1 WHERE id = 1",
                SERVERS,
                200,
                1e6,
            );
            let out = run(
                OpenLoop {
                    rate: OpenLoop::rate_for(0.7, SERVERS - 1, 4, 4.0),
                    requests: REQUESTS,
                    seed: 7,
                    fluctuation: None,
                },
                servers,
                &mut router,
            );
            black_box(out.ended_at)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
