//! UserSig checks and the order of checks on the REST envelope.

use crier_proto::usersig;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn a_valid_admin_signature_is_accepted() {
    let server = TestServer::start().await;
    server
        .admin()
        .ok("all_member_push/im_get_attr_name", json!({}))
        .await;
}

#[tokio::test]
async fn refused_signatures_carry_their_codes() {
    let server = TestServer::start().await;
    let now = crier::clock::now_secs();
    let query = |sig: &str, identifier: &str| {
        format!("sdkappid={APP}&identifier={identifier}&usersig={sig}&random=1&contenttype=json")
    };
    let cases = [
        (usersig::sign(APP, KEY, ADMIN, 10, now - 100), ADMIN, 70001),
        (String::new(), ADMIN, 70002),
        ("not-a-token".to_owned(), ADMIN, 70003),
        (
            usersig::sign(APP, "wrong key", ADMIN, 600, now),
            ADMIN,
            70009,
        ),
        (usersig::sign(APP, KEY, "someone", 600, now), ADMIN, 70013),
        (usersig::sign(OTHER_APP, KEY, ADMIN, 600, now), ADMIN, 70014),
    ];
    for (sig, identifier, code) in cases {
        let answer = server
            .post_raw(
                "all_member_push/im_get_attr_name",
                &query(&sig, identifier),
                "{}",
            )
            .await;
        assert_eq!(answer["ErrorCode"], code, "{answer}");
        assert_eq!(answer["ActionStatus"], "FAIL");
    }
}

#[tokio::test]
async fn order_of_checks_follows_the_contract() {
    let server = TestServer::start().await;
    let admin = server.admin();
    // Unknown command first, even without any credentials.
    assert_eq!(
        server.post_raw("all_member_push/nope", "", "{").await["ErrorCode"],
        60009
    );
    assert_eq!(
        server
            .post_raw("all_member_push/im_push", "identifier=x", "{")
            .await["ErrorCode"],
        60012
    );
    assert_eq!(
        server
            .post_raw("all_member_push/im_push", "sdkappid=123&usersig=x", "{")
            .await["ErrorCode"],
        70020
    );
    // A user (not an admin) with a valid signature.
    let user = server.admin_of(APP, KEY, "alice");
    assert_eq!(
        server
            .post_raw("all_member_push/im_push", &user.query, "{")
            .await["ErrorCode"],
        90009
    );
    assert_eq!(
        server
            .post_raw("im_open_login_svc/account_import", &user.query, "{")
            .await["ErrorCode"],
        70403
    );
    assert_eq!(
        server
            .post_raw("openim/query_online_status", &user.query, "{")
            .await["ErrorCode"],
        90009
    );
    // An admin with a body that does not parse.
    assert_eq!(
        server
            .post_raw("all_member_push/im_push", &admin.query, "{")
            .await["ErrorCode"],
        90001
    );
    assert_eq!(
        server
            .post_raw("im_open_login_svc/account_import", &admin.query, "{")
            .await["ErrorCode"],
        70402
    );
}

#[tokio::test]
async fn an_admin_of_one_app_gets_nothing_from_another() {
    let server = TestServer::start().await;
    // Signed with app 2's key but naming app 1: the signature does not verify.
    let forged = server.admin_of(APP, OTHER_KEY, ADMIN);
    assert_eq!(
        server
            .post_raw(
                "all_member_push/im_get_tag",
                &forged.query,
                r#"{"To_Account":["a"]}"#
            )
            .await["ErrorCode"],
        70009
    );

    server.admin().import(&["a"]).await;
    server
        .admin()
        .ok(
            "all_member_push/im_add_tag",
            json!({"UserTags":[{"To_Account":"a","Tags":["x"]}]}),
        )
        .await;
    let other = server.admin_of(OTHER_APP, OTHER_KEY, ADMIN);
    assert_eq!(other.tags_of("a").await, json!([]));
    let check = other
        .ok(
            "im_open_login_svc/account_check",
            json!({"CheckItem":[{"UserID":"a"}]}),
        )
        .await;
    assert_eq!(check["ResultItem"][0]["AccountStatus"], "NotImported");
}

