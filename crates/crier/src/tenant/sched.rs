//! Scheduled tasks (`timpush.md` §9), the façade's side: the five commands, each checked as the
//! contract orders it (body, `Sdkappid`, fields, `Content` as the push or batch it holds would
//! be checked now, then the rate of 5 calls per second per command on this node), then
//! stored. Running the tasks is [`super::sched_run`]'s.

use std::sync::Arc;

use crier_proto::codes;
use serde_json::{Map, Value};

use super::Tenant;
use crate::clock::now_ms;
use crate::error::Error;
use crate::push::limits::PerSecond;
use crate::push::sched::{self, ListRequest};
use crate::store::sched::{NewSchedTask, SchedChange, SchedKind, SchedStatus, SchedTask};

/// Calls per second of each scheduled-task command (Tencent's limit).
pub const CALLS_PER_SECOND: u32 = 5;

/// What the app keeps in memory for its scheduled tasks.
#[derive(Default)]
pub(super) struct SchedState {
    add: PerSecond,
    modify: PerSecond,
    delete: PerSecond,
    get: PerSecond,
    list: PerSecond,
    /// Wakes the runner when a task was added or moved on this node.
    pub(super) changed: tokio::sync::Notify,
}

/// A page of `list_sched_task`.
pub struct SchedList {
    /// Every task that matched, beyond the page too.
    pub total: usize,
    pub tasks: Vec<SchedTask>,
}

fn unknown_task(task_id: u64) -> Error {
    Error::rejected(
        codes::BAD_PARAMETER,
        format!("this app has no scheduled task {task_id}"),
    )
}

fn not_pending(what: &str, status: SchedStatus) -> Error {
    Error::rejected(
        codes::SCHED_TASK_NOT_PENDING,
        format!(
            "{what} failed: task {}; only a pending task can be changed",
            status.as_str()
        ),
    )
}

fn type_mismatch(task: &SchedTask, given: SchedKind) -> Error {
    Error::rejected(
        codes::BAD_PARAMETER,
        format!(
            "task {} is of Type {}, not {}; the type cannot change",
            task.task_id,
            task.kind.as_str(),
            given.as_str()
        ),
    )
}

impl Tenant {
    /// `add_sched_task` from admin `caller`, who the run is made for: answers the new TaskID.
    pub async fn add_sched_task(
        self: &Arc<Self>,
        body: &Value,
        caller: &str,
    ) -> Result<u64, Error> {
        let now = now_ms();
        let request = sched::parse_add(body, self.sdkappid(), now)?;
        let content = self.checked_content(request.kind, request.content)?;
        self.take_sched_call(&self.sched.add, "add_sched_task")?;
        let tenant = Arc::clone(self);
        let caller = caller.to_owned();
        let task_id = tokio::task::spawn_blocking(move || {
            tenant.store.add_sched_task(&NewSchedTask {
                app: tenant.sdkappid(),
                kind: request.kind,
                created_ms: now,
                sched_at_ms: request.sched_at_ms,
                content: &content,
                caller: &caller,
            })
        })
        .await??;
        tracing::info!(app = self.sdkappid(), task_id, sched_at = %sched::format_time(request.sched_at_ms), kind = request.kind.as_str(), "scheduled task added");
        self.sched.changed.notify_one();
        Ok(task_id)
    }

    /// `modify_sched_task`: a pending task's time, or keys of its `Content` (merged at the top
    /// level, then checked whole as at creation). Answers the TaskID.
    pub async fn modify_sched_task(self: &Arc<Self>, body: &Value) -> Result<u64, Error> {
        let request = sched::parse_modify(body, self.sdkappid(), now_ms())?;
        let task = self.stored_sched_task(request.task_id).await?;
        if task.kind != request.kind {
            return Err(type_mismatch(&task, request.kind));
        }
        if task.status != SchedStatus::Pending {
            return Err(not_pending("modify", task.status));
        }
        let content = match request.content {
            None => task.content.clone(),
            Some(changes) => {
                let mut merged = match serde_json::from_str::<Value>(&task.content) {
                    Ok(Value::Object(stored)) => stored,
                    _ => Map::new(),
                };
                merged.extend(changes);
                self.checked_content(task.kind, merged)?
            }
        };
        let sched_at_ms = request.sched_at_ms.unwrap_or(task.sched_at_ms);
        self.take_sched_call(&self.sched.modify, "modify_sched_task")?;
        let tenant = Arc::clone(self);
        let task_id = task.task_id;
        let changed = tokio::task::spawn_blocking(move || {
            tenant
                .store
                .modify_sched_task(tenant.sdkappid(), task_id, sched_at_ms, &content)
        })
        .await??;
        match changed {
            SchedChange::Done => {}
            SchedChange::NotPending(status) => return Err(not_pending("modify", status)),
            SchedChange::Unknown => return Err(unknown_task(task_id)),
        }
        tracing::info!(app = self.sdkappid(), task_id, sched_at = %sched::format_time(sched_at_ms), "scheduled task modified");
        self.sched.changed.notify_one();
        Ok(task_id)
    }

