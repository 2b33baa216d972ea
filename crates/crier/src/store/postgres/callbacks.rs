//! [`CallbackStore`] on PostgreSQL. A claim picks its events with `FOR UPDATE SKIP LOCKED`:
//! nodes claiming at once take disjoint batches, and none waits for another's claim. It first
//! frees the leases that ran out, then walks only the free events (a partial index).

use super::{column, Failure, PostgresStore};
use crate::store::callbacks::{CallbackClaim, CallbackStore, Claimed, QueuedCallback};
use crate::store::StoreError;

fn ids_param(ids: &[u64]) -> Vec<i64> {
    ids.iter().map(|&id| id as i64).collect()
}

impl CallbackStore for PostgresStore {
    fn enqueue_callbacks(
        &self,
        app: u64,
        events: &[String],
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<(), StoreError> {
        self.run(|client| {
            // One statement for the whole batch, in the order given.
            client.execute(
                "INSERT INTO callback_queue (app, event, ready_ms, deadline_ms)
                 SELECT $1, event, $3, $4 FROM UNNEST($2::text[]) WITH ORDINALITY AS e(event, n)
                 ORDER BY n",
                &[
                    &(app as i64),
                    &events,
                    &(now_ms as i64),
                    &(deadline_ms as i64),
                ],
            )?;
            Ok(())
        })
    }

    fn claim_callbacks(&self, app: u64, claim: CallbackClaim<'_>) -> Result<Claimed, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            let now = claim.now_ms as i64;
            // Leases that ran out free their events (their node died, or stalled).
            tx.execute(
                "UPDATE callback_queue SET lease_node = NULL, lease_until_ms = 0
                 WHERE id IN (SELECT id FROM callback_queue
                              WHERE app = $1 AND lease_node IS NOT NULL AND lease_until_ms <= $2
                              FOR UPDATE SKIP LOCKED)",
                &[&(app as i64), &now],
            )?;
            let rows = tx.query(
                "SELECT id, event, attempts, deadline_ms FROM callback_queue
                 WHERE app = $1 AND lease_node IS NULL AND ready_ms <= $2
                 ORDER BY deadline_ms, id LIMIT $3
                 FOR UPDATE SKIP LOCKED",
                &[&(app as i64), &now, &(claim.max as i64)],
            )?;
            let first_deadline: Option<i64> = rows.first().map(|row| column(row, 3)).transpose()?;
            let due = first_deadline.is_some_and(|deadline| deadline <= now);
            if rows.is_empty() || (rows.len() < claim.max && !due) {
                let later: Option<i64> = column(
                    &tx.query_one(
                        "SELECT MIN(CASE WHEN lease_node IS NOT NULL AND lease_until_ms > $2
                                         THEN GREATEST(lease_until_ms, ready_ms) ELSE ready_ms END)
                         FROM callback_queue
                         WHERE app = $1 AND (ready_ms > $2 OR (lease_node IS NOT NULL AND lease_until_ms > $2))",
                        &[&(app as i64), &now],
                    )?,
                    0,
                )?;
                let until_ms = [first_deadline, later]
                    .into_iter()
                    .flatten()
                    .min()
                    .map(|ms| ms.max(0) as u64);
                return Ok(Claimed::Wait { until_ms });
            }
            let batch = rows
                .iter()
                .map(|row| {
                    Ok(QueuedCallback {
                        id: column::<i64>(row, 0)? as u64,
                        event: column(row, 1)?,
                        attempts: column::<i32>(row, 2)?.max(0) as u32,
                    })
                })
                .collect::<Result<Vec<_>, Failure>>()?;
            let ids: Vec<i64> = batch.iter().map(|event| event.id as i64).collect();
            tx.execute(
                "UPDATE callback_queue SET lease_node = $1, lease_until_ms = $2 WHERE id = ANY($3)",
                &[
                    &claim.node,
                    &(claim.now_ms.saturating_add(claim.lease_ms) as i64),
                    &ids,
                ],
            )?;
            tx.commit()?;
            Ok(Claimed::Batch(batch))
        })
    }

    fn delete_callbacks(&self, app: u64, ids: &[u64]) -> Result<(), StoreError> {
        self.run(|client| {
            client.execute(
                "DELETE FROM callback_queue WHERE app = $1 AND id = ANY($2)",
                &[&(app as i64), &ids_param(ids)],
            )?;
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
        self.run(|client| {
            client.execute(
                "UPDATE callback_queue
                 SET attempts = attempts + 1, ready_ms = $4, deadline_ms = $4,
                     lease_node = NULL, lease_until_ms = 0
                 WHERE app = $1 AND lease_node = $2 AND id = ANY($3)",
                &[&(app as i64), &node, &ids_param(ids), &(retry_at_ms as i64)],
            )?;
            Ok(())
        })
    }

    fn release_callbacks(&self, app: u64, node: Option<&str>) -> Result<u64, StoreError> {
        self.run(|client| {
            let released = client.execute(
                "UPDATE callback_queue SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = $1 AND lease_node IS NOT NULL AND ($2::text IS NULL OR lease_node = $2)",
                &[&(app as i64), &node],
            )?;
            Ok(released)
        })
    }

    fn callback_queue_depth(&self, app: u64) -> Result<u64, StoreError> {
        self.run(|client| {
            let depth: i64 = column(
                &client.query_one(
                    "SELECT COUNT(*) FROM callback_queue WHERE app = $1",
                    &[&(app as i64)],
                )?,
                0,
            )?;
            Ok(depth as u64)
        })
    }
}
