//! Virtual time: events are taken in time order (ties in the order they were scheduled, so a run
//! does not depend on the heap's internals).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The event queue and the current virtual time (in the model's time unit).
pub struct Clock<E> {
    now: f64,
    scheduled: u64,
    queue: BinaryHeap<Scheduled<E>>,
}

struct Scheduled<E> {
    at: f64,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    /// Reversed: the heap's greatest is the earliest event.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl<E> Default for Clock<E> {
    fn default() -> Self {
        Self {
            now: 0.0,
            scheduled: 0,
            queue: BinaryHeap::new(),
        }
    }
}

impl<E> Clock<E> {
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Schedules `event` `delay` time units from now (a negative delay counts as none).
    pub fn after(&mut self, delay: f64, event: E) {
        self.scheduled += 1;
        self.queue.push(Scheduled {
            at: self.now + delay.max(0.0),
            seq: self.scheduled,
            event,
        });
    }

    /// The next event, with the clock moved to its time.
    pub fn advance(&mut self) -> Option<E> {
        let s = self.queue.pop()?;
        self.now = s.at;
        Some(s.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_in_time_order_and_ties_in_schedule_order() {
        let mut c = Clock::default();
        c.after(2.0, "late");
        c.after(1.0, "first");
        c.after(1.0, "second");
        assert_eq!(c.advance(), Some("first"));
        assert!((c.now() - 1.0).abs() < f64::EPSILON);
        c.after(0.5, "between");
        let rest: Vec<_> = std::iter::from_fn(|| c.advance()).collect();
        assert_eq!(rest, ["second", "between", "late"]);
        assert!((c.now() - 2.0).abs() < f64::EPSILON);
    }
}
