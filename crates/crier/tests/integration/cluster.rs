//! Several nodes on one PostgreSQL and one NATS, each test in a database and a subject
//! prefix of its own. Skipped, with the reason printed, when either service is unreachable.

use std::time::{Duration, Instant};

use crier::config::{BackendUrl, Config, Limits};
use crier_client::{Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use serde_json::{json, Value};

use crate::harness::*;

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
const NATS: &str = "nats://127.0.0.1:4222";

/// A database and a subject prefix for one test; the database is dropped with it.
pub struct Cluster {
    database: String,
    pub prefix: String,
}

impl Cluster {
    /// `None` (and a printed reason) when PostgreSQL or NATS cannot be reached.
    pub async fn new() -> Option<Cluster> {
        let server = std::env::var("CRIER_TEST_POSTGRES").unwrap_or_else(|_| POSTGRES.into());
        let database = format!("crier_it_{:016x}", rand::random::<u64>());
        let create = format!("CREATE DATABASE {database}");
        let admin_url = format!("{server}/postgres");
        let created = tokio::task::spawn_blocking(move || {
            let mut client = postgres::Client::connect(&admin_url, postgres::NoTls)?;
            client.batch_execute(&create)
        })
        .await
        .unwrap();
        if let Err(error) = created {
            eprintln!("skipped: PostgreSQL unreachable at {server}: {error}");
            return None;
        }
        if let Err(error) = async_nats::connect(NATS).await {
            eprintln!("skipped: NATS unreachable at {NATS}: {error}");
            return None;
        }
        Some(Cluster {
            database: format!("{server}/{database}"),
            prefix: format!("crier-it-{:016x}", rand::random::<u64>()),
        })
    }

    pub fn config(&self, node: &str, prefix: &str, apps: Vec<crier::config::AppConfig>) -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: std::env::temp_dir(),
            store: Some(BackendUrl::new(self.database.clone())),
            bus: Some(BackendUrl::new(NATS)),
            node_id: Some(node.into()),
            bus_subject_prefix: prefix.into(),
            apps,
            limits: Limits::default(),
        }
    }

    pub async fn node(&self, name: &str) -> TestServer {
        TestServer::start_node(self.config(name, &self.prefix, default_apps())).await
    }

    /// A node whose store URL ends with `params` (say `?sslmode=require`).
    pub async fn node_with_store_params(&self, name: &str, params: &str) -> TestServer {
        let mut config = self.config(name, &self.prefix, default_apps());
        config.store = Some(BackendUrl::new(format!("{}{params}", self.database)));
        TestServer::start_node(config).await
    }

    /// The test's database, for the test's own connections to it.
    pub fn database_url(&self) -> &str {
        &self.database
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let (server, database) = self.database.rsplit_once('/').unwrap();
        let (admin_url, drop) = (
            format!("{server}/postgres"),
            format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        );
        // A thread of its own: the blocking client must not run on the test's runtime.
        let _ = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&admin_url, postgres::NoTls)?;
            client.batch_execute(&drop)
        })
        .join();
    }
}

fn login_options(server: &TestServer, identifier: &str) -> LoginOptions {
    LoginOptions {
        platform: Some("Android".into()),
        ..server.login_options(identifier)
    }
}

pub async fn login(server: &TestServer, identifier: &str) -> Connection {
    Connection::connect(&login_options(server, identifier))
        .await
        .unwrap()
}

async fn next_event(connection: &mut Connection, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, connection.next_event())
        .await
        .ok()
        .map(Result::unwrap)
}

async fn next_push_id(connection: &mut Connection, within: Duration) -> Option<String> {
    loop {
        match next_event(connection, within).await? {
            Event::Push(push) => return Some(push.task_id),
            Event::Pong => {}
            other => panic!("expected a push, got {other:?}"),
        }
    }
}

fn tag_push(msg_random: u32, tag: &str) -> Value {
    let mut body = text_push(msg_random, "to a tag");
    body["Condition"] = json!({"TagsOr": [tag]});
    body
}

