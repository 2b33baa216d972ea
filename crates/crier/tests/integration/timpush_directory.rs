//! The attribute and tag commands of `v4/timpush` (timpush.md §5): each read back through
//! itself and through the classic commands (one store per app, §11), the faults of the whole
//! request (which change nothing) and those of one account (`ErrorList`, the rest applied), the
//! limits, account kinds, device tokens as `To_Account`, and durability.

use std::time::Duration;

use crier_client::{Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::harness::*;
use crate::observe::*;
use crate::process::*;

const T_SET_ATTR_NAME: &str = "timpush/set_attr_name";
const T_GET_ATTR_NAME: &str = "timpush/get_attr_name";
const T_SET_ATTR: &str = "timpush/set_attr";
const T_GET_ATTR: &str = "timpush/get_attr";
const T_REMOVE_ATTR: &str = "timpush/remove_attr";
const T_ADD_TAG: &str = "timpush/add_tag";
const T_GET_TAG: &str = "timpush/get_tag";
const T_REMOVE_TAG: &str = "timpush/remove_tag";
const T_CLEAR_ALL_TAGS: &str = "timpush/clear_all_tags";
const ACCOUNT_INFO: &str = "crier/account_info";
const AUDIENCE_COUNT: &str = "crier/audience_count";

/// Asserts a fully successful answer: the envelope and nothing else but `fields`.
async fn ok_without_errors(admin: &Admin<'_>, path: &str, body: Value) -> Value {
    let answer = admin.ok(path, body).await;
    assert!(
        answer.get("ErrorList").is_none(),
        "{path}: ErrorList is left out when empty: {answer}"
    );
    answer
}

/// Asserts success with exactly these per-account faults (`To_Account`, `ErrorCode`), each
/// with an `ErrorInfo`.
async fn ok_with_errors(
    admin: &Admin<'_>,
    path: &str,
    body: Value,
    expected: &[(&str, u32)],
) -> Value {
    let answer = admin.ok(path, body).await;
    let list = answer["ErrorList"].as_array().unwrap_or_else(|| {
        panic!("{path}: expected an ErrorList: {answer}");
    });
    let got: Vec<(String, u64)> = list
        .iter()
        .map(|item| {
            assert!(
                !item["ErrorInfo"].as_str().unwrap().is_empty(),
                "{path}: {item}"
            );
            (
                item["To_Account"].as_str().unwrap().to_owned(),
                item["ErrorCode"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(account, code)| (account.to_string(), u64::from(*code)))
        .collect();
    assert_eq!(got, expected, "{path}: {answer}");
    answer
}

/// Everything these commands could change about `accounts`: the classic view (tags,
/// attributes, import status, attribute names) and the attribute kinds.
async fn full_state(admin: &Admin<'_>, accounts: &[&str]) -> Value {
    json!({
        "classic": state_of(admin, accounts).await,
        "kinds": admin.ok(T_GET_ATTR_NAME, json!({})).await["AttrTypes"],
    })
}

/// Asserts that `body` fails on `path` with `code` and changes nothing about `accounts`.
async fn refused(
    admin: &Admin<'_>,
    path: &str,
    body: Value,
    code: u32,
    accounts: &[&str],
) -> Value {
    let before = full_state(admin, accounts).await;
    let answer = admin.fails(path, body.clone(), code).await;
    assert!(answer.get("ErrorList").is_none(), "{path}: {answer}");
    assert_eq!(
        full_state(admin, accounts).await,
        before,
        "{path} {body} failed but changed the state: {answer}"
    );
    answer
}

/// Tags of `account` through the timpush read, sorted.
async fn timpush_tags(admin: &Admin<'_>, account: &str) -> Vec<String> {
    let answer = ok_without_errors(admin, T_GET_TAG, json!({"To_Account": [account]})).await;
    assert_eq!(answer["UserTags"][0]["To_Account"], account);
    let mut tags: Vec<String> =
        serde_json::from_value(answer["UserTags"][0]["Tags"].clone()).unwrap();
    tags.sort();
    tags
}

async fn timpush_attrs(admin: &Admin<'_>, account: &str) -> Value {
    let answer = ok_without_errors(admin, T_GET_ATTR, json!({"To_Account": [account]})).await;
    assert_eq!(answer["UserAttrs"][0]["To_Account"], account);
    answer["UserAttrs"][0]["Attrs"].clone()
}

/// Whether the server knows `account` at all (imported, logged in, or named by a write).
async fn known(admin: &Admin<'_>, account: &str) -> bool {
    let answer = admin.call(ACCOUNT_INFO, json!({"UserID": account})).await;
    match answer["ErrorCode"].as_u64().unwrap() {
        0 => true,
        70107 => false,
        other => panic!("account_info answered {other}: {answer}"),
    }
}

/// A server whose app has alice, bob and carol, slots `sex` (0) and `city` (1) for UserIDs
/// and `model` (2) for RegistrationIDs.
async fn server_with_three_accounts() -> TestServer {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["alice", "bob", "carol"]).await;
    ok_without_errors(
        &admin,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"0": "sex", "1": "city", "2": "model"}, "AttrTypes": {"0": 0, "2": 1}}),
    )
    .await;
    server
}

