//! The WebSocket client protocol, driven through the project's own client library.

use std::time::Duration;

use crier::config::AppConfig;
use crier_client::{Connection, Event, LoginOptions, PushFrame};
use crier_proto::protocol::ClientFrame;
use serde_json::{json, Value};

use crate::harness::*;

async fn login(server: &TestServer, identifier: &str) -> Connection {
    Connection::connect(&server.login_options(identifier))
        .await
        .unwrap()
}

async fn next_event(connection: &mut Connection) -> Event {
    tokio::time::timeout(Duration::from_secs(5), connection.next_event())
        .await
        .expect("an event within 5 s")
        .unwrap()
}

async fn next_push(connection: &mut Connection) -> PushFrame {
    match next_event(connection).await {
        Event::Push(push) => push,
        other => panic!("expected a Push, got {other:?}"),
    }
}

async fn push(server: &TestServer, body: Value) -> String {
    server.admin().push(body).await
}

fn with_condition(msg_random: u32, condition: Value) -> Value {
    let mut body = text_push(msg_random, "targeted");
    body["Condition"] = condition;
    body
}

/// Pushes `condition` and then a push to everyone; each session's first push shows whether
/// the targeted one reached it (fan-outs run in acceptance order).
async fn who_receives(
    server: &TestServer,
    sessions: &mut [(&str, Connection)],
    condition: Value,
) -> Vec<String> {
    // Fresh MsgRandoms: a repeat within the retry window would be answered as a retry.
    static NEXT_RANDOM: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let random = NEXT_RANDOM.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    let targeted = push(server, with_condition(random, condition)).await;
    let barrier = push(server, text_push(random + 1, "barrier")).await;
    let mut reached = Vec::new();
    for (name, connection) in sessions.iter_mut() {
        let first = next_push(connection).await;
        if first.task_id == targeted {
            reached.push(name.to_string());
            assert_eq!(next_push(connection).await.task_id, barrier);
        } else {
            assert_eq!(first.task_id, barrier);
        }
        connection
            .ack(vec![targeted.clone(), barrier.clone()])
            .await
            .unwrap();
    }
    reached
}

#[tokio::test]
async fn online_users_in_the_audience_get_the_push_and_others_do_not() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut sessions = Vec::new();
    for name in ["ann", "ben", "cat", "dan"] {
        sessions.push((name, login(&server, name).await));
    }
    admin.ok("all_member_push/im_add_tag", json!({"UserTags": [
        {"To_Account": "ann", "Tags": ["a", "b"]}, {"To_Account": "ben", "Tags": ["a"]}, {"To_Account": "cat", "Tags": ["b"]}
    ]})).await;
    admin
        .ok(
            "all_member_push/im_set_attr_name",
            json!({"AttrNames": {"0": "tier", "1": "city"}}),
        )
        .await;
    admin.ok("all_member_push/im_set_attr", json!({"UserAttrs": [
        {"To_Account": "ann", "Attrs": {"tier": "gold", "city": "sz"}}, {"To_Account": "ben", "Attrs": {"tier": "gold", "city": "bj"}},
        {"To_Account": "dan", "Attrs": {"tier": "silver", "city": "sz"}}
    ]})).await;

    assert_eq!(
        who_receives(&server, &mut sessions, json!({"TagsAnd": ["a", "b"]})).await,
        ["ann"]
    );
    assert_eq!(
        who_receives(&server, &mut sessions, json!({"TagsOr": ["a", "b"]})).await,
        ["ann", "ben", "cat"]
    );
    assert_eq!(
        who_receives(
            &server,
            &mut sessions,
            json!({"AttrsAnd": {"tier": "gold", "city": "sz"}})
        )
        .await,
        ["ann"]
    );
    assert_eq!(
        who_receives(
            &server,
            &mut sessions,
            json!({"AttrsOr": {"tier": "silver", "city": "bj"}})
        )
        .await,
        ["ben", "dan"]
    );
    assert_eq!(
        who_receives(&server, &mut sessions, json!({})).await,
        ["ann", "ben", "cat", "dan"]
    );
}

