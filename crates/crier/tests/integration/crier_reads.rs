//! Crier's own reads for the console (`v4/crier/*`, docs/crier-reads.md): success, each
//! error, and isolation between apps.

use std::time::Duration;

use crier::config::AppConfig;
use crier_client::{Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

const COUNT: &str = "crier/audience_count";
const TASKS: &str = "crier/task_list";
const TIMELINE: &str = "crier/task_timeline";
const ACCOUNT: &str = "crier/account_info";
const TAG_STATS: &str = "crier/tag_stats";
const ATTR_STATS: &str = "crier/attr_stats";
const QUOTA: &str = "crier/quota";
const OVERVIEW: &str = "crier/overview";

/// Calls `path`; a `v4/crier` read refused for the rate (10 a second, which these tests pass
/// on purpose only in the last one) is repeated a little later.
async fn read(admin: &Admin<'_>, path: &str, body: Value) -> Value {
    for _ in 0..50 {
        let answer = admin.call(path, body.clone()).await;
        if answer["ErrorCode"] != 90024 || !path.starts_with("crier/") {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} stayed rate-limited for 5 s");
}

async fn ok(admin: &Admin<'_>, path: &str, body: Value) -> Value {
    let answer = read(admin, path, body).await;
    assert_eq!(answer["ActionStatus"], "OK", "{path}: {answer}");
    answer
}

async fn fails(admin: &Admin<'_>, path: &str, body: Value, code: u32) -> Value {
    let answer = read(admin, path, body).await;
    assert_eq!(answer["ActionStatus"], "FAIL", "{path}: {answer}");
    assert_eq!(answer["ErrorCode"], code, "{path}: {answer}");
    assert!(!answer["ErrorInfo"].as_str().unwrap().is_empty());
    answer
}

async fn login(server: &TestServer, identifier: &str, platform: &str) -> Connection {
    let options = LoginOptions {
        platform: Some(platform.into()),
        ..server.login_options(identifier)
    };
    Connection::connect(&options).await.unwrap()
}

/// Waits until every frame sent before on `connection` was handled (the Pong comes after).
async fn settled(connection: &mut Connection) {
    connection.send(&ClientFrame::Ping).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), connection.next_event())
            .await
            .unwrap()
            .unwrap();
        match event {
            Event::Pong => return,
            Event::Error { code, info } => panic!("a frame failed: {code} {info}"),
            _ => {}
        }
    }
}

/// ann (gold, sz), ben (gold, silver), cat (no tag); attribute names tier and city.
async fn three_accounts(admin: &Admin<'_>) {
    admin.import(&["ann", "ben", "cat"]).await;
    ok(
        admin,
        ADD_TAG,
        user_tags(&[("ann", &["gold"]), ("ben", &["gold", "silver"])]),
    )
    .await;
    ok(
        admin,
        SET_ATTR_NAME,
        json!({"AttrNames": {"0": "tier", "1": "city"}}),
    )
    .await;
    ok(
        admin,
        SET_ATTR,
        user_attrs(&[
            ("ann", json!({"tier": "gold", "city": "sz"})),
            ("ben", json!({"tier": "gold", "city": "bj"})),
            ("cat", json!({"city": "sz"})),
        ]),
    )
    .await;
}

fn count_of(answer: &Value) -> u64 {
    answer["Count"].as_u64().unwrap()
}

