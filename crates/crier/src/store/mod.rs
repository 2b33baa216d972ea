//! Durable state behind one trait, so the embedded default and a shared PostgreSQL store are
//! interchangeable, and several nodes can share one store.
//!
//! What is stored: a log of directory writes per app with dense sequence numbers and
//! compare-and-append ([`Store::append_dir_ops`]), directory snapshots that keep a horizon of
//! the log behind them, push records accepted under the rate limits in one transaction
//! ([`Store::try_accept_push`]), acknowledgements as one bitmap of accounts per batch (never a
//! row per recipient), delivery counts per push, notification devices and jobs claimed under a
//! lease ([`notify`]), scheduled tasks, claimed the same way ([`sched`]), and the queue of
//! delivery callbacks, claimed under a lease too ([`callbacks`]).
//!
//! - [`sqlite`]: the embedded default.
//! - [`postgres`]: one PostgreSQL database shared by the nodes of a cluster.
//! - `conformance`: the behaviour every implementation must show, as generic test cases (in
//!   tests, or with the `store-conformance` feature).
//!
//! The trait blocks: callers run it on blocking threads (`spawn_blocking`). SQLite has no
//! async interface, the PostgreSQL store uses a blocking client over a connection pool, and
//! the few calls on hot paths (accepting a push, a batch of acknowledgements) are one
//! transaction each, so an async trait would buy nothing but boxed futures.

pub mod callbacks;
#[cfg(any(test, feature = "store-conformance"))]
pub mod conformance;
pub mod notify;
pub mod postgres;
mod record;
pub mod sched;
pub mod sqlite;

use std::collections::HashMap;
use std::io::{Read, Write};

use roaring::RoaringBitmap;

use crate::directory::DirOp;
pub use record::{PushKind, PushRecord};

/// What went wrong in a store, whatever the backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another writer got there first (a stale expected head, a job lease held by another
    /// node, a log already cut past the reader): re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed or cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data cannot be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A snapshot as read back: the last directory write it includes, and its bytes.
pub struct StoredSnapshot {
    pub seq: u64,
    pub reader: Box<dyn Read + Send>,
}

/// Counts that rate limits are rebuilt from at start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    pub since_count: u64,
    pub last_created_ms: Option<u64>,
}

/// The limits a push is accepted under (see `push::limits` for their meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRules {
    /// Start of the UTC day holding the push's creation time; the quota counts from here.
    pub day_start_ms: u64,
    pub daily_quota: u64,
    pub min_interval_ms: u64,
    /// A push with the same `MsgRandom` and fingerprint created at most this long before is a
    /// client retry.
    pub retry_window_ms: u64,
}

/// How [`Store::try_accept_push`] ended; only `Accepted` stored anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAcceptance {
    Accepted,
    /// A retry of the push answered with `task_id`.
    Duplicate {
        task_id: String,
    },
    TooFrequent {
        last_created_ms: u64,
    },
    QuotaExceeded {
        quota: u64,
    },
}

/// How long a `timpush` push (and what hangs on it) is kept after its lifetime ends: its
/// statistics, trace and `task_list` entry last this long, and a push that keeps nothing can
/// still be revoked for its 24 hours.
pub const TIMPUSH_REPORTED_AFTER_EXPIRY_MS: u64 = 7 * 86_400 * 1000;

/// How [`Store::revoke_push`] ended; only `Revoked` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked { at_ms: u64 },
    Unknown,
}

/// What a task report says about the push itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSummary {
    pub created_ms: u64,
    pub lifetime_secs: u32,
    pub audience_size: u64,
}

/// A push as a node's once-a-second look at the store lists it: enough to tell whether the
/// node knows it, without its audience (a bitmap that can run to megabytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushId {
    pub task_id: String,
    pub revoked: bool,
}

/// How many times a push was delivered: to sessions as it was accepted, and on logins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub online: u64,
    pub offline: u64,
}

/// A step of a push on the way to one account, kept as one bitmap of accounts per batch
/// ([`Store::append_marks`]) for the `timpush` statistics and trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkStage {
    /// The push's frame was written to a session of the account (as it was accepted, or at a
    /// login).
    Reached,
    /// The account acknowledged it.
    Acked,
}

impl MarkStage {
    pub fn code(self) -> i64 {
        match self {
            MarkStage::Reached => 1,
            MarkStage::Acked => 2,
        }
    }

    pub fn of_code(code: i64) -> Option<MarkStage> {
        match code {
            1 => Some(MarkStage::Reached),
            2 => Some(MarkStage::Acked),
            _ => None,
        }
    }
}

/// One stored batch of marks of one push.
#[derive(Debug, Clone, PartialEq)]
pub struct PushMark {
    pub stage: MarkStage,
    /// When the batch was stored, Unix milliseconds.
    pub at_ms: u64,
    pub accounts: RoaringBitmap,
}

