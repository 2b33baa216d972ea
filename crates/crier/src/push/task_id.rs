//! TaskIds. They are opaque to clients and unique per app: the classic `im_push` keeps its
//! decimal form, the `timpush` family has Tencent's hex-group shape (`timpush.md` §1.6),
//! `{unix seconds}_{sdkappid}_{node}_{sequence}_{MsgRandom}` in hex, with `batch_` before a
//! batch's.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::store::PushKind;

/// This process's part of a `timpush` TaskId, and where its sequence starts: random, so that
/// nodes sharing a store (and restarts of one node within a second) never make the same id.
fn process_tag() -> (u32, &'static AtomicU32) {
    static TAG: OnceLock<(u32, AtomicU32)> = OnceLock::new();
    let (tag, sequence) = TAG.get_or_init(|| (rand::random(), AtomicU32::new(rand::random())));
    (*tag, sequence)
}

pub fn new_task_id(kind: PushKind, sdkappid: u64, now_ms: u64, msg_random: u32) -> String {
    match kind {
        PushKind::ImPush => format!("{sdkappid}_{now_ms}_{msg_random}_{}", rand::random::<u32>()),
        PushKind::Push | PushKind::Batch => {
            let (node, sequence) = process_tag();
            let sequence = sequence.fetch_add(1, Ordering::Relaxed);
            let prefix = if kind == PushKind::Batch {
                "batch_"
            } else {
                ""
            };
            format!(
                "{prefix}{:x}_{sdkappid:x}_{node:x}_{sequence:x}_{msg_random:x}",
                now_ms / 1000
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timpush_ids_have_tencents_shape_and_never_repeat() {
        let id = new_task_id(PushKind::Push, 1_400_187_352, 1_702_622_260_000, 12_345_678);
        let groups: Vec<&str> = id.split('_').collect();
        assert_eq!(groups.len(), 5, "{id}");
        assert_eq!(groups[0], "657bf434");
        assert_eq!(groups[1], "537529d8");
        assert_eq!(groups[4], "bc614e");
        assert!(groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit())));
        let batch = new_task_id(PushKind::Batch, 1_400_187_352, 1_702_622_260_000, 1);
        assert!(batch.starts_with("batch_657bf434_537529d8_"), "{batch}");
        let many: std::collections::HashSet<String> = (0..10_000)
            .map(|_| new_task_id(PushKind::Push, 1, 0, 0))
            .collect();
        assert_eq!(many.len(), 10_000);
        assert!(new_task_id(PushKind::ImPush, 7, 1_000, 3).starts_with("7_1000_3_"));
    }
}
