//! Push records, accepted under the app's rate limits in one transaction, and what hangs on
//! them: acknowledgements (one bitmap per batch), delivery counts and notification jobs.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{bitmap_bytes, bitmap_from, Failure, SqliteStore};
use crate::store::{DeliveryCounts, PushAcceptance, PushCounts, PushId, PushRules, PushSummary};
use crate::store::{PushKind, PushRecord, RevokeOutcome};

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
        kind: kind_column(row.get::<_, String>(10)?)?,
        data_id: row.get(11)?,
        sched_task_id: row.get::<_, Option<i64>>(12)?.map(|id| id as u64),
        revoked_ms: row.get::<_, Option<i64>>(13)?.map(|ms| ms as u64),
        revoke_info: row.get(14)?,
    };
    Ok((record, row.get(9)?))
}

fn kind_column(text: String) -> rusqlite::Result<PushKind> {
    PushKind::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Text,
            format!("unknown push kind {text:?}").into(),
        )
    })
}

/// The first rule of `rules` that refuses `push`, judged on the app's stored pushes.
fn judge_push(
    tx: &Transaction<'_>,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
) -> Result<Option<PushAcceptance>, Failure> {
    let app = push.app as i64;
    // No upper bound: a push stamped after this one (the clock stepped back) is inside the
    // window, as `push::limits` has it.
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
    if !push.kind.counts_toward_quota() {
        return Ok(None);
    }
    let last: Option<i64> = tx
        .prepare_cached("SELECT MAX(created_ms) FROM pushes WHERE app = ?1 AND kind <> 'batch'")?
        .query_row(params![app], |row| row.get(0))?;
    if let Some(last) = last.map(|ms| ms as u64) {
        if push.created_ms.saturating_sub(last) < rules.min_interval_ms {
            return Ok(Some(PushAcceptance::TooFrequent {
                last_created_ms: last,
            }));
        }
    }
    let today: i64 = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM pushes WHERE app = ?1 AND created_ms >= ?2 AND kind <> 'batch'",
        )?
        .query_row(params![app, rules.day_start_ms as i64], |row| row.get(0))?;
    if today as u64 >= rules.daily_quota {
        return Ok(Some(PushAcceptance::QuotaExceeded {
            quota: rules.daily_quota,
        }));
    }
    Ok(None)
}

pub(super) fn try_accept_push(
    store: &SqliteStore,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
    notify_targets: Option<&RoaringBitmap>,
) -> Result<PushAcceptance, Failure> {
    let audience = bitmap_bytes(&push.audience)?;
    let mut connection = store.connection.lock();
    // IMMEDIATE: the rules are judged and the push stored under one write lock, so two
    // nodes cannot both take the last push of the quota.
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(refused) = judge_push(&tx, push, fingerprint, rules)? {
        return Ok(refused);
    }
    // Cached: the statement would otherwise be compiled anew for every push.
    tx.prepare_cached(
        "INSERT INTO pushes (app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                             offline_push_info, condition, audience_size, audience, fingerprint,
                             kind, data_id, sched_task_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
        fingerprint as i64,
        push.kind.as_str(),
        push.data_id,
        push.sched_task_id.map(|id| id as i64)
    ])?;
    if let Some(targets) = notify_targets {
        tx.execute(
            "INSERT INTO notify_jobs (app, task_id, targets) VALUES (?1, ?2, ?3)",
            params![push.app as i64, push.task_id, bitmap_bytes(targets)?],
        )?;
    }
    tx.commit()?;
    drop(connection);
    store.checkpointer.wrote(audience.len());
    Ok(PushAcceptance::Accepted)
}

pub(super) fn push_summary(
    store: &SqliteStore,
    app: u64,
    task_id: &str,
) -> Result<Option<PushSummary>, Failure> {
    let summary = store
        .reader
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
}

const PUSH_COLUMNS: &str =
    "app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                            offline_push_info, condition, audience, kind, data_id, sched_task_id,
                            revoked_ms, revoke_info";

/// A record read by `push_from_row`, with its audience decoded.
fn with_audience((mut record, audience): (PushRecord, Vec<u8>)) -> Result<PushRecord, Failure> {
    record.audience = bitmap_from(&audience, format_args!("audience of {}", record.task_id))?;
    Ok(record)
}