#[tokio::test]
async fn audience_count_equals_the_audience_of_a_push_and_uses_no_quota() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    let both = json!({"Condition": {"TagsAnd": ["gold"], "TagsOr": ["silver"]}});
    assert_eq!(count_of(&ok(&admin, COUNT, both).await), 1);
    let condition = json!({"TagsOr": ["gold", "silver"]});
    let counted = ok(&admin, COUNT, json!({"Condition": condition})).await;
    assert_eq!(count_of(&counted), 2);
    assert!(counted["AsOf"].as_u64().unwrap() >= crier::clock::now_secs() - 5);
    assert_eq!(count_of(&ok(&admin, COUNT, json!({})).await), 3);
    assert_eq!(count_of(&ok(&admin, COUNT, json!([])).await), 3);
    let by_attr = json!({"Condition": {"AttrsAnd": {"city": "sz"}}});
    assert_eq!(count_of(&ok(&admin, COUNT, by_attr).await), 2);
    assert_eq!(ok(&admin, QUOTA, json!({})).await["PushesToday"], 0);

    let mut body = text_push(7, "to gold");
    body["Condition"] = condition.clone();
    let task_id = ok(&admin, PUSH, body).await["TaskId"].clone();
    let report = ok(&admin, "crier/task_report", json!({"TaskId": task_id})).await;
    assert_eq!(report["Report"]["AudienceSize"], 2);

    // Only ann has a session: ConnectedOnly counts her alone, every answer says so.
    let _ann = login(&server, "ann", "Android").await;
    let online = ok(
        &admin,
        COUNT,
        json!({"Condition": condition, "ConnectedOnly": true}),
    )
    .await;
    assert_eq!(
        (count_of(&online), online["Connected"].as_u64()),
        (1, Some(1))
    );
}

#[tokio::test]
async fn audience_count_refuses_what_a_push_refuses() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    let refused = [
        (json!({"AttrsAnd": {"planet": "mars"}}), 90033),
        (
            json!({"TagsAnd": ["gold"], "AttrsOr": {"tier": "gold"}}),
            90039,
        ),
        (json!({"TagsAnd": ["gold"], "TagsOr": ["gold"]}), 90022),
        (json!({"TagsOr": [""]}), 90040),
        (json!({"TagsOr": ["x".repeat(51)]}), 90020),
        (json!({"TagsOr": names("t", 11)}), 90032),
    ];
    for (condition, code) in refused {
        fails(&admin, COUNT, json!({"Condition": condition}), code).await;
    }
    fails(&admin, COUNT, json!({"ConnectedOnly": "yes"}), 90001).await;
    let garbled = server.post_raw(COUNT, &admin.query, "{not json").await;
    assert_eq!(garbled["ErrorCode"], 90001);
    let stranger = server.admin_of(APP, KEY, "not-an-admin");
    fails(&stranger, COUNT, json!({}), 90009).await;
    let forged = server.admin_of(APP, "wrong key", ADMIN);
    fails(&forged, COUNT, json!({}), 70009).await;
    fails(&admin, "crier/no_such_read", json!({}), 60009).await;
}

#[tokio::test]
async fn task_list_lists_pushes_newest_first_with_their_state() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    let mut online_only = text_push(1, "online only");
    online_only["MsgLifeTime"] = json!(0);
    let first = ok(&admin, PUSH, online_only).await["TaskId"].clone();
    let mut kept = text_push(2, "kept");
    kept["MsgLifeTime"] = json!(3600);
    kept["Condition"] = json!({"TagsOr": ["silver"]});
    let second = ok(&admin, PUSH, kept).await["TaskId"].clone();

    let answer = ok(&admin, TASKS, json!({})).await;
    assert_eq!(answer["Total"], 2);
    let tasks = answer["Tasks"].as_array().unwrap();
    assert_eq!(
        (&tasks[0]["TaskId"], &tasks[1]["TaskId"]),
        (&second, &first)
    );
    let newest = &tasks[0];
    assert_eq!(newest["Kind"], "im_push");
    assert_eq!(newest["State"], "active");
    assert_eq!(newest["AudienceSize"], 1);
    assert_eq!(newest["Acked"], 0);
    assert_eq!(newest["MsgLifeTime"], 3600);
    assert_eq!(newest["Condition"], json!({"TagsOr": ["silver"]}));
    assert_eq!(
        newest["ExpireTime"].as_u64().unwrap(),
        newest["TaskTime"].as_u64().unwrap() + 3600
    );
    assert_eq!(tasks[1]["State"], "done");
    assert_eq!(tasks[1]["AudienceSize"], 3);
    assert_eq!(tasks[1]["ExpireTime"], tasks[1]["TaskTime"]);

    let page = ok(&admin, TASKS, json!({"Offset": 1, "Want": 1})).await;
    assert_eq!(page["Total"], 2);
    assert_eq!(page["Tasks"][0]["TaskId"], first);
    let later = crier::clock::now_secs() + 60;
    assert_eq!(ok(&admin, TASKS, json!({"Since": later})).await["Total"], 0);
    assert_eq!(
        ok(&admin, TASKS, json!({"Kinds": ["batch"]})).await["Total"],
        0
    );
    assert_eq!(
        ok(&admin, TASKS, json!({"Kinds": ["im_push"]})).await["Total"],
        2
    );

    for bad in [
        json!({"Want": 0}),
        json!({"Want": 101}),
        json!({"Offset": -1}),
        json!({"Kinds": ["nope"]}),
        json!({"Kinds": "im_push"}),
    ] {
        fails(&admin, TASKS, bad, 90104).await;
    }
}

