//! One app at run time, behind a façade: the REST handlers, the WebSocket gateway and the
//! notification runner call its methods and never its parts, which stay private here.
//!
//! - `writes`: directory writes, committed in groups (validated, logged with one
//!   compare-and-append, then applied), catching up with writes logged by others.
//! - `snapshots`: directory snapshots and loading the directory at start.
//! - `pushes`: accepting an `im_push`, a `timpush` push or batch, and revoking (the rules
//!   themselves are in [`crate::push`]).
//! - `sessions`: logging a session in (a guard logs it out), kicks, deletions, online
//!   status, acknowledgements, devices.
//! - `remote_presence`: the sessions on other nodes, kept right by their heartbeats; `cluster`:
//!   the heartbeats themselves and the node's once-a-second look at the store.
//! - [`report`]: the task report; [`timpush_reports`]: `timpush` statistics and trace.
//! - `sched`: the scheduled-task commands; `sched_run`: running the tasks as they fall due.
//! - [`to_accounts`]: the accounts a `v4/timpush` `To_Account` names, and writes that answer.
//! - `call_rates`: calls per second of the rate-limited commands.
//!
//! Effects that cross sessions go through the [`Bus`]: the façade announces them and
//! `Tenant::handle` carries them out on every node, this one included.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use roaring::RoaringBitmap;
use tracing::info;

use crate::bus::{Announcement, Bus, Event, NodeId};
use crate::callback::{AccountNames, Callbacks};
use crate::clock::now_ms;
use crate::config::AppConfig;
use crate::delivery::Delivery;
use crate::directory::Directory;
use crate::events::DeliveryEvents;
use crate::metrics::Metrics;
use crate::notify::devices::Devices;
use crate::notify::worker::{Notify, PushLookups};
use crate::notify::{channels, Provider};
use crate::push::limits::PerSecond;
use crate::store::{PushRecord, Store, StoreError};

mod call_rates;
mod cluster;
pub mod console_reads;
mod pushes;
mod remote_presence;
pub mod report;
mod sched;
mod sched_run;
mod sessions;
mod snapshots;
pub mod timpush_reports;
pub mod to_accounts;
mod writes;

pub use pushes::BatchAccepted;
use remote_presence::RemotePresence;
pub use sched::SchedList;
pub use sessions::SessionGuard;
use snapshots::{SnapshotFile, SnapshotPolicy, SNAPSHOT_POLICY};
use writes::{WriteQueue, WriterState};

pub struct Tenant {
    config: AppConfig,
    node: NodeId,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    directory: RwLock<Directory>,
    /// Directory writes waiting for the group writer.
    queue: WriteQueue,
    writer: Mutex<WriterState>,
    /// Every directory write up to this one is applied here or is in the group being applied
    /// (not acknowledged yet), so a push reading a head up to it has nothing to catch up with.
    covered_seq: AtomicU64,
    snapshot_file: SnapshotFile,
    snapshot_policy: SnapshotPolicy,
    /// Held while a push is accepted and announced.
    accepting: Mutex<()>,
    timpush_rates: TimpushRates,
    sched: sched::SchedState,
    delivery: Delivery,
    notify: Arc<Notify>,
    /// What became of each push for each account, as the delivery points report it.
    events: DeliveryEvents,
    /// Delivery callbacks to the app's server, when it has a `callback_url`.
    callbacks: Option<Arc<Callbacks>>,
    remote_presence: RemotePresence,
    /// Held while this node's sessions change and the change is announced, and while they are
    /// summed up or listed and that is announced: each such announcement then holds for the
    /// changes announced before it, which is what other nodes compare it with.
    presence_order: Mutex<()>,
    sync: Mutex<cluster::SyncState>,
    /// What the web console keeps beside the app (history, task facts, its rate window).
    console: Arc<console_reads::ConsoleExtras>,
    /// Calls per second of the rate-limited commands.
    call_rates: call_rates::CallRates,
    metrics: Arc<Metrics>,
}

/// Per-second rates of `timpush` commands, counted on this node.
#[derive(Default)]
struct TimpushRates {
    batch: PerSecond,
    revoke: PerSecond,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("app {app}: the {} provider cannot start: {error:#}", provider.name())]
    Provider {
        app: u64,
        provider: Provider,
        error: anyhow::Error,
    },
    #[error("app {app}: callbacks cannot start: {error:#}")]
    Callbacks { app: u64, error: anyhow::Error },
}

