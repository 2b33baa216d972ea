//! [`SchedStore`] on the embedded SQLite store. Ids come from the app's row of `sched_heads`,
//! bumped in the transaction that inserts, so a deleted task's id is never given again. A
//! claim runs under `BEGIN IMMEDIATE`, so two claimants never both see a task due and free.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::{corrupt, run, Failure, SqliteStore};
use crate::store::notify::Lease;
use crate::store::sched::{
    NewSchedTask, SchedChange, SchedKind, SchedOrder, SchedOutcome, SchedStatus, SchedStore,
    SchedTask,
};
use crate::store::StoreError;

const COLUMNS: &str = "app, task_id, kind, created_ms, sched_at_ms, content, caller, status, \
                       dispatch_err, push_task_id";

fn task_from_row(row: &Row<'_>) -> Result<SchedTask, Failure> {
    let task_id = row.get::<_, i64>(1)? as u64;
    let kind: String = row.get(2)?;
    let status: String = row.get(7)?;
    Ok(SchedTask {
        app: row.get::<_, i64>(0)? as u64,
        task_id,
        kind: SchedKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("scheduled task {task_id}: type {kind:?}")))?,
        created_ms: row.get::<_, i64>(3)? as u64,
        sched_at_ms: row.get::<_, i64>(4)? as u64,
        content: row.get(5)?,
        caller: row.get(6)?,
        status: SchedStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("scheduled task {task_id}: status {status:?}")))?,
        dispatch_err: row.get(8)?,
        push_task_id: row.get(9)?,
    })
}

fn status_of(
    connection: &rusqlite::Connection,
    app: u64,
    task_id: u64,
) -> Result<SchedChange, Failure> {
    let status: Option<String> = connection
        .query_row(
            "SELECT status FROM sched_tasks WHERE app = ?1 AND task_id = ?2",
            params![app as i64, task_id as i64],
            |row| row.get(0),
        )
        .optional()?;
    Ok(match status {
        None => SchedChange::Unknown,
        Some(status) => SchedChange::NotPending(
            SchedStatus::parse(&status)
                .ok_or_else(|| corrupt(format!("scheduled task {task_id}: status {status:?}")))?,
        ),
    })
}