/// Waits until `query_online_status` on the node at `base` says `account` has `sessions`
/// sessions somewhere in the cluster.
async fn until_sessions_at(base: &str, account: &str, sessions: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = crate::process::admin_call(
            base,
            "openim/query_online_status",
            json!({"To_Account": [account], "IsNeedDetail": 1}),
        )
        .await;
        let detail = &answer["QueryResult"][0]["Detail"];
        if detail.as_array().map_or(0, Vec::len) == sessions {
            return;
        }
        assert!(Instant::now() < deadline, "{account}: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `query_online_status` on `server` says `account` has `sessions` sessions.
async fn until_sessions(server: &TestServer, account: &str, sessions: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server
            .admin()
            .ok(
                "openim/query_online_status",
                json!({"To_Account": [account], "IsNeedDetail": 1}),
            )
            .await;
        let detail = &answer["QueryResult"][0]["Detail"];
        if detail.as_array().map_or(0, Vec::len) == sessions || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_write_on_one_node_is_in_the_audience_of_a_push_from_another_and_reaches_every_nodes_sessions(
) {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b, c) = (
        cluster.node("a").await,
        cluster.node("b").await,
        cluster.node("c").await,
    );
    let mut on_a = login(&a, "alice").await;
    let mut on_b = login(&b, "bob").await;
    let mut on_c = login(&c, "carol").await;
    let mut untagged = login(&c, "dave").await;
    // Tagged on A, pushed to the tag on B: B evaluates the audience after catching up.
    a.admin()
        .ok(
            "all_member_push/im_add_tag",
            json!({"UserTags": [
                {"To_Account": "alice", "Tags": ["vip"]},
                {"To_Account": "bob", "Tags": ["vip"]},
                {"To_Account": "carol", "Tags": ["vip"]},
            ]}),
        )
        .await;
    let task_id = b.admin().push(tag_push(1, "vip")).await;
    let within = Duration::from_secs(3);
    for session in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(
            next_push_id(session, within).await.as_deref(),
            Some(&*task_id)
        );
    }
    untagged.send(&ClientFrame::Ping).await.unwrap();
    assert!(matches!(
        next_event(&mut untagged, within).await,
        Some(Event::Pong)
    ));
    // Account numbers are the same on every node: the same audience whichever reports it.
    for node in [&a, &b, &c] {
        assert_eq!(audience_size(node, &task_id).await, json!(3));
    }
}

async fn audience_size(server: &TestServer, task_id: &str) -> Value {
    server
        .admin()
        .ok("crier/task_report", json!({"TaskId": task_id}))
        .await["Report"]["AudienceSize"]
        .clone()
}

#[tokio::test]
async fn quotas_and_retries_are_cluster_wide() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let mut apps = default_apps();
    apps[0].min_push_interval_ms = 1_000;
    let a = TestServer::start_node(cluster.config("a", &cluster.prefix, apps.clone())).await;
    let b = TestServer::start_node(cluster.config("b", &cluster.prefix, apps)).await;
    let (admin_a, admin_b) = (a.admin(), b.admin());
    let (from_a, from_b) = tokio::join!(
        admin_a.call("all_member_push/im_push", text_push(1, "one")),
        admin_b.call("all_member_push/im_push", text_push(2, "two")),
    );
    let mut codes = [from_a["ErrorCode"].as_u64(), from_b["ErrorCode"].as_u64()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(90024)], "{from_a} {from_b}");
    // A retry of the accepted one, on the other node, answers its TaskId.
    let (accepted, other, msg_random, text) = if from_a["ErrorCode"] == 0 {
        (&from_a, &b, 1, "one")
    } else {
        (&from_b, &a, 2, "two")
    };
    let retry = other
        .admin()
        .ok("all_member_push/im_push", text_push(msg_random, text))
        .await;
    assert_eq!(retry["TaskId"], accepted["TaskId"]);
}

