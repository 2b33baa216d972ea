//! Accounts: account_import, multiaccount_import, account_delete, account_check, kick and
//! query_online_status (rest-api.md §4).

use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

/// Account names of 33 bytes: ASCII, and 11 three-byte characters.
fn too_long() -> [String; 2] {
    ["n".repeat(33), "帐".repeat(11)]
}

#[tokio::test]
async fn account_import_takes_user_id_or_the_legacy_identifier() {
    let server = TestServer::start().await;
    let admin = server.admin();
    assert_eq!(status_of(&admin, "a").await, "NotImported");
    admin
        .ok(
            IMPORT,
            json!({"UserID": "a", "Nick": "Alice", "FaceUrl": "https://example.com/a.png"}),
        )
        .await;
    admin.ok(IMPORT, json!({"Identifier": "b"})).await;
    assert_eq!(status_of(&admin, "a").await, "Imported");
    assert_eq!(status_of(&admin, "b").await, "Imported");
}

#[tokio::test]
async fn an_account_name_is_1_to_32_bytes() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let longest = "n".repeat(32);
    admin.ok(IMPORT, json!({ "UserID": longest })).await;
    admin.ok(IMPORT, json!({ "UserID": "帐".repeat(10) })).await;
    assert_eq!(status_of(&admin, &longest).await, "Imported");
    admin.fails(IMPORT, json!({"UserID": ""}), 70402).await;
    for name in too_long() {
        admin.fails(IMPORT, json!({ "UserID": name }), 70402).await;
        admin
            .fails(IMPORT, json!({ "Identifier": name }), 70402)
            .await;
    }
    // An account no UserSig can be verified for: control characters, a newline among them.
    for name in ["a\nb", "tab\t", "del\u{7f}"] {
        admin.fails(IMPORT, json!({ "UserID": name }), 70402).await;
        admin
            .fails(ADD_TAG, user_tags(&[(name, &["x"])]), 90001)
            .await;
    }
    admin.fails(IMPORT, json!({"Nick": "nobody"}), 70402).await;
    admin.fails(IMPORT, json!({"UserID": 7}), 70402).await;
}

#[tokio::test]
async fn re_import_is_a_no_op_success() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": {"0": "sex"}}))
        .await;
    admin.ok(IMPORT, json!({"UserID": "a"})).await;
    admin.ok(ADD_TAG, user_tags(&[("a", &["x"])])).await;
    admin
        .ok(SET_ATTR, user_attrs(&[("a", json!({"sex": "f"}))]))
        .await;
    let before = state_of(&admin, &["a"]).await;
    admin
        .ok(IMPORT, json!({"UserID": "a", "Nick": "again"}))
        .await;
    admin.import(&["a"]).await;
    assert_eq!(state_of(&admin, &["a"]).await, before);
}

#[tokio::test]
async fn multiaccount_import_reports_the_names_it_could_not_import() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let [long, wide] = too_long();
    let answer = admin
        .ok(
            IMPORT_MANY,
            json!({"Accounts": ["a", "", long, "b", wide, "a"]}),
        )
        .await;
    assert_eq!(answer["FailAccounts"], json!(["", long, wide]));
    assert_eq!(status_of(&admin, "a").await, "Imported");
    assert_eq!(status_of(&admin, "b").await, "Imported");
    let answer = admin.ok(IMPORT_MANY, json!({"Accounts": ["a", "c"]})).await;
    assert_eq!(answer["FailAccounts"], json!([]));
    assert_eq!(status_of(&admin, "c").await, "Imported");
}

#[tokio::test]
async fn multiaccount_import_takes_at_most_100() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let accounts = names("u", 101);
    fails_changing_nothing(
        &admin,
        IMPORT_MANY,
        json!({"Accounts": accounts}),
        70402,
        &["u0", "u100"],
    )
    .await;
    admin
        .ok(IMPORT_MANY, json!({"Accounts": &accounts[..100]}))
        .await;
    assert_eq!(status_of(&admin, "u99").await, "Imported");
}

#[tokio::test]
async fn account_delete_answers_per_item_with_70107_for_unknown_accounts() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    // A tagged account that was never imported is unknown as well.
    admin.ok(ADD_TAG, user_tags(&[("tagged", &["x"])])).await;
    let answer = admin
        .ok(
            DELETE,
            json!({"DeleteItem": user_ids(&["a", "ghost", "tagged"])}),
        )
        .await;
    let items = answer["ResultItem"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0],
        json!({"UserID": "a", "ResultCode": 0, "ResultInfo": ""})
    );
    for (item, account) in items[1..].iter().zip(["ghost", "tagged"]) {
        assert_eq!(item["UserID"], account);
        assert_eq!(item["ResultCode"], 70107);
        assert!(!item["ResultInfo"].as_str().unwrap().is_empty());
    }
    assert_eq!(status_of(&admin, "a").await, "NotImported");
    assert_eq!(status_of(&admin, "b").await, "Imported");
    // Deleting again: the account is unknown now.
    let again = admin
        .ok(DELETE, json!({"DeleteItem": user_ids(&["a"])}))
        .await;
    assert_eq!(again["ResultItem"][0]["ResultCode"], 70107);
}

