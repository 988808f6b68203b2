//! `sluice replay FILE --target ADDR`: a capture run again, open loop, against a gateway or a
//! server (`sluice::capture::player`); `--offline --policies DIR`: its statements judged by a
//! candidate policy set, loaded as the gateway loads it, and what it decides differently.

use std::path::PathBuf;
use std::sync::Arc;

use sluice::capture::format::Capture;
use sluice::capture::offline;
use sluice::config::Config;
use sluice::phase::ConfigPolicy;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The capture (`docs/capture.md`).
    file: PathBuf,
    /// Run it against this server (`host:port`: a gateway with the candidate strategy, or MySQL).
    #[arg(long)]
    target: Option<String>,
    /// The account every replayed connection logs in with (captures hold no passwords).
    #[arg(long, default_value = "app")]
    user: String,
    #[arg(long, default_value = "app-secret")]
    password: String,
    /// 2.0: twice as fast as recorded.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Cut idle gaps in the capture longer than this (milliseconds) to it.
    #[arg(long)]
    skip_idle_ms: Option<u64>,
    /// Judge the statements without a fleet: what the candidate policies decide differently.
    #[arg(long)]
    offline: bool,
    /// The candidate policy directory.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The configuration whose built-in policy and secret sources the candidate loads with.
    #[arg(long, default_value = "config/sluice.toml")]
    config: PathBuf,
    /// Exit 1 when any decision differs (offline), or any statement failed that had not
    /// (replaying), for a deployment pipeline.
    #[arg(long)]
    fail_on_change: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What the run found: `Ok(true)` when it should exit 1.
pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let capture =
        Capture::open(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    if !args.offline {
        let target = args.target.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "name a --target host:port to run the capture against, or --offline --policies DIR"
            )
        })?;
        if !(args.speed > 0.0 && args.speed.is_finite()) {
            anyhow::bail!("--speed {}: above 0", args.speed);
        }
        let opts = sluice::capture::player::PlayOptions {
            target,
            user: args.user.clone(),
            password: args.password.clone(),
            speed: args.speed,
            skip_idle: args.skip_idle_ms.map(std::time::Duration::from_millis),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let report = runtime.block_on(sluice::capture::player::play(&capture, &opts))?;
        print!("{}", report.table());
        super::write_reports(args.json.as_deref(), &report, None, String::new)?;
        return Ok(args.fail_on_change && report.unexpected_errors > 0);
    }
    let dir = args
        .policies
        .ok_or_else(|| anyhow::anyhow!("--offline needs --policies DIR (the candidate set)"))?;
    let capture =
        Capture::open(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let config =
        Config::load(&args.config).map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let engine = sluice::plugin::runtime::PluginEngine::new().map_err(|e| anyhow::anyhow!(e))?;
    let secrets = Arc::new(sluice::plugin::secrets::SecretSources::from_config(
        &config.secrets,
    ));
    let set = sluice::plugin::loader::load_dir(&engine, &dir, ConfigPolicy::new(config), &secrets)
        .map_err(|e| anyhow::anyhow!("policies: {e}"))?;
    let report = offline::evaluate(&capture, &set);
    print!("{}", report.table());
    super::write_reports(args.json.as_deref(), &report, None, String::new)?;
    Ok(args.fail_on_change && report.changes() > 0)
}
