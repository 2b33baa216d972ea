//! Directory writes from many connections at once. The server commits them in groups (one log
//! append and one apply pass for all the writes that queued meanwhile); each must still be
//! answered as if it were alone, and everything acknowledged must read back.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

const WRITERS: usize = 16;
const ROUNDS: usize = 6;
const USERS: usize = 25;

fn accounts(writer: usize, round: usize) -> Vec<String> {
    (0..USERS)
        .map(|u| format!("w{writer}r{round}u{u}"))
        .collect()
}

/// Imports, tags and attributes for the accounts of one writer, round after round, and takes
/// the round's tag off the odd rounds' accounts again.
async fn write_rounds(admin: &Admin<'_>, writer: usize) {
    for round in 0..ROUNDS {
        let accounts = accounts(writer, round);
        admin.ok(IMPORT_MANY, json!({ "Accounts": accounts })).await;
        let tags = json!([format!("w{writer}"), format!("r{round}")]);
        let body: Vec<Value> = accounts
            .iter()
            .map(|a| json!({"To_Account": a, "Tags": tags}))
            .collect();
        admin.ok(ADD_TAG, json!({ "UserTags": body })).await;
        let attrs = json!({"tier": format!("t{writer}"), "city": format!("c{round}")});
        let body: Vec<Value> = accounts
            .iter()
            .map(|a| json!({"To_Account": a, "Attrs": attrs}))
            .collect();
        admin.ok(SET_ATTR, json!({ "UserAttrs": body })).await;
        if round % 2 == 1 {
            let body: Vec<Value> = accounts
                .iter()
                .map(|a| json!({"To_Account": a, "Tags": [format!("r{round}")]}))
                .collect();
            admin.ok(REMOVE_TAG, json!({ "UserTags": body })).await;
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_writers_all_get_ok_and_everything_reads_back() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"0": "tier", "1": "city"}}),
        )
        .await;
    join_all((0..WRITERS).map(|writer| {
        let admin = &admin;
        async move { write_rounds(admin, writer).await }
    }))
    .await;

    for writer in 0..WRITERS {
        for round in 0..ROUNDS {
            let accounts = accounts(writer, round);
            let answer = admin.ok(GET_TAG, json!({ "To_Account": accounts })).await;
            let mut expected = vec![format!("w{writer}")];
            if round % 2 == 0 {
                expected.push(format!("r{round}"));
            }
            for entry in answer["UserTags"].as_array().unwrap() {
                let mut tags: Vec<String> = serde_json::from_value(entry["Tags"].clone()).unwrap();
                tags.sort();
                expected.sort();
                assert_eq!(tags, expected, "{entry}");
            }
            let answer = admin.ok(GET_ATTR, json!({ "To_Account": accounts })).await;
            for entry in answer["UserAttrs"].as_array().unwrap() {
                assert_eq!(
                    entry["Attrs"],
                    json!({"tier": format!("t{writer}"), "city": format!("c{round}")}),
                    "{entry}"
                );
            }
        }
    }
    // Pushes see every acknowledged write.
    let by_tag = push_to(&admin, json!({"TagsAnd": ["w3", "r2"]}), 1).await;
    assert_eq!(task_report(&admin, &by_tag).await["AudienceSize"], USERS);
    let by_attr = push_to(&admin, json!({"AttrsAnd": {"tier": "t5"}}), 2).await;
    assert_eq!(
        task_report(&admin, &by_attr).await["AudienceSize"],
        USERS * ROUNDS
    );

    let metrics = server.metrics().await;
    let writes = metric(&metrics, "crier_directory_writes_total");
    let groups = metric(&metrics, "crier_directory_write_groups_total");
    // One attribute-name write, then per writer and round an import, a tag and an attribute
    // write, and a tag removal every other round.
    assert_eq!(writes as usize, 1 + WRITERS * (ROUNDS * 3 + ROUNDS / 2));
    assert!(groups < writes, "{writes} writes in {groups} groups");
    let busy: f64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix("crier_directory_writer_busy_seconds_total ")?
                .parse()
                .ok()
        })
        .expect("the writer's busy time in /metrics");
    assert!(
        busy > 0.0 && busy < 60.0,
        "{writes} writes committed in {busy} s"
    );

    // And all of it survives a restart (the log, replayed).
    let data = server.stop().await;
    let server = TestServer::start_in(data, default_apps()).await;
    let admin = server.admin();
    assert_eq!(sorted_tags(&admin, "w15r4u24").await, ["r4", "w15"]);
    assert_eq!(
        attrs_of(&admin, "w0r5u0").await,
        json!({"tier": "t0", "city": "c5"})
    );
}

/// The per-account cap counts the tags of writes committed in the same group: of ten writes
/// racing to give an account at 95 tags one new tag each, exactly five get in.
#[tokio::test(flavor = "multi_thread")]
async fn racing_writes_do_not_take_an_account_past_the_tag_cap() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    let held = names("held", 95);
    for chunk in held.chunks(10) {
        admin
            .ok(
                ADD_TAG,
                json!({"UserTags": [{"To_Account": "a", "Tags": chunk}]}),
            )
            .await;
    }
    let answers = join_all((0..10).map(|n| {
        admin.call(
            ADD_TAG,
            json!({"UserTags": [{"To_Account": "a", "Tags": [format!("new{n}")]}]}),
        )
    }))
    .await;
    let codes: Vec<u64> = answers
        .iter()
        .map(|answer| answer["ErrorCode"].as_u64().unwrap())
        .collect();
    assert_eq!(
        codes.iter().filter(|&&code| code == 0).count(),
        5,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|&&code| code == 90032).count(),
        5,
        "{codes:?}"
    );
    assert_eq!(sorted_tags(&admin, "a").await.len(), 100);
}
