//! Scheduled tasks (`timpush.md` §9): the five commands through the running server, and
//! tasks that fire on time, across a `kill -9`, late at start, or not at all when missed.

use std::time::{Duration, Instant};

use crier::config::AppConfig;
use crier::push::sched::{format_time, parse_time};
use crier::store::sched::{NewSchedTask, SchedKind, SchedStore};
use crier::store::sqlite::SqliteStore;
use crier_client::{Connection, Event};
use serde_json::{json, Value};

use crate::harness::*;
use crate::process::*;

const ADD: &str = "timpush/add_sched_task";
const MODIFY: &str = "timpush/modify_sched_task";
const DELETE: &str = "timpush/delete_sched_task";
const GET: &str = "timpush/get_sched_task";
const LIST: &str = "timpush/list_sched_task";

/// `fields` with the body's `Sdkappid` (§1.1) in front.
fn body(fields: Value) -> Value {
    let mut body = json!({ "Sdkappid": APP });
    body.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    body
}

/// The wire time `secs` seconds from now, rounded up to a whole second.
fn in_secs(secs: u64) -> String {
    format_time(crier::clock::now_ms() + secs * 1000 + 999)
}

/// A notification (the Push flavour of `push`) with a title and a description.
fn notice(title: &str, desc: &str) -> Value {
    json!({ "OfflinePushInfo": { "PushFlag": 0, "Title": title, "Desc": desc } })
}

