//! What a node does when others share its store: once a second it says it is alive, and it
//! looks at the store for what the others did, in case their announcements were lost (the
//! accepting node died between commit and publish, or NATS was down): the directory head,
//! pushes accepted elsewhere, acknowledgements recorded elsewhere. The store is the source of
//! truth; announcements only make things happen sooner.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::Tenant;
use crate::bus::Event;
use crate::clock::now_ms;
use crate::store::StoreError;

/// How often a node looks at the store and says it is alive.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How far back a look at the store reads pushes: longer than a push takes from its
/// acceptance time to its commit.
const PUSH_LOOKBACK_MS: u64 = 10_000;
/// A node not heard of for this long has stopped; its sessions are forgotten.
const NODE_SILENT_AFTER_MS: u64 = 5_000;

/// Where a node's looks at the store got to.
#[derive(Default)]
pub(super) struct SyncState {
    acks_cursor: u64,
    /// Revokes made before this (less the look-back) were seen already; 0 until the first
    /// look, which takes them from the node's start (revoked pushes are not loaded at start).
    revoked_seen_ms: u64,
}

impl Tenant {
    /// Runs the node's side of the cluster for this app until shutdown.
    pub async fn run_cluster_sync(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // A node that starts asks the others who is online on them.
        self.announce(Event::PresenceWanted);
        let mut every = tokio::time::interval(SYNC_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            self.announce(Event::NodeAlive);
            let tenant = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || tenant.sync_with_store()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(app = self.sdkappid(), %error, "cannot look at the store for other nodes' work; retrying")
                }
                Err(error) => warn!(app = self.sdkappid(), %error, "the look at the store failed"),
            }
        }
    }

    /// Takes what other nodes did from the store. Blocking.
    pub(super) fn sync_with_store(&self) -> Result<(), StoreError> {
        let app = self.sdkappid();
        let now = now_ms();
        self.remote_presence
            .forget_silent_nodes(now.saturating_sub(NODE_SILENT_AFTER_MS));
        let head = self.store.dir_head(app)?;
        self.catch_up_to(head);
        for record in self
            .store
            .pushes_since(app, now.saturating_sub(PUSH_LOOKBACK_MS))?
        {
            if record.revoked_ms.is_some() {
                continue;
            }
            if !self.delivery.knows(&record.task_id) {
                tracing::info!(app, task_id = %record.task_id, "a push found in the store (its announcement did not arrive)");
                self.delivery.accept(Arc::new(record));
            }
        }
        let mut sync = self.sync.lock();
        if sync.revoked_seen_ms == 0 {
            sync.revoked_seen_ms = now;
        }
        let revoked_since = sync.revoked_seen_ms.saturating_sub(PUSH_LOOKBACK_MS);
        for task_id in self.store.revoked_since(app, revoked_since)? {
            if self.delivery.is_revoked(&task_id) {
                continue;
            }
            if let Some(record) = self.store.push_record(app, &task_id)? {
                tracing::info!(app, %task_id, "a revoke found in the store (its announcement did not arrive)");
                self.apply_revoke(Arc::new(record));
            }
        }
        sync.revoked_seen_ms = now;
        let (cursor, acks) = self.store.acks_since(app, sync.acks_cursor)?;
        for (task_id, accounts) in &acks {
            self.delivery.merge_acks(task_id, accounts);
        }
        sync.acks_cursor = cursor;
        Ok(())
    }
}
