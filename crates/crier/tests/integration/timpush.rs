//! The push commands of the `v4/timpush/*` family (`timpush.md` §2-4) through a running
//! server: both flavours of `push`, `TagsNot`, `batch`, `revoke`, every error code with the
//! request that causes it, and the limits shared with `im_push`.

use std::time::Duration;

use crier::store::{PushKind, PushRecord};
use crier_client::{Connection, Event};
use crier_proto::protocol::{ClientFrame, PushFrame};
use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

const T_PUSH: &str = "timpush/push";
const BATCH: &str = "timpush/batch";
const REVOKE: &str = "timpush/revoke";

fn notification(msg_random: u32) -> Value {
    json!({
        "MsgRandom": msg_random,
        "OfflinePushInfo": {"PushFlag": 0, "Title": "Weekend sale", "Desc": "20% off until Sunday"},
    })
}

fn chat(msg_random: u32, online_only: u8) -> Value {
    json!({
        "MsgRandom": msg_random,
        "OnlineOnlyFlag": online_only,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "Servers restart at 02:00 UTC"}}],
    })
}

async fn task_id_of(admin: &Admin<'_>, path: &str, body: Value) -> String {
    let answer = admin.ok(path, body).await;
    let task_id = answer["TaskId"].as_str().unwrap().to_owned();
    assert!(!task_id.is_empty(), "{answer}");
    task_id
}

/// Asserts a refusal with `code` that stored nothing; a push command's failure still
/// carries `"TaskId": ""`.
async fn refused(admin: &Admin<'_>, path: &str, body: Value, code: u32) {
    let before = pushes_accepted(admin.server).await;
    let answer = admin.fails(path, body.clone(), code).await;
    if path != REVOKE {
        assert_eq!(answer["TaskId"], "", "{body}: {answer}");
    }
    assert_eq!(pushes_accepted(admin.server).await, before, "{body}");
}

/// Every frame `session` gets until the `Pong` to a `Ping` sent now.
async fn frames_until_pong(session: &mut Connection) -> Vec<Event> {
    session.send(&ClientFrame::Ping).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), session.next_event())
            .await
            .expect("a Pong within 5 s")
            .unwrap();
        match event {
            Event::Pong => return frames,
            other => frames.push(other),
        }
    }
}

fn pushes_of(frames: &[Event], task_id: &str) -> Vec<PushFrame> {
    frames
        .iter()
        .filter_map(|event| match event {
            Event::Push(push) if push.task_id == task_id => Some(push.clone()),
            _ => None,
        })
        .collect()
}

async fn tagged() -> TestServer {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b", "c", "d"]).await;
    admin
        .ok(
            ADD_TAG,
            user_tags(&[
                ("a", &["gold"]),
                ("b", &["gold", "opted_out"]),
                ("c", &["platinum"]),
            ]),
        )
        .await;
    server
}

#[tokio::test]
async fn a_notification_push_reaches_open_sessions_and_keeps_nothing() {
    let server = tagged().await;
    let admin = server.admin();
    let mut a = log_in(&server, "a").await;
    let mut body = notification(3_674_128);
    body["Condition"] = json!({"TagsOr": ["gold", "platinum"], "TagsNot": ["opted_out"]});
    body["DataId"] = json!("campaign-2024-11");
    let task_id = task_id_of(&admin, T_PUSH, body).await;
    let groups: Vec<&str> = task_id.split('_').collect();
    assert_eq!(groups.len(), 5, "Tencent's shape: {task_id}");
    assert_eq!(u64::from_str_radix(groups[1], 16).unwrap(), APP);
    assert_eq!(u32::from_str_radix(groups[4], 16).unwrap(), 3_674_128);
    let frame = receive(&mut a, &task_id).await;
    assert_eq!(frame.msg_body.get(), "[]");
    assert!(!frame.offline);
    assert_eq!(frame.from_account, ADMIN);
    let info: Value = serde_json::from_str(frame.offline_push_info.unwrap().get()).unwrap();
    assert_eq!(info["Title"], "Weekend sale");
    let report = task_report(&admin, &task_id).await;
    // gold or platinum, not opted_out: a and c.
    assert_eq!(report["AudienceSize"], 2, "{report}");
    assert!(
        kept_for(&server, "c", &task_id).await.is_none(),
        "a notification is never kept for a later login"
    );
    let listed = admin
        .ok("crier/task_list", json!({"Kinds": ["push"]}))
        .await;
    assert_eq!(listed["Tasks"][0]["TaskId"], task_id.as_str());
    assert_eq!(listed["Tasks"][0]["Kind"], "push");
    assert_eq!(listed["Tasks"][0]["DataId"], "campaign-2024-11");
    let none = admin
        .ok("crier/task_list", json!({"Kinds": ["batch"]}))
        .await;
    assert_eq!(none["Total"], 0);
}

