//! The embedded default: SQLite in WAL mode under the data directory, plus one snapshot file
//! per app beside it.
//!
//! Why SQLite: one file, no server to install, transactions that survive `kill -9`, and a
//! storage engine millions of deployments trust. WAL with `synchronous=NORMAL` makes each
//! commit a sequential append that survives a process crash; only a power loss can lose the
//! last commits. Directory snapshots are large blobs rewritten whole, so they live in plain
//! files (written aside, fsynced, renamed) rather than in pages of the database; `dir_heads`
//! keeps, per app, the head of the log, the seq of the snapshot and how much of the log is
//! forgotten, so that compare-and-append and the horizon are decided in one transaction.
//!
//! Errors of SQLite and of the file system become [`StoreError`]s here and nowhere else.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use roaring::RoaringBitmap;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{
    DeliveryCounts, PushAcceptance, PushCounts, PushRules, PushSummary, Store, StoreError,
    StoredSnapshot,
};
use crate::directory::DirOp;
use crate::push::PushRecord;

/// Schema migrations, in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(
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
    ),
    Migration::Sql(
        r#"
    CREATE TABLE acks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        accounts BLOB NOT NULL
    );
    CREATE INDEX acks_by_task ON acks (app, task_id);
"#,
    ),
    Migration::Sql(
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
    ),
    Migration::Sql(
        r#"
    CREATE TABLE delivery_counts (
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        online INTEGER NOT NULL,
        offline INTEGER NOT NULL,
        PRIMARY KEY (app, task_id)
    ) WITHOUT ROWID;
"#,
    ),
    // Version 5, for nodes sharing a store. Directory writes were numbered across apps by one
    // AUTOINCREMENT; now each app counts its own, densely, from the head it reached (the old
    // numbers are kept, so a snapshot's seq still means the same writes). The head and the
    // snapshot's seq move into `dir_heads`, taken from the log and from the snapshot files
    // (whose log the old code cut through their seq). Pushes keep the fingerprint that tells
    // retries apart; jobs get a lease.
    Migration::SqlThen(
        r#"
    CREATE TABLE dir_log (
        app INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        op TEXT NOT NULL,
        PRIMARY KEY (app, seq)
    );
    INSERT INTO dir_log (app, seq, op) SELECT app, seq, op FROM dir_ops;
    CREATE TABLE dir_heads (
        app INTEGER PRIMARY KEY,
        head INTEGER NOT NULL,
        snapshot_seq INTEGER,
        forgotten_through INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO dir_heads (app, head) SELECT app, MAX(seq) FROM dir_ops GROUP BY app;
    DROP TABLE dir_ops;
    ALTER TABLE pushes ADD COLUMN fingerprint INTEGER;
    ALTER TABLE notify_jobs ADD COLUMN lease_node TEXT;
    ALTER TABLE notify_jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
"#,
        adopt_snapshot_files,
    ),
];

