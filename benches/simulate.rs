//! The simulator's speed: requests through the shipped `rw-split` router as Wasm (strategy
//! `p2c`, load from the simulated fleet), 20 replicas at 70% utilisation, open loop. Issue #14's
//! budget: 1,000,000 simulated requests through a Wasm router in under a minute.
//!
//! `scripts/build-policies && cargo bench --bench simulate`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::bench::candidate::Candidate;
use sluice::plugin::runtime::PluginEngine;
use sluice::sim::driver::{OpenLoop, run};
use sluice::sim::model::{Server, ServiceTime};
use sluice::sim::router::{PolicyRouter, load_router};

const REQUESTS: u64 = 100_000;
const SERVERS: usize = 21;

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    assert!(
        dir.join("rw-split.wasm").exists(),
        "run scripts/build-policies first"
    );
    let engine = PluginEngine::new().expect("engine");
    let router =
        load_router(&engine, &dir, &Candidate::Strategy("p2c".into()), 1).expect("candidate loads");
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.bench_function("100k requests, rw-split p2c as Wasm, 20 replicas", |b| {
        b.iter(|| {
            let servers = vec![Server::new(4, ServiceTime::Exponential { mean: 4.0 }); SERVERS];
            let mut pick = PolicyRouter::new(
                &router.set,
                "SELECT c FROM sbtest1 WHERE id = 1",
                SERVERS,
                1,
                1e6,
            );
            let spec = OpenLoop {
                rate: OpenLoop::rate_for(0.7, SERVERS - 1, 4, 4.0),
                requests: REQUESTS,
                seed: 7,
                clients: 200,
                ..OpenLoop::default()
            };
            black_box(run(&spec, servers, &mut pick).ended_at)
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
