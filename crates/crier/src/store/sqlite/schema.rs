//! The schema, versioned by `PRAGMA user_version`, and its migrations, applied in order at
//! open. The on-disk format is an API: `tests/fixtures/store-v4` is a data directory written by
//! schema 4, and a test opens it.

use std::fs::{self, File};
use std::path::Path;

use rusqlite::{params, Connection, Transaction};

use super::directory::read_snapshot_header;
use super::{corrupt, Failure};

/// The schema version this build writes.
pub(super) const VERSION: usize = MIGRATIONS.len();

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
    // Version 6, the `timpush` family: which command started a push (a `batch` is outside the
    // quota, only `push` can be revoked), its `DataId`, the scheduled task that ran it, and
    // when it was revoked.
    Migration::Sql(
        r#"
    ALTER TABLE pushes ADD COLUMN kind TEXT NOT NULL DEFAULT 'im_push';
    ALTER TABLE pushes ADD COLUMN data_id TEXT;
    ALTER TABLE pushes ADD COLUMN sched_task_id INTEGER;
    ALTER TABLE pushes ADD COLUMN revoked_ms INTEGER;
    ALTER TABLE pushes ADD COLUMN revoke_info TEXT;
"#,
    ),
    // Version 7, scheduled tasks (`timpush.md` §9): one row each, leased while a node runs it;
    // `sched_heads` numbers them per app so that a deleted task's id is never given again.
    Migration::Sql(
        r#"
    CREATE TABLE sched_heads (
        app INTEGER PRIMARY KEY,
        last_id INTEGER NOT NULL
    );
    CREATE TABLE sched_tasks (
        app INTEGER NOT NULL,
        task_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        sched_at_ms INTEGER NOT NULL,
        content TEXT NOT NULL,
        caller TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        dispatch_err TEXT NOT NULL DEFAULT '',
        push_task_id TEXT NOT NULL DEFAULT '',
        lease_node TEXT,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, task_id)
    );
    CREATE INDEX sched_tasks_by_time ON sched_tasks (app, sched_at_ms);
    CREATE INDEX sched_tasks_by_creation ON sched_tasks (app, created_ms);
    CREATE INDEX pushes_by_sched_task ON pushes (app, sched_task_id) WHERE sched_task_id IS NOT NULL;
"#,
    ),
    // Version 8, the delivery callback queue (`store::callbacks`): one row per event.
    Migration::Sql(
        r#"
    CREATE TABLE callback_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        event TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        ready_ms INTEGER NOT NULL,
        deadline_ms INTEGER NOT NULL,
        lease_node TEXT,
        lease_until_ms INTEGER NOT NULL DEFAULT 0
    );
    -- Claims walk the free events by deadline, never the leased ones (in flight) ahead of
    -- them; expired leases are found by their end.
    CREATE INDEX callback_queue_free ON callback_queue (app, deadline_ms, id)
        WHERE lease_node IS NULL;
    CREATE INDEX callback_queue_leased ON callback_queue (app, lease_until_ms)
        WHERE lease_node IS NOT NULL;
"#,
    ),
    // Version 9 (SQLite) / 5 (PostgreSQL): timpush statistics and trace, and the overwrite of a revoked push's notifications: the
    // accounts a push reached on a session and that acknowledged it, one bitmap per batch
    // with its time; one overwrite row per revoked push that had a notification job.
    Migration::Sql(
        r#"
    CREATE TABLE push_marks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        stage INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        accounts BLOB NOT NULL
    );
    CREATE INDEX push_marks_by_task ON push_marks (app, task_id);
    CREATE TABLE notify_overwrites (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{}',
        done INTEGER NOT NULL DEFAULT 0,
        UNIQUE (app, task_id)
    );
"#,
    ),
    // Version 10: the push gate's count of the day's pushes answered from an index. `kind`
    // was added after `audience`, so a row's `kind` lies behind its audience's overflow
    // pages: the day's count of pushes (`kind <> 'batch'`) walked about 300 pages per kept
    // push of 10M accounts, and every push to 10M got slower as the day's pushes grew.
    Migration::Sql(
        r#"
    CREATE INDEX pushes_gate ON pushes (app, created_ms, kind);
"#,
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

pub(super) fn migrate(connection: &mut Connection, snapshot_dir: &Path) -> Result<(), Failure> {
    let applied: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if applied > VERSION {
        return Err(corrupt(format!(
            "the database has schema version {applied}, newer than this build knows ({VERSION}); run a newer crier"
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
