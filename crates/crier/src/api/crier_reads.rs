//! Crier's own reads under `v4/crier/` (not Tencent's; `docs/crier-reads.md` is their
//! contract): `audience_count`, `task_list`, `task_timeline`, `account_info`, `tag_stats`,
//! `attr_stats`, `quota` and `overview`. Same envelope, signing and admin check as every
//! command; at most 10 calls per second per app (90024). Reads that touch every account or the
//! store run on a blocking thread.

use std::sync::Arc;

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_name, object};
use crate::auth::AdminCall;
use crate::directory::stats::Held;
use crate::error::Error;
use crate::store::PushKind;
use crate::tenant::Tenant;

type Answer = Result<Map<String, Value>, Error>;

/// Minutes of history `overview` answers.
const HISTORY_MINUTES: u64 = 60;

fn bad(info: impl Into<String>) -> Error {
    Error::rejected(codes::BAD_PARAMETER, info)
}

fn fields(pairs: Value) -> Map<String, Value> {
    match pairs {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Runs `read` on a blocking thread after the rate check.
async fn blocking<R: Send + 'static>(
    call: &AdminCall,
    read: impl FnOnce(&Arc<Tenant>) -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    call.tenant.console_rate_check()?;
    let tenant = Arc::clone(&call.tenant);
    tokio::task::spawn_blocking(move || read(&tenant)).await?
}

/// An optional integer field within `range`, else 90104.
fn integer(
    body: &Map<String, Value>,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, Error> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
            bad(format!(
                "{key} must be an integer from {} to {}",
                range.start(),
                range.end()
            ))
        }),
    }
}

fn held(items: Vec<Held>, name_key: &str) -> Value {
    items
        .into_iter()
        .map(|item| json!({ name_key: item.name, "Count": item.count }))
        .collect()
}

pub async fn audience_count(call: AdminCall, body: Value) -> Answer {
    let body = object(&body, codes::BAD_JSON)?.clone();
    let connected_only = match body.get("ConnectedOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => {
            return Err(Error::rejected(
                codes::BAD_JSON,
                "ConnectedOnly must be true or false",
            ))
        }
    };
    let (all, connected) = blocking(&call, move |tenant| {
        tenant.audience_count(body.get("Condition"))
    })
    .await?;
    Ok(fields(json!({
        "Count": if connected_only { connected } else { all },
        "Connected": connected,
        "AsOf": crate::clock::now_secs(),
    })))
}

