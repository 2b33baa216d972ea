//! The embedded default: SQLite in WAL mode under the data directory, plus one snapshot file
//! per app beside it.
//!
//! Why SQLite: one file, no server to install, transactions that survive `kill -9`, and a
//! storage engine millions of deployments trust. WAL with `synchronous=NORMAL` makes each
//! commit a sequential append that survives a process crash; only a power loss can lose the
//! last commits. Directory snapshots are large blobs rewritten whole, so they live in plain
//! files (written aside, fsynced, renamed) rather than in pages of the database.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use rusqlite::{params, Connection, OptionalExtension};

use super::PushRecord;
use super::{DeliveryCounts, PushCounts, PushSummary, Store, StoreError, StoredSnapshot};
use crate::directory::DirOp;

/// Schema migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE dir_ops (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        op TEXT NOT NULL
    );
    CREATE INDEX dir_ops_by_app ON dir_ops (app, seq);
    CREATE TABLE pushes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        lifetime_secs INTEGER NOT NULL,
        from_account TEXT NOT NULL,
        msg_random INTEGER NOT NULL,
        msg_body TEXT NOT NULL,
        offline_push_info TEXT,
        condition TEXT,
        audience_size INTEGER NOT NULL,
        audience BLOB NOT NULL,
        UNIQUE (app, task_id)
    );
    CREATE INDEX pushes_by_app_time ON pushes (app, created_ms);
"#,
    r#"
    CREATE TABLE acks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        accounts BLOB NOT NULL
    );
    CREATE INDEX acks_by_task ON acks (app, task_id);
"#,
    r#"
    CREATE TABLE devices (
        app INTEGER NOT NULL,
        platform TEXT NOT NULL,
        token TEXT NOT NULL,
        account TEXT NOT NULL,
        PRIMARY KEY (app, platform, token)
    ) WITHOUT ROWID;
    CREATE INDEX devices_by_account ON devices (app, account);
    CREATE TABLE notify_jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        targets BLOB NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{}',
        done INTEGER NOT NULL DEFAULT 0,
        UNIQUE (app, task_id)
    );
"#,
    r#"
    CREATE TABLE delivery_counts (
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        online INTEGER NOT NULL,
        offline INTEGER NOT NULL,
        PRIMARY KEY (app, task_id)
    ) WITHOUT ROWID;
"#,
];

/// Snapshot file header: magic and the last directory write the snapshot includes.
const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"CRIERSNP";

/// How often the background checkpointer copies the write-ahead log into the database. Each
/// checkpoint costs a few milliseconds of CPU and an fsync whatever it copies: every second,
/// that was a tenth of the server's CPU while it pushed to 1,000 clients twice a second.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// A commit checkpoints on its own thread only past this many log pages (40 MiB): a safety
/// net for when the background checkpointer cannot keep up with a bulk load. SQLite's default
/// is 1,000 pages, which put a checkpoint (two fsyncs, 5-20 ms) on the path of one `im_push` in
/// about two hundred.
const WAL_PAGES_BEFORE_INLINE_CHECKPOINT: u32 = 10_000;

pub struct SqliteStore {
    pub(super) connection: Mutex<Connection>,
    snapshot_dir: PathBuf,
    /// Dropping it stops the checkpointer.
    _checkpointer: mpsc::Sender<()>,
}

impl SqliteStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_checkpointing_every(data_dir, CHECKPOINT_EVERY)
    }

    fn open_checkpointing_every(data_dir: &Path, every: Duration) -> Result<Self, StoreError> {
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
        migrate(&mut connection)?;
        Ok(SqliteStore {
            connection: Mutex::new(connection),
            snapshot_dir,
            _checkpointer: start_checkpointer(Connection::open(data_dir.join("crier.db"))?, every)?,
        })
    }

    fn snapshot_path(&self, app: u64) -> PathBuf {
        self.snapshot_dir.join(format!("app-{app}.snap"))
    }
}