#[tokio::test]
async fn kicks_online_status_and_acks_reach_across_nodes() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b, c) = (
        cluster.node("a").await,
        cluster.node("b").await,
        cluster.node("c").await,
    );
    let mut on_b = login(&b, "carol").await;
    let status = until_sessions(&a, "carol", 1).await;
    assert_eq!(
        status["QueryResult"][0],
        json!({"To_Account": "carol", "Status": "Online", "Detail": [{"Platform": "Android", "Status": "Online"}]})
    );

    // Acknowledged on B: a login on A does not get it again.
    let task_id = a.admin().push(text_push(7, "hello")).await;
    assert_eq!(
        next_push_id(&mut on_b, Duration::from_secs(3))
            .await
            .as_deref(),
        Some(&*task_id)
    );
    on_b.send(&ClientFrame::Ack {
        task_ids: vec![task_id.clone()],
    })
    .await
    .unwrap();
    // Acks are stored in batches and other nodes look at the store once a second.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut on_a = login(&a, "carol").await;
    on_a.send(&ClientFrame::Ping).await.unwrap();
    match next_event(&mut on_a, Duration::from_secs(3)).await {
        Some(Event::Pong) => {}
        other => panic!("expected nothing before the Pong, got {other:?}"),
    }

    // Kicked on A: both sessions, on A and on B, are told.
    a.admin()
        .ok("im_open_login_svc/kick", json!({"UserID": "carol"}))
        .await;
    for session in [&mut on_a, &mut on_b] {
        match next_event(session, Duration::from_secs(3)).await {
            Some(Event::Kicked { .. }) => {}
            other => panic!("expected Kicked, got {other:?}"),
        }
    }
    let status = until_sessions(&b, "carol", 0).await;
    assert_eq!(status["QueryResult"][0]["Status"], "Offline");

    // Deleted on C: the session on A is told and closed, and every node says so.
    let mut erin = login(&a, "erin").await;
    until_sessions(&c, "erin", 1).await;
    c.admin()
        .ok(
            "im_open_login_svc/account_delete",
            json!({"DeleteItem": [{"UserID": "erin"}]}),
        )
        .await;
    match next_event(&mut erin, Duration::from_secs(3)).await {
        Some(Event::Kicked { .. }) => {}
        other => panic!("expected Kicked, got {other:?}"),
    }
    for node in [&a, &b, &c] {
        let check = node
            .admin()
            .ok(
                "im_open_login_svc/account_check",
                json!({"CheckItem": [{"UserID": "erin"}]}),
            )
            .await;
        assert_eq!(check["ResultItem"][0]["AccountStatus"], "NotImported");
    }
}

#[tokio::test]
async fn a_push_whose_announcement_is_lost_still_reaches_the_other_nodes_within_two_seconds() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    // Two nodes on one store whose announcements never reach each other (other prefixes).
    let (deaf_a, deaf_b) = (
        format!("{}-deaf-a", cluster.prefix),
        format!("{}-deaf-b", cluster.prefix),
    );
    let a = TestServer::start_node(cluster.config("a", &deaf_a, default_apps())).await;
    let b = TestServer::start_node(cluster.config("b", &deaf_b, default_apps())).await;
    let mut on_b = login(&b, "dave").await;
    let started = Instant::now();
    let task_id = a.admin().push(text_push(9, "lost")).await;
    assert_eq!(
        next_push_id(&mut on_b, Duration::from_secs(2))
            .await
            .as_deref(),
        Some(&*task_id)
    );
    eprintln!(
        "a push without its announcement reached the other node's session after {} ms",
        started.elapsed().as_millis()
    );
}

/// A NATS server of the test's own, on a port of its own, that the test can stop.
pub struct OwnNats {
    port: u16,
    process: std::process::Child,
}