#[tokio::test]
async fn every_session_of_a_user_gets_the_push_with_its_fields() {
    let server = TestServer::start().await;
    let mut phone = login(&server, "ann").await;
    let mut web = login(&server, "ann").await;
    let mut body = text_push(77, "hello");
    body["OfflinePushInfo"] = json!({"PushFlag": 0, "Desc": "offline text"});
    let task_id = push(&server, body).await;
    for session in [&mut phone, &mut web] {
        let frame = next_push(session).await;
        assert_eq!(
            (
                frame.task_id.as_str(),
                frame.from_account.as_str(),
                frame.msg_random,
                frame.offline
            ),
            (task_id.as_str(), ADMIN, 77, false)
        );
        assert_eq!(
            serde_json::from_str::<Value>(frame.msg_body.get()).unwrap()[0]["MsgContent"]["Text"],
            "hello"
        );
        assert_eq!(
            serde_json::from_str::<Value>(frame.offline_push_info.unwrap().get()).unwrap()["Desc"],
            "offline text"
        );
        assert!(frame.msg_time_stamp.abs_diff(crier::clock::now_secs()) < 5);
    }
}

#[tokio::test]
async fn an_offline_user_gets_kept_pushes_on_login_until_it_acks() {
    let server = TestServer::start().await;
    server.admin().import(&["ann"]).await;
    let first = push(&server, text_push(1, "one")).await;
    let second = push(&server, text_push(2, "two")).await;
    let online_only = push(&server, json!({"MsgRandom": 3, "MsgLifeTime": 0, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "now"}}]})).await;

    let mut session = login(&server, "ann").await;
    let (a, b) = (next_push(&mut session).await, next_push(&mut session).await);
    assert_eq!(
        (a.task_id.as_str(), a.offline, b.task_id.as_str(), b.offline),
        (first.as_str(), true, second.as_str(), true)
    );
    session.ack(vec![first.clone()]).await.unwrap();
    session.send(&ClientFrame::Ping).await.unwrap();
    assert!(
        matches!(next_event(&mut session).await, Event::Pong),
        "the lifetime-0 push {online_only} is never kept"
    );
    session.close().await.unwrap();

    let mut session = login(&server, "ann").await;
    assert_eq!(
        next_push(&mut session).await.task_id,
        second,
        "not acked: delivered again"
    );
    session.ack(vec![second]).await.unwrap();
    session.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut session).await, Event::Pong));
    session.close().await.unwrap();

    let mut session = login(&server, "ann").await;
    session.send(&ClientFrame::Ping).await.unwrap();
    assert!(
        matches!(next_event(&mut session).await, Event::Pong),
        "everything was acked"
    );
}

#[tokio::test]
async fn expired_pushes_and_later_accounts_get_nothing() {
    let server = TestServer::start().await;
    server.admin().import(&["ann"]).await;
    let mut short = text_push(1, "short");
    short["MsgLifeTime"] = json!(1);
    push(&server, short).await;
    push(&server, text_push(2, "before bob existed")).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for name in ["ann", "bob"] {
        let mut session = login(&server, name).await;
        if name == "ann" {
            assert_eq!(
                next_push(&mut session).await.msg_random,
                2,
                "the expired push is skipped"
            );
        }
        session.send(&ClientFrame::Ping).await.unwrap();
        assert!(
            matches!(next_event(&mut session).await, Event::Pong),
            "{name} has nothing more"
        );
    }
}