/// A chat message kept for offline users (the Chat flavour of `push`).
fn chat(text: &str) -> Value {
    json!({ "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}], "OnlineOnlyFlag": 0 })
}

/// Calls a scheduled-task command. The five commands take 5 calls per second each; a call
/// over it (answered 90024, naming the limit) is made again in the next second.
async fn paced(admin: &Admin<'_>, path: &str, fields: Value) -> Value {
    for _ in 0..3 {
        let answer = admin.call(path, body(fields.clone())).await;
        if answer["ErrorCode"] != 90024 {
            return answer;
        }
        assert!(
            answer["ErrorInfo"].as_str().unwrap().contains("per second"),
            "{answer}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{path} stayed over its rate limit");
}

/// Calls a command that must succeed.
async fn ok(admin: &Admin<'_>, path: &str, fields: Value) -> Value {
    let answer = paced(admin, path, fields).await;
    assert_eq!(answer["ActionStatus"], "OK", "{path}: {answer}");
    assert_eq!(answer["ErrorCode"], 0);
    answer
}

async fn add(admin: &Admin<'_>, kind: &str, sched_at: &str, content: Value) -> u64 {
    let answer = ok(
        admin,
        ADD,
        json!({"Type": kind, "SchedAt": sched_at, "Content": content}),
    )
    .await;
    let task_id = answer["TaskID"].as_u64().unwrap();
    assert!(task_id > 0 && task_id < 1 << 53, "{answer}");
    task_id
}

async fn get(admin: &Admin<'_>, task_id: u64) -> Value {
    ok(admin, GET, json!({ "TaskID": task_id })).await["TaskInfo"].clone()
}

/// Waits (up to `within`) until the task leaves `pending` and `dispatching`.
async fn ended(admin: &Admin<'_>, task_id: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let info = get(admin, task_id).await;
        if info["Status"] != "pending" && info["Status"] != "dispatching" {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} never ran: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails with `code`, a TaskID of 0 where the command answers one, and no other change.
async fn refused(admin: &Admin<'_>, path: &str, fields: Value, code: u32) -> Value {
    let answer = paced(admin, path, fields).await;
    assert_eq!(answer["ActionStatus"], "FAIL", "{path}: {answer}");
    assert_eq!(answer["ErrorCode"], code, "{path}: {answer}");
    assert!(!answer["ErrorInfo"].as_str().unwrap().is_empty());
    if path != GET && path != LIST {
        assert_eq!(answer["TaskID"], 0, "{answer}");
    }
    answer
}

/// Every task of the app created around now.
async fn all_tasks(admin: &Admin<'_>) -> Value {
    ok(
        admin,
        LIST,
        json!({"Offset": 0, "Want": 100, "OrderBy": "createAt", "Asc": true,
               "BeginTime": format_time(crier::clock::now_ms() - 3_600_000), "EndTime": in_secs(3_600)}),
    )
    .await
}

#[tokio::test]
async fn every_command_answers_and_reads_back() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["alice", "bob"]).await;
    let at = in_secs(3_600);

    let tagged = json!({"Condition": {"TagsOr": ["stock_a"]}, "MsgRandom": 77,
                        "OfflinePushInfo": {"Title": "Market open", "Desc": "Your watch list moved"}});
    let tag_task = add(&admin, "Tag", &at, tagged.clone()).await;
    let info = get(&admin, tag_task).await;
    let created = info["CreateAt"].as_str().unwrap();
    assert!(
        parse_time(created).unwrap() + 5_000 >= crier::clock::now_ms(),
        "{created}"
    );
    assert_eq!(
        info,
        json!({"TaskID": tag_task, "Sdkappid": APP, "CreateAt": created, "Type": "Tag", "SchedAt": at,
               "Content": tagged, "Title": "Market open", "Desc": "Your watch list moved",
               "Status": "pending", "DispatchSuccess": 0, "DispatchErr": "", "PushTaskID": ""})
    );

    // MsgRandom is filled in when left out, and kept by a change that does not give it.
    let all_task = add(&admin, "All", &at, notice("Hello", "News")).await;
    let filled = get(&admin, all_task).await["Content"]["MsgRandom"].clone();
    assert!(filled.is_u64(), "{filled}");
    let user_task = add(
        &admin,
        "User",
        &at,
        json!({"To_Account": ["alice", "nobody"], "OfflinePushInfo": {"Title": "Hi alice"}}),
    )
    .await;
    assert_ne!(all_task, tag_task);
    assert_eq!(get(&admin, user_task).await["Type"], "User");

    // modify: a new time, and Content merged key by key (Tencent's sample changes only
    // OfflinePushInfo).
    let later = in_secs(7_200);
    let modified = ok(
        &admin,
        MODIFY,
        json!({"TaskID": tag_task, "Type": "Tag", "SchedAt": later,
               "Content": {"OfflinePushInfo": {"Title": "Market open (delayed)", "Desc": "Your watch list moved"}}}),
    )
    .await;
    assert_eq!(modified["TaskID"], tag_task);
    let info = get(&admin, tag_task).await;
    assert_eq!(info["SchedAt"], later.as_str());
    assert_eq!(info["Title"], "Market open (delayed)");
    assert_eq!(info["Content"]["Condition"], tagged["Condition"], "kept");
    assert_eq!(info["Content"]["MsgRandom"], 77);
    ok(
        &admin,
        MODIFY,
        json!({"TaskID": all_task, "Type": "All", "Content": {"DataId": "campaign-1"}}),
    )
    .await;
    let info = get(&admin, all_task).await;
    assert_eq!(
        (
            &info["SchedAt"],
            &info["Content"]["DataId"],
            &info["Content"]["MsgRandom"]
        ),
        (&json!(at), &json!("campaign-1"), &filled)
    );

    // delete answers the id; the task is gone, and its id is not given again.
    let deleted = ok(&admin, DELETE, json!({"TaskID": user_task, "Type": "User"})).await;
    assert_eq!(deleted["TaskID"], user_task);
    refused(&admin, GET, json!({ "TaskID": user_task }), 90104).await;
    let next = add(&admin, "All", &at, notice("again", "")).await;
    assert!(next > user_task);
    assert_eq!(all_tasks(&admin).await["Total"], 3);
}

#[tokio::test]
async fn refusals_name_the_fault_and_change_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["alice"]).await;
    admin
        .ok(
            "all_member_push/im_set_attr_name",
            json!({"AttrNames": {"0": "tier"}}),
        )
        .await;
    let at = in_secs(3_600);
    let add_with = |content: Value| json!({"Type": "All", "SchedAt": at, "Content": content});

    // §1.1: the body's Sdkappid must be the query's.
    for wrong in [json!(APP + 1), json!(APP.to_string())] {
        let answer = admin
            .fails(ADD, json!({"Sdkappid": wrong, "Type": "All", "SchedAt": at, "Content": notice("t", "d")}), 90104)
            .await;
        assert_eq!(answer["TaskID"], 0);
    }
    admin
        .fails(
            ADD,
            json!({"Type": "All", "SchedAt": at, "Content": notice("t", "d")}),
            90104,
        )
        .await;
    let not_json = server.post_raw(ADD, &admin.query, "{\"Sdkappid\": ").await;
    assert_eq!(not_json["ErrorCode"], 90001);

    // add: the task's own fields.
    let past = format_time(crier::clock::now_ms() - 1_000);
    for fields in [
        json!({"Type": "Later", "SchedAt": at, "Content": notice("t", "d")}),
        json!({"SchedAt": at, "Content": notice("t", "d")}),
        json!({"Type": "All", "Content": notice("t", "d")}),
        json!({"Type": "All", "SchedAt": past, "Content": notice("t", "d")}),
        json!({"Type": "All", "SchedAt": in_secs(367 * 86_400), "Content": notice("t", "d")}),
        json!({"Type": "All", "SchedAt": at.replace(' ', "T"), "Content": notice("t", "d")}),
        json!({"Type": "All", "SchedAt": at}),
        json!({"Type": "All", "SchedAt": at, "Content": "hi"}),
        add_with(json!({"Condition": {"TagsOr": ["a"]}, "OfflinePushInfo": {"Title": "t"}})),
        json!({"Type": "Tag", "SchedAt": at, "Content": notice("t", "d")}),
    ] {
        refused(&admin, ADD, fields, 90104).await;
    }
    // add: the Content, with the codes of the push or batch it holds.
    let big = "x".repeat(10_240);
    refused(
        &admin,
        ADD,
        add_with(json!({"OfflinePushInfo": {"Title": big}})),
        90056,
    )
    .await;
    refused(
        &admin,
        ADD,
        add_with(json!({"MsgRandom": "x", "OfflinePushInfo": {"Title": "t"}})),
        90005,
    )
    .await;
    refused(
        &admin,
        ADD,
        add_with(json!({"From_Account": "ghost", "OfflinePushInfo": {"Title": "t"}})),
        90048,
    )
    .await;
    refused(&admin, ADD, add_with(json!({"MsgRandom": 1})), 90043).await;
    refused(&admin, ADD, add_with(json!({"MsgBody": "hi"})), 90007).await;
    refused(
        &admin,
        ADD,
        json!({"Type": "Tag", "SchedAt": at, "Content": {"Condition": {"AttrsAnd": {"city": "sz"}}, "OfflinePushInfo": {"Title": "t"}}}),
        90033,
    )
    .await;
    let many: Vec<String> = (0..501).map(|n| format!("u{n}")).collect();
    refused(
        &admin,
        ADD,
        json!({"Type": "User", "SchedAt": at, "Content": {"To_Account": many, "OfflinePushInfo": {"Title": "t"}}}),
        90018,
    )
    .await;
    assert_eq!(all_tasks(&admin).await["Total"], 0, "nothing was stored");

    // modify, delete and get of a task that exists.
    let task = add(&admin, "All", &at, notice("Before", "d")).await;
    let before = get(&admin, task).await;
    for fields in [
        json!({"TaskID": task + 100, "Type": "All", "SchedAt": in_secs(60)}),
        json!({"TaskID": task, "Type": "Tag", "SchedAt": in_secs(60)}),
        json!({"TaskID": task, "Type": "All"}),
        json!({"TaskID": "1", "Type": "All", "SchedAt": in_secs(60)}),
        json!({"TaskID": task, "Type": "All", "SchedAt": past}),
        json!({"TaskID": task, "Type": "All", "Content": {"Condition": {"TagsOr": ["a"]}}}),
    ] {
        refused(&admin, MODIFY, fields, 90104).await;
    }
    refused(
        &admin,
        MODIFY,
        json!({"TaskID": task, "Type": "All", "Content": {"MsgRandom": -1}}),
        90005,
    )
    .await;
    refused(
        &admin,
        MODIFY,
        json!({"TaskID": task, "Type": "All", "Content": {"OfflinePushInfo": "t"}}),
        90043,
    )
    .await;
    refused(
        &admin,
        DELETE,
        json!({"TaskID": task + 100, "Type": "All"}),
        90104,
    )
    .await;
    refused(
        &admin,
        DELETE,
        json!({"TaskID": task, "Type": "User"}),
        90104,
    )
    .await;
    refused(&admin, DELETE, json!({"TaskID": task}), 90104).await;
    refused(&admin, GET, json!({"TaskID": task + 100}), 90104).await;
    refused(&admin, GET, json!({}), 90104).await;
    assert_eq!(get(&admin, task).await, before, "unchanged");

    // list: its required fields and window.
    let window = json!({"Offset": 0, "Want": 10, "OrderBy": "schedAt", "Asc": true,
                        "BeginTime": "2025-05-01 00:00:00", "EndTime": "2025-06-01 00:00:00"});
    for (key, value) in [
        ("Offset", Value::Null),
        ("Want", json!(0)),
        ("OrderBy", json!("TaskID")),
        ("Asc", json!(1)),
        ("BeginTime", Value::Null),
        ("EndTime", json!("2025-06-01 00:00:01")),
        ("BeginTime", json!("2025-06-02 00:00:00")),
        ("Keyword", json!(5)),
    ] {
        let mut fields = window.clone();
        if value.is_null() {
            fields.as_object_mut().unwrap().remove(key);
        } else {
            fields[key] = value;
        }
        refused(&admin, LIST, fields, 90104).await;
    }
    ok(&admin, LIST, window).await;
}