impl OwnNats {
    pub fn start(port: u16) -> Option<OwnNats> {
        let process = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match process {
            Ok(process) => Some(OwnNats { port, process }),
            Err(error) => {
                eprintln!("skipped: cannot start nats-server: {error}");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while async_nats::connect(self.url()).await.is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn pushes_reach_every_node_while_nats_is_down_and_after_it_returns() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let port = free_port();
    let Some(nats) = OwnNats::start(port) else {
        return;
    };
    nats.ready().await;
    let node = |name: &'static str| {
        let mut config = cluster.config(name, &cluster.prefix, default_apps());
        config.bus = Some(BackendUrl::new(nats.url()));
        TestServer::start_node(config)
    };
    let (a, b) = (node("a").await, node("b").await);
    let mut on_b = login(&b, "frank").await;
    let within = Duration::from_secs(3);

    drop(nats);
    let started = Instant::now();
    let during = a.admin().push(text_push(21, "nats is down")).await;
    assert_eq!(
        next_push_id(&mut on_b, within).await.as_deref(),
        Some(&*during)
    );
    eprintln!(
        "with NATS down, a push reached the other node's session after {} ms",
        started.elapsed().as_millis()
    );

    let nats = OwnNats::start(port).unwrap();
    nats.ready().await;
    let after = a.admin().push(text_push(22, "nats is back")).await;
    assert_eq!(
        next_push_id(&mut on_b, within).await.as_deref(),
        Some(&*after)
    );
    drop(nats);
}

#[tokio::test]
async fn a_node_killed_while_pushes_are_accepted_loses_none_that_were_answered() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        format!(
            "bus_subject_prefix = \"{}\"\n[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\ndaily_push_quota = 1000\n",
            cluster.prefix
        ),
    )
    .unwrap();
    let node = |name: &str| {
        let data_dir = dir.path().join(name);
        crate::process::ServerProcess::start_with(
            &config,
            &data_dir,
            &[
                "--store",
                &cluster.database,
                "--bus",
                NATS,
                "--node-id",
                name,
            ],
        )
    };
    let (one, two, three) = (node("one"), node("two"), node("three"));
    let servers: Vec<String> = [&one, &two, &three]
        .iter()
        .map(|node| format!("{}/v4/ws", node.base.replace("http://", "ws://")))
        .collect();
    let mut listeners: Vec<crier_client::Listener> = (0..6)
        .map(|n| {
            let identifier = format!("listener{n}");
            let options = LoginOptions {
                url: servers[0].clone(),
                sdkappid: APP,
                identifier: identifier.clone(),
                user_sig: String::new(),
                platform: None,
            };
            crier_client::Listener::start_with_servers(servers.clone(), options, move || {
                crier_proto::usersig::sign(APP, KEY, &identifier, 3_600, crier::clock::now_secs())
            })
        })
        .collect();
    // Every listener is online somewhere before the first push.
    for n in 0..6 {
        until_sessions_at(&three.base, &format!("listener{n}"), 1).await;
    }