#[tokio::test]
async fn account_info_shows_tags_attributes_sessions_devices_and_pending_pushes() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    let mut kept = text_push(3, "kept for ben");
    kept["MsgLifeTime"] = json!(3600);
    ok(&admin, PUSH, kept).await;

    let mut ann = login(&server, "ann", "iPhone").await;
    ann.send(&ClientFrame::RegisterDevice {
        platform: "webhook".into(),
        token: "https://device.example/ann".into(),
    })
    .await
    .unwrap();
    settled(&mut ann).await;

    let info = ok(&admin, ACCOUNT, json!({"UserID": "ann"})).await;
    assert_eq!(info["UserID"], "ann");
    assert_eq!(info["AccountStatus"], "Imported");
    assert_eq!(info["Tags"], json!(["gold"]));
    assert_eq!(info["Attrs"], json!({"tier": "gold", "city": "sz"}));
    assert_eq!(info["Sessions"], json!([{"Platform": "iPhone"}]));
    assert_eq!(
        info["Devices"],
        json!([{"Platform": "webhook", "Token": "https://device.example/ann"}])
    );
    // ann got the kept push at login but has not acknowledged it.
    assert_eq!(info["PendingPushes"], 1);

    let ben = ok(&admin, ACCOUNT, json!({"UserID": "ben"})).await;
    assert_eq!(
        (&ben["Sessions"], &ben["PendingPushes"]),
        (&json!([]), &json!(1))
    );

    // Tags written ahead of an import: known, not imported.
    ok(&admin, ADD_TAG, user_tags(&[("dan", &["gold"])])).await;
    let dan = ok(&admin, ACCOUNT, json!({"UserID": "dan"})).await;
    assert_eq!(dan["AccountStatus"], "NotImported");

    fails(&admin, ACCOUNT, json!({"UserID": "nobody"}), 70107).await;
    fails(&admin, ACCOUNT, json!({}), 90001).await;
    fails(&admin, ACCOUNT, json!({"UserID": 5}), 90001).await;
    ok(&admin, DELETE, json!({"DeleteItem": [{"UserID": "cat"}]})).await;
    fails(&admin, ACCOUNT, json!({"UserID": "cat"}), 70107).await;
}