#[tokio::test]
async fn attr_names_and_types_are_read_back_through_both_families() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let answer = ok_without_errors(&admin, T_GET_ATTR_NAME, json!({})).await;
    assert_eq!(
        answer["AttrNames"],
        json!({"0": "sex", "1": "city", "2": "model"})
    );
    assert_eq!(answer["AttrTypes"], json!({"0": 0, "1": 0, "2": 1}));
    let classic = admin.ok(GET_ATTR_NAME, json!({})).await;
    assert_eq!(classic["AttrNames"], answer["AttrNames"]);
    assert!(classic.get("AttrTypes").is_none(), "{classic}");

    // A classic rename keeps the slot's type; a new classic slot is for UserIDs.
    admin
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"2": "device", "3": "tier"}}),
        )
        .await;
    let answer = admin.ok(T_GET_ATTR_NAME, json!({})).await;
    assert_eq!(
        answer["AttrNames"],
        json!({"0": "sex", "1": "city", "2": "device", "3": "tier"})
    );
    assert_eq!(answer["AttrTypes"], json!({"0": 0, "1": 0, "2": 1, "3": 0}));

    // Renaming with the type the slot has, and naming a new slot without a type.
    ok_without_errors(
        &admin,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"2": "handset", "4": "age"}, "AttrTypes": {"2": 1}}),
    )
    .await;
    let answer = admin.ok(T_GET_ATTR_NAME, json!({})).await;
    assert_eq!(answer["AttrNames"]["2"], "handset");
    assert_eq!(
        answer["AttrTypes"],
        json!({"0": 0, "1": 0, "2": 1, "3": 0, "4": 0})
    );
    // The array form of the classic command is accepted too.
    ok_without_errors(
        &admin,
        T_SET_ATTR_NAME,
        json!({"AttrNames": [null, null, null, null, null, "lang"], "AttrTypes": {"5": 1}}),
    )
    .await;
    assert_eq!(
        admin.ok(T_GET_ATTR_NAME, json!({})).await["AttrTypes"]["5"],
        1
    );
}

#[tokio::test]
async fn set_attr_name_refusals_change_nothing() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let accounts = ["alice"];
    let answer = refused(
        &admin,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"4": "city"}}),
        90033,
        &accounts,
    )
    .await;
    assert!(
        answer["ErrorInfo"]
            .as_str()
            .unwrap()
            .starts_with("attrName:city already exists at index:1"),
        "{answer}"
    );
    for body in [
        json!({"AttrNames": {"10": "x"}}),
        json!({"AttrNames": {"x": "x"}}),
        json!({"AttrNames": {"4": ""}}),
        json!({"AttrNames": {"4": "n".repeat(51)}}),
        json!({"AttrNames": {"4": 5}}),
        json!({"AttrNames": "sex"}),
        // A good slot beside a bad one: neither is written.
        json!({"AttrNames": {"4": "x", "5": "sex"}}),
        json!({"AttrNames": {"4": "x", "5": "x"}}),
        json!({"AttrNames": {"4": "x"}, "AttrTypes": {"5": 0}}),
        json!({"AttrNames": {"4": "x"}, "AttrTypes": {"4": 2}}),
        json!({"AttrNames": {"4": "x"}, "AttrTypes": {"4": "1"}}),
        json!({"AttrNames": {"4": "x"}, "AttrTypes": [0]}),
        // A slot's type cannot change once set.
        json!({"AttrNames": {"0": "sex"}, "AttrTypes": {"0": 1}}),
        json!({"AttrNames": {"2": "model"}, "AttrTypes": {"2": 0}}),
        json!({"AttrNames": {"4": "x", "2": "model"}, "AttrTypes": {"4": 1, "2": 0}}),
    ] {
        refused(&admin, T_SET_ATTR_NAME, body, 90033, &accounts).await;
    }
    refused(
        &admin,
        T_SET_ATTR_NAME,
        json!({"AttrTypes": {"0": 0}}),
        90001,
        &accounts,
    )
    .await;
    refused(&admin, T_SET_ATTR_NAME, json!(["sex"]), 90001, &accounts).await;
    let not_json = server
        .post_raw(T_SET_ATTR_NAME, &admin.query, "{\"AttrNames\": {\"4\": ")
        .await;
    assert_eq!(not_json["ErrorCode"], 90001, "{not_json}");
    let alice = server.admin_of(APP, KEY, "alice");
    alice
        .fails(T_SET_ATTR_NAME, json!({"AttrNames": {"4": "x"}}), 90009)
        .await;
    alice.fails(T_GET_ATTR_NAME, json!({}), 90009).await;
    assert_eq!(
        admin.ok(T_GET_ATTR_NAME, json!({})).await["AttrNames"],
        json!({"0": "sex", "1": "city", "2": "model"})
    );
}

