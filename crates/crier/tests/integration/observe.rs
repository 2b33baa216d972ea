//! Reading back what the server holds: the directory over REST, and the stored pushes straight
//! from the SQLite store (no REST command shows a push's audience yet).

use std::collections::BTreeSet;

use crier::directory::Directory;
use crier::push::PushRecord;
use crier::store::sqlite::SqliteStore;
use crier::store::Store;
use serde_json::{json, Value};

use crate::harness::*;

pub const GET_TAG: &str = "all_member_push/im_get_tag";
pub const ADD_TAG: &str = "all_member_push/im_add_tag";
pub const REMOVE_TAG: &str = "all_member_push/im_remove_tag";
pub const REMOVE_ALL_TAGS: &str = "all_member_push/im_remove_all_tags";
pub const SET_ATTR_NAME: &str = "all_member_push/im_set_attr_name";
pub const GET_ATTR_NAME: &str = "all_member_push/im_get_attr_name";
pub const GET_ATTR: &str = "all_member_push/im_get_attr";
pub const SET_ATTR: &str = "all_member_push/im_set_attr";
pub const REMOVE_ATTR: &str = "all_member_push/im_remove_attr";
pub const PUSH: &str = "all_member_push/im_push";
pub const IMPORT: &str = "im_open_login_svc/account_import";
pub const IMPORT_MANY: &str = "im_open_login_svc/multiaccount_import";
pub const DELETE: &str = "im_open_login_svc/account_delete";
pub const CHECK: &str = "im_open_login_svc/account_check";
pub const KICK: &str = "im_open_login_svc/kick";
pub const ONLINE_STATUS: &str = "openim/query_online_status";

/// `n` distinct account (or tag) names: `{prefix}0`, `{prefix}1`, ...
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// `{list_key:[{"To_Account":a, inner_key:value}, ..]}`, the body of the per-user writes.
fn per_user<A: AsRef<str>>(
    list_key: &str,
    inner_key: &str,
    entries: impl IntoIterator<Item = (A, Value)>,
) -> Value {
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(account, value)| json!({"To_Account": account.as_ref(), inner_key: value}))
        .collect();
    json!({ list_key: entries })
}

/// `{"UserTags":[{"To_Account":a,"Tags":[..]}, ..]}`.
pub fn user_tags(entries: &[(&str, &[&str])]) -> Value {
    per_user(
        "UserTags",
        "Tags",
        entries.iter().map(|(account, tags)| (account, json!(tags))),
    )
}

/// `{"UserAttrs":[{"To_Account":a,"Attrs":attrs}, ..]}`.
pub fn user_attrs(entries: &[(&str, Value)]) -> Value {
    per_user(
        "UserAttrs",
        "Attrs",
        entries
            .iter()
            .map(|(account, attrs)| (account, attrs.clone())),
    )
}

/// `count` users `u0`.. each with the tags `tags`, as an im_add_tag body.
pub fn many_user_tags(count: usize, tags: Value) -> Value {
    per_user(
        "UserTags",
        "Tags",
        names("u", count)
            .into_iter()
            .map(|account| (account, tags.clone())),
    )
}

/// `count` users `u0`.. each with `attrs`, as an im_set_attr (or, with an array, im_remove_attr) body.
pub fn many_user_attrs(count: usize, attrs: Value) -> Value {
    per_user(
        "UserAttrs",
        "Attrs",
        names("u", count)
            .into_iter()
            .map(|account| (account, attrs.clone())),
    )
}

/// `[{"UserID":a}, ..]`, the item list of account_delete and account_check.
pub fn user_ids<S: AsRef<str>>(accounts: &[S]) -> Value {
    accounts
        .iter()
        .map(|a| json!({"UserID": a.as_ref()}))
        .collect()
}

/// The tags of `account`, sorted (the server answers them in its own order).
pub async fn sorted_tags(admin: &Admin<'_>, account: &str) -> Vec<String> {
    let mut tags: Vec<String> = serde_json::from_value(admin.tags_of(account).await).unwrap();
    tags.sort();
    tags
}

/// The attributes of `account` as answered by im_get_attr.
pub async fn attrs_of(admin: &Admin<'_>, account: &str) -> Value {
    let answer = admin.ok(GET_ATTR, json!({"To_Account": [account]})).await;
    assert_eq!(answer["UserAttrs"][0]["To_Account"], account);
    answer["UserAttrs"][0]["Attrs"].clone()
}

