//! `timpush/all_member_push_statistics` and `all_member_push_trace` (`timpush.md` §6-7): thin
//! handlers over the façade.

use serde_json::{Map, Value};

use super::Answer;
use crate::auth::AdminCall;
use crate::error::Error;

pub async fn statistics(call: AdminCall, body: Value) -> Answer {
    let results = call.tenant.push_statistics(&body).await?;
    let results = serde_json::to_value(results).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Map::from_iter([("Results".into(), results)]))
}

pub async fn trace(call: AdminCall, body: Value) -> Answer {
    let entries = call.tenant.push_trace(&body).await?;
    Ok(Map::from_iter([(
        "InstanceTrace".into(),
        Value::Array(entries),
    )]))
}
