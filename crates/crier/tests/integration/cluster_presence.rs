//! Presence across nodes when NATS goes away and comes back: the logins and logouts made
//! meanwhile, and the sessions open all along (nodes forget the sessions of a node they have
//! not heard for 5 s), are right on every node soon after NATS returns. Skipped, with the
//! reason printed, without PostgreSQL or a `nats-server` to start.

use std::time::{Duration, Instant};

use crier::config::BackendUrl;
use serde_json::json;

use crate::cluster::{free_port, login, with_webhook_device, Cluster, OwnNats};
use crate::fakes::webhook::FakeWebhook;
use crate::harness::*;

/// How many sessions of `account` `query_online_status` on `server` reports.
async fn sessions_of(server: &TestServer, account: &str) -> usize {
    let answer = server
        .admin()
        .ok(
            "openim/query_online_status",
            json!({"To_Account": [account], "IsNeedDetail": 1}),
        )
        .await;
    answer["QueryResult"][0]["Detail"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Waits until every one of `servers` reports `truth` (account, sessions); panics with what
/// they report instead after `within`.
async fn until_every_node_says(servers: &[&TestServer], truth: &[(&str, usize)], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut said = Vec::new();
        for server in servers {
            for (account, _) in truth {
                said.push((*account, sessions_of(server, account).await));
            }
        }
        let expected: Vec<(&str, usize)> = servers.iter().flat_map(|_| truth.to_vec()).collect();
        if said == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes say {said:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn presence_changed_while_nats_was_down_is_right_on_every_node_soon_after_it_returns() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let port = free_port();
    let Some(nats) = OwnNats::start(port) else {
        return;
    };
    nats.ready().await;
    let webhook = FakeWebhook::start().await;
    let mut apps = default_apps();
    apps[0].webhook = Some(webhook.config());
    let node = |name: &'static str| {
        let mut config = cluster.config(name, &cluster.prefix, apps.clone());
        config.bus = Some(BackendUrl::new(nats.url()));
        TestServer::start_node(config)
    };
    let (one, two, three) = (node("one").await, node("two").await, node("three").await);
    let nodes = [&one, &two, &three];
    for account in ["arriving", "leaving"] {
        with_webhook_device(&one.base, account).await;
    }
    let _stayer = login(&one, "stayer").await;
    let leaving = login(&two, "leaving").await;
    let within = Duration::from_secs(10);
    until_every_node_says(&nodes, &[("stayer", 1), ("leaving", 1)], within).await;

    drop(nats);
    let _arriving = login(&one, "arriving").await;
    leaving.close().await.unwrap();
    until_every_node_says(&[&one], &[("arriving", 1)], within).await;
    until_every_node_says(&[&two], &[("leaving", 0)], within).await;
    // Down for longer than the 5 s after which nodes forget each other's sessions.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let nats = OwnNats::start(port).unwrap();
    nats.ready().await;
    let returned = Instant::now();
    let truth = [("stayer", 1), ("arriving", 1), ("leaving", 0)];
    until_every_node_says(&nodes, &truth, within).await;
    eprintln!(
        "presence right on every node {} ms after NATS returned",
        returned.elapsed().as_millis()
    );

    // Accepted on two: who gets a notification is fixed then, and it is the account offline
    // everywhere, not the one online on one.
    let mut body = text_push(41, "who is offline?");
    body["OfflinePushInfo"] = json!({"Title": "Crier", "Desc": "who is offline?"});
    let task_id = two.admin().push(body).await;
    let report = two
        .admin()
        .ok("crier/task_report", json!({"TaskId": task_id}))
        .await;
    assert_eq!(report["Report"]["Notifications"]["Targets"], 1, "{report}");
    let requests = webhook.wait_for(1, within).await;
    assert_eq!(
        requests[0].json.as_ref().unwrap()["To_Account"],
        "leaving",
        "{requests:?}"
    );
    drop(nats);
}
