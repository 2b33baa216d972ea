//! im_push (rest-api.md §3.1 and §5): audiences, field errors in the order of the table, the
//! per-app limits and the `MsgRandom` retry rule. Audiences are read from the store.

use std::time::Duration;

use crier::config::AppConfig;
use serde_json::{json, Value};

use crate::harness::*;
use crate::observe::*;

/// Imported a, b, c, d and the never-imported e:
///
/// | account | tags | sex | city |
/// | --- | --- | --- | --- |
/// | a | x, y | f | Shenzhen |
/// | b | x | m | Shenzhen |
/// | c | y | f | Beijing |
/// | d | | | |
/// | e (not imported) | x, y | f | Shenzhen |
async fn populated() -> TestServer {
    let server = TestServer::start().await;
    let admin = server.admin();
    admin.import(&["a", "b", "c", "d"]).await;
    admin
        .ok(
            SET_ATTR_NAME,
            json!({"AttrNames": {"0": "sex", "1": "city"}}),
        )
        .await;
    admin
        .ok(
            ADD_TAG,
            user_tags(&[
                ("a", &["x", "y"]),
                ("b", &["x"]),
                ("c", &["y"]),
                ("e", &["x", "y"]),
            ]),
        )
        .await;
    let attrs = |sex: &str, city: &str| json!({"sex": sex, "city": city});
    let users = [
        ("a", attrs("f", "Shenzhen")),
        ("b", attrs("m", "Shenzhen")),
        ("c", attrs("f", "Beijing")),
        ("e", attrs("f", "Shenzhen")),
    ];
    admin.ok(SET_ATTR, user_attrs(&users)).await;
    server
}

async fn server_with(change: impl FnOnce(&mut AppConfig)) -> TestServer {
    let mut app = app_config(APP, KEY);
    change(&mut app);
    TestServer::start_with(vec![app]).await
}

/// Sets `field` of `body` to `value`, or removes it when `value` is `None`.
fn set_field(body: &mut Value, field: &str, value: Option<Value>) {
    match value {
        Some(value) => body[field] = value,
        None => {
            body.as_object_mut().unwrap().remove(field);
        }
    }
}

/// A valid push with `field` set to `value`, or removed when `value` is `None`.
fn with(field: &str, value: Option<Value>) -> Value {
    let mut body = text_push(1, "hello");
    set_field(&mut body, field, value);
    body
}

/// Asserts that the push `body` fails with `code` and stores nothing.
async fn refused(admin: &Admin<'_>, body: Value, code: u32) {
    let before = pushes_accepted(admin.server).await;
    let answer = admin.call(PUSH, body.clone()).await;
    assert_eq!(answer["ActionStatus"], "FAIL", "{body}: {answer}");
    assert_eq!(answer["ErrorCode"], code, "{body}: {answer}");
    assert!(!answer["ErrorInfo"].as_str().unwrap().is_empty());
    assert_eq!(
        pushes_accepted(admin.server).await,
        before,
        "a refused push was stored: {body}"
    );
}

async fn refused_all(admin: &Admin<'_>, field: &str, values: Vec<Option<Value>>, code: u32) {
    for value in values {
        refused(admin, with(field, value), code).await;
    }
}

async fn accepted_all(admin: &Admin<'_>, field: &str, values: Vec<Value>) {
    for value in values {
        admin.ok(PUSH, with(field, Some(value))).await;
    }
}

fn text(text: &str) -> Value {
    json!({"MsgType": "TIMTextElem", "MsgContent": {"Text": text}})
}

