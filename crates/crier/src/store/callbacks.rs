//! The durable queue of delivery callbacks (`Push.AllMemberPush`, timpush.md §8): one row per
//! event, its JSON as it will be sent, so a restart loses no event that was stored.
//!
//! Nodes sharing a store share the queue. A sender claims up to a request's worth of events
//! under a lease ([`CallbackStore::claim_callbacks`]); when it has sent them they are deleted,
//! when the receiver failed they are put back with a later time and one more attempt, and when
//! a node dies holding some, the next claimant takes them once the lease ran out.
//!
//! Each event has two times: `ready_ms`, before which it may not be sent (a retry's back-off),
//! and `deadline_ms`, by which a request should carry it (for a new event, its enqueue time plus
//! the batching wait). A claim takes the ready events with the earliest deadlines when a full
//! request's worth is ready or the earliest deadline has come; otherwise it says when to look
//! again.

use super::StoreError;

/// One event waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCallback {
    /// Its place in the queue, unique per store.
    pub id: u64,
    /// The event object as JSON text.
    pub event: String,
    /// Sends that failed so far.
    pub attempts: u32,
}

/// A claim's terms: who claims, when, for how long, and the batching rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackClaim<'a> {
    pub node: &'a str,
    pub now_ms: u64,
    pub lease_ms: u64,
    /// Events per request at most; a claim takes this many when they are ready.
    pub max: usize,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Leased to the claimant, earliest deadline first.
    Batch(Vec<QueuedCallback>),
    /// Nothing to send yet; something may be at this time (`None`: the queue holds nothing that
    /// will become sendable without a new event).
    Wait { until_ms: Option<u64> },
}

pub trait CallbackStore: Send + Sync {
    /// Appends `events` (JSON texts) to the queue of `app`, ready at `now_ms` and due by
    /// `deadline_ms`, in one transaction.
    fn enqueue_callbacks(
        &self,
        app: u64,
        events: &[String],
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), StoreError>;

    /// Leases ready events of `app` (those with no lease, or an expired one) to `claim.node`
    /// until `now_ms + lease_ms`: up to `claim.max` of them, earliest deadline first, if
    /// `claim.max` are ready or the earliest deadline is at or before `now_ms`.
    fn claim_callbacks(&self, app: u64, claim: CallbackClaim<'_>) -> Result<Claimed, StoreError>;

    /// Deletes these events (sent, or given up on).
    fn delete_callbacks(&self, app: u64, ids: &[u64]) -> Result<(), StoreError>;

    /// Puts these events back, unleased, with one more failed attempt, ready and due at
    /// `retry_at_ms`, if `node` still holds them; events another node took over are left alone.
    fn retry_callbacks(
        &self,
        app: u64,
        node: &str,
        ids: &[u64],
        retry_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Frees the leases of `app`'s events held by `node`, or by anyone when `node` is `None`
    /// (a single node starting again: what it held when it stopped is free at once).
    fn release_callbacks(&self, app: u64, node: Option<&str>) -> Result<u64, StoreError>;

    /// Events of `app` in the queue, leased or not.
    fn callback_queue_depth(&self, app: u64) -> Result<u64, StoreError>;
}
