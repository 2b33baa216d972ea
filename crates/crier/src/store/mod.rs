//! Durable state behind one trait, so the embedded default and a shared PostgreSQL store are
//! interchangeable.
//!
//! What is stored: the log of directory writes since the last snapshot, directory snapshots,
//! push records, acknowledgements as one bitmap of accounts per batch (never a row per
//! recipient), delivery counts per push, and notification devices and jobs ([`notify`]).
//! Calls block; the async layers run them on blocking threads.

pub mod notify;
mod record;
pub mod sqlite;
mod sqlite_notify;

use std::collections::HashMap;
use std::io::{Read, Write};

use roaring::RoaringBitmap;

use crate::directory::DirOp;
pub use record::PushRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
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

/// What a task report says about the push itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSummary {
    pub created_ms: u64,
    pub lifetime_secs: u32,
    pub audience_size: u64,
}

/// How many times a push was delivered: to sessions as it was accepted, and on logins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub online: u64,
    pub offline: u64,
}

impl std::ops::AddAssign for DeliveryCounts {
    fn add_assign(&mut self, other: DeliveryCounts) {
        self.online += other.online;
        self.offline += other.offline;
    }
}

pub trait Store: notify::NotifyStore + Send + Sync + 'static {
    /// Durably appends directory writes of `app`; answers the sequence number of the last.
    fn append_dir_ops(&self, app: u64, ops: &[DirOp]) -> Result<u64, StoreError>;

    /// Calls `each` with every logged write of `app` after `after_seq`, in order.
    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError>;

    /// Replaces the snapshot of `app` with one that includes writes up to `seq`, then forgets
    /// the logged writes it covers. `write` produces the bytes.
    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError>;

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError>;

    /// Stores the push and, when some of its audience is to be notified offline, its
    /// notification job, in one transaction.
    fn insert_push(
        &self,
        push: &PushRecord,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<(), StoreError>;

    /// The stored facts of one push, without its audience.
    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError>;

    /// Pushes of `app` accepted at or after `since_ms`, oldest first.
    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError>;

    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError>;

    /// Durably records that the accounts of each bitmap acknowledged that push.
    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError>;

    /// Every acknowledgement of `app`, merged per TaskId.
    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError>;

    /// Adds `counts` to what is stored for each push.
    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError>;

    /// The stored delivery counts of `app`'s pushes, by TaskId.
    fn load_delivery_counts(&self, app: u64)
        -> Result<HashMap<String, DeliveryCounts>, StoreError>;

    /// Deletes the pushes whose lifetime ended before `expired_before_ms` and that were created
    /// before `created_before_ms` (so today's pushes still count toward the quota), with their
    /// acknowledgements and delivery counts. Answers how many went.
    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Makes everything acknowledged so far durable and compact; called at shutdown.
    fn flush(&self) -> Result<(), StoreError>;
}
