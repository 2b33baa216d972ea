//! The background checkpointer: copies the write-ahead log into the database from a connection
//! of its own, so that commits never wait for its fsyncs. In WAL mode a passive checkpoint runs
//! beside commits and blocks none of them.
//!
//! A passive checkpoint beside steady commits never catches up with the last of them, and the
//! log restarts from its beginning only once one has: under a sync and pushes the log grew
//! until a commit ran the inline checkpoint, a 100 ms stall for every write of the store every
//! 5 s. So once the log is long, one last pass runs with the store's commits held; it copies
//! only what was committed since the pass before, and the next commit restarts the log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::Connection;

use super::Failure;

/// How often the background checkpointer copies the write-ahead log into the database. Each
/// checkpoint costs a few milliseconds of CPU and an fsync whatever it copies: every second,
/// that was a tenth of the server's CPU while it pushed to 1,000 clients twice a second.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// Large writes (push audiences, directory log records) wake the background checkpointer early
/// once they add up to this, so that the log never reaches the inline checkpoint while it
/// keeps up. Pushes to ten million scattered accounts (1.25 MB each; a dense audience is kept
/// as runs, a few KB) ten times a second filled 40 MiB in 3 s, and every 32nd push ran the
/// checkpoint itself (100 ms, a second when a directory snapshot was being synced to disk at
/// the same time).
const CHECKPOINT_AFTER_BYTES: u64 = 8 << 20;
/// Log pages (64 MiB, the size the log file is cut back to) past which the checkpointer makes
/// the log restart.
const WAL_PAGES_BEFORE_RESTART: i64 = 16_384;

/// The handle of the background checkpointer; dropping it stops the thread.
pub(super) struct Checkpointer {
    /// Wakes the thread before its period is out; holds one wake-up at most.
    wake: mpsc::SyncSender<()>,
    /// Bytes of large writes since the last wake-up.
    written: AtomicU64,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `database`; `writes` is the store's
    /// connection, held for the last pass of a restart. Runs every `every`, and when woken by
    /// [`Checkpointer::wrote`].
    pub(super) fn start(
        database: &Path,
        writes: Arc<Mutex<Connection>>,
        every: Duration,
    ) -> Result<Checkpointer, Failure> {
        let files = LogFiles::of(database);
        let connection = Connection::open(database)?;
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("crier-checkpoint".into())
            .spawn(move || {
                while let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = woken.recv_timeout(every)
                {
                    if let Err(failure) = checkpoint(&connection, &files, &writes) {
                        let error = failure.into_store_error();
                        tracing::warn!(%error, "background checkpoint failed; commits will checkpoint");
                    }
                }
            })?;
        Ok(Checkpointer {
            wake,
            written: AtomicU64::new(0),
        })
    }

    /// Counts a large write (a push's audience, a directory log record) towards the next
    /// wake-up.
    pub(super) fn wrote(&self, bytes: usize) {
        let before = self.written.fetch_add(bytes as u64, Ordering::Relaxed);
        if before + bytes as u64 >= CHECKPOINT_AFTER_BYTES {
            self.written.store(0, Ordering::Relaxed);
            // Full: a wake-up is already waiting, which this one would only repeat.
            let _ = self.wake.try_send(());
        }
    }
}

/// The database file and its write-ahead log.
struct LogFiles {
    database: PathBuf,
    log: PathBuf,
}

impl LogFiles {
    fn of(database: &Path) -> LogFiles {
        let mut log = database.as_os_str().to_owned();
        log.push("-wal");
        LogFiles {
            database: database.to_owned(),
            log: log.into(),
        }
    }

    /// Flushes both files to disk, as a checkpoint does before and after it copies.
    fn sync(&self) -> std::io::Result<()> {
        File::open(&self.log)?.sync_data()?;
        File::open(&self.database)?.sync_data()
    }
}

/// What a passive pass saw: the log's length and how much of it is in the database, in pages.
struct Pass {
    log: i64,
    copied: i64,
}

fn passive(connection: &Connection) -> rusqlite::Result<Pass> {
    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Pass {
            log: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

/// One background checkpoint: a passive pass, and when the log is long enough to restart, a
/// last pass with commits held.
///
/// The held pass syncs the log before copying and the database after, and under a sync with
/// pushes those two fsyncs took 25-53 ms, every write of the store waiting: they flushed what
/// was written since the first pass's syncs. Syncing both files first, commits still running,
/// left the held pass 4-10 ms.
///
/// When a reader's snapshot kept the first pass from copying the whole log, nothing is held:
/// the held pass could not copy past that snapshot either, and copying what was left took
/// 118 ms with commits held. The next wake-up tries again.
fn checkpoint(
    connection: &Connection,
    files: &LogFiles,
    writes: &Mutex<Connection>,
) -> Result<(), Failure> {
    let first = passive(connection)?;
    if first.log < WAL_PAGES_BEFORE_RESTART || first.copied < first.log {
        return Ok(());
    }
    files.sync()?;
    let _no_commits = writes.lock();
    passive(connection)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in WAL mode whose log is past the restart point, the inline checkpoint off.
    fn long_log(dir: &Path) -> (PathBuf, Connection) {
        let database = dir.join("test.db");
        let writer = Connection::open(&database).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE records (body BLOB)")
            .unwrap();
        let page = vec![7u8; 4_000];
        for _ in 0..WAL_PAGES_BEFORE_RESTART + 1_000 {
            writer
                .execute("INSERT INTO records (body) VALUES (?1)", [&page])
                .unwrap();
        }
        (database, writer)
    }

    fn log_pages(connection: &Connection) -> i64 {
        passive(connection).unwrap().log
    }

    #[test]
    fn commits_are_held_only_while_a_reader_leaves_the_whole_log_copyable() {
        let dir = tempfile::tempdir().unwrap();
        let (database, writer) = long_log(dir.path());
        let files = LogFiles::of(&database);
        let checkpointer = Connection::open(&database).unwrap();
        let writes = Arc::new(Mutex::new(writer));

        // A reader whose snapshot predates the last commit: no pass can copy the whole log.
        let reader = Connection::open(&database).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM records;")
            .unwrap();
        writes
            .lock()
            .execute("INSERT INTO records (body) VALUES (x'00')", [])
            .unwrap();
        // The commits stay held by this test: a checkpoint that tried to hold them would never
        // return.
        let held_by_test = writes.lock();
        let (done, finished) = mpsc::channel();
        let checkpointing = std::thread::spawn({
            let writes = Arc::clone(&writes);
            move || {
                let checkpointed = checkpoint(&checkpointer, &files, &writes).is_ok();
                let _ = done.send(checkpointed);
                (checkpointer, files)
            }
        });
        let returned = finished.recv_timeout(Duration::from_secs(60));
        drop(held_by_test);
        assert_eq!(
            returned,
            Ok(true),
            "with the log pinned by a reader, the checkpoint waited for the commits"
        );
        let (checkpointer, files) = checkpointing.join().unwrap();

        // Once the reader is gone, the checkpoint copies everything and the next commit starts
        // the log over.
        reader.execute_batch("COMMIT").unwrap();
        assert!(checkpoint(&checkpointer, &files, &writes).is_ok());
        writes
            .lock()
            .execute("INSERT INTO records (body) VALUES (x'00')", [])
            .unwrap();
        let pages = log_pages(&checkpointer);
        assert!(
            pages < 10,
            "the log did not restart: {pages} pages after the checkpoint"
        );
    }
}