#[tokio::test]
async fn set_attr_writes_every_known_account_and_lists_the_unknown_ones() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let answer = ok_with_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[
            ("alice", json!({"city": "sz", "sex": "f"})),
            ("ghost", json!({"city": "bj"})),
            ("bob", json!({"city": "bj"})),
        ]),
        &[("ghost", 70107)],
    )
    .await;
    assert!(answer["ErrorList"][0]["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("ghost"));
    assert!(
        !known(&admin, "ghost").await,
        "nothing is written for an unknown account"
    );

    let answer = ok_with_errors(
        &admin,
        T_GET_ATTR,
        json!({"To_Account": ["alice", "ghost", "bob", "carol"]}),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(
        answer["UserAttrs"],
        json!([
            {"To_Account": "alice", "Attrs": {"city": "sz", "sex": "f"}},
            {"To_Account": "bob", "Attrs": {"city": "bj"}},
            {"To_Account": "carol", "Attrs": {}},
        ])
    );
    // The classic read sees the same; a classic write is seen by the timpush read.
    assert_eq!(
        attrs_of(&admin, "alice").await,
        json!({"city": "sz", "sex": "f"})
    );
    admin
        .ok(SET_ATTR, user_attrs(&[("bob", json!({"sex": "m"}))]))
        .await;
    assert_eq!(
        timpush_attrs(&admin, "bob").await,
        json!({"city": "bj", "sex": "m"})
    );
    // The same account twice: in order, the later value wins.
    ok_without_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[
            ("carol", json!({"city": "gz"})),
            ("carol", json!({"city": "sh"})),
        ]),
    )
    .await;
    assert_eq!(attrs_of(&admin, "carol").await, json!({"city": "sh"}));
    // Every account unknown: still OK, nothing written.
    ok_with_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[
            ("ghost", json!({"city": "bj"})),
            ("nobody", json!({"city": "bj"})),
        ]),
        &[("ghost", 70107), ("nobody", 70107)],
    )
    .await;
    let answer = ok_with_errors(
        &admin,
        T_GET_ATTR,
        json!({"To_Account": ["ghost"]}),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(answer["UserAttrs"], json!([]));
    // What an attribute audience sees.
    let count = admin
        .ok(
            AUDIENCE_COUNT,
            json!({"Condition": {"AttrsAnd": {"city": "sh"}}}),
        )
        .await;
    assert_eq!(count["Count"], 1);
}