    let mut answered = Vec::new();
    let mut two = Some(two);
    for round in 0..30u32 {
        if round == 10 {
            two.take().unwrap().kill_9();
        }
        // Alternately to the node that dies and to one that lives.
        let base = match (&two, round % 2) {
            (Some(two), 0) => two.base.clone(),
            _ => one.base.clone(),
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            crate::process::admin_call(
                &base,
                "all_member_push/im_push",
                text_push(100 + round, "while a node dies"),
            ),
        )
        .await;
        if let Ok(answer) = answer {
            if answer["ErrorCode"] == 0 {
                answered.push(answer["TaskId"].as_str().unwrap().to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered.len() >= 20, "{answered:?}");

    for listener in &mut listeners {
        let mut received = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answered.iter().all(|id| received.contains(id)) {
            let left = deadline.saturating_duration_since(Instant::now());
            let push = tokio::time::timeout(left, listener.next())
                .await
                .unwrap_or_else(|_| {
                    let missing: Vec<_> = answered
                        .iter()
                        .filter(|id| !received.contains(*id))
                        .collect();
                    panic!("pushes answered OK but never delivered: {missing:?}")
                })
                .expect("the listener keeps listening");
            listener.ack(push.task_id.clone());
            received.insert(push.task_id);
        }
    }
    drop(three);
}

/// Logs `identifier` in on `server`, registers a webhook device, waits until the server has
/// it, and logs out.
pub async fn with_webhook_device(base: &str, identifier: &str) {
    let options = login_options_at(base, identifier);
    let mut connection = Connection::connect(&options).await.unwrap();
    connection
        .send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: format!("token-{identifier}"),
        })
        .await
        .unwrap();
    connection.send(&ClientFrame::Ping).await.unwrap();
    loop {
        match next_event(&mut connection, Duration::from_secs(5)).await {
            Some(Event::Pong) => break,
            Some(Event::Error { code, info }) => panic!("device refused: {code} {info}"),
            Some(_) => {}
            None => panic!("no Pong"),
        }
    }
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_notification_run_whose_node_dies_is_finished_by_another_from_its_cursor() {
    const DEVICES: usize = 1_500;
    /// Accounts per notification batch (`notify::worker`): what may be sent twice.
    const BATCH: usize = 512;
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let webhook = crate::fakes::webhook::FakeWebhook::start().await;
    let mut hook = webhook.config();
    // Slow enough that the run is mid-way when its node dies (about 7 s for every device), and
    // a batch (3.4 s) longer than the lease (2 s): the running node renews it meanwhile, so
    // only a dead node loses its job.
    hook.rate_per_sec = Some(220);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        format!(
            "bus_subject_prefix = \"{}\"\n[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\nnotification_lease_secs = 2\n[app.webhook]\n{}",
            cluster.prefix,
            toml::to_string(&hook).unwrap()
        ),
    )
    .unwrap();
    let node = |name: &str| {
        crate::process::ServerProcess::start_with(
            &config,
            &dir.path().join(name),
            &[
                "--store",
                &cluster.database,
                "--bus",
                NATS,
                "--node-id",
                name,
            ],
        )
    };
    let (first, second) = (node("first"), node("second"));
    for chunk in (0..DEVICES).collect::<Vec<_>>().chunks(100) {
        let registering = chunk.iter().map(|n| {
            let base = first.base.clone();
            async move { with_webhook_device(&base, &format!("user{n}")).await }
        });
        futures_util::future::join_all(registering).await;
    }
    let mut body = text_push(31, "you have mail");
    body["OfflinePushInfo"] = json!({"Title": "Crier", "Desc": "you have mail"});
    crate::process::admin_ok(&first.base, "all_member_push/im_push", body).await;

    // The node that accepted the push runs the job; it dies after the first batch is stored.
    let deadline = Instant::now() + Duration::from_secs(20);
    while webhook.count() < BATCH + 50 {
        assert!(
            Instant::now() < deadline,
            "the run did not start: {} sent",
            webhook.count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill_9();
    let sent_before_the_kill = webhook.count();

    let deadline = Instant::now() + Duration::from_secs(60);
    let tokens = loop {
        let tokens: std::collections::HashMap<String, usize> =
            webhook
                .requests()
                .into_iter()
                .fold(Default::default(), |mut tokens, request| {
                    *tokens.entry(request.token).or_default() += 1;
                    tokens
                });
        if tokens.len() == DEVICES {
            break tokens;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {DEVICES} devices notified",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let twice = tokens.values().filter(|sends| **sends > 1).count();
    eprintln!(
        "{sent_before_the_kill} sent before the kill; every one of {DEVICES} devices notified, {twice} twice (at most {BATCH}: the batch in flight)"
    );
    // The first batch was stored before the second began, and the kill came during the
    // second: only what the dead node had sent of it (and what was still on the wire, at most
    // the sends in flight) goes out twice.
    let in_flight = 64;
    assert!(
        twice <= sent_before_the_kill - BATCH + in_flight,
        "{twice} devices notified twice, {sent_before_the_kill} sent before the kill"
    );
    assert!(tokens.values().all(|sends| *sends <= 2));
    drop(second);
}

/// The next `Revoke` on `connection` within `within`, passing over pushes and pongs.
async fn next_revoke_id(connection: &mut Connection, within: Duration) -> Option<String> {
    loop {
        match next_event(connection, within).await? {
            Event::Revoke { task_id, .. } => return Some(task_id),
            Event::Push(_) | Event::Pong => {}
            other => panic!("expected a revoke, got {other:?}"),
        }
    }
}

fn kept_timpush(msg_random: u32) -> Value {
    json!({
        "MsgRandom": msg_random,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "recall me"}}],
    })
}

#[tokio::test]
async fn a_revoke_on_one_node_reaches_every_nodes_sessions_and_logins() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b, c) = (
        cluster.node("a").await,
        cluster.node("b").await,
        cluster.node("c").await,
    );
    let mut on_a = login(&a, "ann").await;
    let mut on_c = login(&c, "cat").await;
    login(&b, "bob").await.close().await.unwrap();
    let answer = a.admin().ok("timpush/push", kept_timpush(1)).await;
    let task_id = answer["TaskId"].as_str().unwrap().to_owned();
    for session in [&mut on_a, &mut on_c] {
        assert_eq!(
            next_push_id(session, Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&*task_id)
        );
    }
    b.admin()
        .ok("timpush/revoke", json!({"TaskId": task_id}))
        .await;
    for session in [&mut on_a, &mut on_c] {
        assert_eq!(
            next_revoke_id(session, Duration::from_secs(5))
                .await
                .as_deref(),
            Some(&*task_id)
        );
    }
    // bob never had it and does not get it at login, on any node.
    for node in [&a, &c] {
        let mut bob = login(node, "bob").await;
        bob.send(&ClientFrame::Ping).await.unwrap();
        match next_event(&mut bob, Duration::from_secs(5)).await {
            Some(Event::Pong) => {}
            other => panic!("bob at login: {other:?}"),
        }
        bob.close().await.unwrap();
    }
    // Revoked is the store's word, whichever node is asked (the 1 s rate is counted per node).
    c.admin()
        .fails("timpush/revoke", json!({"TaskId": task_id}), 90050)
        .await;
}