impl SchedStore for SqliteStore {
    fn add_sched_task(&self, task: &NewSchedTask<'_>) -> Result<u64, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let task_id: i64 = tx.query_row(
                "INSERT INTO sched_heads (app, last_id) VALUES (?1, 1)
                 ON CONFLICT (app) DO UPDATE SET last_id = last_id + 1
                 RETURNING last_id",
                params![task.app as i64],
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO sched_tasks (app, task_id, kind, created_ms, sched_at_ms, content, caller)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    task.app as i64,
                    task_id,
                    task.kind.as_str(),
                    task.created_ms as i64,
                    task.sched_at_ms as i64,
                    task.content,
                    task.caller
                ],
            )?;
            tx.commit()?;
            Ok(task_id as u64)
        })
    }

    fn sched_task(&self, app: u64, task_id: u64) -> Result<Option<SchedTask>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection.prepare(&format!(
                "SELECT {COLUMNS} FROM sched_tasks WHERE app = ?1 AND task_id = ?2"
            ))?;
            query
                .query_row(params![app as i64, task_id as i64], |row| {
                    Ok(task_from_row(row))
                })
                .optional()?
                .transpose()
        })
    }

    fn modify_sched_task(
        &self,
        app: u64,
        task_id: u64,
        sched_at_ms: u64,
        content: &str,
    ) -> Result<SchedChange, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let changed = connection.execute(
                "UPDATE sched_tasks SET sched_at_ms = ?3, content = ?4
                 WHERE app = ?1 AND task_id = ?2 AND status = 'pending'",
                params![app as i64, task_id as i64, sched_at_ms as i64, content],
            )?;
            if changed > 0 {
                return Ok(SchedChange::Done);
            }
            status_of(&connection, app, task_id)
        })
    }

    fn delete_sched_task(&self, app: u64, task_id: u64) -> Result<SchedChange, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let deleted = connection.execute(
                "DELETE FROM sched_tasks WHERE app = ?1 AND task_id = ?2 AND status = 'pending'",
                params![app as i64, task_id as i64],
            )?;
            if deleted > 0 {
                return Ok(SchedChange::Done);
            }
            status_of(&connection, app, task_id)
        })
    }

    fn sched_tasks_between(
        &self,
        app: u64,
        order: SchedOrder,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<SchedTask>, StoreError> {
        let column = match order {
            SchedOrder::CreatedAt => "created_ms",
            SchedOrder::SchedAt => "sched_at_ms",
        };
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection.prepare(&format!(
                "SELECT {COLUMNS} FROM sched_tasks
                 WHERE app = ?1 AND {column} BETWEEN ?2 AND ?3
                 ORDER BY {column}, task_id"
            ))?;
            let mut rows = query.query(params![app as i64, from_ms as i64, to_ms as i64])?;
            let mut tasks = Vec::new();
            while let Some(row) = rows.next()? {
                tasks.push(task_from_row(row)?);
            }
            Ok(tasks)
        })
    }

    fn next_sched_at(&self, app: u64) -> Result<Option<u64>, StoreError> {
        run(|| {
            let next: Option<i64> = self.connection.lock().query_row(
                "SELECT MIN(CASE status WHEN 'pending' THEN sched_at_ms
                                        ELSE MAX(sched_at_ms, lease_until_ms) END)
                 FROM sched_tasks WHERE app = ?1 AND status IN ('pending', 'dispatching')",
                params![app as i64],
                |row| row.get(0),
            )?;
            Ok(next.map(|ms| ms as u64))
        })
    }

    fn claim_sched_task(
        &self,
        app: u64,
        lease: Lease<'_>,
    ) -> Result<Option<SchedTask>, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let due = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM sched_tasks
                         WHERE app = ?1 AND sched_at_ms <= ?3
                           AND (status = 'pending'
                                OR (status = 'dispatching'
                                    AND (lease_node = ?2 OR lease_until_ms <= ?3)))
                         ORDER BY sched_at_ms, task_id LIMIT 1"
                    ),
                    params![app as i64, lease.node, lease.now_ms as i64],
                    |row| Ok(task_from_row(row)),
                )
                .optional()?
                .transpose()?;
            let Some(task) = due else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE sched_tasks SET status = 'dispatching', lease_node = ?3, lease_until_ms = ?4
                 WHERE app = ?1 AND task_id = ?2",
                params![
                    app as i64,
                    task.task_id as i64,
                    lease.node,
                    lease.now_ms.saturating_add(lease.lease_ms) as i64
                ],
            )?;
            tx.commit()?;
            Ok(Some(task))
        })
    }

    fn finish_sched_task(
        &self,
        app: u64,
        task_id: u64,
        node: &str,
        outcome: SchedOutcome<'_>,
    ) -> Result<(), StoreError> {
        let (status, error, push_task_id) = match outcome {
            SchedOutcome::Dispatched { push_task_id } => {
                (SchedStatus::Dispatched, "", push_task_id)
            }
            SchedOutcome::Failed { error } => (SchedStatus::Failed, error, ""),
        };
        run(|| {
            let finished = self.connection.lock().execute(
                "UPDATE sched_tasks
                 SET status = ?4, dispatch_err = ?5, push_task_id = ?6, lease_node = NULL, lease_until_ms = 0
                 WHERE app = ?1 AND task_id = ?2 AND status = 'dispatching' AND lease_node = ?3",
                params![app as i64, task_id as i64, node, status.as_str(), error, push_task_id],
            )?;
            if finished == 0 {
                return Err(StoreError::Conflict(format!(
                    "node {node} does not hold scheduled task {task_id} (any more)"
                ))
                .into());
            }
            Ok(())
        })
    }

    fn release_sched_task(&self, app: u64, task_id: u64, node: &str) -> Result<(), StoreError> {
        run(|| {
            self.connection.lock().execute(
                "UPDATE sched_tasks SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = ?1 AND task_id = ?2 AND status = 'dispatching' AND lease_node = ?3",
                params![app as i64, task_id as i64, node],
            )?;
            Ok(())
        })
    }

    fn sched_task_push(&self, app: u64, sched_task_id: u64) -> Result<Option<String>, StoreError> {
        run(|| {
            Ok(self
                .connection
                .lock()
                .query_row(
                    "SELECT task_id FROM pushes WHERE app = ?1 AND sched_task_id = ?2
                     ORDER BY seq LIMIT 1",
                    params![app as i64, sched_task_id as i64],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }
}
