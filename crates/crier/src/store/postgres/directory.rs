//! The directory log of each app, numbered densely per app, and its snapshots in chunks.
//!
//! `dir_heads` holds per app the head of the log, the stored snapshot (its seq, id and number
//! of chunks) and `forgotten_through`, with the meaning they have in the SQLite store. An
//! append compare-and-sets `head` on that row in the transaction that inserts the writes:
//! a second node appending at the same head waits for the row, then finds the head moved and
//! answers `Conflict` (and the `(app, seq)` key would refuse its rows anyway).
//!
//! A snapshot of ten million accounts is about 500 MB, so it is written as `CHUNK_BYTES`
//! rows as the directory produces it, in one transaction that adopts it at the end, and read
//! back chunk by chunk inside one read-only transaction, whose view keeps the chunks even if a
//! newer snapshot replaces them meanwhile.

use std::io::{self, Read, Write};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, Transaction};

use super::{column, corrupt, Failure, PooledClient};
use crate::directory::DirOp;
use crate::store::{StoreError, StoredSnapshot};

/// Bytes per snapshot chunk row: large enough that a 500 MB snapshot is a few hundred rows,
/// small enough that one row in flight (twice, while encoded) costs little memory.
pub(super) const CHUNK_BYTES: usize = 4 << 20;

/// What `dir_heads` holds for an app; a new app has a head of 0 and nothing forgotten.
#[derive(Default)]
struct DirHead {
    head: u64,
    snapshot_seq: Option<u64>,
    snapshot_id: Option<i64>,
    forgotten_through: u64,
}

fn dir_head_of(client: &mut impl GenericClient, app: u64, lock: bool) -> Result<DirHead, Failure> {
    let sql = if lock {
        "SELECT head, snapshot_seq, snapshot_id, forgotten_through FROM dir_heads WHERE app = $1 FOR UPDATE"
    } else {
        "SELECT head, snapshot_seq, snapshot_id, forgotten_through FROM dir_heads WHERE app = $1"
    };
    let Some(row) = client.query_opt(sql, &[&(app as i64)])? else {
        return Ok(DirHead::default());
    };
    Ok(DirHead {
        head: column::<i64>(&row, 0)? as u64,
        snapshot_seq: column::<Option<i64>>(&row, 1)?.map(|seq| seq as u64),
        snapshot_id: column(&row, 2)?,
        forgotten_through: column::<i64>(&row, 3)? as u64,
    })
}

pub(super) fn dir_head(client: &mut Client, app: u64) -> Result<u64, Failure> {
    Ok(dir_head_of(client, app, false)?.head)
}

fn stale_head(app: u64, head: u64, expected_head: u64) -> Failure {
    Failure::Store(StoreError::Conflict(format!(
        "the directory log of app {app} is at {head}, not {expected_head}: read the writes after {expected_head} and try again"
    )))
}

pub(super) fn append_dir_ops(
    client: &mut Client,
    app: u64,
    expected_head: u64,
    ops: &[DirOp],
) -> Result<u64, Failure> {
    // A stale head is told without a transaction; the compare-and-set below is what decides.
    let head = dir_head_of(client, app, false)?.head;
    if head != expected_head {
        return Err(stale_head(app, head, expected_head));
    }
    if ops.is_empty() {
        return Ok(head);
    }
    let new_head = expected_head + ops.len() as u64;
    let seqs: Vec<i64> = (expected_head + 1..=new_head)
        .map(|seq| seq as i64)
        .collect();
    let texts = ops
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<String>, _>>()
        .map_err(corrupt)?;
    let mut tx = client.transaction()?;
    // Compare-and-set: the row stays locked until commit, and a concurrent append waits for
    // it, then finds the head moved (READ COMMITTED re-checks the condition on the new row).
    let moved = if expected_head == 0 {
        tx.execute(
            "INSERT INTO dir_heads (app, head) VALUES ($1, $2)
             ON CONFLICT (app) DO UPDATE SET head = excluded.head WHERE dir_heads.head = 0",
            &[&(app as i64), &(new_head as i64)],
        )?
    } else {
        tx.execute(
            "UPDATE dir_heads SET head = $3 WHERE app = $1 AND head = $2",
            &[&(app as i64), &(expected_head as i64), &(new_head as i64)],
        )?
    };
    if moved == 0 {
        drop(tx);
        let head = dir_head_of(client, app, false)?.head;
        return Err(stale_head(app, head, expected_head));
    }
    tx.execute(
        "INSERT INTO dir_log (app, seq, op) SELECT $1, seq, op FROM UNNEST($2::BIGINT[], $3::TEXT[]) AS w (seq, op)",
        &[&(app as i64), &seqs, &texts],
    )?;
    tx.commit()?;
    Ok(new_head)
}

