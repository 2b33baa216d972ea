//! Reading the bodies of `v4/timpush/push`, `batch` and `revoke` (`timpush.md` §2-4), field by
//! field in the order the contract checks them. The pieces they share with `im_push`
//! (`MsgBody`, `Condition`, `OfflinePushInfo`, `From_Account`, `MsgRandom`) are
//! [`super::validate`]'s.

use std::collections::BTreeSet;

use crier_proto::codes;
use crier_proto::echo::echo;
use roaring::RoaringBitmap;
use serde_json::{Map, Value};

use super::validate::{
    fingerprint, parse_condition, parse_from_account, parse_msg_body, parse_msg_random,
    parse_offline_push_info, PushRequest, MAX_LIFETIME_SECS,
};
use crate::config::AppConfig;
use crate::directory::{Condition, Directory};
use crate::error::Error;
use crate::store::PushKind;

/// Raw body of a `timpush/push`, refused past this with 90056 before it is parsed.
pub const MAX_PUSH_BODY_BYTES: usize = 10_240;
pub const MAX_DATA_ID_BYTES: usize = 64;
pub const MAX_BATCH_ACCOUNTS: usize = 500;
/// How long after it started a push can be revoked.
pub const REVOKE_WINDOW_MS: u64 = 24 * 3_600 * 1_000;

fn reject(code: u32, info: impl Into<String>) -> Error {
    Error::rejected(code, info)
}

fn object(body: &Value) -> Result<&Map<String, Value>, Error> {
    body.as_object()
        .ok_or_else(|| reject(codes::BAD_JSON, "the request body must be a JSON object"))
}

fn push_enabled(app: &AppConfig) -> Result<(), Error> {
    if app.push_enabled {
        Ok(())
    } else {
        Err(reject(
            codes::PUSH_DISABLED,
            "pushing to all users is not enabled for this app (push_enabled = false)",
        ))
    }
}

fn parse_data_id(value: Option<&Value>) -> Result<Option<String>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if id.len() <= MAX_DATA_ID_BYTES => Ok(Some(id.clone())),
        Some(Value::String(id)) => Err(reject(
            codes::DATA_ID_TOO_LONG,
            format!(
                "DataId is {} bytes; at most {MAX_DATA_ID_BYTES} are allowed",
                id.len()
            ),
        )),
        Some(_) => Err(reject(codes::BAD_JSON, "DataId must be a string")),
    }
}

/// The `OfflinePushInfo` a notification-only push or a batch must carry.
fn required_offline_push_info(value: Option<&Value>, what: &str) -> Result<String, Error> {
    parse_offline_push_info(value)?.ok_or_else(|| {
        reject(
            codes::BAD_OFFLINE_PUSH_INFO,
            format!("OfflinePushInfo is required: {what}"),
        )
    })
}

/// `timpush/push` in either flavour: with a `MsgBody` key it is a chat message
/// (`OnlineOnlyFlag` 0 kept for 7 days like an `im_push` with the longest `MsgLifeTime`, 1 for
/// connected users only); without, a notification (`OfflinePushInfo` only, never kept).
pub fn parse_push(
    body: &Value,
    directory: &Directory,
    app: &AppConfig,
) -> Result<PushRequest, Error> {
    let fields = object(body)?;
    push_enabled(app)?;
    let from_account = parse_from_account(fields.get("From_Account"), directory, app)?;
    let msg_random = parse_msg_random(fields.get("MsgRandom"))?;
    let chat = fields.contains_key("MsgBody");
    let offline_push_info = if chat {
        parse_offline_push_info(fields.get("OfflinePushInfo"))?
    } else {
        Some(required_offline_push_info(
            fields.get("OfflinePushInfo"),
            "a push without MsgBody is a notification, and OfflinePushInfo is its content",
        )?)
    };
    let data_id = parse_data_id(fields.get("DataId"))?;
    let (msg_body, lifetime_secs) = if chat {
        let msg_body = parse_msg_body(fields.get("MsgBody"))?;
        let lifetime_secs = match fields.get("OnlineOnlyFlag") {
            None | Some(Value::Null) => MAX_LIFETIME_SECS as u32,
            Some(flag) => match flag.as_u64() {
                Some(0) => MAX_LIFETIME_SECS as u32,
                Some(1) => 0,
                _ => {
                    return Err(reject(
                        codes::BAD_JSON,
                        "OnlineOnlyFlag must be 0 (keep the message for offline users) or 1 (connected users only)",
                    ))
                }
            },
        };
        (msg_body, lifetime_secs)
    } else {
        ("[]".to_owned(), 0)
    };
    let (condition, condition_text) = parse_condition(fields.get("Condition"), directory)?;
    Ok(PushRequest {
        from_account,
        msg_random,
        lifetime_secs,
        msg_body,
        condition,
        condition_text,
        offline_push_info,
        kind: PushKind::Push,
        data_id,
        sched_task_id: None,
        fingerprint: fingerprint(body),
    })
}

