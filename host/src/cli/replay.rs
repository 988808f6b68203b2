//! `sluice replay FILE --offline`: a capture's statements judged by a candidate policy set (the
//! `--policies` directory, loaded as the gateway loads it), and what it decides differently.
//! Replaying a capture against a fleet (`--target`) is not built yet.

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
    /// Judge the statements without a fleet: what the candidate policies decide differently.
    #[arg(long)]
    offline: bool,
    /// The candidate policy directory.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// The configuration whose built-in policy and secret sources the candidate loads with.
    #[arg(long, default_value = "config/sluice.toml")]
    config: PathBuf,
    /// Exit 1 when any decision differs (for a deployment pipeline).
    #[arg(long)]
    fail_on_change: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What the run found: `Ok(true)` when it should exit 1.
pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    if !args.offline {
        anyhow::bail!(
            "replaying against a fleet (--target) is not available yet: use --offline with \
             --policies DIR to see what a policy set decides differently"
        );
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
