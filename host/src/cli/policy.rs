//! `sluice policy test CASES...`: each case file's policy loaded as the gateway loads it and
//! run against its cases (`sluice::plugin::cases`); a pass/fail table, exit 1 on a mismatch.

use std::path::PathBuf;

use sluice::plugin::cases;
use sluice::plugin::runtime::PluginEngine;

#[derive(clap::Subcommand)]
pub enum PolicyCmd {
    /// Run policies against case files (statement, session facts, expected decision): print
    /// pass/fail with the actual decision; exit 1 when a case fails, 2 when a file or its
    /// policy cannot be used.
    Test {
        /// Case files (TOML; see docs/policies.md, "Testing a policy").
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// `Ok(true)`: some case failed.
pub fn run(cmd: PolicyCmd) -> anyhow::Result<bool> {
    let PolicyCmd::Test { files, json } = cmd;
    let engine = PluginEngine::with_compiled_cache(
        sluice::config::PoliciesConfig::default().compiled_cache(),
    )
    .map_err(|e| anyhow::anyhow!("policy engine: {e}"))?;
    let mut results = Vec::with_capacity(files.len());
    for file in &files {
        let r = cases::run_file(&engine, file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        results.push(r);
    }
    print!("{}", cases::table(&results));
    super::write_reports(json.as_deref(), &results, None, String::new)?;
    Ok(results.iter().any(|r| r.failed() > 0))
}
