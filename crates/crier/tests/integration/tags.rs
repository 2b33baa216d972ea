//! Tags: im_get_tag, im_add_tag, im_remove_tag, im_remove_all_tags (rest-api.md §3).

use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

/// Gives `account` `count` tags `t0`.. in calls of at most ten.
async fn fill_tags(admin: &Admin<'_>, account: &str, count: usize) {
    let tags = names("t", count);
    for chunk in tags.chunks(10) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        admin.ok(ADD_TAG, user_tags(&[(account, &chunk)])).await;
    }
}

#[tokio::test]
async fn added_tags_read_back_and_removed_tags_go() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    admin
        .ok(ADD_TAG, user_tags(&[("a", &["x", "y"]), ("b", &["y"])]))
        .await;

    let answer = admin
        .ok(GET_TAG, json!({"To_Account": ["b", "nobody"]}))
        .await;
    assert_eq!(
        answer["UserTags"],
        json!([{"To_Account": "b", "Tags": ["y"]}, {"To_Account": "nobody", "Tags": []}])
    );
    assert_eq!(sorted_tags(&admin, "a").await, ["x", "y"]);

    admin
        .ok(REMOVE_TAG, user_tags(&[("a", &["x", "never-held"])]))
        .await;
    assert_eq!(sorted_tags(&admin, "a").await, ["y"]);
    assert_eq!(sorted_tags(&admin, "b").await, ["y"]);

    admin
        .ok(REMOVE_ALL_TAGS, json!({"To_Account": ["a", "b", "nobody"]}))
        .await;
    assert_eq!(admin.tags_of("a").await, json!([]));
    assert_eq!(admin.tags_of("b").await, json!([]));
}

#[tokio::test]
async fn adding_a_held_tag_is_a_no_op() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    admin.ok(ADD_TAG, user_tags(&[("a", &["x"])])).await;
    admin.ok(ADD_TAG, user_tags(&[("a", &["x", "x"])])).await;
    assert_eq!(admin.tags_of("a").await, json!(["x"]));

    // Held tags do not count against the cap either.
    fill_tags(&admin, "a", 99).await;
    assert_eq!(sorted_tags(&admin, "a").await.len(), 100);
    admin
        .ok(ADD_TAG, user_tags(&[("a", &["x", "t0", "t98"])]))
        .await;
    assert_eq!(sorted_tags(&admin, "a").await.len(), 100);
}

#[tokio::test]
async fn more_than_100_users_is_90018() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let accounts = names("u", 101);
    admin.ok(ADD_TAG, many_user_tags(100, json!(["x"]))).await;
    admin
        .ok(GET_TAG, json!({"To_Account": &accounts[..100]}))
        .await;
    admin
        .fails(GET_TAG, json!({"To_Account": accounts}), 90018)
        .await;
    let watched = ["u0", "u99"];
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        many_user_tags(101, json!(["x"])),
        90018,
        &["u100"],
    )
    .await;
    fails_changing_nothing(
        &admin,
        REMOVE_TAG,
        many_user_tags(101, json!(["x"])),
        90018,
        &watched,
    )
    .await;
    fails_changing_nothing(
        &admin,
        REMOVE_ALL_TAGS,
        json!({"To_Account": accounts}),
        90018,
        &watched,
    )
    .await;
    assert_eq!(admin.tags_of("u0").await, json!(["x"]));
}

#[tokio::test]
async fn more_than_10_tags_per_user_per_call_is_90032() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let ten = names("t", 10);
    let eleven = names("t", 11);
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        json!({"UserTags": [{"To_Account": "a", "Tags": eleven}]}),
        90032,
        &["a"],
    )
    .await;
    admin
        .ok(
            ADD_TAG,
            json!({"UserTags": [{"To_Account": "a", "Tags": ten}]}),
        )
        .await;
    assert_eq!(sorted_tags(&admin, "a").await.len(), 10);
}

#[tokio::test]
async fn a_user_named_twice_in_one_call_is_still_held_to_10_tags() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let (first, second) = (names("p", 6), names("q", 6));
    let body = json!({"UserTags": [{"To_Account": "a", "Tags": first}, {"To_Account": "a", "Tags": second}]});
    fails_changing_nothing(&admin, ADD_TAG, body, 90032, &["a"]).await;
}

#[tokio::test]
async fn a_user_past_100_tags_is_90032_with_a_reason() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    fill_tags(&admin, "a", 100).await;
    let answer = fails_changing_nothing(
        &admin,
        ADD_TAG,
        user_tags(&[("b", &["x"]), ("a", &["one-more"])]),
        90032,
        &["a", "b"],
    )
    .await;
    let info = answer["ErrorInfo"].as_str().unwrap();
    assert!(
        info.contains("100") && info.contains("\"a\""),
        "ErrorInfo should name the account and the cap: {info}"
    );
    assert_eq!(sorted_tags(&admin, "a").await.len(), 100);
}

#[tokio::test]
async fn a_user_at_100_tags_may_add_tags_it_already_holds() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    fill_tags(&admin, "a", 100).await;
    // 100 held + 3 named is past the cap, so the server must look at which are new: none.
    admin
        .ok(ADD_TAG, user_tags(&[("a", &["t0", "t50", "t99"])]))
        .await;
    assert_eq!(sorted_tags(&admin, "a").await.len(), 100);
}

