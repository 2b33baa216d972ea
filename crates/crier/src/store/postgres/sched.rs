//! [`SchedStore`] on PostgreSQL. Ids come from the app's row of `sched_heads`, bumped with an
//! upsert that locks the row, so racing nodes never give one id twice and a deleted task's id
//! is never given again. A claim is one `UPDATE` of the earliest due task, picked with
//! `FOR UPDATE SKIP LOCKED` as notification jobs are: racing nodes never both take one task.

use postgres::{GenericClient, Row};

use super::{column, corrupt, Failure, PostgresStore};
use crate::store::notify::Lease;
use crate::store::sched::{
    NewSchedTask, SchedChange, SchedKind, SchedOrder, SchedOutcome, SchedStatus, SchedStore,
    SchedTask,
};
use crate::store::StoreError;

const COLUMNS: &str = "app, task_id, kind, created_ms, sched_at_ms, content, caller, status, \
                       dispatch_err, push_task_id";

fn status_column(task_id: u64, status: &str) -> Result<SchedStatus, Failure> {
    SchedStatus::parse(status)
        .ok_or_else(|| corrupt(format!("scheduled task {task_id}: status {status:?}")))
}

fn task_from_row(row: &Row) -> Result<SchedTask, Failure> {
    let task_id = column::<i64>(row, 1)? as u64;
    let kind: String = column(row, 2)?;
    Ok(SchedTask {
        app: column::<i64>(row, 0)? as u64,
        task_id,
        kind: SchedKind::parse(&kind)
            .ok_or_else(|| corrupt(format!("scheduled task {task_id}: type {kind:?}")))?,
        created_ms: column::<i64>(row, 3)? as u64,
        sched_at_ms: column::<i64>(row, 4)? as u64,
        content: column(row, 5)?,
        caller: column(row, 6)?,
        status: status_column(task_id, column(row, 7)?)?,
        dispatch_err: column(row, 8)?,
        push_task_id: column(row, 9)?,
    })
}

/// Why a change of `task_id` matched no pending row.
fn status_of(
    client: &mut impl GenericClient,
    app: u64,
    task_id: u64,
) -> Result<SchedChange, Failure> {
    let row = client.query_opt(
        "SELECT status FROM sched_tasks WHERE app = $1 AND task_id = $2",
        &[&(app as i64), &(task_id as i64)],
    )?;
    Ok(match row {
        None => SchedChange::Unknown,
        Some(row) => SchedChange::NotPending(status_column(task_id, column(&row, 0)?)?),
    })
}