#[tokio::test]
async fn set_attr_and_get_attr_refusals_of_the_whole_request_change_nothing() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    ok_without_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[("alice", json!({"city": "sz"}))]),
    )
    .await;
    let accounts = ["alice", "bob", "ghost"];
    refused(
        &admin,
        T_SET_ATTR,
        many_user_attrs(101, json!({"city": "x"})),
        90018,
        &accounts,
    )
    .await;
    // Faults of the request outrank those of an account: nothing is written for bob either.
    for (attrs, code) in [
        (json!({"town": "x"}), 90033),
        (json!(["city"]), 90033),
        (json!({"city": ""}), 90030),
        (json!({"city": "v".repeat(51)}), 90030),
        (json!({"city": 5}), 90030),
    ] {
        let body = user_attrs(&[
            ("bob", json!({"city": "bj"})),
            ("ghost", json!({"city": "x"})),
            ("alice", attrs),
        ]);
        refused(&admin, T_SET_ATTR, body, code, &accounts).await;
    }
    refused(
        &admin,
        T_SET_ATTR,
        json!({"UserAttrs": [{"To_Account": 5, "Attrs": {"city": "x"}}]}),
        90001,
        &accounts,
    )
    .await;
    refused(
        &admin,
        T_SET_ATTR,
        json!({"UserAttrs": [{"Attrs": {"city": "x"}}]}),
        90001,
        &accounts,
    )
    .await;
    refused(
        &admin,
        T_SET_ATTR,
        json!({"UserAttrs": [{"To_Account": "bob"}]}),
        90001,
        &accounts,
    )
    .await;
    refused(&admin, T_SET_ATTR, json!({}), 90001, &accounts).await;
    admin
        .fails(T_GET_ATTR, json!({"To_Account": names("u", 101)}), 90018)
        .await;
    admin
        .fails(T_GET_ATTR, json!({"To_Account": "alice"}), 90001)
        .await;
    admin
        .fails(T_GET_ATTR, json!({"To_Account": [5]}), 90001)
        .await;
    admin.fails(T_GET_ATTR, json!({}), 90001).await;
    let alice = server.admin_of(APP, KEY, "alice");
    alice
        .fails(
            T_SET_ATTR,
            user_attrs(&[("alice", json!({"city": "x"}))]),
            90009,
        )
        .await;
    alice
        .fails(T_GET_ATTR, json!({"To_Account": ["alice"]}), 90009)
        .await;
    let not_json = server
        .post_raw(T_SET_ATTR, &admin.query, "{\"UserAttrs\": [")
        .await;
    assert_eq!(not_json["ErrorCode"], 90001, "{not_json}");
    assert_eq!(attrs_of(&admin, "alice").await, json!({"city": "sz"}));
    // 100 accounts is the limit, not past it.
    admin
        .import(
            &names("u", 100)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await;
    ok_without_errors(
        &admin,
        T_SET_ATTR,
        many_user_attrs(100, json!({"city": "x"})),
    )
    .await;
    let answer =
        ok_without_errors(&admin, T_GET_ATTR, json!({"To_Account": names("u", 100)})).await;
    assert_eq!(answer["UserAttrs"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn an_attribute_for_registration_ids_cannot_be_written_for_a_user_id() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    // Per item: alice's whole item is refused, bob's applied.
    let answer = ok_with_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[
            ("alice", json!({"city": "sz", "model": "pixel"})),
            ("bob", json!({"city": "bj"})),
        ]),
        &[("alice", 90035)],
    )
    .await;
    assert!(answer["ErrorList"][0]["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("model"));
    assert_eq!(timpush_attrs(&admin, "alice").await, json!({}));
    assert_eq!(timpush_attrs(&admin, "bob").await, json!({"city": "bj"}));
    // The classic command, all or nothing, refuses the whole request.
    refused(
        &admin,
        SET_ATTR,
        user_attrs(&[
            ("bob", json!({"sex": "m"})),
            ("alice", json!({"model": "pixel"})),
        ]),
        90035,
        &["alice", "bob"],
    )
    .await;
}

#[tokio::test]
async fn remove_attr_removes_for_known_accounts_and_lists_the_unknown_ones() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let both = json!({"city": "sz", "sex": "f"});
    ok_without_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[("alice", both.clone()), ("bob", both.clone())]),
    )
    .await;
    ok_with_errors(
        &admin,
        T_REMOVE_ATTR,
        user_attrs(&[("alice", json!(["city"])), ("ghost", json!(["city"]))]),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(attrs_of(&admin, "alice").await, json!({"sex": "f"}));
    assert!(!known(&admin, "ghost").await);
    // A classic removal is seen by the timpush read.
    admin
        .ok(REMOVE_ATTR, user_attrs(&[("bob", json!(["sex"]))]))
        .await;
    assert_eq!(timpush_attrs(&admin, "bob").await, json!({"city": "sz"}));
    ok_without_errors(
        &admin,
        T_REMOVE_ATTR,
        user_attrs(&[("bob", json!(["city", "sex"]))]),
    )
    .await;
    assert_eq!(attrs_of(&admin, "bob").await, json!({}));

    let accounts = ["alice", "ghost"];
    refused(
        &admin,
        T_REMOVE_ATTR,
        many_user_attrs(101, json!(["sex"])),
        90018,
        &accounts,
    )
    .await;
    for attrs in [
        json!(["town"]),
        json!(["sex", "town"]),
        json!({"sex": "f"}),
        json!([5]),
    ] {
        let body = user_attrs(&[("ghost", json!(["sex"])), ("alice", attrs)]);
        refused(&admin, T_REMOVE_ATTR, body, 90033, &accounts).await;
    }
    refused(
        &admin,
        T_REMOVE_ATTR,
        json!({"UserAttrs": [{"To_Account": ["alice"], "Attrs": ["sex"]}]}),
        90001,
        &accounts,
    )
    .await;
    refused(&admin, T_REMOVE_ATTR, json!({}), 90001, &accounts).await;
    server
        .admin_of(APP, KEY, "alice")
        .fails(
            T_REMOVE_ATTR,
            user_attrs(&[("alice", json!(["sex"]))]),
            90009,
        )
        .await;
    assert_eq!(attrs_of(&admin, "alice").await, json!({"sex": "f"}));
}