#[tokio::test]
async fn the_chat_flavour_keeps_the_message_unless_online_only() {
    let server = tagged().await;
    let admin = server.admin();
    let kept = task_id_of(&admin, T_PUSH, chat(1, 0)).await;
    let online_only = task_id_of(&admin, T_PUSH, chat(2, 1)).await;
    let frame = kept_for(&server, "d", &kept)
        .await
        .expect("OnlineOnlyFlag 0 keeps the message for offline accounts");
    assert!(frame.offline);
    assert_eq!(
        serde_json::from_str::<Value>(frame.msg_body.get()).unwrap()[0]["MsgContent"]["Text"],
        "Servers restart at 02:00 UTC"
    );
    assert!(kept_for(&server, "d", &online_only).await.is_none());
    assert_eq!(task_report(&admin, &kept).await["MsgLifeTime"], 604_800);
}

#[tokio::test]
async fn tags_not_works_alone_and_in_im_push_too() {
    let server = tagged().await;
    let admin = server.admin();
    let mut body = notification(1);
    body["Condition"] = json!({"TagsNot": ["gold"]});
    let task_id = task_id_of(&admin, T_PUSH, body).await;
    // Everybody but the gold holders: c and d.
    assert_eq!(task_report(&admin, &task_id).await["AudienceSize"], 2);
    let mut classic = text_push(2, "hi");
    classic["Condition"] = json!({"TagsAnd": ["gold"], "TagsNot": ["opted_out"]});
    let task_id = admin.push(classic).await;
    assert_audience_of(&admin, &task_id, &["a"]).await;
    let counted = admin
        .ok(
            "crier/audience_count",
            json!({"Condition": {"TagsOr": ["gold", "platinum"], "TagsNot": ["opted_out"]}}),
        )
        .await;
    assert_eq!(counted["Count"], 2);
}

#[tokio::test]
async fn push_refusals_have_their_codes_and_store_nothing() {
    let server = tagged().await;
    let admin = server.admin();
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = notification(9);
        change(&mut body);
        body
    };
    let cases: Vec<(Value, u32)> = vec![
        (with(&|b| b["From_Account"] = json!("ghost")), 90048),
        (with(&|b| b["MsgRandom"] = json!("x")), 90005),
        (with(&|b| b["MsgRandom"] = json!(-1)), 90005),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("OfflinePushInfo");
            }),
            90043,
        ),
        (
            with(&|b| b["OfflinePushInfo"]["PushFlag"] = json!(3)),
            90043,
        ),
        (with(&|b| b["DataId"] = json!("x".repeat(65))), 90057),
        (with(&|b| b["MsgBody"] = json!("text")), 90007),
        (
            with(&|b| b["MsgBody"] = json!([{"MsgType": "TIMTextElem"}])),
            90002,
        ),
        (
            with(&|b| b["MsgBody"] = json!([{"MsgType": "TIMNope", "MsgContent": {}}])),
            90010,
        ),
        (
            with(&|b| b["Condition"] = json!({"TagsAnd": ["x".repeat(51)]})),
            90020,
        ),
        (
            with(&|b| b["Condition"] = json!({"TagsAnd": ["x"], "TagsNot": ["x"]})),
            90022,
        ),
        (
            with(&|b| b["Condition"] = json!({"TagsNot": vec!["t"; 11]})),
            90032,
        ),
        (
            with(&|b| b["Condition"] = json!({"AttrsAnd": {"nope": "v"}})),
            90033,
        ),
        (
            with(&|b| b["Condition"] = json!({"TagsNot": ["x"], "AttrsOr": {"a": "b"}})),
            90039,
        ),
        (with(&|b| b["Condition"] = json!({"TagsOr": [""]})), 90040),
    ];
    for (body, code) in cases {
        refused(&admin, T_PUSH, body, code).await;
    }
    let mut chat_body = chat(1, 0);
    chat_body["OnlineOnlyFlag"] = json!(2);
    refused(&admin, T_PUSH, chat_body, 90001).await;
    // Not JSON; a non-admin caller.
    let answer = server.post_raw(T_PUSH, &admin.query, "{not json").await;
    assert_eq!(
        (answer["ErrorCode"].clone(), answer["TaskId"].clone()),
        (json!(90001), json!(""))
    );
    let user = server.admin_of(APP, KEY, "a");
    user.fails(T_PUSH, notification(1), 90009).await;
    // Over 10 KB: refused before it is read as JSON, even when it is not JSON at all.
    let mut big = notification(1);
    big["OfflinePushInfo"]["Ext"] = json!("x".repeat(10_300));
    refused(&admin, T_PUSH, big, 90056).await;
    let answer = server
        .post_raw(T_PUSH, &admin.query, "x".repeat(10_241))
        .await;
    assert_eq!(answer["ErrorCode"], 90056, "{answer}");
    let mut just_under = notification(2);
    let padding = 10_240 - just_under.to_string().len() - r#","Pad":"""#.len();
    just_under["Pad"] = json!("x".repeat(padding));
    assert_eq!(just_under.to_string().len(), 10_240);
    task_id_of(&admin, T_PUSH, just_under).await;
    let disabled = TestServer::start_with(vec![crier::config::AppConfig {
        push_enabled: false,
        ..app_config(APP, KEY)
    }])
    .await;
    let answer = disabled
        .admin()
        .fails(T_PUSH, json!({"MsgRandom": "x"}), 90045)
        .await;
    assert_eq!(answer["TaskId"], "");
}