#[tokio::test]
async fn each_command_takes_five_calls_a_second() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let task = add(&admin, "All", &in_secs(3_600), notice("t", "d")).await;
    // Start at the beginning of a wall-clock second, so that the calls share one.
    let into_second = crier::clock::now_ms() % 1000;
    tokio::time::sleep(Duration::from_millis(1000 - into_second + 10)).await;
    let started = crier::clock::now_ms();
    for _ in 0..5 {
        admin.ok(GET, body(json!({ "TaskID": task }))).await;
    }
    let sixth = admin
        .fails(GET, body(json!({ "TaskID": task })), 90024)
        .await;
    if crier::clock::now_ms() / 1000 != started / 1000 {
        eprintln!("skipped: the calls spanned two seconds on this machine");
        return;
    }
    let info = sixth["ErrorInfo"].as_str().unwrap();
    assert!(info.contains("5 get_sched_task calls per second"), "{info}");
    // Each command has its own count.
    let listed = admin
        .call(
            LIST,
            body(
                json!({"Offset": 0, "Want": 1, "OrderBy": "createat", "Asc": true,
                        "BeginTime": in_secs(0), "EndTime": in_secs(1)}),
            ),
        )
        .await;
    assert_eq!(listed["ErrorCode"], 0, "{listed}");
}