#[tokio::test]
async fn add_tag_adds_or_replaces_and_both_families_read_it_back() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    ok_without_errors(
        &admin,
        T_ADD_TAG,
        user_tags(&[("alice", &["a", "b"]), ("bob", &["b"])]),
    )
    .await;
    let answer = ok_with_errors(
        &admin,
        T_GET_TAG,
        json!({"To_Account": ["alice", "ghost", "bob", "carol"]}),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(
        answer["UserTags"],
        json!([
            {"To_Account": "alice", "Tags": ["a", "b"]},
            {"To_Account": "bob", "Tags": ["b"]},
            {"To_Account": "carol", "Tags": []},
        ])
    );
    // Replace 0 (also the default) adds; a held tag is a no-op.
    let mut body = user_tags(&[("alice", &["c", "a"])]);
    body["Replace"] = json!(0);
    ok_without_errors(&admin, T_ADD_TAG, body).await;
    assert_eq!(sorted_tags(&admin, "alice").await, ["a", "b", "c"]);
    // Replace 1 replaces every tag of the account.
    let mut body = user_tags(&[("alice", &["d", "b"]), ("ghost", &["d"])]);
    body["Replace"] = json!(1);
    ok_with_errors(&admin, T_ADD_TAG, body, &[("ghost", 70107)]).await;
    assert_eq!(sorted_tags(&admin, "alice").await, ["b", "d"]);
    assert!(!known(&admin, "ghost").await);
    assert_eq!(timpush_tags(&admin, "bob").await, ["b"]);
    // A classic write is seen by the timpush read, and pushes see both.
    admin.ok(ADD_TAG, user_tags(&[("bob", &["x"])])).await;
    assert_eq!(timpush_tags(&admin, "bob").await, ["b", "x"]);
    let count = admin
        .ok(AUDIENCE_COUNT, json!({"Condition": {"TagsAnd": ["b"]}}))
        .await;
    assert_eq!(count["Count"], 2);
    let count = admin
        .ok(AUDIENCE_COUNT, json!({"Condition": {"TagsOr": ["a", "c"]}}))
        .await;
    assert_eq!(count["Count"], 0, "alice's replaced tags are gone");
    // Replace 1 takes up to 100 tags in one item, and an empty list clears.
    let hundred = names("t", 100);
    let mut body = json!({"Replace": 1, "UserTags": [{"To_Account": "carol", "Tags": hundred}]});
    ok_without_errors(&admin, T_ADD_TAG, body.clone()).await;
    assert_eq!(admin.tags_of("carol").await.as_array().unwrap().len(), 100);
    body["UserTags"][0]["Tags"] = json!([]);
    ok_without_errors(&admin, T_ADD_TAG, body).await;
    assert_eq!(timpush_tags(&admin, "carol").await, Vec::<String>::new());
}

#[tokio::test]
async fn add_tag_refusals_of_the_whole_request_change_nothing() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    ok_without_errors(&admin, T_ADD_TAG, user_tags(&[("alice", &["a"])])).await;
    let accounts = ["alice", "bob", "ghost"];
    let eleven = names("t", 11);
    let refuse = |replace: Value, tags: Value| {
        json!({"Replace": replace, "UserTags": [
            {"To_Account": "bob", "Tags": ["b"]},
            {"To_Account": "ghost", "Tags": ["b"]},
            {"To_Account": "alice", "Tags": tags},
        ]})
    };
    for (body, code) in [
        (refuse(json!(0), json!(eleven)), 90032),
        (refuse(json!(1), json!(names("t", 101))), 90032),
        (refuse(json!(0), json!(["ok", ""])), 90040),
        (refuse(json!(1), json!(["t".repeat(51)])), 90020),
        (refuse(json!(0), json!("a")), 90001),
        (refuse(json!(2), json!(["a"])), 90001),
        (refuse(json!("1"), json!(["a"])), 90001),
        (refuse(json!(-1), json!(["a"])), 90001),
        (many_user_tags(101, json!(["a"])), 90018),
        (
            json!({"UserTags": [{"To_Account": 7, "Tags": ["a"]}]}),
            90001,
        ),
        (json!({"Replace": 1}), 90001),
    ] {
        refused(&admin, T_ADD_TAG, body, code, &accounts).await;
    }
    // Ten tags in an item is the limit with Replace 0, a hundred with Replace 1.
    let mut ten = user_tags(&[("bob", &[])]);
    ten["UserTags"][0]["Tags"] = json!(names("t", 10));
    ok_without_errors(&admin, T_ADD_TAG, ten).await;
    let alice = server.admin_of(APP, KEY, "alice");
    alice
        .fails(T_ADD_TAG, user_tags(&[("alice", &["x"])]), 90009)
        .await;
    alice
        .fails(T_GET_TAG, json!({"To_Account": ["alice"]}), 90009)
        .await;
    let not_json = server.post_raw(T_ADD_TAG, &admin.query, "UserTags").await;
    assert_eq!(not_json["ErrorCode"], 90001, "{not_json}");
    admin
        .fails(T_GET_TAG, json!({"To_Account": names("u", 101)}), 90018)
        .await;
    admin
        .fails(T_GET_TAG, json!({"To_Account": [["alice"]]}), 90001)
        .await;
    assert_eq!(timpush_tags(&admin, "alice").await, ["a"]);
}