/// Checkpoints from a connection of its own, so that writers never wait for the fsyncs: in WAL
/// mode a passive checkpoint runs beside commits and blocks none of them.
fn start_checkpointer(
    connection: Connection,
    every: Duration,
) -> Result<mpsc::Sender<()>, StoreError> {
    let (stop, stopped) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("crier-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let checkpointed =
                    connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(error) = checkpointed {
                    tracing::warn!(%error, "background checkpoint failed; commits will checkpoint");
                }
            }
        })?;
    Ok(stop)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {applied}, newer than this build knows ({}); run a newer crier",
            MIGRATIONS.len()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn push_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(PushRecord, Vec<u8>)> {
    let record = PushRecord {
        app: row.get::<_, i64>(0)? as u64,
        task_id: row.get(1)?,
        created_ms: row.get::<_, i64>(2)? as u64,
        lifetime_secs: row.get(3)?,
        from_account: row.get(4)?,
        msg_random: row.get(5)?,
        msg_body: row.get(6)?,
        offline_push_info: row.get(7)?,
        condition: row.get(8)?,
        audience: RoaringBitmap::new(),
    };
    Ok((record, row.get(9)?))
}

impl Store for SqliteStore {
    fn append_dir_ops(&self, app: u64, ops: &[DirOp]) -> Result<u64, StoreError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        let mut last = 0;
        {
            let mut insert = tx.prepare_cached("INSERT INTO dir_ops (app, op) VALUES (?1, ?2)")?;
            for op in ops {
                let text =
                    serde_json::to_string(op).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                insert.execute(params![app as i64, text])?;
                last = tx.last_insert_rowid() as u64;
            }
        }
        tx.commit()?;
        Ok(last)
    }

    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError> {
        let connection = self.connection.lock();
        let mut query = connection
            .prepare("SELECT seq, op FROM dir_ops WHERE app = ?1 AND seq > ?2 ORDER BY seq")?;
        let mut rows = query.query(params![app as i64, after_seq as i64])?;
        while let Some(row) = rows.next()? {
            let seq = row.get::<_, i64>(0)? as u64;
            let text: String = row.get(1)?;
            let op = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("directory write {seq}: {e}")))?;
            each(seq, op);
        }
        Ok(())
    }

    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let path = self.snapshot_path(app);
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
        File::open(&self.snapshot_dir)?.sync_all()?;
        // Only once the snapshot is durable may the writes it covers go.
        self.connection.lock().execute(
            "DELETE FROM dir_ops WHERE app = ?1 AND seq <= ?2",
            params![app as i64, seq as i64],
        )?;
        Ok(())
    }

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        let file = match File::open(self.snapshot_path(app)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; 16];
        reader.read_exact(&mut header)?;
        if &header[..8] != SNAPSHOT_FILE_MAGIC {
            return Err(StoreError::Corrupt(format!(
                "{} is not a crier snapshot file",
                self.snapshot_path(app).display()
            )));
        }
        let seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        Ok(Some(StoredSnapshot {
            seq,
            reader: Box::new(reader),
        }))
    }

    fn insert_push(
        &self,
        push: &PushRecord,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<(), StoreError> {
        let mut audience = Vec::with_capacity(push.audience.serialized_size());
        push.audience.serialize_into(&mut audience)?;
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        // Cached: the statement would otherwise be compiled anew for every push.
        tx.prepare_cached(
            "INSERT INTO pushes (app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                                 offline_push_info, condition, audience_size, audience)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
                push.app as i64,
                push.task_id,
                push.created_ms as i64,
                push.lifetime_secs,
                push.from_account,
                push.msg_random,
                push.msg_body,
                push.offline_push_info,
                push.condition,
                push.audience.len() as i64,
                audience
            ])?;
        if let Some(targets) = notify_targets {
            let mut blob = Vec::with_capacity(targets.serialized_size());
            targets.serialize_into(&mut blob)?;
            tx.execute(
                "INSERT INTO notify_jobs (app, task_id, targets) VALUES (?1, ?2, ?3)",
                params![push.app as i64, push.task_id, blob],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError> {
        let connection = self.connection.lock();
        let summary = connection
            .query_row(
                "SELECT created_ms, lifetime_secs, audience_size FROM pushes WHERE app = ?1 AND task_id = ?2",
                params![app as i64, task_id],
                |row| {
                    Ok(PushSummary {
                        created_ms: row.get::<_, i64>(0)? as u64,
                        lifetime_secs: row.get(1)?,
                        audience_size: row.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()?;
        Ok(summary)
    }

    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError> {
        let connection = self.connection.lock();
        let mut query = connection.prepare(
            "SELECT app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body, offline_push_info,
                    condition, audience
             FROM pushes WHERE app = ?1 AND created_ms >= ?2 ORDER BY seq",
        )?;
        let rows = query.query_map(params![app as i64, since_ms as i64], push_from_row)?;
        let mut pushes = Vec::new();
        for row in rows {
            let (mut record, audience) = row?;
            record.audience = RoaringBitmap::deserialize_from(audience.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("audience of {}: {e}", record.task_id)))?;
            pushes.push(record);
        }
        Ok(pushes)
    }

    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError> {
        let connection = self.connection.lock();
        let since_count: i64 = connection.query_row(
            "SELECT COUNT(*) FROM pushes WHERE app = ?1 AND created_ms >= ?2",
            params![app as i64, since_ms as i64],
            |row| row.get(0),
        )?;
        let last: Option<i64> = connection
            .query_row(
                "SELECT MAX(created_ms) FROM pushes WHERE app = ?1",
                params![app as i64],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(PushCounts {
            since_count: since_count as u64,
            last_created_ms: last.map(|ms| ms as u64),
        })
    }

    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO acks (app, task_id, accounts) VALUES (?1, ?2, ?3)")?;
            for (task_id, accounts) in acks {
                let mut blob = Vec::with_capacity(accounts.serialized_size());
                accounts.serialize_into(&mut blob)?;
                insert.execute(params![app as i64, task_id, blob])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        {
            let mut add = tx.prepare_cached(
                "INSERT INTO delivery_counts (app, task_id, online, offline) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, task_id) DO UPDATE
                 SET online = online + excluded.online, offline = offline + excluded.offline",
            )?;
            for (task_id, added) in counts {
                add.execute(params![
                    app as i64,
                    task_id,
                    added.online as i64,
                    added.offline as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn load_delivery_counts(
        &self,
        app: u64,
    ) -> Result<HashMap<String, DeliveryCounts>, StoreError> {
        let connection = self.connection.lock();
        let mut query = connection
            .prepare("SELECT task_id, online, offline FROM delivery_counts WHERE app = ?1")?;
        let counts = query
            .query_map(params![app as i64], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    DeliveryCounts {
                        online: row.get::<_, i64>(1)? as u64,
                        offline: row.get::<_, i64>(2)? as u64,
                    },
                ))
            })?
            .collect::<Result<_, _>>()?;
        Ok(counts)
    }

    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError> {
        let connection = self.connection.lock();
        let mut query = connection.prepare("SELECT task_id, accounts FROM acks WHERE app = ?1")?;
        let mut rows = query.query(params![app as i64])?;
        let mut acks: HashMap<String, RoaringBitmap> = HashMap::new();
        while let Some(row) = rows.next()? {
            let task_id: String = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            let accounts = RoaringBitmap::deserialize_from(blob.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("acks of {task_id}: {e}")))?;
            *acks.entry(task_id).or_default() |= accounts;
        }
        Ok(acks)
    }

    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        let purged = tx.execute(
            "DELETE FROM pushes WHERE app = ?1 AND created_ms + lifetime_secs * 1000 < ?2 AND created_ms < ?3",
            params![app as i64, expired_before_ms as i64, created_before_ms as i64],
        )?;
        // A count batch in flight can bring a row back for a push purged here; the next purge
        // takes it, and no report shows it meanwhile (the push itself is gone).
        for table in ["acks", "delivery_counts", "notify_jobs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE app = ?1 AND task_id NOT IN (SELECT task_id FROM pushes WHERE app = ?1)"),
                params![app as i64],
            )?;
        }
        tx.commit()?;
        Ok(purged as u64)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.connection
            .lock()
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_writes_and_snapshots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let op = DirOp::Import {
            accounts: vec!["a".into()],
        };
        let first = store.append_dir_ops(7, &[op.clone(), op.clone()]).unwrap();
        store.append_dir_ops(8, std::slice::from_ref(&op)).unwrap();
        store
            .save_dir_snapshot(7, first, &mut |out| out.write_all(b"state"))
            .unwrap();
        let later = store.append_dir_ops(7, std::slice::from_ref(&op)).unwrap();
        assert!(
            later > first,
            "sequence numbers are never reused after the log is cut"
        );

        let mut snapshot = store.load_dir_snapshot(7).unwrap().unwrap();
        let mut bytes = Vec::new();
        snapshot.reader.read_to_end(&mut bytes).unwrap();
        assert_eq!(
            (snapshot.seq, bytes.as_slice()),
            (first, b"state".as_slice())
        );
        let mut replayed = Vec::new();
        store
            .read_dir_ops(7, snapshot.seq, &mut |seq, _| replayed.push(seq))
            .unwrap();
        assert_eq!(replayed, [later]);
        assert!(store.load_dir_snapshot(8).unwrap().is_none());
    }

    #[test]
    fn commits_reach_the_database_file_by_the_background_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(100);
        let store = SqliteStore::open_checkpointing_every(dir.path(), every).unwrap();
        store
            .append_dir_ops(
                1,
                &[DirOp::Import {
                    accounts: vec!["ann".into()],
                }],
            )
            .unwrap();
        // `immutable` reads the database file alone, without the write-ahead log.
        let uri = format!("file:{}?immutable=1", dir.path().join("crier.db").display());
        let in_file = || {
            let flags =
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
            let file = Connection::open_with_flags(&uri, flags).unwrap();
            // Before the first checkpoint the file does not even hold the tables.
            file.query_row("SELECT count(*) FROM dir_ops", [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap_or(0)
        };
        let waited = std::time::Instant::now();
        while in_file() == 0 {
            assert!(
                waited.elapsed() < every * 50,
                "the commit never left the write-ahead log"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn pushes_round_trip_with_their_audience() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let push = PushRecord {
            app: 1,
            task_id: "t1".into(),
            created_ms: 5_000,
            lifetime_secs: 60,
            from_account: "admin".into(),
            msg_random: 9,
            msg_body: "[]".into(),
            offline_push_info: None,
            condition: Some("{}".into()),
            audience: (0..100_000).collect(),
        };
        store.insert_push(&push, None).unwrap();
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.pushes_since(1, 0).unwrap(), vec![push]);
        assert!(store.pushes_since(1, 5_001).unwrap().is_empty());
        assert_eq!(
            store.push_counts(1, 0).unwrap(),
            PushCounts {
                since_count: 1,
                last_created_ms: Some(5_000)
            }
        );
        assert_eq!(store.push_counts(2, 0).unwrap(), PushCounts::default());

        store
            .append_acks(1, &[("t1".into(), [1, 2].into_iter().collect())])
            .unwrap();
        store
            .append_acks(1, &[("t1".into(), [3].into_iter().collect())])
            .unwrap();
        assert_eq!(
            store.load_acks(1).unwrap()["t1"],
            [1, 2, 3].into_iter().collect()
        );
        let counts = |online, offline| DeliveryCounts { online, offline };
        store
            .add_delivery_counts(1, &[("t1".into(), counts(5, 0))])
            .unwrap();
        store
            .add_delivery_counts(1, &[("t1".into(), counts(2, 3))])
            .unwrap();
        store
            .add_delivery_counts(2, &[("t1".into(), counts(9, 9))])
            .unwrap();
        assert_eq!(
            store.load_delivery_counts(1).unwrap(),
            HashMap::from([("t1".to_owned(), counts(7, 3))])
        );
        // Kept while it is alive, or while it counts toward today's quota.
        assert_eq!(store.purge_pushes(1, 65_000, 1_000_000).unwrap(), 0);
        assert_eq!(store.purge_pushes(1, 65_001, 5_000).unwrap(), 0);
        assert_eq!(store.purge_pushes(1, 65_001, 5_001).unwrap(), 1);
        assert!(store.pushes_since(1, 0).unwrap().is_empty());
        assert!(store.load_acks(1).unwrap().is_empty());
        assert!(store.load_delivery_counts(1).unwrap().is_empty());
    }
}
