//! Delivery of one app's pushes to its clients.
//!
//! - Online: when a push is accepted, its frame is written to every session of
//!   `audience AND online` by a dedicated fan-out thread (and helpers, one per core), so
//!   neither the REST call nor the async runtime waits on it ([`Delivery::accept`]).
//! - Offline, by cursor rather than copies: pushes with a lifetime are kept in acceptance
//!   order with their audience bitmap and a bitmap of who acknowledged them. On login an
//!   account receives each unexpired kept push whose audience holds it and that it has not
//!   acknowledged ([`Delivery::pending_for`]).
//! - Acknowledgements are batched into one bitmap per push per batch, and delivery counts into
//!   one row per push per batch ([`records`]); both outlive restarts, as task reports need.
//! - `timpush` pushes are also marked: the accounts each reached on a session and those that
//!   acknowledged it, as bitmaps per batch ([`records`]), for their statistics and trace. A
//!   `timpush` push that keeps nothing still has its acknowledgements recorded, from accounts
//!   of its audience, for a while after it was accepted (`unkept_acks`).
//! - Revoked (`timpush/revoke`): the push leaves the kept pushes, a fan-out still under way
//!   stops, and a `Revoke` frame goes to every online session of its audience, queued behind
//!   the push's own fan-out so no session gets the push after its `Revoke`
//!   ([`Delivery::revoke`]).
//! - Frames written and acknowledgements of pushes someone reports on are handed off as
//!   delivery events ([`crate::events`]; delivery callbacks consume them).

pub mod conn;
pub mod presence;
pub mod records;
mod unkept_acks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crier_proto::protocol::{close, PushFrame, ServerFrame};
use parking_lot::RwLock;
use roaring::RoaringBitmap;
use serde_json::value::RawValue;
use tracing::{info, warn};

use crate::events::{DeliveryEvent, DeliveryEvents, DeliveryStep};
use crate::metrics::{BackgroundTask, Metrics};
use crate::notify::shape::wants_notifications;
use crate::store::PushRecord;
use crate::store::{DeliveryCounts, MarkStage, Store, StoreError};
use conn::text_frame;
use presence::Sessions;

/// The longest `MsgLifeTime`; pushes older than this are never kept.
const MAX_KEEP_MS: u64 = 604_800 * 1000;

struct KeptPush {
    record: Arc<PushRecord>,
    /// The whole WebSocket frame a login's catch-up writes.
    offline_frame: Bytes,
    acked: RwLock<RoaringBitmap>,
    stats: Arc<TaskStats>,
}

impl KeptPush {
    /// Unexpired, addressed to `account`, and not acknowledged by it.
    fn is_pending_for(&self, account: u32, now_ms: u64) -> bool {
        self.record.expires_at_ms() > now_ms
            && self.record.audience.contains(account)
            && !self.acked.read().contains(account)
    }
}

struct FanOutJob {
    task: Arc<PushRecord>,
    /// The push's audience AND online, as it was accepted.
    recipients: RoaringBitmap,
    frame: Bytes,
    stats: Arc<TaskStats>,
}

struct RevokeJob {
    record: Arc<PushRecord>,
    frame: Bytes,
    /// Answered once every session of the audience online then has the `Revoke` queued.
    done: Option<std::sync::mpsc::Sender<()>>,
}

enum FanOutWork {
    Push(FanOutJob),
    Revoke(RevokeJob),
    /// Answered once every push queued before it is written and its count sent on.
    Barrier(std::sync::mpsc::Sender<()>),
}

/// Deliveries of one push, as stored when the process started plus those since.
#[derive(Default)]
pub struct TaskStats {
    /// Sessions that got it as it was accepted.
    pub online: AtomicU64,
    /// Logins that got it from the kept pushes.
    pub offline: AtomicU64,
    /// Revoked: a fan-out under way stops, one not started is skipped.
    pub revoked: AtomicBool,
}

impl TaskStats {
    fn stored(counts: DeliveryCounts) -> Arc<TaskStats> {
        Arc::new(TaskStats {
            online: AtomicU64::new(counts.online),
            offline: AtomicU64::new(counts.offline),
            ..TaskStats::default()
        })
    }
}

/// What the report of one push says about its delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered_online: u64,
    pub delivered_offline: u64,
    /// `None` for pushes that are not kept (lifetime 0) or no longer kept (expired).
    pub acknowledged: Option<u64>,
}

