//! Secret sources for `host.secret(name)`: environment variables with an allowed prefix, and
//! files in an allowed directory (the way Kubernetes mounts Secrets). Nothing else is reachable,
//! and values are never logged.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where `host.secret` may look.
#[derive(Debug, Clone, Default)]
pub struct SecretSources {
    /// `secret("db-password")` reads `<prefix>DB_PASSWORD`.
    pub env_prefix: Option<String>,
    /// `secret("db-password")` reads `<dir>/db-password`.
    pub dir: Option<PathBuf>,
    /// Values given by name (a case file's `[secrets]` for `sluice policy test`).
    pub inline: BTreeMap<String, String>,
}

/// Secret files larger than this are refused.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

impl SecretSources {
    /// The sources the configuration's `[secrets]` allows.
    pub fn from_config(c: &crate::config::SecretsConfig) -> Self {
        Self {
            env_prefix: c.env_prefix.clone(),
            dir: c.dir.clone(),
            inline: BTreeMap::new(),
        }
    }

    /// A secret by name; `None` when the name is not plain, absent, or no source allows it.
    pub fn get(&self, name: &str) -> Option<String> {
        let plain = !name.is_empty()
            && name.len() <= 128
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !plain {
            return None;
        }
        if let Some(v) = self.inline.get(name) {
            return Some(v.clone());
        }
        if let Some(prefix) = &self.env_prefix {
            let var = format!(
                "{prefix}{}",
                name.to_ascii_uppercase().replace(['-', '.'], "_")
            );
            if let Ok(v) = std::env::var(var) {
                return Some(v);
            }
        }
        let path = self.dir.as_ref()?.join(name);
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_SECRET_BYTES {
            return None;
        }
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_in_the_directory_only() {
        let dir = std::env::temp_dir().join(format!("sluice-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("users.json"), "{\"a\": 1}\n").expect("write");
        let s = SecretSources {
            env_prefix: None,
            dir: Some(dir.clone()),
            ..SecretSources::default()
        };
        assert_eq!(s.get("users.json").as_deref(), Some("{\"a\": 1}"));
        assert_eq!(s.get("../etc/passwd"), None);
        assert_eq!(s.get("/etc/passwd"), None);
        assert_eq!(s.get("missing"), None);
        assert_eq!(SecretSources::default().get("users.json"), None);
    }
}