#[tokio::test]
async fn tag_and_attribute_stats_count_live_members() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    ok(&admin, ADD_TAG, user_tags(&[("dan", &["silver"])])).await;

    let tags = ok(&admin, TAG_STATS, json!({})).await;
    assert_eq!(tags["TagCount"], 2);
    assert_eq!(
        tags["Tags"],
        json!([{"Tag": "gold", "Count": 2}, {"Tag": "silver", "Count": 1}])
    );
    let top = ok(&admin, TAG_STATS, json!({"Want": 1})).await;
    assert_eq!(top["Tags"], json!([{"Tag": "gold", "Count": 2}]));

    let cities = ok(&admin, ATTR_STATS, json!({"AttrName": "city"})).await;
    assert_eq!(cities["AttrName"], "city");
    assert_eq!(cities["ValueCount"], 2);
    assert_eq!(
        cities["Values"],
        json!([{"Value": "sz", "Count": 2}, {"Value": "bj", "Count": 1}])
    );

    fails(&admin, ATTR_STATS, json!({"AttrName": "planet"}), 90033).await;
    fails(&admin, ATTR_STATS, json!({}), 90104).await;
    fails(
        &admin,
        ATTR_STATS,
        json!({"AttrName": "city", "Want": 0}),
        90104,
    )
    .await;
    fails(&admin, TAG_STATS, json!({"Want": 1001}), 90104).await;
    fails(&admin, TAG_STATS, json!({"Want": "ten"}), 90104).await;
}

#[tokio::test]
async fn quota_says_how_many_pushes_are_left_and_when_the_next_is_allowed() {
    let app = AppConfig {
        daily_push_quota: 2,
        min_push_interval_ms: 60_000,
        ..app_config(APP, KEY)
    };
    let server = TestServer::start_with(vec![app, app_config(OTHER_APP, OTHER_KEY)]).await;
    let admin = server.admin();
    let fresh = ok(&admin, QUOTA, json!({})).await;
    assert_eq!(fresh["PushEnabled"], true);
    assert_eq!(fresh["DailyPushQuota"], 2);
    assert_eq!(fresh["PushesToday"], 0);
    assert_eq!(fresh["MinPushIntervalMs"], 60_000);
    assert_eq!(fresh["LastPushTime"], Value::Null);
    assert!(fresh["NextPushTime"].as_u64() <= fresh["ServerTime"].as_u64());
    assert_eq!(fresh["QuotaResetTime"].as_u64().unwrap() % 86_400, 0);

    admin.import(&["ann"]).await;
    ok(&admin, PUSH, text_push(1, "one")).await;
    let after = ok(&admin, QUOTA, json!({})).await;
    assert_eq!(after["PushesToday"], 1);
    let last = after["LastPushTime"].as_u64().unwrap();
    assert_eq!(after["NextPushTime"].as_u64().unwrap(), last + 60_000);
    fails(&admin, PUSH, text_push(2, "too soon"), 90024).await;

    // The other app's quota is its own.
    let other = server.admin_of(OTHER_APP, OTHER_KEY, ADMIN);
    assert_eq!(ok(&other, QUOTA, json!({})).await["PushesToday"], 0);
}

#[tokio::test]
async fn overview_counts_sessions_by_platform_and_charts_deliveries() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["ann", "ben"]).await;
    let _ann = login(&server, "ann", "Android").await;
    let _ann_too = login(&server, "ann", "Web").await;
    let mut ben = login(&server, "ben", "Android").await;
    // The first sample is the baseline the chart counts from.
    let first = ok(&admin, OVERVIEW, json!({})).await;
    assert_eq!(first["Sessions"], 3);
    assert_eq!(first["SessionsByPlatform"], json!({"Android": 2, "Web": 1}));
    assert_eq!(first["AccountsOnline"], 2);
    assert_eq!(first["LiveAccounts"], 2);
    assert_eq!(first["History"].as_array().unwrap().len(), 60);

    let mut body = text_push(1, "to all");
    body["MsgLifeTime"] = json!(600);
    let task_id = ok(&admin, PUSH, body).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    loop {
        if let Event::Push(push) = ben.next_event().await.unwrap() {
            ben.ack(vec![push.task_id]).await.unwrap();
            break;
        }
    }
    let sum = |answer: &Value, field: &str| -> u64 {
        answer["History"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point[field].as_u64().unwrap())
            .sum()
    };
    let mut charted = (0, 0);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let answer = ok(&admin, OVERVIEW, json!({})).await;
        charted = (
            sum(&answer, "DeliveredOnline"),
            sum(&answer, "Acknowledged"),
        );
        if charted == (3, 1) {
            break;
        }
    }
    assert_eq!(charted, (3, 1), "three sessions got it, ben acknowledged");

    let timeline = ok(&admin, TIMELINE, json!({"TaskId": task_id})).await;
    let points = timeline["Points"].as_array().unwrap();
    let last = points.last().unwrap();
    assert_eq!(
        (&last["DeliveredOnline"], &last["Acknowledged"]),
        (&json!(3), &json!(1))
    );
    assert!(last["Notifications"]["apns"]["Sent"].is_u64());
    fails(&admin, TIMELINE, json!({"TaskId": "nope"}), 90104).await;
    fails(&admin, TIMELINE, json!({}), 90104).await;
}

