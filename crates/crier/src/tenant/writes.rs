//! Directory writes of one app, in the order of its log.
//!
//! A write is validated against the current state, appended to the store's log, and only
//! then applied in memory, all under `writer`, so the log order is the apply order and a
//! failed validation changes nothing. Readers (audience evaluation, lookups) only take the
//! `RwLock` and are blocked just while a write applies. Writes logged by another node are
//! applied when its announcement of the new head arrives ([`Tenant::catch_up_to`]).
//!
//! Snapshots are written from a copy of the directory on a thread of their own: writing ten
//! million accounts takes seconds, copying them a fraction of that, and writers wait only for
//! the copy. The copy costs as much memory again as the directory while the file is written.

use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{info, warn};

use super::Tenant;
use crate::bus::Event;
use crate::directory::{snapshot, DirOp, Directory};
use crate::error::Error;
use crate::store::{Store, StoreError};

/// Conflicts in a row after which a write gives up (each one means another node logged in
/// between; a handful in a row means something is wrong).
const MAX_APPEND_CONFLICTS: u32 = 16;

/// A snapshot is written after this many logged writes, so start-up replays at most these.
pub(super) const SNAPSHOT_EVERY_WRITES: u64 = 20_000;

pub(super) struct WriterState {
    last_seq: u64,
    writes_since_snapshot: u64,
    /// The thread writing a snapshot in the background, if one was started.
    background_snapshot: Option<std::thread::JoinHandle<()>>,
}

impl WriterState {
    pub(super) fn new(last_seq: u64, writes_since_snapshot: u64) -> WriterState {
        WriterState {
            last_seq,
            writes_since_snapshot,
            background_snapshot: None,
        }
    }
}

/// Serializes the writing of snapshot files: holds the sequence number the newest file covers,
/// so an older snapshot never replaces a newer one.
pub(super) type SnapshotFile = Arc<Mutex<u64>>;

impl Tenant {
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
        writer.last_seq = self.append(&mut writer, &ops)?;
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
        let seq = writer.last_seq;
        drop(writer);
        self.announce(Event::DirectoryHead { seq });
        Ok(())
    }

    /// Logs `ops` after the last write applied here and answers their head. When another
    /// node logged first, its writes are applied and these go after them: directory writes are
    /// intents (import, delete, add, remove, set), valid in any order, and every node applies
    /// the one log in its one order, so numbers and bitmaps come out the same everywhere.
    fn append(&self, writer: &mut WriterState, ops: &[DirOp]) -> Result<u64, StoreError> {
        let app = self.sdkappid();
        let mut conflicts = 0;
        loop {
            match self.store.append_dir_ops(app, writer.last_seq, ops) {
                Err(StoreError::Conflict(why)) if conflicts < MAX_APPEND_CONFLICTS => {
                    conflicts += 1;
                    tracing::debug!(app, %why, "another node wrote first; catching up");
                    self.catch_up(writer)?;
                }
                appended => return appended,
            }
        }
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

    /// Applies the writes others logged up to `seq` (at least), if this node is behind.
    /// Blocking.
    pub(super) fn catch_up_to(&self, seq: u64) {
        let mut writer = self.writer.lock();
        if writer.last_seq >= seq {
            return;
        }
        if let Err(error) = self.catch_up(&mut writer) {
            warn!(app = self.sdkappid(), %error, "cannot read the directory writes of other nodes; will retry at the next announcement");
        }
    }

    /// Applies every write logged after the last one applied here; if the log no longer
    /// reaches back that far, starts again from the stored snapshot.
    fn catch_up(&self, writer: &mut WriterState) -> Result<(), StoreError> {
        let app = self.sdkappid();
        let read = {
            let mut directory = self.directory.write();
            self.store
                .read_dir_ops(app, writer.last_seq, &mut |seq, op| {
                    directory.apply(&op);
                    writer.last_seq = seq;
                    writer.writes_since_snapshot += 1;
                })
        };
        match read {
            Err(StoreError::Conflict(why)) => {
                warn!(app, %why, "this node fell behind the log's horizon; loading the directory snapshot again");
                let loaded = load_directory(app, &*self.store)?;
                *self.directory.write() = loaded.directory;
                writer.last_seq = loaded.last_seq;
                writer.writes_since_snapshot = loaded.replayed;
                Ok(())
            }
            read => read,
        }
    }
}

/// A directory as loaded from the store.
pub(super) struct Loaded {
    pub(super) directory: Directory,
    /// The last write the snapshot holds (0 without one).
    pub(super) snapshot_seq: u64,
    /// The last write the directory holds.
    pub(super) last_seq: u64,
    /// Writes replayed from the log after the snapshot.
    pub(super) replayed: u64,
}