#[tokio::test]
async fn an_account_deleted_and_created_again_gets_nothing_kept_for_the_old_one() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["ann", "ben"]).await;
    push(&server, text_push(1, "for the first ann and ben")).await;
    for name in ["ann", "ben"] {
        admin
            .ok(
                "im_open_login_svc/account_delete",
                json!({"DeleteItem": [{"UserID": name}]}),
            )
            .await;
    }
    admin.import(&["ann"]).await;
    let data = server.stop().await;

    // Ben is created again only after the restart, from what the snapshot kept.
    let server = TestServer::start_in(data, default_apps()).await;
    server.admin().import(&["ben"]).await;
    let later = push(&server, text_push(2, "for the new ones")).await;
    for name in ["ann", "ben"] {
        let mut session = login(&server, name).await;
        assert_eq!(next_push(&mut session).await.task_id, later, "{name}");
        session.send(&ClientFrame::Ping).await.unwrap();
        assert!(
            matches!(next_event(&mut session).await, Event::Pong),
            "{name} got nothing from before it was created again"
        );
    }
}

#[tokio::test]
async fn kept_pushes_and_acks_survive_a_restart() {
    let server = TestServer::start().await;
    server.admin().import(&["ann", "ben"]).await;
    let task_id = push(&server, text_push(1, "kept")).await;
    let mut ben = login(&server, "ben").await;
    assert!(next_push(&mut ben).await.offline);
    ben.ack(vec![task_id.clone()]).await.unwrap();
    ben.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let data = server.stop().await;

    let server = TestServer::start_in(data, default_apps()).await;
    let mut ann = login(&server, "ann").await;
    let frame = next_push(&mut ann).await;
    assert_eq!((frame.task_id, frame.offline), (task_id, true));
    let mut ben = login(&server, "ben").await;
    ben.send(&ClientFrame::Ping).await.unwrap();
    assert!(
        matches!(next_event(&mut ben).await, Event::Pong),
        "ben's ack survived the restart"
    );
}

/// A task report's DeliveredOnline, DeliveredOffline and Acknowledged (absent for pushes not
/// kept).
async fn delivery_counts(server: &TestServer, task_id: &str) -> (u64, u64, Option<u64>) {
    let answer = server
        .admin()
        .ok("crier/task_report", json!({"TaskId": task_id}))
        .await;
    let count = |field: &str| answer["Report"][field].as_u64();
    (
        count("DeliveredOnline").unwrap(),
        count("DeliveredOffline").unwrap(),
        count("Acknowledged"),
    )
}

#[tokio::test]
async fn task_report_counts_survive_a_restart_and_go_on_counting() {
    let server = TestServer::start().await;
    server.admin().import(&["ann", "ben"]).await;
    let mut ann = login(&server, "ann").await;
    let task_id = push(&server, text_push(1, "kept")).await;
    assert!(!next_push(&mut ann).await.offline);
    let mut online_only = text_push(2, "not kept");
    online_only["MsgLifeTime"] = json!(0);
    let online_only = push(&server, online_only).await;
    assert_eq!(next_push(&mut ann).await.task_id, online_only);
    let mut ben = login(&server, "ben").await;
    assert!(next_push(&mut ben).await.offline);
    ann.ack(vec![task_id.clone()]).await.unwrap();
    // The ack is taken once a later frame is answered.
    ann.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut ann).await, Event::Pong));
    ann.close().await.unwrap();
    ben.close().await.unwrap();
    assert_eq!(delivery_counts(&server, &task_id).await, (1, 1, Some(1)));
    assert_eq!(delivery_counts(&server, &online_only).await, (1, 0, None));
    // No pause before the stop: the graceful stop stores what is pending.
    let data = server.stop().await;

    let server = TestServer::start_in(data, default_apps()).await;
    assert_eq!(delivery_counts(&server, &task_id).await, (1, 1, Some(1)));
    assert_eq!(delivery_counts(&server, &online_only).await, (1, 0, None));
    // Ben did not acknowledge it: his next login gets it again, and counts it.
    let mut ben = login(&server, "ben").await;
    assert!(next_push(&mut ben).await.offline);
    assert_eq!(delivery_counts(&server, &task_id).await, (1, 2, Some(1)));
}