impl SchedStore for PostgresStore {
    fn add_sched_task(&self, task: &NewSchedTask<'_>) -> Result<u64, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            let task_id: i64 = column(
                &tx.query_one(
                    "INSERT INTO sched_heads (app, last_id) VALUES ($1, 1)
                     ON CONFLICT (app) DO UPDATE SET last_id = sched_heads.last_id + 1
                     RETURNING last_id",
                    &[&(task.app as i64)],
                )?,
                0,
            )?;
            tx.execute(
                "INSERT INTO sched_tasks (app, task_id, kind, created_ms, sched_at_ms, content, caller)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &(task.app as i64),
                    &task_id,
                    &task.kind.as_str(),
                    &(task.created_ms as i64),
                    &(task.sched_at_ms as i64),
                    &task.content,
                    &task.caller,
                ],
            )?;
            tx.commit()?;
            Ok(task_id as u64)
        })
    }

    fn sched_task(&self, app: u64, task_id: u64) -> Result<Option<SchedTask>, StoreError> {
        self.run(|client| {
            let row = client.query_opt(
                &format!("SELECT {COLUMNS} FROM sched_tasks WHERE app = $1 AND task_id = $2"),
                &[&(app as i64), &(task_id as i64)],
            )?;
            row.as_ref().map(task_from_row).transpose()
        })
    }

    fn modify_sched_task(
        &self,
        app: u64,
        task_id: u64,
        sched_at_ms: u64,
        content: &str,
    ) -> Result<SchedChange, StoreError> {
        self.run(|client| {
            let changed = client.execute(
                "UPDATE sched_tasks SET sched_at_ms = $3, content = $4
                 WHERE app = $1 AND task_id = $2 AND status = 'pending'",
                &[
                    &(app as i64),
                    &(task_id as i64),
                    &(sched_at_ms as i64),
                    &content,
                ],
            )?;
            if changed > 0 {
                return Ok(SchedChange::Done);
            }
            status_of(client, app, task_id)
        })
    }

    fn delete_sched_task(&self, app: u64, task_id: u64) -> Result<SchedChange, StoreError> {
        self.run(|client| {
            let deleted = client.execute(
                "DELETE FROM sched_tasks WHERE app = $1 AND task_id = $2 AND status = 'pending'",
                &[&(app as i64), &(task_id as i64)],
            )?;
            if deleted > 0 {
                return Ok(SchedChange::Done);
            }
            status_of(client, app, task_id)
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
        self.run(|client| {
            let rows = client.query(
                &format!(
                    "SELECT {COLUMNS} FROM sched_tasks
                     WHERE app = $1 AND {column} BETWEEN $2 AND $3
                     ORDER BY {column}, task_id"
                ),
                &[&(app as i64), &(from_ms as i64), &(to_ms as i64)],
            )?;
            rows.iter().map(task_from_row).collect()
        })
    }

    fn next_sched_at(&self, app: u64) -> Result<Option<u64>, StoreError> {
        self.run(|client| {
            let row = client.query_one(
                "SELECT MIN(CASE status WHEN 'pending' THEN sched_at_ms
                                        ELSE GREATEST(sched_at_ms, lease_until_ms) END)
                 FROM sched_tasks WHERE app = $1 AND status IN ('pending', 'dispatching')",
                &[&(app as i64)],
            )?;
            Ok(column::<Option<i64>>(&row, 0)?.map(|ms| ms as u64))
        })
    }

    fn claim_sched_task(
        &self,
        app: u64,
        lease: Lease<'_>,
    ) -> Result<Option<SchedTask>, StoreError> {
        self.run(|client| {
            // `due` is the row as it was before the update: the status the runner is told. It is
            // materialized, so the row is picked and locked once (a subquery joined in `FROM`
            // may be evaluated again when a racing claim commits, and take a second row).
            let claimed = client.query_opt(
                "WITH due AS MATERIALIZED (
                     SELECT task_id, status FROM sched_tasks
                     WHERE app = $1 AND sched_at_ms <= $3
                       AND (status = 'pending'
                            OR (status = 'dispatching' AND (lease_node = $2 OR lease_until_ms <= $3)))
                     ORDER BY sched_at_ms, task_id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 UPDATE sched_tasks AS task
                 SET status = 'dispatching', lease_node = $2, lease_until_ms = $4
                 FROM due
                 WHERE task.app = $1 AND task.task_id = due.task_id
                 RETURNING task.app, task.task_id, task.kind, task.created_ms, task.sched_at_ms,
                           task.content, task.caller, due.status, task.dispatch_err,
                           task.push_task_id",
                &[
                    &(app as i64),
                    &lease.node,
                    &(lease.now_ms as i64),
                    &(lease.now_ms.saturating_add(lease.lease_ms) as i64),
                ],
            )?;
            claimed.as_ref().map(task_from_row).transpose()
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
        self.run(|client| {
            let finished = client.execute(
                "UPDATE sched_tasks
                 SET status = $4, dispatch_err = $5, push_task_id = $6, lease_node = NULL, lease_until_ms = 0
                 WHERE app = $1 AND task_id = $2 AND status = 'dispatching' AND lease_node = $3",
                &[
                    &(app as i64),
                    &(task_id as i64),
                    &node,
                    &status.as_str(),
                    &error,
                    &push_task_id,
                ],
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
        self.run(|client| {
            client.execute(
                "UPDATE sched_tasks SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = $1 AND task_id = $2 AND status = 'dispatching' AND lease_node = $3",
                &[&(app as i64), &(task_id as i64), &node],
            )?;
            Ok(())
        })
    }

    fn sched_task_push(&self, app: u64, sched_task_id: u64) -> Result<Option<String>, StoreError> {
        self.run(|client| {
            let row = client.query_opt(
                "SELECT task_id FROM pushes WHERE app = $1 AND sched_task_id = $2
                 ORDER BY seq LIMIT 1",
                &[&(app as i64), &(sched_task_id as i64)],
            )?;
            row.as_ref().map(|row| column(row, 0)).transpose()
        })
    }
}
