//! Configuration reload without a restart: on SIGHUP, `POST /api/reload`, or a change of the
//! configuration file or of a file it names (password files, the TLS certificate and key, the
//! admin token: what Kubernetes mounts from Secrets and swaps through `..data`).
//!
//! A reload reads the file again, validates it whole, builds what it needs (a TLS acceptor when
//! the certificate changed, backends for the new names) and only then swaps: the configuration,
//! the fleet (a backend added serves at once; one removed leaves the fleet and drains, its
//! statements in flight and open transactions finishing first), the built-in policy's users,
//! groups and limits, the monitor's settings, the certificate new TLS clients get. A file that
//! does not validate changes nothing and is reported with its file, key and reason. Keys that
//! cannot change in a running process (the listen address, logging, OTLP, ...) keep their old
//! value and are named in the log.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::config::{BackendConfig, Config, TlsConfig};
use crate::gateway::Gateway;
use crate::pool::{Backend, Fleet};

/// Everything a configuration reload needs.
#[derive(Clone)]
pub struct ConfigReloader {
    gw: Arc<Gateway>,
    path: PathBuf,
    /// What the certificate and key files held when the acceptor in force was built.
    tls_files: Arc<Mutex<Option<u64>>>,
}

/// What a reload changed, for the log, the audit trail and the admin API.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadSummary {
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub backends_changed: Vec<String>,
    pub users_added: Vec<String>,
    pub users_removed: Vec<String>,
    /// Users whose settings (password, limits, group ...) changed; never what they are.
    pub users_changed: Vec<String>,
    pub certificate_reloaded: bool,
    /// Sections other than backends and users that changed (routing, limits, monitor ...).
    pub sections_changed: Vec<&'static str>,
    /// Keys that changed in the file but apply only at the next start; they keep their value.
    pub restart_required: Vec<&'static str>,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.backends_changed.is_empty()
            && self.users_added.is_empty()
            && self.users_removed.is_empty()
            && self.users_changed.is_empty()
            && !self.certificate_reloaded
            && self.sections_changed.is_empty()
    }
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let mut list = |what: &str, names: &[String]| {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        };
        list("backends added:", &self.backends_added);
        list("backends removed:", &self.backends_removed);
        list("backends changed:", &self.backends_changed);
        list("users added:", &self.users_added);
        list("users removed:", &self.users_removed);
        list("users changed:", &self.users_changed);
        if self.certificate_reloaded {
            parts.push("frontend certificate reloaded".into());
        }
        if !self.sections_changed.is_empty() {
            parts.push(format!("changed: {}", self.sections_changed.join(", ")));
        }
        if parts.is_empty() {
            parts.push("nothing changed".into());
        }
        f.write_str(&parts.join("; "))
    }
}

/// Sections (or keys) read once at start. A reload keeps their old value and names them.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt).+) => {
            if old.$($field).+ != new.$($field).+ {
                new.$($field).+ = old.$($field).+.clone();
                kept.push($name);
            }
        };
    }
    keep!("frontend.listen", frontend.listen);
    keep!("admin.enabled", admin.enabled);
    keep!("admin.listen", admin.listen);
    keep!("log", log);
    keep!("otlp", otlp);
    keep!("audit", audit);
    keep!("policies", policies);
    keep!("secrets", secrets);
    keep!("digests", digests);
    keep!("metrics.enabled", metrics.enabled);
    kept
}

/// The sections besides backends and users that a reload changed (and applies).
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.frontend != new.frontend {
        out.push("frontend");
    }
    if old.routing != new.routing {
        out.push("routing");
    }
    if old.limits != new.limits {
        out.push("limits");
    }
    if old.monitor != new.monitor {
        out.push("monitor");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.metrics != new.metrics {
        out.push("metrics");
    }
    out
}

/// A hash of the certificate and key files' bytes, to tell a rotated certificate from the same
/// one (`None`: no files, or unreadable; the build reports why).
fn tls_files_hash(tls: &TlsConfig) -> Option<u64> {
    let (cert, key) = (tls.cert.as_ref()?, tls.key.as_ref()?);
    let mut h = DefaultHasher::new();
    std::fs::read(cert).ok()?.hash(&mut h);
    std::fs::read(key).ok()?.hash(&mut h);
    Some(h.finish())
}

/// The new fleet, worked out from the old one: backends kept (maybe retuned), added, removed.
struct FleetPlan {
    order: Vec<Arc<Backend>>,
    retune: Vec<(Arc<Backend>, BackendConfig)>,
    added: Vec<Arc<Backend>>,
    removed: Vec<Arc<Backend>>,
}

impl FleetPlan {
    fn new(old: &Fleet, configs: &[BackendConfig]) -> Self {
        let mut plan = Self {
            order: Vec::with_capacity(configs.len()),
            retune: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
        };
        for c in configs {
            if let Some(b) = old.by_name(&c.name).filter(|b| b.same_server(c)) {
                if **b.config() != *c {
                    plan.retune.push((Arc::clone(b), c.clone()));
                }
                plan.order.push(Arc::clone(b));
            } else {
                let b = Arc::new(Backend::new(c.clone()));
                plan.added.push(Arc::clone(&b));
                plan.order.push(b);
            }
        }
        plan.removed = old
            .backends()
            .iter()
            .filter(|b| !plan.order.iter().any(|o| Arc::ptr_eq(o, b)))
            .cloned()
            .collect();
        plan
    }