/// One valid element of each of the eight types. Every `MsgContent` field is required except
/// the custom element's.
fn valid_elements() -> Vec<Value> {
    vec![
        text("hi"),
        json!({"MsgType": "TIMLocationElem", "MsgContent": {"Desc": "office", "Latitude": 22.54, "Longitude": 113}}),
        json!({"MsgType": "TIMFaceElem", "MsgContent": {"Index": 1, "Data": "smile"}}),
        json!({"MsgType": "TIMCustomElem", "MsgContent": {"Data": "d", "Desc": "custom", "Ext": "e", "Sound": "ding.aiff"}}),
        json!({"MsgType": "TIMSoundElem", "MsgContent": {"Url": "https://e.com/s.m4a", "UUID": "s1", "Size": 1024, "Second": 3, "Download_Flag": 2}}),
        json!({"MsgType": "TIMImageElem", "MsgContent": {"UUID": "i1", "ImageFormat": 1, "ImageInfoArray": [
            {"Type": 1, "Size": 1024, "Width": 100, "Height": 80, "URL": "https://e.com/i.jpg"}
        ]}}),
        json!({"MsgType": "TIMFileElem", "MsgContent": {"Url": "https://e.com/f.pdf", "UUID": "f1", "FileSize": 2048, "FileName": "f.pdf", "Download_Flag": 2}}),
        json!({"MsgType": "TIMVideoFileElem", "MsgContent": {
            "VideoUrl": "https://e.com/v.mp4", "VideoUUID": "v1", "VideoSize": 4096, "VideoSecond": 5, "VideoFormat": "mp4",
            "VideoDownloadFlag": 2, "ThumbUrl": "https://e.com/t.jpg", "ThumbUUID": "t1", "ThumbSize": 512, "ThumbWidth": 64,
            "ThumbHeight": 48, "ThumbFormat": "JPG", "ThumbDownloadFlag": 2
        }}),
    ]
}

/// Every way to break one field of `element` (dropping it or giving it an object instead of
/// its type), with `pointer` the JSON pointer of the object holding the fields.
fn broken_variants(element: &Value, pointer: &str) -> Vec<Value> {
    let fields = element
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap()
        .keys();
    let mut variants = Vec::new();
    for field in fields {
        for replacement in [None, Some(json!({}))] {
            let mut broken = element.clone();
            set_field(broken.pointer_mut(pointer).unwrap(), field, replacement);
            variants.push(broken);
        }
    }
    variants
}

#[tokio::test]
async fn a_push_answers_a_task_id_and_is_stored_as_sent() {
    let server = populated().await;
    let admin = server.admin();
    // MsgLifeTime 0 reaches only the sessions open when the push is accepted.
    let everyone = ["a", "b", "c", "d"];
    let mut sessions = Vec::new();
    for account in everyone {
        sessions.push(log_in(&server, account).await);
    }
    let mut body = text_push(7, "hello");
    body.as_object_mut().unwrap().remove("MsgLifeTime");
    body["MsgBody"][0]["MsgContent"]["Extra"] = json!({"kept": [1, 2]});
    let task_id = admin.ok(PUSH, body.clone()).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = task_report(&admin, &task_id).await;
    assert_eq!(report["MsgLifeTime"], 0, "absent MsgLifeTime is 0");
    assert_eq!(report["AudienceSize"], everyone.len(), "{report}");
    for session in &mut sessions {
        let received = receive(session, &task_id).await;
        assert_eq!(
            received.from_account, ADMIN,
            "absent From_Account is the calling admin"
        );
        assert_eq!(received.msg_random, 7);
        assert_eq!(
            serde_json::from_str::<Value>(received.msg_body.get()).unwrap(),
            body["MsgBody"]
        );
        assert!(received.offline_push_info.is_none());
    }

    let info = json!({
        "PushFlag": 0, "Title": "t", "Desc": "d", "Ext": "{\"k\":1}", "Vendor": {"unknown": true},
        "AndroidInfo": {"Sound": "s", "GoogleChannelID": "g", "OPPOChannelID": "o"},
        "ApnsInfo": {"Sound": "s", "BadgeMode": 1, "Title": "t", "SubTitle": "st", "Image": "i", "MutableContent": 1}
    });
    let mut body = text_push(8, "hello");
    body["From_Account"] = json!("a");
    body["MsgLifeTime"] = json!(604_800);
    body["OfflinePushInfo"] = info.clone();
    let task_id = admin.ok(PUSH, body).await["TaskId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(task_report(&admin, &task_id).await["MsgLifeTime"], 604_800);
    let received = receive(&mut sessions[1], &task_id).await;
    assert_eq!(received.from_account, "a");
    assert_eq!(
        serde_json::from_str::<Value>(received.offline_push_info.unwrap().get()).unwrap(),
        info
    );
}

#[tokio::test]
async fn task_ids_are_unique() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..5 {
        assert!(seen.insert(push_to(&admin, Value::Null, n).await));
    }
}

