//! Watching the policy directory: any change (in-place write, write-then-rename, delete, a
//! Kubernetes ConfigMap `..data` symlink swap) starts a debounced reload. A reload builds and
//! validates the whole directory off the async runtime, then swaps it in atomically; statements in
//! flight finish on the set they started with. A failed reload changes nothing and is reported.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::loader::{LoadError, load_dir};
use super::runtime::PluginEngine;
use super::secrets::SecretSources;
use crate::gateway::Gateway;
use crate::phase::ConfigPolicy;

/// Everything a reload needs.
#[derive(Clone)]
pub struct Reloader {
    pub gw: Arc<Gateway>,
    pub engine: Arc<PluginEngine>,
    pub dir: PathBuf,
    pub secrets: Arc<SecretSources>,
}

impl Reloader {
    /// Loads the directory and, when it is valid, makes it the active set.
    pub async fn reload(&self) -> Result<(), LoadError> {
        let _one_at_a_time = self.gw.reload_lock.lock().await;
        let (engine, dir, secrets) = (
            Arc::clone(&self.engine),
            self.dir.clone(),
            Arc::clone(&self.secrets),
        );
        let builtin = ConfigPolicy::new((**self.gw.config()).clone());
        let loaded =
            tokio::task::spawn_blocking(move || load_dir(&engine, &dir, builtin, &secrets))
                .await
                .unwrap_or_else(|e| {
                    Err(LoadError {
                        file: self.dir.display().to_string(),
                        reason: format!("reload task failed: {e}"),
                    })
                });
        match loaded {
            Ok(set) => {
                let names: Vec<String> = set
                    .plugins()
                    .map(|p| format!("{} ({})", p.name(), p.manifest.kind.name()))
                    .collect();
                self.gw.install_policies(set);
                tracing::info!(dir = %self.dir.display(), policies = ?names, "policies loaded");
                self.gw
                    .telemetry
                    .audit(&crate::telemetry::audit::AuditEvent {
                        event: "policy_reload",
                        detail: Some(&format!(
                            "loaded {}: {}",
                            self.dir.display(),
                            names.join(", ")
                        )),
                        ..Default::default()
                    });
                Ok(())
            }
            Err(e) => {
                tracing::error!(file = %e.file, reason = %e.reason, "policy reload refused; the previous policies keep serving");
                self.gw.record_policy_error(&e);
                self.gw
                    .telemetry
                    .audit(&crate::telemetry::audit::AuditEvent {
                        event: "policy_reload",
                        detail: Some(&format!("refused {}: {}", e.file, e.reason)),
                        ..Default::default()
                    });
                Err(e)
            }
        }
    }

    /// Watches the directory until the returned watcher is dropped.
    pub fn watch(self, debounce: Duration) -> Result<notify::RecommendedWatcher, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the directory (our own reloads among others) must not trigger a reload.
                if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("policies.dir: cannot watch {}: {e}", self.dir.display()))?;
        watcher
            .watch(&self.dir, RecursiveMode::Recursive)
            .map_err(|e| format!("policies.dir: cannot watch {}: {e}", self.dir.display()))?;
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Debounce: wait for a quiet period so a burst of writes is one reload.
                while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                let _ = self.reload().await;
            }
        });
        Ok(watcher)
    }
}