enum Migration {
    Sql(&'static str),
    /// SQL, then a step that reads the snapshot directory.
    SqlThen(
        &'static str,
        fn(&Transaction<'_>, &Path) -> Result<(), Failure>,
    ),
}

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

/// A failure inside this module, before it becomes a [`StoreError`] in [`run`]: lets `?`
/// take SQLite's and the file system's errors without `StoreError` naming either.
pub(super) enum Failure {
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
pub(super) fn run<T>(operation: impl FnOnce() -> Result<T, Failure>) -> Result<T, StoreError> {
    operation().map_err(Failure::into_store_error)
}

fn corrupt(what: impl std::fmt::Display) -> Failure {
    Failure::Store(StoreError::Corrupt(what.to_string()))
}

pub struct SqliteStore {
    pub(super) connection: Mutex<Connection>,
    snapshot_dir: PathBuf,
    /// Held while a snapshot is written, so an older one never replaces a newer one.
    writing_snapshot: Mutex<()>,
    /// Dropping it stops the checkpointer.
    _checkpointer: mpsc::Sender<()>,
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
            migrate(&mut connection, &snapshot_dir)?;
            let checkpointer =
                start_checkpointer(Connection::open(data_dir.join("crier.db"))?, every)?;
            Ok(SqliteStore {
                connection: Mutex::new(connection),
                snapshot_dir,
                writing_snapshot: Mutex::new(()),
                _checkpointer: checkpointer,
            })
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
) -> Result<mpsc::Sender<()>, Failure> {
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

fn migrate(connection: &mut Connection, snapshot_dir: &Path) -> Result<(), Failure> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > MIGRATIONS.len() {
        return Err(corrupt(format!(
            "the database has schema version {applied}, newer than this build knows ({}); run a newer crier",
            MIGRATIONS.len()
        )));
    }
    for (version, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = connection.transaction()?;
        match migration {
            Migration::Sql(sql) => tx.execute_batch(sql)?,
            Migration::SqlThen(sql, then) => {
                tx.execute_batch(sql)?;
                then(&tx, snapshot_dir)?;
            }
        }
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Version 5: the snapshot files written before it hold the seq their app's log was cut at.
fn adopt_snapshot_files(tx: &Transaction<'_>, snapshot_dir: &Path) -> Result<(), Failure> {
    for entry in fs::read_dir(snapshot_dir)? {
        let path = entry?.path();
        let Some(app) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("app-")?.strip_suffix(".snap"))
            .and_then(|app| app.parse::<u64>().ok())
        else {
            continue;
        };
        let seq = read_snapshot_header(&path, &mut File::open(&path)?)?;
        tx.execute(
            "INSERT INTO dir_heads (app, head, snapshot_seq, forgotten_through) VALUES (?1, ?2, ?2, ?2)
             ON CONFLICT (app) DO UPDATE
             SET head = MAX(head, excluded.head), snapshot_seq = excluded.snapshot_seq,
                 forgotten_through = excluded.forgotten_through",
            params![app as i64, seq as i64],
        )?;
    }
    Ok(())
}

fn read_snapshot_header(path: &Path, reader: &mut impl Read) -> Result<u64, Failure> {
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

/// The first rule of `rules` that refuses `push`, judged on the app's stored pushes.
fn judge_push(
    tx: &Transaction<'_>,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
) -> Result<Option<PushAcceptance>, Failure> {
    let app = push.app as i64;
    let retry_since = push.created_ms.saturating_sub(rules.retry_window_ms);
    let repeated: Option<String> = tx
        .prepare_cached(
            "SELECT task_id FROM pushes
             WHERE app = ?1 AND created_ms >= ?2 AND msg_random = ?3 AND fingerprint = ?4
             ORDER BY seq LIMIT 1",
        )?
        .query_row(
            params![app, retry_since as i64, push.msg_random, fingerprint as i64],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(task_id) = repeated {
        return Ok(Some(PushAcceptance::Duplicate { task_id }));
    }
    let last: Option<i64> = tx
        .prepare_cached("SELECT MAX(created_ms) FROM pushes WHERE app = ?1")?
        .query_row(params![app], |row| row.get(0))?;
    if let Some(last) = last.map(|ms| ms as u64) {
        if push.created_ms.saturating_sub(last) < rules.min_interval_ms {
            return Ok(Some(PushAcceptance::TooFrequent {
                last_created_ms: last,
            }));
        }
    }
    let today: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM pushes WHERE app = ?1 AND created_ms >= ?2")?
        .query_row(params![app, rules.day_start_ms as i64], |row| row.get(0))?;
    if today as u64 >= rules.daily_quota {
        return Ok(Some(PushAcceptance::QuotaExceeded {
            quota: rules.daily_quota,
        }));
    }
    Ok(None)
}

fn bitmap_bytes(bitmap: &RoaringBitmap) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::with_capacity(bitmap.serialized_size());
    bitmap.serialize_into(&mut bytes)?;
    Ok(bytes)
}

impl Store for SqliteStore {
    fn dir_head(&self, app: u64) -> Result<u64, StoreError> {
        run(|| Ok(dir_head_of(&self.connection.lock(), app)?.head))
    }

    fn append_dir_ops(
        &self,
        app: u64,
        expected_head: u64,
        ops: &[DirOp],
    ) -> Result<u64, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let head = dir_head_of(&tx, app)?.head;
            if head != expected_head {
                return Err(StoreError::Conflict(format!(
                    "the directory log of app {app} is at {head}, not {expected_head}: read the writes after {expected_head} and try again"
                ))
                .into());
            }
            let mut seq = head;
            {
                let mut insert =
                    tx.prepare_cached("INSERT INTO dir_log (app, seq, op) VALUES (?1, ?2, ?3)")?;
                for op in ops {
                    let text = serde_json::to_string(op).map_err(corrupt)?;
                    seq += 1;
                    insert.execute(params![app as i64, seq as i64, text])?;
                }
            }
            tx.prepare_cached(
                "INSERT INTO dir_heads (app, head) VALUES (?1, ?2)
                 ON CONFLICT (app) DO UPDATE SET head = excluded.head",
            )?
            .execute(params![app as i64, seq as i64])?;
            tx.commit()?;
            Ok(seq)
        })
    }

    fn read_dir_ops(
        &self,
        app: u64,
        after_seq: u64,
        each: &mut dyn FnMut(u64, DirOp),
    ) -> Result<(), StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
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
        })
    }

    fn save_dir_snapshot(
        &self,
        app: u64,
        seq: u64,
        write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        run(|| {
            let _writing = self.writing_snapshot.lock();
            let stored = dir_head_of(&self.connection.lock(), app)?.snapshot_seq;
            if stored.is_some_and(|stored| stored >= seq) {
                return Ok(());
            }
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
            // Only once the snapshot is durable may the log behind it be cut, and then only up
            // to the snapshot before: a reader that loaded that one can still catch up.
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let before = dir_head_of(&tx, app)?;
            let forgotten = before
                .snapshot_seq
                .unwrap_or(0)
                .max(before.forgotten_through);
            tx.execute(
                "DELETE FROM dir_log WHERE app = ?1 AND seq <= ?2",
                params![app as i64, forgotten as i64],
            )?;
            tx.execute(
                "INSERT INTO dir_heads (app, head, snapshot_seq, forgotten_through) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (app) DO UPDATE
                 SET head = MAX(head, excluded.head), snapshot_seq = MAX(IFNULL(snapshot_seq, 0), excluded.snapshot_seq),
                     forgotten_through = excluded.forgotten_through",
                params![app as i64, seq as i64, forgotten as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn load_dir_snapshot(&self, app: u64) -> Result<Option<StoredSnapshot>, StoreError> {
        run(|| {
            let path = self.snapshot_path(app);
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
        })
    }

    fn try_accept_push(
        &self,
        push: &PushRecord,
        fingerprint: u64,
        rules: &PushRules,
        notify_targets: Option<&RoaringBitmap>,
    ) -> Result<PushAcceptance, StoreError> {
        run(|| {
            let audience = bitmap_bytes(&push.audience)?;
            let mut connection = self.connection.lock();
            // IMMEDIATE: the rules are judged and the push stored under one write lock, so two
            // nodes cannot both take the last push of the quota.
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(refused) = judge_push(&tx, push, fingerprint, rules)? {
                return Ok(refused);
            }
            // Cached: the statement would otherwise be compiled anew for every push.
            tx.prepare_cached(
                "INSERT INTO pushes (app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                                     offline_push_info, condition, audience_size, audience, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
                audience,
                fingerprint as i64
            ])?;
            if let Some(targets) = notify_targets {
                tx.execute(
                    "INSERT INTO notify_jobs (app, task_id, targets) VALUES (?1, ?2, ?3)",
                    params![push.app as i64, push.task_id, bitmap_bytes(targets)?],
                )?;
            }
            tx.commit()?;
            Ok(PushAcceptance::Accepted)
        })
    }

    fn push_summary(&self, app: u64, task_id: &str) -> Result<Option<PushSummary>, StoreError> {
        run(|| {
            let summary = self
                .connection
                .lock()
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
        })
    }

    fn pushes_since(&self, app: u64, since_ms: u64) -> Result<Vec<PushRecord>, StoreError> {
        run(|| {
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
                    .map_err(|e| corrupt(format!("audience of {}: {e}", record.task_id)))?;
                pushes.push(record);
            }
            Ok(pushes)
        })
    }

    fn push_counts(&self, app: u64, since_ms: u64) -> Result<PushCounts, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let since_count: i64 = connection.query_row(
                "SELECT COUNT(*) FROM pushes WHERE app = ?1 AND created_ms >= ?2",
                params![app as i64, since_ms as i64],
                |row| row.get(0),
            )?;
            let last: Option<i64> = connection.query_row(
                "SELECT MAX(created_ms) FROM pushes WHERE app = ?1",
                params![app as i64],
                |row| row.get(0),
            )?;
            Ok(PushCounts {
                since_count: since_count as u64,
                last_created_ms: last.map(|ms| ms as u64),
            })
        })
    }

    fn append_acks(&self, app: u64, acks: &[(String, RoaringBitmap)]) -> Result<(), StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO acks (app, task_id, accounts) VALUES (?1, ?2, ?3)",
                )?;
                for (task_id, accounts) in acks {
                    insert.execute(params![app as i64, task_id, bitmap_bytes(accounts)?])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn add_delivery_counts(
        &self,
        app: u64,
        counts: &[(String, DeliveryCounts)],
    ) -> Result<(), StoreError> {
        run(|| {
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
        })
    }

    fn load_delivery_counts(
        &self,
        app: u64,
    ) -> Result<HashMap<String, DeliveryCounts>, StoreError> {
        run(|| {
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
        })
    }

    fn load_acks(&self, app: u64) -> Result<HashMap<String, RoaringBitmap>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query =
                connection.prepare("SELECT task_id, accounts FROM acks WHERE app = ?1")?;
            let mut rows = query.query(params![app as i64])?;
            let mut acks: HashMap<String, RoaringBitmap> = HashMap::new();
            while let Some(row) = rows.next()? {
                let task_id: String = row.get(0)?;
                let blob: Vec<u8> = row.get(1)?;
                let accounts = RoaringBitmap::deserialize_from(blob.as_slice())
                    .map_err(|e| corrupt(format!("acks of {task_id}: {e}")))?;
                *acks.entry(task_id).or_default() |= accounts;
            }
            Ok(acks)
        })
    }

    fn purge_pushes(
        &self,
        app: u64,
        expired_before_ms: u64,
        created_before_ms: u64,
    ) -> Result<u64, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction()?;
            let purged = tx.execute(
                "DELETE FROM pushes WHERE app = ?1 AND created_ms + lifetime_secs * 1000 < ?2 AND created_ms < ?3",
                params![app as i64, expired_before_ms as i64, created_before_ms as i64],
            )?;
            // A count batch in flight can bring a row back for a push purged here; the next
            // purge takes it, and no report shows it meanwhile (the push itself is gone).
            for table in ["acks", "delivery_counts", "notify_jobs"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE app = ?1 AND task_id NOT IN (SELECT task_id FROM pushes WHERE app = ?1)"),
                    params![app as i64],
                )?;
            }
            tx.commit()?;
            Ok(purged as u64)
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{snapshot, Directory};
    use crate::store::conformance::StoreFactory;
    use crate::store::notify::NotifyStore;

    /// A data directory of its own per case.
    pub struct SqliteFactory(tempfile::TempDir);

    impl StoreFactory for SqliteFactory {
        fn create() -> Self {
            SqliteFactory(tempfile::tempdir().unwrap())
        }

        fn open(&self) -> Box<dyn Store> {
            Box::new(SqliteStore::open(self.0.path()).unwrap())
        }
    }

    crate::store_conformance_suite!(SqliteFactory);

    #[test]
    fn commits_reach_the_database_file_by_the_background_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(100);
        let store = SqliteStore::open_checkpointing_every(dir.path(), every).unwrap();
        store
            .append_dir_ops(
                1,
                0,
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
            file.query_row("SELECT count(*) FROM dir_log", [], |row| {
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
    fn a_file_that_is_not_a_database_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("crier.db"), vec![b'x'; 8192]).unwrap();
        let opened = SqliteStore::open(dir.path());
        assert!(
            matches!(opened, Err(StoreError::Corrupt(_))),
            "{:?}",
            opened.err()
        );
    }

    /// `tests/fixtures/store-v4` was written by the schema-4 code (global directory seqs, the
    /// log cut at the snapshot): app 1 logged 1, 2, 4 and 6 with a snapshot at 4, app 2 logged
    /// 3 and 5; one push of app 1 with a job at cursor 1, an ack, counts and a device.
    #[test]
    fn a_schema_4_data_directory_opens_and_continues_its_logs() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v4");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        for file in ["crier.db", "snapshots/app-1.snap"] {
            fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let version: usize = store
            .connection
            .lock()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());

        let mut stored = store.load_dir_snapshot(1).unwrap().unwrap();
        assert_eq!(stored.seq, 4);
        let mut directory = snapshot::read(&mut stored.reader, |_, _| {}).unwrap();
        let mut replayed = Vec::new();
        store
            .read_dir_ops(1, 4, &mut |seq, op| {
                directory.apply(&op);
                replayed.push(seq);
            })
            .unwrap();
        assert_eq!(replayed, [6]);
        assert_eq!(directory.tags_of("ann"), ["early", "late"]);
        assert_eq!(directory.tags_of("bob"), ["early"]);
        assert!(matches!(
            store.read_dir_ops(1, 0, &mut |_, _| {}),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.dir_head(1).unwrap(), 6);
        let import = DirOp::Import {
            accounts: vec!["cy".into()],
        };
        assert_eq!(
            store
                .append_dir_ops(1, 6, std::slice::from_ref(&import))
                .unwrap(),
            7
        );

        let mut other = Directory::default();
        let mut seqs = Vec::new();
        store
            .read_dir_ops(2, 0, &mut |seq, op| {
                other.apply(&op);
                seqs.push(seq);
            })
            .unwrap();
        assert_eq!(
            (seqs.as_slice(), other.tags_of("zed")),
            ([3, 5].as_slice(), vec!["z".to_owned()])
        );
        assert_eq!(store.dir_head(2).unwrap(), 5);
        assert_eq!(store.append_dir_ops(2, 5, &[import]).unwrap(), 6);

        let pushes = store.pushes_since(1, 0).unwrap();
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].audience, [0, 1].into_iter().collect());
        assert_eq!(
            store.load_acks(1).unwrap()["1_1000_7_1"],
            [0].into_iter().collect()
        );
        assert_eq!(
            store.load_delivery_counts(1).unwrap()["1_1000_7_1"],
            DeliveryCounts {
                online: 1,
                offline: 1
            }
        );
        assert_eq!(store.load_devices(1).unwrap().len(), 1);
        let job = store.claim_job(1, "local", 2_000, 30_000).unwrap().unwrap();
        assert_eq!((job.task_id.as_str(), job.cursor), ("1_1000_7_1", 1));
        // Stored without a fingerprint, it is nobody's retry.
        let rules = PushRules {
            day_start_ms: 0,
            daily_quota: 10,
            min_interval_ms: 0,
            retry_window_ms: 1_000,
        };
        let mut retry = pushes[0].clone();
        retry.task_id = "1_1500_7_2".into();
        retry.created_ms = 1_500;
        assert_eq!(
            store.try_accept_push(&retry, 0, &rules, None).unwrap(),
            PushAcceptance::Accepted
        );
    }
}