#[tokio::test]
async fn conditions_select_their_audiences() {
    let server = populated().await;
    let admin = server.admin();
    let mut ten_tags = names("nobody", 9);
    ten_tags.push("x".into());
    let cases = [
        (Value::Null, vec!["a", "b", "c", "d"]),
        (json!({"TagsAnd": ["x", "y"]}), vec!["a"]),
        (json!({"TagsOr": ["x", "y"]}), vec!["a", "b", "c"]),
        (
            json!({"TagsAnd": ["x"], "TagsOr": ["y", "nobody"]}),
            vec!["a"],
        ),
        (json!({"TagsAnd": ["x", "nobody"]}), vec![]),
        (json!({ "TagsOr": ten_tags }), vec!["a", "b"]),
        (
            json!({"AttrsAnd": {"sex": "f", "city": "Shenzhen"}}),
            vec!["a"],
        ),
        (
            json!({"AttrsOr": {"sex": "m", "city": "Beijing"}}),
            vec!["b", "c"],
        ),
        (
            json!({"AttrsAnd": {"sex": "f"}, "AttrsOr": {"city": "Shenzhen"}}),
            vec!["a"],
        ),
        (json!({"AttrsAnd": {"city": "Nowhere"}}), vec![]),
        // Tolerated variant: an array of condition objects, merged.
        (json!([{"TagsAnd": ["x"]}, {"TagsOr": ["y"]}]), vec!["a"]),
        (json!([{"TagsAnd": ["x"]}, {"TagsAnd": ["y"]}]), vec!["a"]),
        (
            json!([{"AttrsAnd": {"sex": "f"}}, {"AttrsAnd": {"city": "Beijing"}}]),
            vec!["c"],
        ),
    ];
    for (n, (condition, expected)) in cases.into_iter().enumerate() {
        assert_audience(&admin, condition, n as u32, &expected).await;
    }
}

#[tokio::test]
async fn from_account_is_an_imported_account_or_an_admin_else_90048() {
    let server = populated().await;
    let admin = server.admin();
    accepted_all(&admin, "From_Account", vec![json!(ADMIN), json!("a")]).await;
    admin
        .ok(DELETE, json!({"DeleteItem": user_ids(&["d"])}))
        .await;
    let bad = [
        json!("ghost"),
        json!("e"),
        json!("d"),
        json!(""),
        json!(7),
        json!(["a"]),
    ];
    refused_all(
        &admin,
        "From_Account",
        bad.into_iter().map(Some).collect(),
        90048,
    )
    .await;
}

#[tokio::test]
async fn msg_random_is_a_required_u32_else_90005() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let bad = [
        None,
        Some(json!("1")),
        Some(json!(1.5)),
        Some(json!(-1)),
        Some(json!(4_294_967_296u64)),
        Some(Value::Null),
    ];
    refused_all(&admin, "MsgRandom", bad.to_vec(), 90005).await;
    accepted_all(&admin, "MsgRandom", vec![json!(0), json!(4_294_967_295u64)]).await;
}

#[tokio::test]
async fn msg_lifetime_is_an_integer_from_0_to_604800() {
    let server = TestServer::start().await;
    let admin = server.admin();
    refused_all(
        &admin,
        "MsgLifeTime",
        vec![Some(json!("60")), Some(json!(1.5)), Some(json!([]))],
        90044,
    )
    .await;
    refused_all(
        &admin,
        "MsgLifeTime",
        vec![Some(json!(-1)), Some(json!(604_801))],
        90026,
    )
    .await;
    accepted_all(&admin, "MsgLifeTime", vec![json!(0), json!(604_800)]).await;
}

#[tokio::test]
async fn msg_body_must_be_an_array_else_90007() {
    let server = TestServer::start().await;
    let admin = server.admin();
    refused_all(
        &admin,
        "MsgBody",
        vec![
            None,
            Some(json!({})),
            Some(json!("hello")),
            Some(text("hello")),
        ],
        90007,
    )
    .await;
}

