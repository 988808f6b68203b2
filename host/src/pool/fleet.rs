//! All configured backends, and the groups (clusters: a primary and its replicas) they form. A
//! session runs in one group, named by its user's grant; routers choose within it.

use std::sync::Arc;

use super::Backend;
use crate::config::{BackendConfig, DEFAULT_GROUP, Role};
use crate::phase::BackendStatus;

/// One cluster: a primary and its replicas.
pub struct Group {
    pub name: String,
    backends: Vec<Arc<Backend>>,
    primary: usize,
}

impl Group {
    /// The group's writer (config validation guarantees exactly one).
    pub fn primary(&self) -> &Arc<Backend> {
        &self.backends[self.primary]
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.config.name == name)
    }

    /// The group's backends, in configuration order (the order routers are shown).
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends.iter().map(|b| b.status()).collect()
    }
}

/// Every backend, by group.
pub struct Fleet {
    backends: Vec<Arc<Backend>>,
    groups: Vec<Arc<Group>>,
}

impl Fleet {
    pub fn new(configs: &[BackendConfig]) -> Self {
        let backends: Vec<Arc<Backend>> = configs
            .iter()
            .cloned()
            .map(|c| Arc::new(Backend::new(c)))
            .collect();
        let mut groups: Vec<Arc<Group>> = Vec::new();
        for b in &backends {
            let name = &b.config.group;
            if groups.iter().any(|g| &g.name == name) {
                continue;
            }
            let members: Vec<Arc<Backend>> = backends
                .iter()
                .filter(|o| &o.config.group == name)
                .cloned()
                .collect();
            let primary = members
                .iter()
                .position(|m| m.config.role == Role::Primary)
                .unwrap_or(0);
            groups.push(Arc::new(Group {
                name: name.clone(),
                backends: members,
                primary,
            }));
        }
        Self { backends, groups }
    }

    /// The group called `name`; `None` asks for the default group (`"default"`, or the first
    /// configured when no backend is in it).
    pub fn group(&self, name: Option<&str>) -> Option<&Arc<Group>> {
        match name {
            Some(n) => self.groups.iter().find(|g| g.name == n),
            None => self
                .groups
                .iter()
                .find(|g| g.name == DEFAULT_GROUP)
                .or_else(|| self.groups.first()),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.config.name == name)
    }

    /// Every backend of every group.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Every backend as routing sees it.
    pub fn statuses(&self) -> Vec<BackendStatus> {
        self.backends.iter().map(|b| b.status()).collect()
    }

    pub async fn disconnect(&self) {
        for b in &self.backends {
            b.disconnect().await;
        }
    }
}
