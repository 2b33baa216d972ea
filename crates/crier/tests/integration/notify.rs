//! Offline notifications end to end: devices registered over WebSocket, a push accepted over
//! REST, and local fake APNs, FCM and webhook servers receiving what a real provider would.

use std::collections::HashMap;
use std::time::Duration;

use crier::config::AppConfig;
use crier_client::{Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::fakes::apns::FakeApns;
use crate::fakes::fcm::FakeFcm;
use crate::fakes::webhook::FakeWebhook;
use crate::fakes::Answer;
use crate::harness::*;
use crate::process::ServerProcess;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

fn options(base: &str, identifier: &str) -> LoginOptions {
    login_options_at(base, identifier)
}

/// Logs in as `identifier` and registers its devices; answers the still-open session.
pub(crate) async fn with_devices(
    base: &str,
    identifier: &str,
    devices: &[(&str, &str)],
) -> Connection {
    let mut connection = Connection::connect(&options(base, identifier))
        .await
        .unwrap();
    for (platform, token) in devices {
        connection
            .send(&ClientFrame::RegisterDevice {
                platform: (*platform).into(),
                token: (*token).into(),
            })
            .await
            .unwrap();
    }
    settled(&mut connection).await;
    connection
}

/// Frames are handled in order, so the Pong means every frame sent before is done with.
pub(crate) async fn settled(connection: &mut Connection) {
    connection.send(&ClientFrame::Ping).await.unwrap();
    loop {
        match tokio::time::timeout(WAIT, connection.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Pong => return,
            Event::Error { code, info } => panic!("a device frame failed: {code} {info}"),
            _ => {}
        }
    }
}

/// Registers devices and logs out again, waiting until the server counts the account offline.
pub(crate) async fn offline_with_devices(
    server: &TestServer,
    identifier: &str,
    devices: &[(&str, &str)],
) {
    with_devices(&server.base, identifier, devices)
        .await
        .close()
        .await
        .unwrap();
    wait_offline(server, identifier).await;
}

pub(crate) async fn wait_offline(server: &TestServer, identifier: &str) {
    for _ in 0..200 {
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

async fn push(server: &TestServer, body: Value) -> String {
    server.admin().ok("all_member_push/im_push", body).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The task's report once its notification run has finished.
async fn finished_report(server: &TestServer, task_id: &str) -> Value {
    for _ in 0..2_000 {
        let answer = server
            .admin()
            .ok("crier/task_report", json!({"TaskId": task_id}))
            .await;
        if answer["Report"]["Notifications"]["State"] != "Running" {
            return answer["Report"].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the notification run of {task_id} never finished");
}

fn kept_push(msg_random: u32, text: &str) -> Value {
    let mut body = text_push(msg_random, text);
    body["MsgLifeTime"] = json!(3_600);
    body
}

pub(crate) fn app_with(
    apns: Option<&FakeApns>,
    fcm: Option<&FakeFcm>,
    webhook: Option<&FakeWebhook>,
) -> AppConfig {
    AppConfig {
        apns: apns.map(FakeApns::config),
        fcm: fcm.map(FakeFcm::config),
        webhook: webhook.map(FakeWebhook::config),
        ..app_config(APP, KEY)
    }
}

#[tokio::test]
async fn offline_accounts_get_one_notification_per_device_shaped_by_offline_push_info() {
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
    let _online = with_devices(&server.base, "here", &[("webhook", "hook-here")]).await;
    server.admin().import(&["nodevice"]).await;

    let mut body = kept_push(1, "hello");
    body["OfflinePushInfo"] = json!({
        "PushFlag": 0, "Title": "Big news", "Desc": "", "Ext": "{\"deep\":\"link\"}",
        "ApnsInfo": {"Sound": "ping.caf", "SubTitle": "sub", "MutableContent": 1, "BadgeMode": 0},
        "AndroidInfo": {"Sound": "ping", "GoogleChannelID": "news"}
    });
    let task_id = push(&server, body).await;

    let apns_requests = apns.wait_for(1, WAIT).await;
    let fcm_requests = fcm.wait_for(1, WAIT).await;
    let webhook_requests = webhook.wait_for(1, WAIT).await;
    let report = finished_report(&server, &task_id).await;

    let ios = &apns_requests[0];
    assert_eq!(ios.path, "/3/device/apns-ios");
    assert!(ios.is_http2() && ios.verified, "{ios:?}");
    assert_eq!(ios.header("apns-push-type"), Some("alert"));
    let aps = &ios.json.as_ref().unwrap()["aps"];
    assert_eq!(aps["alert"]["title"], "Big news");
    assert_eq!(aps["alert"]["subtitle"], "sub");
    // An empty Desc means the message's own text.
    assert_eq!(aps["alert"]["body"], "hello");
    assert_eq!(aps["sound"], "ping.caf");
    assert_eq!(aps["mutable-content"], 1);
    assert_eq!(aps["badge"], 1);

    let droid = &fcm_requests[0];
    assert!(droid.verified, "{droid:?}");
    let message = &droid.json.as_ref().unwrap()["message"];
    assert_eq!(message["token"], "fcm-droid");
    assert_eq!(message["notification"]["body"], "hello");
    assert_eq!(message["android"]["notification"]["channel_id"], "news");

    // The webhook got droid's second device, and nothing for the account that was online.
    assert_eq!(webhook_requests.len(), 1);
    let hook = &webhook_requests[0];
    assert!(hook.verified, "{hook:?}");
    assert_eq!(hook.json.as_ref().unwrap()["To_Account"], "droid");
    assert_eq!(hook.json.as_ref().unwrap()["TaskId"], task_id.as_str());

    assert_eq!(report["AudienceSize"], 4);
    assert_eq!(report["DeliveredOnline"], 1);
    assert_eq!(report["Notifications"]["Targets"], 2);
    assert_eq!(report["Notifications"]["State"], "Done");
    for provider in ["apns", "fcm", "webhook"] {
        assert_eq!(
            report["Notifications"]["Providers"][provider]["Sent"], 1,
            "{report}"
        );
        assert_eq!(
            report["Notifications"]["Providers"][provider]["Failed"], 0,
            "{report}"
        );
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("crier_notifications_total{provider=\"apns\",outcome=\"sent\"} 1"),
        "{metrics}"
    );
    assert_eq!(webhook.count(), 1);
}

#[tokio::test]
async fn a_device_is_unregistered_only_by_its_own_account() {
    let webhook = FakeWebhook::start().await;
    let server = TestServer::start_with(vec![app_with(None, None, Some(&webhook))]).await;
    offline_with_devices(&server, "owner", &[("webhook", "hook-owner")]).await;
    offline_with_devices(&server, "given-up", &[("webhook", "hook-given-up")]).await;

    let mut other = with_devices(&server.base, "other", &[]).await;
    let mut quitter = with_devices(&server.base, "given-up", &[]).await;
    for (connection, token) in [(&mut other, "hook-owner"), (&mut quitter, "hook-given-up")] {
        connection
            .send(&ClientFrame::UnregisterDevice {
                platform: "webhook".into(),
                token: token.into(),
            })
            .await
            .unwrap();
        settled(connection).await;
    }
    other.close().await.unwrap();
    quitter.close().await.unwrap();
    wait_offline(&server, "given-up").await;
    let mut to_both = kept_push(1, "to the offline two");
    to_both["Condition"] = json!({"TagsOr": ["both"]});
    server
        .admin()
        .ok(
            "all_member_push/im_add_tag",
            json!({"UserTags": [{"To_Account": "owner", "Tags": ["both"]}, {"To_Account": "given-up", "Tags": ["both"]}]}),
        )
        .await;
    let task_id = push(&server, to_both).await;
    let report = finished_report(&server, &task_id).await;
    // The run is over, so whatever arrived is all there will be.
    let requests = webhook.wait_for(1, WAIT).await;
    let tokens: Vec<&str> = requests
        .iter()
        .map(|r| r.json.as_ref().unwrap()["Token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["hook-owner"], "{report}");
}

#[tokio::test]
async fn push_flag_1_and_online_only_pushes_notify_no_one() {
    let webhook = FakeWebhook::start().await;
    let server = TestServer::start_with(vec![app_with(None, None, Some(&webhook))]).await;
    offline_with_devices(&server, "away", &[("webhook", "hook-away")]).await;

    let mut silent = kept_push(1, "silent");
    silent["OfflinePushInfo"] = json!({"PushFlag": 1, "Desc": "never shown"});
    let silent = push(&server, silent).await;
    let mut online_only = text_push(2, "online only");
    online_only["MsgLifeTime"] = json!(0);
    let online_only = push(&server, online_only).await;
    let barrier = push(&server, kept_push(3, "barrier")).await;
    let requests = webhook.wait_for(1, WAIT).await;
    finished_report(&server, &barrier).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].json.as_ref().unwrap()["TaskId"],
        barrier.as_str()
    );
    for task_id in [silent, online_only] {
        let report = finished_report(&server, &task_id).await;
        assert_eq!(report["Notifications"]["State"], "None", "{report}");
    }
}

#[tokio::test]
async fn dead_tokens_are_removed_and_throttled_sends_retried() {
    let webhook = FakeWebhook::start().await;
    let server = TestServer::start_with(vec![app_with(None, None, Some(&webhook))]).await;
    webhook.respond_to("hook-dead", Answer::status(410));
    webhook.respond_once("hook-busy", Answer::status(429).retry_after(1));
    offline_with_devices(&server, "gone", &[("webhook", "hook-dead")]).await;
    offline_with_devices(&server, "busy", &[("webhook", "hook-busy")]).await;

    let first = push(&server, kept_push(1, "first")).await;
    let report = finished_report(&server, &first).await;
    let counts = &report["Notifications"]["Providers"]["webhook"];
    assert_eq!(
        (
            &counts["Sent"],
            &counts["Failed"],
            &counts["DeadTokens"],
            &counts["Retried"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(1)),
        "{report}"
    );
    let by_token = |requests: &[crate::fakes::Recorded]| {
        let mut counts: HashMap<String, Vec<u16>> = HashMap::new();
        for request in requests {
            counts
                .entry(request.token.clone())
                .or_default()
                .push(request.status);
        }
        counts
    };
    let seen = by_token(&webhook.requests());
    assert_eq!(seen["hook-busy"], [429, 200]);
    assert_eq!(seen["hook-dead"], [410]);

    // The dead token is gone: the next push reaches only the live one.
    let second = push(&server, kept_push(2, "second")).await;
    let report = finished_report(&server, &second).await;
    assert_eq!(report["Notifications"]["Targets"], 1, "{report}");
    let seen = by_token(&webhook.requests());
    assert_eq!(seen["hook-busy"], [429, 200, 200]);
    assert_eq!(seen["hook-dead"], [410]);
}

/// How many of `names` the server counts online (query_online_status takes 500 at a time).
pub(crate) async fn online_count(admin: &crier_client::Admin, names: &[String]) -> usize {
    let mut online = 0;
    for chunk in names.chunks(500) {
        let answer = admin
            .call("openim/query_online_status", &json!({"To_Account": chunk}))
            .await
            .unwrap();
        online += answer.rest["QueryResult"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["Status"] == "Online")
            .count();
    }
    online
}

#[tokio::test]
async fn a_run_cut_by_kill_9_finishes_after_the_restart() {
    const ACCOUNTS: usize = 1_200;
    let webhook = FakeWebhook::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the kill lands mid-run: 1,200 notifications at 300/s.
    let config = crier::notify::webhook::WebhookConfig {
        rate_per_sec: Some(300),
        ..webhook.config()
    };
    let config_text = format!(
        "[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\n[app.webhook]\n{}",
        toml::to_string(&config).unwrap()
    );
    let config_path = dir.path().join("crier.toml");
    std::fs::write(&config_path, config_text).unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start(&config_path, &data);

    let names: Vec<String> = (0..ACCOUNTS).map(|n| format!("user{n:04}")).collect();
    let base = server.base.clone();
    futures_util::stream::iter(names.clone())
        .for_each_concurrent(32, |name| {
            let base = base.clone();
            async move {
                let token = format!("hook-{name}");
                with_devices(&base, &name, &[("webhook", &token)])
                    .await
                    .close()
                    .await
                    .unwrap();
            }
        })
        .await;
    let admin = crier_client::Admin::new(&server.base, APP, KEY, ADMIN);
    // Sessions end asynchronously; wait until the server has everyone offline.
    for _ in 0..500 {
        if online_count(&admin, &names).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = admin
        .call("all_member_push/im_push", &kept_push(1, "resume me"))
        .await
        .unwrap();
    let task_id = answer.rest["TaskId"].as_str().unwrap().to_owned();
    webhook.wait_for(700, WAIT).await;
    server.kill_9();
    let before_restart = webhook.count();
    assert!(
        before_restart < ACCOUNTS,
        "the run finished before the kill"
    );

    let server = ServerProcess::start(&config_path, &data);
    let admin = crier_client::Admin::new(&server.base, APP, KEY, ADMIN);
    let mut distinct = 0;
    for _ in 0..3_000 {
        let requests = webhook.requests();
        distinct = requests
            .iter()
            .map(|r| r.token.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len();
        if distinct == ACCOUNTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        distinct, ACCOUNTS,
        "every device is notified after the restart"
    );
    // At least once: what was in flight at the kill (at most one batch) is sent again.
    let total = webhook.count();
    assert!(
        total <= ACCOUNTS + 512,
        "{total} notifications for {ACCOUNTS} devices"
    );
    let report = admin
        .call("crier/task_report", &json!({"TaskId": task_id}))
        .await
        .unwrap();
    assert_eq!(report.rest["Report"]["Notifications"]["Targets"], ACCOUNTS);
    server.terminate();
}
