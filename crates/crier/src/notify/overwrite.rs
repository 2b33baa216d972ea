//! Overwriting the notifications of a revoked push (`timpush.md` §4, effect 2).
//!
//! Every notification of a `timpush` push carries its TaskId as collapse key (APNs
//! `apns-collapse-id`, FCM `collapse_key` and `tag`). When the push is revoked, the store adds
//! an overwrite to its notification job; once the job's run has let go of the job (its cursor
//! is then final), a node claims the overwrite under the job's lease and notifies every device
//! of the targets below that cursor again, with the revoke's `OfflinePushInfo` on the same key,
//! so the device replaces what it shows. The webhook gets the same as a revoke event
//! (`"Revoked": true`). Like a job, the overwrite stores its cursor after each batch: a restart
//! resumes it, here or on another node.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tokio::sync::watch;
use tracing::{info, warn};

use super::shape::Template;
use super::worker::{Ended, JobCounts, Notify, PushLookups, BATCH_ACCOUNTS, IN_FLIGHT};
use super::{Outcome, Provider};
use crate::clock::now_ms;
use crate::store::notify::{JobProgress, Lease, StoredOverwrite};
use crate::store::StoreError;

/// Takes the app's oldest overwrite that no other node holds.
pub(super) async fn claim(
    notify: &Arc<Notify>,
    node: &Arc<str>,
) -> Result<Option<StoredOverwrite>, StoreError> {
    let (store, app, lease_ms) = (Arc::clone(&notify.store), notify.app, notify.lease_ms);
    let node = Arc::clone(node);
    tokio::task::spawn_blocking(move || store.claim_overwrite(app, &node, now_ms(), lease_ms))
        .await
        .map_err(|error| StoreError::Unavailable(format!("overwrite claim: {error}")))?
}

/// Runs one overwrite to its end; answers false when the server is stopping, the store
/// failed or another node took the job over (it resumes from the last stored batch).
pub(super) async fn run(
    notify: &Arc<Notify>,
    lookups: &dyn PushLookups,
    node: &Arc<str>,
    overwrite: StoredOverwrite,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let app = notify.app;
    let task_id = overwrite.task_id.clone();
    let mut counts: JobCounts = serde_json::from_str(&overwrite.counts).unwrap_or_default();
    let store = Arc::clone(&notify.store);
    let wanted = task_id.clone();
    let record = match tokio::task::spawn_blocking(move || store.push_record(app, &wanted)).await {
        Ok(Ok(record)) => record,
        Ok(Err(error)) => {
            warn!(app, %task_id, %error, "cannot read a revoked push; its overwrite waits");
            return false;
        }
        Err(_) => return false,
    };
    let Some(record) = record else {
        // Purged meanwhile: whatever it showed has expired too.
        return store_progress(notify, node, &task_id, u32::MAX, &counts, true).await;
    };
    let template = Template::overwrite_of(&record);
    // Without the revoke's `OfflinePushInfo` there is nothing to show instead: only the
    // webhook hears of the revoke.
    let replaces = record.revoke_info.is_some();
    let (targets, upto) = (&overwrite.targets, overwrite.upto);
    let total = targets.range(..upto).len();
    info!(app, %task_id, accounts = total, resumed_at = overwrite.cursor, "overwriting the notifications of a revoked push");
    let mut cursor = overwrite.cursor;
    while cursor < upto {
        if *shutdown.borrow() {
            return false;
        }
        let batch: Vec<u32> = targets.range(cursor..upto).take(BATCH_ACCOUNTS).collect();
        let Some(&last) = batch.last() else { break };
        let now = now_ms();
        let mut sends = Vec::new();
        for account in batch {
            let Some(name) = lookups.account_name(account) else {
                continue;
            };
            let badge = lookups.pending_count(account, now);
            for device in notify.devices.of(account) {
                if replaces || device.provider == Provider::Webhook {
                    let notification = template.for_device(&name, &device.token, badge);
                    sends.push((account, notification, device));
                }
            }
        }
        let ended: Vec<Ended> = stream::iter(sends)
            .map(|(account, notification, device)| notify.deliver(account, notification, device))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        for ended in &ended {
            notify.count(&mut counts, ended);
            if let Outcome::Failed { reason } | Outcome::DeadToken { reason } = &ended.outcome {
                warn!(app, %task_id, provider = ended.provider.name(), %reason, "overwrite notification failed");
            }
        }
        cursor = last.saturating_add(1).min(upto);
        if !store_progress(notify, node, &task_id, cursor, &counts, false).await {
            return false;
        }
        if last == u32::MAX {
            break;
        }
    }
    info!(app, %task_id, counts = %serde_json::to_string(&counts).unwrap_or_default(), "notification overwrite finished");
    store_progress(notify, node, &task_id, cursor, &counts, true).await
}

/// Stores how far the overwrite got and renews the job's lease; false if that failed.
async fn store_progress(
    notify: &Notify,
    node: &Arc<str>,
    task_id: &str,
    cursor: u32,
    counts: &JobCounts,
    done: bool,
) -> bool {
    let store = Arc::clone(&notify.store);
    let (app, lease_ms, node) = (notify.app, notify.lease_ms, Arc::clone(node));
    let task_id = task_id.to_owned();
    let counts = serde_json::to_string(counts).unwrap_or_else(|_| "{}".into());
    let stored = tokio::task::spawn_blocking(move || {
        let lease = Lease {
            node: &node,
            now_ms: now_ms(),
            lease_ms,
        };
        let progress = JobProgress {
            cursor,
            counts: &counts,
            done,
        };
        store.update_overwrite(app, &task_id, lease, progress)
    })
    .await;
    match stored {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            warn!(app, %error, "cannot store overwrite progress; stopping it");
            false
        }
        Err(_) => false,
    }
}
