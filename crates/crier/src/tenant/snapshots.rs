//! Directory snapshots of one app: when one is written, writing it from a copy on a thread
//! of its own, and loading the directory at start (snapshot, then the writes logged after it).
//!
//! Snapshots are written from a copy of the directory on a thread of their own: writing ten
//! million accounts takes seconds, copying them a fraction of that, and writers wait only for
//! the copy. The copy holds only what the file stores ([`Contents`]: the bitmaps, about 40
//! bytes per account, and the names, shared rather than copied), which it costs again while
//! the file is written.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLockWriteGuard};
use tracing::{info, warn};

use super::writes::WriterState;
use super::Tenant;
use crate::directory::snapshot::{self, Contents};
use crate::directory::{DirOp, Directory};
use crate::store::{Store, StoreError};

/// When a snapshot is due. Start-up loads the snapshot, then replays the log written after
/// it; a snapshot costs in proportion to the directory (at ten million accounts about half a
/// second of copying on two cores, during which writes wait, and a few seconds of a core
/// writing it), replaying in proportion
/// to the log. So a snapshot is written once the log since the last one is worth half the
/// directory in bytes: snapshots then cost the same share of every write whatever the
/// directory's size, start-up replays at most about what it loads, and a stream of small
/// writes (logins, single tags) no longer snapshots ten million accounts every 20,000 of them.
#[derive(Debug, Clone, Copy)]
pub(super) struct SnapshotPolicy {
    /// Log (estimated bytes, see [`log_weight`]) before which no snapshot is due, however
    /// small the directory.
    pub(super) min_log_bytes: u64,
    /// Log per live account of the directory before a snapshot is due (the snapshot itself
    /// takes about 50 bytes per account at ten million).
    pub(super) log_bytes_per_account: u64,
}

pub(super) const SNAPSHOT_POLICY: SnapshotPolicy = SnapshotPolicy {
    min_log_bytes: 32 << 20,
    log_bytes_per_account: 24,
};

impl SnapshotPolicy {
    pub(super) fn due(&self, log_bytes: u64, live_accounts: u64) -> bool {
        log_bytes
            >= self
                .min_log_bytes
                .max(live_accounts * self.log_bytes_per_account)
    }
}

/// What replaying a logged write costs, as bytes: about the size of its JSON record (counted
/// without writing it), plus a fixed cost per record for reading and parsing it.
pub(super) fn log_weight(op: &DirOp) -> u64 {
    const PER_RECORD: usize = 256;
    const PER_ENTRY: usize = 24;
    let names = |names: &[String]| -> usize { names.iter().map(|n| n.len() + 3).sum() };
    let bytes = match op {
        DirOp::Import { accounts }
        | DirOp::Delete { accounts }
        | DirOp::RemoveAllTags { accounts } => names(accounts),
        DirOp::AddTags { users } | DirOp::RemoveTags { users } => users
            .iter()
            .map(|u| PER_ENTRY + u.account.len() + names(&u.tags))
            .sum(),
        DirOp::SetAttrs { users } => users
            .iter()
            .map(|u| {
                PER_ENTRY
                    + u.account.len()
                    + u.values.iter().map(|(_, v)| v.len() + 8).sum::<usize>()
            })
            .sum(),
        DirOp::RemoveAttrs { users } => users
            .iter()
            .map(|u| PER_ENTRY + u.account.len() + 2 * u.slots.len())
            .sum(),
        DirOp::SetAttrNames { names } => names.iter().map(|(_, n)| n.len() + 8).sum(),
        DirOp::SetAttrKinds { kinds } => 24 * kinds.len(),
    };
    (PER_RECORD + bytes) as u64
}

/// Serializes the writing of snapshot files: holds the sequence number the newest file covers,
/// so an older snapshot never replaces a newer one.
pub(super) type SnapshotFile = Arc<Mutex<u64>>;

impl Tenant {
    /// Writes a snapshot if anything was logged since the last one, after any snapshot
    /// already being written. Blocking.
    pub fn snapshot(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock();
        // One started in the background may still be writing: let it finish first.
        if let Some(thread) = writer.background_snapshot.take() {
            let _ = thread.join();
        }
        if writer.log_since_snapshot == 0 {
            return Ok(());
        }
        // Writers wait for this one: it is for shutdowns, where a copy would only cost memory.
        // The changes waiting beside the bitmaps are merged first: writing each set whole
        // would otherwise copy it.
        let mut directory = self.directory.write();
        directory.merge_changes();
        let directory = RwLockWriteGuard::downgrade(directory);
        save_snapshot(
            &*self.store,
            &self.snapshot_file,
            self.sdkappid(),
            writer.last_seq,
            0,
            |out| snapshot::write(&directory, out),
        )?;
        writer.log_since_snapshot = 0;
        Ok(())
    }

