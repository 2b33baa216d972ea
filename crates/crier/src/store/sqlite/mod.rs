//! The embedded default: SQLite in WAL mode under the data directory, plus one snapshot file
//! per app beside it.
//!
//! Why SQLite: one file, no server to install, transactions that survive `kill -9`, and a
//! storage engine millions of deployments trust. WAL with `synchronous=NORMAL` makes each
//! commit a sequential append that survives a process crash; only a power loss can lose the
//! last commits.
//!
//! - `schema`: the versioned schema and its migrations, run at open.
//! - `checkpointer`: copies the write-ahead log into the database in the background.
//! - `directory`: the per-app log with compare-and-append, and the snapshot files.
//! - `pushes`: push records under the rate limits, acknowledgements, delivery counts.
//! - `notify`: devices and leased notification jobs.
//! - `sched`: scheduled tasks, leased while a node runs them.
//! - `callbacks`: the delivery callback queue, claimed under a lease.
//!
//! Every operation is one call of `run`, which turns SQLite's and the file system's errors
//! into [`StoreError`]s: they become backend-neutral here and nowhere else.

mod callbacks;
mod checkpointer;
mod directory;
mod marks;
mod notify;
mod pushes;
mod sched;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use rusqlite::Connection;

use super::{
    DeliveryCounts, MarkStage, PushAcceptance, PushCounts, PushId, PushMark, PushRules,
    PushSummary, Store, StoreError, StoredSnapshot,
};
use crate::directory::DirOp;
use crate::store::{PushRecord, RevokeOutcome};
use checkpointer::{Checkpointer, CHECKPOINT_EVERY};

/// A commit checkpoints on its own thread only past this many log pages (200 MiB): a safety
/// net for when the background checkpointer cannot keep up with a bulk load. SQLite's default
/// is 1,000 pages, which put a checkpoint (two fsyncs, 5-20 ms) on the path of one `im_push` in
/// about two hundred.
const WAL_PAGES_BEFORE_INLINE_CHECKPOINT: u32 = 50_000;

/// A failure inside this module, before it becomes a [`StoreError`] in [`run`]: lets `?`
/// take SQLite's and the file system's errors without `StoreError` naming either.
enum Failure {
    Sqlite(rusqlite::Error),
    Io(std::io::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Sqlite(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

impl Failure {
    fn into_store_error(self) -> StoreError {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match self {
            Failure::Sqlite(rusqlite::Error::SqliteFailure(code, message))
                if matches!(code.code, DatabaseCorrupt | NotADatabase) =>
            {
                let message = message.unwrap_or_else(|| code.to_string());
                StoreError::Corrupt(format!("sqlite: {message}"))
            }
            Failure::Sqlite(error) => StoreError::Unavailable(format!("sqlite: {error}")),
            Failure::Io(error) => StoreError::Unavailable(format!("io: {error}")),
            Failure::Store(error) => error,
        }
    }
}

/// Runs one store operation, turning what failed into a [`StoreError`].
fn run<T>(operation: impl FnOnce() -> Result<T, Failure>) -> Result<T, StoreError> {
    operation().map_err(Failure::into_store_error)
}

fn corrupt(what: impl std::fmt::Display) -> Failure {
    Failure::Store(StoreError::Corrupt(what.to_string()))
}

pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    /// A second connection for reads of whole push records: in WAL mode it reads beside the
    /// writer's commits, so that reading a hundred pushes to ten million accounts (125 MB of
    /// audiences, a second) for the console does not hold up the next push.
    reader: Mutex<Connection>,
    snapshot_dir: PathBuf,
    /// Held while a snapshot is written, so an older one never replaces a newer one.
    writing_snapshot: Mutex<()>,
    checkpointer: Checkpointer,
}

impl SqliteStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_checkpointing_every(data_dir, CHECKPOINT_EVERY)
    }

