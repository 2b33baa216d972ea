//! Attributes: im_set_attr_name, im_get_attr_name, im_get_attr, im_set_attr, im_remove_attr
//! (rest-api.md §3).

use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

async fn attr_names(admin: &Admin<'_>) -> Value {
    admin.ok(GET_ATTR_NAME, json!({})).await["AttrNames"].clone()
}

/// A server whose app names slot 0 `sex` and slot 1 `city`.
async fn with_sex_and_city() -> TestServer {
    let server = TestServer::start().await;
    server
        .admin()
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"0": "sex", "1": "city"}}),
        )
        .await;
    server
}

#[tokio::test]
async fn attr_names_are_set_as_an_object_and_merge_per_key() {
    let server = TestServer::start().await;
    let admin = server.admin();
    assert_eq!(attr_names(&admin).await, json!({}));
    admin
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"0": "sex", "1": "city"}}),
        )
        .await;
    assert_eq!(attr_names(&admin).await, json!({"0": "sex", "1": "city"}));
    admin
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"1": "town", "9": "age"}}),
        )
        .await;
    assert_eq!(
        attr_names(&admin).await,
        json!({"0": "sex", "1": "town", "9": "age"})
    );
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": {"5": "n".repeat(50)}}))
        .await;
    assert_eq!(attr_names(&admin).await["5"], "n".repeat(50));
}

#[tokio::test]
async fn attr_names_may_be_an_array_indexed_by_slot() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": ["sex", null, "city"]}))
        .await;
    assert_eq!(attr_names(&admin).await, json!({"0": "sex", "2": "city"}));
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": ["gender"]}))
        .await;
    assert_eq!(
        attr_names(&admin).await,
        json!({"0": "gender", "2": "city"})
    );
}

#[tokio::test]
async fn a_bad_slot_or_name_length_is_90033_and_changes_nothing() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    let bad_bodies = [
        json!({"AttrNames": {"10": "x"}}),
        json!({"AttrNames": {"-1": "x"}}),
        json!({"AttrNames": {"a": "x"}}),
        json!({"AttrNames": {"01": "x"}}),
        json!({"AttrNames": {"2": ""}}),
        json!({"AttrNames": {"2": "n".repeat(51)}}),
        json!({"AttrNames": {"2": "名".repeat(17)}}),
        json!({"AttrNames": {"2": 7}}),
        // All-or-nothing: the good keys before the bad one are not kept.
        json!({"AttrNames": {"0": "gender", "2": "age", "11": "x"}}),
        json!({"AttrNames": names("n", 11)}),
    ];
    for body in bad_bodies {
        fails_changing_nothing(&admin, SET_ATTR_NAME, body, 90033, &[]).await;
    }
    assert_eq!(attr_names(&admin).await, json!({"0": "sex", "1": "city"}));
}

#[tokio::test]
async fn renaming_a_slot_keeps_its_values() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    admin
        .ok(
            SET_ATTR,
            user_attrs(&[
                ("a", json!({"sex": "f", "city": "Shenzhen"})),
                ("b", json!({"sex": "m"})),
            ]),
        )
        .await;
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": {"0": "gender"}}))
        .await;
    assert_eq!(
        attrs_of(&admin, "a").await,
        json!({"gender": "f", "city": "Shenzhen"})
    );
    // The old name is gone, the new one selects the same users.
    fails_changing_nothing(
        &admin,
        SET_ATTR,
        user_attrs(&[("a", json!({"sex": "m"}))]),
        90033,
        &["a"],
    )
    .await;
    assert_audience(&admin, json!({"AttrsAnd": {"gender": "f"}}), 1, &["a"]).await;
}