#[tokio::test]
async fn an_account_past_100_tags_is_90032_for_its_item_alone() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let ninety_five = names("t", 95);
    ok_without_errors(
        &admin,
        T_ADD_TAG,
        json!({"Replace": 1, "UserTags": [{"To_Account": "alice", "Tags": ninety_five}]}),
    )
    .await;
    // 95 + 5 is the cap; the next item's 1 more is past it, and bob's item is applied.
    let answer = ok_with_errors(
        &admin,
        T_ADD_TAG,
        json!({"UserTags": [
            {"To_Account": "alice", "Tags": names("n", 5)},
            {"To_Account": "alice", "Tags": ["one-more"]},
            {"To_Account": "bob", "Tags": ["b"]},
        ]}),
        &[("alice", 90032)],
    )
    .await;
    assert!(answer["ErrorList"][0]["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("100"));
    let alice = timpush_tags(&admin, "alice").await;
    assert_eq!(alice.len(), 100);
    assert!(!alice.contains(&"one-more".to_owned()));
    assert_eq!(sorted_tags(&admin, "bob").await, ["b"]);
}

#[tokio::test]
async fn an_app_past_1000_distinct_tags_is_90032_for_the_item_that_adds_one() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let accounts = names("u", 100);
    admin
        .import(&accounts.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    // 100 accounts × 10 tags of their own: 1,000 distinct tags.
    let items: Vec<Value> = (0..100)
        .map(|n| json!({"To_Account": format!("u{n}"), "Tags": (0..10).map(|t| format!("t{}", n * 10 + t)).collect::<Vec<_>>()}))
        .collect();
    ok_without_errors(&admin, T_ADD_TAG, json!({ "UserTags": items })).await;
    let answer = ok_with_errors(
        &admin,
        T_ADD_TAG,
        json!({"UserTags": [
            {"To_Account": "u0", "Tags": ["new"]},
            {"To_Account": "u1", "Tags": ["t0", "t5"]},
        ]}),
        &[("u0", 90032)],
    )
    .await;
    assert!(answer["ErrorList"][0]["ErrorInfo"]
        .as_str()
        .unwrap()
        .contains("1000"));
    assert!(!sorted_tags(&admin, "u0").await.contains(&"new".to_owned()));
    assert!(sorted_tags(&admin, "u1").await.contains(&"t5".to_owned()));
    // Replacing an account's own ten tags frees them for ten others, in one item.
    ok_without_errors(
        &admin,
        T_ADD_TAG,
        json!({"Replace": 1, "UserTags": [{"To_Account": "u99", "Tags": names("fresh", 10)}]}),
    )
    .await;
    // Once nobody holds t980..t989, a new tag fits.
    ok_without_errors(&admin, T_CLEAR_ALL_TAGS, json!({"To_Account": ["u98"]})).await;
    ok_without_errors(&admin, T_ADD_TAG, user_tags(&[("u0", &["new"])])).await;
    assert!(sorted_tags(&admin, "u0").await.contains(&"new".to_owned()));
}

#[tokio::test]
async fn remove_tag_and_clear_all_tags_list_the_unknown_accounts_and_apply_the_rest() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    ok_without_errors(
        &admin,
        T_ADD_TAG,
        user_tags(&[("alice", &["a", "b", "c"]), ("bob", &["a", "b"])]),
    )
    .await;
    ok_with_errors(
        &admin,
        T_REMOVE_TAG,
        user_tags(&[("alice", &["a", "never-held"]), ("ghost", &["a"])]),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(sorted_tags(&admin, "alice").await, ["b", "c"]);
    ok_with_errors(
        &admin,
        T_CLEAR_ALL_TAGS,
        json!({"To_Account": ["bob", "ghost"]}),
        &[("ghost", 70107)],
    )
    .await;
    assert_eq!(sorted_tags(&admin, "bob").await, Vec::<String>::new());
    assert!(!known(&admin, "ghost").await);
    // Classic removals are seen by the timpush read.
    admin.ok(REMOVE_TAG, user_tags(&[("alice", &["b"])])).await;
    assert_eq!(timpush_tags(&admin, "alice").await, ["c"]);

    let accounts = ["alice", "bob"];
    for (body, code) in [
        (user_tags(&[("ghost", &["c"]), ("alice", &[""])]), 90040),
        (
            json!({"UserTags": [{"To_Account": "alice", "Tags": ["c".repeat(51)]}]}),
            90020,
        ),
        (many_user_tags(101, json!(["c"])), 90018),
        (
            json!({"UserTags": [{"To_Account": "alice", "Tags": "c"}]}),
            90001,
        ),
        (json!({}), 90001),
    ] {
        refused(&admin, T_REMOVE_TAG, body, code, &accounts).await;
    }
    for (body, code) in [
        (json!({"To_Account": names("u", 101)}), 90018),
        (json!({"To_Account": "alice"}), 90001),
        (json!({"To_Account": ["alice", 5]}), 90001),
        (json!({}), 90001),
    ] {
        refused(&admin, T_CLEAR_ALL_TAGS, body, code, &accounts).await;
    }
    let alice = server.admin_of(APP, KEY, "alice");
    alice
        .fails(T_REMOVE_TAG, user_tags(&[("alice", &["c"])]), 90009)
        .await;
    alice
        .fails(T_CLEAR_ALL_TAGS, json!({"To_Account": ["alice"]}), 90009)
        .await;
    assert_eq!(timpush_tags(&admin, "alice").await, ["c"]);
    ok_without_errors(&admin, T_CLEAR_ALL_TAGS, json!({"To_Account": ["alice"]})).await;
    assert_eq!(admin.tags_of("alice").await, json!([]));
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

#[tokio::test]
async fn a_registered_device_token_stands_for_the_account_that_registered_it() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let token = "https://device.example/alice-phone";
    let mut alice = Connection::connect(&LoginOptions {
        platform: Some("Android".into()),
        ..server.login_options("alice")
    })
    .await
    .unwrap();
    alice
        .send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: token.into(),
        })
        .await
        .unwrap();
    settled(&mut alice).await;

    ok_with_errors(
        &admin,
        T_ADD_TAG,
        user_tags(&[
            (token, &["phone-owner"]),
            ("https://device.example/unknown", &["x"]),
        ]),
        &[("https://device.example/unknown", 70107)],
    )
    .await;
    assert_eq!(sorted_tags(&admin, "alice").await, ["phone-owner"]);
    let answer = ok_without_errors(&admin, T_GET_TAG, json!({"To_Account": [token]})).await;
    assert_eq!(
        answer["UserTags"],
        json!([{"To_Account": token, "Tags": ["phone-owner"]}])
    );
    ok_without_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[(token, json!({"city": "sz"}))]),
    )
    .await;
    assert_eq!(attrs_of(&admin, "alice").await, json!({"city": "sz"}));
    assert_eq!(timpush_attrs(&admin, token).await, json!({"city": "sz"}));
    // Every account Crier knows is a UserID, reached by name or by device token alike.
    ok_with_errors(
        &admin,
        T_SET_ATTR,
        user_attrs(&[(token, json!({"model": "pixel"}))]),
        &[(token, 90035)],
    )
    .await;
    ok_without_errors(
        &admin,
        T_REMOVE_ATTR,
        user_attrs(&[(token, json!(["city"]))]),
    )
    .await;
    ok_without_errors(&admin, T_CLEAR_ALL_TAGS, json!({"To_Account": [token]})).await;
    assert_eq!(attrs_of(&admin, "alice").await, json!({}));
    assert_eq!(admin.tags_of("alice").await, json!([]));
    // Unregistered, the token names nobody.
    alice
        .send(&ClientFrame::UnregisterDevice {
            platform: "webhook".into(),
            token: token.into(),
        })
        .await
        .unwrap();
    settled(&mut alice).await;
    ok_with_errors(
        &admin,
        T_GET_TAG,
        json!({"To_Account": [token]}),
        &[(token, 70107)],
    )
    .await;
}