/// What an app is opened with besides its configuration and store.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub bus: Arc<dyn Bus>,
    pub node: NodeId,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            metrics: Arc::default(),
            bus: Arc::new(crate::bus::local::LocalBus::default()),
            node: "local".into(),
        }
    }
}

impl Tenant {
    /// Loads the app's directory (snapshot, then the writes logged after it), its kept pushes
    /// and devices, and subscribes to its announcements on `shared.bus`. Blocking.
    pub fn open(
        config: AppConfig,
        store: Arc<dyn Store>,
        shared: Shared,
    ) -> Result<Arc<Tenant>, OpenError> {
        let tenant = Arc::new(Self::load(config, store, shared)?);
        if let Some(callbacks) = &tenant.callbacks {
            let names: Weak<dyn AccountNames> = Arc::downgrade(&tenant) as Weak<Tenant>;
            callbacks.name_accounts_with(names);
        }
        let weak = Arc::downgrade(&tenant);
        tenant.bus.subscribe(
            tenant.sdkappid(),
            Arc::new(move |announcement: &Announcement| {
                if let Some(tenant) = Weak::upgrade(&weak) {
                    tenant.handle(announcement);
                }
            }),
        );
        Ok(tenant)
    }

    fn load(config: AppConfig, store: Arc<dyn Store>, shared: Shared) -> Result<Tenant, OpenError> {
        let app = config.sdkappid;
        let channels =
            channels::open(&config).map_err(|(provider, error)| OpenError::Provider {
                app,
                provider,
                error,
            })?;
        let started = std::time::Instant::now();
        let snapshots::Loaded {
            directory,
            snapshot_seq,
            last_seq,
            replayed,
            replayed_log,
        } = snapshots::load_directory(app, &*store)?;
        let stats = directory.stats();
        info!(
            app,
            accounts = stats.accounts,
            live = stats.live,
            tags = stats.tags,
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "directory loaded"
        );
        let events = DeliveryEvents::default();
        let callbacks = match crate::callback::Settings::of(&config) {
            Some(settings) => {
                let callbacks = Callbacks::start(
                    app,
                    settings,
                    Arc::clone(&store),
                    Arc::clone(&shared.metrics),
                )
                .map_err(|error| OpenError::Callbacks { app, error })?;
                events.add_sink(callbacks.sink());
                Some(Arc::new(callbacks))
            }
            None => None,
        };
        let delivery = Delivery::open(
            app,
            Arc::clone(&store),
            Arc::clone(&shared.metrics),
            events.clone(),
            now_ms(),
        )?;
        let devices = Devices::load(app, Arc::clone(&store), |name| {
            directory.account_number(name)
        })?;
        info!(app, devices = devices.count(), "devices loaded");
        let notify = Notify::new(
            app,
            Arc::clone(&store),
            devices,
            channels,
            events.clone(),
            Arc::clone(&shared.metrics),
            std::time::Duration::from_secs(config.notification_lease_secs.max(1)),
        );
        Ok(Tenant {
            config,
            node: shared.node,
            store,
            bus: shared.bus,
            delivery,
            notify: Arc::new(notify),
            events,
            callbacks,
            remote_presence: RemotePresence::default(),
            presence_order: Mutex::new(()),
            sync: Mutex::default(),
            console: Arc::default(),
            call_rates: Default::default(),
            metrics: shared.metrics,
            directory: RwLock::new(directory),
            queue: WriteQueue::default(),
            writer: Mutex::new(WriterState::new(last_seq, replayed_log)),
            covered_seq: AtomicU64::new(last_seq),
            snapshot_file: Arc::new(Mutex::new(snapshot_seq)),
            snapshot_policy: SNAPSHOT_POLICY,
            accepting: Mutex::new(()),
            timpush_rates: TimpushRates::default(),
            sched: sched::SchedState::default(),
        })
    }

    pub fn sdkappid(&self) -> u64 {
        self.config.sdkappid
    }