    /// `delete_sched_task`: a pending task of the given type. Answers the TaskID.
    pub async fn delete_sched_task(self: &Arc<Self>, body: &Value) -> Result<u64, Error> {
        let (task_id, kind) = sched::parse_delete(body, self.sdkappid())?;
        let task = self.stored_sched_task(task_id).await?;
        if task.kind != kind {
            return Err(type_mismatch(&task, kind));
        }
        if task.status != SchedStatus::Pending {
            return Err(not_pending("delete", task.status));
        }
        self.take_sched_call(&self.sched.delete, "delete_sched_task")?;
        let tenant = Arc::clone(self);
        let deleted = tokio::task::spawn_blocking(move || {
            tenant.store.delete_sched_task(tenant.sdkappid(), task_id)
        })
        .await??;
        match deleted {
            SchedChange::Done => {}
            SchedChange::NotPending(status) => return Err(not_pending("delete", status)),
            SchedChange::Unknown => return Err(unknown_task(task_id)),
        }
        tracing::info!(app = self.sdkappid(), task_id, "scheduled task deleted");
        Ok(task_id)
    }

    /// `get_sched_task`.
    pub async fn get_sched_task(self: &Arc<Self>, body: &Value) -> Result<SchedTask, Error> {
        let task_id = sched::parse_get(body, self.sdkappid())?;
        self.take_sched_call(&self.sched.get, "get_sched_task")?;
        self.stored_sched_task(task_id).await
    }

    /// `list_sched_task`: the tasks whose `OrderBy` time is in the window and whose title or
    /// description holds the keyword, ordered by that time (then by TaskID), one page of them.
    pub async fn list_sched_tasks(self: &Arc<Self>, body: &Value) -> Result<SchedList, Error> {
        let ListRequest {
            offset,
            want,
            order,
            ascending,
            begin_ms,
            end_ms,
            keyword,
        } = sched::parse_list(body, self.sdkappid())?;
        self.take_sched_call(&self.sched.list, "list_sched_task")?;
        let tenant = Arc::clone(self);
        let mut tasks = tokio::task::spawn_blocking(move || {
            tenant
                .store
                .sched_tasks_between(tenant.sdkappid(), order, begin_ms, end_ms)
        })
        .await??;
        // The keyword is matched here rather than in SQL so that case folds the same way
        // (Unicode-aware) on every store.
        if let Some(keyword) = keyword {
            tasks.retain(|task| {
                serde_json::from_str(&task.content)
                    .is_ok_and(|content| sched::matches_keyword(&content, &keyword))
            });
        }
        if !ascending {
            tasks.reverse();
        }
        let total = tasks.len();
        let tasks = tasks.into_iter().skip(offset).take(want).collect();
        Ok(SchedList { total, tasks })
    }

    async fn stored_sched_task(self: &Arc<Self>, task_id: u64) -> Result<SchedTask, Error> {
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || tenant.store.sched_task(tenant.sdkappid(), task_id))
            .await??
            .ok_or_else(|| unknown_task(task_id))
    }

    fn take_sched_call(&self, rate: &PerSecond, command: &str) -> Result<(), Error> {
        if rate.try_take(now_ms(), CALLS_PER_SECOND) {
            return Ok(());
        }
        Err(Error::rejected(
            codes::PUSH_TOO_FREQUENT,
            format!(
                "at most {CALLS_PER_SECOND} {command} calls per second per app: retry in a second"
            ),
        ))
    }

    /// A task's `Content` ready to store (JSON text), checked as the push or batch it holds
    /// would be now, except for what the run decides: whether pushing is enabled, the quota and
    /// the interval (`timpush.md` §9.1).
    fn checked_content(
        &self,
        kind: SchedKind,
        content: Map<String, Value>,
    ) -> Result<String, Error> {
        let (content, text) = sched::prepare_content(kind, content)?;
        match kind {
            SchedKind::All | SchedKind::Tag => self.check_timpush_push(&content)?,
            SchedKind::User => self.check_batch(&content)?,
        }
        Ok(text)
    }
}
