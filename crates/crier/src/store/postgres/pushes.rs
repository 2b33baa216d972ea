//! Push records, accepted under the app's rate limits in one transaction serialized per app
//! across nodes, and what hangs on them: acknowledgements (one bitmap per batch, numbered per
//! app), delivery counts and notification jobs.

use std::collections::{BTreeMap, HashMap};

use postgres::{Client, Row, Transaction};
use roaring::RoaringBitmap;

use super::{bitmap_bytes, bitmap_from, column, u32_column, Failure};
use crate::store::{
    DeliveryCounts, PushAcceptance, PushCounts, PushId, PushKind, PushRecord, PushRules,
    PushSummary, RevokeOutcome,
};

const PUSH_COLUMNS: &str =
    "app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                            offline_push_info, condition, audience, kind, data_id, sched_task_id,
                            revoked_ms, revoke_info";

fn push_from_row(row: &Row) -> Result<PushRecord, Failure> {
    let task_id: String = column(row, 1)?;
    let audience = bitmap_from(column(row, 9)?, format_args!("audience of {task_id}"))?;
    Ok(PushRecord {
        app: column::<i64>(row, 0)? as u64,
        created_ms: column::<i64>(row, 2)? as u64,
        lifetime_secs: u32_column(row, 3)?,
        from_account: column(row, 4)?,
        msg_random: u32_column(row, 5)?,
        msg_body: column(row, 6)?,
        offline_push_info: column(row, 7)?,
        condition: column(row, 8)?,
        audience,
        kind: {
            let kind: String = column(row, 10)?;
            PushKind::parse(&kind)
                .ok_or_else(|| super::corrupt(format!("push {task_id}: unknown kind {kind:?}")))?
        },
        data_id: column(row, 11)?,
        sched_task_id: column::<Option<i64>>(row, 12)?.map(|id| id as u64),
        revoked_ms: column::<Option<i64>>(row, 13)?.map(|ms| ms as u64),
        revoke_info: column(row, 14)?,
        task_id,
    })
}

/// Locks the app's push gate row until the transaction ends: one acceptance per app at a
/// time, whichever node makes it.
fn lock_push_gate(tx: &mut Transaction<'_>, app: i64) -> Result<(), Failure> {
    let lock = "SELECT app FROM push_gates WHERE app = $1 FOR UPDATE";
    if tx.query_opt(lock, &[&app])?.is_some() {
        return Ok(());
    }
    // The app's first push: a racing node's insert makes this one wait, then do nothing.
    tx.execute(
        "INSERT INTO push_gates (app) VALUES ($1) ON CONFLICT (app) DO NOTHING",
        &[&app],
    )?;
    tx.query_one(lock, &[&app])?;
    Ok(())
}

/// The first rule of `rules` that refuses `push`, judged on the app's stored pushes (in one
/// round trip: the retry, the last push and the day's count).
fn judge_push(
    tx: &mut Transaction<'_>,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
) -> Result<Option<PushAcceptance>, Failure> {
    // No upper bound: a push stamped after this one (the clock stepped back) is inside the
    // window, as `push::limits` has it.
    let retry_since = push.created_ms.saturating_sub(rules.retry_window_ms);
    let judged = tx.query_one(
        "SELECT
             (SELECT task_id FROM pushes
              WHERE app = $1 AND created_ms >= $2 AND msg_random = $3 AND fingerprint = $4
              ORDER BY seq LIMIT 1),
             (SELECT MAX(created_ms) FROM pushes WHERE app = $1 AND kind <> 'batch'),
             (SELECT COUNT(*) FROM pushes WHERE app = $1 AND created_ms >= $5 AND kind <> 'batch')",
        &[
            &(push.app as i64),
            &(retry_since as i64),
            &i64::from(push.msg_random),
            &(fingerprint as i64),
            &(rules.day_start_ms as i64),
        ],
    )?;
    if let Some(task_id) = column::<Option<String>>(&judged, 0)? {
        return Ok(Some(PushAcceptance::Duplicate { task_id }));
    }
    if !push.kind.counts_toward_quota() {
        return Ok(None);
    }
    if let Some(last) = column::<Option<i64>>(&judged, 1)?.map(|ms| ms as u64) {
        if push.created_ms.saturating_sub(last) < rules.min_interval_ms {
            return Ok(Some(PushAcceptance::TooFrequent {
                last_created_ms: last,
            }));
        }
    }
    let today = column::<i64>(&judged, 2)? as u64;
    if today >= rules.daily_quota {
        return Ok(Some(PushAcceptance::QuotaExceeded {
            quota: rules.daily_quota,
        }));
    }
    Ok(None)
}

