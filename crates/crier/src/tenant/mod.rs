//! One app at run time: its configuration, its directory, its push limits, and the order in
//! which its writes reach the store.
//!
//! Directory writes are serialized by `writer`: a write is validated against the current
//! state, appended to the store, and only then applied in memory, all under that lock, so the
//! log order is the apply order and a failed validation changes nothing. Readers (audience
//! evaluation, lookups) only take the `RwLock` and are blocked just while a write applies.
//!
//! Snapshots are written from a copy of the directory on a thread of their own: writing ten
//! million accounts takes seconds, copying them a fraction of that, and writers wait only for
//! the copy. The copy costs as much memory again as the directory while the file is written.

pub mod console_reads;

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tracing::{info, warn};

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
    /// The thread writing a snapshot in the background, if one was started.
    background_snapshot: Option<std::thread::JoinHandle<()>>,
}

/// Serializes the writing of snapshot files: holds the sequence number the newest file covers,
/// so an older snapshot never replaces a newer one.
type SnapshotFile = Arc<Mutex<u64>>;

pub struct Tenant {
    pub config: AppConfig,
    store: Arc<dyn Store>,
    directory: RwLock<Directory>,
    writer: Mutex<WriterState>,
    snapshot_file: SnapshotFile,
    snapshot_every_writes: u64,
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
        let snapshot_seq = last_seq;
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
                background_snapshot: None,
            }),
            snapshot_file: Arc::new(Mutex::new(snapshot_seq)),
            snapshot_every_writes: SNAPSHOT_EVERY_WRITES,
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
        if writer.writes_since_snapshot >= self.snapshot_every_writes {
            self.snapshot_in_background(&mut writer);
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

    /// Writes a snapshot if anything was logged since the last one, after any snapshot
    /// already being written. Blocking.
    pub fn snapshot(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock();
        // One started in the background may still be writing: let it finish first.
        if let Some(thread) = writer.background_snapshot.take() {
            let _ = thread.join();
        }
        if writer.writes_since_snapshot == 0 {
            return Ok(());
        }
        // Writers wait for this one: it is for shutdowns, where a copy would only cost memory.
        let directory = self.directory.read();
        save_snapshot(
            &*self.store,
            &self.snapshot_file,
            self.sdkappid(),
            writer.last_seq,
            &directory,
        )?;
        writer.writes_since_snapshot = 0;
        Ok(())
    }

    /// Starts writing a snapshot of a copy of the directory on a thread of its own; writers
    /// wait only for the copy. If it fails, the log still holds every write, for the next
    /// snapshot (or the next start) to take up.
    fn snapshot_in_background(&self, writer: &mut WriterState) {
        if writer
            .background_snapshot
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            // One is being written; the writes since go into the next.
            return;
        }
        let copy = self.directory.read().clone();
        let (store, snapshot_file, app, seq) = (
            Arc::clone(&self.store),
            Arc::clone(&self.snapshot_file),
            self.sdkappid(),
            writer.last_seq,
        );
        let pending = std::mem::take(&mut writer.writes_since_snapshot);
        let spawned = std::thread::Builder::new()
            .name("crier-snapshot".into())
            .spawn(move || {
                if let Err(error) = save_snapshot(&*store, &snapshot_file, app, seq, &copy) {
                    warn!(app, %error, "directory snapshot failed; the write log still holds everything");
                }
            });
        match spawned {
            Ok(thread) => writer.background_snapshot = Some(thread),
            Err(error) => {
                warn!(app = self.sdkappid(), %error, "could not start the snapshot thread");
                writer.writes_since_snapshot = pending;
            }
        }
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

        // Bitmap algebra over millions of accounts takes milliseconds, and storing the push
        // blocks: both run on one blocking thread, which also hands the push to the fan-out.
        // Every hop between threads is a wake-up that costs 0.1-0.5 ms on an idle 2-core
        // machine, and this is the path from the REST call to the first client.
        let tenant = Arc::clone(self);
        let caller = caller.to_owned();
        let (msg_random, fingerprint) = (request.msg_random, request.fingerprint);
        let accepted = tokio::task::spawn_blocking(move || {
            let audience = tenant.read(|directory| directory.audience(&request.condition));
            let record = PushRecord {
                app: tenant.sdkappid(),
                task_id: format!(
                    "{}_{}_{}_{}",
                    tenant.sdkappid(),
                    now,
                    request.msg_random,
                    rand::random::<u32>()
                ),
                created_ms: now,
                lifetime_secs: request.lifetime_secs,
                from_account: request.from_account.unwrap_or(caller),
                msg_random: request.msg_random,
                msg_body: request.msg_body,
                offline_push_info: request.offline_push_info,
                condition: request.condition_text,
                audience,
            };
            // Who gets a notification is fixed now, like the audience: offline accounts with
            // devices.
            let targets = wants_notifications(&record)
                .then(|| {
                    let online = tenant.delivery.sessions.online();
                    tenant.notify.devices.targets(&record.audience, &online)
                })
                .filter(|targets| !targets.is_empty());
            tenant.store.insert_push(&record, targets.as_ref())?;
            let accepted = Accepted {
                task_id: record.task_id.clone(),
                audience: record.audience.len(),
                lifetime_secs: record.lifetime_secs,
                notifying: targets.is_some(),
            };
            tenant.delivery.accept(record);
            Ok::<_, StoreError>(accepted)
        })
        .await??;
        limits.record(now, msg_random, fingerprint, accepted.task_id.clone());
        Metrics::add(&self.metrics.pushes_accepted, 1);
        info!(app = self.sdkappid(), task_id = %accepted.task_id, audience = accepted.audience, lifetime_secs = accepted.lifetime_secs, "push accepted");
        if accepted.notifying {
            self.notify.wake();
        }
        Ok(accepted.task_id)
    }
}

