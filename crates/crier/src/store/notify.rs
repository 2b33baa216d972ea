//! What offline notifications keep durably: the devices of each account, and one job per push
//! (its targets as a bitmap and how far the run got), never a row per notification.

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

    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        cursor: u32,
        counts: &str,
        done: bool,
    ) -> Result<(), StoreError>;

    /// Jobs not finished yet, oldest first.
    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError>;

    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError>;
}