#[tokio::test]
async fn query_values_may_be_percent_encoded_and_extra_parameters_are_ignored() {
    let server = TestServer::start().await;
    let sig = usersig::sign(APP, KEY, ADMIN, 600, crier::clock::now_secs());
    let encoded: String = sig.bytes().map(|b| format!("%{b:02X}")).collect();
    let query = format!("ver=v4&servicename=x&command=y&sdkappid={APP}&identifier={ADMIN}&usersig={encoded}&random=1&random=1&contenttype=json");
    assert_eq!(
        server
            .post_raw("all_member_push/im_get_attr_name", &query, "")
            .await["ActionStatus"],
        "OK"
    );
    assert_eq!(
        server
            .post_raw("all_member_push/im_get_attr_name", &query, "[]")
            .await["ActionStatus"],
        "OK"
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_refused_with_an_envelope() {
    let server = TestServer::start().await;
    let body = format!("{{\"To_Account\":[\"{}\"]}}", "a".repeat(1024 * 1024 + 10));
    let answer = server
        .post_raw("all_member_push/im_get_tag", &server.admin().query, body)
        .await;
    assert_eq!(answer["ErrorCode"], 90001);
}

#[tokio::test]
async fn a_usersig_from_tencents_python_library_is_accepted() {
    let server = TestServer::start().await;
    let script = format!(
        "from TLSSigAPIv2 import TLSSigAPIv2\nprint(TLSSigAPIv2({APP}, '{KEY}').gen_sig('{ADMIN}'))"
    );
    let output =
        std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-c", &script])
            .output()
            .expect("python3 runs; .ci/run installs tls-sig-api-v2");
    assert!(
        output.status.success(),
        "tls-sig-api-v2 must be installed (pip install tls-sig-api-v2): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sig = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let query =
        format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=7&contenttype=json");
    let answer = server
        .post_raw("all_member_push/im_get_attr_name", &query, "{}")
        .await;
    assert_eq!(answer["ActionStatus"], "OK", "{answer}");
}

/// A query for `identifier` (percent-encoded) with `sig`.
fn query_for(identifier: &str, sig: &str) -> String {
    let identifier: String = identifier.bytes().map(|b| format!("%{b:02X}")).collect();
    format!("sdkappid={APP}&identifier={identifier}&usersig={sig}&random=1&contenttype=json")
}

/// An app that signs the identifiers its users choose (Tencent's libraries sign anything) hands
/// a user the HMAC of a text that, cut elsewhere, names the admin: the identifier up to its
/// first newline, the rest moved into `TLS.userbuf`.
#[tokio::test]
async fn a_signature_for_a_newline_identifier_re_packed_as_the_admins_is_refused() {
    use base64::Engine;
    use hmac::Mac;

    let server = TestServer::start().await;
    let now = crier::clock::now_secs();
    let chosen =
        format!("{ADMIN}\nTLS.sdkappid:{APP}\nTLS.time:{now}\nTLS.expire:86400\nTLS.userbuf:x");
    // The `TLS.sig` of `usersig::sign(APP, KEY, &chosen, 600, now)`.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(usersig::signed_content(&chosen, APP, now, 600, None).as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let forged = usersig::SigDoc {
        identifier: ADMIN.into(),
        sdkappid: APP,
        time: now,
        expire: 86_400,
        userbuf: Some(format!(
            "x\nTLS.sdkappid:{APP}\nTLS.time:{now}\nTLS.expire:600"
        )),
        sig,
    };
    assert_eq!(
        usersig::signed_content(
            &forged.identifier,
            forged.sdkappid,
            forged.time,
            forged.expire,
            forged.userbuf.as_deref()
        ),
        usersig::signed_content(&chosen, APP, now, 600, None),
        "the forged fields read back as the signed text"
    );
    for path in [
        "all_member_push/im_get_attr_name",
        "im_open_login_svc/account_check",
    ] {
        let answer = server
            .post_raw(path, &query_for(ADMIN, &usersig::encode(&forged)), "{}")
            .await;
        assert_eq!(answer["ActionStatus"], "FAIL", "{answer}");
        assert_eq!(answer["ErrorCode"], 70003, "{answer}");
    }
    // The token the app made for the chosen identifier is refused as it stands, too.
    let token = usersig::sign(APP, KEY, &chosen, 600, now);
    let answer = server
        .post_raw(
            "all_member_push/im_get_attr_name",
            &query_for(&chosen, &token),
            "{}",
        )
        .await;
    assert_eq!(answer["ErrorCode"], 70003, "{answer}");
}

#[tokio::test]
async fn identifiers_no_account_can_have_and_tokens_from_the_future_are_70003() {
    let server = TestServer::start().await;
    let now = crier::clock::now_secs();
    let long = "a".repeat(33);
    for identifier in [
        "",
        "admin\nistrator",
        "tab\tbed",
        "del\u{7f}",
        long.as_str(),
    ] {
        let token = usersig::sign(APP, KEY, identifier, 600, now);
        let answer = server
            .post_raw(
                "all_member_push/im_get_attr_name",
                &query_for(identifier, &token),
                "{}",
            )
            .await;
        assert_eq!(answer["ErrorCode"], 70003, "{identifier:?}: {answer}");
        assert!(
            answer["ErrorInfo"].as_str().unwrap().contains("identifier"),
            "{answer}"
        );
    }
    let ahead = |seconds| usersig::sign(APP, KEY, ADMIN, 86_400, now + seconds);
    let answer = server
        .post_raw(
            "all_member_push/im_get_attr_name",
            &query_for(ADMIN, &ahead(10 * 365 * 86_400)),
            "{}",
        )
        .await;
    assert_eq!(answer["ErrorCode"], 70003, "{answer}");
    // A signer's clock a minute ahead is tolerated.
    let answer = server
        .post_raw(
            "all_member_push/im_get_attr_name",
            &query_for(ADMIN, &ahead(60)),
            "{}",
        )
        .await;
    assert_eq!(answer["ActionStatus"], "OK", "{answer}");
}

#[tokio::test]
async fn an_sdkappid_with_a_sign_is_not_the_app() {
    let server = TestServer::start().await;
    let sig = usersig::sign(APP, KEY, ADMIN, 600, crier::clock::now_secs());
    let answer = server
        .post_raw(
            "all_member_push/im_get_attr_name",
            &format!("sdkappid=%2B{APP}&identifier={ADMIN}&usersig={sig}&random=1"),
            "{}",
        )
        .await;
    assert_eq!(answer["ErrorCode"], 70020, "{answer}");
}