/// A `timpush/batch`: the push, the accounts it goes to, and the names that are no account.
pub struct BatchRequest {
    pub request: PushRequest,
    pub recipients: RoaringBitmap,
    /// Named in `To_Account` but neither a live account nor a registered device, in the order
    /// given (each answered with 70107 in `ErrorList`).
    pub unknown: Vec<String>,
}

/// `timpush/batch`. `account` answers the live account a `To_Account` (or `From_Account`)
/// names: a UserID, else a device token a client registered (`tenant::to_accounts`).
pub fn parse_batch(
    body: &Value,
    directory: &Directory,
    app: &AppConfig,
    account: impl Fn(&str) -> Option<u32>,
) -> Result<BatchRequest, Error> {
    let fields = object(body)?;
    push_enabled(app)?;
    let from_account = match fields.get("From_Account") {
        Some(Value::String(name)) if !app.is_admin(name) && !directory.is_live(name) => {
            if account(name).is_none() {
                return Err(reject(
                    codes::BAD_FROM_ACCOUNT,
                    format!("From_Account {} is neither an account, a registered device nor an admin of this app", echo(name)),
                ));
            }
            Some(name.clone())
        }
        other => parse_from_account(other, directory, app)?,
    };
    let names = match fields.get("To_Account") {
        Some(Value::Array(names)) => names,
        _ => {
            return Err(reject(
                codes::TOO_MANY_USERS,
                format!("To_Account is required: an array of 1 to {MAX_BATCH_ACCOUNTS} UserIDs or RegistrationIDs"),
            ))
        }
    };
    if names.is_empty() || names.len() > MAX_BATCH_ACCOUNTS {
        return Err(reject(
            codes::TOO_MANY_USERS,
            format!(
                "To_Account holds {} accounts; a batch goes to 1 to {MAX_BATCH_ACCOUNTS}",
                names.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut recipients = RoaringBitmap::new();
    let mut unknown = Vec::new();
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| reject(codes::BAD_JSON, "To_Account must hold strings"))?;
        if !seen.insert(name) {
            continue;
        }
        match account(name) {
            Some(account) => {
                recipients.insert(account);
            }
            None => unknown.push(name.to_owned()),
        }
    }
    let msg_random = parse_msg_random(fields.get("MsgRandom"))?;
    let offline_push_info = required_offline_push_info(
        fields.get("OfflinePushInfo"),
        "it is the notification a batch sends",
    )?;
    let data_id = parse_data_id(fields.get("DataId"))?;
    Ok(BatchRequest {
        request: PushRequest {
            from_account,
            msg_random,
            lifetime_secs: 0,
            msg_body: "[]".to_owned(),
            condition: Condition::All,
            condition_text: None,
            offline_push_info: Some(offline_push_info),
            kind: PushKind::Batch,
            data_id,
            sched_task_id: None,
            fingerprint: fingerprint(body),
        },
        recipients,
        unknown,
    })
}

pub struct RevokeRequest {
    pub task_id: String,
    /// The notification that overwrites the one shown, as JSON text.
    pub offline_push_info: Option<String>,
}

pub fn parse_revoke(body: &Value) -> Result<RevokeRequest, Error> {
    let fields = object(body)?;
    // `TaskID` is the spelling of the statistics and scheduled-task commands; tolerated here.
    let task_id = match fields.get("TaskId").or_else(|| fields.get("TaskID")) {
        Some(Value::String(task_id)) if !task_id.is_empty() => task_id.clone(),
        _ => {
            return Err(reject(
                codes::BAD_JSON,
                "TaskId is required: the string v4/timpush/push answered",
            ))
        }
    };
    let offline_push_info = parse_offline_push_info(fields.get("OfflinePushInfo"))?;
    Ok(RevokeRequest {
        task_id,
        offline_push_info,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::directory::DirOp;

    fn app() -> AppConfig {
        AppConfig {
            admins: vec!["admin".into()],
            ..AppConfig::new(1, "k")
        }
    }

    fn directory() -> Directory {
        let mut d = Directory::default();
        d.apply(&DirOp::Import {
            accounts: vec!["alice".into(), "bob".into()],
        });
        d
    }

    fn code(result: Result<impl Sized, Error>) -> u32 {
        match result {
            Ok(_) => 0,
            Err(e) => e.to_wire().code,
        }
    }

    #[test]
    fn the_two_flavours_keep_and_carry_what_the_spec_says() {
        let d = directory();
        let notification = parse_push(
            &json!({"MsgRandom": 1, "OfflinePushInfo": {"Title": "t", "Desc": "d"}, "DataId": "c1"}),
            &d,
            &app(),
        )
        .unwrap();
        assert_eq!(
            (
                notification.kind,
                notification.lifetime_secs,
                notification.msg_body.as_str(),
                notification.data_id.as_deref()
            ),
            (PushKind::Push, 0, "[]", Some("c1"))
        );
        let text = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}]);
        let kept = parse_push(&json!({"MsgRandom": 1, "MsgBody": text}), &d, &app()).unwrap();
        assert_eq!(kept.lifetime_secs, 604_800);
        let online = parse_push(
            &json!({"MsgRandom": 1, "MsgBody": text, "OnlineOnlyFlag": 1}),
            &d,
            &app(),
        )
        .unwrap();
        assert_eq!(online.lifetime_secs, 0);
    }

    #[test]
    fn push_refusals_come_in_the_contract_order() {
        let d = directory();
        let info = json!({"Desc": "d"});
        let eleven = vec!["t"; 11];
        for (body, expected) in [
            (json!([1]), codes::BAD_JSON),
            (
                json!({"From_Account": "ghost", "MsgRandom": "x"}),
                codes::BAD_FROM_ACCOUNT,
            ),
            (json!({"OfflinePushInfo": info}), codes::BAD_MSG_RANDOM),
            (json!({"MsgRandom": 1}), codes::BAD_OFFLINE_PUSH_INFO),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": 5}),
                codes::BAD_OFFLINE_PUSH_INFO,
            ),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": info, "DataId": "x".repeat(65)}),
                codes::DATA_ID_TOO_LONG,
            ),
            (
                json!({"MsgRandom": 1, "MsgBody": 3}),
                codes::MSG_BODY_NOT_ARRAY,
            ),
            (
                json!({"MsgRandom": 1, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x"}}], "OnlineOnlyFlag": 2}),
                codes::BAD_JSON,
            ),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": info, "Condition": {"TagsOr": ["a"], "TagsNot": ["a"]}}),
                codes::TAG_IN_AND_AND_OR,
            ),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": info, "Condition": {"TagsNot": ["a"], "AttrsOr": {"x": "y"}}}),
                codes::TAGS_WITH_ATTRS,
            ),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": info, "Condition": {"TagsNot": [""]}}),
                codes::EMPTY_TAG,
            ),
            (
                json!({"MsgRandom": 1, "OfflinePushInfo": info, "Condition": {"TagsNot": eleven}}),
                codes::TOO_MANY_TAGS,
            ),
        ] {
            assert_eq!(code(parse_push(&body, &d, &app())), expected, "{body}");
        }
        let disabled = AppConfig {
            push_enabled: false,
            ..app()
        };
        assert_eq!(
            code(parse_push(&json!({}), &d, &disabled)),
            codes::PUSH_DISABLED
        );
    }

    #[test]
    fn a_batch_resolves_accounts_then_devices_and_lists_the_rest() {
        let d = directory();
        let bob = d.account_number("bob").unwrap();
        let device_owner = |name: &str| match name {
            "reg-1" => Some(bob),
            name => d.account_number(name).filter(|&n| d.live().contains(n)),
        };
        let batch = parse_batch(
            &json!({"To_Account": ["alice", "ghost", "reg-1", "alice"], "MsgRandom": 5, "OfflinePushInfo": {"Desc": "d"}}),
            &d,
            &app(),
            device_owner,
        )
        .unwrap();
        let alice = d.account_number("alice").unwrap();
        assert_eq!(batch.recipients, RoaringBitmap::from_iter([alice, bob]));
        assert_eq!(batch.unknown, ["ghost"]);
        assert_eq!(batch.request.kind, PushKind::Batch);
        let too_many: Vec<String> = (0..501).map(|n| format!("u{n}")).collect();
        for (body, expected) in [
            (
                json!({"To_Account": [], "MsgRandom": 1}),
                codes::TOO_MANY_USERS,
            ),
            (
                json!({"To_Account": too_many, "MsgRandom": 1}),
                codes::TOO_MANY_USERS,
            ),
            (json!({"To_Account": ["alice"]}), codes::BAD_MSG_RANDOM),
            (
                json!({"To_Account": ["alice"], "MsgRandom": 1}),
                codes::BAD_OFFLINE_PUSH_INFO,
            ),
            (
                json!({"From_Account": "ghost", "To_Account": ["alice"]}),
                codes::BAD_FROM_ACCOUNT,
            ),
        ] {
            assert_eq!(
                code(parse_batch(&body, &d, &app(), device_owner)),
                expected,
                "{body}"
            );
        }
        let from_device = json!({"From_Account": "reg-1", "To_Account": ["alice"], "MsgRandom": 1, "OfflinePushInfo": {}});
        assert!(parse_batch(&from_device, &d, &app(), device_owner).is_ok());
    }
}