#[tokio::test]
async fn a_revoke_whose_announcement_is_lost_is_found_in_the_store() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (deaf_a, deaf_b) = (
        format!("{}-deaf-a", cluster.prefix),
        format!("{}-deaf-b", cluster.prefix),
    );
    let a = TestServer::start_node(cluster.config("a", &deaf_a, default_apps())).await;
    let b = TestServer::start_node(cluster.config("b", &deaf_b, default_apps())).await;
    let mut on_b = login(&b, "dave").await;
    let answer = a.admin().ok("timpush/push", kept_timpush(2)).await;
    let task_id = answer["TaskId"].as_str().unwrap().to_owned();
    assert_eq!(
        next_push_id(&mut on_b, Duration::from_secs(3))
            .await
            .as_deref(),
        Some(&*task_id)
    );
    let started = Instant::now();
    a.admin()
        .ok("timpush/revoke", json!({"TaskId": task_id}))
        .await;
    assert_eq!(
        next_revoke_id(&mut on_b, Duration::from_secs(3))
            .await
            .as_deref(),
        Some(&*task_id)
    );
    eprintln!(
        "a revoke without its announcement reached the other node's session after {} ms",
        started.elapsed().as_millis()
    );
}

#[tokio::test]
async fn of_two_nodes_on_one_store_each_scheduled_task_runs_once() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    a.admin().import(&["alice"]).await;
    let mut alice = login(&b, "alice").await;
    until_sessions(&a, "alice", 1).await;
    // Both nodes wake for the same second.
    let at_ms = (crier::clock::now_ms() / 1000 + 3) * 1000;
    let at = crier::push::sched::format_time(at_ms);
    let mut tasks = Vec::new();
    for (n, node) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let content = json!({"MsgRandom": n, "OnlineOnlyFlag": 1,
                             "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": format!("task {n}")}}]});
        let added = node
            .admin()
            .ok(
                "timpush/add_sched_task",
                json!({"Sdkappid": APP, "Type": "All", "SchedAt": at, "Content": content}),
            )
            .await;
        tasks.push(added["TaskID"].as_u64().unwrap());
    }
    let mut received = Vec::new();
    while let Some(task_id) = next_push_id(&mut alice, Duration::from_secs(6)).await {
        received.push(task_id);
        if received.len() == tasks.len() {
            break;
        }
    }
    assert_eq!(received.len(), tasks.len(), "{received:?}");
    assert_eq!(
        next_push_id(&mut alice, Duration::from_secs(2)).await,
        None,
        "no task ran twice"
    );
    let listed = b
        .admin()
        .ok("crier/task_list", json!({"Kinds": ["push"]}))
        .await;
    let mut started_by: Vec<u64> = listed["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["SchedTaskID"].as_u64().unwrap())
        .collect();
    started_by.sort();
    let mut expected = tasks.clone();
    expected.sort();
    assert_eq!(started_by, expected, "one push per task");
    // Three reads per node, within the 5 calls per second of each.
    for (task, node) in tasks.into_iter().zip([&a, &b].into_iter().cycle()) {
        let info = node
            .admin()
            .ok(
                "timpush/get_sched_task",
                json!({"Sdkappid": APP, "TaskID": task}),
            )
            .await;
        assert_eq!(info["TaskInfo"]["Status"], "dispatched", "{info}");
        assert!(received.contains(&info["TaskInfo"]["PushTaskID"].as_str().unwrap().to_owned()));
    }
}