#[tokio::test]
async fn quota_interval_and_retries_are_shared_with_im_push() {
    let server = TestServer::start_with(vec![crier::config::AppConfig {
        daily_push_quota: 2,
        min_push_interval_ms: 1_000,
        ..app_config(APP, KEY)
    }])
    .await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    admin.push(text_push(1, "classic")).await;
    let answer = admin.fails(T_PUSH, notification(2), 90024).await;
    assert_eq!(answer["TaskId"], "");
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let first = task_id_of(&admin, T_PUSH, notification(3)).await;
    // The same MsgRandom and body within a second: the first TaskId, no quota used.
    assert_eq!(task_id_of(&admin, T_PUSH, notification(3)).await, first);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    admin.fails(T_PUSH, notification(4), 90047).await;
    admin.fails(PUSH, text_push(5, "classic"), 90047).await;
    // A batch is outside both.
    let batch = json!({"To_Account": ["a"], "MsgRandom": 6, "OfflinePushInfo": {"Desc": "d"}});
    let batch_id = task_id_of(&admin, BATCH, batch).await;
    assert!(batch_id.starts_with("batch_"), "{batch_id}");
    let quota = admin.ok("crier/quota", json!({})).await;
    assert_eq!(quota["PushesToday"], 2, "{quota}");
}

#[tokio::test]
async fn a_batch_reaches_the_named_accounts_and_lists_the_unknown() {
    let server = tagged().await;
    let admin = server.admin();
    let mut a = log_in(&server, "a").await;
    let mut d = log_in(&server, "d").await;
    let body = json!({
        "From_Account": "c",
        "To_Account": ["a", "b", "ghost", "a"],
        "MsgRandom": 99_231,
        "OfflinePushInfo": {"PushFlag": 0, "Title": "Your order shipped", "Desc": "Parcel 4411"},
        "DataId": "order-4411",
    });
    let answer = admin.ok(BATCH, body).await;
    let task_id = answer["TaskId"].as_str().unwrap().to_owned();
    assert!(task_id.starts_with("batch_"), "{task_id}");
    assert_eq!(
        answer["ErrorList"],
        json!([{"To_Account": "ghost", "ErrorCode": 70107, "ErrorInfo": "account does not exist"}])
    );
    let frame = receive(&mut a, &task_id).await;
    assert_eq!(frame.from_account, "c");
    assert_eq!(frame.msg_body.get(), "[]");
    assert!(pushes_of(&frames_until_pong(&mut d).await, &task_id).is_empty());
    assert_eq!(task_report(&admin, &task_id).await["AudienceSize"], 2);
    // Nobody known: still OK, with a TaskId and a full ErrorList.
    let answer = admin
        .ok(
            BATCH,
            json!({"To_Account": ["x", "y"], "MsgRandom": 1, "OfflinePushInfo": {}}),
        )
        .await;
    assert_eq!(answer["ErrorList"].as_array().unwrap().len(), 2);
    // All known: no ErrorList.
    let answer = admin
        .ok(
            BATCH,
            json!({"To_Account": ["c"], "MsgRandom": 2, "OfflinePushInfo": {}}),
        )
        .await;
    assert!(answer.get("ErrorList").is_none(), "{answer}");
}