#[tokio::test]
async fn one_app_reads_nothing_of_another() {
    let server = TestServer::start().await;
    let admin = server.admin();
    three_accounts(&admin).await;
    let _ann = login(&server, "ann", "Web").await;
    let task_id = ok(&admin, PUSH, text_push(1, "app one")).await["TaskId"].clone();

    let other = server.admin_of(OTHER_APP, OTHER_KEY, ADMIN);
    assert_eq!(count_of(&ok(&other, COUNT, json!({})).await), 0);
    fails(
        &other,
        COUNT,
        json!({"Condition": {"AttrsAnd": {"city": "sz"}}}),
        90033,
    )
    .await;
    assert_eq!(ok(&other, TASKS, json!({})).await["Total"], 0);
    fails(&other, ACCOUNT, json!({"UserID": "ann"}), 70107).await;
    assert_eq!(ok(&other, TAG_STATS, json!({})).await["TagCount"], 0);
    fails(&other, ATTR_STATS, json!({"AttrName": "city"}), 90033).await;
    assert_eq!(ok(&other, QUOTA, json!({})).await["PushesToday"], 0);
    let overview = ok(&other, OVERVIEW, json!({})).await;
    assert_eq!(
        (&overview["Sessions"], &overview["LiveAccounts"]),
        (&json!(0), &json!(0))
    );
    fails(&other, TIMELINE, json!({"TaskId": task_id}), 90104).await;
    // Signed for one app, the call cannot name the other.
    let crossed = server.admin_of(OTHER_APP, KEY, ADMIN);
    fails(&crossed, COUNT, json!({}), 70009).await;
}

#[tokio::test]
async fn more_than_ten_reads_a_second_are_refused_with_90024() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let started = std::time::Instant::now();
    let mut refused = None;
    while refused.is_none() && started.elapsed() < Duration::from_secs(5) {
        let answer = admin.call(COUNT, json!({})).await;
        if answer["ErrorCode"] != 0 {
            refused = Some(answer);
        }
    }
    let refused = refused.expect("an 11th read within one second is refused");
    assert_eq!(refused["ErrorCode"], 90024);
    assert!(refused["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("10 v4/crier calls per second"));
    // The other app has its own budget.
    let other = server.admin_of(OTHER_APP, OTHER_KEY, ADMIN);
    ok(&other, COUNT, json!({})).await;
}

#[tokio::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = TestServer::start().await;
    let get = |path: &str| {
        let url = format!("{}{path}", server.base);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        async move { http.get(url).send().await.unwrap() }
    };
    let page = get("/console/").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'self'") && policy.contains("connect-src 'self'"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<script type=\"module\" src=\"app.js\">"));
    let script = get("/console/app.js").await;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(get("/console/secret.toml").await.status(), 404);
    let bare = get("/console").await;
    assert_eq!(bare.status(), 308);
    assert_eq!(bare.headers()["location"], "/console/");
}