    /// This node, as it signs its announcements and job leases.
    pub fn node(&self) -> NodeId {
        Arc::clone(&self.node)
    }

    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    /// Runs `f` on the current directory. Keep `f` short: writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&Directory) -> R) -> R {
        f(&self.directory.read())
    }

    /// The app's notifications, for the runner the server starts.
    pub fn notifications(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// The app's callbacks, for the sender the server starts; `None` without a
    /// `callback_url`.
    pub fn callbacks(&self) -> Option<Arc<Callbacks>> {
        self.callbacks.clone()
    }

    /// The hand-off of the app's delivery events, for another consumer to join.
    pub fn delivery_events(&self) -> &DeliveryEvents {
        &self.events
    }

    fn announce(&self, event: Event) {
        self.bus.publish(Announcement {
            app: self.sdkappid(),
            node: Arc::clone(&self.node),
            event,
        });
    }

    /// Carries out an announcement of this app, made on this node or another.
    fn handle(&self, announcement: &Announcement) {
        let from_here = announcement.node == self.node;
        match &announcement.event {
            Event::PushAccepted(record) => self.delivery.accept(Arc::clone(record)),
            // This node's own revoke is carried out before it is announced.
            Event::PushRevoked(record) if !from_here => self.apply_revoke(Arc::clone(record)),
            Event::Kick { account, reason } => self.close_sessions(*account, reason),
            Event::AccountDeleted { account } => {
                self.close_sessions(*account, "account deleted");
                self.notify.devices.forget_in_memory(*account);
            }
            Event::Presence {
                account,
                session,
                platform,
                online,
            } if !from_here => {
                let node = Arc::clone(&announcement.node);
                self.remote_presence
                    .update(*account, (node, *session), platform, *online);
            }
            Event::PresenceWanted { of } if *of == self.node => self.announce_presence_list(),
            Event::PresenceList {
                part,
                parts,
                sessions,
            } if !from_here => {
                self.remote_presence.take_list_part(
                    &announcement.node,
                    *part,
                    *parts,
                    sessions,
                    now_ms(),
                );
            }
            Event::NodeAlive { presence } if !from_here => {
                let node = &announcement.node;
                if self.remote_presence.heard_alive(node, *presence, now_ms()) {
                    info!(app = self.sdkappid(), %node, sessions = presence.sessions, "the sessions known of a node are not the ones it has; asking it for its list");
                    self.announce(Event::PresenceWanted {
                        of: Arc::clone(node),
                    });
                }
            }
            Event::DeviceRegistered { account, device } if !from_here => {
                self.notify.devices.remember(*account, device.clone());
            }
            Event::DeviceUnregistered { device } if !from_here => {
                self.notify.devices.forget_device(device);
            }
            Event::DirectoryHead { seq } if !from_here => self.catch_up_to(*seq),
            Event::PushRevoked(_)
            | Event::Presence { .. }
            | Event::PresenceWanted { .. }
            | Event::PresenceList { .. }
            | Event::NodeAlive { .. }
            | Event::DeviceRegistered { .. }
            | Event::DeviceUnregistered { .. }
            | Event::DirectoryHead { .. } => {}
        }
    }

    /// Stores pending acknowledgements and delivery counts and writes a snapshot, so the
    /// next start replays nothing. Blocking.
    pub fn flush(&self) {
        self.delivery.flush_records();
        if let Some(callbacks) = &self.callbacks {
            callbacks.flush();
        }
        if let Err(error) = self.snapshot() {
            tracing::warn!(app = self.sdkappid(), %error, "snapshot at shutdown failed; the write log still holds everything");
        }
    }

    /// Drops expired kept pushes from memory and the store; answers how many. Blocking.
    pub fn purge_expired(&self, now_ms: u64) -> Result<u64, StoreError> {
        self.delivery.purge_expired(now_ms)
    }

    /// A test's fault: the fan-out thread panics on the next `pushes` pushes of this app.
    #[doc(hidden)]
    pub fn inject_fan_out_panics(&self, pushes: u32) {
        self.delivery.inject_fan_out_panics(pushes);
    }

    /// Who is online now, on any node.
    fn online(&self) -> RoaringBitmap {
        let mut online = self.delivery.sessions.online();
        online |= self.remote_presence.online();
        online
    }
}

/// Callback events name their accounts.
impl AccountNames for Tenant {
    fn names(&self, accounts: &[u32]) -> Vec<Option<String>> {
        self.read(|d| {
            accounts
                .iter()
                .map(|&account| d.account_name(account).map(str::to_owned))
                .collect()
        })
    }
}

/// What the notification runner needs of the app, and nothing more.
impl PushLookups for Tenant {
    fn notified_push(&self, task_id: &str) -> Option<Arc<PushRecord>> {
        self.delivery.notified_record(task_id)
    }

    fn is_revoked(&self, task_id: &str) -> bool {
        self.delivery.is_revoked(task_id)
    }

    fn account_name(&self, account: u32) -> Option<String> {
        self.read(|d| d.account_name(account).map(str::to_owned))
    }

    fn pending_count(&self, account: u32, now_ms: u64) -> u32 {
        self.delivery.pending_count(account, now_ms)
    }
}
