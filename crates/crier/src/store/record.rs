//! A push as stored: one record per push, whatever the size of its audience.

use roaring::RoaringBitmap;

#[derive(Debug, Clone, PartialEq)]
pub struct PushRecord {
    pub app: u64,
    pub task_id: String,
    /// Acceptance time, Unix milliseconds.
    pub created_ms: u64,
    /// `MsgLifeTime` in seconds; 0 means online users only, never kept.
    pub lifetime_secs: u32,
    pub from_account: String,
    pub msg_random: u32,
    /// `MsgBody` exactly as the caller sent it, as JSON text.
    pub msg_body: String,
    /// `OfflinePushInfo` as sent, as JSON text.
    pub offline_push_info: Option<String>,
    /// The condition as sent (JSON text), kept for reports.
    pub condition: Option<String>,
    /// Account numbers of the audience, fixed when the push was accepted.
    pub audience: RoaringBitmap,
}

impl PushRecord {
    pub fn expires_at_ms(&self) -> u64 {
        self.created_ms + u64::from(self.lifetime_secs) * 1000
    }
}
