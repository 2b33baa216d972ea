//! [`NotifyStore`] on PostgreSQL. A job's lease is two columns of its row, `lease_node` and
//! `lease_until_ms`. A claim is one `UPDATE` of the oldest claimable job, picked with
//! `FOR UPDATE SKIP LOCKED`: racing claimants never both take one job, and one that finds the
//! job locked by another claim moves on instead of waiting.

use postgres::Row;

use super::{bitmap_from, column, u32_column, Failure, PostgresStore};
use crate::store::notify::{
    JobProgress, Lease, NotifyStore, StoredDevice, StoredJob, StoredOverwrite,
};
use crate::store::StoreError;

const JOB_COLUMNS: &str = "task_id, targets, cursor, counts, done";

fn job_from_row(row: &Row) -> Result<StoredJob, Failure> {
    let task_id: String = column(row, 0)?;
    let targets = bitmap_from(
        column(row, 1)?,
        format_args!("notification targets of {task_id}"),
    )?;
    Ok(StoredJob {
        targets,
        cursor: u32_column(row, 2)?,
        counts: column(row, 3)?,
        done: column(row, 4)?,
        task_id,
    })
}

const OVERWRITE_COLUMNS: &str = "o.task_id, j.targets, j.cursor, o.cursor, o.counts";

fn overwrite_from_row(row: &Row) -> Result<StoredOverwrite, Failure> {
    let task_id: String = column(row, 0)?;
    let targets = bitmap_from(
        column(row, 1)?,
        format_args!("notification targets of {task_id}"),
    )?;
    Ok(StoredOverwrite {
        targets,
        upto: u32_column(row, 2)?,
        cursor: u32_column(row, 3)?,
        counts: column(row, 4)?,
        task_id,
    })
}

impl NotifyStore for PostgresStore {
    fn put_device(
        &self,
        app: u64,
        account: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        self.run(|client| {
            client.execute(
                "INSERT INTO devices (app, platform, token, account) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (app, platform, token) DO UPDATE SET account = excluded.account",
                &[&(app as i64), &platform, &token, &account],
            )?;
            Ok(())
        })
    }

    fn delete_device(&self, app: u64, platform: &str, token: &str) -> Result<bool, StoreError> {
        self.run(|client| {
            let deleted = client.execute(
                "DELETE FROM devices WHERE app = $1 AND platform = $2 AND token = $3",
                &[&(app as i64), &platform, &token],
            )?;
            Ok(deleted > 0)
        })
    }

    fn delete_account_devices(&self, app: u64, account: &str) -> Result<(), StoreError> {
        self.run(|client| {
            client.execute(
                "DELETE FROM devices WHERE app = $1 AND account = $2",
                &[&(app as i64), &account],
            )?;
            Ok(())
        })
    }

