//! A backend's health as a state machine: `up`, `lagging`, `down`, `draining`, fed by the
//! monitor's probes and by the traffic's own connection failures, with a circuit breaker.
//!
//! Synchronous with the time passed in (unit-tested without a network). [`super::Backend`]
//! keeps one behind a lock, logs every [`Transition`] as one line and counts it. Routers see a
//! backend as usable only when it is `up`: never while its breaker is open, never a replica that
//! stopped replicating, lost its lag figure, or turned writable.
//!
//! The breaker opens after `breaker-failures` connection failures of the traffic (connects
//! refused or timed out, connections lost mid-statement) within `breaker-window-ms`. While it is
//! open the monitor's next probe is the half-open test: a probe that answers closes it, so a
//! backend that answers again is back within two monitor intervals.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Role;

/// Where a backend stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Serving.
    Up,
    /// Reachable, but a replica whose data cannot be trusted for reads (see [`Why`]).
    Lagging,
    /// Unreachable, or its breaker is open.
    Down,
    /// Taken out of service by the operator: no new borrows.
    Draining,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Lagging => "lagging",
            Self::Down => "down",
            Self::Draining => "draining",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a backend is in its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Not probed yet: assumed up until the monitor or the traffic says otherwise.
    NotProbedYet,
    /// The probe answered and found nothing wrong.
    Answering,
    /// The probe could not reach it.
    Unreachable(String),
    /// The traffic's connection failures opened the breaker.
    BreakerOpen { failures: usize, window_ms: u64 },
    /// A replica whose replication threads are not both running (or that has none).
    ReplicationStopped,
    /// A replica that replicates but reports no lag.
    LagUnknown,
    /// A replica with `read_only` off: it is not the writer (it replicates), and what it serves
    /// may be written by clients that should not.
    Writable,
    /// The operator drains it.
    Draining,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProbedYet => f.write_str("not probed yet"),
            Self::Answering => f.write_str("the probe answers"),
            Self::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Self::BreakerOpen {
                failures,
                window_ms,
            } => write!(
                f,
                "breaker open: {failures} connection failures within {window_ms} ms"
            ),
            Self::ReplicationStopped => f.write_str("replication is not running"),
            Self::LagUnknown => f.write_str("replication lag unknown"),
            Self::Writable => f.write_str("writable (read_only is OFF) while replicating"),
            Self::Draining => f.write_str("drained by the operator"),
        }
    }
}

/// A replica's replication, as a probe saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// No replication configured.
    None,
    /// Configured, but the IO or SQL thread is not running.
    Stopped,
    /// Both threads running; the lag the server reports (None: it reports none).
    Running { lag_ms: Option<u32> },
    /// The monitor account may not read it.
    Unknown,
}

/// What one probe saw of a reachable server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub read_only: bool,
    pub replication: Replication,
}

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures: usize,
    pub window: Duration,
}

/// A change of state, to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub why: Why,
}

/// One backend's health.
#[derive(Debug)]
pub struct Health {
    role: Role,
    breaker: BreakerConfig,
    state: HealthState,
    why: Why,
    /// When the traffic's recent connection failures happened (at most `breaker.failures`).
    failures: VecDeque<Instant>,
    breaker_open: bool,
    /// What the last probe said, apart from the breaker and the drain.
    probed: (HealthState, Why),
    draining: bool,
}

impl Health {
    /// New breaker settings (a reload); failures already counted stay counted.
    pub fn set_breaker(&mut self, breaker: BreakerConfig) {
        self.breaker = breaker;
    }

