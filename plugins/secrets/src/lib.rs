//! The `secrets` credentials policy: who may log in, with which password, as which backend
//! account, read from a secret the operator mounted (`[secrets] dir`) or exported
//! (`[secrets] env-prefix`). The secret is JSON:
//!
//! ```json
//! {"alice": {"password": "s3cret", "backend-user": "app", "backend-password": "app-secret",
//!            "auth-plugin": "caching_sha2_password", "max-connections": 10,
//!            "backend-group": "tenant-a"}}
//! ```
//! `backend-user` / `backend-password` default to the client's; `auth-plugin` to
//! `mysql_native_password`; `backend-group` (the cluster the user's statements run on, a `group`
//! of the gateway's `[[backends]]`) to the default group. The host verifies the client's scramble against `password`.
//!
//! Settings: `{"secret": "users.json"}` (the secret's name).
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;

use serde::Deserialize;

sluice_policy_sdk::runtime!();

#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit/wit", world: "credentials" });
}

use bindings::exports::sluice::policy::identity::{ClientHello, Grant, Guest as Identity};
use bindings::exports::sluice::policy::lifecycle::Guest as Lifecycle;
use bindings::sluice::policy::host;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    pub secret: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            secret: String::from("users.json"),
        }
    }
}

/// One user of the secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct User {
    pub password: String,
    pub backend_user: Option<String>,
    pub backend_password: Option<String>,
    #[serde(default = "native")]
    pub auth_plugin: String,
    #[serde(default)]
    pub max_connections: u32,
    #[serde(default)]
    pub max_statements_per_second: u32,
    #[serde(default)]
    pub statements_burst: u32,
    #[serde(default)]
    pub statement_timeout_ms: Option<u64>,
    #[serde(default)]
    pub backend_group: Option<String>,
}

fn native() -> String {
    String::from("mysql_native_password")
}

/// The users a secret holds.
pub fn parse_users(json: &str) -> Result<BTreeMap<String, User>, String> {
    sluice_policy_sdk::serde_json::from_str(json)
        .map_err(|e| format!("the users secret is not valid: {e}"))
}

/// The grant for `user`, or why not.
pub fn grant(users: &BTreeMap<String, User>, user: &str) -> Result<Grant, String> {
    let u = users
        .get(user)
        .ok_or_else(|| format!("unknown user '{user}'"))?;
    if u.auth_plugin != "mysql_native_password" && u.auth_plugin != "caching_sha2_password" {
        return Err(format!(
            "user '{user}': unsupported auth-plugin '{}'",
            u.auth_plugin
        ));
    }
    Ok(Grant {
        password: u.password.clone(),
        auth_plugin: u.auth_plugin.clone(),
        backend_user: u.backend_user.clone().unwrap_or_else(|| String::from(user)),
        backend_password: u
            .backend_password
            .clone()
            .unwrap_or_else(|| u.password.clone()),
        max_connections: u.max_connections,
        max_statements_per_second: u.max_statements_per_second,
        statements_burst: u.statements_burst,
        statement_timeout_ms: u.statement_timeout_ms,
        backend_group: u.backend_group.clone(),
    })
}

static SETTINGS: sluice_policy_sdk::Global<Settings> = sluice_policy_sdk::Global::new();

struct Policy;

impl Lifecycle for Policy {
    fn configure(settings: String) -> Result<(), String> {
        let s: Settings = sluice_policy_sdk::settings(&settings)?;
        SETTINGS.with(|cur| *cur = s);
        Ok(())
    }
}

impl Identity for Policy {
    fn resolve(hello: ClientHello) -> Result<Grant, String> {
        let name = SETTINGS.with(|s| s.secret.clone());
        let json =
            host::secret(&name).ok_or_else(|| format!("secret '{name}' is not available"))?;
        grant(&parse_users(&json)?, &hello.user)
    }
}

// Exported only in the component (see the guard crate).
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod export {
    use super::{Policy, bindings};
    bindings::export!(Policy with_types_in bindings);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_defaults() {
        let users = parse_users(r#"{"alice": {"password": "pw", "backend-user": "app", "backend-password": "app-secret"}, "bob": {"password": "b"}}"#).expect("valid");
        let a = grant(&users, "alice").expect("alice");
        assert_eq!(
            (a.backend_user.as_str(), a.auth_plugin.as_str()),
            ("app", "mysql_native_password")
        );
        let b = grant(&users, "bob").expect("bob");
        assert_eq!(
            (b.backend_user.as_str(), b.backend_password.as_str()),
            ("bob", "b")
        );
        assert!(grant(&users, "eve").is_err());
        assert!(parse_users("{\"x\": {\"pasword\": \"typo\"}}").is_err());
    }
}