    fn changes_membership(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

fn user_changes(old: &Config, new: &Config, s: &mut ReloadSummary) {
    for u in &new.users {
        match old.user(&u.name) {
            None => s.users_added.push(u.name.clone()),
            Some(o) if o != u => s.users_changed.push(u.name.clone()),
            Some(_) => {}
        }
    }
    s.users_removed = old
        .users
        .iter()
        .filter(|u| new.user(&u.name).is_none())
        .map(|u| u.name.clone())
        .collect();
}

impl ConfigReloader {
    /// A reloader of `path`, the file `gw`'s configuration came from.
    pub fn new(gw: Arc<Gateway>, path: PathBuf) -> Self {
        let hash = tls_files_hash(&gw.config().frontend.tls);
        Self {
            gw,
            path,
            tls_files: Arc::new(Mutex::new(hash)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again and applies what changed; a file that does not validate (or a
    /// certificate that does not load) changes nothing and is returned as the reason.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let _one_at_a_time = self.gw.reload_lock.lock().await;
        let outcome = self.build_and_swap().await;
        match &outcome {
            Ok(s) if s.is_empty() => {
                tracing::debug!(file = %self.path.display(), "configuration reloaded: nothing changed");
            }
            Ok(s) => {
                tracing::info!(file = %self.path.display(), changes = %s, "configuration reloaded");
                if !s.restart_required.is_empty() {
                    tracing::warn!(keys = ?s.restart_required, "these keys changed but apply only after a restart; they keep their running value");
                }
            }
            Err(e) => {
                tracing::error!(reason = %e, "configuration reload refused; the previous configuration keeps serving");
            }
        }
        let detail = match &outcome {
            Ok(s) => format!("applied {}: {s}", self.path.display()),
            Err(e) => format!("refused: {e}"),
        };
        self.gw
            .telemetry
            .audit(&crate::telemetry::audit::AuditEvent {
                event: "config_reload",
                detail: Some(&detail),
                ..Default::default()
            });
        self.gw.record_reload(match &outcome {
            Ok(s) => Ok((!s.is_empty()).then(|| s.to_string())),
            Err(e) => Err(e.clone()),
        });
        outcome
    }

    async fn build_and_swap(&self) -> Result<ReloadSummary, String> {
        let path = self.path.clone();
        let mut next = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| format!("{}: the reload task failed: {e}", self.path.display()))?
            .map_err(|e| e.to_string())?;
        let old = self.gw.config_full();
        let mut summary = ReloadSummary {
            restart_required: keep_restart_only(&old, &mut next),
            sections_changed: changed_sections(&old, &next),
            ..ReloadSummary::default()
        };
        user_changes(&old, &next, &mut summary);
        // The certificate: rebuilt when its settings or its files' bytes changed.
        let files = tls_files_hash(&next.frontend.tls);
        let tls_changed = old.frontend.tls != next.frontend.tls
            || files
                != *self
                    .tls_files
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
        let acceptor = if tls_changed {
            let tls = next.frontend.tls.clone();
            let built = tokio::task::spawn_blocking(move || crate::frontend::tls::acceptor(&tls))
                .await
                .map_err(|e| format!("frontend.tls: the reload task failed: {e}"))?
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            Some(built)
        } else {
            None
        };
        let plan = FleetPlan::new(&self.gw.fleet(), &next.backends);
        summary.backends_added = plan.added.iter().map(|b| b.name().to_string()).collect();
        summary.backends_removed = plan.removed.iter().map(|b| b.name().to_string()).collect();
        summary.backends_changed = plan
            .retune
            .iter()
            .map(|(b, _)| b.name().to_string())
            .collect();
        // Everything is built: swap.
        for (b, c) in plan.retune.iter().cloned() {
            b.retune(c);
        }
        let fleet = plan
            .changes_membership()
            .then(|| Fleet::from_backends(plan.order.clone()));
        self.gw.rebase_policies(&next);
        self.gw.install_config(next, fleet, plan.removed.clone());
        for b in &plan.added {
            self.gw.look_after(b);
        }
        // After the swap, so the sessions' next statements route around them.
        for b in &plan.removed {
            b.retire();
        }
        if let Some(a) = acceptor {
            self.gw.set_tls(a);
            *self
                .tls_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = files;
            summary.certificate_reloaded = true;
        }
        Ok(summary)
    }

    /// The directories to watch: the configuration file's and those of the files it names.
    fn watched_dirs(&self) -> Vec<PathBuf> {
        let c = self.gw.config();
        let mut files: Vec<&Path> = vec![&self.path];
        files.extend(c.frontend.tls.cert.as_deref());
        files.extend(c.frontend.tls.key.as_deref());
        files.extend(c.admin.token_file.as_deref());
        files.extend(c.users.iter().filter_map(|u| u.password_file.as_deref()));
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    fn watcher(
        dirs: &[PathBuf],
        tx: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Result<notify::RecommendedWatcher, String> {
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Our own reads of the files must not trigger another reload.
                if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("cannot watch the configuration: {e}"))?;
        for d in dirs {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| format!("cannot watch {}: {e}", d.display()))?;
        }
        Ok(watcher)
    }

    /// Reloads after every change of the watched files (debounced), re-aiming the watch when a
    /// reload names files in other directories. Runs until the gateway shuts down.
    pub fn watch(self, debounce: Duration) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut dirs = self.watched_dirs();
        let first = Self::watcher(&dirs, tx.clone())?;
        let mut shutdown = self.gw.shutdown.clone();
        tokio::spawn(async move {
            // Watching lasts as long as this task holds the watcher.
            let mut _watcher = first;
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = shutdown.changed() => return,
                }
                while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
                let _ = self.reload().await;
                let now = self.watched_dirs();
                if now != dirs {
                    match Self::watcher(&now, tx.clone()) {
                        Ok(w) => {
                            _watcher = w;
                            dirs = now;
                        }
                        Err(e) => tracing::warn!(error = %e, "keeping the previous watch"),
                    }
                }
            }
        });
        Ok(())
    }
}
