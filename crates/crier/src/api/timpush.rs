//! The push commands of the `v4/timpush/*` family (`timpush.md` §2-4): thin handlers over the
//! façade. The attribute and tag commands of the family live with their classic siblings.

use std::sync::Arc;

use crier_proto::codes;
use serde_json::{json, Map, Value};

use super::Answer;
use crate::auth::AdminCall;

pub async fn push(call: AdminCall, body: Value) -> Answer {
    let task_id = call
        .tenant
        .timpush_push(&body, &call.identifier, None)
        .await?;
    Ok(Map::from_iter([("TaskId".into(), Value::String(task_id))]))
}

pub async fn batch(call: AdminCall, body: Value) -> Answer {
    let accepted = call.tenant.batch(&body, &call.identifier, None).await?;
    let mut answer = Map::from_iter([("TaskId".into(), Value::String(accepted.task_id))]);
    if !accepted.unknown.is_empty() {
        answer.insert("ErrorList".into(), error_list(&accepted.unknown));
    }
    Ok(answer)
}

pub async fn revoke(call: AdminCall, body: Value) -> Answer {
    Arc::clone(&call.tenant).revoke(&body).await?;
    Ok(Map::new())
}

/// `ErrorList` entries for names that are no account (70107).
fn error_list(unknown: &[String]) -> Value {
    Value::Array(
        unknown
            .iter()
            .map(|name| {
                json!({
                    "To_Account": name,
                    "ErrorCode": codes::ACCOUNT_NOT_FOUND,
                    "ErrorInfo": "account does not exist",
                })
            })
            .collect(),
    )
}
