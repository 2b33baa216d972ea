//! The limits a push is accepted under, and how a refusal reads. The store applies them to
//! the app's stored pushes in the transaction that stores a new one
//! ([`crate::store::Store::try_accept_push`]), so a restart neither resets the quota nor lets
//! two pushes through closer than the interval, and nodes sharing a store share the limits.

use crier_proto::codes;

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