#[tokio::test]
async fn batch_refusals_have_their_codes_and_store_nothing() {
    let server = tagged().await;
    let admin = server.admin();
    let base = || json!({"To_Account": ["a"], "MsgRandom": 1, "OfflinePushInfo": {"Desc": "d"}});
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = base();
        change(&mut body);
        body
    };
    let too_many: Vec<String> = (0..501).map(|n| format!("u{n}")).collect();
    for (body, code) in [
        (with(&|b| b["From_Account"] = json!("ghost")), 90048),
        (with(&|b| b["To_Account"] = json!([])), 90018),
        (with(&|b| b["To_Account"] = json!(too_many)), 90018),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("To_Account");
            }),
            90018,
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("MsgRandom");
            }),
            90005,
        ),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("OfflinePushInfo");
            }),
            90043,
        ),
        (with(&|b| b["DataId"] = json!("d".repeat(65))), 90057),
    ] {
        refused(&admin, BATCH, body, code).await;
    }
    let five_hundred: Vec<String> = (0..500).map(|n| format!("u{n}")).collect();
    admin
        .ok(BATCH, with(&|b| b["To_Account"] = json!(five_hundred)))
        .await;
    server
        .admin_of(APP, KEY, "a")
        .fails(BATCH, base(), 90009)
        .await;
    let disabled = TestServer::start_with(vec![crier::config::AppConfig {
        push_enabled: false,
        ..app_config(APP, KEY)
    }])
    .await;
    disabled.admin().fails(BATCH, base(), 90045).await;
}

