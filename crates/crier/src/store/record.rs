//! A push as stored: one record per push, whatever the size of its audience.

use roaring::RoaringBitmap;

/// Which command started a push. It decides the quota (a `batch` is outside the daily quota
/// and the interval), whether the push can be revoked (`timpush` all/tag pushes only), and
/// whether delivery callbacks report it (`timpush` pushes only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushKind {
    /// The classic `all_member_push/im_push`.
    #[default]
    ImPush,
    /// `timpush/push` (either flavour), or an `All`/`Tag` scheduled task's run.
    Push,
    /// `timpush/batch`, or a `User` scheduled task's run.
    Batch,
}

impl PushKind {
    /// As stored, and as `v4/crier/task_list` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::ImPush => "im_push",
            PushKind::Push => "push",
            PushKind::Batch => "batch",
        }
    }

    pub fn parse(text: &str) -> Option<PushKind> {
        Some(match text {
            "im_push" => PushKind::ImPush,
            "push" => PushKind::Push,
            "batch" => PushKind::Batch,
            _ => return None,
        })
    }

    /// Counted against the app's daily quota and minimum interval.
    pub fn counts_toward_quota(self) -> bool {
        self != PushKind::Batch
    }

    /// `timpush/revoke` takes it (all/tag pushes of the `timpush` family).
    pub fn revocable(self) -> bool {
        self == PushKind::Push
    }

    /// Reported through delivery callbacks and `timpush` statistics.
    pub fn is_timpush(self) -> bool {
        self != PushKind::ImPush
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PushRecord {
    pub app: u64,
    pub task_id: String,
    pub kind: PushKind,
    /// Acceptance time, Unix milliseconds.
    pub created_ms: u64,
    /// `MsgLifeTime` in seconds; 0 means online users only, never kept.
    pub lifetime_secs: u32,
    pub from_account: String,
    pub msg_random: u32,
    /// `MsgBody` exactly as the caller sent it, as JSON text (`[]` for a notification-only
    /// `timpush` push).
    pub msg_body: String,
    /// `OfflinePushInfo` as sent, as JSON text.
    pub offline_push_info: Option<String>,
    /// The condition as sent (JSON text), kept for reports.
    pub condition: Option<String>,
    /// The caller's `DataId`, echoed in callbacks.
    pub data_id: Option<String>,
    /// The scheduled task whose run started this push.
    pub sched_task_id: Option<u64>,
    /// When `timpush/revoke` recalled it; never set on a record being accepted.
    pub revoked_ms: Option<u64>,
    /// The revoke's `OfflinePushInfo` (JSON text): what overwrites the notifications shown.
    pub revoke_info: Option<String>,
    /// Account numbers of the audience, fixed when the push was accepted.
    pub audience: RoaringBitmap,
}

/// How long the notifications of a push that keeps nothing (a `timpush` notification or
/// batch) may still be delivered: the longest `MsgLifeTime`.
const NOTIFICATION_ONLY_TTL_MS: u64 = 604_800 * 1000;

impl PushRecord {
    pub fn expires_at_ms(&self) -> u64 {
        self.created_ms + u64::from(self.lifetime_secs) * 1000
    }

    /// A `timpush` push without a chat message (or a batch): its content is the notification.
    pub fn is_notification_only(&self) -> bool {
        self.kind.is_timpush() && self.msg_body == "[]"
    }

    /// Until when its notifications are worth sending.
    pub fn notifications_expire_at_ms(&self) -> u64 {
        if self.is_notification_only() {
            self.created_ms + NOTIFICATION_ONLY_TTL_MS
        } else {
            self.expires_at_ms()
        }
    }
}