/// What the REST answer and the log need of a push once it is stored.
struct Accepted {
    task_id: String,
    audience: u64,
    lifetime_secs: u32,
    notifying: bool,
}

/// Writes `directory` as the snapshot that covers the logged writes up to `seq`, unless one
/// at least as new is on disk already. Blocking.
fn save_snapshot(
    store: &dyn Store,
    file: &Mutex<u64>,
    app: u64,
    seq: u64,
    directory: &Directory,
) -> Result<(), StoreError> {
    let mut newest = file.lock();
    if seq <= *newest {
        return Ok(());
    }
    let started = std::time::Instant::now();
    store.save_dir_snapshot(app, seq, &mut |out| snapshot::write(directory, out))?;
    *newest = seq;
    info!(
        app,
        seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "directory snapshot written"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::UserTags;
    use crate::store::sqlite::SqliteStore;

    fn open(dir: &std::path::Path) -> Tenant {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let mut tenant = Tenant::open(AppConfig::new(1, "key"), store).unwrap();
        tenant.snapshot_every_writes = 5;
        tenant
    }

    fn tag(tenant: &Tenant, n: usize) {
        let users = vec![UserTags {
            account: format!("user{n}"),
            tags: vec![format!("tag{n}")],
        }];
        tenant
            .write_directory(|_| Ok(vec![DirOp::AddTags { users }]))
            .unwrap();
    }

    #[test]
    fn background_snapshots_lose_no_write_made_while_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = open(dir.path());
        for n in 0..23 {
            tag(&tenant, n);
        }
        // Waits for the snapshot in flight, without writing one more.
        if let Some(thread) = tenant.writer.lock().background_snapshot.take() {
            thread.join().unwrap();
        }
        let on_disk = *tenant.snapshot_file.lock();
        assert!(
            on_disk >= 5,
            "a snapshot was written in the background (covers up to {on_disk})"
        );
        let last_seq = tenant.writer.lock().last_seq;
        drop(tenant);

        // No graceful shutdown: what the snapshot lacks comes from the log.
        let reopened = open(dir.path());
        for n in 0..23 {
            assert_eq!(
                reopened.read(|d| d.tags_of(&format!("user{n}"))),
                [format!("tag{n}")]
            );
        }
        assert_eq!(reopened.writer.lock().last_seq, last_seq);
        reopened.snapshot().unwrap();
        assert_eq!(*reopened.snapshot_file.lock(), last_seq);
    }
}
