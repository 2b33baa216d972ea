//! The limits a push is accepted under, and how a refusal reads. The store applies them to
//! the app's stored pushes in the transaction that stores a new one
//! ([`crate::store::Store::try_accept_push`]), so a restart neither resets the quota nor lets
//! two pushes through closer than the interval, and nodes sharing a store share the limits.

use crier_proto::codes;
use parking_lot::Mutex;

use crate::error::Error;

/// A repeat of the same `MsgRandom` and body within this window is a client retry.
pub const RETRY_WINDOW_MS: u64 = 1_000;

pub fn too_frequent(min_interval_ms: u64, since_last_ms: u64) -> Error {
    Error::rejected(
        codes::PUSH_TOO_FREQUENT,
        format!("pushes must be at least {min_interval_ms} ms apart; the last one was {since_last_ms} ms ago: retry later"),
    )
}

pub fn quota_exceeded(quota: u64) -> Error {
    Error::rejected(
        codes::DAILY_QUOTA_EXCEEDED,
        format!("this app's quota of {quota} pushes per UTC day is used up: retry after 00:00 UTC"),
    )
}

/// Calls per wall-clock second, counted on this node: the `timpush` family's per-command rates
/// (revoke 1/s, batch `batch_calls_per_second`).
#[derive(Default)]
pub struct PerSecond {
    /// (the second being counted, calls taken in it)
    window: Mutex<(u64, u32)>,
}

impl PerSecond {
    /// Takes one call at `now_ms` if fewer than `limit` were taken in its second.
    pub fn try_take(&self, now_ms: u64, limit: u32) -> bool {
        let second = now_ms / 1000;
        let mut window = self.window.lock();
        if window.0 != second {
            *window = (second, 0);
        }
        if window.1 >= limit {
            return false;
        }
        window.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_wait_for_the_next_second() {
        let rate = PerSecond::default();
        assert!(rate.try_take(5_000, 2));
        assert!(rate.try_take(5_999, 2));
        assert!(!rate.try_take(5_999, 2));
        assert!(rate.try_take(6_000, 2));
    }
}