pub(super) fn push_record(
    store: &SqliteStore,
    app: u64,
    task_id: &str,
) -> Result<Option<PushRecord>, Failure> {
    let connection = store.reader.lock();
    let row = connection
        .query_row(
            &format!("SELECT {PUSH_COLUMNS} FROM pushes WHERE app = ?1 AND task_id = ?2"),
            params![app as i64, task_id],
            push_from_row,
        )
        .optional()?;
    row.map(with_audience).transpose()
}

pub(super) fn pushes_since(
    store: &SqliteStore,
    app: u64,
    since_ms: u64,
) -> Result<Vec<PushRecord>, Failure> {
    let connection = store.reader.lock();
    let mut query = connection.prepare(&format!(
        "SELECT {PUSH_COLUMNS} FROM pushes WHERE app = ?1 AND created_ms >= ?2 ORDER BY seq"
    ))?;
    let rows = query.query_map(params![app as i64, since_ms as i64], push_from_row)?;
    let mut pushes = Vec::new();
    for row in rows {
        pushes.push(with_audience(row?)?);
    }
    Ok(pushes)
}

pub(super) fn push_ids_since(
    store: &SqliteStore,
    app: u64,
    since_ms: u64,
) -> Result<Vec<PushId>, Failure> {
    let connection = store.reader.lock();
    let mut query = connection.prepare_cached(
        "SELECT task_id, revoked_ms IS NOT NULL FROM pushes WHERE app = ?1 AND created_ms >= ?2 ORDER BY seq",
    )?;
    let rows = query.query_map(params![app as i64, since_ms as i64], |row| {
        Ok(PushId {
            task_id: row.get(0)?,
            revoked: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn revoke_push(
    store: &SqliteStore,
    app: u64,
    task_id: &str,
    now_ms: u64,
    overwrite: Option<&str>,
) -> Result<RevokeOutcome, Failure> {
    let mut connection = store.connection.lock();
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let revoked: Option<Option<i64>> = tx
        .query_row(
            "SELECT revoked_ms FROM pushes WHERE app = ?1 AND task_id = ?2",
            params![app as i64, task_id],
            |row| row.get(0),
        )
        .optional()?;
    let outcome = match revoked {
        None => RevokeOutcome::Unknown,
        Some(Some(at)) => RevokeOutcome::AlreadyRevoked { at_ms: at as u64 },
        Some(None) => {
            tx.execute(
                "UPDATE pushes SET revoked_ms = ?3, revoke_info = ?4 WHERE app = ?1 AND task_id = ?2",
                params![app as i64, task_id, now_ms as i64, overwrite],
            )?;
            // A run in progress stops at its next batch; no node claims what is left. What
            // it sent is overwritten once it let go of the job.
            tx.execute(
                "UPDATE notify_jobs SET done = 1 WHERE app = ?1 AND task_id = ?2",
                params![app as i64, task_id],
            )?;
            tx.execute(
                "INSERT INTO notify_overwrites (app, task_id)
                 SELECT app, task_id FROM notify_jobs WHERE app = ?1 AND task_id = ?2",
                params![app as i64, task_id],
            )?;
            RevokeOutcome::Revoked
        }
    };
    tx.commit()?;
    Ok(outcome)
}

pub(super) fn revoked_since(
    store: &SqliteStore,
    app: u64,
    since_ms: u64,
) -> Result<Vec<String>, Failure> {
    let connection = store.connection.lock();
    let mut query = connection.prepare_cached(
        "SELECT task_id FROM pushes WHERE app = ?1 AND revoked_ms >= ?2 ORDER BY revoked_ms",
    )?;
    let rows = query.query_map(params![app as i64, since_ms as i64], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn push_counts(
    store: &SqliteStore,
    app: u64,
    since_ms: u64,
) -> Result<PushCounts, Failure> {
    let connection = store.connection.lock();
    let since_count: i64 = connection.query_row(
        "SELECT COUNT(*) FROM pushes WHERE app = ?1 AND created_ms >= ?2 AND kind <> 'batch'",
        params![app as i64, since_ms as i64],
        |row| row.get(0),
    )?;
    let last: Option<i64> = connection.query_row(
        "SELECT MAX(created_ms) FROM pushes WHERE app = ?1 AND kind <> 'batch'",
        params![app as i64],
        |row| row.get(0),
    )?;
    Ok(PushCounts {
        since_count: since_count as u64,
        last_created_ms: last.map(|ms| ms as u64),
    })
}

pub(super) fn append_acks(
    store: &SqliteStore,
    app: u64,
    acks: &[(String, RoaringBitmap)],
) -> Result<(), Failure> {
    let mut connection = store.connection.lock();
    let tx = connection.transaction()?;
    {
        let mut insert =
            tx.prepare_cached("INSERT INTO acks (app, task_id, accounts) VALUES (?1, ?2, ?3)")?;
        for (task_id, accounts) in acks {
            insert.execute(params![app as i64, task_id, bitmap_bytes(accounts)?])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn add_delivery_counts(
    store: &SqliteStore,
    app: u64,
    counts: &[(String, DeliveryCounts)],
) -> Result<(), Failure> {
    let mut connection = store.connection.lock();
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

pub(super) fn load_delivery_counts(
    store: &SqliteStore,
    app: u64,
) -> Result<HashMap<String, DeliveryCounts>, Failure> {
    let connection = store.connection.lock();
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

pub(super) fn load_acks(
    store: &SqliteStore,
    app: u64,
) -> Result<HashMap<String, RoaringBitmap>, Failure> {
    let connection = store.connection.lock();
    let mut query = connection.prepare("SELECT task_id, accounts FROM acks WHERE app = ?1")?;
    let mut rows = query.query(params![app as i64])?;
    let mut acks: HashMap<String, RoaringBitmap> = HashMap::new();
    while let Some(row) = rows.next()? {
        let task_id: String = row.get(0)?;
        let blob: Vec<u8> = row.get(1)?;
        let accounts = bitmap_from(&blob, format_args!("acks of {task_id}"))?;
        *acks.entry(task_id).or_default() |= accounts;
    }
    Ok(acks)
}

/// The batches after row id `after` (ids grow with each insert, and inserts are serialized
/// by SQLite's write lock, so a batch never appears behind a cursor already handed out).
pub(super) fn acks_since(
    store: &SqliteStore,
    app: u64,
    after: u64,
) -> Result<(u64, Vec<(String, RoaringBitmap)>), Failure> {
    let connection = store.connection.lock();
    let mut query = connection
        .prepare("SELECT id, task_id, accounts FROM acks WHERE app = ?1 AND id > ?2 ORDER BY id")?;
    let mut rows = query.query(params![app as i64, after as i64])?;
    let (mut cursor, mut batches) = (after, Vec::new());
    while let Some(row) = rows.next()? {
        cursor = row.get::<_, i64>(0)? as u64;
        let task_id: String = row.get(1)?;
        let blob: Vec<u8> = row.get(2)?;
        let accounts = bitmap_from(&blob, format_args!("acks of {task_id}"))?;
        batches.push((task_id, accounts));
    }
    Ok((cursor, batches))
}

pub(super) fn purge_pushes(
    store: &SqliteStore,
    app: u64,
    expired_before_ms: u64,
    created_before_ms: u64,
) -> Result<u64, Failure> {
    let mut connection = store.connection.lock();
    let tx = connection.transaction()?;
    let purged = tx.execute(
        "DELETE FROM pushes WHERE app = ?1 AND created_ms + lifetime_secs * 1000 < ?2 AND created_ms < ?3
         AND (kind = 'im_push' OR created_ms + lifetime_secs * 1000 + ?4 < ?2)",
        params![
            app as i64,
            expired_before_ms as i64,
            created_before_ms as i64,
            crate::store::TIMPUSH_REPORTED_AFTER_EXPIRY_MS as i64
        ],
    )?;
    // A count batch in flight can bring a row back for a push purged here; the next
    // purge takes it, and no report shows it meanwhile (the push itself is gone).
    for table in [
        "acks",
        "push_marks",
        "delivery_counts",
        "notify_jobs",
        "notify_overwrites",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE app = ?1 AND task_id NOT IN (SELECT task_id FROM pushes WHERE app = ?1)"),
            params![app as i64],
        )?;
    }
    tx.commit()?;
    Ok(purged as u64)
}
