//! Acknowledgements of pushes that are not kept (online only, or notification only): delivery
//! has no use for them, but delivery events report them (the callbacks' online stage 2). So
//! each such push that someone reports on is remembered for a while after it was accepted,
//! with the accounts that acknowledged it, so each account's first `Ack` is reported once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;

use crate::store::PushRecord;

/// An online-only push reaches sessions as it is accepted, and clients acknowledge what they
/// receive at once: acks later than this are not reported.
pub const ACK_WINDOW_MS: u64 = 10 * 60 * 1000;

struct Unkept {
    record: Arc<PushRecord>,
    acked: Mutex<RoaringBitmap>,
}

#[derive(Default)]
pub struct UnkeptAcks {
    by_task: RwLock<HashMap<String, Unkept>>,
}

impl UnkeptAcks {
    pub fn remember(&self, record: &Arc<PushRecord>) {
        self.by_task.write().insert(
            record.task_id.clone(),
            Unkept {
                record: Arc::clone(record),
                acked: Mutex::default(),
            },
        );
    }

    /// The push, if `account` is of its audience and this is its first acknowledgement.
    pub fn first_ack(&self, task_id: &str, account: u32) -> Option<Arc<PushRecord>> {
        let by_task = self.by_task.read();
        let unkept = by_task.get(task_id)?;
        let first = unkept.record.audience.contains(account) && unkept.acked.lock().insert(account);
        first.then(|| Arc::clone(&unkept.record))
    }

    pub fn forget(&self, task_id: &str) {
        self.by_task.write().remove(task_id);
    }

    /// Forgets the pushes accepted more than [`ACK_WINDOW_MS`] before `now_ms`.
    pub fn purge(&self, now_ms: u64) {
        self.by_task
            .write()
            .retain(|_, unkept| unkept.record.created_ms + ACK_WINDOW_MS > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_of_the_audience_is_reported_once_within_the_window() {
        let acks = UnkeptAcks::default();
        let record = Arc::new(PushRecord {
            task_id: "t".into(),
            created_ms: 1_000,
            audience: [1, 2].into_iter().collect(),
            ..PushRecord::default()
        });
        acks.remember(&record);
        assert!(acks.first_ack("t", 1).is_some());
        assert!(acks.first_ack("t", 1).is_none(), "a repeat");
        assert!(acks.first_ack("t", 3).is_none(), "not of the audience");
        assert!(acks.first_ack("other", 2).is_none());
        acks.purge(1_000 + ACK_WINDOW_MS - 1);
        assert!(acks.first_ack("t", 2).is_some());
        acks.purge(1_000 + ACK_WINDOW_MS);
        acks.remember(&record);
        acks.forget("t");
        assert!(acks.first_ack("t", 2).is_none());
    }
}