pub(super) fn try_accept_push(
    client: &mut Client,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
    notify_targets: Option<&RoaringBitmap>,
) -> Result<PushAcceptance, Failure> {
    let audience = bitmap_bytes(&push.audience)?;
    let targets = notify_targets.map(bitmap_bytes).transpose()?;
    let app = push.app as i64;
    let mut tx = client.transaction()?;
    lock_push_gate(&mut tx, app)?;
    if let Some(refused) = judge_push(&mut tx, push, fingerprint, rules)? {
        return Ok(refused);
    }
    tx.execute(
        "INSERT INTO pushes (app, task_id, created_ms, lifetime_secs, from_account, msg_random, msg_body,
                             offline_push_info, condition, audience_size, audience, fingerprint,
                             kind, data_id, sched_task_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            &app,
            &push.task_id,
            &(push.created_ms as i64),
            &i64::from(push.lifetime_secs),
            &push.from_account,
            &i64::from(push.msg_random),
            &push.msg_body,
            &push.offline_push_info,
            &push.condition,
            &(push.audience.len() as i64),
            &audience,
            &(fingerprint as i64),
            &push.kind.as_str(),
            &push.data_id,
            &push.sched_task_id.map(|id| id as i64),
        ],
    )?;
    if let Some(targets) = targets {
        tx.execute(
            "INSERT INTO notify_jobs (app, task_id, targets) VALUES ($1, $2, $3)",
            &[&app, &push.task_id, &targets],
        )?;
    }
    tx.commit()?;
    Ok(PushAcceptance::Accepted)
}

pub(super) fn push_summary(
    client: &mut Client,
    app: u64,
    task_id: &str,
) -> Result<Option<PushSummary>, Failure> {
    let row = client.query_opt(
        "SELECT created_ms, lifetime_secs, audience_size FROM pushes WHERE app = $1 AND task_id = $2",
        &[&(app as i64), &task_id],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(PushSummary {
        created_ms: column::<i64>(&row, 0)? as u64,
        lifetime_secs: u32_column(&row, 1)?,
        audience_size: column::<i64>(&row, 2)? as u64,
    }))
}

pub(super) fn push_record(
    client: &mut Client,
    app: u64,
    task_id: &str,
) -> Result<Option<PushRecord>, Failure> {
    let row = client.query_opt(
        &format!("SELECT {PUSH_COLUMNS} FROM pushes WHERE app = $1 AND task_id = $2"),
        &[&(app as i64), &task_id],
    )?;
    row.as_ref().map(push_from_row).transpose()
}

pub(super) fn pushes_since(
    client: &mut Client,
    app: u64,
    since_ms: u64,
) -> Result<Vec<PushRecord>, Failure> {
    let rows = client.query(
        &format!(
            "SELECT {PUSH_COLUMNS} FROM pushes WHERE app = $1 AND created_ms >= $2 ORDER BY seq"
        ),
        &[&(app as i64), &(since_ms as i64)],
    )?;
    rows.iter().map(push_from_row).collect()
}

pub(super) fn push_ids_since(
    client: &mut Client,
    app: u64,
    since_ms: u64,
) -> Result<Vec<PushId>, Failure> {
    let rows = client.query(
        "SELECT task_id, revoked_ms IS NOT NULL FROM pushes WHERE app = $1 AND created_ms >= $2 ORDER BY seq",
        &[&(app as i64), &(since_ms as i64)],
    )?;
    rows.iter()
        .map(|row| {
            Ok(PushId {
                task_id: column(row, 0)?,
                revoked: column(row, 1)?,
            })
        })
        .collect()
}

