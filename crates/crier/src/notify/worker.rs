//! Runs notification jobs: one per push, walking its target accounts in batches in account
//! order. After each batch the cursor and the counts are stored, so a restart resumes where
//! the last finished batch ended (a batch in flight at a crash is sent again: at least once).
//! Memory stays bounded whatever the audience: one batch in flight per app.
//!
//! Nodes sharing a store share the jobs: a node claims one job at a time with a lease, renews
//! it with every stored batch, and releases it at shutdown. A node that stops (or stalls past
//! the lease) loses the job to the next claimant, which resumes at the stored cursor.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::devices::{Device, Devices};
use super::shape::Template;
use super::{Notification, Notifier, Outcome, Provider};
use crate::clock::{now_ms, now_secs};
use crate::events::{DeliveryEvent, DeliveryEvents, DeliveryStep};
use crate::metrics::{Metrics, NotificationEnd};
use crate::store::notify::{JobProgress, Lease, StoredJob};
use crate::store::{PushRecord, Store, StoreError};

/// Accounts per batch; the cursor is stored after each.
pub(super) const BATCH_ACCOUNTS: usize = 512;
/// Sends in flight at once per app.
pub(super) const IN_FLIGHT: usize = 64;
/// Tries per notification before it counts as failed.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a run has done for one provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProviderCounts {
    pub sent: u64,
    pub failed: u64,
    /// Sends a provider asked to repeat (each repeat counts once).
    pub retried: u64,
    pub dead_tokens: u64,
}

pub type JobCounts = BTreeMap<Provider, ProviderCounts>;

/// Spaces sends to one provider at its configured rate.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_sec: u32) -> Pacer {
        Pacer {
            interval: Duration::from_secs(1) / per_sec.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock();
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

pub struct Channel {
    notifier: Arc<dyn Notifier>,
    pacer: Pacer,
}

impl Channel {
    pub fn new(notifier: Arc<dyn Notifier>, per_sec: u32) -> Channel {
        Channel {
            notifier,
            pacer: Pacer::new(per_sec),
        }
    }
}

/// Notifications of one app: its devices, its providers and its job runner.
pub struct Notify {
    pub(super) app: u64,
    pub(super) store: Arc<dyn Store>,
    pub devices: Devices,
    channels: HashMap<Provider, Channel>,
    wake: tokio::sync::Notify,
    /// Where each notification's end is reported (delivery callbacks).
    events: DeliveryEvents,
    metrics: Arc<Metrics>,
    /// How long a claimed job stays with this node without a stored batch
    /// (`notification_lease_secs`). A batch takes at most a few seconds at the providers'
    /// rates, so the default 30 s outlasts a slow one with room to spare, and bounds how long
    /// another node waits for a job whose node died.
    pub(super) lease_ms: u64,
}

/// How a run stands, for task reports.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub targets: u64,
    pub done: bool,
    pub counts: JobCounts,
}

/// How one notification ended, after its retries.
pub(super) struct Ended {
    pub(super) account: u32,
    pub(super) provider: Provider,
    pub(super) device: Device,
    pub(super) outcome: Outcome,
    pub(super) retries: u64,
}

impl Notify {
    pub fn new(
        app: u64,
        store: Arc<dyn Store>,
        devices: Devices,
        channels: HashMap<Provider, Channel>,
        events: DeliveryEvents,
        metrics: Arc<Metrics>,
        lease: Duration,
    ) -> Notify {
        Notify {
            app,
            store,
            devices,
            channels,
            wake: tokio::sync::Notify::new(),
            events,
            metrics,
            lease_ms: lease.as_millis() as u64,
        }
    }

