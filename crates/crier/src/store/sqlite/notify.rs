//! [`NotifyStore`] on the embedded SQLite store. A job's lease is two columns of its row,
//! `lease_node` and `lease_until_ms`; claims run under `BEGIN IMMEDIATE`, so two claimants
//! (threads or processes) never both see the lease free.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::{bitmap_from, run, Failure, SqliteStore};
use crate::store::notify::{
    JobProgress, Lease, NotifyStore, StoredDevice, StoredJob, StoredOverwrite,
};
use crate::store::StoreError;

const JOB_COLUMNS: &str = "task_id, targets, cursor, counts, done";

fn job_from_row(row: &Row<'_>) -> Result<StoredJob, Failure> {
    let task_id: String = row.get(0)?;
    let blob: Vec<u8> = row.get(1)?;
    let targets = bitmap_from(&blob, format_args!("notification targets of {task_id}"))?;
    Ok(StoredJob {
        task_id,
        targets,
        cursor: row.get(2)?,
        counts: row.get(3)?,
        done: row.get(4)?,
    })
}

const OVERWRITE_COLUMNS: &str = "o.task_id, j.targets, j.cursor, o.cursor, o.counts";

fn overwrite_from_row(row: &Row<'_>) -> Result<StoredOverwrite, Failure> {
    let task_id: String = row.get(0)?;
    let blob: Vec<u8> = row.get(1)?;
    let targets = bitmap_from(&blob, format_args!("notification targets of {task_id}"))?;
    Ok(StoredOverwrite {
        task_id,
        targets,
        upto: row.get(2)?,
        cursor: row.get(3)?,
        counts: row.get(4)?,
    })
}

impl NotifyStore for SqliteStore {
    fn put_device(
        &self,
        app: u64,
        account: &str,
        platform: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        run(|| {
            self.connection.lock().execute(
                "INSERT INTO devices (app, platform, token, account) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app, platform, token) DO UPDATE SET account = excluded.account",
                params![app as i64, platform, token, account],
            )?;
            Ok(())
        })
    }

    fn delete_device(&self, app: u64, platform: &str, token: &str) -> Result<bool, StoreError> {
        run(|| {
            let deleted = self.connection.lock().execute(
                "DELETE FROM devices WHERE app = ?1 AND platform = ?2 AND token = ?3",
                params![app as i64, platform, token],
            )?;
            Ok(deleted > 0)
        })
    }

    fn delete_account_devices(&self, app: u64, account: &str) -> Result<(), StoreError> {
        run(|| {
            self.connection.lock().execute(
                "DELETE FROM devices WHERE app = ?1 AND account = ?2",
                params![app as i64, account],
            )?;
            Ok(())
        })
    }

    fn load_devices(&self, app: u64) -> Result<Vec<StoredDevice>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection
                .prepare("SELECT account, platform, token FROM devices WHERE app = ?1")?;
            let devices = query
                .query_map(params![app as i64], |row| {
                    Ok(StoredDevice {
                        account: row.get(0)?,
                        platform: row.get(1)?,
                        token: row.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(devices)
        })
    }

    fn claim_job(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredJob>, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimable = tx
                .query_row(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM notify_jobs
                         WHERE app = ?1 AND NOT done
                           AND (lease_node IS NULL OR lease_node = ?2 OR lease_until_ms <= ?3)
                         ORDER BY seq LIMIT 1"
                    ),
                    params![app as i64, node, now_ms as i64],
                    |row| Ok(job_from_row(row)),
                )
                .optional()?
                .transpose()?;
            let Some(job) = claimable else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE notify_jobs SET lease_node = ?3, lease_until_ms = ?4 WHERE app = ?1 AND task_id = ?2",
                params![
                    app as i64,
                    job.task_id,
                    node,
                    now_ms.saturating_add(lease_ms) as i64
                ],
            )?;
            tx.commit()?;
            Ok(Some(job))
        })
    }

    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        lease: Lease<'_>,
        progress: JobProgress<'_>,
    ) -> Result<(), StoreError> {
        run(|| {
            let updated = self.connection.lock().execute(
                "UPDATE notify_jobs SET cursor = ?4, counts = ?5, done = done OR ?6, lease_until_ms = ?7
                 WHERE app = ?1 AND task_id = ?2 AND lease_node = ?3",
                params![
                    app as i64,
                    task_id,
                    lease.node,
                    progress.cursor,
                    progress.counts,
                    progress.done,
                    lease.now_ms.saturating_add(lease.lease_ms) as i64
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
        run(|| {
            self.connection.lock().execute(
                "UPDATE notify_jobs SET lease_node = NULL, lease_until_ms = 0
                 WHERE app = ?1 AND task_id = ?2 AND lease_node = ?3",
                params![app as i64, task_id, node],
            )?;
            Ok(())
        })
    }

    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM notify_jobs WHERE app = ?1 AND NOT done ORDER BY seq"
            ))?;
            let mut rows = query.query(params![app as i64])?;
            let mut jobs = Vec::new();
            while let Some(row) = rows.next()? {
                jobs.push(job_from_row(row)?);
            }
            Ok(jobs)
        })
    }

    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM notify_jobs WHERE app = ?1 AND task_id = ?2"
            ))?;
            query
                .query_row(params![app as i64, task_id], |row| Ok(job_from_row(row)))
                .optional()?
                .transpose()
        })
    }

    fn claim_overwrite(
        &self,
        app: u64,
        node: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<StoredOverwrite>, StoreError> {
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimable = tx
                .query_row(
                    &format!(
                        "SELECT {OVERWRITE_COLUMNS} FROM notify_overwrites o
                         JOIN notify_jobs j ON j.app = o.app AND j.task_id = o.task_id
                         WHERE o.app = ?1 AND NOT o.done
                           AND (j.lease_node IS NULL OR j.lease_node = ?2 OR j.lease_until_ms <= ?3)
                         ORDER BY o.seq LIMIT 1"
                    ),
                    params![app as i64, node, now_ms as i64],
                    |row| Ok(overwrite_from_row(row)),
                )
                .optional()?
                .transpose()?;
            let Some(overwrite) = claimable else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE notify_jobs SET lease_node = ?3, lease_until_ms = ?4 WHERE app = ?1 AND task_id = ?2",
                params![
                    app as i64,
                    overwrite.task_id,
                    node,
                    now_ms.saturating_add(lease_ms) as i64
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
        run(|| {
            let mut connection = self.connection.lock();
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let renewed = tx.execute(
                "UPDATE notify_jobs SET lease_until_ms = ?4 WHERE app = ?1 AND task_id = ?2 AND lease_node = ?3",
                params![
                    app as i64,
                    task_id,
                    lease.node,
                    lease.now_ms.saturating_add(lease.lease_ms) as i64
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
                "UPDATE notify_overwrites SET cursor = ?3, counts = ?4, done = done OR ?5
                 WHERE app = ?1 AND task_id = ?2",
                params![
                    app as i64,
                    task_id,
                    progress.cursor,
                    progress.counts,
                    progress.done
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn overwrite(&self, app: u64, task_id: &str) -> Result<Option<StoredOverwrite>, StoreError> {
        run(|| {
            let connection = self.connection.lock();
            let mut query = connection.prepare(&format!(
                "SELECT {OVERWRITE_COLUMNS} FROM notify_overwrites o
                 JOIN notify_jobs j ON j.app = o.app AND j.task_id = o.task_id
                 WHERE o.app = ?1 AND o.task_id = ?2"
            ))?;
            query
                .query_row(params![app as i64, task_id], |row| {
                    Ok(overwrite_from_row(row))
                })
                .optional()?
                .transpose()
        })
    }
}