pub(super) fn revoke_push(
    client: &mut Client,
    app: u64,
    task_id: &str,
    now_ms: u64,
    overwrite: Option<&str>,
) -> Result<RevokeOutcome, Failure> {
    let app = app as i64;
    let mut tx = client.transaction()?;
    let row = tx.query_opt(
        "SELECT revoked_ms FROM pushes WHERE app = $1 AND task_id = $2 FOR UPDATE",
        &[&app, &task_id],
    )?;
    let outcome = match row {
        None => RevokeOutcome::Unknown,
        Some(row) => match column::<Option<i64>>(&row, 0)? {
            Some(at) => RevokeOutcome::AlreadyRevoked { at_ms: at as u64 },
            None => {
                tx.execute(
                    "UPDATE pushes SET revoked_ms = $3, revoke_info = $4 WHERE app = $1 AND task_id = $2",
                    &[&app, &task_id, &(now_ms as i64), &overwrite],
                )?;
                // A run in progress stops at its next batch; no node claims what is left.
                // What it sent is overwritten once it let go of the job.
                tx.execute(
                    "UPDATE notify_jobs SET done = TRUE WHERE app = $1 AND task_id = $2",
                    &[&app, &task_id],
                )?;
                tx.execute(
                    "INSERT INTO notify_overwrites (app, task_id)
                     SELECT app, task_id FROM notify_jobs WHERE app = $1 AND task_id = $2",
                    &[&app, &task_id],
                )?;
                RevokeOutcome::Revoked
            }
        },
    };
    tx.commit()?;
    Ok(outcome)
}

pub(super) fn revoked_since(
    client: &mut Client,
    app: u64,
    since_ms: u64,
) -> Result<Vec<String>, Failure> {
    let rows = client.query(
        "SELECT task_id FROM pushes WHERE app = $1 AND revoked_ms >= $2 ORDER BY revoked_ms",
        &[&(app as i64), &(since_ms as i64)],
    )?;
    rows.iter().map(|row| column(row, 0)).collect()
}

pub(super) fn push_counts(
    client: &mut Client,
    app: u64,
    since_ms: u64,
) -> Result<PushCounts, Failure> {
    let row = client.query_one(
        "SELECT (SELECT COUNT(*) FROM pushes WHERE app = $1 AND created_ms >= $2 AND kind <> 'batch'),
                (SELECT MAX(created_ms) FROM pushes WHERE app = $1 AND kind <> 'batch')",
        &[&(app as i64), &(since_ms as i64)],
    )?;
    Ok(PushCounts {
        since_count: column::<i64>(&row, 0)? as u64,
        last_created_ms: column::<Option<i64>>(&row, 1)?.map(|ms| ms as u64),
    })
}

/// Numbers the batches `head + 1 ..` under the lock of the app's `ack_heads` row, held until
/// commit: the next batch of the app, from any node, waits and gets higher numbers, so
/// batches commit in the order of their numbers and `acks_since` never skips one.
pub(super) fn append_acks(
    client: &mut Client,
    app: u64,
    acks: &[(String, RoaringBitmap)],
) -> Result<(), Failure> {
    if acks.is_empty() {
        return Ok(());
    }
    let mut task_ids = Vec::with_capacity(acks.len());
    let mut accounts = Vec::with_capacity(acks.len());
    for (task_id, acked) in acks {
        task_ids.push(task_id.as_str());
        accounts.push(bitmap_bytes(acked)?);
    }
    let mut tx = client.transaction()?;
    let head: i64 = column(
        &tx.query_one(
            "INSERT INTO ack_heads (app, head) VALUES ($1, $2)
             ON CONFLICT (app) DO UPDATE SET head = ack_heads.head + excluded.head
             RETURNING head",
            &[&(app as i64), &(acks.len() as i64)],
        )?,
        0,
    )?;
    let first = head - acks.len() as i64 + 1;
    tx.execute(
        "INSERT INTO acks (app, seq, task_id, accounts)
         SELECT $1, $2 + n - 1, task_id, accounts
         FROM UNNEST($3::TEXT[], $4::BYTEA[]) WITH ORDINALITY AS batch (task_id, accounts, n)",
        &[&(app as i64), &first, &task_ids, &accounts],
    )?;
    tx.commit()?;
    Ok(())
}