pub(super) fn read_dir_ops(
    client: &mut Client,
    app: u64,
    after_seq: u64,
    each: &mut dyn FnMut(u64, DirOp),
) -> Result<(), Failure> {
    // One view for both reads: the horizon checked is the one of the rows read.
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    let forgotten = dir_head_of(&mut tx, app, false)?.forgotten_through;
    if after_seq < forgotten {
        return Err(StoreError::Conflict(format!(
            "the directory log of app {app} is kept only after {forgotten}, and the reader is at {after_seq}: load the snapshot again"
        ))
        .into());
    }
    let params: [&(dyn postgres::types::ToSql + Sync); 2] = [&(app as i64), &(after_seq as i64)];
    // Streamed: a reader far behind does not hold the whole log in memory.
    let mut rows = tx.query_raw(
        "SELECT seq, op FROM dir_log WHERE app = $1 AND seq > $2 ORDER BY seq",
        params,
    )?;
    while let Some(row) = rows.next()? {
        let seq = column::<i64>(&row, 0)? as u64;
        let text: &str = column(&row, 1)?;
        let op = serde_json::from_str(text)
            .map_err(|e| corrupt(format!("directory write {seq} of app {app}: {e}")))?;
        each(seq, op);
    }
    drop(rows);
    tx.commit()?;
    Ok(())
}

/// Writes what it is given as chunk rows of one snapshot, `CHUNK_BYTES` at a time.
struct ChunkWriter<'t, 'c> {
    tx: &'t mut Transaction<'c>,
    snapshot_id: i64,
    chunks: i32,
    buffer: Vec<u8>,
    /// The database error behind an `io::Error` handed to the snapshot writer.
    failed: Option<postgres::Error>,
}

impl ChunkWriter<'_, '_> {
    fn store_chunk(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let stored = self.tx.execute(
            "INSERT INTO dir_snapshot_chunks (snapshot_id, chunk, bytes) VALUES ($1, $2, $3)",
            &[&self.snapshot_id, &self.chunks, &self.buffer],
        );
        match stored {
            Ok(_) => {
                self.chunks += 1;
                self.buffer.clear();
                Ok(())
            }
            Err(error) => {
                self.failed = Some(error);
                Err(io::Error::other("storing a snapshot chunk failed"))
            }
        }
    }
}