pub struct Delivery {
    app: u64,
    store: Arc<dyn Store>,
    kept: RwLock<Vec<Arc<KeptPush>>>,
    kept_by_task: RwLock<HashMap<String, Arc<KeptPush>>>,
    /// Notification-only pushes (`timpush` without a message) whose notifications may still
    /// be running: not kept for logins, but the notification runner needs the record.
    notifying: RwLock<HashMap<String, Arc<PushRecord>>>,
    /// Pushes not kept whose acknowledgements are still reported as delivery events.
    unkept_acks: unkept_acks::UnkeptAcks,
    task_stats: RwLock<HashMap<String, Arc<TaskStats>>>,
    pub sessions: Arc<Sessions>,
    records: records::RecordWriter,
    fan_out: std::sync::mpsc::Sender<FanOutWork>,
    /// A test's fault: the fan-out thread panics on this many next pushes.
    injected_fan_out_panics: Arc<AtomicU32>,
    events: DeliveryEvents,
    metrics: Arc<Metrics>,
}

/// The WebSocket frame a push becomes, online or kept.
pub fn push_frame(record: &PushRecord, offline: bool) -> Bytes {
    let raw = |text: &str| RawValue::from_string(text.to_owned()).ok();
    let frame = ServerFrame::Push(PushFrame {
        task_id: record.task_id.clone(),
        from_account: record.from_account.clone(),
        msg_time_stamp: record.created_ms / 1000,
        msg_random: record.msg_random,
        msg_body: raw(&record.msg_body).unwrap_or_else(|| raw("[]").expect("[] is JSON")),
        offline_push_info: record.offline_push_info.as_deref().and_then(raw),
        offline,
    });
    text_frame(&serde_json::to_string(&frame).expect("frames serialize"))
}

impl Delivery {
    /// Loads the app's kept pushes, their acknowledgements and the delivery counts. Blocking.
    pub fn open(
        app: u64,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        events: DeliveryEvents,
        now_ms: u64,
    ) -> Result<Delivery, StoreError> {
        let mut acked = store.load_acks(app)?;
        let mut counts = store.load_delivery_counts(app)?;
        let (notifying, recent): (Vec<PushRecord>, Vec<PushRecord>) = store
            .pushes_since(app, now_ms.saturating_sub(MAX_KEEP_MS))?
            .into_iter()
            .filter(|push| push.revoked_ms.is_none())
            .partition(|push| push.lifetime_secs == 0 && wants_notifications(push));
        let notifying = notifying
            .into_iter()
            .filter(|push| push.notifications_expire_at_ms() > now_ms)
            .map(|push| (push.task_id.clone(), Arc::new(push)))
            .collect();
        let kept: Vec<Arc<KeptPush>> = recent
            .into_iter()
            .filter(|push| push.lifetime_secs > 0 && push.expires_at_ms() > now_ms)
            .map(|push| {
                let acked = acked.remove(&push.task_id).unwrap_or_default();
                let stats = TaskStats::stored(counts.remove(&push.task_id).unwrap_or_default());
                Arc::new(KeptPush {
                    offline_frame: push_frame(&push, true),
                    record: Arc::new(push),
                    acked: RwLock::new(acked),
                    stats,
                })
            })
            .collect();
        info!(app, kept = kept.len(), "kept pushes loaded");
        let kept_by_task = kept
            .iter()
            .map(|k| (k.record.task_id.clone(), Arc::clone(k)))
            .collect();
        // Pushes no longer kept (lifetime 0, or expired) are reported until they are purged.
        let task_stats = kept
            .iter()
            .map(|k| (k.record.task_id.clone(), Arc::clone(&k.stats)))
            .chain(
                counts
                    .into_iter()
                    .map(|(task_id, counts)| (task_id, TaskStats::stored(counts))),
            )
            .collect();
        let sessions = Arc::new(Sessions::default());
        let records = records::RecordWriter::start(app, Arc::clone(&store), Arc::clone(&metrics));
        let injected_fan_out_panics = Arc::new(AtomicU32::new(0));
        Ok(Delivery {
            app,
            fan_out: start_fan_out(
                Arc::clone(&sessions),
                Arc::clone(&metrics),
                records.clone(),
                events.clone(),
                Arc::clone(&injected_fan_out_panics),
            ),
            injected_fan_out_panics,
            events,
            records,
            store,
            kept: RwLock::new(kept),
            kept_by_task: RwLock::new(kept_by_task),
            notifying: RwLock::new(notifying),
            unkept_acks: unkept_acks::UnkeptAcks::default(),
            task_stats: RwLock::new(task_stats),
            sessions,
            metrics,
        })
    }