pub(super) fn load_acks(
    client: &mut Client,
    app: u64,
) -> Result<HashMap<String, RoaringBitmap>, Failure> {
    let rows = client.query(
        "SELECT task_id, accounts FROM acks WHERE app = $1",
        &[&(app as i64)],
    )?;
    let mut acks: HashMap<String, RoaringBitmap> = HashMap::new();
    for row in &rows {
        let task_id: String = column(row, 0)?;
        let accounts = bitmap_from(column(row, 1)?, format_args!("acks of {task_id}"))?;
        *acks.entry(task_id).or_default() |= accounts;
    }
    Ok(acks)
}

/// The cursor is the per-app number of the last batch read.
pub(super) fn acks_since(
    client: &mut Client,
    app: u64,
    after: u64,
) -> Result<(u64, Vec<(String, RoaringBitmap)>), Failure> {
    let rows = client.query(
        "SELECT seq, task_id, accounts FROM acks WHERE app = $1 AND seq > $2 ORDER BY seq",
        &[&(app as i64), &(after as i64)],
    )?;
    let (mut cursor, mut batches) = (after, Vec::with_capacity(rows.len()));
    for row in &rows {
        cursor = column::<i64>(row, 0)? as u64;
        let task_id: String = column(row, 1)?;
        let accounts = bitmap_from(column(row, 2)?, format_args!("acks of {task_id}"))?;
        batches.push((task_id, accounts));
    }
    Ok((cursor, batches))
}

pub(super) fn add_delivery_counts(
    client: &mut Client,
    app: u64,
    counts: &[(String, DeliveryCounts)],
) -> Result<(), Failure> {
    // Merged first (one statement cannot update a row twice), and in TaskId order, so two
    // nodes adding to the same pushes lock their rows in one order and never deadlock.
    let mut merged: BTreeMap<&str, DeliveryCounts> = BTreeMap::new();
    for (task_id, added) in counts {
        *merged.entry(task_id).or_default() += *added;
    }
    if merged.is_empty() {
        return Ok(());
    }
    let task_ids: Vec<&str> = merged.keys().copied().collect();
    let online: Vec<i64> = merged.values().map(|c| c.online as i64).collect();
    let offline: Vec<i64> = merged.values().map(|c| c.offline as i64).collect();
    client.execute(
        "INSERT INTO delivery_counts (app, task_id, online, offline)
         SELECT $1, task_id, online, offline
         FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::BIGINT[]) AS added (task_id, online, offline)
         ON CONFLICT (app, task_id) DO UPDATE
         SET online = delivery_counts.online + excluded.online,
             offline = delivery_counts.offline + excluded.offline",
        &[&(app as i64), &task_ids, &online, &offline],
    )?;
    Ok(())
}

pub(super) fn load_delivery_counts(
    client: &mut Client,
    app: u64,
) -> Result<HashMap<String, DeliveryCounts>, Failure> {
    let rows = client.query(
        "SELECT task_id, online, offline FROM delivery_counts WHERE app = $1",
        &[&(app as i64)],
    )?;
    rows.iter()
        .map(|row| {
            let counts = DeliveryCounts {
                online: column::<i64>(row, 1)? as u64,
                offline: column::<i64>(row, 2)? as u64,
            };
            Ok((column(row, 0)?, counts))
        })
        .collect()
}

pub(super) fn purge_pushes(
    client: &mut Client,
    app: u64,
    expired_before_ms: u64,
    created_before_ms: u64,
) -> Result<u64, Failure> {
    let mut tx = client.transaction()?;
    let purged = tx.execute(
        "DELETE FROM pushes
         WHERE app = $1 AND created_ms + lifetime_secs * 1000 < $2 AND created_ms < $3
         AND (kind = 'im_push' OR created_ms + lifetime_secs * 1000 + $4 < $2)",
        &[
            &(app as i64),
            &(expired_before_ms as i64),
            &(created_before_ms as i64),
            &(crate::store::TIMPUSH_REPORTED_AFTER_EXPIRY_MS as i64),
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
            &format!(
                "DELETE FROM {table} AS hanging WHERE app = $1 AND NOT EXISTS
                 (SELECT 1 FROM pushes WHERE pushes.app = $1 AND pushes.task_id = hanging.task_id)"
            ),
            &[&(app as i64)],
        )?;
    }
    tx.commit()?;
    Ok(purged)
}
