//! Sluice: a MySQL gateway whose policies are sandboxed WebAssembly plugins.
//!
//! The flow, from `main` to a packet on the wire: [`config`] loads the settings; [`serve`] binds
//! the listener and builds the shared [`gateway::Gateway`]; [`frontend`] accepts a client and runs
//! the connection phase ([`frontend::connect`]); [`session`] serves its commands, asking the
//! [`phase::Policy`] what may run and where, borrowing connections from the gateway's own [`pool`]s and
//! relaying results through [`protocol`].

pub mod admin;
pub mod auth;
pub mod bench;
pub mod capture;
pub mod config;
pub mod error;
pub mod facts;
pub mod frontend;
pub mod gateway;
pub mod gtid;
pub mod infile;
pub mod phase;
pub mod plugin;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod replay;
pub mod session;
pub mod sim;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Config;
use gateway::Gateway;
use phase::ConfigPolicy;

/// A gateway bound to its port, ready to run (tests bind port 0 and read the address).
pub struct Bound {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    /// Reloads the policy directory (when one is configured).
    reloader: Option<plugin::watch::Reloader>,
    /// Keeps the directory watched while the gateway runs.
    _watcher: Option<notify::RecommendedWatcher>,
    /// Reloads the configuration file (when the configuration came from one).
    config_reloader: Option<reload::ConfigReloader>,
    /// The admin API's listener (`admin.enabled`).
    admin: Option<TcpListener>,
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        Arc::clone(&self.gateway)
    }

    /// Reloads the policy directory now (the watcher does this on every change).
    pub fn reloader(&self) -> Option<plugin::watch::Reloader> {
        self.reloader.clone()
    }

    /// Reloads the configuration file now (SIGHUP; the watcher does this on every change).
    pub fn config_reloader(&self) -> Option<reload::ConfigReloader> {
        self.config_reloader.clone()
    }

    /// Where the admin API listens, when it is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` turns true, then drains.
    pub async fn run(self) {
        if let Some(l) = self.admin {
            tokio::spawn(admin::serve(
                l,
                Arc::clone(&self.gateway),
                Reloaders {
                    policies: self.reloader.clone(),
                    config: self.config_reloader.clone(),
                },
            ));
        }
        let gateway = Arc::clone(&self.gateway);
        frontend::run(self.listener, self.gateway).await;
        // Drained: what the sessions traced goes out before the process ends, and a capture
        // gets its last line.
        if let Some(o) = &gateway.telemetry.otlp {
            o.shutdown().await;
        }
        if gateway.capture().is_some() {
            let gw = Arc::clone(&gateway);
            let _ =
                tokio::task::spawn_blocking(move || gw.stop_capture("the gateway stopped")).await;
        }
    }
}

/// What reloads what: the policy directory, the configuration file.
#[derive(Clone, Default)]
pub struct Reloaders {
    pub policies: Option<plugin::watch::Reloader>,
    pub config: Option<reload::ConfigReloader>,
}

impl Reloaders {
    /// Reloads the configuration, then the policy directory (SIGHUP, `POST /api/reload`).
    pub async fn reload_all(&self) -> ReloadOutcome {
        let config = match &self.config {
            Some(r) => Some(r.reload().await),
            None => None,
        };
        let policies = match &self.policies {
            Some(r) => Some(r.reload().await),
            None => None,
        };
        ReloadOutcome { config, policies }
    }
}

/// What [`Reloaders::reload_all`] did (`None`: nothing of that kind to reload).
pub struct ReloadOutcome {
    pub config: Option<Result<reload::ReloadSummary, String>>,
    pub policies: Option<Result<(), plugin::loader::LoadError>>,
}

/// The policy directory in use: configured and enabled.
pub(crate) fn policy_dir(config: &Config) -> Option<&std::path::Path> {
    config
        .policies
        .dir
        .as_deref()
        .filter(|_| config.policies.enabled)
}

