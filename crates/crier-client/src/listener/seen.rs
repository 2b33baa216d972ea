//! The TaskIds a [`Listener`](super::Listener) has handed over, so that repeats (delivery is at
//! least once, and another node redelivers what it has no ack for) are dropped.

use std::collections::{HashMap, VecDeque};

/// TaskIds remembered for dropping repeats.
const SEEN_CAPACITY: usize = 10_000;

/// TaskIds handed over to the application, with whether it has acknowledged each.
#[derive(Default)]
pub(super) struct Seen {
    acked: HashMap<String, bool>,
    order: VecDeque<String>,
}

pub(super) enum Sighting {
    First,
    /// Handed over before and acknowledged: the ack may have been lost with the connection it
    /// went out on, so it is sent again.
    Acked,
    /// Handed over before; the application acknowledges it when it is done with it.
    Unacked,
}

impl Seen {
    pub(super) fn sighting(&mut self, task_id: &str) -> Sighting {
        match self.acked.get(task_id) {
            Some(true) => return Sighting::Acked,
            Some(false) => return Sighting::Unacked,
            None => {}
        }
        self.acked.insert(task_id.to_owned(), false);
        self.order.push_back(task_id.to_owned());
        if self.order.len() > SEEN_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.acked.remove(&oldest);
            }
        }
        Sighting::First
    }

    pub(super) fn acknowledged(&mut self, task_id: &str) {
        if let Some(acked) = self.acked.get_mut(task_id) {
            *acked = true;
        }
    }
}