    /// A new job was stored.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn report(&self, task_id: &str) -> Result<Option<JobReport>, StoreError> {
        Ok(self.store.job(self.app, task_id)?.map(|job| JobReport {
            targets: job.targets.len(),
            done: job.done,
            counts: serde_json::from_str(&job.counts).unwrap_or_default(),
        }))
    }

    pub(super) async fn deliver(
        &self,
        account: u32,
        notification: Notification,
        device: Device,
    ) -> Ended {
        let provider = device.provider;
        let Some(channel) = self.channels.get(&provider) else {
            return Ended {
                account,
                provider,
                device,
                outcome: Outcome::Failed {
                    reason: format!("no {} provider is configured for this app", provider.name()),
                },
                retries: 0,
            };
        };
        let mut retries = 0;
        let mut backoff = FIRST_BACKOFF;
        loop {
            channel.pacer.wait().await;
            let outcome = channel.notifier.send(&notification).await;
            let Outcome::Retry { after, reason } = outcome else {
                return Ended {
                    account,
                    provider,
                    device,
                    outcome,
                    retries,
                };
            };
            retries += 1;
            self.metrics
                .notification(provider, NotificationEnd::Retried);
            if retries >= u64::from(MAX_ATTEMPTS) || now_secs() >= notification.expires_at {
                return Ended {
                    account,
                    provider,
                    device,
                    outcome: Outcome::Failed {
                        reason: format!("gave up after {retries} tries: {reason}"),
                    },
                    retries,
                };
            }
            tokio::time::sleep(after.unwrap_or(backoff).min(MAX_BACKOFF)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    pub(super) fn count(&self, counts: &mut JobCounts, ended: &Ended) {
        let entry = counts.entry(ended.provider).or_default();
        entry.retried += ended.retries;
        let end = match &ended.outcome {
            Outcome::Sent => {
                entry.sent += 1;
                NotificationEnd::Sent
            }
            Outcome::DeadToken { .. } => {
                entry.dead_tokens += 1;
                entry.failed += 1;
                NotificationEnd::DeadToken
            }
            Outcome::Failed { .. } | Outcome::Retry { .. } => {
                entry.failed += 1;
                NotificationEnd::Failed
            }
        };
        self.metrics.notification(ended.provider, end);
    }
}

/// What a notification run needs of its app besides [`Notify`]: the kept push a job is for,
/// the name of an account, and the badge count.
pub trait PushLookups: Send + Sync {
    /// The push, while it is kept (`None` once it expired).
    /// The push a job notifies of, while its notifications are still worth sending.
    fn notified_push(&self, task_id: &str) -> Option<Arc<PushRecord>>;
    /// Revoked: a run in progress stops at its next batch.
    fn is_revoked(&self, task_id: &str) -> bool;
    fn account_name(&self, account: u32) -> Option<String>;
    /// The account's unacknowledged kept pushes.
    fn pending_count(&self, account: u32, now_ms: u64) -> u32;
}

/// Runs the app's notification jobs until shutdown, claiming them one at a time as `node`:
/// unfinished ones at start, then each new one.
pub async fn run(
    notify: Arc<Notify>,
    lookups: Arc<dyn PushLookups>,
    node: Arc<str>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (app, lease_ms) = (notify.app, notify.lease_ms);
    loop {
        // Overwrites of revoked pushes first: the notifications they cover are on screens now.
        match super::overwrite::claim(&notify, &node).await {
            Ok(Some(overwrite)) => {
                if !super::overwrite::run(
                    &notify,
                    lookups.as_ref(),
                    &node,
                    overwrite,
                    &mut shutdown,
                )
                .await
                {
                    if *shutdown.borrow() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                continue;
            }
            Ok(None) => {}
            Err(error) => {
                warn!(app, %error, "cannot claim a notification overwrite; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        let store = Arc::clone(&notify.store);
        let claimant = Arc::clone(&node);
        let claimed = tokio::task::spawn_blocking(move || {
            store.claim_job(app, &claimant, now_ms(), lease_ms)
        })
        .await;
        let job = match claimed {
            Ok(Ok(job)) => job,
            Ok(Err(error)) => {
                warn!(app, %error, "cannot claim a notification job; retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(error) => {
                warn!(app, %error, "notification job query failed");
                return;
            }
        };
        let Some(job) = job else {
            // Also wakes when a lease held by another node may have run out.
            tokio::select! {
                () = notify.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(lease_ms)) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        };
        let task_id = job.task_id.clone();
        if !run_job(&notify, lookups.as_ref(), &node, job, &mut shutdown).await {
            if *shutdown.borrow() {
                release(&notify, &node, task_id).await;
                return;
            }
            // The store failed mid-run, or another node took the job over; it resumes from
            // its last stored batch.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// Lets another node claim the job at once instead of after the lease.
async fn release(notify: &Notify, node: &Arc<str>, task_id: String) {
    let (store, app, node) = (Arc::clone(&notify.store), notify.app, Arc::clone(node));
    let released =
        tokio::task::spawn_blocking(move || store.release_job(app, &task_id, &node)).await;
    if !matches!(released, Ok(Ok(()))) {
        warn!(
            app,
            "could not release a notification job; another node takes it when the lease ends"
        );
    }
}

/// Answers false when the server is stopping (the job resumes at the next start).
async fn run_job(
    notify: &Arc<Notify>,
    lookups: &dyn PushLookups,
    node: &Arc<str>,
    job: StoredJob,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let app = notify.app;
    let mut counts: JobCounts = serde_json::from_str(&job.counts).unwrap_or_default();
    let Some(record) = lookups.notified_push(&job.task_id) else {
        // Expired (or purged) before its run ended: what is left would arrive too late, and
        // is counted as failed rather than dropped unseen.
        let mut left = 0u64;
        for account in job.targets.range(job.cursor..) {
            for device in notify.devices.of(account) {
                counts.entry(device.provider).or_default().failed += 1;
                notify
                    .metrics
                    .notification(device.provider, NotificationEnd::Failed);
                left += 1;
            }
        }
        warn!(app, task_id = %job.task_id, left, "notification run ended with its push's lifetime; the rest counted as failed");
        return finish(notify, node, &job, u32::MAX, &counts, true).await;
    };
    let template = Template::of(&record);
    let started = Instant::now();
    let total = job.targets.len();
    info!(app, task_id = %job.task_id, targets = total, resumed_at = job.cursor, "notification run starting");
    let mut cursor = job.cursor;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        if lookups.is_revoked(&job.task_id) {
            // The store marked the job done when the push was revoked.
            info!(app, task_id = %job.task_id, done = job.targets.range(..cursor).len(), total, "notification run stopped: the push was revoked");
            return finish(notify, node, &job, cursor, &counts, true).await;
        }
        let batch: Vec<u32> = job.targets.range(cursor..).take(BATCH_ACCOUNTS).collect();
        let Some(&last) = batch.last() else { break };
        let now = now_ms();
        let mut sends = Vec::new();
        for account in batch {
            let Some(name) = lookups.account_name(account) else {
                continue;
            };
            let badge = lookups.pending_count(account, now);
            for device in notify.devices.of(account) {
                let notification = template.for_device(&name, &device.token, badge);
                sends.push((account, notification, device));
            }
        }
        let sending = stream::iter(sends)
            .map(|(account, notification, device)| notify.deliver(account, notification, device))
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<Ended>>();
        tokio::pin!(sending);
        // A batch slower than the lease (a slow provider, retries) would otherwise lose the
        // job to another node while this one is still sending: renew it meanwhile, with the
        // cursor where the batch started.
        let mut renew = tokio::time::interval(Duration::from_millis(notify.lease_ms / 3));
        renew.tick().await;
        let ended = loop {
            tokio::select! {
                ended = &mut sending => break ended,
                _ = renew.tick() => {
                    if !finish(notify, node, &job, cursor, &counts, false).await {
                        return false;
                    }
                }
            }
        };
        report_ends(notify, &record, &ended);
        for ended in &ended {
            notify.count(&mut counts, ended);
            match &ended.outcome {
                Outcome::DeadToken { reason } => {
                    info!(app, provider = ended.provider.name(), %reason, "removing a dead device token");
                    let notify = Arc::clone(notify);
                    let device = ended.device.clone();
                    let removed =
                        tokio::task::spawn_blocking(move || notify.devices.unregister(&device))
                            .await;
                    if !matches!(removed, Ok(Ok(_))) {
                        warn!(
                            app,
                            "could not remove a dead device token; it will be tried again"
                        );
                    }
                }
                Outcome::Failed { reason } => {
                    warn!(app, task_id = %job.task_id, provider = ended.provider.name(), %reason, "notification failed");
                }
                Outcome::Sent | Outcome::Retry { .. } => {}
            }
        }
        cursor = last.saturating_add(1);
        if !finish(notify, node, &job, cursor, &counts, false).await {
            return false;
        }
        let done = job.targets.range(..cursor).len();
        info!(app, task_id = %job.task_id, done, total, "notification progress");
        if last == u32::MAX {
            break;
        }
    }
    info!(app, task_id = %job.task_id, elapsed_ms = started.elapsed().as_millis() as u64, counts = %serde_json::to_string(&counts).unwrap_or_default(), "notification run finished");
    finish(notify, node, &job, cursor, &counts, true).await
}

/// Hands how each notification of a batch ended to the app's delivery events: accepted, or
/// refused with the provider's reason.
fn report_ends(notify: &Notify, record: &Arc<PushRecord>, ended: &[Ended]) {
    if !notify.events.wants(record) {
        return;
    }
    let at_ms = now_ms();
    let events = ended
        .iter()
        .map(|ended| DeliveryEvent {
            task: Arc::clone(record),
            at_ms,
            step: DeliveryStep::Notified {
                account: ended.account,
                provider: ended.provider,
                refused: match &ended.outcome {
                    Outcome::Sent => None,
                    Outcome::DeadToken { reason }
                    | Outcome::Failed { reason }
                    | Outcome::Retry { reason, .. } => Some(reason.clone()),
                },
            },
        })
        .collect();
    notify.events.emit(events);
}

/// Stores how far the job got and renews the lease; answers false if the store failed or the
/// lease was lost (the job resumes later, here or on another node).
async fn finish(
    notify: &Notify,
    node: &Arc<str>,
    job: &StoredJob,
    cursor: u32,
    counts: &JobCounts,
    done: bool,
) -> bool {
    let store = Arc::clone(&notify.store);
    let (app, task_id, node) = (notify.app, job.task_id.clone(), Arc::clone(node));
    let lease_ms = notify.lease_ms;
    let counts = serde_json::to_string(counts).unwrap_or_else(|_| "{}".into());
    match tokio::task::spawn_blocking(move || {
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
        store.update_job(app, &task_id, lease, progress)
    })
    .await
    {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            warn!(app, %error, "cannot store notification progress; stopping this run");
            false
        }
        Err(_) => false,
    }
}