    fn open_checkpointing_every(data_dir: &Path, every: Duration) -> Result<Self, StoreError> {
        run(|| {
            fs::create_dir_all(data_dir)?;
            let snapshot_dir = data_dir.join("snapshots");
            fs::create_dir_all(&snapshot_dir)?;
            let mut connection = Connection::open(data_dir.join("crier.db"))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "NORMAL")?;
            connection.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
            connection.pragma_update(
                None,
                "wal_autocheckpoint",
                WAL_PAGES_BEFORE_INLINE_CHECKPOINT,
            )?;
            connection.busy_timeout(Duration::from_secs(5))?;
            schema::migrate(&mut connection, &snapshot_dir)?;
            let connection = Arc::new(Mutex::new(connection));
            let checkpointer =
                Checkpointer::start(&data_dir.join("crier.db"), Arc::clone(&connection), every)?;
            let reader = Connection::open(data_dir.join("crier.db"))?;
            reader.pragma_update(None, "query_only", true)?;
            reader.busy_timeout(Duration::from_secs(5))?;
            Ok(SqliteStore {
                connection,
                reader: Mutex::new(reader),
                snapshot_dir,
                writing_snapshot: Mutex::new(()),
                checkpointer,
            })
        })
    }

    fn snapshot_path(&self, app: u64) -> PathBuf {
        self.snapshot_dir.join(format!("app-{app}.snap"))
    }
}

fn bitmap_from(bytes: &[u8], what: impl std::fmt::Display) -> Result<RoaringBitmap, Failure> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn bitmap_bytes(bitmap: &RoaringBitmap) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut bytes)?;
    Ok(bytes)
}

impl Store for SqliteStore {
    fn dir_head(&self, app: u64) -> Result<u64, StoreError> {
        run(|| directory::dir_head(self, app))
    }

    fn append_dir_ops(
        &self,
        app: u64,
        expected_head: u64,
        ops: &[DirOp],
    ) -> Result<u64, StoreError> {
        run(|| directory::append_dir_ops(self, app, expected_head, ops))
    }

    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError> {
        run(|| directory::read_dir_ops(self, app, after_seq, each))
    }

    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        run(|| directory::save_dir_snapshot(self, app, seq, write))
    }

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        run(|| directory::load_dir_snapshot(self, app))
    }

    fn try_accept_push(
        &self,
        push: &PushRecord,
        fingerprint: u64,
        rules: &PushRules,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<PushAcceptance, StoreError> {
        run(|| pushes::try_accept_push(self, push, fingerprint, rules, notify_targets))
    }

    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError> {
        run(|| pushes::push_summary(self, app, task_id))
    }

    fn push_record(&self, app: u64, task_id: &str) -> Result<Option<PushRecord>, StoreError> {
        run(|| pushes::push_record(self, app, task_id))
    }

    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError> {
        run(|| pushes::pushes_since(self, app, since_ms))
    }

    fn push_ids_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushId>, StoreError> {
        run(|| pushes::push_ids_since(self, app, since_ms))
    }

    fn revoke_push(
        &self,
        app: u64,
        task_id: &str,
        now_ms: u64,
        overwrite: Option<&str>,
    ) -> Result<RevokeOutcome, StoreError> {
        run(|| pushes::revoke_push(self, app, task_id, now_ms, overwrite))
    }

    fn revoked_since(&self, app: u64, since_ms: u64) -> Result<Vec<String>, StoreError> {
        run(|| pushes::revoked_since(self, app, since_ms))
    }

    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError> {
        run(|| pushes::push_counts(self, app, since_ms))
    }

    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError> {
        run(|| pushes::append_acks(self, app, acks))
    }

    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError> {
        run(|| pushes::add_delivery_counts(self, app, counts))
    }

    fn load_delivery_counts(
        &self,
        app: u64,
    ) -> Result<HashMap<String, DeliveryCounts>, StoreError> {
        run(|| pushes::load_delivery_counts(self, app))
    }

    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError> {
        run(|| pushes::load_acks(self, app))
    }

    fn acks_since(
        &self,
        app: u64,
        after: u64,
    ) -> Result<(u64, Vec<(String, RoaringBitmap)>), StoreError> {
        run(|| pushes::acks_since(self, app, after))
    }

    fn append_marks(
        &self,
        app: u64,
        at_ms: u64,
        marks: &[(String, MarkStage, RoaringBitmap)],
    ) -> Result<(), StoreError> {
        run(|| marks::append_marks(self, app, at_ms, marks))
    }

    fn push_marks(&self, app: u64, task_id: &str) -> Result<Vec<PushMark>, StoreError> {
        run(|| marks::push_marks(self, app, task_id))
    }

    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError> {
        run(|| pushes::purge_pushes(self, app, expired_before_ms, created_before_ms))
    }

    fn flush(&self) -> Result<(), StoreError> {
        run(|| {
            self.connection
                .lock()
                .pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
            Ok(())
        })
    }
}