impl Write for ChunkWriter<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("storing a snapshot chunk failed"));
        }
        let taken = bytes.len().min(CHUNK_BYTES - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CHUNK_BYTES {
            self.store_chunk()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(super) fn save_dir_snapshot(
    client: &mut Client,
    app: u64,
    seq: u64,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<(), Failure> {
    let stored = dir_head_of(client, app, false)?.snapshot_seq;
    if stored.is_some_and(|stored| stored >= seq) {
        return Ok(());
    }
    let mut tx = client.transaction()?;
    let snapshot_id: i64 = column(&tx.query_one("SELECT nextval('dir_snapshot_ids')", &[])?, 0)?;
    let mut chunks = ChunkWriter {
        tx: &mut tx,
        snapshot_id,
        chunks: 0,
        buffer: Vec::with_capacity(CHUNK_BYTES),
        failed: None,
    };
    let written = write(&mut chunks).and_then(|()| chunks.store_chunk());
    if let Some(error) = chunks.failed.take() {
        return Err(error.into());
    }
    written?;
    let chunk_count = chunks.chunks;
    // Only now is the app's row locked, and only until commit: appends wait for the adoption,
    // not for the writing.
    tx.execute(
        "INSERT INTO dir_heads (app, head) VALUES ($1, 0) ON CONFLICT (app) DO NOTHING",
        &[&(app as i64)],
    )?;
    let before = dir_head_of(&mut tx, app, true)?;
    if before.snapshot_seq.is_some_and(|stored| stored >= seq) {
        // Another node stored one at least as new meanwhile; ours rolls back.
        return Ok(());
    }
    // The log is cut only up to the snapshot before: a reader that loaded that one can still
    // catch up.
    let forgotten = before
        .snapshot_seq
        .unwrap_or(0)
        .max(before.forgotten_through);
    tx.execute(
        "DELETE FROM dir_log WHERE app = $1 AND seq <= $2",
        &[&(app as i64), &(forgotten as i64)],
    )?;
    if let Some(old) = before.snapshot_id {
        tx.execute(
            "DELETE FROM dir_snapshot_chunks WHERE snapshot_id = $1",
            &[&old],
        )?;
    }
    tx.execute(
        "UPDATE dir_heads SET head = GREATEST(head, $2), snapshot_seq = $2, snapshot_id = $3,
                snapshot_chunks = $4, forgotten_through = $5
         WHERE app = $1",
        &[
            &(app as i64),
            &(seq as i64),
            &snapshot_id,
            &chunk_count,
            &(forgotten as i64),
        ],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn load_dir_snapshot(
    mut client: PooledClient,
    app: u64,
) -> Result<Option<StoredSnapshot>, Failure> {
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
    // From here on, dropping the reader (on any return) ends the transaction.
    let mut reader = SnapshotReader {
        client: Some(client),
        snapshot_id: 0,
        next_chunk: 0,
        chunks: 0,
        chunk: Vec::new(),
        position: 0,
    };
    let Some(client) = reader.client.as_deref_mut() else {
        return Ok(None); // Not reached: the reader was just given the connection.
    };
    let row = client.query_opt(
        "SELECT snapshot_seq, snapshot_id, snapshot_chunks FROM dir_heads
         WHERE app = $1 AND snapshot_id IS NOT NULL",
        &[&(app as i64)],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let seq = column::<i64>(&row, 0)? as u64;
    reader.snapshot_id = column(&row, 1)?;
    reader.chunks = column(&row, 2)?;
    Ok(Some(StoredSnapshot {
        seq,
        reader: Box::new(reader),
    }))
}

/// Reads a snapshot's chunks in order, one in memory at a time, inside the read-only
/// transaction begun by `load_dir_snapshot`, which it ends when read to the end or dropped.
struct SnapshotReader {
    /// `None` once the transaction ended.
    client: Option<PooledClient>,
    snapshot_id: i64,
    next_chunk: i32,
    chunks: i32,
    chunk: Vec<u8>,
    position: usize,
}

impl SnapshotReader {
    /// Loads the next chunk; `false` at the end, where the transaction commits.
    fn next(&mut self) -> io::Result<bool> {
        let Some(client) = self.client.as_mut() else {
            return Ok(false);
        };
        if self.next_chunk == self.chunks {
            client.batch_execute("COMMIT").map_err(io::Error::other)?;
            self.client = None;
            return Ok(false);
        }
        let row = client
            .query_opt(
                "SELECT bytes FROM dir_snapshot_chunks WHERE snapshot_id = $1 AND chunk = $2",
                &[&self.snapshot_id, &self.next_chunk],
            )
            .map_err(io::Error::other)?;
        let Some(row) = row else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "chunk {} of snapshot {} is missing",
                    self.next_chunk, self.snapshot_id
                ),
            ));
        };
        self.chunk = row.try_get(0).map_err(io::Error::other)?;
        self.position = 0;
        self.next_chunk += 1;
        Ok(true)
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.position == self.chunk.len() {
            if !self.next()? {
                return Ok(0);
            }
        }
        let available = &self.chunk[self.position..];
        let taken = available.len().min(out.len());
        out[..taken].copy_from_slice(&available[..taken]);
        self.position += taken;
        Ok(taken)
    }
}

impl Drop for SnapshotReader {
    fn drop(&mut self) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        // Abandoned part-way: end the transaction before the connection goes back to the
        // pool, off any async worker thread (a call blocks on the connection's runtime).
        // If it fails, the connection is broken, and the pool drops it instead of reusing it.
        let mut rollback = move || drop(client.batch_execute("ROLLBACK"));
        if tokio::runtime::Handle::try_current().is_err() {
            rollback();
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("crier-pg-rollback".into())
            .spawn(rollback);
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot end an abandoned snapshot read");
        }
    }
}