#[tokio::test]
async fn a_deleted_account_leaves_audiences_and_loses_its_tags() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    admin
        .ok(ADD_TAG, user_tags(&[("a", &["x"]), ("b", &["x"])]))
        .await;
    assert_audience(&admin, json!({"TagsAnd": ["x"]}), 1, &["a", "b"]).await;
    admin
        .ok(DELETE, json!({"DeleteItem": user_ids(&["a"])}))
        .await;
    assert_eq!(admin.tags_of("a").await, json!([]));
    assert_audience(&admin, Value::Null, 2, &["b"]).await;
    assert_audience(&admin, json!({"TagsAnd": ["x"]}), 3, &["b"]).await;
    // Imported again, it is back in "all users" but its old tags are gone.
    admin.import(&["a"]).await;
    assert_audience(&admin, Value::Null, 4, &["a", "b"]).await;
    assert_audience(&admin, json!({"TagsAnd": ["x"]}), 5, &["b"]).await;
}

#[tokio::test]
async fn a_failed_delete_changes_nothing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    // The contract names no code for a malformed item: any refusal, as long as it is whole.
    for bad in [json!(""), json!("n".repeat(33)), json!(7)] {
        let body = json!({"DeleteItem": [{"UserID": "a"}, {"UserID": "b"}, {"UserID": bad}]});
        refused_changing_nothing(&admin, DELETE, body, &["a", "b"]).await;
    }
}

#[tokio::test]
async fn account_check_reports_imported_or_not() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    let answer = admin
        .ok(CHECK, json!({"CheckItem": user_ids(&["a", "ghost"])}))
        .await;
    assert_eq!(
        answer["ResultItem"],
        json!([
            {"UserID": "a", "ResultCode": 0, "ResultInfo": "", "AccountStatus": "Imported"},
            {"UserID": "ghost", "ResultCode": 0, "ResultInfo": "", "AccountStatus": "NotImported"},
        ])
    );
    admin
        .ok(CHECK, json!({"CheckItem": user_ids(&names("u", 100))}))
        .await;
    admin
        .fails(
            CHECK,
            json!({"CheckItem": user_ids(&names("u", 101))}),
            70402,
        )
        .await;
}

#[tokio::test]
async fn kick_accepts_known_accounts_and_answers_70107_for_unknown_ones() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    admin.ok(ADD_TAG, user_tags(&[("tagged", &["x"])])).await;
    admin.ok(KICK, json!({"UserID": "a"})).await;
    admin.fails(KICK, json!({"UserID": "ghost"}), 70107).await;
    admin.fails(KICK, json!({"UserID": "tagged"}), 70107).await;
    // Kicking does not delete.
    assert_eq!(status_of(&admin, "a").await, "Imported");
}

#[tokio::test]
async fn kick_takes_the_legacy_identifier_field_and_says_when_the_account_is_missing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    // dobyte/tencent-im sends `Identifier`, as account_import also accepts.
    admin.ok(KICK, json!({"Identifier": "a"})).await;
    admin
        .fails(KICK, json!({"Identifier": "ghost"}), 70107)
        .await;
    let missing = admin.fails(KICK, json!({}), 70402).await;
    let info = missing["ErrorInfo"].as_str().unwrap();
    assert!(info.contains("UserID is missing"), "{info}");
    let wrong = admin.fails(KICK, json!({"UserID": 7}), 70402).await;
    let info = wrong["ErrorInfo"].as_str().unwrap();
    assert!(info.contains("must be a string"), "{info}");
}

#[tokio::test]
async fn query_online_status_answers_offline_and_lists_unknown_accounts() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    let answer = admin
        .ok(ONLINE_STATUS, json!({"To_Account": ["a", "ghost", "b"]}))
        .await;
    assert_eq!(
        answer["QueryResult"],
        json!([{"To_Account": "a", "Status": "Offline"}, {"To_Account": "b", "Status": "Offline"}])
    );
    assert_eq!(
        answer["ErrorList"],
        json!([{"To_Account": "ghost", "ErrorCode": 70107}])
    );

    let detailed = admin
        .ok(
            ONLINE_STATUS,
            json!({"To_Account": ["a"], "IsNeedDetail": 1}),
        )
        .await;
    assert_eq!(detailed["QueryResult"][0]["Status"], "Offline");
    assert_eq!(
        detailed["QueryResult"][0]["Detail"],
        json!([]),
        "IsNeedDetail 1 adds Detail: {detailed}"
    );
    let brief = admin
        .ok(
            ONLINE_STATUS,
            json!({"To_Account": ["a"], "IsNeedDetail": 0}),
        )
        .await;
    assert!(brief["QueryResult"][0].get("Detail").is_none(), "{brief}");
}

#[tokio::test]
async fn query_online_status_takes_at_most_500_accounts() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let answer = admin
        .ok(ONLINE_STATUS, json!({"To_Account": names("u", 500)}))
        .await;
    assert_eq!(answer["ErrorList"].as_array().unwrap().len(), 500);
    admin
        .fails(ONLINE_STATUS, json!({"To_Account": names("u", 501)}), 90011)
        .await;
}

#[tokio::test]
async fn a_refused_account_name_is_quoted_shortened() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let huge = "n".repeat(10_000);
    let answers = [
        admin.fails(IMPORT, json!({ "UserID": huge }), 70402).await,
        admin
            .fails(GET_TAG, json!({ "To_Account": [huge] }), 90001)
            .await,
    ];
    for answer in answers {
        let info = answer["ErrorInfo"].as_str().unwrap();
        assert!(info.len() < 300 && info.contains("10000 bytes"), "{info}");
    }
}