#[tokio::test]
async fn deleted_and_kicked_accounts_are_told_and_closed() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut ann = login(&server, "ann").await;
    let mut ben = login(&server, "ben").await;
    admin
        .ok("im_open_login_svc/kick", json!({"UserID": "ann"}))
        .await;
    assert!(matches!(next_event(&mut ann).await, Event::Kicked { .. }));
    assert!(matches!(
        next_event(&mut ann).await,
        Event::Closed { code: 4003, .. }
    ));

    push(&server, text_push(1, "for ben, before deletion")).await;
    assert!(!next_push(&mut ben).await.offline);
    admin
        .ok(
            "im_open_login_svc/account_delete",
            json!({"DeleteItem": [{"UserID": "ben"}]}),
        )
        .await;
    assert!(
        matches!(next_event(&mut ben).await, Event::Kicked { reason } if reason.contains("deleted"))
    );
    assert!(matches!(
        next_event(&mut ben).await,
        Event::Closed { code: 4003, .. }
    ));

    // Logging in again registers a new ben, who does not inherit the old one's pushes.
    let mut ben = login(&server, "ben").await;
    ben.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut ben).await, Event::Pong));
}

#[tokio::test]
async fn online_status_reflects_sessions_and_platforms() {
    let server = TestServer::start().await;
    server.admin().import(&["ben"]).await;
    let mut options = server.login_options("ann");
    options.platform = Some("iPhone".into());
    let _ann = Connection::connect(&options).await.unwrap();
    let answer = server
        .admin()
        .ok(
            "openim/query_online_status",
            json!({"To_Account": ["ann", "ben"], "IsNeedDetail": 1}),
        )
        .await;
    assert_eq!(
        answer["QueryResult"],
        json!([
            {"To_Account": "ann", "Status": "Online", "Detail": [{"Platform": "iPhone", "Status": "Online"}]},
            {"To_Account": "ben", "Status": "Offline", "Detail": []}
        ])
    );
}