#[tokio::test]
async fn batches_past_their_rate_are_90024() {
    let server = TestServer::start_with(vec![crier::config::AppConfig {
        batch_calls_per_second: 2,
        ..app_config(APP, KEY)
    }])
    .await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    let calls = (0..10u32).map(|n| {
        let body = json!({"To_Account": ["a"], "MsgRandom": n, "OfflinePushInfo": {}});
        let admin = &admin;
        async move { admin.call(BATCH, body).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let ok = answers.iter().filter(|a| a["ErrorCode"] == 0).count();
    let limited: Vec<&Value> = answers.iter().filter(|a| a["ErrorCode"] == 90024).collect();
    assert_eq!(ok + limited.len(), 10, "{answers:?}");
    // Ten calls at once span at most two seconds of the rate's window.
    assert!(
        (2..=4).contains(&ok),
        "{ok} batches accepted at 2 per second"
    );
    assert!(limited[0]["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("batch_calls_per_second"));
}

#[tokio::test]
async fn a_revoke_stops_delivery_everywhere_and_survives_a_restart() {
    let server = tagged().await;
    let admin = server.admin();
    let mut a = log_in(&server, "a").await;
    let task_id = task_id_of(&admin, T_PUSH, chat(1, 0)).await;
    receive(&mut a, &task_id).await;
    let info = json!({"Title": "Correction", "Desc": "The sale starts Saturday"});
    admin
        .ok(REVOKE, json!({"TaskId": task_id, "OfflinePushInfo": info}))
        .await;
    let frames = frames_until_pong(&mut a).await;
    let revoke = frames
        .iter()
        .find_map(|event| match event {
            Event::Revoke {
                task_id: revoked,
                offline_push_info,
            } if *revoked == task_id => Some(offline_push_info.clone()),
            _ => None,
        })
        .expect("the open session got Revoke");
    assert_eq!(
        serde_json::from_str::<Value>(&revoke.unwrap()).unwrap(),
        info
    );
    assert!(
        kept_for(&server, "d", &task_id).await.is_none(),
        "a revoked push is not delivered at login"
    );
    let listed = admin.ok("crier/task_list", json!({})).await;
    assert_eq!(listed["Tasks"][0]["State"], "revoked", "{listed}");
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    admin.fails(REVOKE, json!({"TaskId": task_id}), 90050).await;
    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir, default_apps()).await;
    assert!(
        kept_for(&server, "c", &task_id).await.is_none(),
        "a restart does not resume a revoked push"
    );
    server
        .admin()
        .fails(REVOKE, json!({"TaskId": task_id}), 90050)
        .await;
}

#[tokio::test]
async fn revoke_refusals_have_their_codes() {
    let server = tagged().await;
    let admin = server.admin();
    let pace = || tokio::time::sleep(Duration::from_millis(1_050));
    admin.fails(REVOKE, json!({}), 90001).await;
    admin
        .fails(REVOKE, json!({"TaskId": "657bf434_537529d8_1_2_3"}), 90049)
        .await;
    pace().await;
    let classic = admin.push(text_push(1, "classic")).await;
    admin.fails(REVOKE, json!({"TaskId": classic}), 90049).await;
    pace().await;
    let batch = task_id_of(
        &admin,
        BATCH,
        json!({"To_Account": ["a"], "MsgRandom": 2, "OfflinePushInfo": {}}),
    )
    .await;
    admin.fails(REVOKE, json!({"TaskId": batch}), 90049).await;
    pace().await;
    // Nothing was kept: only the overwriting notification can cover it up.
    let notified = task_id_of(&admin, T_PUSH, notification(3)).await;
    admin
        .fails(REVOKE, json!({"TaskId": notified}), 90053)
        .await;
    pace().await;
    admin
        .ok(
            REVOKE,
            json!({"TaskID": notified, "OfflinePushInfo": {"Desc": "sorry"}}),
        )
        .await;
    let kept = task_id_of(&admin, T_PUSH, chat(4, 0)).await;
    // 90051: a second revoke within one second. The pair starts just after a second begins,
    // so both share it unless the machine stalls for most of a second; then it tries again.
    let mut limited = None;
    for _ in 0..5 {
        let into_second = crier::clock::now_ms() % 1000;
        tokio::time::sleep(Duration::from_millis(1_020 - into_second)).await;
        admin
            .fails(REVOKE, json!({"TaskId": "no_such_push"}), 90049)
            .await;
        // Not `kept`: should the pair straddle a second, this one must still change nothing.
        let second = admin
            .call(REVOKE, json!({"TaskId": "no_such_push_either"}))
            .await;
        if second["ErrorCode"] == 90051 {
            limited = Some(second);
            break;
        }
        assert_eq!(second["ErrorCode"], 90049, "{second}");
    }
    let limited = limited.expect("a second revoke within the second is 90051");
    assert!(!limited["ErrorInfo"].as_str().unwrap().is_empty());
    pace().await;
    // A push started more than 24 h ago, as the store holds it.
    let old = PushRecord {
        app: APP,
        task_id: "old_push".into(),
        kind: PushKind::Push,
        created_ms: crier::clock::now_ms() - 25 * 3_600 * 1_000,
        lifetime_secs: 604_800,
        from_account: ADMIN.into(),
        msg_body: "[]".into(),
        ..PushRecord::default()
    };
    let rules = crier::store::PushRules {
        day_start_ms: 0,
        daily_quota: u64::MAX,
        min_interval_ms: 0,
        retry_window_ms: 0,
    };
    server
        .state
        .store
        .try_accept_push(&old, 1, &rules, None)
        .unwrap();
    admin
        .fails(REVOKE, json!({"TaskId": "old_push"}), 90052)
        .await;
    pace().await;
    server
        .admin_of(APP, KEY, "a")
        .fails(REVOKE, json!({"TaskId": kept}), 90009)
        .await;
    // The kept push was not touched by any refusal.
    assert!(kept_for(&server, "d", &kept).await.is_some());
}

/// What one of the racing sessions saw of the push, in the order it arrived.
#[derive(Debug, PartialEq)]
enum Seen {
    Push,
    Revoke,
}

/// Reads `session` until the `Revoke` of `task_id` and everything written before a `Pong`
/// after it; answers what came of `task_id`.
async fn watch_until_revoked(mut session: Connection, task_id: String) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut pinged = false;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), session.next_event())
            .await
            .unwrap_or_else(|_| panic!("no Revoke within 60 s; saw {seen:?}"))
            .unwrap();
        match event {
            Event::Push(push) if push.task_id == task_id => seen.push(Seen::Push),
            Event::Revoke { task_id: id, .. } if id == task_id => {
                seen.push(Seen::Revoke);
                session.send(&ClientFrame::Ping).await.unwrap();
                pinged = true;
            }
            Event::Pong if pinged => return seen,
            Event::Pong | Event::Push(_) | Event::Revoke { .. } => {}
            other => panic!("a racing session got {other:?}"),
        }
    }
}

