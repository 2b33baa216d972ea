//! Delivery callbacks (`Push.AllMemberPush`, timpush.md §8) to a local receiver: every event
//! arrives despite failures, signed as the spec says, across `kill -9`, and a receiver that
//! never answers does not slow online delivery.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crier::config::{AppConfig, SecretKey};
use crier_client::{Connection, Event};
use crier_proto::protocol::ClientFrame;
use serde_json::{json, Value};

use crate::fakes::callback::{self, key, EventKey, FakeCallbackReceiver};
use crate::fakes::webhook::FakeWebhook;
use crate::fakes::Answer;
use crate::harness::*;
use crate::process::{admin_ok, write_config, ServerProcess};

const WAIT: Duration = Duration::from_secs(20);

fn app_calling(receiver: &FakeCallbackReceiver, token: Option<&str>) -> AppConfig {
    AppConfig {
        callback_url: Some(receiver.url()),
        callback_token: token.map(|t| SecretKey(t.to_owned())),
        ..app_config(APP, KEY)
    }
}

/// A `timpush/push` to everyone (the Chat flavour, kept for offline accounts, with a
/// notification for them and a `DataId`).
fn reported_push(msg_random: u32, text: &str) -> (&'static str, Value) {
    (
        "timpush/push",
        json!({
            "MsgRandom": msg_random,
            "OnlineOnlyFlag": 0,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
            "OfflinePushInfo": {"PushFlag": 0, "Title": "t", "Desc": text},
            "DataId": format!("data-{msg_random}"),
        }),
    )
}

async fn push_reported(admin: &Admin<'_>, msg_random: u32, text: &str) -> String {
    let (path, body) = reported_push(msg_random, text);
    admin.ok(path, body).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn next_push(connection: &mut Connection) -> String {
    loop {
        match tokio::time::timeout(WAIT, connection.next_event())
            .await
            .expect("a push within the wait")
            .unwrap()
        {
            Event::Push(push) => return push.task_id,
            _ => continue,
        }
    }
}

/// Frames are handled in order: the Pong means every frame sent before is done with.
async fn settled(connection: &mut Connection) {
    connection.send(&ClientFrame::Ping).await.unwrap();
    loop {
        let event = tokio::time::timeout(WAIT, connection.next_event())
            .await
            .unwrap()
            .unwrap();
        if matches!(event, Event::Pong) {
            return;
        }
    }
}

fn online_keys(task_id: &str, accounts: &[&str], stages: &[u64]) -> BTreeSet<EventKey> {
    let mut keys = BTreeSet::new();
    for account in accounts {
        for stage in stages {
            keys.insert((task_id.to_owned(), (*account).to_owned(), 2, *stage, 0));
        }
    }
    keys
}

#[tokio::test]
async fn a_receiver_that_fails_twice_then_accepts_gets_every_event_exactly_once_after_dedup() {
    let receiver = FakeCallbackReceiver::start().await;
    receiver.respond_once("", Answer::status(503));
    receiver.respond_once(
        "",
        Answer::json(
            200,
            json!({"ActionStatus": "FAIL", "ErrorCode": 1, "ErrorInfo": "busy"}),
        ),
    );
    let webhook = FakeWebhook::start().await;
    webhook.respond_to("refused-token", Answer::status(400));
    let app = AppConfig {
        webhook: Some(webhook.config()),
        ..app_calling(&receiver, None)
    };
    let server = TestServer::start_with(vec![app]).await;
    let online = ["alice", "bob", "carol"];
    let mut sessions = Vec::new();
    for account in online {
        sessions.push(
            Connection::connect(&server.login_options(account))
                .await
                .unwrap(),
        );
    }
    // dave is offline with two devices: one the webhook takes, one it refuses.
    let mut dave = Connection::connect(&server.login_options("dave"))
        .await
        .unwrap();
    for token in ["good-token", "refused-token"] {
        dave.send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: token.into(),
        })
        .await
        .unwrap();
    }
    settled(&mut dave).await;
    dave.close().await.unwrap();
    wait_offline(&server, "dave").await;

    // A classic im_push is not reported; a timpush push and a batch are.
    let admin = server.admin();
    let classic = admin.push(text_push(1, "classic")).await;
    let task_id = push_reported(&admin, 2, "hello").await;
    let batch = admin
        .ok(
            "timpush/batch",
            json!({"To_Account": ["alice", "dave"], "MsgRandom": 3, "DataId": "order-1",
                   "OfflinePushInfo": {"PushFlag": 0, "Title": "Order", "Desc": "shipped"}}),
        )
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    for session in &mut sessions {
        assert_eq!(next_push(session).await, classic);
        assert_eq!(next_push(session).await, task_id);
        session
            .ack(vec![classic.clone(), task_id.clone()])
            .await
            .unwrap();
    }
    // The batch is not kept: its acknowledgement is reported all the same.
    assert_eq!(next_push(&mut sessions[0]).await, batch);
    sessions[0].ack(vec![batch.clone()]).await.unwrap();
    let mut expected = online_keys(&task_id, &online, &[1, 2]);
    expected.insert((task_id.clone(), "dave".into(), 1, 1, 0));
    expected.extend(online_keys(&batch, &["alice"], &[1, 2]));
    expected.insert((batch.clone(), "dave".into(), 1, 1, 0));
    let events = receiver.wait_for_events(&expected, WAIT).await;

    let deduplicated: BTreeSet<EventKey> = events.iter().map(key).collect();
    assert_eq!(
        deduplicated, expected,
        "every event, and nothing else (none of the im_push)"
    );
    let requests = receiver.requests();
    assert!(
        requests.len() >= 3,
        "two failures, then at least one success: {}",
        requests.len()
    );
    assert_eq!(requests[0].status, 503);
    let failed_events: BTreeSet<EventKey> =
        callback::events_of(&requests[0]).iter().map(key).collect();
    assert!(
        !failed_events.is_empty() && failed_events.is_subset(&deduplicated),
        "what failed was sent again"
    );
    // The offline events: one accepted, one refused with the provider's reason.
    let dave_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["To_Account"] == "dave" && e["TaskId"] == task_id.as_str())
        .collect();
    let mut codes: Vec<u64> = dave_events
        .iter()
        .map(|e| e["ErrCode"].as_u64().unwrap())
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes, [0, 1], "{dave_events:#?}");
    let refused = dave_events.iter().find(|e| e["ErrCode"] == 1).unwrap();
    assert!(
        refused["ErrInfo"].as_str().unwrap().contains("400"),
        "{refused}"
    );
    for event in &events {
        assert_eq!(event["CallbackCommand"], "Push.AllMemberPush");
        let data_id = if event["TaskId"] == task_id.as_str() {
            "data-2"
        } else {
            "order-1"
        };
        assert_eq!(event["DataId"], data_id, "{event}");
        assert!(event["TaskTime"].as_u64().unwrap() <= event["EventTime"].as_u64().unwrap());
        assert_eq!(event["PushPlatform"], event["DeviceType"]);
    }
    for request in &requests {
        let count = callback::events_of(request).len();
        assert!((1..=100).contains(&count), "{count} events in one request");
        callback::check(request, None).unwrap();
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("crier_callback_requests_total{outcome=\"failed\"} 2"),
        "{metrics}"
    );
}

