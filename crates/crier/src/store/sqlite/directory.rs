//! The directory log of each app, numbered densely per app, and its snapshot files.
//!
//! `dir_heads` holds per app the head of the log (its last seq, or the snapshot's when the
//! log is empty), the seq of the stored snapshot, and `forgotten_through`: the log is kept
//! only after it. Saving a snapshot cuts the log up to the previous snapshot's seq, so a
//! reader (another node) behind by up to one snapshot interval can still catch up from the
//! log; one further behind gets `Conflict` and must load the snapshot again.
//!
//! Snapshots are large blobs rewritten whole, so they live in plain files (written aside,
//! fsynced, renamed) rather than in pages of the database.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{corrupt, Failure, SqliteStore};
use crate::directory::DirOp;
use crate::store::{StoreError, StoredSnapshot};

/// Snapshot file header: magic and the last directory write the snapshot includes.
const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"CRIERSNP";

pub(super) fn read_snapshot_header(path: &Path, reader: &mut impl Read) -> Result<u64, Failure> {
    let mut header = [0u8; 16];
    reader.read_exact(&mut header)?;
    if &header[..8] != SNAPSHOT_FILE_MAGIC {
        return Err(corrupt(format!(
            "{} is not a crier snapshot file",
            path.display()
        )));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[8..]);
    Ok(u64::from_le_bytes(seq))
}

/// What `dir_heads` holds for an app; a new app has a head of 0 and nothing forgotten.
#[derive(Default)]
struct DirHead {
    head: u64,
    snapshot_seq: Option<u64>,
    forgotten_through: u64,
}

fn dir_head_of(connection: &Connection, app: u64) -> Result<DirHead, Failure> {
    let head = connection
        .query_row(
            "SELECT head, snapshot_seq, forgotten_through FROM dir_heads WHERE app = ?1",
            params![app as i64],
            |row| {
                Ok(DirHead {
                    head: row.get::<_, i64>(0)? as u64,
                    snapshot_seq: row.get::<_, Option<i64>>(1)?.map(|seq| seq as u64),
                    forgotten_through: row.get::<_, i64>(2)? as u64,
                })
            },
        )
        .optional()?;
    Ok(head.unwrap_or_default())
}

pub(super) fn dir_head(store: &SqliteStore, app: u64) -> Result<u64, Failure> {
    Ok(dir_head_of(&store.connection.lock(), app)?.head)
}

pub(super) fn append_dir_ops(
    store: &SqliteStore,
    app: u64,
    expected_head: u64,
    ops: &[DirOp],
) -> Result<u64, Failure> {
    // Encoded before the connection is taken: a group's records are milliseconds of JSON,
    // which a push waiting for the connection would otherwise wait for too.
    let records = ops
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()
        .map_err(corrupt)?;
    let mut connection = store.connection.lock();
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let head = dir_head_of(&tx, app)?.head;
    if head != expected_head {
        return Err(StoreError::Conflict(format!(
            "the directory log of app {app} is at {head}, not {expected_head}: read the writes after {expected_head} and try again"
        ))
        .into());
    }
    let mut seq = head;
    let mut written = 0;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO dir_log (app, seq, op) VALUES (?1, ?2, ?3)")?;
        for record in &records {
            seq += 1;
            written += record.len();
            insert.execute(params![app as i64, seq as i64, record])?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO dir_heads (app, head) VALUES (?1, ?2)
         ON CONFLICT (app) DO UPDATE SET head = excluded.head",
    )?
    .execute(params![app as i64, seq as i64])?;
    tx.commit()?;
    drop(connection);
    store.checkpointer.wrote(written);
    Ok(seq)
}

