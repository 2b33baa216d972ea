//! [`NotifyStore`] on the embedded SQLite store.

use roaring::RoaringBitmap;
use rusqlite::{params, OptionalExtension, Row};

use super::notify::{NotifyStore, StoredDevice, StoredJob};
use super::sqlite::SqliteStore;
use super::StoreError;

fn job_from_row(row: &Row<'_>) -> Result<StoredJob, StoreError> {
    let task_id: String = row.get(0)?;
    let blob: Vec<u8> = row.get(1)?;
    let targets = RoaringBitmap::deserialize_from(blob.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("notification targets of {task_id}: {e}")))?;
    Ok(StoredJob {
        task_id,
        targets,
        cursor: row.get(2)?,
        counts: row.get(3)?,
        done: row.get(4)?,
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
        self.connection.lock().execute(
            "INSERT INTO devices (app, platform, token, account) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (app, platform, token) DO UPDATE SET account = excluded.account",
            params![app as i64, platform, token, account],
        )?;
        Ok(())
    }

    fn delete_device(&self, app: u64, platform: &str, token: &str) -> Result<bool, StoreError> {
        let deleted = self.connection.lock().execute(
            "DELETE FROM devices WHERE app = ?1 AND platform = ?2 AND token = ?3",
            params![app as i64, platform, token],
        )?;
        Ok(deleted > 0)
    }

    fn delete_account_devices(&self, app: u64, account: &str) -> Result<(), StoreError> {
        self.connection.lock().execute(
            "DELETE FROM devices WHERE app = ?1 AND account = ?2",
            params![app as i64, account],
        )?;
        Ok(())
    }

    fn load_devices(&self, app: u64) -> Result<Vec<StoredDevice>, StoreError> {
        let connection = self.connection.lock();
        let mut query =
            connection.prepare("SELECT account, platform, token FROM devices WHERE app = ?1")?;
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
    }

    fn update_job(
        &self,
        app: u64,
        task_id: &str,
        cursor: u32,
        counts: &str,
        done: bool,
    ) -> Result<(), StoreError> {
        self.connection.lock().execute(
            "UPDATE notify_jobs SET cursor = ?3, counts = ?4, done = ?5 WHERE app = ?1 AND task_id = ?2",
            params![app as i64, task_id, cursor, counts, done],
        )?;
        Ok(())
    }

    fn unfinished_jobs(&self, app: u64) -> Result<Vec<StoredJob>, StoreError> {
        let connection = self.connection.lock();
        let mut query = connection.prepare(
            "SELECT task_id, targets, cursor, counts, done FROM notify_jobs
             WHERE app = ?1 AND NOT done ORDER BY seq",
        )?;
        let mut rows = query.query(params![app as i64])?;
        let mut jobs = Vec::new();
        while let Some(row) = rows.next()? {
            jobs.push(job_from_row(row)?);
        }
        Ok(jobs)
    }

    fn job(&self, app: u64, task_id: &str) -> Result<Option<StoredJob>, StoreError> {
        let connection = self.connection.lock();
        let mut query = connection.prepare(
            "SELECT task_id, targets, cursor, counts, done FROM notify_jobs WHERE app = ?1 AND task_id = ?2",
        )?;
        let row = query
            .query_row(params![app as i64, task_id], |row| Ok(job_from_row(row)))
            .optional()?;
        row.transpose()
    }
}
