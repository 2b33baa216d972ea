//! What a node does when others share its store: once a second it says it is alive, with a
//! summary of its sessions (others whose picture of them differs ask for its list), and it
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
/// Sessions per announcement of a presence list: about 30 kB, far below the 1 MB a NATS
/// server takes by default.
const PRESENCE_LIST_PART: usize = 1_000;

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
        // A node that starts learns who is online elsewhere from the others' first heartbeats:
        // it knows none of their sessions, so each summary differs and it asks for the lists.
        let mut every = tokio::time::interval(SYNC_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
            self.announce_alive();
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

    fn announce_alive(&self) {
        let _order = self.presence_order.lock();
        let presence = self.delivery.sessions.summary();
        self.announce(Event::NodeAlive { presence });
    }

    /// Announces every session of this node, in parts, for the nodes whose picture of them
    /// differs (each replaces its picture with it).
    pub(super) fn announce_presence_list(&self) {
        let _order = self.presence_order.lock();
        let mut rest = self.delivery.sessions.sessions();
        let parts = rest.len().div_ceil(PRESENCE_LIST_PART).max(1) as u32;
        tracing::debug!(
            app = self.sdkappid(),
            sessions = rest.len(),
            parts,
            "announcing this node's sessions"
        );
        for part in 0..parts {
            let tail = rest.split_off(rest.len().min(PRESENCE_LIST_PART));
            let sessions = std::mem::replace(&mut rest, tail);
            self.announce(Event::PresenceList {
                part,
                parts,
                sessions,
            });
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
        // TaskIds first, each record only when it is news: a record carries its audience, a
        // bitmap of up to megabytes, and almost every push was announced already.
        for pushed in self
            .store
            .push_ids_since(app, now.saturating_sub(PUSH_LOOKBACK_MS))?
        {
            if pushed.revoked || self.delivery.knows(&pushed.task_id) {
                continue;
            }
            let Some(record) = self.store.push_record(app, &pushed.task_id)? else {
                continue;
            };
            if record.revoked_ms.is_none() {
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