/// The app's directory as stored: its snapshot, then the writes logged after it. Blocking.
pub(super) fn load_directory(app: u64, store: &dyn Store) -> Result<Loaded, StoreError> {
    let (mut directory, mut last_seq) = match store.load_dir_snapshot(app)? {
        Some(mut stored) => {
            info!(app, "loading directory snapshot");
            let directory = snapshot::read(&mut stored.reader, |done, total| {
                info!(app, done, total, "loading accounts")
            })
            .map_err(snapshot_error)?;
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
    Ok(Loaded {
        directory,
        snapshot_seq,
        last_seq,
        replayed,
    })
}

/// Reading a snapshot's bytes: bad bytes are corrupt data, the rest a failing store.
fn snapshot_error(error: std::io::Error) -> StoreError {
    match error.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            StoreError::Corrupt(format!("directory snapshot: {error}"))
        }
        _ => StoreError::Unavailable(format!("directory snapshot: {error}")),
    }
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
    use crate::config::AppConfig;
    use crate::directory::UserTags;
    use crate::store::sqlite::SqliteStore;

    fn open(dir: &std::path::Path) -> Arc<Tenant> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let mut tenant = Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap();
        tenant.snapshot_every_writes = 5;
        Arc::new(tenant)
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

#[cfg(test)]
mod shared_store_tests {
    use super::*;
    use crate::config::AppConfig;
    use crate::directory::UserTags;
    use crate::store::sqlite::SqliteStore;

    /// Two apps' façades on two handles of one store: two nodes, without a bus between them.
    fn node(dir: &std::path::Path, snapshot_every_writes: u64) -> Tenant {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let mut tenant = Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap();
        tenant.snapshot_every_writes = snapshot_every_writes;
        tenant
    }

    fn import_and_tag(tenant: &Tenant, name: &str, tag: &str) {
        let (name, tag) = (name.to_owned(), tag.to_owned());
        tenant
            .write_directory(|_| {
                Ok(vec![
                    DirOp::Import {
                        accounts: vec![name.clone()],
                    },
                    DirOp::AddTags {
                        users: vec![UserTags {
                            account: name,
                            tags: vec![tag],
                        }],
                    },
                ])
            })
            .unwrap();
    }

    #[test]
    fn writes_of_two_nodes_interleave_in_one_log_and_both_end_with_the_same_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node(dir.path(), 20_000), node(dir.path(), 20_000));
        for n in 0..10 {
            // Each node writes with a stale head half of the time: the store refuses, the node
            // catches up with the other's writes and logs its own after them.
            import_and_tag(&a, &format!("a{n}"), "from-a");
            import_and_tag(&b, &format!("b{n}"), "from-b");
        }
        a.catch_up_to(u64::MAX);
        let numbers = |tenant: &Tenant| {
            (0..10)
                .flat_map(|n| [format!("a{n}"), format!("b{n}")])
                .map(|name| tenant.read(|d| d.account_number(&name)).unwrap())
                .collect::<Vec<u32>>()
        };
        assert_eq!(numbers(&a), numbers(&b));
        for tenant in [&a, &b] {
            assert_eq!(tenant.read(|d| d.tags_of("b9")), ["from-b"]);
            assert_eq!(tenant.read(|d| d.tags_of("a0")), ["from-a"]);
        }
        assert_eq!(a.writer.lock().last_seq, b.writer.lock().last_seq);
        // A third node started now loads the same.
        let c = node(dir.path(), 20_000);
        assert_eq!(numbers(&c), numbers(&a));
    }

    #[test]
    fn a_node_behind_the_logs_horizon_loads_the_snapshot_again() {
        let dir = tempfile::tempdir().unwrap();
        let (busy, idle) = (node(dir.path(), 3), node(dir.path(), 20_000));
        import_and_tag(&idle, "first", "t");
        // Two snapshots by the busy node cut the log past where the idle node stands.
        for n in 0..20 {
            import_and_tag(&busy, &format!("u{n}"), "t");
            if let Some(thread) = busy.writer.lock().background_snapshot.take() {
                thread.join().unwrap();
            }
        }
        idle.catch_up_to(u64::MAX);
        assert_eq!(idle.read(|d| d.tags_of("u19")), ["t"]);
        assert_eq!(
            idle.read(|d| d.account_number("u19")),
            busy.read(|d| d.account_number("u19"))
        );
        assert_eq!(idle.writer.lock().last_seq, busy.writer.lock().last_seq);
    }
}
