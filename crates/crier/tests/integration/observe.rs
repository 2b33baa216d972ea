//! Reading back what the server holds the way its clients can: the directory and push reports
//! over REST, and pushes as the accounts of their audience receive them over WebSocket.

use std::time::Duration;

use crier_client::{Connection, Event, PushFrame};
use crier_proto::protocol::ClientFrame;
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
pub const TASK_REPORT: &str = "crier/task_report";

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

/// The `crier/task_report` of a push, as `Report`.
pub async fn task_report(admin: &Admin<'_>, task_id: &str) -> Value {
    admin.ok(TASK_REPORT, json!({ "TaskId": task_id })).await["Report"].clone()
}

/// How many pushes the server accepted since it started, from `/metrics`.
pub async fn pushes_accepted(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("crier_pushes_accepted_total ")?
                .parse()
                .ok()
        })
        .expect("crier_pushes_accepted_total in /metrics")
}

/// A session of `account` (which must be live: logging in registers an unknown account).
pub async fn log_in(server: &TestServer, account: &str) -> Connection {
    Connection::connect(&server.login_options(account))
        .await
        .unwrap()
}

/// The next push `task_id` on `session`, waiting up to 5 s.
pub async fn receive(session: &mut Connection, task_id: &str) -> PushFrame {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), session.next_event())
            .await
            .unwrap_or_else(|_| panic!("push {task_id} not received within 5 s"))
            .unwrap();
        match event {
            Event::Push(frame) if frame.task_id == task_id => return frame,
            Event::Push(_) | Event::Pong => {}
            other => panic!("waiting for push {task_id}: {other:?}"),
        }
    }
}

/// Logs in as `account` (live) and answers the push `task_id` if it is kept for the account.
/// Kept pushes are written right after `LoginOK`, before the answer to any frame, so the
/// `Pong` to a `Ping` ends the wait.
pub async fn kept_for(server: &TestServer, account: &str, task_id: &str) -> Option<PushFrame> {
    let mut session = log_in(server, account).await;
    session.send(&ClientFrame::Ping).await.unwrap();
    let mut found = None;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), session.next_event())
            .await
            .expect("a Pong within 5 s")
            .unwrap();
        match event {
            Event::Push(frame) if frame.task_id == task_id => found = Some(frame),
            Event::Push(_) => {}
            Event::Pong => break,
            other => panic!("{account} logging in: {other:?}"),
        }
    }
    session.close().await.unwrap();
    found
}

/// Asserts that the audience of the kept push `task_id` is `expected`: its report counts as
/// many accounts, and each of them, all live, finds the push kept for it on login.
pub async fn assert_audience_of(admin: &Admin<'_>, task_id: &str, expected: &[&str]) {
    let report = task_report(admin, task_id).await;
    assert_eq!(
        report["AudienceSize"],
        expected.len(),
        "the audience of {task_id} is not {expected:?}: {report}"
    );
    for account in expected {
        assert_eq!(
            status_of(admin, account).await,
            "Imported",
            "{account} is not live, so not in the audience of {task_id}"
        );
        assert!(
            kept_for(admin.server, account, task_id).await.is_some(),
            "{account} is not in the audience of {task_id}"
        );
    }
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

/// Pushes to `condition` and asserts that its audience is `expected` (see
/// [`assert_audience_of`]).
pub async fn assert_audience(
    admin: &Admin<'_>,
    condition: Value,
    msg_random: u32,
    expected: &[&str],
) {
    let task_id = push_to(admin, condition, msg_random).await;
    assert_audience_of(admin, &task_id, expected).await;
}
