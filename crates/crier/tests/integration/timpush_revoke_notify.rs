//! A revoke's effect on notifications (`timpush.md` §4, effect 2): every notification of a
//! `timpush` push is collapsed on its TaskId, and the devices already notified get the
//! revoke's `OfflinePushInfo` on the same key; the webhook gets a revoke event. Durable: a
//! `kill -9` mid-way still finishes the overwrite after the restart.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::fakes::apns::FakeApns;
use crate::fakes::fcm::FakeFcm;
use crate::fakes::webhook::FakeWebhook;
use crate::harness::*;
use crate::notify::{app_with, offline_with_devices, online_count, with_devices, WAIT};
use crate::process::ServerProcess;

#[tokio::test]
async fn notified_devices_get_the_revoke_on_the_same_collapse_key() {
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
    let task_id = server
        .admin()
        .ok(
            "timpush/push",
            json!({"MsgRandom": 1, "OfflinePushInfo": {"Title": "Sale", "Desc": "50% off today"}}),
        )
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = apns.wait_for(1, WAIT).await;
    assert_eq!(first[0].header("apns-collapse-id"), Some(task_id.as_str()));
    let message = &fcm.wait_for(1, WAIT).await[0].json.clone().unwrap()["message"];
    assert_eq!(message["android"]["collapse_key"], task_id.as_str());
    assert_eq!(message["android"]["notification"]["tag"], task_id.as_str());
    let hook = webhook.wait_for(1, WAIT).await[0].json.clone().unwrap();
    assert_eq!(hook["CollapseId"], task_id.as_str());
    assert!(hook.get("Revoked").is_none());

    server
        .admin()
        .ok(
            "timpush/revoke",
            json!({"TaskId": task_id, "OfflinePushInfo": {"Title": "Correction", "Desc": "the sale starts Saturday"}}),
        )
        .await;
    let both = apns.wait_for(2, WAIT).await;
    assert_eq!(both.len(), 2);
    let overwrite = &both[1];
    assert_eq!(overwrite.path, "/3/device/apns-ios");
    assert_eq!(overwrite.header("apns-collapse-id"), Some(task_id.as_str()));
    let alert = &overwrite.json.as_ref().unwrap()["aps"]["alert"];
    assert_eq!(alert["title"], "Correction");
    assert_eq!(alert["body"], "the sale starts Saturday");
    let message = &fcm.wait_for(2, WAIT).await[1].json.clone().unwrap()["message"];
    assert_eq!(message["notification"]["title"], "Correction");
    assert_eq!(message["android"]["notification"]["tag"], task_id.as_str());
    let event = webhook.wait_for(2, WAIT).await[1].json.clone().unwrap();
    assert_eq!(event["Revoked"], true);
    assert_eq!(event["TaskId"], task_id.as_str());
    assert_eq!(event["Token"], "hook-droid");
    assert_eq!(event["Title"], "Correction");
    // Once: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((apns.count(), fcm.count(), webhook.count()), (2, 2, 2));
    // A classic im_push carries no collapse key (nothing can revoke it).
    offline_with_devices(&server, "ios", &[]).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut kept = text_push(2, "classic");
    kept["MsgLifeTime"] = json!(3_600);
    server.admin().push(kept).await;
    let third = &apns.wait_for(3, WAIT).await[2];
    assert_eq!(third.header("apns-collapse-id"), None);
}

#[tokio::test]
async fn an_overwrite_cut_by_kill_9_finishes_after_the_restart() {
    const ACCOUNTS: usize = 600;
    let webhook = FakeWebhook::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Slow enough that the kill lands mid-overwrite: 600 events at 200/s.
    let config = crier::notify::webhook::WebhookConfig {
        rate_per_sec: Some(200),
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
    for _ in 0..500 {
        if online_count(&admin, &names).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = admin
        .call(
            "timpush/push",
            &json!({"MsgRandom": 5, "OfflinePushInfo": {"Title": "oops", "Desc": "sent by mistake"}}),
        )
        .await
        .unwrap();
    let task_id = answer.rest["TaskId"].as_str().unwrap().to_owned();
    let notified = webhook.wait_for(ACCOUNTS / 2, WAIT).await.len();
    assert!(notified >= ACCOUNTS / 2);
    admin
        .call(
            "timpush/revoke",
            &json!({"TaskId": task_id, "OfflinePushInfo": {"Title": "never mind", "Desc": ""}}),
        )
        .await
        .unwrap();
    let revoked = |requests: &[crate::fakes::Recorded]| -> (HashSet<String>, HashSet<String>) {
        let mut sent = HashSet::new();
        let mut overwritten = HashSet::new();
        for request in requests {
            let body = request.json.as_ref().unwrap();
            let token = body["Token"].as_str().unwrap().to_owned();
            if body["Revoked"] == true {
                assert_eq!(body["Title"], "never mind");
                assert_eq!(body["CollapseId"], task_id.as_str());
                overwritten.insert(token);
            } else {
                sent.insert(token);
            }
        }
        (sent, overwritten)
    };
    for _ in 0..2_000 {
        if revoked(&webhook.requests()).1.len() >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    let (sent, before) = revoked(&webhook.requests());
    assert!(
        !before.is_empty() && before.len() < sent.len(),
        "the kill did not land mid-overwrite: {} of {}",
        before.len(),
        sent.len()
    );

    let server = ServerProcess::start(&config_path, &data);
    let mut after = HashSet::new();
    for _ in 0..6_000 {
        let (sent_now, overwritten) = revoked(&webhook.requests());
        assert!(
            sent_now.len() <= sent.len() + 512,
            "the revoked run resumed"
        );
        after = overwritten;
        if after.len() >= sent_now.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (sent, _) = revoked(&webhook.requests());
    assert_eq!(after, sent, "every device notified gets the revoke event");
    assert!(sent.len() < ACCOUNTS, "the run stopped at the revoke");
    server.terminate();
}