/// The issue's race: a revoke answered while the push is still being written to 10,000
/// sessions. The server runs as its own process (20,000 sockets would not fit in one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_racing_a_push_to_10000_sessions_leaves_it_with_nobody() {
    use crate::process::{admin_ok, write_config, ServerProcess};
    const SESSIONS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "");
    let server = ServerProcess::start(&config, &data);
    let accounts: Vec<String> = (0..SESSIONS).map(|n| format!("racer{n}")).collect();
    for chunk in accounts.chunks(100) {
        admin_ok(
            &server.base,
            "im_open_login_svc/multiaccount_import",
            json!({ "Accounts": chunk }),
        )
        .await;
    }
    let mut sessions = Vec::with_capacity(SESSIONS);
    for chunk in accounts.chunks(250) {
        let logins = chunk.iter().map(|account| {
            let options = login_options_at(&server.base, account);
            async move { Connection::connect(&options).await.unwrap() }
        });
        sessions.extend(futures_util::future::join_all(logins).await);
    }
    // The push and its revoke go out back to back from a thread of their own, so that the
    // sessions' frames, which this process reads meanwhile, do not delay the revoke.
    let base = server.base.clone();
    let (pushed, push_answer) = std::sync::mpsc::channel();
    let caller = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let started = std::time::Instant::now();
            let task_id = admin_ok(&base, T_PUSH, chat(7, 0)).await["TaskId"]
                .as_str()
                .unwrap()
                .to_owned();
            let pushed_after = started.elapsed();
            pushed.send(task_id.clone()).unwrap();
            let body = json!({"TaskId": task_id, "OfflinePushInfo": {"Desc": "withdrawn"}});
            admin_ok(&base, REVOKE, body).await;
            (pushed_after, started.elapsed() - pushed_after)
        })
    });
    let task_id = push_answer.recv().unwrap();
    let watchers: Vec<_> = sessions
        .into_iter()
        .map(|session| tokio::spawn(watch_until_revoked(session, task_id.clone())))
        .collect();
    let (pushed_after, revoked_after) = caller.join().unwrap();
    let mut got_push = 0;
    for watcher in watchers {
        let seen = watcher.await.unwrap();
        let revoke_at = seen
            .iter()
            .position(|s| *s == Seen::Revoke)
            .expect("every session of the audience gets Revoke");
        assert!(
            !seen[revoke_at..].contains(&Seen::Push),
            "a session got the push after its Revoke: {seen:?}"
        );
        assert!(seen[..revoke_at].len() <= 1, "{seen:?}");
        got_push += revoke_at;
    }
    eprintln!(
        "push answered in {} ms, revoke {} ms after that; {got_push} of {SESSIONS} sessions had the push before their Revoke",
        pushed_after.as_millis(),
        revoked_after.as_millis()
    );
    // After the answer, nobody gets it: not at login, not after a crash and a restart.
    let late = |account: &'static str| {
        let options = login_options_at(&server.base, account);
        let task_id = task_id.clone();
        async move {
            let mut session = Connection::connect(&options).await.unwrap();
            pushes_of(&frames_until_pong(&mut session).await, &task_id).len()
        }
    };
    assert_eq!(late("racer1").await + late("racer9999").await, 0);
    server.kill_9();
    let server = ServerProcess::start(&config, &data);
    let options = login_options_at(&server.base, "racer5");
    let mut session = Connection::connect(&options).await.unwrap();
    assert!(pushes_of(&frames_until_pong(&mut session).await, &task_id).is_empty());
}
