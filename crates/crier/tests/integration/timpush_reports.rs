//! `timpush/all_member_push_statistics` and `all_member_push_trace` (`timpush.md` §6-7)
//! against the running server: a push delivered online to some sessions, acknowledged by some,
//! notified to offline devices of three providers, then read back; every error code with the
//! request that causes it.

use std::time::Duration;

use crier_client::{Connection, Event};
use crier_proto::codes;
use serde_json::{json, Value};

use crate::fakes::apns::FakeApns;
use crate::fakes::fcm::FakeFcm;
use crate::fakes::webhook::FakeWebhook;
use crate::harness::*;
use crate::notify::{app_with, offline_with_devices, with_devices, WAIT};

const STATISTICS: &str = "timpush/all_member_push_statistics";
const TRACE: &str = "timpush/all_member_push_trace";

/// Both commands take one call a second: wait out the last one.
async fn spaced() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

async fn statistics(server: &TestServer, body: Value) -> Value {
    spaced().await;
    server.admin().ok(STATISTICS, body).await["Results"].clone()
}

async fn trace(server: &TestServer, task_id: &str, user: &str) -> Vec<Value> {
    spaced().await;
    let answer = server
        .admin()
        .ok(TRACE, json!({"TaskID": task_id, "UserID": user}))
        .await;
    answer["InstanceTrace"].as_array().unwrap().clone()
}

/// Waits for the push `task_id` on `connection`.
async fn receive(connection: &mut Connection, task_id: &str) {
    loop {
        match tokio::time::timeout(WAIT, connection.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Push(push) if push.task_id == task_id => return,
            _ => {}
        }
    }
}

fn window() -> (u64, u64) {
    let now = crier::clock::now_secs();
    (now - 60, now + 60)
}