#[tokio::test]
async fn each_command_takes_at_most_100_calls_a_second_per_app() {
    let server = server_with_three_accounts().await;
    let admin = server.admin();
    let call = |n: usize| {
        let admin = &admin;
        async move {
            let body = json!({"Replace": 1, "UserTags": [{"To_Account": "alice", "Tags": [format!("t{n}")]}]});
            (n, admin.call(T_ADD_TAG, body).await)
        }
    };
    let (mut accepted, mut refusal) = (Vec::new(), None);
    // Sent 150 at a time, so that more than 100 arrive within one second however slowly
    // each is written.
    for batch in 0..10 {
        let answers = futures_util::future::join_all((0..150).map(|i| call(batch * 150 + i))).await;
        for (n, answer) in answers {
            match answer["ErrorCode"].as_u64().unwrap() {
                0 => accepted.push(format!("t{n}")),
                90024 => refusal = Some(answer),
                _ => panic!("{answer}"),
            }
        }
        if refusal.is_some() {
            break;
        }
    }
    let refusal = refusal.expect("1,500 calls in quick succession were all accepted");
    let info = refusal["ErrorInfo"].as_str().unwrap();
    assert!(
        info.contains("add_tag") && info.contains("100"),
        "{refusal}"
    );
    assert_eq!(refusal["ActionStatus"], "FAIL");
    assert!(
        accepted.len() >= 100,
        "refused after {} calls",
        accepted.len()
    );
    // The refused calls changed nothing: alice holds the tag of an accepted one.
    let tags = admin.tags_of("alice").await;
    assert_eq!(tags.as_array().unwrap().len(), 1);
    assert!(
        accepted.contains(&tags[0].as_str().unwrap().to_owned()),
        "{tags}"
    );
    // Another command has a window of its own (unless the second just turned, it is full now
    // for add_tag only).
    ok_without_errors(&admin, T_GET_TAG, json!({"To_Account": ["alice"]})).await;
    // The window is a second: the command is accepted again after it.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ok_without_errors(&admin, T_ADD_TAG, user_tags(&[("alice", &["later"])])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kinds_attributes_and_tags_survive_kill_9_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), "");

    // Phase 1: written, then a graceful stop (which writes a snapshot).
    let server = ServerProcess::start(&config, &data);
    admin_ok(
        &server.base,
        IMPORT_MANY,
        json!({"Accounts": ["alice", "bob"]}),
    )
    .await;
    admin_ok(
        &server.base,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"0": "city", "1": "model"}, "AttrTypes": {"1": 1}}),
    )
    .await;
    admin_ok(
        &server.base,
        T_SET_ATTR,
        user_attrs(&[("alice", json!({"city": "sz"}))]),
    )
    .await;
    admin_ok(
        &server.base,
        T_ADD_TAG,
        user_tags(&[("alice", &["a", "b"])]),
    )
    .await;
    assert!(server.terminate().success());

    // Phase 2: written after the snapshot (only the log has it), then kill -9.
    let server = ServerProcess::start(&config, &data);
    admin_ok(
        &server.base,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"2": "imei", "3": "tier"}, "AttrTypes": {"2": 1, "3": 0}}),
    )
    .await;
    admin_ok(
        &server.base,
        T_ADD_TAG,
        json!({"Replace": 1, "UserTags": [{"To_Account": "alice", "Tags": ["c"]}, {"To_Account": "bob", "Tags": ["d"]}]}),
    )
    .await;
    admin_ok(
        &server.base,
        T_SET_ATTR,
        user_attrs(&[("bob", json!({"tier": "gold"}))]),
    )
    .await;
    server.kill_9();

    // Phase 3: everything acknowledged is there, and the kinds still bind.
    let server = ServerProcess::start(&config, &data);
    let names = admin_ok(&server.base, T_GET_ATTR_NAME, json!({})).await;
    assert_eq!(
        names["AttrNames"],
        json!({"0": "city", "1": "model", "2": "imei", "3": "tier"})
    );
    assert_eq!(names["AttrTypes"], json!({"0": 0, "1": 1, "2": 1, "3": 0}));
    let tags = admin_ok(
        &server.base,
        T_GET_TAG,
        json!({"To_Account": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(
        tags["UserTags"],
        json!([{"To_Account": "alice", "Tags": ["c"]}, {"To_Account": "bob", "Tags": ["d"]}])
    );
    let attrs = admin_ok(
        &server.base,
        T_GET_ATTR,
        json!({"To_Account": ["alice", "bob"]}),
    )
    .await;
    assert_eq!(
        attrs["UserAttrs"],
        json!([{"To_Account": "alice", "Attrs": {"city": "sz"}}, {"To_Account": "bob", "Attrs": {"tier": "gold"}}])
    );
    let changed = admin_call(
        &server.base,
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"2": "imei"}, "AttrTypes": {"2": 0}}),
    )
    .await;
    assert_eq!(changed["ErrorCode"], 90033, "{changed}");
    let answer = admin_ok(
        &server.base,
        T_SET_ATTR,
        user_attrs(&[("bob", json!({"imei": "x"}))]),
    )
    .await;
    assert_eq!(answer["ErrorList"][0]["ErrorCode"], 90035, "{answer}");
    server.kill_9();
}