    /// Starts writing a snapshot of a copy of the directory on a thread of its own; writers
    /// wait only for the copy. If it fails, the log still holds every write, for the next
    /// snapshot (or the next start) to take up.
    pub(super) fn snapshot_in_background(&self, writer: &mut WriterState) {
        if writer
            .background_snapshot
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
        {
            // One is being written; the writes since go into the next.
            return;
        }
        let copying = Instant::now();
        let copy = Contents::copy(&self.directory.read());
        let copy_ms = copying.elapsed().as_millis() as u64;
        let (store, snapshot_file, app, seq) = (
            Arc::clone(&self.store),
            Arc::clone(&self.snapshot_file),
            self.sdkappid(),
            writer.last_seq,
        );
        let pending = std::mem::take(&mut writer.log_since_snapshot);
        let spawned = std::thread::Builder::new()
            .name("crier-snapshot".into())
            .spawn(move || {
                let mut copy = copy;
                copy.merge_changes();
                let write = |out: &mut dyn Write| snapshot::write_contents(&copy, out);
                if let Err(error) = save_snapshot(&*store, &snapshot_file, app, seq, copy_ms, write)
                {
                    warn!(app, %error, "directory snapshot failed; the write log still holds everything");
                }
            });
        match spawned {
            Ok(thread) => writer.background_snapshot = Some(thread),
            Err(error) => {
                warn!(app = self.sdkappid(), %error, "could not start the snapshot thread");
                writer.log_since_snapshot = pending;
            }
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
    /// Their weight ([`log_weight`]).
    pub(super) replayed_log: u64,
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
    let (mut replayed, mut replayed_log) = (0u64, 0u64);
    store.read_dir_ops(app, last_seq, &mut |seq, op| {
        directory.apply(&op);
        last_seq = seq;
        replayed += 1;
        replayed_log += log_weight(&op);
        if replayed % 100_000 == 0 {
            info!(app, replayed, "replaying directory writes");
        }
    })?;
    Ok(Loaded {
        directory,
        snapshot_seq,
        last_seq,
        replayed,
        replayed_log,
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

/// Saves what `write` writes as the snapshot that covers the logged writes up to `seq`, unless
/// one at least as new is on disk already; `copy_ms` is how long writers waited for the copy
/// it writes, if any. Blocking.
fn save_snapshot(
    store: &dyn Store,
    file: &Mutex<u64>,
    app: u64,
    seq: u64,
    copy_ms: u64,
    write: impl Fn(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let mut newest = file.lock();
    if seq <= *newest {
        return Ok(());
    }
    let started = Instant::now();
    store.save_dir_snapshot(app, seq, &mut |out| write(out))?;
    *newest = seq;
    info!(
        app,
        seq,
        copy_ms,
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

    /// A tenant that snapshots after every five of [`tag`]'s writes.
    fn open(dir: &std::path::Path) -> Arc<Tenant> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).unwrap());
        let mut tenant = Tenant::load(AppConfig::new(1, "key"), store, Default::default()).unwrap();
        tenant.snapshot_policy = SnapshotPolicy {
            min_log_bytes: 5 * log_weight(&tag_write(10)) - 1,
            log_bytes_per_account: 0,
        };
        Arc::new(tenant)
    }

    fn tag_write(n: usize) -> DirOp {
        DirOp::AddTags {
            users: vec![UserTags {
                account: format!("user{n}"),
                tags: vec![format!("tag{n}")],
            }],
        }
    }

    fn tag(tenant: &Tenant, n: usize) {
        tenant
            .write_directory(move |_| Ok(vec![tag_write(n)]))
            .unwrap();
    }

    #[test]
    fn a_snapshot_is_due_by_the_logs_weight_against_the_directorys_size() {
        let policy = SNAPSHOT_POLICY;
        let small = log_weight(&tag_write(1));
        // A small app: due after the minimum, however few its accounts.
        assert!(!policy.due(policy.min_log_bytes - 1, 1_000));
        assert!(policy.due(policy.min_log_bytes, 1_000));
        // Ten million accounts: due after half a snapshot's worth of log, far more than the
        // 20,000 small writes that used to trigger one.
        assert!(!policy.due(20_000 * small, 10_000_000));
        assert!(policy.due(240_000_000, 10_000_000));
        // A record's weight grows with what it carries.
        let big = DirOp::AddTags {
            users: (0..100)
                .map(|n| UserTags {
                    account: format!("user{n}"),
                    tags: (0..5).map(|t| format!("tag{t}")).collect(),
                })
                .collect(),
        };
        let json = serde_json::to_string(&big).unwrap().len() as u64;
        let weight = log_weight(&big);
        assert!(
            weight >= json && weight < 2 * json,
            "the weight {weight} is about the record's {json} bytes"
        );
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