#[tokio::test]
async fn attributes_read_back_and_a_write_leaves_the_others_untouched() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin.import(&["a", "b"]).await;
    admin
        .ok(SET_ATTR, user_attrs(&[("a", json!({"city": "Shenzhen"}))]))
        .await;
    admin
        .ok(SET_ATTR, user_attrs(&[("a", json!({"sex": "f"}))]))
        .await;
    admin
        .ok(SET_ATTR, user_attrs(&[("a", json!({"city": "Beijing"}))]))
        .await;
    let answer = admin
        .ok(GET_ATTR, json!({"To_Account": ["a", "b", "nobody"]}))
        .await;
    assert_eq!(
        answer["UserAttrs"],
        json!([
            {"To_Account": "a", "Attrs": {"sex": "f", "city": "Beijing"}},
            {"To_Account": "b", "Attrs": {}},
            {"To_Account": "nobody", "Attrs": {}},
        ])
    );
    admin
        .ok(
            REMOVE_ATTR,
            json!({"UserAttrs": [{"To_Account": "a", "Attrs": ["city"]}]}),
        )
        .await;
    assert_eq!(attrs_of(&admin, "a").await, json!({"sex": "f"}));
    // Removing a value the user does not hold is fine.
    admin
        .ok(
            REMOVE_ATTR,
            json!({"UserAttrs": [{"To_Account": "b", "Attrs": ["city"]}]}),
        )
        .await;
}

#[tokio::test]
async fn im_get_attr_name_answers_only_the_slots_that_are_set() {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin
        .ok(SET_ATTR_NAME, json!({"AttrNames": {"3": "level"}}))
        .await;
    assert_eq!(attr_names(&admin).await, json!({"3": "level"}));
}

#[tokio::test]
async fn more_than_100_users_is_90018() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin
        .fails(GET_ATTR, json!({"To_Account": names("u", 101)}), 90018)
        .await;
    admin
        .ok(GET_ATTR, json!({"To_Account": names("u", 100)}))
        .await;
    fails_changing_nothing(
        &admin,
        SET_ATTR,
        many_user_attrs(101, json!({"sex": "f"})),
        90018,
        &["u0", "u100"],
    )
    .await;
    admin
        .ok(SET_ATTR, many_user_attrs(100, json!({"sex": "f"})))
        .await;
    fails_changing_nothing(
        &admin,
        REMOVE_ATTR,
        many_user_attrs(101, json!(["sex"])),
        90018,
        &["u0", "u99"],
    )
    .await;
    admin
        .ok(REMOVE_ATTR, many_user_attrs(100, json!(["sex"])))
        .await;
    assert_eq!(attrs_of(&admin, "u0").await, json!({}));
}

#[tokio::test]
async fn im_set_attr_refuses_unknown_names_and_bad_values() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin
        .ok(SET_ATTR, user_attrs(&[("a", json!({"sex": "f"}))]))
        .await;
    let cases = [
        (json!({"age": "3"}), 90033),
        (json!({"sex": ""}), 90030),
        (json!({"sex": "v".repeat(51)}), 90030),
        (json!({"sex": "值".repeat(17)}), 90030),
    ];
    for (attrs, code) in cases {
        fails_changing_nothing(&admin, SET_ATTR, user_attrs(&[("a", attrs)]), code, &["a"]).await;
    }
    admin
        .ok(
            SET_ATTR,
            user_attrs(&[("a", json!({"city": "v".repeat(50)}))]),
        )
        .await;
    assert_eq!(
        attrs_of(&admin, "a").await,
        json!({"sex": "f", "city": "v".repeat(50)})
    );
}

#[tokio::test]
async fn im_remove_attr_refuses_unknown_names() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin
        .ok(
            SET_ATTR,
            user_attrs(&[("a", json!({"sex": "f", "city": "Shenzhen"}))]),
        )
        .await;
    fails_changing_nothing(
        &admin,
        REMOVE_ATTR,
        user_attrs(&[("a", json!(["city", "age"]))]),
        90033,
        &["a"],
    )
    .await;
}

