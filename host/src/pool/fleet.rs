//! All configured backends, and the groups (clusters: a primary and its replicas) they form. A
//! session runs in one group, named by its user's grant; routers choose within it.

use std::sync::Arc;

use super::Backend;
use super::backend::WriterView;
use crate::config::{BackendConfig, DEFAULT_GROUP, Role};
use crate::phase::BackendStatus;

/// One cluster: a primary and its replicas.
pub struct Group {
    pub name: String,
    backends: Vec<Arc<Backend>>,
    /// The configured primary (config validation guarantees exactly one).
    primary: usize,
}

/// Which server of a group takes writes, as the monitor sees it: the one that is writable and
/// not replicating, whatever its configured role (a promoted replica is the writer).
#[derive(Clone)]
pub enum Writer<'a> {
    One(&'a Arc<Backend>),
    None,
    /// Split brain: these are all writable and not replicating.
    Several(Vec<&'a str>),
}

impl Group {
    /// Where writes go: the detected writer; while there is none (or more than one) the
    /// configured primary, for reads that fall back to it ([`Group::writer`] refuses writes).
    pub fn primary(&self) -> &Arc<Backend> {
        match self.writer() {
            Writer::One(b) => b,
            _ => &self.backends[self.primary],
        }
    }

    /// The writer. Before the monitor has probed the configured primary (or with no monitor)
    /// the configured primary counts as writable.
    pub fn writer(&self) -> Writer<'_> {
        let mut found: Vec<&Arc<Backend>> = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            match b.writer_view() {
                WriterView::Candidate => found.push(b),
                WriterView::Unknown if i == self.primary => found.push(b),
                _ => {}
            }
        }
        match found.as_slice() {
            [one] => Writer::One(one),
            [] => Writer::None,
            several => Writer::Several(several.iter().map(|b| b.name()).collect()),
        }
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
