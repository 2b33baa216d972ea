//! Marks of `timpush` pushes on PostgreSQL: one row per push per stored batch, its accounts
//! as a serialized bitmap.

use postgres::Client;
use roaring::RoaringBitmap;

use super::{bitmap_bytes, bitmap_from, column, corrupt, Failure};
use crate::store::{MarkStage, PushMark};

pub(super) fn append_marks(
    client: &mut Client,
    app: u64,
    at_ms: u64,
    marks: &[(String, MarkStage, RoaringBitmap)],
) -> Result<(), Failure> {
    if marks.is_empty() {
        return Ok(());
    }
    let mut task_ids = Vec::with_capacity(marks.len());
    let mut stages = Vec::with_capacity(marks.len());
    let mut accounts = Vec::with_capacity(marks.len());
    for (task_id, stage, marked) in marks {
        task_ids.push(task_id.as_str());
        stages.push(stage.code() as i16);
        accounts.push(bitmap_bytes(marked)?);
    }
    client.execute(
        "INSERT INTO push_marks (app, task_id, stage, at_ms, accounts)
         SELECT $1, task_id, stage, $2, accounts
         FROM UNNEST($3::TEXT[], $4::SMALLINT[], $5::BYTEA[]) WITH ORDINALITY AS batch (task_id, stage, accounts, n)
         ORDER BY n",
        &[&(app as i64), &(at_ms as i64), &task_ids, &stages, &accounts],
    )?;
    Ok(())
}

pub(super) fn push_marks(
    client: &mut Client,
    app: u64,
    task_id: &str,
) -> Result<Vec<PushMark>, Failure> {
    let rows = client.query(
        "SELECT stage, at_ms, accounts FROM push_marks WHERE app = $1 AND task_id = $2 ORDER BY id",
        &[&(app as i64), &task_id],
    )?;
    rows.iter()
        .map(|row| {
            let code = i64::from(column::<i16>(row, 0)?);
            let stage = MarkStage::of_code(code)
                .ok_or_else(|| corrupt(format!("mark of {task_id} has unknown stage {code}")))?;
            Ok(PushMark {
                stage,
                at_ms: column::<i64>(row, 1)? as u64,
                accounts: bitmap_from(column(row, 2)?, format_args!("marks of {task_id}"))?,
            })
        })
        .collect()
}