#[tokio::test]
async fn a_listing_orders_windows_filters_and_pages() {
    let server = TestServer::start().await;
    let admin = server.admin();
    // Created in this order; scheduled in another.
    let at = |minutes: u64| in_secs(3_600 + minutes * 60);
    let a = add(&admin, "All", &at(30), notice("Market open", "stocks")).await;
    let b = add(
        &admin,
        "All",
        &at(10),
        notice("Weather", "Rain in the MARKET square"),
    )
    .await;
    let c = add(&admin, "All", &at(20), notice("Sports", "scores")).await;
    let d = add(
        &admin,
        "All",
        &at(40 * 24 * 60),
        notice("market far away", ""),
    )
    .await;
    let ids = |answer: &Value| -> Vec<u64> {
        answer["Tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| task["TaskID"].as_u64().unwrap())
            .collect()
    };
    let list = |order: &str, asc: bool, begin: String, end: String, extra: Value| {
        let mut fields = json!({"Offset": 0, "Want": 10, "OrderBy": order, "Asc": asc,
                                "BeginTime": begin, "EndTime": end});
        fields
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        fields
    };
    let scheduled = list("schedat", true, at(0), at(60), json!({}));
    let answer = ok(&admin, LIST, scheduled.clone()).await;
    assert_eq!(ids(&answer), [b, c, a], "by SchedAt, d outside the window");
    assert_eq!(answer["Total"], 3);
    assert_eq!(
        answer["Tasks"][0],
        get(&admin, b).await,
        "items are TaskInfo"
    );
    let descending = list("SchedAt", false, at(0), at(60), json!({}));
    assert_eq!(ids(&ok(&admin, LIST, descending).await), [a, c, b]);
    let just_now = format_time(crier::clock::now_ms() - 60_000);
    let created = list("createAt", true, just_now, in_secs(60), json!({}));
    assert_eq!(ids(&ok(&admin, LIST, created).await), [a, b, c, d]);
    let keyword = list("schedAt", true, at(0), at(60), json!({"Keyword": "market"}));
    let answer = ok(&admin, LIST, keyword).await;
    assert_eq!(ids(&answer), [b, a], "Title or Desc, any case");
    let page = list(
        "schedAt",
        true,
        at(0),
        at(60),
        json!({"Offset": 1, "Want": 1}),
    );
    let answer = ok(&admin, LIST, page).await;
    assert_eq!((ids(&answer), &answer["Total"]), (vec![c], &json!(3)));
    let beyond = list("schedAt", true, at(0), at(60), json!({"Offset": 5}));
    let answer = ok(&admin, LIST, beyond).await;
    assert_eq!((ids(&answer), &answer["Total"]), (vec![], &json!(3)));
}

async fn next_push(connection: &mut Connection, within: Duration) -> crier_client::PushFrame {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, connection.next_event()).await {
            Ok(Ok(Event::Push(push))) => return push,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("connection failed: {error}"),
            Err(_) => panic!("no push within {within:?}"),
        }
    }
}