#[tokio::test]
async fn bad_logins_and_bad_frames_behave_as_the_protocol_says() {
    let server = TestServer::start().await;
    let mut wrong_key = server.login_options("ann");
    wrong_key.user_sig =
        crier_proto::usersig::sign(APP, "not the key", "ann", 600, crier::clock::now_secs());
    assert!(matches!(
        Connection::connect(&wrong_key).await,
        Err(crier_client::ClientError::LoginRefused { code: 70009, .. })
    ));
    let mut other_app = server.login_options("ann");
    other_app.sdkappid = 42;
    assert!(matches!(
        Connection::connect(&other_app).await,
        Err(crier_client::ClientError::LoginRefused { code: 70020, .. })
    ));
    let mut bad_platform = server.login_options("ann");
    bad_platform.platform = Some("Toaster".into());
    assert!(Connection::connect(&bad_platform).await.is_err());

    // A malformed frame gets an Error and the session stays open.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/v4/ws", server.base.replace("http://", "ws://"));
    let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let options = server.login_options("ann");
    let login =
        json!({"Type": "Login", "SdkAppId": APP, "Identifier": "ann", "UserSig": options.user_sig});
    raw.send(Message::text(login.to_string())).await.unwrap();
    let text = |m: Option<Result<Message, _>>| -> Value {
        serde_json::from_str(m.unwrap().unwrap().to_text().unwrap()).unwrap()
    };
    assert_eq!(text(raw.next().await)["Type"], "LoginOK");
    for bad in [
        "not json",
        r#"{"Type":"Nope"}"#,
        r#"{"Type":"Ack","TaskIds":"x"}"#,
    ] {
        raw.send(Message::text(bad)).await.unwrap();
        let error = text(raw.next().await);
        assert_eq!(
            (error["Type"].as_str(), error["ErrorCode"].as_u64()),
            (Some("Error"), Some(90001)),
            "{bad}"
        );
    }
    raw.send(Message::text(r#"{"Type":"Ping"}"#)).await.unwrap();
    assert_eq!(text(raw.next().await)["Type"], "Pong");

    // Not logging in at all: `Login` must come first, within 10 seconds.
    let (mut silent, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(12), silent.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match closed {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected close 4002, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_4008_and_catches_up_on_its_next_login() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start_with(vec![AppConfig {
        daily_push_quota: 100_000,
        ..app_config(APP, KEY)
    }])
    .await;
    let url = format!("{}/v4/ws", server.base.replace("http://", "ws://"));
    let (mut slow, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let user_sig = server.login_options("slow").user_sig;
    let login_frame =
        json!({"Type": "Login", "SdkAppId": APP, "Identifier": "slow", "UserSig": user_sig});
    slow.send(Message::text(login_frame.to_string()))
        .await
        .unwrap();
    let first = slow.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("LoginOK"), "{first:?}");

    // The client reads nothing more: its socket buffers, then its session's backlog, fill up.
    let big_text = "x".repeat(7_000);
    let slow_closes = || async {
        let text = server.metrics().await;
        text.lines()
            .any(|l| l.starts_with("crier_slow_consumer_closes_total ") && !l.ends_with(" 0"))
    };
    let mut pushed = 0;
    while !slow_closes().await {
        assert!(
            pushed < 5_000,
            "no slow-consumer close after {pushed} pushes"
        );
        for _ in 0..50 {
            pushed += 1;
            push(&server, text_push(pushed, &big_text)).await;
        }
    }

    // Reading again: what was written, then the close with 4008.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut received = 0;
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(_))) => received += 1,
                Some(Ok(Message::Close(frame))) => return (received, frame),
                Some(Ok(_)) => {}
                other => panic!("the connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame within 20 s");
    let (received, frame) = closed;
    assert_eq!(frame.map(|f| u16::from(f.code)), Some(4008));
    assert!(
        received < pushed as usize,
        "{received} of {pushed} came before the close"
    );

    // Nothing was acknowledged, so the next login gets every push, in order, as kept ones.
    let mut again = login(&server, "slow").await;
    for n in 1..=pushed {
        let frame = next_push(&mut again).await;
        assert_eq!((frame.msg_random, frame.offline), (n, true));
    }
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = TestServer::start().await;
    let mut ann = login(&server, "ann").await;
    push(&server, text_push(1, "m")).await;
    next_push(&mut ann).await;
    let wanted = [
        "crier_sessions_open 1",
        "crier_pushes_accepted_total 1",
        "crier_deliveries_online_total 1",
        "crier_logins_total 1",
    ];
    // The fan-out counts its deliveries once its writes are done, which can be just after the
    // client has read the frame: the counters are read until they settle, within 5 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = server.metrics().await;
        let missing = wanted
            .iter()
            .find(|line| !text.lines().any(|l| l == **line));
        match missing {
            None => break,
            Some(line) => assert!(tokio::time::Instant::now() < deadline, "{line} in\n{text}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sessions_of_one_app_never_see_another_apps_pushes() {
    let server = TestServer::start().await;
    let mut here = login(&server, "ann").await;
    let mut elsewhere = Connection::connect(&LoginOptions {
        sdkappid: OTHER_APP,
        user_sig: crier_proto::usersig::sign(
            OTHER_APP,
            OTHER_KEY,
            "ann",
            3_600,
            crier::clock::now_secs(),
        ),
        ..server.login_options("ann")
    })
    .await
    .unwrap();
    // A signature made with one app's key does not open a session in another.
    let crossed = Connection::connect(&LoginOptions {
        sdkappid: OTHER_APP,
        ..server.login_options("ann")
    })
    .await;
    assert!(
        matches!(crossed, Err(crier_client::ClientError::LoginRefused { .. })),
        "{:?}",
        crossed.err()
    );

    let ours = push(&server, text_push(1, "for this app")).await;
    assert_eq!(next_push(&mut here).await.task_id, ours);
    let theirs = server
        .admin_of(OTHER_APP, OTHER_KEY, ADMIN)
        .ok("all_member_push/im_push", text_push(2, "for the other app"))
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        next_push(&mut elsewhere).await.task_id,
        theirs,
        "the other app's session got only its own push"
    );
    here.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(next_event(&mut here).await, Event::Pong));
}