/// Loads the configured policy directory the way the gateway would (compile, link, configure,
/// smoke-call every policy) without serving: the active set's names ("name (kind)"), or the
/// file and reason that would refuse it. `Ok(None)` when no policy directory is in use.
pub fn check_policies(config: &Config) -> anyhow::Result<Option<Vec<String>>> {
    let Some(dir) = policy_dir(config) else {
        return Ok(None);
    };
    let engine =
        plugin::runtime::PluginEngine::with_compiled_cache(config.policies.compiled_cache())
            .map_err(|e| anyhow::anyhow!(e))?;
    let secrets = Arc::new(plugin::secrets::SecretSources::from_config(&config.secrets));
    let set = plugin::loader::load_dir(&engine, dir, ConfigPolicy::new(config.clone()), &secrets)
        .map_err(|e| anyhow::anyhow!("policies: {e}"))?;
    Ok(Some(
        set.plugins()
            .map(|p| format!("{} ({})", p.name(), p.manifest.kind.name()))
            .collect(),
    ))
}

/// Binds the listener and builds the gateway: the built-in policy, plus the policy directory's
/// policies when `policies.dir` is set (a directory that does not load refuses the start).
pub async fn bind(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Bound> {
    let tls = frontend::tls::acceptor(&config.frontend.tls)?;
    let listener = TcpListener::bind(config.frontend.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "frontend.listen: cannot listen on {}: {e}",
                config.frontend.listen
            )
        })?;
    let builtin = plugin::set::PolicySet::builtin(ConfigPolicy::new(config.clone()));
    let mut gateway = Gateway::new(config.clone(), Box::new(builtin), shutdown);
    gateway.set_tls(tls);
    gateway.telemetry.audit = telemetry::audit::AuditLog::open(&config.audit).map_err(|e| {
        anyhow::anyhow!(
            "audit.file: cannot open {}: {e}",
            config
                .audit
                .file
                .as_deref()
                .unwrap_or(std::path::Path::new("-"))
                .display()
        )
    })?;
    gateway.telemetry.otlp = telemetry::otlp::Otlp::start(&config.otlp, gateway.fleet_handle())?;
    let gateway = Arc::new(gateway);
    for b in gateway.fleet().backends() {
        gateway.look_after(b);
    }
    if let Some(name) = &config.capture.start {
        gateway
            .start_capture(name, None, None, None)
            .map_err(|e| anyhow::anyhow!("capture.start: {e}"))?;
    }
    let (mut reloader, mut watcher) = (None, None);
    if let Some(dir) = policy_dir(&config) {
        let r = plugin::watch::Reloader {
            gw: Arc::clone(&gateway),
            engine: plugin::runtime::PluginEngine::with_compiled_cache(
                config.policies.compiled_cache(),
            )
            .map_err(|e| anyhow::anyhow!(e))?,
            dir: dir.to_path_buf(),
            secrets: Arc::new(plugin::secrets::SecretSources::from_config(&config.secrets)),
        };
        r.reload()
            .await
            .map_err(|e| anyhow::anyhow!("policies: {e}"))?;
        if config.policies.watch {
            let debounce = std::time::Duration::from_millis(config.policies.debounce_ms);
            watcher = Some(r.clone().watch(debounce).map_err(|e| anyhow::anyhow!(e))?);
        }
        reloader = Some(r);
    }
    let mut config_reloader = None;
    if let Some(path) = &config.source {
        let r = reload::ConfigReloader::new(Arc::clone(&gateway), path.clone());
        if config.reload.watch {
            r.clone()
                .watch(std::time::Duration::from_millis(config.reload.debounce_ms))
                .map_err(|e| anyhow::anyhow!("reload.watch: {e}"))?;
        }
        config_reloader = Some(r);
    }
    let admin = if config.admin.enabled {
        Some(admin::bind(&gateway).await?)
    } else {
        None
    };
    Ok(Bound {
        listener,
        gateway,
        reloader,
        _watcher: watcher,
        config_reloader,
        admin,
    })
}