fn text_of(push: &crier_client::PushFrame) -> String {
    let body: Value = serde_json::from_str(push.msg_body.get()).unwrap();
    body[0]["MsgContent"]["Text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_task_fires_on_time_as_an_ordinary_push_and_is_then_fixed() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["alice", "bob"]).await;
    let mut alice = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();
    let at = in_secs(2);
    let at_ms = parse_time(&at).unwrap();
    let task = add(&admin, "All", &at, chat("at the bell")).await;
    let user_task = add(
        &admin,
        "User",
        &at,
        json!({"To_Account": ["alice"], "OfflinePushInfo": {"Title": "for alice"}, "DataId": "d-1"}),
    )
    .await;

    let first = next_push(&mut alice, Duration::from_secs(5)).await;
    let arrived = crier::clock::now_ms();
    assert!(arrived >= at_ms, "{} ms early", at_ms - arrived);
    assert!(arrived <= at_ms + 1_000, "{} ms late", arrived - at_ms);
    let second = next_push(&mut alice, Duration::from_secs(2)).await;
    let info = ended(&admin, task, Duration::from_secs(2)).await;
    assert_eq!(
        (
            &info["Status"],
            &info["DispatchSuccess"],
            &info["DispatchErr"]
        ),
        (&json!("dispatched"), &json!(1), &json!(""))
    );
    let push_task_id = info["PushTaskID"].as_str().unwrap().to_owned();
    let user_info = ended(&admin, user_task, Duration::from_secs(2)).await;
    let batch_task_id = user_info["PushTaskID"].as_str().unwrap().to_owned();
    assert!(batch_task_id.starts_with("batch_"), "{batch_task_id}");
    let mut received = [first.task_id.clone(), second.task_id.clone()];
    received.sort();
    let mut expected = [push_task_id.clone(), batch_task_id.clone()];
    expected.sort();
    assert_eq!(received, expected);
    let chat_push = if first.task_id == push_task_id {
        &first
    } else {
        &second
    };
    assert_eq!(text_of(chat_push), "at the bell");
    assert_eq!(chat_push.from_account, ADMIN, "the creating admin");

    // The run is an ordinary push: listed with its task, reported, revocable.
    let listed = admin
        .ok("crier/task_list", json!({"Kinds": ["push", "batch"]}))
        .await;
    let of_task = |id: &str| {
        listed["Tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|listed| listed["TaskId"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(of_task(&push_task_id)["SchedTaskID"], task);
    assert_eq!(of_task(&push_task_id)["Kind"], "push");
    assert_eq!(of_task(&batch_task_id)["SchedTaskID"], user_task);
    assert_eq!(of_task(&batch_task_id)["DataId"], "d-1");
    let report = admin
        .ok("crier/task_report", json!({ "TaskId": push_task_id }))
        .await;
    assert_eq!(report["Report"]["AudienceSize"], 2);
    admin
        .ok("timpush/revoke", json!({ "TaskId": push_task_id }))
        .await;

    // Once run, a task can no longer be changed or deleted.
    let answer = refused(
        &admin,
        DELETE,
        json!({"TaskID": task, "Type": "All"}),
        90107,
    )
    .await;
    assert!(
        answer["ErrorInfo"].as_str().unwrap().contains("dispatched"),
        "{answer}"
    );
    refused(
        &admin,
        MODIFY,
        json!({"TaskID": task, "Type": "All", "SchedAt": in_secs(60)}),
        90107,
    )
    .await;
    assert_eq!(
        get(&admin, task).await,
        ended(&admin, task, Duration::ZERO).await
    );
}

#[tokio::test]
async fn a_run_refused_by_the_quota_fails_with_its_code() {
    let server = TestServer::start_with(vec![AppConfig {
        daily_push_quota: 1,
        ..app_config(APP, KEY)
    }])
    .await;
    let admin = server.admin();
    let task = add(&admin, "All", &in_secs(2), notice("t", "d")).await;
    // Created while the quota was free; the quota is used up before it runs.
    admin.push(text_push(1, "uses the quota")).await;
    let info = ended(&admin, task, Duration::from_secs(5)).await;
    assert_eq!(
        (&info["Status"], &info["DispatchSuccess"]),
        (&json!("failed"), &json!(0))
    );
    let error = info["DispatchErr"].as_str().unwrap();
    assert!(error.starts_with("90047 "), "{error}");
    assert_eq!(info["PushTaskID"], "");
}

#[tokio::test]
async fn tasks_due_while_the_server_was_down_run_at_start_or_fail_when_missed() {
    let dir = tempfile::tempdir().unwrap();
    let now = crier::clock::now_ms();
    // Stored before the server starts, as a server that went down before their time left them.
    let (late, missed) = {
        let store = SqliteStore::open(dir.path()).unwrap();
        let stored = |minutes_ago: u64, title: &str| {
            let content = json!({"MsgRandom": 3, "OfflinePushInfo": {"Title": title}}).to_string();
            store
                .add_sched_task(&NewSchedTask {
                    app: APP,
                    kind: SchedKind::All,
                    created_ms: now - 3_600_000,
                    sched_at_ms: (now - minutes_ago * 60_000) / 1000 * 1000,
                    content: &content,
                    caller: ADMIN,
                })
                .unwrap()
        };
        (stored(9, "late"), stored(11, "missed"))
    };
    let server = TestServer::start_in(dir, default_apps()).await;
    let admin = server.admin();
    let info = ended(&admin, late, Duration::from_secs(3)).await;
    assert_eq!(info["Status"], "dispatched", "{info}");
    let info = ended(&admin, missed, Duration::from_secs(3)).await;
    assert_eq!(
        (&info["Status"], &info["DispatchErr"], &info["PushTaskID"]),
        (&json!("failed"), &json!("missed schedule"), &json!(""))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_made_by_crier_push_at_survives_kill_9_and_fires_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config, &data);
    admin_ok(
        &server.base,
        "im_open_login_svc/multiaccount_import",
        json!({"Accounts": ["alice"]}),
    )
    .await;
    let at = in_secs(6);
    let at_ms = parse_time(&at).unwrap();
    let output = tokio::process::Command::new(crier_binary())
        .args([
            "push",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
            "--key",
            KEY,
        ])
        .args(["--text", "survived", "--at", &at])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let task: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let refused = tokio::process::Command::new(crier_binary())
        .args([
            "push",
            "--url",
            &server.base,
            "--sdkappid",
            &APP.to_string(),
            "--key",
            KEY,
        ])
        .args(["--text", "never", "--at", "tomorrow"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("90104"), "{said}");
    server.kill_9();

    let server = ServerProcess::start(&config, &data);
    let mut alice = Connection::connect(&login_options_at(&server.base, "alice"))
        .await
        .unwrap();
    let push = next_push(&mut alice, Duration::from_secs(10)).await;
    let arrived = crier::clock::now_ms();
    assert!(arrived >= at_ms, "{} ms early", at_ms - arrived);
    assert!(arrived <= at_ms + 1_000, "{} ms late", arrived - at_ms);
    assert_eq!(text_of(&push), "survived");
    // The run is recorded just after its push is accepted.
    let mut info = Value::Null;
    for _ in 0..20 {
        info = admin_ok(&server.base, GET, body(json!({ "TaskID": task }))).await;
        if info["TaskInfo"]["Status"] == "dispatched" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        info["TaskInfo"]["PushTaskID"],
        push.task_id.as_str(),
        "{info}"
    );
    assert_eq!(info["TaskInfo"]["Content"]["OnlineOnlyFlag"], 0);
    assert!(server.terminate().success());
}
