//! Loading the policy directory: every manifest, its plugin compiled, linked, instantiated,
//! configured and smoke-called. Only a fully valid directory becomes a [`PolicySet`]; the first
//! problem is reported with the file that has it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::manifest::{Kind, Manifest};
use super::runtime::{Plugin, PluginEngine};
use super::secrets::SecretSources;
use super::set::{Call, PolicySet};
use crate::phase::{ConfigPolicy, SessionInfo};

/// Why a directory could not become the active set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct LoadError {
    pub file: String,
    pub reason: String,
}

fn err(file: &Path, reason: impl Into<String>) -> LoadError {
    LoadError {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// The manifests of a directory, in name order (hidden entries such as ConfigMap's `..data`
/// are skipped; symlinked files are followed).
pub fn manifests(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| err(dir, format!("cannot read the policy directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Builds a policy set from `dir`. Blocking (compiles components): run off the async runtime.
pub fn load_dir(
    engine: &Arc<PluginEngine>,
    dir: &Path,
    builtin: ConfigPolicy,
    secrets: &Arc<SecretSources>,
) -> Result<PolicySet, LoadError> {
    let mut set = PolicySet::builtin(builtin);
    let mut guards: Vec<Arc<Plugin>> = Vec::new();
    for file in manifests(dir)? {
        let manifest = Manifest::load(&file).map_err(|r| err(&file, r))?;
        let plugin = load_plugin(engine, manifest, secrets)?;
        let slot = match plugin.manifest.kind {
            Kind::Guard => {
                guards.push(Arc::new(plugin));
                continue;
            }
            Kind::Router => &mut set.router,
            Kind::Redactor => &mut set.redactor,
            Kind::Credentials => &mut set.credentials,
        };
        if let Some(existing) = slot {
            return Err(err(
                &file,
                format!(
                    "a second {} policy; `{}` is one already",
                    plugin.manifest.kind.name(),
                    existing.name()
                ),
            ));
        }
        *slot = Some(Arc::new(plugin));
    }
    guards.sort_by(|a, b| (a.manifest.order, a.name()).cmp(&(b.manifest.order, b.name())));
    set.guards = guards;
    Ok(set)
}

/// Compiles, links, instantiates, configures and smoke-calls one policy.
pub fn load_plugin(
    engine: &Arc<PluginEngine>,
    manifest: Manifest,
    secrets: &Arc<SecretSources>,
) -> Result<Plugin, LoadError> {
    let file = manifest.file.clone();
    let bytes = std::fs::read(&manifest.plugin)
        .map_err(|e| err(&file, format!("plugin {}: {e}", manifest.plugin.display())))?;
    let sha256: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes).into()
    };
    let component = engine
        .compile_hashed(&bytes, sha256)
        .map_err(|r| err(&file, format!("plugin {}: {r}", manifest.plugin.display())))?;
    let mut plugin = Plugin::link(engine, manifest, &component, Arc::clone(secrets))
        .map_err(|r| err(&file, format!("plugin: {r}")))?;
    plugin.content_sha256 = super::precompiled::hex(&sha256);
    smoke(&plugin).map_err(|r| err(&file, r))?;
    if plugin.manifest.kind != Kind::Credentials {
        // Policy calls are synchronous on the runtime's threads, so at most that many run at
        // once: with that many warm instances no statement instantiates.
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        plugin
            .prewarm(threads)
            .map_err(|e| err(&file, format!("could not start instances: {e}")))?;
    }
    Ok(plugin)
}

/// One call with a harmless input, so a plugin that cannot serve is refused at load.
fn smoke(p: &Plugin) -> Result<(), String> {
    let facts = crate::facts::analyze("SELECT 1");
    let session = SessionInfo::plain(0, "sluice-smoke-test");
    let call = Call {
        facts: &facts,
        sql: "SELECT 1",
        session: &session,
    };
    let outcome = match p.manifest.kind {
        Kind::Guard => PolicySet::run_guard(p, call).map(drop),
        Kind::Router => PolicySet::run_router(p, call, &[]).map(drop),
        Kind::Redactor => PolicySet::run_plan(p, call, &[]).map(drop),
        // Credentials run on a fresh instance per login; instantiating and configuring it is
        // the check (a resolve call could read secrets for a made-up user).
        Kind::Credentials => p.instantiate().map(drop),
    };
    outcome.map_err(|e| format!("smoke call failed: {e}"))
}
