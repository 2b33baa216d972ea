//! The TaskIds a [`Listener`](super::Listener) has handed over, so that repeats (delivery is at
//! least once, and another node redelivers what it has no ack for) are dropped.

use std::collections::{HashMap, VecDeque};

/// TaskIds remembered for dropping repeats.
const SEEN_CAPACITY: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Unacked,
    Acked,
    /// Recalled: a push with this TaskId that still arrives (a race, or another node that has
    /// not heard of the revoke yet) is dropped.
    Revoked,
}

/// TaskIds handed over to the application, with whether it has acknowledged each, and TaskIds
/// revoked.
#[derive(Default)]
pub(super) struct Seen {
    state: HashMap<String, State>,
    order: VecDeque<String>,
}

pub(super) enum Sighting {
    First,
    /// Handed over before and acknowledged: the ack may have been lost with the connection it
    /// went out on, so it is sent again.
    Acked,
    /// Handed over before; the application acknowledges it when it is done with it.
    Unacked,
    /// Revoked: not handed over (again).
    Revoked,
}

impl Seen {
    pub(super) fn sighting(&mut self, task_id: &str) -> Sighting {
        match self.state.get(task_id) {
            Some(State::Acked) => return Sighting::Acked,
            Some(State::Unacked) => return Sighting::Unacked,
            Some(State::Revoked) => return Sighting::Revoked,
            None => {}
        }
        self.remember(task_id, State::Unacked);
        Sighting::First
    }

    pub(super) fn acknowledged(&mut self, task_id: &str) {
        if let Some(state @ State::Unacked) = self.state.get_mut(task_id) {
            *state = State::Acked;
        }
    }

    /// Answers whether this is news (the first `Revoke` for the TaskId).
    pub(super) fn revoked(&mut self, task_id: &str) -> bool {
        match self.state.get_mut(task_id) {
            Some(State::Revoked) => false,
            Some(state) => {
                *state = State::Revoked;
                true
            }
            None => {
                self.remember(task_id, State::Revoked);
                true
            }
        }
    }

    fn remember(&mut self, task_id: &str, state: State) {
        self.state.insert(task_id.to_owned(), state);
        self.order.push_back(task_id.to_owned());
        if self.order.len() > SEEN_CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.state.remove(&oldest);
            }
        }
    }
}