    pub fn new(role: Role, breaker: BreakerConfig) -> Self {
        Self {
            role,
            breaker,
            state: HealthState::Up,
            why: Why::NotProbedYet,
            failures: VecDeque::new(),
            breaker_open: false,
            probed: (HealthState::Up, Why::NotProbedYet),
            draining: false,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn why(&self) -> &Why {
        &self.why
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker_open
    }

    /// Routers may send it statements.
    pub fn usable(&self) -> bool {
        self.state == HealthState::Up
    }

    /// The probe answered. It is the breaker's half-open test: an open breaker closes.
    pub fn probed(&mut self, probe: Probe) -> Option<Transition> {
        self.breaker_open = false;
        self.failures.clear();
        self.probed = match (self.role, probe.replication) {
            (Role::Primary, _) => (HealthState::Up, Why::Answering),
            (Role::Replica, Replication::None | Replication::Stopped) => {
                (HealthState::Lagging, Why::ReplicationStopped)
            }
            (Role::Replica, Replication::Running { lag_ms: None } | Replication::Unknown) => {
                (HealthState::Lagging, Why::LagUnknown)
            }
            (Role::Replica, Replication::Running { .. }) if !probe.read_only => {
                (HealthState::Lagging, Why::Writable)
            }
            (Role::Replica, Replication::Running { .. }) => (HealthState::Up, Why::Answering),
        };
        self.settle()
    }

    /// The probe could not reach it.
    pub fn unreachable(&mut self, reason: String) -> Option<Transition> {
        self.probed = (HealthState::Down, Why::Unreachable(reason));
        self.settle()
    }

    /// A connection of the traffic failed (a connect refused or timed out, a connection lost
    /// mid-statement) at `now`.
    pub fn traffic_failure(&mut self, now: Instant) -> Option<Transition> {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.breaker.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        while self.failures.len() > self.breaker.failures {
            self.failures.pop_front();
        }
        if self.failures.len() >= self.breaker.failures.max(1) {
            self.breaker_open = true;
        }
        self.settle()
    }

    /// A connection of the traffic opened: the backend answers (an open breaker stays open until
    /// the probe closes it).
    pub fn traffic_success(&mut self) {
        self.failures.clear();
    }

    pub fn set_draining(&mut self, draining: bool) -> Option<Transition> {
        self.draining = draining;
        self.settle()
    }

    /// The state from the drain, the breaker and the last probe, in that order.
    fn settle(&mut self) -> Option<Transition> {
        let (state, why) = if self.draining {
            (HealthState::Draining, Why::Draining)
        } else if self.breaker_open {
            (
                HealthState::Down,
                Why::BreakerOpen {
                    failures: self.failures.len(),
                    window_ms: u64::try_from(self.breaker.window.as_millis()).unwrap_or(u64::MAX),
                },
            )
        } else {
            self.probed.clone()
        };
        let changed = state != self.state;
        let from = self.state;
        self.state = state;
        self.why = why.clone();
        changed.then_some(Transition {
            from,
            to: state,
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> BreakerConfig {
        BreakerConfig {
            failures: 3,
            window: Duration::from_secs(10),
        }
    }

    fn running(read_only: bool, lag: Option<u32>) -> Probe {
        Probe {
            read_only,
            replication: Replication::Running { lag_ms: lag },
        }
    }

    #[test]
    fn a_replica_is_up_only_when_replicating_read_only_with_a_lag_figure() {
        let mut h = Health::new(Role::Replica, breaker());
        assert!(h.usable(), "assumed up before the first probe");
        assert_eq!(h.probed(running(true, Some(0))), None);
        let t = h.probed(running(false, Some(0))).expect("a transition");
        assert_eq!(
            (t.from, t.to, t.why),
            (HealthState::Up, HealthState::Lagging, Why::Writable)
        );
        assert!(!h.usable());
        assert_eq!(
            h.probed(running(true, None)),
            None,
            "lagging for another reason"
        );
        assert_eq!(h.why(), &Why::LagUnknown);
        let stopped = Probe {
            read_only: true,
            replication: Replication::Stopped,
        };
        h.probed(stopped);
        assert_eq!(h.why(), &Why::ReplicationStopped);
        let t = h.probed(running(true, Some(1500))).expect("back up");
        assert_eq!(t.to, HealthState::Up);
        // A primary's replication and read_only do not make it lagging (writer detection does).
        let mut p = Health::new(Role::Primary, breaker());
        assert_eq!(p.probed(running(false, None)), None);
        assert!(p.usable());
    }

    #[test]
    fn the_breaker_opens_on_failures_in_the_window_and_the_probe_closes_it() {
        let mut h = Health::new(Role::Replica, breaker());
        let t0 = Instant::now();
        assert_eq!(h.traffic_failure(t0), None);
        // Failures spread wider than the window never open it.
        assert_eq!(h.traffic_failure(t0 + Duration::from_secs(11)), None);
        assert_eq!(h.traffic_failure(t0 + Duration::from_secs(22)), None);
        assert!(!h.breaker_open());
        assert_eq!(h.traffic_failure(t0 + Duration::from_secs(23)), None);
        let t = h
            .traffic_failure(t0 + Duration::from_secs(24))
            .expect("opens at the third failure within 10 s");
        assert_eq!(t.to, HealthState::Down);
        assert!(matches!(t.why, Why::BreakerOpen { failures: 3, .. }));
        assert!(!h.usable());
        // A connect that succeeds does not close it; the probe does.
        h.traffic_success();
        assert!(h.breaker_open());
        let t = h.probed(running(true, Some(0))).expect("closed");
        assert_eq!((t.from, t.to), (HealthState::Down, HealthState::Up));
    }

    #[test]
    fn unreachable_and_draining_states_say_why() {
        let mut h = Health::new(Role::Primary, breaker());
        let t = h.unreachable("connection refused".into()).expect("down");
        assert_eq!(t.to, HealthState::Down);
        assert_eq!(t.why.to_string(), "unreachable: connection refused");
        assert_eq!(h.unreachable("again".into()), None, "one line per change");
        let t = h.set_draining(true).expect("draining");
        assert_eq!(t.to, HealthState::Draining);
        h.probed(running(true, Some(0)));
        assert_eq!(h.state(), HealthState::Draining, "a drain outlasts probes");
        let t = h.set_draining(false).expect("undrained");
        assert_eq!((t.to, t.why), (HealthState::Up, Why::Answering));
    }
}