/// `Imported` or `NotImported`.
pub async fn status_of(admin: &Admin<'_>, account: &str) -> String {
    let answer = admin
        .ok(CHECK, json!({"CheckItem": [{"UserID": account}]}))
        .await;
    answer["ResultItem"][0]["AccountStatus"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Everything a write could change about `accounts`: tags, attributes, import status, and the
/// app's attribute names.
pub async fn state_of(admin: &Admin<'_>, accounts: &[&str]) -> Value {
    let mut state = Vec::new();
    for account in accounts {
        state.push(json!({
            "account": account,
            "tags": sorted_tags(admin, account).await,
            "attrs": attrs_of(admin, account).await,
            "status": status_of(admin, account).await,
        }));
    }
    let attr_names = admin.ok(GET_ATTR_NAME, json!({})).await["AttrNames"].clone();
    json!({"accounts": state, "attr_names": attr_names})
}

/// Asserts that `body` fails on `path` with `code` and leaves `accounts` as they were.
pub async fn fails_changing_nothing(
    admin: &Admin<'_>,
    path: &str,
    body: Value,
    code: u32,
    accounts: &[&str],
) -> Value {
    let answer = refused_changing_nothing(admin, path, body, accounts).await;
    assert_eq!(answer["ErrorCode"], code, "{path}: {answer}");
    answer
}

/// Asserts that `body` fails on `path` (the contract names no code) and leaves `accounts` as
/// they were.
pub async fn refused_changing_nothing(
    admin: &Admin<'_>,
    path: &str,
    body: Value,
    accounts: &[&str],
) -> Value {
    let before = state_of(admin, accounts).await;
    let answer = admin.call(path, body).await;
    assert_eq!(answer["ActionStatus"], "FAIL", "{path}: {answer}");
    assert!(
        !answer["ErrorInfo"].as_str().unwrap().is_empty(),
        "{path}: {answer}"
    );
    assert_eq!(
        state_of(admin, accounts).await,
        before,
        "{path} failed but changed the state: {answer}"
    );
    answer
}

/// A stored push and its audience as account names.
pub struct StoredPush {
    pub record: PushRecord,
    pub audience: BTreeSet<String>,
}

/// The pushes of [`APP`] the server stored, oldest first. Reads the SQLite store beside the
/// running server; account numbers are turned back into names by replaying the logged writes.
pub fn stored_pushes(server: &TestServer) -> Vec<StoredPush> {
    let store = SqliteStore::open(server.data_dir.path()).unwrap();
    let mut directory = Directory::default();
    store
        .read_dir_ops(APP, 0, &mut |_, op| directory.apply(&op))
        .unwrap();
    let name = |id: u32| directory.account_name(id).unwrap().to_owned();
    store
        .pushes_since(APP, 0)
        .unwrap()
        .into_iter()
        .map(|record| StoredPush {
            audience: record.audience.iter().map(name).collect(),
            record,
        })
        .collect()
}

/// The stored push answered with `task_id`.
pub fn stored_push(server: &TestServer, task_id: &str) -> StoredPush {
    let mut pushes = stored_pushes(server);
    let at = pushes
        .iter()
        .position(|p| p.record.task_id == task_id)
        .unwrap_or_else(|| panic!("no stored push {task_id}"));
    pushes.swap_remove(at)
}

/// Pushes a text message to the accounts matching `condition` (`Value::Null`: everyone) and
/// answers the TaskId. `msg_random` must differ between pushes of one test, or the second is
/// taken for a retry.
pub async fn push_to(admin: &Admin<'_>, condition: Value, msg_random: u32) -> String {
    let mut body = text_push(msg_random, "hello");
    if !condition.is_null() {
        body["Condition"] = condition;
    }
    let answer = admin.ok(PUSH, body).await;
    let task_id = answer["TaskId"].as_str().unwrap();
    assert!(!task_id.is_empty());
    task_id.to_owned()
}

/// The audience of a push to `condition`, as account names.
pub async fn audience_of(admin: &Admin<'_>, condition: Value, msg_random: u32) -> BTreeSet<String> {
    let task_id = push_to(admin, condition, msg_random).await;
    stored_push(admin.server, &task_id).audience
}

/// A set of account names, to compare audiences with.
pub fn set(accounts: &[&str]) -> BTreeSet<String> {
    accounts.iter().map(|a| (*a).to_owned()).collect()
}
