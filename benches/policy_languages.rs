//! What a policy costs by the language it is written in: the same guard rule (refuse statements
//! on a table under maintenance: read the tables, compare) as the Rust template and as the
//! Python template (componentize-py), per warm call, per instantiation, per compile and per
//! load from the compiled-policy cache; and the memory an instance holds (printed first).
//!
//! Needs the plugins built: `scripts/build-policies`. Run: `cargo bench --bench policy_languages`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sluice::facts::analyze;
use sluice::phase::SessionInfo;
use sluice::plugin::manifest::Manifest;
use sluice::plugin::runtime::{Plugin, PluginEngine};
use sluice::plugin::secrets::SecretSources;
use sluice::plugin::set::{Call, PolicySet};

/// A 100-byte statement, the size the design's budget is stated for.
const SQL: &str = "SELECT id, name, email FROM customers WHERE id = 42 AND status = 'active' ORDER BY created_at LIMIT 10";

/// (name, plugin file, manifest lines): both guards with a table under maintenance that the
/// statement does not touch, so each reads the statement's tables and allows it.
const GUARDS: [(&str, &str, &str); 2] = [
    (
        "rust",
        "template.wasm",
        "[settings]\nmaintenance = true\ntable = \"orders\"\n",
    ),
    (
        "python",
        "py-guard.wasm",
        "wasi = true\n[limits]\nmemory-mib = 64\n[settings]\nmaintenance = [\"orders\"]\n",
    ),
];

fn manifest(policies: &Path, name: &str, file: &str, extra: &str) -> Manifest {
    let text = format!("name = \"{name}\"\nkind = \"guard\"\nplugin = \"{file}\"\n{extra}");
    Manifest::parse(&text, &policies.join(format!("{name}.toml"))).expect("manifest")
}

fn load(engine: &Arc<PluginEngine>, m: Manifest) -> Plugin {
    sluice::plugin::loader::load_plugin(engine, m, &Arc::new(SecretSources::default()))
        .expect("loads")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory per warm instance, after a call on each (what a pool of them holds).
fn memory_per_instance(engine: &Arc<PluginEngine>, policies: &Path) {
    const N: usize = 16;
    for (name, file, extra) in GUARDS {
        let plugin = load(engine, manifest(policies, name, file, extra));
        let before = rss_kib();
        let warm: Vec<_> = (0..N)
            .map(|_| plugin.instantiate().expect("instance"))
            .collect();
        let after = rss_kib();
        println!(
            "memory/{name}: {} KiB resident per instance ({N} instances: {} KiB)",
            (after.saturating_sub(before)) / N as u64,
            after.saturating_sub(before)
        );
        drop(warm);
    }
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let policies = root.join("policies");
    for (_, file, _) in GUARDS {
        assert!(
            policies.join(file).exists(),
            "run scripts/build-policies first ({file})"
        );
    }
    let engine = PluginEngine::new().expect("engine");
    memory_per_instance(&engine, &policies);
    let session = SessionInfo::plain(7, "app");
    let facts = analyze(SQL);

    for (name, file, extra) in GUARDS {
        let plugin = load(&engine, manifest(&policies, name, file, extra));
        c.bench_function(&format!("guard call/{name}"), |b| {
            b.iter(|| {
                let call = Call {
                    facts: &facts,
                    sql: black_box(SQL),
                    session: &session,
                };
                black_box(PolicySet::run_guard(&plugin, call).expect("verdict"))
            });
        });
        c.bench_function(&format!("instantiate/{name}"), |b| {
            b.iter(|| black_box(plugin.instantiate().expect("instance")));
        });
    }

    let mut slow = c.benchmark_group("compile");
    slow.sample_size(10);
    let cache = std::env::temp_dir().join(format!("sluice-bench-compiled-{}", std::process::id()));
    for (name, file, _) in GUARDS {
        let bytes = std::fs::read(policies.join(file)).expect("plugin");
        slow.bench_function(format!("compile/{name}"), |b| {
            b.iter_batched(
                || PluginEngine::new().expect("engine"),
                |e| black_box(e.compile(&bytes).expect("compiles")),
                BatchSize::PerIteration,
            );
        });
        PluginEngine::with_compiled_cache(Some(&cache))
            .expect("engine")
            .compile(&bytes)
            .expect("compiles into the cache");
        slow.bench_function(format!("from disk cache/{name}"), |b| {
            b.iter_batched(
                || PluginEngine::with_compiled_cache(Some(&cache)).expect("engine"),
                |e| {
                    let c = e.compile(&bytes).expect("loads");
                    assert_eq!(e.precompiled_hits(), Some(1));
                    black_box(c)
                },
                BatchSize::PerIteration,
            );
        });
    }
    slow.finish();
    let _ = std::fs::remove_dir_all(&cache);
}

criterion_group!(benches, bench);
criterion_main!(benches);
