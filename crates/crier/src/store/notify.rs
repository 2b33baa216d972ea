//! What offline notifications keep durably: the devices of each account, and one job per push
//! (its targets as a bitmap and how far the run got), never a row per notification.
//!
//! Nodes sharing a store share the jobs: a node claims one with a lease ([`NotifyStore::claim_job`])
//! and renews it with every batch it stores; a node that stops renewing loses the job to the
//! next claimant, which resumes at the stored cursor.
//!
//! A revoked push whose job had notified some devices gets an overwrite: the devices of the
//! job's targets below its cursor are notified again, collapsed onto the first notification
//! ([`NotifyStore::claim_overwrite`]). It is leased on the job's row, so it starts only once
//! the job's own run let go of it (its cursor is then final) and one node does it.

use roaring::RoaringBitmap;

use super::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDevice {
    pub account: String,
    pub platform: String,
    pub token: String,
}

/// Per provider: what a notification run has done so far, as JSON text (see
/// `notify::worker::JobCounts`).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredJob {
    pub task_id: String,
    /// Account numbers to notify, fixed when the push was accepted.
    pub targets: RoaringBitmap,
    /// Accounts below this number are done.
    pub cursor: u32,
    pub counts: String,
    pub done: bool,
}

/// The overwrite of a revoked push's notifications, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverwrite {
    pub task_id: String,
    /// The job's targets.
    pub targets: RoaringBitmap,
    /// The job's cursor: the targets below it were notified, and are overwritten.
    pub upto: u32,
    /// Targets below this number are overwritten already.
    pub cursor: u32,
    /// As [`StoredJob::counts`].
    pub counts: String,
}

/// Who holds a job, as of when: the node's id, now, and how long the lease lasts from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    pub node: &'a str,
    pub now_ms: u64,
    pub lease_ms: u64,
}

/// How far a run got, as stored after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobProgress<'a> {
    pub cursor: u32,
    pub counts: &'a str,
    pub done: bool,
}

pub trait NotifyStore: Send + Sync {
    /// Registers `token` for `account`; a token registered by another account moves to this one.
    fn put_device(
        &self,
        app: u64,
        account: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError>;

    /// Answers whether the device was registered.
    fn delete_device(&self, app: u64, platform: &str, token: &str) -> Result<bool, StoreError>;

    fn delete_account_devices(&self, app: u64, account: &str) -> Result<(), StoreError>;

    fn load_devices(&self, app: u64) -> Result<Vec<StoredDevice>, StoreError>;

    /// Takes the oldest unfinished job of `app` whose lease is free, expired at `now_ms`, or
    /// already held by `node`, leasing it to `node` until `now_ms + lease_ms`.
    fn claim_job(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredJob>, StoreError>;

    /// Stores `progress` and renews the lease, if `lease.node` still holds the job (no other
    /// node claimed it since, even if the lease ran out); otherwise changes nothing and answers
    /// `Conflict` (another node took it over: stop the run).
    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError>;

    /// Frees the job's lease if `node` holds it, so another node can claim it at once.
    fn release_job(&self, app: u64, task_id: &str, node: &str) -> Result<(), StoreError>;

    /// Jobs not finished yet, oldest first, whoever holds them.
    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError>;

    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError>;

    /// Takes the oldest unfinished overwrite of `app` whose job's lease is free, expired at
    /// `now_ms`, or already held by `node`, leasing the job to `node` (which also stops a
    /// stalled run of the job from moving its cursor any further).
    fn claim_overwrite(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredOverwrite>, StoreError>;

    /// As [`NotifyStore::update_job`], for the overwrite of `task_id`.
    fn update_overwrite(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError>;

    /// The overwrite of `task_id`, if its push was revoked with a notification job.
    fn overwrite(&self, app: u64, task_id: &str) -> Result<Option<StoredOverwrite>, StoreError>;
}
