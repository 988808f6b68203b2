//! A router `sluice bench` compares, and the policy directory it runs with: the configured one
//! (same guards, redactor and credentials), its router swapped for the candidate. The directory
//! holds only manifests, whose `plugin` paths point at the original files.

use std::path::{Path, PathBuf};

/// A named strategy of the configured router (`rw-split`'s `strategy` setting), or a router
/// component of one's own with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidate {
    Strategy(String),
    Router {
        name: String,
        wasm: PathBuf,
        /// The manifest's `[settings]`.
        settings: toml::Table,
    },
}

impl Candidate {
    /// `NAME=FILE.wasm` with settings from `SETTINGS` (a TOML table, `key = value, ...`).
    pub fn router(spec: &str, settings: Option<&str>) -> anyhow::Result<Self> {
        let (name, wasm) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--router {spec}: expected NAME=FILE.wasm"))?;
        let wasm = std::fs::canonicalize(wasm)
            .map_err(|e| anyhow::anyhow!("--router {spec}: {wasm}: {e}"))?;
        let settings = match settings {
            None => toml::Table::new(),
            Some(s) => toml::from_str(s)
                .map_err(|e| anyhow::anyhow!("--router-settings for {name}: {e}"))?,
        };
        Ok(Self::Router {
            name: name.to_string(),
            wasm,
            settings,
        })
    }

    /// The candidates a command line names: `strategies`, then each `NAME=FILE.wasm` of
    /// `routers` with the settings of the same position.
    pub fn from_args(
        strategies: &[String],
        routers: &[String],
        settings: &[String],
    ) -> anyhow::Result<Vec<Self>> {
        let mut all: Vec<Self> = strategies
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| Self::Strategy(s.clone()))
            .collect();
        for (i, spec) in routers.iter().enumerate() {
            all.push(Self::router(spec, settings.get(i).map(String::as_str))?);
        }
        Ok(all)
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Strategy(s) => s,
            Self::Router { name, .. } => name,
        }
    }
}

/// A candidate's policy directory, removed when dropped.
pub struct CandidateDir {
    pub path: PathBuf,
}

impl Drop for CandidateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes the candidate's policy directory: every manifest of `base`, its plugin path made
/// absolute, the router's replaced or re-set.
pub fn prepare(base: &Path, candidate: &Candidate, n: usize) -> anyhow::Result<CandidateDir> {
    write_dir(
        base,
        candidate,
        &format!("sluice-bench-{}-{n}", std::process::id()),
        false,
    )
}

/// Like [`prepare`], with the router's manifest only (what the simulator runs).
pub fn prepare_router(
    base: &Path,
    candidate: &Candidate,
    n: usize,
) -> anyhow::Result<CandidateDir> {
    write_dir(
        base,
        candidate,
        &format!("sluice-sim-{}-{n}", std::process::id()),
        true,
    )
}

fn write_dir(
    base: &Path,
    candidate: &Candidate,
    name: &str,
    router_only: bool,
) -> anyhow::Result<CandidateDir> {
    let base = std::fs::canonicalize(base)
        .map_err(|e| anyhow::anyhow!("policies.dir {}: {e}", base.display()))?;
    let path = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path)?;
    let dir = CandidateDir { path };
    let mut routers = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&base)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    for file in entries {
        let text = std::fs::read_to_string(&file)?;
        let mut m: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let Some(plugin) = m.get("plugin").and_then(|p| p.as_str()) else {
            continue;
        };
        let plugin = base.join(plugin).to_string_lossy().into_owned();
        m.insert("plugin".into(), plugin.into());
        let router = m.get("kind").and_then(|k| k.as_str()) == Some("router");
        if router_only && !router {
            continue;
        }
        if router {
            routers += 1;
            match candidate {
                Candidate::Strategy(s) => {
                    let settings = m
                        .entry("settings")
                        .or_insert_with(|| toml::Table::new().into());
                    if let Some(t) = settings.as_table_mut() {
                        t.insert("strategy".into(), s.clone().into());
                    }
                }
                Candidate::Router {
                    name,
                    wasm,
                    settings,
                } => {
                    m.insert("name".into(), name.clone().into());
                    m.insert("plugin".into(), wasm.to_string_lossy().into_owned().into());
                    m.insert("settings".into(), settings.clone().into());
                }
            }
        }
        let name = file.file_name().unwrap_or_default();
        std::fs::write(dir.path.join(name), toml::to_string(&m)?)?;
    }
    if routers == 0 {
        match candidate {
            Candidate::Router { .. } => {
                let mut m = toml::Table::new();
                m.insert("name".into(), candidate.name().into());
                m.insert("kind".into(), "router".into());
                m.insert("on-error".into(), "primary".into());
                if let Candidate::Router { wasm, settings, .. } = candidate {
                    m.insert("plugin".into(), wasm.to_string_lossy().into_owned().into());
                    m.insert("settings".into(), settings.clone().into());
                }
                std::fs::write(dir.path.join("bench-router.toml"), toml::to_string(&m)?)?;
            }
            Candidate::Strategy(s) => anyhow::bail!(
                "strategy {s}: the policy directory {} has no router to set it on (add \
                 rw-split, or compare --router NAME=FILE.wasm)",
                base.display()
            ),
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_gets_the_strategy_and_the_rest_stays() {
        let base = std::env::temp_dir().join(format!("sluice-cand-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).expect("dir");
        std::fs::write(
            base.join("rw.toml"),
            "name = \"rw\"\nkind = \"router\"\nplugin = \"rw.wasm\"\n[settings]\nstrategy = \"sticky\"\nmax-lag-ms = 5\n",
        )
        .expect("write");
        std::fs::write(
            base.join("g.toml"),
            "name = \"g\"\nkind = \"guard\"\nplugin = \"g.wasm\"\n",
        )
        .expect("write");
        let d = prepare(&base, &Candidate::Strategy("p2c".into()), 99).expect("prepare");
        let rw: toml::Table =
            toml::from_str(&std::fs::read_to_string(d.path.join("rw.toml")).expect("read"))
                .expect("toml");
        assert_eq!(rw["settings"]["strategy"].as_str(), Some("p2c"));
        assert_eq!(rw["settings"]["max-lag-ms"].as_integer(), Some(5));
        let canon = std::fs::canonicalize(&base).expect("canon");
        assert_eq!(
            rw["plugin"].as_str().map(PathBuf::from),
            Some(canon.join("rw.wasm"))
        );
        assert!(d.path.join("g.toml").exists());
        let r = prepare_router(&base, &Candidate::Strategy("c3".into()), 99).expect("prepare");
        assert!(r.path.join("rw.toml").exists() && !r.path.join("g.toml").exists());
        let path = d.path.clone();
        drop(d);
        assert!(!path.exists(), "removed when dropped");
        std::fs::remove_file(base.join("rw.toml")).expect("rm");
        let e = prepare(&base, &Candidate::Strategy("p2c".into()), 98)
            .map(|_| ())
            .expect_err("refused");
        assert!(e.to_string().contains("no router"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
