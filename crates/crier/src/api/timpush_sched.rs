//! The scheduled-task commands of the `v4/timpush/*` family (`timpush.md` §9): thin handlers
//! over the façade, and the `TaskInfo` object that `get_sched_task` and `list_sched_task`
//! answer.

use serde_json::{json, Map, Value};

use super::Answer;
use crate::auth::AdminCall;
use crate::push::sched::{format_time, title_and_desc};
use crate::store::sched::{SchedStatus, SchedTask};

fn task_id(task_id: u64) -> Map<String, Value> {
    Map::from_iter([("TaskID".into(), Value::from(task_id))])
}

pub async fn add(call: AdminCall, body: Value) -> Answer {
    let added = call.tenant.add_sched_task(&body, &call.identifier).await?;
    Ok(task_id(added))
}

pub async fn modify(call: AdminCall, body: Value) -> Answer {
    Ok(task_id(call.tenant.modify_sched_task(&body).await?))
}

pub async fn delete(call: AdminCall, body: Value) -> Answer {
    Ok(task_id(call.tenant.delete_sched_task(&body).await?))
}

pub async fn get(call: AdminCall, body: Value) -> Answer {
    let task = call.tenant.get_sched_task(&body).await?;
    Ok(Map::from_iter([("TaskInfo".into(), task_info(&task))]))
}

pub async fn list(call: AdminCall, body: Value) -> Answer {
    let listed = call.tenant.list_sched_tasks(&body).await?;
    Ok(Map::from_iter([
        ("Total".into(), Value::from(listed.total)),
        ("Tasks".into(), listed.tasks.iter().map(task_info).collect()),
    ]))
}

/// A task as Tencent's `TaskInfo` shows it; `Content` exactly as stored.
fn task_info(task: &SchedTask) -> Value {
    let content: Value = serde_json::from_str(&task.content).unwrap_or(Value::Null);
    let (title, desc) = title_and_desc(&content);
    json!({
        "TaskID": task.task_id,
        "Sdkappid": task.app,
        "CreateAt": format_time(task.created_ms),
        "Type": task.kind.as_str(),
        "SchedAt": format_time(task.sched_at_ms),
        "Content": content,
        "Title": title,
        "Desc": desc,
        "Status": task.status.as_str(),
        "DispatchSuccess": u8::from(task.status == SchedStatus::Dispatched),
        "DispatchErr": task.dispatch_err,
        "PushTaskID": task.push_task_id,
    })
}