async fn wait_offline(server: &TestServer, identifier: &str) {
    for _ in 0..500 {
        let answer = server
            .admin()
            .ok(
                "openim/query_online_status",
                json!({"To_Account": [identifier]}),
            )
            .await;
        if answer["QueryResult"][0]["Status"] == "Offline" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{identifier} never went offline");
}

#[tokio::test]
async fn a_signed_callback_verifies_with_the_specs_formula() {
    let receiver = FakeCallbackReceiver::start().await;
    let server = TestServer::start_with(vec![app_calling(&receiver, Some(callback::TOKEN))]).await;
    let mut alice = Connection::connect(&server.login_options("alice"))
        .await
        .unwrap();
    let task_id = push_reported(&server.admin(), 4, "signed").await;
    assert_eq!(next_push(&mut alice).await, task_id);
    let requests = receiver.wait_for(1, WAIT).await;
    let request = &requests[0];
    callback::check(request, Some(callback::TOKEN)).unwrap();
    assert!(request.verified);
    assert!(
        callback::check(request, Some("another token")).is_err(),
        "the signature depends on the token"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let query = callback::query(request);
    let mut names: Vec<&str> = query.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "CallbackCommand",
            "RequestTime",
            "SdkAppid",
            "Sign",
            "contenttype"
        ]
    );
    // The token is a secret: never in the metrics.
    assert!(!server.metrics().await.contains(callback::TOKEN));
}