fn platform_row(result: &Value, event_type: u64, push_platform: u64) -> Value {
    result["PlatformStatistics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["EventType"] == event_type && row["PushPlatform"] == push_platform)
        .cloned()
        .unwrap_or_else(|| panic!("no row {event_type}/{push_platform} in {result}"))
}

fn counters(row: &Value) -> [u64; 4] {
    ["TotalCount", "SentCount", "DeliveredCount", "ClickCount"]
        .map(|key| row[key].as_u64().unwrap())
}

#[tokio::test]
async fn statistics_and_trace_read_back_online_deliveries_acks_and_notifications() {
    let (apns, fcm, webhook) = (
        FakeApns::start().await,
        FakeFcm::start().await,
        FakeWebhook::start().await,
    );
    let server =
        TestServer::start_with(vec![app_with(Some(&apns), Some(&fcm), Some(&webhook))]).await;
    offline_with_devices(&server, "ios", &[("apns", "apns-ios")]).await;
    offline_with_devices(
        &server,
        "droid",
        &[("fcm", "fcm-droid"), ("webhook", "hook-droid")],
    )
    .await;
    let mut here = with_devices(&server.base, "here", &[]).await;
    let mut there = with_devices(&server.base, "there", &[]).await;
    server.admin().import(&["nodevice"]).await;

    // A notification-only push: nothing is kept, yet its acknowledgements count.
    let task_id = server
        .admin()
        .ok(
            "timpush/push",
            json!({"MsgRandom": 7, "OfflinePushInfo": {"PushFlag": 0, "Title": "Sale", "Desc": "today"}}),
        )
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    receive(&mut here, &task_id).await;
    receive(&mut there, &task_id).await;
    here.ack(vec![task_id.clone()]).await.unwrap();
    apns.wait_for(1, WAIT).await;
    fcm.wait_for(1, WAIT).await;
    webhook.wait_for(1, WAIT).await;

    let (start, end) = window();
    let mut result = Value::Null;
    for _ in 0..20 {
        result = statistics(
            &server,
            json!({"StartTime": start, "EndTime": end, "TaskID": [task_id]}),
        )
        .await[0]
            .clone();
        if result["DeliveredCount"] == 1 && result["SentCount"] == 5 {
            break;
        }
    }
    assert_eq!(result["TaskID"], task_id.as_str());
    // ios, droid, here, there, nodevice; sent: 2 sessions + 3 notifications; 1 ack.
    assert_eq!(counters(&result), [5, 5, 1, 0], "{result}");
    // Everybody but the two notification targets can only be reached on a session.
    assert_eq!(counters(&platform_row(&result, 2, 0)), [3, 2, 1, 0]);
    assert_eq!(counters(&platform_row(&result, 1, 1)), [1, 1, 0, 0], "APNs");
    assert_eq!(counters(&platform_row(&result, 1, 4)), [1, 1, 0, 0], "FCM");
    assert_eq!(
        counters(&platform_row(&result, 1, 0)),
        [1, 1, 0, 0],
        "webhook"
    );
    assert_eq!(result["PlatformStatistics"].as_array().unwrap().len(), 4);

    // The session that acknowledged, and the one that did not.
    let acked = trace(&server, &task_id, "here").await;
    assert_eq!(acked.len(), 1, "{acked:?}");
    assert_eq!(acked[0]["EventType"], 2);
    assert_eq!(acked[0]["PushPlatform"], 0);
    assert_eq!(acked[0]["OnlinePushStat"]["OnlineStat"]["PushStatus"], 1);
    assert_eq!(acked[0]["OnlinePushStat"]["AckStat"]["ErrorCode"], 0);
    assert_eq!(acked[0]["IMCommitStat"]["IMStat"]["PushStatus"], 1);
    assert_eq!(acked[0]["last_active_terminal"], 1);
    let time = acked[0]["PushTime"].as_str().unwrap();
    assert_eq!(
        (time.len(), &time[4..5], &time[10..11]),
        (19, "-", " "),
        "{time}"
    );
    let unacked = trace(&server, &task_id, "there").await;
    assert_eq!(unacked.len(), 1);
    assert!(unacked[0]["OnlinePushStat"].get("AckStat").is_none());
    // Two devices notified, one entry each.
    let droid = trace(&server, &task_id, "droid").await;
    let mut platforms: Vec<(u64, String)> = droid
        .iter()
        .map(|entry| {
            assert_eq!(entry["EventType"], 1);
            assert_eq!(entry["OfflinePushStat"]["OfflineStat"]["PushStatus"], 1);
            (
                entry["PushPlatform"].as_u64().unwrap(),
                entry["Token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(
        platforms,
        [(0, "hook-droid".to_owned()), (4, "fcm-droid".to_owned())]
    );
    let ios = trace(&server, &task_id, "ios").await;
    assert_eq!((ios.len(), &ios[0]["System"]), (1, &json!("APNS")));
    // In the audience but reached nowhere; and no account at all.
    assert!(trace(&server, &task_id, "nodevice").await.is_empty());
    assert!(trace(&server, &task_id, "stranger").await.is_empty());

    // A batch, and the window's sum of both.
    spaced().await;
    let batch_id = server
        .admin()
        .ok(
            "timpush/batch",
            json!({"MsgRandom": 8, "To_Account": ["here", "nodevice"], "OfflinePushInfo": {"Title": "B", "Desc": "b"}}),
        )
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    receive(&mut here, &batch_id).await;
    let mut batch = Value::Null;
    for _ in 0..20 {
        batch = statistics(
            &server,
            json!({"StartTime": start, "EndTime": end, "TaskID": [batch_id, "no-such-task"]}),
        )
        .await;
        if batch[0]["SentCount"] == 1 {
            break;
        }
    }
    assert_eq!(counters(&batch[0]), [2, 1, 0, 0], "{batch}");
    assert_eq!(batch[1]["TaskID"], "no-such-task");
    assert_eq!(counters(&batch[1]), [0, 0, 0, 0]);
    assert_eq!(batch[1]["PlatformStatistics"], json!([]));
    let sum = statistics(
        &server,
        json!({"StartTime": start, "EndTime": end, "TaskID": []}),
    )
    .await;
    assert_eq!(sum.as_array().unwrap().len(), 1);
    assert_eq!(sum[0]["TaskID"], "");
    assert_eq!(counters(&sum[0]), [7, 6, 1, 0], "{sum}");
    assert_eq!(counters(&platform_row(&sum[0], 2, 0)), [5, 3, 1, 0]);
    // A window that ends before the push: zeros.
    let before = statistics(
        &server,
        json!({"StartTime": start - 3_600, "EndTime": start - 1, "TaskID": [task_id]}),
    )
    .await;
    assert_eq!(counters(&before[0]), [0, 0, 0, 0]);
}

#[tokio::test]
async fn every_error_code_with_the_request_that_causes_it() {
    let server = TestServer::start().await;
    server.admin().import(&["alice"]).await;
    let classic = server.admin().push(text_push(1, "classic")).await;
    let (start, end) = window();

    for (body, why) in [
        (
            json!({"StartTime": end, "EndTime": start, "TaskID": []}),
            "EndTime before StartTime",
        ),
        (
            json!({"StartTime": 0, "EndTime": 30 * 86_400 + 1, "TaskID": []}),
            "over 30 days",
        ),
        (
            json!({"StartTime": start, "EndTime": end, "TaskID": ["1", "2", "3", "4", "5", "6"]}),
            "six ids",
        ),
        (json!({"EndTime": end, "TaskID": []}), "no StartTime"),
        (
            json!({"StartTime": start, "EndTime": "soon"}),
            "EndTime a string",
        ),
        (
            json!({"StartTime": start, "EndTime": end, "TaskID": "x"}),
            "TaskID not an array",
        ),
    ] {
        let answer = server
            .admin()
            .fails(STATISTICS, body, codes::BAD_PARAMETER)
            .await;
        assert!(!answer["ErrorInfo"].as_str().unwrap().is_empty(), "{why}");
    }
    for body in [
        json!({"TaskID": "t"}),
        json!({"UserID": "alice"}),
        json!({"TaskID": 5, "UserID": "alice"}),
    ] {
        server
            .admin()
            .fails(TRACE, body, codes::BAD_PARAMETER)
            .await;
    }
    // Refused requests took no call of the rate: these two go through.
    let zeros = server
        .admin()
        .ok(
            STATISTICS,
            json!({"StartTime": start, "EndTime": end, "TaskID": [classic]}),
        )
        .await;
    assert_eq!(zeros["Results"][0]["TaskID"], classic.as_str());
    assert_eq!(
        counters(&zeros["Results"][0]),
        [0, 0, 0, 0],
        "a classic im_push id"
    );
    server
        .admin()
        .fails(
            TRACE,
            json!({"TaskID": classic, "UserID": "alice"}),
            codes::REVOKE_UNKNOWN_TASK,
        )
        .await;
    // One call a second each.
    let again = server
        .admin()
        .fails(
            STATISTICS,
            json!({"StartTime": start, "EndTime": end, "TaskID": []}),
            codes::PUSH_TOO_FREQUENT,
        )
        .await;
    assert!(again["ErrorInfo"].as_str().unwrap().contains("per second"));
    server
        .admin()
        .fails(
            TRACE,
            json!({"TaskID": "nope", "UserID": "alice"}),
            codes::PUSH_TOO_FREQUENT,
        )
        .await;
    spaced().await;
    server
        .admin()
        .fails(
            TRACE,
            json!({"TaskID": "nope", "UserID": "alice"}),
            codes::REVOKE_UNKNOWN_TASK,
        )
        .await;
    // Not JSON; not an admin.
    let query = server.admin().query.clone();
    let answer = server.post_raw(STATISTICS, &query, "{not json").await;
    assert_eq!(answer["ErrorCode"], codes::BAD_JSON);
    let answer = server.post_raw(TRACE, &query, "[1,").await;
    assert_eq!(answer["ErrorCode"], codes::BAD_JSON);
    server
        .admin_of(APP, KEY, "alice")
        .fails(
            STATISTICS,
            json!({"StartTime": start, "EndTime": end}),
            codes::NOT_ADMIN,
        )
        .await;
    server
        .admin_of(APP, KEY, "alice")
        .fails(
            TRACE,
            json!({"TaskID": "t", "UserID": "alice"}),
            codes::NOT_ADMIN,
        )
        .await;
}