#[tokio::test]
async fn an_empty_tag_is_90040_and_a_tag_over_50_bytes_is_90020() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let fifty = "t".repeat(50);
    let fifty_one = "t".repeat(51);
    // Bytes, not characters: 17 three-byte characters are 51 bytes.
    let wide = "标".repeat(17);
    for path in [ADD_TAG, REMOVE_TAG] {
        fails_changing_nothing(&admin, path, user_tags(&[("a", &[""])]), 90040, &["a"]).await;
        fails_changing_nothing(
            &admin,
            path,
            user_tags(&[("a", &[fifty_one.as_str()])]),
            90020,
            &["a"],
        )
        .await;
        fails_changing_nothing(
            &admin,
            path,
            user_tags(&[("a", &[wide.as_str()])]),
            90020,
            &["a"],
        )
        .await;
    }
    admin
        .ok(
            ADD_TAG,
            user_tags(&[("a", &[fifty.as_str(), &"标".repeat(16)])]),
        )
        .await;
    assert_eq!(sorted_tags(&admin, "a").await.len(), 2);
}

#[tokio::test]
async fn tolerated_variants_top_level_tags_and_the_flat_form() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin
        .ok(
            ADD_TAG,
            json!({"Tags": [{"To_Account": "a", "Tags": ["x", "y"]}]}),
        )
        .await;
    admin
        .ok(ADD_TAG, json!({"To_Account": "b", "Tags": ["z"]}))
        .await;
    assert_eq!(sorted_tags(&admin, "a").await, ["x", "y"]);
    assert_eq!(sorted_tags(&admin, "b").await, ["z"]);

    admin
        .ok(
            REMOVE_TAG,
            json!({"Tags": [{"To_Account": "a", "Tags": ["x"]}]}),
        )
        .await;
    admin
        .ok(REMOVE_TAG, json!({"To_Account": "a", "Tags": ["y"]}))
        .await;
    assert_eq!(admin.tags_of("a").await, json!([]));

    // The variants are held to the same rules.
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        json!({"To_Account": "b", "Tags": [""]}),
        90040,
        &["b"],
    )
    .await;
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        json!({"Tags": [{"To_Account": "b", "Tags": names("n", 11)}]}),
        90032,
        &["b"],
    )
    .await;
}

#[tokio::test]
async fn a_failed_write_changes_nothing_for_any_user_of_the_batch() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b", "c"]).await;
    admin
        .ok(
            ADD_TAG,
            user_tags(&[("a", &["old"]), ("b", &["old"]), ("c", &["old"])]),
        )
        .await;
    let batch = ["a", "b", "c"];
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        user_tags(&[("a", &["new"]), ("b", &["new"]), ("c", &["new", ""])]),
        90040,
        &batch,
    )
    .await;
    fails_changing_nothing(
        &admin,
        REMOVE_TAG,
        user_tags(&[("a", &["old"]), ("b", &["old"]), ("c", &[""])]),
        90040,
        &batch,
    )
    .await;
    refused_changing_nothing(
        &admin,
        REMOVE_ALL_TAGS,
        json!({"To_Account": ["a", "b", "c".repeat(33)]}),
        &batch,
    )
    .await;
    // The cap, found only when the write meets the stored state.
    fill_tags(&admin, "c", 99).await;
    fails_changing_nothing(
        &admin,
        ADD_TAG,
        user_tags(&[("a", &["new"]), ("b", &["new"]), ("c", &["new"])]),
        90032,
        &batch,
    )
    .await;
    assert_eq!(sorted_tags(&admin, "a").await, ["old"]);
    assert_eq!(sorted_tags(&admin, "b").await, ["old"]);
}

#[tokio::test]
async fn tags_written_before_import_are_kept_and_count_once_imported() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a"]).await;
    admin
        .ok(ADD_TAG, user_tags(&[("a", &["x"]), ("early", &["x"])]))
        .await;
    assert_eq!(admin.tags_of("early").await, json!(["x"]));
    assert_eq!(status_of(&admin, "early").await, "NotImported");
    assert_audience(&admin, json!({"TagsAnd": ["x"]}), 1, &["a"]).await;
    assert_audience(&admin, Value::Null, 2, &["a"]).await;

    admin.import(&["early"]).await;
    assert_eq!(admin.tags_of("early").await, json!(["x"]));
    assert_audience(&admin, json!({"TagsAnd": ["x"]}), 3, &["a", "early"]).await;
}

#[tokio::test]
async fn a_refused_tag_is_quoted_shortened_with_its_length() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let huge = "t".repeat(10_240);
    for path in [ADD_TAG, REMOVE_TAG] {
        let answer = admin
            .fails(path, user_tags(&[("a", &[huge.as_str()])]), 90020)
            .await;
        let info = answer["ErrorInfo"].as_str().unwrap();
        assert!(
            info.len() < 300 && info.contains("10240 bytes") && info.contains(&"t".repeat(64)),
            "{info}"
        );
    }
}
