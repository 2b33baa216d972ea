//! What the seams of issue 12 promise, seen from outside: background work that survives a
//! panic, and failures inside the server that reach clients without their detail.

use std::time::Duration;

use crier_client::{Connection, Event, LoginOptions};

use crate::harness::*;

fn login_options(server: &TestServer, identifier: &str) -> LoginOptions {
    LoginOptions {
        url: format!("{}/v4/ws", server.base.replace("http://", "ws://")),
        sdkappid: APP,
        identifier: identifier.into(),
        user_sig: crier_proto::usersig::sign(APP, KEY, identifier, 3_600, crier::clock::now_secs()),
        platform: None,
    }
}

async fn next_event(connection: &mut Connection) -> Option<Event> {
    tokio::time::timeout(Duration::from_secs(3), connection.next_event())
        .await
        .ok()
        .map(Result::unwrap)
}

async fn push_text(server: &TestServer, msg_random: u32, text: &str) -> String {
    server
        .admin()
        .ok("all_member_push/im_push", text_push(msg_random, text))
        .await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_panic_in_the_fan_out_is_counted_and_later_pushes_are_still_delivered() {
    let server = TestServer::start().await;
    let mut alice = Connection::connect(&login_options(&server, "alice"))
        .await
        .unwrap();

    server.state.tenants[&APP].inject_fan_out_panics(1);
    let lost = push_text(&server, 1, "the fan-out panics on this one").await;
    let delivered = push_text(&server, 2, "and delivers this one").await;

    match next_event(&mut alice).await {
        Some(Event::Push(push)) => assert_eq!(push.task_id, delivered),
        other => panic!("expected the second push, got {other:?}"),
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("crier_background_restarts_total{task=\"fan_out\"} 1"),
        "{metrics}"
    );

    // The push whose fan-out panicked is kept: the next login gets it.
    alice.close().await.unwrap();
    let mut again = Connection::connect(&login_options(&server, "alice"))
        .await
        .unwrap();
    let mut caught_up = Vec::new();
    while let Some(Event::Push(push)) = next_event(&mut again).await {
        caught_up.push(push.task_id);
        if caught_up.len() == 2 {
            break;
        }
    }
    assert!(caught_up.contains(&lost), "{caught_up:?}");
}

#[tokio::test]
async fn a_kick_by_the_legacy_identifier_field_ends_the_session() {
    let server = TestServer::start().await;
    let mut alice = Connection::connect(&login_options(&server, "alice"))
        .await
        .unwrap();
    server
        .admin()
        .ok(
            "im_open_login_svc/kick",
            serde_json::json!({"Identifier": "alice"}),
        )
        .await;
    match next_event(&mut alice).await {
        Some(Event::Kicked { .. }) => {}
        other => panic!("expected Kicked, got {other:?}"),
    }
}
