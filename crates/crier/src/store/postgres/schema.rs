//! The schema, versioned by the rows of `crier_schema_migrations`, and its migrations, applied
//! in order at open. Nodes starting together take `pg_advisory_lock` first, so each migration
//! runs once and the others wait for it, then find nothing left to do.
//!
//! Numbers are `BIGINT`: apps, seqs and milliseconds as `u64` bit patterns (`as i64`), `u32`
//! values widened. Bitmaps are `BYTEA` in roaring's portable serialization, directory writes
//! `TEXT` in the JSON that the SQLite store writes too.

use postgres::Client;

use super::{corrupt, Failure};

/// The schema version this build writes.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// Held while migrating (any `bigint` of our own: the bytes of "crierSch").
const MIGRATION_LOCK: i64 = 0x6372_6965_7253_6368;

/// Schema migrations, in order; version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    r#"
    -- Per app: the head of the directory log (its last seq, or the snapshot's when the log is
    -- empty), the stored snapshot, and the horizon: the log is kept only after
    -- `forgotten_through`. Appends compare-and-set `head` on this row.
    CREATE TABLE dir_heads (
        app BIGINT PRIMARY KEY,
        head BIGINT NOT NULL,
        snapshot_seq BIGINT,
        snapshot_id BIGINT,
        snapshot_chunks INTEGER,
        forgotten_through BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE dir_log (
        app BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        op TEXT NOT NULL,
        PRIMARY KEY (app, seq)
    );
    -- A snapshot is written as numbered chunks of a few MiB under a fresh id, then adopted by
    -- its app's `dir_heads` row in the same transaction.
    CREATE SEQUENCE dir_snapshot_ids;
    CREATE TABLE dir_snapshot_chunks (
        snapshot_id BIGINT NOT NULL,
        chunk INTEGER NOT NULL,
        bytes BYTEA NOT NULL,
        PRIMARY KEY (snapshot_id, chunk)
    );

    -- One row per app, locked (`FOR UPDATE`) by every push acceptance of the app: the rules
    -- are judged and the push stored by one node at a time.
    CREATE TABLE push_gates (
        app BIGINT PRIMARY KEY
    );
    CREATE TABLE pushes (
        seq BIGSERIAL PRIMARY KEY,
        app BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        lifetime_secs BIGINT NOT NULL,
        from_account TEXT NOT NULL,
        msg_random BIGINT NOT NULL,
        msg_body TEXT NOT NULL,
        offline_push_info TEXT,
        condition TEXT,
        audience_size BIGINT NOT NULL,
        audience BYTEA NOT NULL,
        fingerprint BIGINT NOT NULL,
        UNIQUE (app, task_id)
    );
    CREATE INDEX pushes_by_app_time ON pushes (app, created_ms);

    -- Ack batches are numbered densely per app under the lock of the app's `ack_heads` row,
    -- so they commit in the order of their numbers and a reader's cursor never skips one.
    CREATE TABLE ack_heads (
        app BIGINT PRIMARY KEY,
        head BIGINT NOT NULL
    );
    CREATE TABLE acks (
        app BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        accounts BYTEA NOT NULL,
        PRIMARY KEY (app, seq)
    );
    CREATE INDEX acks_by_task ON acks (app, task_id);
    CREATE TABLE delivery_counts (
        app BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        online BIGINT NOT NULL,
        offline BIGINT NOT NULL,
        PRIMARY KEY (app, task_id)
    );

    CREATE TABLE devices (
        app BIGINT NOT NULL,
        platform TEXT NOT NULL,
        token TEXT NOT NULL,
        account TEXT NOT NULL,
        PRIMARY KEY (app, platform, token)
    );
    CREATE INDEX devices_by_account ON devices (app, account);
    CREATE TABLE notify_jobs (
        seq BIGSERIAL PRIMARY KEY,
        app BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        targets BYTEA NOT NULL,
        cursor BIGINT NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{}',
        done BOOLEAN NOT NULL DEFAULT FALSE,
        lease_node TEXT,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        UNIQUE (app, task_id)
    );
    CREATE INDEX notify_jobs_unfinished ON notify_jobs (app, seq) WHERE NOT done;
"#,
    // Version 2, the `timpush` family: which command started a push (a `batch` is outside the
    // quota, only `push` can be revoked), its `DataId`, the scheduled task that ran it, and
    // when it was revoked.
    r#"
    ALTER TABLE pushes ADD COLUMN kind TEXT NOT NULL DEFAULT 'im_push';
    ALTER TABLE pushes ADD COLUMN data_id TEXT;
    ALTER TABLE pushes ADD COLUMN sched_task_id BIGINT;
    ALTER TABLE pushes ADD COLUMN revoked_ms BIGINT;
    ALTER TABLE pushes ADD COLUMN revoke_info TEXT;
"#,
    // Version 3, scheduled tasks (`timpush.md` §9): one row each, leased while a node runs it;
    // `sched_heads` numbers them per app so that a deleted task's id is never given again.
    r#"
    CREATE TABLE sched_heads (
        app BIGINT PRIMARY KEY,
        last_id BIGINT NOT NULL
    );
    CREATE TABLE sched_tasks (
        app BIGINT NOT NULL,
        task_id BIGINT NOT NULL,
        kind TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        sched_at_ms BIGINT NOT NULL,
        content TEXT NOT NULL,
        caller TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        dispatch_err TEXT NOT NULL DEFAULT '',
        push_task_id TEXT NOT NULL DEFAULT '',
        lease_node TEXT,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (app, task_id)
    );
    CREATE INDEX sched_tasks_by_time ON sched_tasks (app, sched_at_ms);
    CREATE INDEX sched_tasks_by_creation ON sched_tasks (app, created_ms);
    CREATE INDEX pushes_by_sched_task ON pushes (app, sched_task_id) WHERE sched_task_id IS NOT NULL;
"#,
    // Version 4, the delivery callback queue (`store::callbacks`): one row per event.
    r#"
    CREATE TABLE callback_queue (
        id BIGSERIAL PRIMARY KEY,
        app BIGINT NOT NULL,
        event TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        ready_ms BIGINT NOT NULL,
        deadline_ms BIGINT NOT NULL,
        lease_node TEXT,
        lease_until_ms BIGINT NOT NULL DEFAULT 0
    );
    -- Claims walk the free events by deadline, never the leased ones (in flight) ahead of
    -- them; expired leases are found by their end.
    CREATE INDEX callback_queue_free ON callback_queue (app, deadline_ms, id)
        WHERE lease_node IS NULL;
    CREATE INDEX callback_queue_leased ON callback_queue (app, lease_until_ms)
        WHERE lease_node IS NOT NULL;
"#,
    // Version 9 (SQLite) / 5 (PostgreSQL): timpush statistics and trace, and the overwrite of a revoked push's notifications: the
    // accounts a push reached on a session and that acknowledged it, one bitmap per batch
    // with its time; one overwrite row per revoked push that had a notification job.
    r#"
    CREATE TABLE push_marks (
        id BIGSERIAL PRIMARY KEY,
        app BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        stage SMALLINT NOT NULL,
        at_ms BIGINT NOT NULL,
        accounts BYTEA NOT NULL
    );
    CREATE INDEX push_marks_by_task ON push_marks (app, task_id);
    CREATE TABLE notify_overwrites (
        seq BIGSERIAL PRIMARY KEY,
        app BIGINT NOT NULL,
        task_id TEXT NOT NULL,
        cursor BIGINT NOT NULL DEFAULT 0,
        counts TEXT NOT NULL DEFAULT '{}',
        done BOOLEAN NOT NULL DEFAULT FALSE,
        UNIQUE (app, task_id)
    );
    CREATE INDEX notify_overwrites_unfinished ON notify_overwrites (app, seq) WHERE NOT done;
"#,
];

/// Brings the schema to [`VERSION`] on `client`, a connection of its own (the advisory lock
/// is the session's; dropping the connection on a failure releases it).
pub(super) fn migrate(client: &mut Client) -> Result<(), Failure> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS crier_schema_migrations (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let applied: i32 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM crier_schema_migrations",
            &[],
        )?
        .try_get(0)?;
    let applied = applied as usize;
    if applied > VERSION {
        return Err(corrupt(format!(
            "the database has schema version {applied}, newer than this build knows ({VERSION}); run a newer crier"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let mut tx = client.transaction()?;
        tx.batch_execute(sql)?;
        let version = index as i32 + 1;
        tx.execute(
            "INSERT INTO crier_schema_migrations (version) VALUES ($1)",
            &[&version],
        )?;
        tx.commit()?;
    }
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])?;
    Ok(())
}