pub async fn task_list(call: AdminCall, body: Value) -> Answer {
    let body = object(&body, codes::BAD_JSON)?;
    let offset = integer(body, "Offset", 0, 0..=u64::from(u32::MAX))? as usize;
    let want = integer(body, "Want", 20, 1..=100)? as usize;
    let since_secs = integer(body, "Since", 0, 0..=u64::from(u32::MAX))?;
    let kinds: Option<Vec<PushKind>> = match body.get("Kinds") {
        None | Some(Value::Null) => None,
        Some(Value::Array(kinds)) => Some(
            kinds
                .iter()
                .map(|kind| {
                    kind.as_str().and_then(PushKind::parse).ok_or_else(|| {
                        bad(format!(
                            "Kinds holds {}; use im_push, push or batch",
                            echo(&kind.to_string())
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(bad("Kinds must be an array of im_push, push, batch")),
    };
    let mut tasks = blocking(&call, move |tenant| tenant.recent_tasks(since_secs * 1000)).await?;
    if let Some(kinds) = kinds {
        tasks.retain(|task| kinds.contains(&task.kind));
    }
    let listed: Vec<Value> = tasks
        .iter()
        .skip(offset)
        .take(want)
        .map(|task| {
            let mut listed = json!({
                "TaskId": task.task_id,
                "Kind": task.kind.as_str(),
                "State": task.state,
                "TaskTime": task.created_ms / 1000,
                "ExpireTime": task.expires_ms / 1000,
                "MsgLifeTime": task.lifetime_secs,
                "AudienceSize": task.audience_size,
                "Acked": task.acked,
                "Condition": task.condition.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok()),
                "MsgBody": serde_json::from_str::<Value>(&task.msg_body).unwrap_or(Value::Null),
            });
            if let Some(data_id) = &task.data_id {
                listed["DataId"] = json!(data_id);
            }
            if let Some(sched_task_id) = task.sched_task_id {
                listed["SchedTaskID"] = json!(sched_task_id);
            }
            listed
        })
        .collect();
    Ok(fields(json!({ "Total": tasks.len(), "Tasks": listed })))
}

pub async fn task_timeline(call: AdminCall, body: Value) -> Answer {
    let task_id = match object(&body, codes::BAD_JSON)?.get("TaskId") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => return Err(bad("TaskId must be the string im_push answered")),
    };
    let points = blocking(&call, move |tenant| {
        tenant.sample_history()?;
        Ok(tenant.console_extras().history.lock().task_series(&task_id))
    })
    .await?;
    let Some(points) = points else {
        return Err(bad(
            "this app has no push with that TaskId in the last 8 days",
        ));
    };
    Ok(fields(json!({ "Points": points })))
}

pub async fn account_info(call: AdminCall, body: Value) -> Answer {
    let name = match object(&body, codes::BAD_JSON)?.get("UserID") {
        Some(value) => account_name(value, "UserID", codes::BAD_JSON)?,
        None => return Err(Error::rejected(codes::BAD_JSON, "UserID is required")),
    };
    call.tenant.console_rate_check()?;
    let Some(info) = call.tenant.account_info(&name) else {
        return Err(Error::rejected(
            codes::ACCOUNT_NOT_FOUND,
            format!(
                "{} is not an account of this app: import it or check the spelling",
                echo(&name)
            ),
        ));
    };
    let sessions: Vec<Value> = info
        .sessions
        .iter()
        .map(|p| json!({ "Platform": p }))
        .collect();
    let devices: Vec<Value> = info
        .devices
        .iter()
        .map(|(platform, token)| json!({ "Platform": platform, "Token": token }))
        .collect();
    Ok(fields(json!({
        "UserID": name,
        "AccountStatus": if info.imported { "Imported" } else { "NotImported" },
        "Tags": info.tags,
        "Attrs": info.attrs,
        "Sessions": sessions,
        "Devices": devices,
        "PendingPushes": info.pending_pushes,
    })))
}

pub async fn tag_stats(call: AdminCall, body: Value) -> Answer {
    let want = integer(object(&body, codes::BAD_JSON)?, "Want", 20, 1..=1000)? as usize;
    let (tags, distinct) = blocking(&call, move |tenant| Ok(tenant.tag_stats(want))).await?;
    Ok(fields(
        json!({ "TagCount": distinct, "Tags": held(tags, "Tag") }),
    ))
}

pub async fn attr_stats(call: AdminCall, body: Value) -> Answer {
    let body = object(&body, codes::BAD_JSON)?;
    let want = integer(body, "Want", 20, 1..=1000)? as usize;
    let name = match body.get("AttrName") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            return Err(bad(
                "AttrName must be the name of one of the app's attributes",
            ))
        }
    };
    let (values, distinct) = blocking(&call, {
        let name = name.clone();
        move |tenant| tenant.attr_stats(&name, want)
    })
    .await?;
    Ok(fields(json!({
        "AttrName": name,
        "ValueCount": distinct,
        "Values": held(values, "Value"),
    })))
}

pub async fn quota(call: AdminCall, _body: Value) -> Answer {
    let state = blocking(&call, |tenant| tenant.quota_state()).await?;
    Ok(fields(json!({
        "PushEnabled": state.push_enabled,
        "DailyPushQuota": state.daily_push_quota,
        "PushesToday": state.pushes_today,
        "MinPushIntervalMs": state.min_push_interval_ms,
        "LastPushTime": state.last_push_ms,
        "NextPushTime": state.next_push_ms,
        "QuotaResetTime": state.quota_resets_ms / 1000,
        "ServerTime": crate::clock::now_ms(),
    })))
}

pub async fn overview(call: AdminCall, _body: Value) -> Answer {
    let (online, minutes) = blocking(&call, |tenant| {
        tenant.sample_history()?;
        let minutes = tenant
            .console_extras()
            .history
            .lock()
            .minutes(crate::clock::now_ms(), HISTORY_MINUTES);
        Ok((tenant.online_state(), minutes))
    })
    .await?;
    let sessions: u64 = online.sessions_by_platform.values().sum();
    Ok(fields(json!({
        "Sessions": sessions,
        "SessionsByPlatform": online.sessions_by_platform,
        "AccountsOnline": online.accounts_online,
        "LiveAccounts": online.live_accounts,
        "Devices": online.devices,
        "History": minutes,
    })))
}
