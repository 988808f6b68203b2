//! The subcommands beyond `serve` and `check-config`, one file each.

pub mod bench;
pub mod policy;
pub mod replay;
pub mod simulate;

use std::path::Path;

/// Writes a report where the command line asked: `json` (the value, pretty) and `html` (the
/// page, made only when asked), saying where on stderr.
pub fn write_reports(
    json: Option<&Path>,
    value: &impl serde::Serialize,
    html: Option<&Path>,
    page: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(value)?;
        std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(path) = html {
        std::fs::write(path, page()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        eprintln!("HTML report: {}", path.display());
    }
    Ok(())
}
