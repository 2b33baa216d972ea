//! A `Listener` given several nodes carries on when the node it is logged in to stops: it logs
//! in on the next, gets what that node kept for the account, and hands nothing over twice.
//!
//! The nodes here do not share a store (a cluster's would), so each is told of the account
//! beforehand; what is shown is the client's failover. A `Node` can start again on the address
//! it had, the way a restarted node comes back under its name.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crier::server::{serve, AppState};
use crier_client::{Listener, LoginOptions, PushFrame};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::harness::*;

const ACCOUNT: &str = "carol";

struct Node {
    addr: SocketAddr,
    state: Arc<AppState>,
    data_dir: tempfile::TempDir,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// A new node on an ephemeral port that already knows [`ACCOUNT`].
    async fn start() -> Node {
        let node =
            Node::start_at("127.0.0.1:0".parse().unwrap(), tempfile::tempdir().unwrap()).await;
        let body = serde_json::json!({ "Accounts": [ACCOUNT] });
        node.call("im_open_login_svc/multiaccount_import", &body)
            .await;
        node
    }

    /// Starts on `data_dir` at `addr` (a restart when both are an old node's).
    async fn start_at(addr: SocketAddr, data_dir: tempfile::TempDir) -> Node {
        let path = data_dir.path().to_owned();
        let state = tokio::task::spawn_blocking(move || AppState::open(&path, default_apps()))
            .await
            .unwrap()
            .unwrap();
        let state = Arc::new(state);
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = signal.await;
        }));
        Node {
            addr,
            state,
            data_dir,
            shutdown,
            task,
        }
    }

    /// Stops gracefully (sessions are closed with 1001, going away) and hands back what a
    /// restart needs.
    async fn stop(self) -> (SocketAddr, tempfile::TempDir) {
        self.shutdown.send(()).unwrap();
        self.task.await.unwrap().unwrap();
        (self.addr, self.data_dir)
    }

    fn websocket_url(&self) -> String {
        format!("ws://{}/v4/ws", self.addr)
    }

    fn sessions_open(&self) -> i64 {
        self.state.metrics.sessions_open.load(Ordering::Relaxed)
    }

    async fn call(
        &self,
        command: &str,
        body: &serde_json::Value,
    ) -> serde_json::Map<String, serde_json::Value> {
        let admin = crier_client::Admin::new(&format!("http://{}", self.addr), APP, KEY, ADMIN);
        let answer = admin.call(command, body).await.unwrap();
        assert_eq!(answer.error_code, 0, "{command}: {}", answer.error_info);
        answer.rest
    }

    /// Pushes a text to everyone (kept 120 s) and answers its TaskId.
    async fn push(&self, msg_random: u32, text: &str) -> String {
        let answer = self
            .call("all_member_push/im_push", &text_push(msg_random, text))
            .await;
        answer["TaskId"].as_str().unwrap().to_owned()
    }

    /// Waits until the listener is logged in here.
    async fn logged_in(&self) {
        wait_until(|| self.sessions_open() == 1).await;
    }
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s");
}

fn listener_on(nodes: [&Node; 2]) -> Listener {
    let options = LoginOptions {
        url: String::new(),
        sdkappid: APP,
        identifier: ACCOUNT.into(),
        user_sig: String::new(),
        platform: None,
    };
    let servers = nodes.iter().map(|node| node.websocket_url()).collect();
    Listener::start_with_servers(servers, options, || {
        crier_proto::usersig::sign(APP, KEY, ACCOUNT, 3_600, crier::clock::now_secs())
    })
}

/// The first login goes to a node chosen at random: answers (that one, the other).
async fn serving_first(a: Node, b: Node) -> (Node, Node) {
    wait_until(|| a.sessions_open() + b.sessions_open() == 1).await;
    if a.sessions_open() == 1 {
        (a, b)
    } else {
        (b, a)
    }
}

async fn next(listener: &mut Listener) -> PushFrame {
    tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("a push within 10 s")
        .expect("the listener is still listening")
}

/// Nothing more is handed over for a while.
async fn nothing_more(listener: &mut Listener) {
    let more = tokio::time::timeout(Duration::from_millis(500), listener.next()).await;
    assert!(more.is_err(), "handed over again: {more:?}");
}

#[tokio::test]
async fn the_listener_carries_on_with_the_second_node_when_the_first_stops() {
    let (a, b) = (Node::start().await, Node::start().await);
    let mut listener = listener_on([&a, &b]);
    let (first, second) = serving_first(a, b).await;

    let live = first.push(1, "on the first node").await;
    let kept = second.push(2, "kept by the second node").await;
    let got = next(&mut listener).await;
    assert_eq!((got.task_id.as_str(), got.offline), (live.as_str(), false));
    listener.ack(got.task_id);

    first.stop().await;
    let got = next(&mut listener).await;
    assert_eq!((got.task_id.as_str(), got.offline), (kept.as_str(), true));
    listener.ack(got.task_id);
    let after = second.push(3, "after the failover").await;
    assert_eq!(next(&mut listener).await.task_id, after);
    listener.ack(after);
    nothing_more(&mut listener).await;

    assert!(matches!(
        listener.close().await,
        crier_client::ClientError::Closed { code: 1000, .. }
    ));
    // The acks given went to the second node: both of its pushes are acknowledged there.
    wait_until(|| second.state.metrics.acks.load(Ordering::Relaxed) == 2).await;
    second.stop().await;
}

#[tokio::test]
async fn back_on_a_restarted_node_what_it_redelivers_is_not_handed_over_again() {
    let (a, b) = (Node::start().await, Node::start().await);
    let mut listener = listener_on([&a, &b]);
    let (first, second) = serving_first(a, b).await;

    // The application has this one but has not acknowledged it yet.
    let unacked = first.push(1, "not acknowledged").await;
    assert_eq!(next(&mut listener).await.task_id, unacked);
    let (addr, data_dir) = first.stop().await;
    second.logged_in().await;
    let on_second = second.push(2, "on the second node").await;
    assert_eq!(next(&mut listener).await.task_id, on_second);

    // The first node comes back and the second stops: the listener is back on the first,
    // which redelivers the push it has no ack for; the listener drops it.
    let first = Node::start_at(addr, data_dir).await;
    second.stop().await;
    first.logged_in().await;
    wait_until(|| {
        first
            .state
            .metrics
            .deliveries_offline
            .load(Ordering::Relaxed)
            == 1
    })
    .await;
    let after = first.push(3, "after coming back").await;
    assert_eq!(next(&mut listener).await.task_id, after);
    nothing_more(&mut listener).await;

    listener.close().await;
    first.stop().await;
}
