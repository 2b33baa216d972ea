//! The listener against fake nodes: local WebSocket servers that speak just enough of the
//! protocol (LoginOK, Push, close codes) to script a failover.

use std::time::Duration;

use crier_proto::protocol::ClientFrame;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;

type Socket = WebSocketStream<TcpStream>;

async fn node() -> (String, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v4/ws", listener.local_addr().unwrap());
    (url, listener)
}

/// A URL nothing listens on: connecting is refused at once.
async fn dead_url() -> String {
    node().await.0
}

/// Accepts one connection and answers its Login.
async fn accept_login(listener: &TcpListener) -> Socket {
    let (stream, _) = listener.accept().await.unwrap();
    let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
    let login = socket.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(login.contains(r#""Type":"Login""#), "{login}");
    let ok = r#"{"Type":"LoginOK","Identifier":"alice","ServerTime":1}"#;
    socket.send(Message::text(ok)).await.unwrap();
    socket
}

async fn push(socket: &mut Socket, task_id: &str) {
    let frame = format!(
        r#"{{"Type":"Push","TaskId":"{task_id}","From_Account":"admin","MsgTimeStamp":1,"MsgRandom":1,"MsgBody":[],"Offline":true}}"#
    );
    socket.send(Message::text(frame)).await.unwrap();
}

async fn close_with(mut socket: Socket, code: u16) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: "".into(),
    };
    socket.send(Message::Close(Some(frame))).await.unwrap();
}

/// The TaskIds of the Ack frames read until `want` of them came, in order.
async fn acks(socket: &mut Socket, want: usize) -> Vec<String> {
    let mut acked = Vec::new();
    while acked.len() < want {
        let text = socket.next().await.unwrap().unwrap().into_text().unwrap();
        if let Ok(ClientFrame::Ack { task_ids }) = serde_json::from_str(&text) {
            acked.extend(task_ids);
        }
    }
    acked
}

fn options() -> LoginOptions {
    LoginOptions {
        url: "ws://unused.invalid/v4/ws".into(),
        sdkappid: 1,
        identifier: "alice".into(),
        user_sig: String::new(),
        platform: None,
    }
}

fn listener_on(urls: Vec<String>) -> Listener {
    listener_with_heartbeat(urls, HEARTBEAT)
}

fn listener_with_heartbeat(urls: Vec<String>, heartbeat: Duration) -> Listener {
    Listener::spawn(Servers::new(urls, 0), heartbeat, options(), || "sig".into())
}

async fn next(listener: &mut Listener) -> Option<PushFrame> {
    tokio::time::timeout(Duration::from_secs(5), listener.next())
        .await
        .expect("the listener answers within 5 s")
}

#[tokio::test]
async fn fails_over_to_the_next_node_and_drops_what_it_handed_over() {
    let (url_a, node_a) = node().await;
    let (url_b, node_b) = node().await;
    let mut listener = listener_on(vec![dead_url().await, url_a, url_b]);

    let mut a = accept_login(&node_a).await;
    push(&mut a, "t1").await;
    assert_eq!(next(&mut listener).await.unwrap().task_id, "t1");
    close_with(a, close::GOING_AWAY).await;
    // Given while the listener moves to b: sent there.
    listener.ack("t1".into());

    // b redelivers t1 (it had no ack for it) and has t2.
    let mut b = accept_login(&node_b).await;
    push(&mut b, "t1").await;
    push(&mut b, "t2").await;
    assert_eq!(next(&mut listener).await.unwrap().task_id, "t2");
    listener.ack("t2".into());
    let acked = acks(&mut b, 2).await;
    assert!(
        acked.contains(&"t1".to_owned()) && acked.contains(&"t2".to_owned()),
        "{acked:?}"
    );

    assert!(matches!(
        listener.close().await,
        ClientError::Closed { code: 1000, .. }
    ));
}

#[tokio::test]
async fn a_repeat_of_an_acknowledged_push_is_acknowledged_again() {
    let (url_a, node_a) = node().await;
    let (url_b, node_b) = node().await;
    let mut listener = listener_on(vec![url_a, url_b]);

    let mut a = accept_login(&node_a).await;
    push(&mut a, "t1").await;
    assert_eq!(next(&mut listener).await.unwrap().task_id, "t1");
    listener.ack("t1".into());
    assert_eq!(acks(&mut a, 1).await, ["t1"]);
    // a goes away before it could record the ack; b redelivers t1.
    close_with(a, close::GOING_AWAY).await;
    let mut b = accept_login(&node_b).await;
    push(&mut b, "t1").await;
    assert_eq!(acks(&mut b, 1).await, ["t1"]);
    drop(b);
    listener.close().await;
}

#[tokio::test]
async fn a_kick_is_final_and_the_other_nodes_are_not_tried() {
    let (url_a, node_a) = node().await;
    let (url_b, node_b) = node().await;
    let mut listener = listener_on(vec![url_a, url_b]);

    let a = accept_login(&node_a).await;
    close_with(a, close::KICKED).await;
    assert!(next(&mut listener).await.is_none());
    assert!(matches!(
        listener.stop_reason().await,
        ClientError::Closed {
            code: close::KICKED,
            ..
        }
    ));
    let tried = tokio::time::timeout(Duration::from_millis(300), node_b.accept()).await;
    assert!(tried.is_err(), "b was not tried");
}

#[tokio::test]
async fn closing_while_no_node_answers_ends_at_the_back_off() {
    let listener = listener_on(vec![dead_url().await, dead_url().await]);
    listener.ack("t1".into());
    let reason = tokio::time::timeout(Duration::from_secs(5), listener.close())
        .await
        .expect("close does not wait for a server");
    assert!(matches!(reason, ClientError::WebSocket(_)), "{reason:?}");
}

#[tokio::test]
async fn a_node_that_goes_silent_is_left_for_the_next() {
    let (url_a, node_a) = node().await;
    let (url_b, node_b) = node().await;
    let mut listener = listener_with_heartbeat(vec![url_a, url_b], Duration::from_millis(100));

    let mut a = accept_login(&node_a).await;
    // a gets a Ping on the idle connection and never answers, like a node that hangs.
    let ping = a.next().await.unwrap().unwrap().into_text().unwrap();
    assert_eq!(ping.as_str(), r#"{"Type":"Ping"}"#);
    let mut b = accept_login(&node_b).await;
    push(&mut b, "t1").await;
    assert_eq!(next(&mut listener).await.unwrap().task_id, "t1");
    drop(a);
}

#[tokio::test]
async fn a_node_that_answers_pings_is_kept() {
    let (url_a, node_a) = node().await;
    let (url_b, node_b) = node().await;
    let mut listener = listener_with_heartbeat(vec![url_a, url_b], Duration::from_millis(200));

    let mut a = accept_login(&node_a).await;
    for _ in 0..2 {
        let ping = a.next().await.unwrap().unwrap().into_text().unwrap();
        assert_eq!(ping.as_str(), r#"{"Type":"Ping"}"#);
        a.send(Message::text(r#"{"Type":"Pong"}"#)).await.unwrap();
    }
    push(&mut a, "t1").await;
    assert_eq!(next(&mut listener).await.unwrap().task_id, "t1");
    let tried = tokio::time::timeout(Duration::from_millis(100), node_b.accept()).await;
    assert!(tried.is_err(), "b was not tried");
}
