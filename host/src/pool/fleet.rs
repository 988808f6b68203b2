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
        // Asked on every write: no allocation unless the answer is a split brain.
        let candidate = |(i, b): &(usize, &Arc<Backend>)| match b.writer_view() {
            WriterView::Candidate => true,
            WriterView::Unknown => *i == self.primary,
            WriterView::NotCandidate | WriterView::Unreachable => false,
        };
        let mut found = self.backends.iter().enumerate().filter(candidate);
        match (found.next(), found.next()) {
            (Some((_, one)), None) => Writer::One(one),
            (None, _) => Writer::None,
            (Some(_), Some(_)) => Writer::Several(
                self.backends
                    .iter()
                    .enumerate()
                    .filter(candidate)
                    .map(|(_, b)| b.name())
                    .collect(),
            ),
        }
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// The group's backends, in configuration order (the order routers are shown).
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    pub fn statuses(&self) -> Vec<BackendStatus> {
        let now = std::time::Instant::now();
        self.backends.iter().map(|b| b.status_at(now)).collect()
    }
}

/// Every backend, by group.
pub struct Fleet {
    backends: Vec<Arc<Backend>>,
    groups: Vec<Arc<Group>>,
}

impl Fleet {
    pub fn new(configs: &[BackendConfig]) -> Self {
        Self::from_backends(
            configs
                .iter()
                .cloned()
                .map(|c| Arc::new(Backend::new(c)))
                .collect(),
        )
    }

    /// A fleet of these backends, in this order (a reload keeps the ones that did not change).
    pub fn from_backends(backends: Vec<Arc<Backend>>) -> Self {
        let mut groups: Vec<Arc<Group>> = Vec::new();
        for b in &backends {
            let name = b.group();
            if groups.iter().any(|g| g.name == name) {
                continue;
            }
            let members: Vec<Arc<Backend>> = backends
                .iter()
                .filter(|o| o.group() == name)
                .cloned()
                .collect();
            let primary = members
                .iter()
                .position(|m| m.role() == Role::Primary)
                .unwrap_or(0);
            groups.push(Arc::new(Group {
                name: name.to_string(),
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
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Every backend of every group.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// Every backend as routing sees it.
    pub fn statuses(&self) -> Vec<BackendStatus> {
        let now = std::time::Instant::now();
        self.backends.iter().map(|b| b.status_at(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::health::{Probe, Replication};

    fn fleet() -> Fleet {
        let backend = |name: &str, role| BackendConfig {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            role,
            ..BackendConfig::default()
        };
        Fleet::new(&[
            backend("primary", Role::Primary),
            backend("replica1", Role::Replica),
            backend("replica2", Role::Replica),
        ])
    }

    fn probe(read_only: bool, replicating: bool) -> Probe {
        Probe {
            read_only,
            replication: if replicating {
                Replication::Running { lag_ms: Some(0) }
            } else {
                Replication::None
            },
        }
    }

    fn writer(f: &Fleet) -> String {
        match f.group(None).expect("group").writer() {
            Writer::One(b) => b.name().to_string(),
            Writer::None => "none".into(),
            Writer::Several(names) => names.join("+"),
        }
    }

    #[test]
    fn the_writer_is_the_one_server_writable_and_not_replicating() {
        let f = fleet();
        let b = |name| f.by_name(name).expect("backend");
        assert_eq!(
            writer(&f),
            "primary",
            "before any probe: the configured primary"
        );
        // A replica restarted writable still replicates: not a writer.
        b("replica1").set_probed(probe(false, true), Some(0));
        b("primary").set_probed(probe(false, false), Some(0));
        assert_eq!(writer(&f), "primary");
        // A switchover: the old primary read-only, then replica1 promoted.
        b("primary").set_probed(probe(true, false), Some(0));
        assert_eq!(writer(&f), "none");
        assert_eq!(f.group(None).expect("group").primary().name(), "primary");
        b("replica1").set_probed(probe(false, false), Some(0));
        assert_eq!(writer(&f), "replica1");
        // Both writable and not replicating: split brain, no guess.
        b("primary").set_probed(probe(false, false), Some(0));
        assert_eq!(writer(&f), "primary+replica1");
        b("primary").set_unreachable("gone".into());
        assert_eq!(writer(&f), "replica1");
    }
}