    fn load_devices(&self, app: u64) -> Result<Vec<StoredDevice>, StoreError> {
        self.run(|client| {
            let rows = client.query(
                "SELECT account, platform, token FROM devices WHERE app = $1",
                &[&(app as i64)],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(StoredDevice {
                        account: column(row, 0)?,
                        platform: column(row, 1)?,
                        token: column(row, 2)?,
                    })
                })
                .collect()
        })
    }

    fn claim_job(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredJob>, StoreError> {
        self.run(|client| {
            let claimed = client.query_opt(
                &format!(
                    "UPDATE notify_jobs SET lease_node = $2, lease_until_ms = $4
                     WHERE seq = (
                         SELECT seq FROM notify_jobs
                         WHERE app = $1 AND NOT done
                           AND (lease_node IS NULL OR lease_node = $2 OR lease_until_ms <= $3)
                         ORDER BY seq LIMIT 1
                         FOR UPDATE SKIP LOCKED)
                     RETURNING {JOB_COLUMNS}"
                ),
                &[
                    &(app as i64),
                    &node,
                    &(now_ms as i64),
                    &(now_ms.saturating_add(lease_ms) as i64),
                ],
            )?;
            claimed.as_ref().map(job_from_row).transpose()
        })
    }

    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError> {
        self.run(|client| {
            let updated = client.execute(
                "UPDATE notify_jobs SET cursor = $4, counts = $5, done = done OR $6, lease_until_ms = $7
                 WHERE app = $1 AND task_id = $2 AND lease_node = $3",
                &[
                    &(app as i64),
                    &task_id,
                    &lease.node,
                    &i64::from(progress.cursor),
                    &progress.counts,
                    &progress.done,
                    &(lease.now_ms.saturating_add(lease.lease_ms) as i64),
                ],
            )?;
            if updated == 0 {
                return Err(StoreError::Conflict(format!(
                    "node {} does not hold the notification job of {task_id} (any more): stop the run",
                    lease.node
                ))
                .into());
            }
            Ok(())
        })
    }

    fn release_job(&self, app: u64, task_id: &str, node: &str) -> Result<(), StoreError> {
        self.run(|client| {
            client.execute(
                "UPDATE notify_jobs SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = $1 AND task_id = $2 AND lease_node = $3",
                &[&(app as i64), &task_id, &node],
            )?;
            Ok(())
        })
    }

    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError> {
        self.run(|client| {
            let rows = client.query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM notify_jobs WHERE app = $1 AND NOT done ORDER BY seq"
                ),
                &[&(app as i64)],
            )?;
            rows.iter().map(job_from_row).collect()
        })
    }

    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError> {
        self.run(|client| {
            let row = client.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM notify_jobs WHERE app = $1 AND task_id = $2"),
                &[&(app as i64), &task_id],
            )?;
            row.as_ref().map(job_from_row).transpose()
        })
    }

    fn claim_overwrite(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredOverwrite>, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            // Locks the job's row, so a racing claimant (of the overwrite or of the job) waits
            // or skips it.
            let claimable = tx.query_opt(
                &format!(
                    "SELECT {OVERWRITE_COLUMNS} FROM notify_overwrites o
                     JOIN notify_jobs j ON j.app = o.app AND j.task_id = o.task_id
                     WHERE o.app = $1 AND NOT o.done
                       AND (j.lease_node IS NULL OR j.lease_node = $2 OR j.lease_until_ms <= $3)
                     ORDER BY o.seq LIMIT 1
                     FOR UPDATE OF j SKIP LOCKED"
                ),
                &[&(app as i64), &node, &(now_ms as i64)],
            )?;
            let Some(overwrite) = claimable.as_ref().map(overwrite_from_row).transpose()? else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE notify_jobs SET lease_node = $3, lease_until_ms = $4 WHERE app = $1 AND task_id = $2",
                &[
                    &(app as i64),
                    &overwrite.task_id,
                    &node,
                    &(now_ms.saturating_add(lease_ms) as i64),
                ],
            )?;
            tx.commit()?;
            Ok(Some(overwrite))
        })
    }

    fn update_overwrite(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError> {
        self.run(|client| {
            let mut tx = client.transaction()?;
            let renewed = tx.execute(
                "UPDATE notify_jobs SET lease_until_ms = $4 WHERE app = $1 AND task_id = $2 AND lease_node = $3",
                &[
                    &(app as i64),
                    &task_id,
                    &lease.node,
                    &(lease.now_ms.saturating_add(lease.lease_ms) as i64),
                ],
            )?;
            if renewed == 0 {
                return Err(StoreError::Conflict(format!(
                    "node {} does not hold the notification job of {task_id} (any more): stop the overwrite",
                    lease.node
                ))
                .into());
            }
            tx.execute(
                "UPDATE notify_overwrites SET cursor = $3, counts = $4, done = done OR $5
                 WHERE app = $1 AND task_id = $2",
                &[
                    &(app as i64),
                    &task_id,
                    &i64::from(progress.cursor),
                    &progress.counts,
                    &progress.done,
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn overwrite(&self, app: u64, task_id: &str) -> Result<Option<StoredOverwrite>, StoreError> {
        self.run(|client| {
            let row = client.query_opt(
                &format!(
                    "SELECT {OVERWRITE_COLUMNS} FROM notify_overwrites o
                     JOIN notify_jobs j ON j.app = o.app AND j.task_id = o.task_id
                     WHERE o.app = $1 AND o.task_id = $2"
                ),
                &[&(app as i64), &task_id],
            )?;
            row.as_ref().map(overwrite_from_row).transpose()
        })
    }
}