/// Polls `path` on `server` until `check` accepts the answer, for up to 5 s.
async fn eventually(
    server: &TestServer,
    path: &str,
    body: Value,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server.admin().ok(path, body.clone()).await;
        if check(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{path} never settled: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kinds_tags_and_device_tokens_reach_every_node_of_a_cluster() {
    let Some(cluster) = Cluster::new().await else {
        return;
    };
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    a.admin().import(&["alice", "bob"]).await;
    ok_without_errors(
        &a.admin(),
        T_SET_ATTR_NAME,
        json!({"AttrNames": {"0": "city", "1": "model"}, "AttrTypes": {"1": 1}}),
    )
    .await;
    let token = "https://device.example/alice-on-a";
    let mut alice = Connection::connect(&LoginOptions {
        platform: Some("Android".into()),
        ..a.login_options("alice")
    })
    .await
    .unwrap();
    alice
        .send(&ClientFrame::RegisterDevice {
            platform: "webhook".into(),
            token: token.into(),
        })
        .await
        .unwrap();
    settled(&mut alice).await;

    // B learns the kinds from the log, and the token from A's announcement.
    eventually(&b, T_GET_ATTR_NAME, json!({}), |answer| {
        answer["AttrTypes"] == json!({"0": 0, "1": 1})
    })
    .await;
    eventually(&b, T_GET_TAG, json!({"To_Account": [token]}), |answer| {
        answer.get("ErrorList").is_none()
    })
    .await;
    ok_without_errors(&b.admin(), T_ADD_TAG, user_tags(&[(token, &["from-b"])])).await;
    ok_with_errors(
        &b.admin(),
        T_SET_ATTR,
        user_attrs(&[
            (token, json!({"model": "pixel"})),
            ("bob", json!({"city": "sz"})),
        ]),
        &[(token, 90035)],
    )
    .await;
    let refused = b
        .admin()
        .call(
            T_SET_ATTR_NAME,
            json!({"AttrNames": {"1": "model"}, "AttrTypes": {"1": 0}}),
        )
        .await;
    assert_eq!(refused["ErrorCode"], 90033, "{refused}");
    eventually(&a, T_GET_TAG, json!({"To_Account": ["alice"]}), |answer| {
        answer["UserTags"][0]["Tags"] == json!(["from-b"])
    })
    .await;

    // A node started now loads all of it from PostgreSQL.
    drop(alice);
    b.stop().await;
    let c = cluster.node("c").await;
    let names = c.admin().ok(T_GET_ATTR_NAME, json!({})).await;
    assert_eq!(names["AttrTypes"], json!({"0": 0, "1": 1}));
    assert_eq!(
        timpush_attrs(&c.admin(), "bob").await,
        json!({"city": "sz"})
    );
    assert_eq!(timpush_tags(&c.admin(), token).await, ["from-b"]);
}