#[tokio::test]
async fn each_of_the_eight_element_types_is_accepted() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let elements = valid_elements();
    accepted_all(
        &admin,
        "MsgBody",
        elements.iter().map(|e| json!([e])).collect(),
    )
    .await;
    accepted_all(&admin, "MsgBody", vec![Value::Array(elements)]).await;
    // The custom element's fields are all optional.
    accepted_all(
        &admin,
        "MsgBody",
        vec![json!([{"MsgType": "TIMCustomElem", "MsgContent": {}}])],
    )
    .await;
}

#[tokio::test]
async fn a_malformed_element_is_90002() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let mut broken = vec![
        json!(5),
        json!({"MsgContent": {"Text": "x"}}),
        json!({"MsgType": "TIMTextElem"}),
        json!({"MsgType": 5, "MsgContent": {}}),
    ];
    broken.push(json!({"MsgType": "TIMTextElem", "MsgContent": "x"}));
    for element in valid_elements() {
        if element["MsgType"] == "TIMCustomElem" {
            // Optional, but strings when present.
            for field in ["Data", "Desc", "Ext", "Sound"] {
                let mut custom = element.clone();
                custom["MsgContent"][field] = json!(5);
                broken.push(custom);
            }
        } else {
            broken.extend(broken_variants(&element, "/MsgContent"));
        }
        if element["MsgType"] == "TIMImageElem" {
            broken.extend(broken_variants(&element, "/MsgContent/ImageInfoArray/0"));
        }
    }
    let face_with_fraction =
        json!({"MsgType": "TIMFaceElem", "MsgContent": {"Index": 1.5, "Data": "smile"}});
    broken.push(face_with_fraction);
    for element in broken {
        // Behind a valid element, so the whole body is looked at.
        refused(
            &admin,
            with("MsgBody", Some(json!([text("first"), element]))),
            90002,
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_type_two_custom_elements_or_a_body_over_8000_bytes_is_90010() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let custom = json!({"MsgType": "TIMCustomElem", "MsgContent": {"Data": "d"}});
    let unknown = json!({"MsgType": "TIMGroupTipElem", "MsgContent": {"Text": "x"}});
    refused(
        &admin,
        with("MsgBody", Some(json!([text("a"), unknown]))),
        90010,
    )
    .await;
    refused(
        &admin,
        with("MsgBody", Some(json!([custom, text("a"), custom]))),
        90010,
    )
    .await;

    let overhead = json!([text("")]).to_string().len();
    let exactly = json!([text(&"a".repeat(8_000 - overhead))]);
    assert_eq!(exactly.to_string().len(), 8_000);
    accepted_all(&admin, "MsgBody", vec![exactly]).await;
    refused(
        &admin,
        with(
            "MsgBody",
            Some(json!([text(&"a".repeat(8_001 - overhead))])),
        ),
        90010,
    )
    .await;
    // Bytes, not characters: three-byte characters padded to 8,001 bytes.
    let wide = "标".repeat((8_001 - overhead) / 3) + &"a".repeat((8_001 - overhead) % 3);
    assert_eq!(json!([text(&wide)]).to_string().len(), 8_001);
    refused(&admin, with("MsgBody", Some(json!([text(&wide)]))), 90010).await;
}

#[tokio::test]
async fn condition_errors_have_their_codes() {
    let server = populated().await;
    let admin = server.admin();
    let eleven = names("t", 11);
    let eleven_and_empty = [names("t", 11), vec![String::new()]].concat();
    let cases = [
        (json!({"TagsAnd": ["x"], "AttrsAnd": {"sex": "f"}}), 90039),
        (json!({"TagsOr": ["x"], "AttrsOr": {"sex": "f"}}), 90039),
        (
            json!([{"TagsAnd": ["x"]}, {"AttrsAnd": {"sex": "f"}}]),
            90039,
        ),
        (json!({ "TagsAnd": eleven }), 90032),
        (json!({ "TagsOr": eleven }), 90032),
        (
            json!([{"TagsAnd": &eleven[..6]}, {"TagsAnd": &eleven[6..]}]),
            90032,
        ),
        (json!({"TagsAnd": [""]}), 90040),
        (json!({"TagsOr": ["x", ""]}), 90040),
        (json!({"TagsAnd": ["t".repeat(51)]}), 90020),
        (json!({"TagsOr": ["标".repeat(17)]}), 90020),
        (json!({"TagsAnd": ["x"], "TagsOr": ["y", "x"]}), 90022),
        (json!([{"TagsAnd": ["x"]}, {"TagsOr": ["x"]}]), 90022),
        (json!({"AttrsAnd": {"age": "1"}}), 90033),
        (json!({"AttrsOr": {"sex": "f", "age": "1"}}), 90033),
        // Within the row, the earlier rule wins.
        (
            json!({"TagsAnd": ["", "t".repeat(51)], "AttrsAnd": {"age": "1"}}),
            90039,
        ),
        (json!({ "TagsAnd": eleven_and_empty }), 90032),
        (json!({"TagsAnd": [""], "TagsOr": [""]}), 90040),
        (
            json!({"TagsAnd": ["t".repeat(51)], "TagsOr": ["t".repeat(51)]}),
            90020,
        ),
    ];
    for (condition, code) in cases {
        refused(&admin, with("Condition", Some(condition)), code).await;
    }
    accepted_all(
        &admin,
        "Condition",
        vec![
            json!({"TagsAnd": ["t".repeat(50)]}),
            json!({"TagsOr": names("t", 10)}),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_malformed_offline_push_info_is_90043() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let bad = [
        json!("x"),
        json!([]),
        json!({"PushFlag": 2}),
        json!({"PushFlag": "0"}),
        json!({"Title": 5}),
        json!({"Desc": {}}),
        json!({"Ext": 5}),
        json!({"AndroidInfo": "x"}),
        json!({"AndroidInfo": {"Sound": 5}}),
        json!({"ApnsInfo": []}),
        json!({"ApnsInfo": {"BadgeMode": 2}}),
        json!({"ApnsInfo": {"MutableContent": "1"}}),
        json!({"ApnsInfo": {"SubTitle": 5}}),
    ];
    refused_all(
        &admin,
        "OfflinePushInfo",
        bad.into_iter().map(Some).collect(),
        90043,
    )
    .await;
    accepted_all(
        &admin,
        "OfflinePushInfo",
        vec![json!({}), json!({"PushFlag": 1, "Unknown": [1]})],
    )
    .await;
}

/// Sets every `(field, bad value)` on a valid push, then fixes them one by one from the first,
/// expecting each time the code of the first field still wrong.
async fn assert_checked_in_order(admin: &Admin<'_>, bad: &[(&str, Option<Value>, u32)]) {
    let valid = text_push(1, "hello");
    let mut body = valid.clone();
    for (field, value, _) in bad {
        set_field(&mut body, field, value.clone());
    }
    for (field, _, code) in bad {
        refused(admin, body.clone(), *code).await;
        set_field(&mut body, field, valid.get(*field).cloned());
    }
    admin.ok(PUSH, body).await;
}

#[tokio::test]
async fn field_errors_are_reported_in_the_order_of_the_table() {
    let server = populated().await;
    let admin = server.admin();
    let bad_element = json!([{"MsgType": "TIMTextElem", "MsgContent": {}}]);
    let unknown_type = json!([{"MsgType": "TIMNope", "MsgContent": {}}]);
    let sequences = [
        [
            ("From_Account", Some(json!("ghost")), 90048),
            ("MsgRandom", Some(json!("x")), 90005),
            ("MsgLifeTime", Some(json!("soon")), 90044),
            ("MsgBody", Some(json!({})), 90007),
            (
                "Condition",
                Some(json!({"TagsAnd": ["x"], "AttrsAnd": {"sex": "f"}})),
                90039,
            ),
            ("OfflinePushInfo", Some(json!("x")), 90043),
        ],
        [
            ("From_Account", Some(json!(7)), 90048),
            ("MsgRandom", None, 90005),
            ("MsgLifeTime", Some(json!(604_801)), 90026),
            ("MsgBody", Some(bad_element), 90002),
            ("Condition", Some(json!({"AttrsAnd": {"age": "1"}})), 90033),
            ("OfflinePushInfo", Some(json!({"PushFlag": 2})), 90043),
        ],
        [
            ("From_Account", Some(json!("e")), 90048),
            ("MsgRandom", Some(json!(-1)), 90005),
            ("MsgLifeTime", Some(json!(-1)), 90026),
            ("MsgBody", Some(unknown_type), 90010),
            (
                "Condition",
                Some(json!({"TagsAnd": ["x"], "TagsOr": ["x"]})),
                90022,
            ),
            ("OfflinePushInfo", Some(json!({"ApnsInfo": 1})), 90043),
        ],
    ];
    for sequence in sequences {
        assert_checked_in_order(&admin, &sequence).await;
    }
}

#[tokio::test]
async fn push_disabled_is_90045() {
    let server = server_with(|app| app.push_enabled = false).await;
    let admin = server.admin();
    refused(&admin, text_push(1, "hello"), 90045).await;
    // The rest of the API still works.
    admin.ok(ADD_TAG, user_tags(&[("a", &["x"])])).await;
}

#[tokio::test]
async fn pushes_closer_than_the_minimum_interval_are_90024() {
    let server = server_with(|app| app.min_push_interval_ms = 1_500).await;
    let admin = server.admin();
    let first = push_to(&admin, Value::Null, 1).await;
    refused(&admin, text_push(2, "hello"), 90024).await;
    // A retry of the accepted push is not a new push: it answers its TaskId.
    assert_eq!(push_to(&admin, Value::Null, 1).await, first);
    assert_eq!(pushes_accepted(&server).await, 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    push_to(&admin, Value::Null, 2).await;
}

#[tokio::test]
async fn pushes_past_the_daily_quota_are_90047_even_after_a_restart() {
    let apps = || {
        let mut app = app_config(APP, KEY);
        app.daily_push_quota = 2;
        vec![app]
    };
    let server = TestServer::start_with(apps()).await;
    push_to(&server.admin(), Value::Null, 1).await;
    push_to(&server.admin(), Value::Null, 2).await;
    refused(&server.admin(), text_push(3, "hello"), 90047).await;
    let server = TestServer::start_in(server.stop().await, apps()).await;
    refused(&server.admin(), text_push(4, "hello"), 90047).await;
}

#[tokio::test]
async fn a_retry_within_a_second_answers_the_first_task_id_and_uses_no_quota() {
    let server = server_with(|app| app.daily_push_quota = 1).await;
    let admin = server.admin();
    let first = push_to(&admin, Value::Null, 42).await;
    assert_eq!(push_to(&admin, Value::Null, 42).await, first);
    refused(&admin, text_push(43, "hello"), 90047).await;
    assert_eq!(pushes_accepted(&server).await, 1, "a retry pushes nothing");
}

#[tokio::test]
async fn the_same_msg_random_with_another_body_or_after_a_second_is_a_new_push() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let first = push_to(&admin, Value::Null, 42).await;
    let other_body = admin.ok(PUSH, text_push(42, "another text")).await["TaskId"].clone();
    assert_ne!(other_body, json!(first));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_ne!(push_to(&admin, Value::Null, 42).await, first);
    assert_eq!(pushes_accepted(&server).await, 3);
}

#[tokio::test]
async fn a_refused_push_uses_no_quota_and_starts_no_interval() {
    let server = server_with(|app| {
        app.daily_push_quota = 1;
        app.min_push_interval_ms = 60_000;
    })
    .await;
    let admin = server.admin();
    refused(&admin, with("MsgRandom", None), 90005).await;
    refused(&admin, with("From_Account", Some(json!("ghost"))), 90048).await;
    refused(
        &admin,
        with("Condition", Some(json!({"TagsAnd": [""]}))),
        90040,
    )
    .await;
    push_to(&admin, Value::Null, 1).await;
}

#[tokio::test]
async fn a_retry_is_recognised_whatever_the_key_order_and_spacing() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let first =
        r#"{"MsgRandom":5,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}"#;
    let again = r#"{ "MsgBody": [ { "MsgContent": { "Text": "hi" }, "MsgType": "TIMTextElem" } ], "MsgRandom": 5 }"#;
    let first = server.post_raw(PUSH, &admin.query, first).await;
    let again = server.post_raw(PUSH, &admin.query, again).await;
    assert_eq!(first["ActionStatus"], "OK", "{first}");
    assert_eq!(again["TaskId"], first["TaskId"]);
    assert_eq!(pushes_accepted(&server).await, 1);
}

#[tokio::test]
async fn limits_are_per_app() {
    let mut apps = default_apps();
    apps[0].daily_push_quota = 1;
    let server = TestServer::start_with(apps).await;
    push_to(&server.admin(), Value::Null, 1).await;
    refused(&server.admin(), text_push(2, "hello"), 90047).await;
    server
        .admin_of(OTHER_APP, OTHER_KEY, ADMIN)
        .ok(PUSH, text_push(2, "hello"))
        .await;
}

#[tokio::test]
async fn the_audience_is_fixed_when_the_push_is_accepted() {
    let server = populated().await;
    let admin = server.admin();
    let mut a = log_in(&server, "a").await;
    let task_id = push_to(&admin, json!({"TagsAnd": ["x", "y"]}), 1).await;
    receive(&mut a, &task_id).await;
    admin.ok(ADD_TAG, user_tags(&[("b", &["y"])])).await;
    admin
        .ok(DELETE, json!({"DeleteItem": user_ids(&["a"])}))
        .await;
    // Still a's alone: b, who matches now, does not get it.
    assert_eq!(task_report(&admin, &task_id).await["AudienceSize"], 1);
    assert!(kept_for(&server, "b", &task_id).await.is_none());
    assert_audience(&admin, json!({"TagsAnd": ["x", "y"]}), 2, &["b"]).await;
}

#[tokio::test]
async fn offline_push_info_over_4096_bytes_is_90043() {
    let server = TestServer::start().await;
    let admin = server.admin();
    let info = |ext_bytes: usize| json!({"Title": "t", "Ext": "e".repeat(ext_bytes)});
    let overhead = info(0).to_string().len();
    assert_eq!(info(4_096 - overhead).to_string().len(), 4_096);
    accepted_all(&admin, "OfflinePushInfo", vec![info(4_096 - overhead)]).await;
    refused_all(
        &admin,
        "OfflinePushInfo",
        vec![Some(info(4_097 - overhead)), Some(info(900_000))],
        90043,
    )
    .await;
}

#[tokio::test]
async fn a_condition_over_4096_bytes_is_90001() {
    let server = populated().await;
    let admin = server.admin();
    // Keys Crier does not read are kept with the push, so they count.
    let condition = |note_bytes: usize| json!({"TagsOr": ["x"], "Note": "n".repeat(note_bytes)});
    let overhead = condition(0).to_string().len();
    assert_eq!(condition(4_096 - overhead).to_string().len(), 4_096);
    accepted_all(&admin, "Condition", vec![condition(4_096 - overhead)]).await;
    let empties = Value::Array(
        std::iter::once(json!({"TagsOr": ["x"]}))
            .chain(std::iter::repeat_n(json!({}), 2_100))
            .collect(),
    );
    refused_all(
        &admin,
        "Condition",
        vec![
            Some(condition(4_097 - overhead)),
            Some(condition(900_000)),
            Some(empties),
        ],
        90001,
    )
    .await;
}

#[tokio::test]
async fn refused_values_of_a_push_are_quoted_shortened() {
    let server = populated().await;
    let admin = server.admin();
    let huge = "v".repeat(10_000);
    let cases = [
        (with("From_Account", Some(json!(huge))), 90048),
        (
            with(
                "MsgBody",
                Some(json!([{"MsgType": huge, "MsgContent": {}}])),
            ),
            90010,
        ),
        (with("Condition", Some(json!({ "TagsAnd": [huge] }))), 90020),
        (
            with("Condition", Some(json!({"AttrsOr": { huge.clone(): "f" }}))),
            90033,
        ),
    ];
    for (body, code) in cases {
        let answer = admin.fails(PUSH, body, code).await;
        let info = answer["ErrorInfo"].as_str().unwrap();
        assert!(info.len() < 400 && info.contains("10000 bytes"), "{info}");
    }
}
