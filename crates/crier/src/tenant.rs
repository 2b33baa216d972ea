//! One app at run time: its configuration, its directory, its push limits, and the order in
//! which its writes reach the store.
//!
//! Directory writes are serialized by `writer`: a write is validated against the current
//! state, appended to the store, and only then applied in memory, all under that lock, so the
//! log order is the apply order and a failed validation changes nothing. Readers (audience
//! evaluation, lookups) only take the `RwLock` and are blocked just while a write applies.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tracing::info;

use crate::clock::{now_ms, utc_day_start_ms};
use crate::config::AppConfig;
use crate::delivery::Delivery;
use crate::directory::{snapshot, DirOp, Directory};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::notify::devices::Devices;
use crate::notify::shape::wants_notifications;
use crate::notify::worker::Notify;
use crate::notify::{channels, Provider};
use crate::push::limits::PushLimits;
use crate::push::validate::parse_push;
use crate::push::PushRecord;
use crate::store::{Store, StoreError};

/// A snapshot is written after this many logged writes, so start-up replays at most these.
const SNAPSHOT_EVERY_WRITES: u64 = 20_000;

struct WriterState {
    last_seq: u64,
    writes_since_snapshot: u64,
}

pub struct Tenant {
    pub config: AppConfig,
    store: Arc<dyn Store>,
    directory: RwLock<Directory>,
    writer: Mutex<WriterState>,
    pushes: tokio::sync::Mutex<PushLimits>,
    pub delivery: Delivery,
    pub notify: Notify,
    metrics: Arc<Metrics>,
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
}

impl From<std::io::Error> for OpenError {
    fn from(error: std::io::Error) -> Self {
        OpenError::Store(error.into())
    }
}

impl Tenant {
    /// Loads the app's directory (snapshot, then the writes logged after it) and its push counts.
    /// Blocking.
    pub fn open(config: AppConfig, store: Arc<dyn Store>) -> Result<Tenant, OpenError> {
        Self::open_with_metrics(config, store, Arc::default())
    }

    pub fn open_with_metrics(
        config: AppConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<Tenant, OpenError> {
        let app = config.sdkappid;
        let channels =
            channels::open(&config).map_err(|(provider, error)| OpenError::Provider {
                app,
                provider,
                error,
            })?;
        let started = std::time::Instant::now();
        let (mut directory, mut last_seq) = match store.load_dir_snapshot(app)? {
            Some(mut stored) => {
                info!(app, "loading directory snapshot");
                let directory = snapshot::read(&mut stored.reader, |done, total| {
                    info!(app, done, total, "loading accounts")
                })?;
                (directory, stored.seq)
            }
            None => (Directory::default(), 0),
        };
        let mut replayed = 0u64;
        store.read_dir_ops(app, last_seq, &mut |seq, op| {
            directory.apply(&op);
            last_seq = seq;
            replayed += 1;
            if replayed % 100_000 == 0 {
                info!(app, replayed, "replaying directory writes");
            }
        })?;
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
        let now = now_ms();
        let counts = store.push_counts(app, utc_day_start_ms(now))?;
        let delivery = Delivery::open(app, Arc::clone(&store), Arc::clone(&metrics), now)?;
        let devices = Devices::load(app, Arc::clone(&store), |name| {
            directory.account_number(name)
        })?;
        info!(app, devices = devices.count(), "devices loaded");
        let notify = Notify::new(
            app,
            Arc::clone(&store),
            devices,
            channels,
            Arc::clone(&metrics),
        );
        Ok(Tenant {
            config,
            store,
            delivery,
            notify,
            metrics,
            directory: RwLock::new(directory),
            writer: Mutex::new(WriterState {
                last_seq,
                writes_since_snapshot: replayed,
            }),
            pushes: tokio::sync::Mutex::new(PushLimits::new(now, counts)),
        })
    }

    pub fn sdkappid(&self) -> u64 {
        self.config.sdkappid
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// Runs `f` on the current directory. Keep `f` short: writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&Directory) -> R) -> R {
        f(&self.directory.read())
    }

    /// Validates and builds writes against the current state with `build`, logs them durably,
    /// then applies them. Blocking. Nothing changes if `build` fails.
    pub fn write_directory(
        &self,
        build: impl FnOnce(&Directory) -> Result<Vec<DirOp>, Error>,
    ) -> Result<(), Error> {
        let mut writer = self.writer.lock();
        let ops = build(&self.directory.read())?;
        if ops.is_empty() {
            return Ok(());
        }
        writer.last_seq = self.store.append_dir_ops(self.sdkappid(), &ops)?;
        writer.writes_since_snapshot += ops.len() as u64;
        {
            let mut directory = self.directory.write();
            for op in &ops {
                directory.apply(op);
            }
        }
        if writer.writes_since_snapshot >= SNAPSHOT_EVERY_WRITES {
            self.snapshot_locked(&mut writer)?;
        }
        Ok(())
    }

    /// Async form of [`Self::write_directory`], run on a blocking thread.
    pub async fn write(
        self: &Arc<Self>,
        build: impl FnOnce(&Directory) -> Result<Vec<DirOp>, Error> + Send + 'static,
    ) -> Result<(), Error> {
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || tenant.write_directory(build)).await?
    }

