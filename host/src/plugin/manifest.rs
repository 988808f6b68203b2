//! A policy's manifest (`policies/*.toml`): which plugin file, which kind, in which order, what to
//! do when it fails, its limits and its settings.
//!
//! ```toml
//! name = "guard"
//! kind = "guard"            # guard | router | redactor | credentials
//! plugin = "guard.wasm"     # relative to the manifest
//! order = 10                # guards run in ascending order
//! on-error = "deny"         # deny | allow | primary; default: deny (guard, redactor,
//!                           # credentials), primary (router)
//! wasi = false              # true for plugins whose toolchain needs WASI (Python): they get
//!                           # an empty WASI context (see `sandbox`)
//! [limits]
//! deadline-ms = 50          # per call, wall clock: stops a runaway guest
//! memory-mib = 16           # per instance (1-1024)
//! instances = 32            # warm instances kept (1-128)
//! [settings]                # handed to the plugin's configure() as JSON
//! deny-ddl = true
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Guard,
    Router,
    Redactor,
    Credentials,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Guard => "guard",
            Self::Router => "router",
            Self::Redactor => "redactor",
            Self::Credentials => "credentials",
        }
    }
}

/// What a failed call (trap, timeout, out of memory) turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse the statement (or login) with an error naming the policy.
    Deny,
    /// Let the statement through as if the guard allowed it.
    Allow,
    /// Route to the primary (routers).
    Primary,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    pub deadline_ms: u64,
    pub memory_mib: u64,
    pub instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline_ms: 50,
            memory_mib: 16,
            instances: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawManifest {
    name: String,
    kind: Kind,
    plugin: PathBuf,
    #[serde(default)]
    order: i32,
    on_error: Option<OnError>,
    #[serde(default)]
    wasi: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    settings: toml::Table,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub kind: Kind,
    /// The plugin file, resolved against the manifest's directory.
    pub plugin: PathBuf,
    pub order: i32,
    pub on_error: OnError,
    /// The plugin imports WASI (a toolchain such as componentize-py needs it): it is linked
    /// against an empty WASI context instead of being refused.
    pub wasi: bool,
    pub limits: Limits,
    /// The settings as JSON, for `configure`.
    pub settings_json: String,
    /// Where it came from (for errors).
    pub file: PathBuf,
}

impl Manifest {
    pub fn load(file: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self, String> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.name.is_empty() {
            return Err("key `name`: must not be empty".into());
        }
        let on_error = raw.on_error.unwrap_or(match raw.kind {
            Kind::Router => OnError::Primary,
            _ => OnError::Deny,
        });
        match (raw.kind, on_error) {
            (Kind::Router, OnError::Allow) => {
                return Err("key `on-error`: a router's on-error is `primary` or `deny`".into());
            }
            (Kind::Guard | Kind::Credentials | Kind::Redactor, OnError::Primary) => {
                return Err(format!(
                    "key `on-error`: a {}'s on-error is `deny` or `allow`",
                    raw.kind.name()
                ));
            }
            _ => {}
        }
        if raw.limits.deadline_ms == 0 || raw.limits.deadline_ms > 10_000 {
            return Err("key `limits.deadline-ms`: must be between 1 and 10000".into());
        }
        if raw.limits.memory_mib == 0 || raw.limits.memory_mib > 1024 {
            return Err("key `limits.memory-mib`: must be between 1 and 1024".into());
        }
        // Every policy's instances come from one engine-wide pool of slots.
        if raw.limits.instances == 0 || raw.limits.instances > 128 {
            return Err("key `limits.instances`: must be between 1 and 128".into());
        }
        let dir = file.parent().unwrap_or_else(|| Path::new("."));
        let settings_json =
            serde_json::to_string(&raw.settings).map_err(|e| format!("key `settings`: {e}"))?;
        Ok(Self {
            name: raw.name,
            kind: raw.kind,
            plugin: dir.join(raw.plugin),
            order: raw.order,
            on_error,
            wasi: raw.wasi,
            limits: raw.limits,
            settings_json,
            file: file.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_settings_as_json() {
        let m = Manifest::parse(
            "name = \"g\"\nkind = \"guard\"\nplugin = \"g.wasm\"\n[settings]\ndeny-ddl = false\nlist = [\"a\"]\n",
            Path::new("/p/g.toml"),
        )
        .expect("valid");
        assert_eq!(m.plugin, PathBuf::from("/p/g.wasm"));
        assert_eq!(m.on_error, OnError::Deny);
        assert_eq!(m.settings_json, r#"{"deny-ddl":false,"list":["a"]}"#);
        let r = Manifest::parse(
            "name = \"r\"\nkind = \"router\"\nplugin = \"r.wasm\"\n",
            Path::new("r.toml"),
        )
        .expect("valid");
        assert_eq!(r.on_error, OnError::Primary);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Manifest::parse(
            "name = \"r\"\nkind = \"router\"\nplugin = \"r.wasm\"\non-error = \"allow\"\n",
            Path::new("r.toml"),
        )
        .expect_err("bad");
        assert!(e.contains("on-error"), "{e}");
        let e = Manifest::parse(
            "name = \"g\"\nkind = \"gaurd\"\nplugin = \"g.wasm\"\n",
            Path::new("g.toml"),
        )
        .expect_err("bad");
        assert!(e.contains("kind") || e.contains("gaurd"), "{e}");
        let e = Manifest::parse(
            "name = \"g\"\nkind = \"guard\"\nplugin = \"g.wasm\"\n[limits]\ndeadline-ms = 0\n",
            Path::new("g.toml"),
        )
        .expect_err("bad");
        assert!(e.contains("deadline-ms"), "{e}");
        for (limit, key) in [
            ("memory-mib = 2048", "memory-mib"),
            ("instances = 1000", "instances"),
        ] {
            let e = Manifest::parse(
                &format!(
                    "name = \"g\"\nkind = \"guard\"\nplugin = \"g.wasm\"\n[limits]\n{limit}\n"
                ),
                Path::new("g.toml"),
            )
            .expect_err("over the engine's pool");
            assert!(e.contains(key), "{e}");
        }
    }
}
