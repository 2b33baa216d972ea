//! `im_open_login_svc/*` and `openim/query_online_status`.

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_list, account_name, array, object};
use crate::auth::AdminCall;
use crate::directory::DirOp;
use crate::error::Error;

pub const MAX_BATCH: usize = 100;
pub const MAX_STATUS_QUERY: usize = 500;
const BAD: u32 = codes::LOGIN_SVC_BAD_REQUEST;

fn not_found(account: &str) -> String {
    format!("account {} is not imported", echo(account))
}

/// `UserID`, or the legacy `Identifier` some client libraries still send (dobyte/tencent-im).
fn user_id(fields: &Map<String, Value>) -> Result<String, Error> {
    match (fields.get("UserID"), fields.get("Identifier")) {
        (Some(value), _) => account_name(value, "UserID", BAD),
        (None, Some(value)) => account_name(value, "Identifier", BAD),
        (None, None) => account_name(&Value::Null, "UserID", BAD),
    }
}

pub async fn import(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let fields = object(&body, BAD)?;
    let account = user_id(fields)?;
    for optional in ["Nick", "FaceUrl"] {
        if fields.get(optional).is_some_and(|v| !v.is_string()) {
            return Err(Error::rejected(BAD, format!("{optional} must be a string")));
        }
    }
    call.tenant
        .write(move |d| {
            Ok(if d.is_live(&account) {
                vec![]
            } else {
                vec![DirOp::Import {
                    accounts: vec![account],
                }]
            })
        })
        .await?;
    Ok(Map::new())
}

pub async fn import_many(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let items = array(&body, "Accounts", MAX_BATCH, BAD, BAD)?;
    let mut accounts = Vec::new();
    let mut failed = Vec::new();
    for (n, item) in items.iter().enumerate() {
        match account_name(item, &format!("Accounts[{n}]"), BAD) {
            Ok(account) => accounts.push(account),
            Err(_) => failed.push(item.clone()),
        }
    }
    call.tenant
        .write(move |d| {
            accounts.retain(|a| !d.is_live(a));
            accounts.dedup();
            Ok(if accounts.is_empty() {
                vec![]
            } else {
                vec![DirOp::Import { accounts }]
            })
        })
        .await?;
    Ok(Map::from_iter([(
        "FailAccounts".into(),
        Value::Array(failed),
    )]))
}

/// Reads `[{"UserID": ..}]` items of `key`.
pub fn user_items(body: &Value, key: &str) -> Result<Vec<String>, Error> {
    let items = array(body, key, MAX_BATCH, BAD, BAD)?;
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            account_name(
                item.get("UserID").unwrap_or(&Value::Null),
                &format!("{key}[{n}].UserID"),
                BAD,
            )
        })
        .collect()
}

pub async fn delete(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let results = user_items(&body, "DeleteItem")?;
    let found = call.tenant.delete_accounts(results.clone()).await?;
    let items = results
        .iter()
        .zip(found)
        .map(|(account, found)| match found {
            true => json!({"UserID": account, "ResultCode": 0, "ResultInfo": ""}),
            false => json!({"UserID": account, "ResultCode": codes::ACCOUNT_NOT_FOUND, "ResultInfo": not_found(account)}),
        })
        .collect();
    Ok(Map::from_iter([("ResultItem".into(), Value::Array(items))]))
}

pub async fn check(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let accounts = user_items(&body, "CheckItem")?;
    let items = call.tenant.read(|d| {
        accounts
            .iter()
            .map(|account| {
                let status = if d.is_live(account) { "Imported" } else { "NotImported" };
                json!({"UserID": account, "ResultCode": 0, "ResultInfo": "", "AccountStatus": status})
            })
            .collect()
    });
    Ok(Map::from_iter([("ResultItem".into(), Value::Array(items))]))
}

/// Ends the account's login state: its sessions get `Kicked` and close with 4003.
pub async fn kick(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let account = user_id(object(&body, BAD)?)?;
    let number = call
        .tenant
        .live_account(&account)
        .ok_or_else(|| Error::rejected(codes::ACCOUNT_NOT_FOUND, not_found(&account)))?;
    call.tenant.kick(number, "kicked by the app's admin");
    Ok(Map::new())
}

pub async fn query_online_status(
    call: AdminCall,
    body: Value,
) -> Result<Map<String, Value>, Error> {
    let accounts = account_list(
        &body,
        "To_Account",
        MAX_STATUS_QUERY,
        codes::TOO_MANY_ACCOUNTS,
        codes::BAD_JSON,
    )?;
    let need_detail = body.get("IsNeedDetail").and_then(Value::as_u64) == Some(1);
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    let numbers: Vec<Option<u32>> = accounts
        .iter()
        .map(|a| call.tenant.live_account(a))
        .collect();
    for (account, number) in accounts.iter().zip(numbers) {
        let Some(number) = number else {
            errors.push(json!({"To_Account": account, "ErrorCode": codes::ACCOUNT_NOT_FOUND}));
            continue;
        };
        let platforms = call.tenant.online_platforms(number);
        let status = if platforms.is_empty() {
            "Offline"
        } else {
            "Online"
        };
        let mut result = json!({"To_Account": account, "Status": status});
        if need_detail {
            result["Detail"] = platforms
                .iter()
                .map(|p| json!({"Platform": p, "Status": "Online"}))
                .collect();
        }
        results.push(result);
    }
    Ok(Map::from_iter([
        ("QueryResult".into(), Value::Array(results)),
        ("ErrorList".into(), Value::Array(errors)),
    ]))
}