impl std::ops::AddAssign for DeliveryCounts {
    fn add_assign(&mut self, other: DeliveryCounts) {
        self.online += other.online;
        self.offline += other.offline;
    }
}

pub trait Store:
    notify::NotifyStore + sched::SchedStore + callbacks::CallbackStore + Send + Sync + 'static
{
    /// The sequence number of the last write of `app`: its last logged write, else its
    /// snapshot's, else 0.
    fn dir_head(&self, app: u64) -> Result<u64, StoreError>;

    /// Appends writes of `app` numbered `expected_head + 1 ..` and answers the new head, if the
    /// head is still `expected_head`; otherwise writes nothing and answers `Conflict` (another
    /// node wrote first: catch up with [`Store::read_dir_ops`] and build the writes again).
    fn append_dir_ops(
        &self,
        app: u64,
        expected_head: u64,
        ops: &[DirOp],
    ) -> Result<u64, StoreError>;

    /// Calls `each` with every logged write of `app` after `after_seq`, in order. Answers
    /// `Conflict` when writes after `after_seq` were already forgotten: the reader must load
    /// the snapshot again.
    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError>;

    /// Replaces the snapshot of `app` with one that includes writes up to `seq` (`write`
    /// produces the bytes), unless the stored one is at least as new. The log is cut only up
    /// to the previous snapshot's seq: a reader behind by less than one snapshot interval can
    /// still catch up from the log.
    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError>;

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError>;

    /// Applies `rules` to `push` against the app's stored pushes and, if it passes, stores it
    /// with its notification job (when `notify_targets` is given), all in one transaction, so
    /// nodes sharing the store share the limits. `fingerprint` tells retries of one request
    /// from other pushes with the same `MsgRandom`.
    fn try_accept_push(
        &self,
        push: &PushRecord,
        fingerprint: u64,
        rules: &PushRules,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<PushAcceptance, StoreError>;

    /// The stored facts of one push, without its audience.
    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError>;

    /// One push whole, with its audience: for a node that learns of a push accepted by another.
    fn push_record(&self, app: u64, task_id: &str) -> Result<Option<PushRecord>, StoreError>;

    /// Pushes of `app` accepted at or after `since_ms`, oldest first.
    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError>;

    /// The TaskIds of the pushes of `app` accepted at or after `since_ms`, oldest first, and
    /// whether each was revoked: what [`Store::pushes_since`] answers, without the records.
    fn push_ids_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushId>, StoreError>;

    /// Marks the push revoked at `now_ms` (with `overwrite`, the revoke's `OfflinePushInfo`)
    /// and its notification job done, unless it was revoked already. Whether it may be
    /// revoked (its kind, its age) is the caller's rule.
    fn revoke_push(
        &self,
        app: u64,
        task_id: &str,
        now_ms: u64,
        overwrite: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError>;

    /// TaskIds of `app`'s pushes revoked at or after `since_ms`.
    fn revoked_since(&self, app: u64, since_ms: u64) -> Result<Vec<String>, StoreError>;

    /// Pushes counted against the quota (every kind but `batch`) accepted at or after
    /// `since_ms`, and the last such push's time.
    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError>;

    /// Durably records that the accounts of each bitmap acknowledged that push.
    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError>;

    /// Every acknowledgement of `app`, merged per TaskId.
    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError>;

    /// The acknowledgement batches of `app` stored after the cursor `after` (0: from the
    /// start), one entry per stored batch in the order stored, and the cursor to pass next
    /// time (`after` itself when there is nothing new). The cursor is opaque; batches are
    /// never seen out of order, so a node that polls it picks up every batch stored by others.
    fn acks_since(
        &self,
        app: u64,
        after: u64,
    ) -> Result<(u64, Vec<(String, RoaringBitmap)>), StoreError>;

    /// Adds `counts` to what is stored for each push.
    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError>;

    /// The stored delivery counts of `app`'s pushes, by TaskId.
    fn load_delivery_counts(&self, app: u64)
        -> Result<HashMap<String, DeliveryCounts>, StoreError>;

    /// Durably records, for each push, that the accounts of the bitmap reached `stage` by
    /// `at_ms`.
    fn append_marks(
        &self,
        app: u64,
        at_ms: u64,
        marks: &[(String, MarkStage, RoaringBitmap)],
    ) -> Result<(), StoreError>;

    /// The stored mark batches of one push, in the order stored.
    fn push_marks(&self, app: u64, task_id: &str) -> Result<Vec<PushMark>, StoreError>;

    /// Deletes the pushes whose lifetime ended before `expired_before_ms` and that were created
    /// before `created_before_ms` (so today's pushes still count toward the quota), with their
    /// acknowledgements, marks, delivery counts, notification jobs and overwrites; a `timpush`
    /// push only once its lifetime ended [`TIMPUSH_REPORTED_AFTER_EXPIRY_MS`] before. Answers how
    /// many went.
    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Makes everything acknowledged so far durable and compact; called at shutdown.
    fn flush(&self) -> Result<(), StoreError>;
}