    /// Takes a push that was just stored: keeps it if it has a lifetime, and queues it for
    /// every session online now. Pushes are fanned out in the order they are accepted. A push
    /// this node has already is ignored.
    pub fn accept(&self, record: Arc<PushRecord>) {
        let stats = Arc::<TaskStats>::default();
        {
            // A push can reach a node twice (its announcement, and the look at the store
            // that covers lost ones): the first one in is the one kept and fanned out.
            let mut task_stats = self.task_stats.write();
            if task_stats.contains_key(&record.task_id) {
                return;
            }
            task_stats.insert(record.task_id.clone(), Arc::clone(&stats));
        }
        if record.lifetime_secs > 0 {
            let kept = Arc::new(KeptPush {
                offline_frame: push_frame(&record, true),
                record: Arc::clone(&record),
                acked: RwLock::default(),
                stats: Arc::clone(&stats),
            });
            self.kept_by_task
                .write()
                .insert(record.task_id.clone(), Arc::clone(&kept));
            self.kept.write().push(kept);
        } else if wants_notifications(&record) {
            self.notifying
                .write()
                .insert(record.task_id.clone(), Arc::clone(&record));
        }
        // Statistics count the acknowledgements of every `timpush` push.
        if record.lifetime_secs == 0 && (record.kind.is_timpush() || self.events.wants(&record)) {
            self.unkept_acks.remember(&record);
        }
        // Online means online when the push is accepted, after it is kept: a login from now on
        // finds it among the kept pushes (or, lifetime 0, does not get it at all), whenever the
        // fan-out thread gets to it.
        let recipients = self.sessions.online_among(&record.audience);
        let frame = push_frame(&record, false);
        if self
            .fan_out
            .send(FanOutWork::Push(FanOutJob {
                task: Arc::clone(&record),
                recipients,
                frame,
                stats,
            }))
            .is_err()
        {
            warn!(
                app = self.app,
                "fan-out thread is gone; online sessions will get this push on their next login"
            );
        }
    }

    /// Frames of the kept pushes `account` has not acknowledged, oldest first.
    pub fn pending_for(&self, account: u32, now_ms: u64) -> Vec<Bytes> {
        let mut delivered = Vec::new();
        let mut events = Vec::new();
        let frames = self
            .kept
            .read()
            .iter()
            .filter(|k| k.is_pending_for(account, now_ms))
            .map(|k| {
                k.stats.offline.fetch_add(1, Ordering::Relaxed);
                let once = DeliveryCounts {
                    online: 0,
                    offline: 1,
                };
                delivered.push((k.record.task_id.clone(), once));
                if k.record.kind.is_timpush() {
                    let reached = RoaringBitmap::from_iter([account]);
                    self.records
                        .mark(k.record.task_id.clone(), MarkStage::Reached, reached);
                }
                if self.events.wants(&k.record) {
                    events.push(DeliveryEvent {
                        task: Arc::clone(&k.record),
                        at_ms: now_ms,
                        step: DeliveryStep::Written {
                            accounts: std::iter::once(account).collect(),
                            sessions: 1,
                        },
                    });
                }
                k.offline_frame.clone()
            })
            .collect();
        self.records.delivered(delivered);
        self.events.emit(events);
        frames
    }

    /// How many kept pushes `account` has not acknowledged (a notification's badge).
    pub fn pending_count(&self, account: u32, now_ms: u64) -> u32 {
        self.kept
            .read()
            .iter()
            .filter(|k| k.is_pending_for(account, now_ms))
            .count() as u32
    }

    /// A kept push by TaskId, while it is kept.
    pub fn kept_record(&self, task_id: &str) -> Option<Arc<PushRecord>> {
        self.kept_by_task
            .read()
            .get(task_id)
            .map(|k| Arc::clone(&k.record))
    }

    /// The push a notification run sends: kept, or notification-only and not yet expired.
    pub fn notified_record(&self, task_id: &str) -> Option<Arc<PushRecord>> {
        self.kept_record(task_id)
            .or_else(|| self.notifying.read().get(task_id).cloned())
    }

    /// Whether this node knows the push as revoked.
    pub fn is_revoked(&self, task_id: &str) -> bool {
        self.task_stats
            .read()
            .get(task_id)
            .is_some_and(|stats| stats.revoked.load(Ordering::Relaxed))
    }