#[tokio::test]
async fn tolerated_variants_top_level_attrs_and_the_flat_form() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin
        .ok(
            SET_ATTR,
            json!({"Attrs": [{"To_Account": "a", "Attrs": {"sex": "f", "city": "Shenzhen"}}]}),
        )
        .await;
    admin
        .ok(
            SET_ATTR,
            json!({"To_Account": "b", "Attrs": {"sex": "m", "city": "Beijing"}}),
        )
        .await;
    assert_eq!(
        attrs_of(&admin, "a").await,
        json!({"sex": "f", "city": "Shenzhen"})
    );
    assert_eq!(
        attrs_of(&admin, "b").await,
        json!({"sex": "m", "city": "Beijing"})
    );

    admin
        .ok(
            REMOVE_ATTR,
            json!({"Attrs": [{"To_Account": "a", "Attrs": ["sex"]}]}),
        )
        .await;
    admin
        .ok(REMOVE_ATTR, json!({"To_Account": "b", "Attrs": ["city"]}))
        .await;
    assert_eq!(attrs_of(&admin, "a").await, json!({"city": "Shenzhen"}));
    assert_eq!(attrs_of(&admin, "b").await, json!({"sex": "m"}));

    // The variants are held to the same rules.
    fails_changing_nothing(
        &admin,
        SET_ATTR,
        json!({"To_Account": "b", "Attrs": {"sex": ""}}),
        90030,
        &["b"],
    )
    .await;
    fails_changing_nothing(
        &admin,
        REMOVE_ATTR,
        json!({"To_Account": "b", "Attrs": ["age"]}),
        90033,
        &["b"],
    )
    .await;
}

#[tokio::test]
async fn a_failed_write_changes_nothing_for_any_user_of_the_batch() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    let old = json!({"sex": "f", "city": "Shenzhen"});
    admin
        .ok(
            SET_ATTR,
            user_attrs(&[("a", old.clone()), ("b", old.clone()), ("c", old)]),
        )
        .await;
    let batch = ["a", "b", "c"];
    let new = json!({"city": "Beijing"});
    let set_body =
        |third: Value| user_attrs(&[("a", new.clone()), ("b", new.clone()), ("c", third)]);
    fails_changing_nothing(
        &admin,
        SET_ATTR,
        set_body(json!({"city": ""})),
        90030,
        &batch,
    )
    .await;
    fails_changing_nothing(
        &admin,
        SET_ATTR,
        set_body(json!({"age": "3"})),
        90033,
        &batch,
    )
    .await;
    let remove_body = user_attrs(&[
        ("a", json!(["city"])),
        ("b", json!(["city"])),
        ("c", json!(["age"])),
    ]);
    fails_changing_nothing(&admin, REMOVE_ATTR, remove_body, 90033, &batch).await;
    assert_eq!(
        attrs_of(&admin, "b").await,
        json!({"sex": "f", "city": "Shenzhen"})
    );
}

#[tokio::test]
async fn attributes_written_before_import_are_kept_and_count_once_imported() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    admin
        .ok(SET_ATTR, user_attrs(&[("early", json!({"sex": "f"}))]))
        .await;
    assert_eq!(attrs_of(&admin, "early").await, json!({"sex": "f"}));
    assert_audience(&admin, json!({"AttrsAnd": {"sex": "f"}}), 1, &[]).await;
    admin.import(&["early"]).await;
    assert_eq!(attrs_of(&admin, "early").await, json!({"sex": "f"}));
    assert_audience(&admin, json!({"AttrsAnd": {"sex": "f"}}), 2, &["early"]).await;
}

#[tokio::test]
async fn a_refused_attribute_name_is_quoted_shortened() {
    let server = with_sex_and_city().await;
    let admin = server.admin();
    let huge = "n".repeat(10_000);
    let answers = [
        admin
            .fails(
                SET_ATTR,
                user_attrs(&[("a", json!({ huge.clone(): "x" }))]),
                90033,
            )
            .await,
        admin
            .fails(
                REMOVE_ATTR,
                json!({"UserAttrs": [{"To_Account": "a", "Attrs": [huge]}]}),
                90033,
            )
            .await,
        admin
            .fails(
                SET_ATTR_NAME,
                json!({"AttrNames": { huge.clone(): "x" }}),
                90033,
            )
            .await,
    ];
    for answer in answers {
        let info = answer["ErrorInfo"].as_str().unwrap();
        assert!(info.len() < 300 && info.contains("10000 bytes"), "{info}");
    }
}