#[tokio::test]
async fn events_stored_before_kill_9_are_sent_after_the_restart() {
    let receiver = FakeCallbackReceiver::start().await;
    // Down for the first run: every request fails.
    receiver.respond_to("", Answer::status(503));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!("callback_url = \"{}\"\n", receiver.url()),
    );
    let data_dir = dir.path().join("data");
    let server = ServerProcess::start(&config, &data_dir);
    let accounts = ["k1", "k2", "k3", "k4"];
    let mut sessions = Vec::new();
    for account in accounts {
        let options = login_options_at(&server.base, account);
        sessions.push(Connection::connect(&options).await.unwrap());
    }
    let (path, body) = reported_push(3, "before the crash");
    let task_id = admin_ok(&server.base, path, body).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    for session in &mut sessions {
        assert_eq!(next_push(session).await, task_id);
        session.ack(vec![task_id.clone()]).await.unwrap();
        settled(session).await;
    }
    let expected = online_keys(&task_id, &accounts, &[1, 2]);
    // Wait until every event was offered (and refused) once: they are in the queue.
    let started = Instant::now();
    loop {
        let offered: BTreeSet<EventKey> = receiver
            .requests()
            .iter()
            .flat_map(callback::events_of)
            .map(|e| key(&e))
            .collect();
        if expected.is_subset(&offered) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "events never offered: {offered:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sessions);
    server.kill_9();

    receiver.respond_to(
        "",
        Answer::json(
            200,
            json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}),
        ),
    );
    let _restarted = ServerProcess::start(&config, &data_dir);
    let events = receiver.wait_for_events(&expected, WAIT).await;
    let delivered: BTreeSet<EventKey> = events.iter().map(key).collect();
    assert_eq!(delivered, expected);
}

/// Opens `n` sessions of `app` named `{prefix}{i}`, logged in.
async fn sessions(
    server: &TestServer,
    app: u64,
    key: &str,
    prefix: &str,
    n: usize,
) -> Vec<Connection> {
    let mut opened = Vec::with_capacity(n);
    for i in 0..n {
        let mut options = server.login_options(&format!("{prefix}{i}"));
        options.sdkappid = app;
        options.user_sig = crier_proto::usersig::sign(
            app,
            key,
            &format!("{prefix}{i}"),
            86_400,
            crier::clock::now_secs(),
        );
        opened.push(Connection::connect(&options).await.unwrap());
    }
    opened
}

/// Pushes to every account of `app` and answers how long until the last session had it.
async fn time_to_last(
    server: &TestServer,
    app: u64,
    key: &str,
    sessions: &mut [Connection],
    msg_random: u32,
) -> Duration {
    let admin = server.admin_of(app, key, ADMIN);
    let started = Instant::now();
    let task_id = push_reported(&admin, msg_random, "race").await;
    let waits = sessions.iter_mut().map(|session| {
        let task_id = task_id.clone();
        async move {
            assert_eq!(next_push(session).await, task_id);
        }
    });
    futures_util::future::join_all(waits).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_delay_online_delivery() {
    const SESSIONS: usize = 1_000;
    let receiver = FakeCallbackReceiver::start().await;
    receiver.respond_to("", Answer::ok().delay(Duration::from_secs(3_600)));
    let apps = vec![
        app_calling(&receiver, None),
        app_config(OTHER_APP, OTHER_KEY),
    ];
    let server = TestServer::start_with(apps).await;
    let mut with_callbacks = sessions(&server, APP, KEY, "w", SESSIONS).await;
    let mut without = sessions(&server, OTHER_APP, OTHER_KEY, "o", SESSIONS).await;
    // The first push fills the sender with requests that never end.
    time_to_last(&server, APP, KEY, &mut with_callbacks, 10).await;
    receiver.wait_for(1, WAIT).await;
    let mut timings = Vec::new();
    for round in 0..3u32 {
        let silent = time_to_last(&server, APP, KEY, &mut with_callbacks, 20 + round).await;
        let none = time_to_last(&server, OTHER_APP, OTHER_KEY, &mut without, 30 + round).await;
        timings.push((silent, none));
    }
    for (round, (silent, none)) in timings.iter().enumerate() {
        println!(
            "round {round}: last of {SESSIONS} sessions after {:.1} ms with a receiver that never answers, {:.1} ms without callbacks",
            silent.as_secs_f64() * 1000.0,
            none.as_secs_f64() * 1000.0
        );
    }
    let metrics = server.metrics().await;
    let waiting = metrics
        .lines()
        .find(|line| line.starts_with("crier_callback_events_total{outcome=\"enqueued\"}"))
        .unwrap()
        .to_owned();
    println!(
        "{waiting}; requests in flight to the silent receiver: {}",
        receiver.count()
    );
    assert!(receiver.count() >= 1);
}