    /// Writes a snapshot if anything was logged since the last one. Blocking.
    pub fn snapshot(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock();
        if writer.writes_since_snapshot == 0 {
            return Ok(());
        }
        self.snapshot_locked(&mut writer)
    }

    fn snapshot_locked(&self, writer: &mut WriterState) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let directory = self.directory.read();
        self.store
            .save_dir_snapshot(self.sdkappid(), writer.last_seq, &mut |out| {
                snapshot::write(&directory, out)
            })?;
        writer.writes_since_snapshot = 0;
        info!(
            app = self.sdkappid(),
            seq = writer.last_seq,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "directory snapshot written"
        );
        Ok(())
    }

    /// Accepts an `im_push` from admin `caller`: validates it, applies the limits, fixes the
    /// audience and stores the push record durably before answering its TaskId.
    pub async fn push(self: &Arc<Self>, body: &Value, caller: &str) -> Result<String, Error> {
        let request = self.read(|directory| parse_push(body, directory, &self.config))?;
        if !self.config.push_enabled {
            return Err(Error::rejected(
                crier_proto::codes::PUSH_DISABLED,
                "pushing to all users is not enabled for this app (push_enabled = false)",
            ));
        }
        let mut limits = self.pushes.lock().await;
        let now = now_ms();
        if let Some(task_id) = limits.retry_of(now, request.msg_random, request.fingerprint) {
            return Ok(task_id);
        }
        limits.check(now, &self.config)?;

        // Bitmap algebra over millions of accounts takes milliseconds: keep it off the runtime.
        let tenant = Arc::clone(self);
        let condition = request.condition.clone();
        let audience = tokio::task::spawn_blocking(move || {
            tenant.read(|directory| directory.audience(&condition))
        })
        .await?;
        let record = PushRecord {
            app: self.sdkappid(),
            task_id: format!(
                "{}_{}_{}_{}",
                self.sdkappid(),
                now,
                request.msg_random,
                rand::random::<u32>()
            ),
            created_ms: now,
            lifetime_secs: request.lifetime_secs,
            from_account: request.from_account.unwrap_or_else(|| caller.to_owned()),
            msg_random: request.msg_random,
            msg_body: request.msg_body,
            offline_push_info: request.offline_push_info,
            condition: request.condition_text,
            audience,
        };
        // Who gets a notification is fixed now, like the audience: offline accounts with devices.
        let tenant = Arc::clone(self);
        let (record, notifying) = tokio::task::spawn_blocking(move || {
            let targets = wants_notifications(&record)
                .then(|| {
                    let online = tenant.delivery.sessions.online();
                    tenant.notify.devices.targets(&record.audience, &online)
                })
                .filter(|targets| !targets.is_empty());
            tenant
                .store
                .insert_push(&record, targets.as_ref())
                .map(|()| (record, targets.is_some()))
        })
        .await??;
        limits.record(
            now,
            request.msg_random,
            request.fingerprint,
            record.task_id.clone(),
        );
        Metrics::add(&self.metrics.pushes_accepted, 1);
        info!(app = self.sdkappid(), task_id = %record.task_id, audience = record.audience.len(), lifetime_secs = record.lifetime_secs, "push accepted");
        let task_id = record.task_id.clone();
        self.delivery.accept(record);
        if notifying {
            self.notify.wake();
        }
        Ok(task_id)
    }
}
