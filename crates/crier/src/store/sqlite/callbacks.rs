//! [`CallbackStore`] on the embedded SQLite store. Claims run under `BEGIN IMMEDIATE`, so two
//! claimants never lease one event. A claim first frees the leases that ran out, then walks
//! only the free events (a partial index): the events in flight, at the head of the queue,
//! are never scanned.

use rusqlite::{params, params_from_iter, OptionalExtension, TransactionBehavior};

use super::{run, SqliteStore};
use crate::store::callbacks::{CallbackClaim, CallbackStore, Claimed, QueuedCallback};
use crate::store::StoreError;

/// Ids per statement of an `IN (...)` list, under SQLite's bound-parameter limit.
const IDS_PER_STATEMENT: usize = 500;

fn id_list(count: usize) -> String {
    vec!["?"; count].join(",")
}

impl CallbackStore for SqliteStore {
    fn enqueue_callbacks(
        &self,
        app: u64,
        events: &[String],
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO callback_queue (app, event, ready_ms, deadline_ms) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for event in events {
                    insert.execute(params![
                        app as i64,
                        event,
                        now_ms as i64,
                        deadline_ms as i64
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn claim_callbacks(&self, app: u64, claim: CallbackClaim<'_>) -> Result<Claimed, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = claim.now_ms as i64;
            // Leases that ran out free their events (their node died, or stalled).
            tx.prepare_cached(
                "UPDATE callback_queue SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = ?1 AND lease_node IS NOT NULL AND lease_until_ms <= ?2",
            )?
            .execute(params![app as i64, now])?;
            let mut ready = Vec::new();
            let mut first_deadline = None;
            {
                let mut query = tx.prepare_cached(
                    "SELECT id, event, attempts, deadline_ms FROM callback_queue
                     WHERE app = ?1 AND lease_node IS NULL AND ready_ms <= ?2
                     ORDER BY deadline_ms, id LIMIT ?3",
                )?;
                let mut rows = query.query(params![app as i64, now, claim.max as i64])?;
                while let Some(row) = rows.next()? {
                    let deadline: i64 = row.get(3)?;
                    first_deadline.get_or_insert(deadline);
                    ready.push(QueuedCallback {
                        id: row.get::<_, i64>(0)? as u64,
                        event: row.get(1)?,
                        attempts: row.get(2)?,
                    });
                }
            }
            let due = first_deadline.is_some_and(|deadline| deadline <= now);
            if ready.is_empty() || (ready.len() < claim.max && !due) {
                // The earliest of: the first ready event's deadline, a back-off ending, a
                // lease running out.
                let later: Option<i64> = tx
                    .query_row(
                        "SELECT MIN(CASE WHEN lease_node IS NOT NULL AND lease_until_ms > ?2
                                         THEN MAX(lease_until_ms, ready_ms) ELSE ready_ms END)
                         FROM callback_queue
                         WHERE app = ?1 AND (ready_ms > ?2 OR (lease_node IS NOT NULL AND lease_until_ms > ?2))",
                        params![app as i64, now],
                        |row| row.get(0),
                    )
                    .optional()?
                    .flatten();
                let until_ms = [first_deadline, later]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|ms| ms.max(0) as u64);
                return Ok(Claimed::Wait { until_ms });
            }
            let until = claim.now_ms.saturating_add(claim.lease_ms) as i64;
            for chunk in ready.chunks(IDS_PER_STATEMENT) {
                let sql = format!(
                    "UPDATE callback_queue SET lease_node = ?, lease_until_ms = ? WHERE id IN ({})",
                    id_list(chunk.len())
                );
                let values = [
                    rusqlite::types::Value::Text(claim.node.to_owned()),
                    rusqlite::types::Value::Integer(until),
                ]
                .into_iter()
                .chain(
                    chunk
                        .iter()
                        .map(|event| rusqlite::types::Value::Integer(event.id as i64)),
                );
                tx.execute(&sql, params_from_iter(values))?;
            }
            tx.commit()?;
            Ok(Claimed::Batch(ready))
        })
    }

    fn delete_callbacks(&self, app: u64, ids: &[u64]) -> Result<(), StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction()?;
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let sql = format!(
                    "DELETE FROM callback_queue WHERE app = ? AND id IN ({})",
                    id_list(chunk.len())
                );
                let values = std::iter::once(app as i64).chain(chunk.iter().map(|&id| id as i64));
                tx.execute(&sql, params_from_iter(values))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn retry_callbacks(
        &self,
        app: u64,
        node: &str,
        ids: &[u64],
        retry_at_ms: u64,
    ) -> Result<(), StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction()?;
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let sql = format!(
                    "UPDATE callback_queue
                     SET attempts = attempts + 1, ready_ms = ?, deadline_ms = ?,
                         lease_node = NULL, lease_until_ms = 0
                     WHERE app = ? AND lease_node = ? AND id IN ({})",
                    id_list(chunk.len())
                );
                let values = [
                    rusqlite::types::Value::Integer(retry_at_ms as i64),
                    rusqlite::types::Value::Integer(retry_at_ms as i64),
                    rusqlite::types::Value::Integer(app as i64),
                    rusqlite::types::Value::Text(node.to_owned()),
                ]
                .into_iter()
                .chain(
                    chunk
                        .iter()
                        .map(|&id| rusqlite::types::Value::Integer(id as i64)),
                );
                tx.execute(&sql, params_from_iter(values))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn release_callbacks(&self, app: u64, node: Option<&str>) -> Result<u64, StoreError> {
        run(|| {
            let released = self.connection.lock().execute(
                "UPDATE callback_queue SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = ?1 AND lease_node IS NOT NULL AND (?2 IS NULL OR lease_node = ?2)",
                params![app as i64, node],
            )?;
            Ok(released as u64)
        })
    }

    fn callback_queue_depth(&self, app: u64) -> Result<u64, StoreError> {
        run(|| {
            let depth: i64 = self.connection.lock().query_row(
                "SELECT COUNT(*) FROM callback_queue WHERE app = ?1",
                params![app as i64],
                |row| row.get(0),
            )?;
            Ok(depth as u64)
        })
    }
}
