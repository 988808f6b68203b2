//! The `sluice` command: `serve` runs the gateway, `check-config` validates a configuration and
//! loads its policy directory the way `serve` would, `bench` compares routing strategies on the
//! real fleet and `simulate` on a simulated one, `replay` runs or judges a capture, `policy test`
//! checks one policy against case files.

use std::path::PathBuf;

mod cli;

use clap::{Parser, Subcommand};
use tokio::sync::watch;

use sluice::config::Config;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A MySQL gateway with sandboxed Wasm policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config/sluice.toml")]
        config: PathBuf,
    },
    /// Validate a configuration and load its policy directory (compile, configure, smoke-call every
    /// policy) without serving; exit 2 naming the file and reason on failure.
    CheckConfig {
        #[arg(long, default_value = "config/sluice.toml")]
        config: PathBuf,
    },
    /// Compare routing strategies on a workload against the real fleet, through an in-process
    /// gateway per candidate, with faults injected; print a table, write JSON and HTML reports.
    Bench(cli::bench::BenchArgs),
    /// Compare routing strategies on a simulated fleet (a scenario file), on a virtual clock,
    /// through the same router components; print a table, write JSON and HTML reports.
    Simulate(cli::simulate::SimulateArgs),
    /// Run a capture again against a gateway or server (open loop, a speed factor), or judge
    /// its statements offline with a candidate policy set: what it decides differently.
    Replay(cli::replay::ReplayArgs),
    /// Work with one policy: `test` runs it against case files.
    Policy {
        #[command(subcommand)]
        command: cli::policy::PolicyCmd,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Bench(args) => {
            // Quiet: the gateway's own log would drown the progress line (RUST_LOG overrides).
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
            match cli::bench::run(args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice bench: {e:#}");
                    std::process::ExitCode::from(2)
                }
            }
        }
        Cmd::Replay(args) => match cli::replay::run(args) {
            Ok(false) => std::process::ExitCode::SUCCESS,
            Ok(true) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("sluice replay: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Cmd::Policy { command } => match cli::policy::run(command) {
            Ok(false) => std::process::ExitCode::SUCCESS,
            Ok(true) => std::process::ExitCode::from(1),
            Err(e) => {
                eprintln!("sluice policy: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Cmd::Simulate(args) => match cli::simulate::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice simulate: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Cmd::CheckConfig { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            println!(
                "{}: ok ({} backends, {} users)",
                path.display(),
                config.backends.len(),
                config.users.len()
            );
            match sluice::check_policies(&config) {
                Ok(Some(names)) => println!("policies: ok ({})", names.join(", ")),
                Ok(None) => println!("policies: none (the built-in policy serves)"),
                Err(e) => {
                    eprintln!("invalid {e:#}");
                    return std::process::ExitCode::from(2);
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Cmd::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    return std::process::ExitCode::from(2);
                }
            };
            sluice::telemetry::logs::init(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("sluice: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(false);
    let bound = sluice::bind(config, rx).await?;
    let reloaders = sluice::Reloaders {
        policies: bound.reloader(),
        config: bound.config_reloader(),
    };
    tokio::spawn(reload_on_hangup(reloaders));
    tracing::info!(addr = %bound.local_addr()?, "sluice listening");
    if let Some(admin) = bound.admin_addr() {
        tracing::info!(url = %format!("http://{admin}/"), "admin API and status page");
    }
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    bound.run().await;
    tracing::info!("sluice stopped");
    Ok(())
}

/// SIGHUP reloads the configuration file and the policy directory (what failed is logged).
async fn reload_on_hangup(reloaders: sluice::Reloaders) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload through the admin API or the file");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        let _ = reloaders.reload_all().await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