pub(super) fn read_dir_ops(
    store: &SqliteStore,
    app: u64,
    after_seq: u64,
    each: &mut dyn FnMut(u64, DirOp),
) -> Result<(), Failure> {
    let mut connection = store.connection.lock();
    // One read transaction: the horizon checked is the one of the rows read.
    let tx = connection.transaction()?;
    let forgotten = dir_head_of(&tx, app)?.forgotten_through;
    if after_seq < forgotten {
        return Err(StoreError::Conflict(format!(
            "the directory log of app {app} is kept only after {forgotten}, and the reader is at {after_seq}: load the snapshot again"
        ))
        .into());
    }
    let mut query =
        tx.prepare("SELECT seq, op FROM dir_log WHERE app = ?1 AND seq > ?2 ORDER BY seq")?;
    let mut rows = query.query(params![app as i64, after_seq as i64])?;
    while let Some(row) = rows.next()? {
        let seq = row.get::<_, i64>(0)? as u64;
        let text: String = row.get(1)?;
        let op = serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("directory write {seq} of app {app}: {e}")))?;
        each(seq, op);
    }
    Ok(())
}

pub(super) fn save_dir_snapshot(
    store: &SqliteStore,
    app: u64,
    seq: u64,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let _writing = store.writing_snapshot.lock();
    let stored = dir_head_of(&store.connection.lock(), app)?.snapshot_seq;
    if stored.is_some_and(|stored| stored >= seq) {
        return Ok(());
    }
    let path = store.snapshot_path(app);
    let temporary = path.with_extension("snap.tmp");
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&temporary)?);
        out.write_all(SNAPSHOT_FILE_MAGIC)?;
        out.write_all(&seq.to_le_bytes())?;
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    fs::rename(&temporary, &path)?;
    File::open(&store.snapshot_dir)?.sync_all()?;
    // Only once the snapshot is durable may the log behind it be cut, and then only up
    // to the snapshot before: a reader that loaded that one can still catch up.
    let forgotten = {
        let mut connection = store.connection.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = dir_head_of(&tx, app)?;
        let forgotten = before
            .snapshot_seq
            .unwrap_or(0)
            .max(before.forgotten_through);
        tx.execute(
        "INSERT INTO dir_heads (app, head, snapshot_seq, forgotten_through) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT (app) DO UPDATE
         SET head = MAX(head, excluded.head), snapshot_seq = MAX(IFNULL(snapshot_seq, 0), excluded.snapshot_seq),
             forgotten_through = excluded.forgotten_through",
            params![app as i64, seq as i64, forgotten as i64],
        )?;
        tx.commit()?;
        forgotten
    };
    forget_log_through(store, app, forgotten)
}

/// Log rows cut per transaction when a snapshot makes them useless.
const LOG_ROWS_CUT_AT_ONCE: i64 = 16;

/// Deletes the log rows up to `forgotten`, a few at a time, letting other commits in between.
///
/// A row of a bulk write holds ~10 KB of overflow pages, which SQLite reads to free; one
/// snapshot interval's rows cut at once held the store for a second at ten million accounts,
/// and every push waited behind it. The horizon (`forgotten_through`) is moved first, so no
/// reader asks for these rows any more, and rows a crash leaves behind go with the next cut.
fn forget_log_through(store: &SqliteStore, app: u64, forgotten: u64) -> Result<(), Failure> {
    loop {
        let cut = store.connection.lock().execute(
            "DELETE FROM dir_log WHERE app = ?1 AND seq <= ?2 AND seq < (
                 SELECT MIN(seq) FROM dir_log WHERE app = ?1) + ?3",
            params![app as i64, forgotten as i64, LOG_ROWS_CUT_AT_ONCE],
        )?;
        if cut == 0 {
            return Ok(());
        }
    }
}

pub(super) fn load_dir_snapshot(
    store: &SqliteStore,
    app: u64,
) -> Result<Option<StoredSnapshot>, Failure> {
    let path = store.snapshot_path(app);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let seq = read_snapshot_header(&path, &mut reader)?;
    Ok(Some(StoredSnapshot {
        seq,
        reader: Box::new(reader),
    }))
}