    /// Recalls a push on this node: nothing more of it is delivered here (a fan-out under way
    /// stops, logins no longer get it) and every session of its audience online when the
    /// fan-out thread reaches the revoke gets `frame`, after anything of the push it was
    /// written. `done` is answered then. A push this node never had is remembered as revoked,
    /// so its announcement, if it comes late, is ignored.
    pub fn revoke(
        &self,
        record: Arc<PushRecord>,
        frame: Bytes,
        done: Option<std::sync::mpsc::Sender<()>>,
    ) {
        let task_id = record.task_id.clone();
        {
            let mut task_stats = self.task_stats.write();
            let stats = task_stats.entry(task_id.clone()).or_default();
            if stats.revoked.swap(true, Ordering::Relaxed) {
                // Revoked here already (its announcement and the look at the store both
                // bring it): the sessions have their frame.
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        self.kept_by_task.write().remove(&task_id);
        self.kept.write().retain(|k| k.record.task_id != task_id);
        self.notifying.write().remove(&task_id);
        self.unkept_acks.forget(&task_id);
        let job = RevokeJob {
            record,
            frame,
            done,
        };
        if self.fan_out.send(FanOutWork::Revoke(job)).is_err() {
            warn!(app = self.app, %task_id, "fan-out thread is gone; sessions get no Revoke frame");
        }
    }

    pub fn report(&self, task_id: &str) -> DeliveryReport {
        let stats = self.task_stats.read().get(task_id).cloned();
        let acknowledged = self
            .kept_by_task
            .read()
            .get(task_id)
            .map(|k| k.acked.read().len());
        DeliveryReport {
            delivered_online: stats
                .as_ref()
                .map_or(0, |s| s.online.load(Ordering::Relaxed)),
            delivered_offline: stats.map_or(0, |s| s.offline.load(Ordering::Relaxed)),
            acknowledged,
        }
    }

    /// Whether this node has the push already (accepted here or announced to it).
    pub fn knows(&self, task_id: &str) -> bool {
        self.task_stats.read().contains_key(task_id)
    }

    /// Takes acknowledgements another node recorded (and stored): they are not recorded
    /// again, and the accounts are not sent the push again here.
    pub fn merge_acks(&self, task_id: &str, accounts: &RoaringBitmap) {
        if let Some(kept) = self.kept_by_task.read().get(task_id) {
            *kept.acked.write() |= accounts;
        }
    }

    /// Records that `account` has these pushes; unknown or foreign TaskIds are ignored.
    pub fn ack(&self, account: u32, task_ids: &[String]) {
        let by_task = self.kept_by_task.read();
        for task_id in task_ids {
            let Some(kept) = by_task.get(task_id) else {
                if let Some(record) = self.unkept_acks.first_ack(task_id, account) {
                    if record.kind.is_timpush() {
                        Metrics::add(&self.metrics.acks, 1);
                        let acked = RoaringBitmap::from_iter([account]);
                        self.records.mark(task_id.clone(), MarkStage::Acked, acked);
                    }
                    if self.events.wants(&record) {
                        let acked = DeliveryStep::Acked { account };
                        self.events.emit_one(&record, crate::clock::now_ms(), acked);
                    }
                }
                continue;
            };
            if kept.record.audience.contains(account) && kept.acked.write().insert(account) {
                Metrics::add(&self.metrics.acks, 1);
                self.records.ack(task_id.clone(), account);
                if kept.record.kind.is_timpush() {
                    let acked = RoaringBitmap::from_iter([account]);
                    self.records.mark(task_id.clone(), MarkStage::Acked, acked);
                }
                if self.events.wants(&kept.record) {
                    let acked = DeliveryStep::Acked { account };
                    self.events
                        .emit_one(&kept.record, crate::clock::now_ms(), acked);
                }
            }
        }
    }

    /// Drops expired kept pushes from memory and the store. Blocking.
    pub fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.kept
            .write()
            .retain(|k| k.record.expires_at_ms() > now_ms);
        let live: std::collections::HashSet<String> = self
            .kept
            .read()
            .iter()
            .map(|k| k.record.task_id.clone())
            .collect();
        self.kept_by_task
            .write()
            .retain(|task_id, _| live.contains(task_id));
        self.notifying
            .write()
            .retain(|_, record| record.notifications_expire_at_ms() > now_ms);
        self.unkept_acks.purge(now_ms);
        // Online-only pushes are reported for as long as kept ones are.
        let oldest_kept_ms = now_ms.saturating_sub(MAX_KEEP_MS);
        self.task_stats.write().retain(|task_id, _| {
            live.contains(task_id) || task_created_ms(task_id).is_some_and(|ms| ms > oldest_kept_ms)
        });
        self.store
            .purge_pushes(self.app, now_ms, crate::clock::utc_day_start_ms(now_ms))
    }

    /// Stores pending acknowledgements and delivery counts, including those of pushes still
    /// being written. Blocking.
    pub fn flush_records(&self) {
        // Pushes still being written would count their deliveries after the flush.
        let (done, written) = std::sync::mpsc::channel();
        if self.fan_out.send(FanOutWork::Barrier(done)).is_ok() {
            let _ = written.recv();
        }
        self.records.flush();
    }

    /// Makes the fan-out thread panic on the next `pushes` pushes (a test's fault).
    pub fn inject_fan_out_panics(&self, pushes: u32) {
        self.injected_fan_out_panics
            .store(pushes, Ordering::Relaxed);
    }

    pub fn kept_count(&self) -> usize {
        self.kept.read().len()
    }
}

/// The acceptance time a TaskId carries: `{sdkappid}_{ms}_{msgrandom}_{rand}` (decimal,
/// `im_push`) or `[batch_]{seconds}_{sdkappid}_...` (hex, `timpush`).
fn task_created_ms(task_id: &str) -> Option<u64> {
    let task_id = task_id.strip_prefix("batch_").unwrap_or(task_id);
    let mut groups = task_id.split('_');
    let (first, second) = (groups.next()?, groups.next()?);
    match second.parse::<u64>() {
        // A decimal millisecond time has 13 digits; a hex sdkappid of 8 digits at most, read
        // as decimal, stays far below.
        Ok(ms) if ms >= 1_000_000_000_000 => Some(ms),
        _ => u64::from_str_radix(first, 16).ok().map(|s| s * 1000),
    }
}

fn start_fan_out(
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    records: records::RecordWriter,
    events: DeliveryEvents,
    injected_panics: Arc<AtomicU32>,
) -> std::sync::mpsc::Sender<FanOutWork> {
    let (sender, work) = std::sync::mpsc::channel::<FanOutWork>();
    let writers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let supervisor_metrics = Arc::clone(&metrics);
    crate::supervise::spawn(BackgroundTask::FanOut, supervisor_metrics, move || {
        for job in &work {
            let job = match job {
                FanOutWork::Push(job) => job,
                FanOutWork::Revoke(revoke) => {
                    let online = sessions.online_among(&revoke.record.audience);
                    let never = AtomicBool::new(false);
                    let (frame, slow) = (&revoke.frame, close::TOO_SLOW);
                    sessions.fan_out(&online, frame, slow, writers, &never, false);
                    if let Some(done) = revoke.done {
                        let _ = done.send(());
                    }
                    continue;
                }
                FanOutWork::Barrier(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            if take_one(&injected_panics) {
                panic!("fault injected into the fan-out of {}", job.task.task_id);
            }
            let reported = events.wants(&job.task);
            let marked = job.task.kind.is_timpush();
            let result = sessions.fan_out(
                &job.recipients,
                &job.frame,
                close::TOO_SLOW,
                writers,
                &job.stats.revoked,
                reported || marked,
            );
            job.stats
                .online
                .fetch_add(result.delivered, Ordering::Relaxed);
            if marked {
                let reached = result.reached.clone();
                records.mark(job.task.task_id.clone(), MarkStage::Reached, reached);
            }
            if result.delivered > 0 {
                let online = DeliveryCounts {
                    online: result.delivered,
                    offline: 0,
                };
                records.delivered(vec![(job.task.task_id.clone(), online)]);
            }
            if reported && !result.reached.is_empty() {
                let written = DeliveryStep::Written {
                    accounts: result.reached,
                    sessions: result.delivered,
                };
                events.emit_one(&job.task, crate::clock::now_ms(), written);
            }
            Metrics::add(&metrics.deliveries_online, result.delivered);
            Metrics::add(&metrics.slow_consumer_closes, result.too_slow);
        }
    });
    sender
}

/// Takes one from `count` if it is not zero.
fn take_one(count: &AtomicU32) -> bool {
    count.load(Ordering::Relaxed) > 0
        && count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
}
