//! What the server refused to a client and why, counted for `/metrics` and logged as one line
//! per kind per interval: a flood of hostile connections must not become a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

/// Why a connection or a request was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Part of a request's headers arrived, not all of them in time.
    HeaderTimeout,
    /// An HTTP connection sent nothing for too long.
    Idle,
    /// An authenticated request's body did not arrive in time.
    BodyTimeout,
    /// Accepted and closed at once: the connection cap and its reserve were full.
    ConnectionCap,
    /// A reserve connection asked for something other than health, metrics or an admin call.
    ReserveOnly,
    /// The bytes of request bodies in memory were at their budget.
    BodyBudget,
    /// The process could not open another file (socket) to accept with.
    OpenFiles,
    /// Still open when the shutdown deadline came.
    ShutdownCut,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::HeaderTimeout,
        Refusal::Idle,
        Refusal::BodyTimeout,
        Refusal::ConnectionCap,
        Refusal::ReserveOnly,
        Refusal::BodyBudget,
        Refusal::OpenFiles,
        Refusal::ShutdownCut,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Idle => "idle",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::ConnectionCap => "connection_cap",
            Refusal::ReserveOnly => "reserve_only",
            Refusal::BodyBudget => "body_budget",
            Refusal::OpenFiles => "open_files",
            Refusal::ShutdownCut => "shutdown_cut",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// Counters of refusals since start, one per kind.
#[derive(Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

impl Refusals {
    pub fn count(&self, refusal: Refusal) {
        self.counts[refusal.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self, refusal: Refusal) -> u64 {
        self.counts[refusal.index()].load(Ordering::Relaxed)
    }

    /// Logs, every `interval`, one line for each kind refused since the previous line.
    pub async fn log_every(&self, interval: Duration) {
        let mut logged = [0u64; Refusal::ALL.len()];
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            for (refusal, logged) in Refusal::ALL.iter().zip(&mut logged) {
                let total = self.total(*refusal);
                if total > *logged {
                    warn!(
                        kind = refusal.label(),
                        count = total - *logged,
                        seconds = interval.as_secs(),
                        "clients refused"
                    );
                    *logged = total;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter_and_label() {
        let refusals = Refusals::default();
        for (n, refusal) in Refusal::ALL.iter().enumerate() {
            for _ in 0..=n {
                refusals.count(*refusal);
            }
        }
        for (n, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(refusals.total(*refusal), n as u64 + 1, "{refusal:?}");
        }
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
