//! Marks of `timpush` pushes on the embedded store: one row per push per stored batch, its
//! accounts as a serialized bitmap.

use roaring::RoaringBitmap;
use rusqlite::params;

use super::{bitmap_bytes, bitmap_from, corrupt, Failure, SqliteStore};
use crate::store::{MarkStage, PushMark};

pub(super) fn append_marks(
    store: &SqliteStore,
    app: u64,
    at_ms: u64,
    marks: &[(String, MarkStage, RoaringBitmap)],
) -> Result<(), Failure> {
    let mut connection = store.connection.lock();
    let tx = connection.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO push_marks (app, task_id, stage, at_ms, accounts) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (task_id, stage, accounts) in marks {
            insert.execute(params![
                app as i64,
                task_id,
                stage.code(),
                at_ms as i64,
                bitmap_bytes(accounts)?
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn push_marks(
    store: &SqliteStore,
    app: u64,
    task_id: &str,
) -> Result<Vec<PushMark>, Failure> {
    let connection = store.connection.lock();
    let mut query = connection.prepare_cached(
        "SELECT stage, at_ms, accounts FROM push_marks WHERE app = ?1 AND task_id = ?2 ORDER BY id",
    )?;
    let mut rows = query.query(params![app as i64, task_id])?;
    let mut marks = Vec::new();
    while let Some(row) = rows.next()? {
        let code: i64 = row.get(0)?;
        let stage = MarkStage::of_code(code)
            .ok_or_else(|| corrupt(format!("mark of {task_id} has unknown stage {code}")))?;
        let at_ms: i64 = row.get(1)?;
        let blob: Vec<u8> = row.get(2)?;
        let accounts = bitmap_from(&blob, format_args!("marks of {task_id}"))?;
        marks.push(PushMark {
            stage,
            at_ms: at_ms as u64,
            accounts,
        });
    }
    Ok(marks)
}
