//! The three notifiers driven directly against their fakes: what goes over the wire (HTTP/2,
//! headers, credentials, payload fields from `OfflinePushInfo`) and how each answer ends.

use std::time::Duration;

use crier::config::SecretKey;
use crier::notify::apns::{ApnsConfig, ApnsNotifier};
use crier::notify::fcm::{FcmConfig, FcmNotifier};
use crier::notify::webhook::{WebhookConfig, WebhookNotifier};
use crier::notify::{Notification, Notifier, Outcome, Provider};
use serde_json::{json, Value};

use crate::fakes::apns::{self as fake_apns, FakeApns};
use crate::fakes::fcm::{self as fake_fcm, FakeFcm};
use crate::fakes::webhook::{self as fake_webhook, FakeWebhook};
use crate::fakes::{Answer, Recorded};

const EXPIRES_AT: u64 = 4_000_000_000;

fn notification(token: &str, offline_push_info: Value) -> Notification {
    Notification {
        app: 1_400_000_001,
        task_id: "1400000001_1795436400123_2210984713_88123456".into(),
        account: "alice".into(),
        token: token.into(),
        title: Some("Stock A".into()),
        body: "Stock A moved 5%".into(),
        ext: Some(r#"{"deeplink":"app://stock/A"}"#.into()),
        offline_push_info,
        expires_at: EXPIRES_AT,
        badge: Some(4),
        collapse_id: None,
        revoked: false,
    }
}

fn full_info() -> Value {
    json!({
        "PushFlag": 0,
        "Title": "Stock A",
        "Desc": "Stock A moved 5%",
        "Ext": r#"{"deeplink":"app://stock/A"}"#,
        "ApnsInfo": {"Title": "iOS title", "SubTitle": "from Crier", "Sound": "ping.aiff",
                     "BadgeMode": 0, "Image": "https://example.com/a.png", "MutableContent": 1},
        "AndroidInfo": {"Sound": "ping", "GoogleChannelID": "markets"}
    })
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(index).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Sends a notification without `OfflinePushInfo` to `token`.
async fn send_plain(notifier: &dyn Notifier, token: &str) -> Outcome {
    notifier.send(&notification(token, Value::Null)).await
}

fn retry_after(outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retry { after, .. } => *after,
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn assert_dead(outcome: &Outcome, reason: &str) {
    match outcome {
        Outcome::DeadToken { reason: got } => assert!(got.contains(reason), "{got}"),
        other => panic!("expected DeadToken ({reason}), got {other:?}"),
    }
}

fn assert_failed(outcome: &Outcome, reason: &str) {
    match outcome {
        Outcome::Failed { reason: got } => assert!(got.contains(reason), "{got}"),
        other => panic!("expected Failed ({reason}), got {other:?}"),
    }
}

fn only(requests: &[Recorded], token: &str) -> Vec<Recorded> {
    requests
        .iter()
        .filter(|r| r.token == token)
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// APNs

#[tokio::test]
async fn apns_posts_over_http2_with_a_verified_jwt_headers_and_payload() {
    let fake = FakeApns::start().await;
    let notifier = ApnsNotifier::new(&fake.config()).unwrap();
    assert_eq!(notifier.provider(), Provider::Apns);

    let outcome = notifier.send(&notification("a1b2c3d4", full_info())).await;
    assert_eq!(outcome, Outcome::Sent);

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.version, "HTTP/2.0", "APNs speaks HTTP/2 only");
    assert!(request.verified, "{:?}", request.rejection);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/3/device/a1b2c3d4");
    assert_eq!(request.header("apns-topic"), Some(fake_apns::TOPIC));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-expiration"), Some("4000000000"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    let jwt = fake_apns::jwt(request).unwrap();
    assert_eq!(
        jwt_part(jwt, 0),
        json!({"typ": "JWT", "alg": "ES256", "kid": fake_apns::KEY_ID})
    );
    let claims = jwt_part(jwt, 1);
    assert_eq!(claims["iss"], fake_apns::TEAM_ID);
    assert!(claims["iat"].is_u64());
    assert_eq!(
        request.json,
        Some(json!({
            "aps": {
                "alert": {"title": "iOS title", "subtitle": "from Crier", "body": "Stock A moved 5%"},
                "badge": 4,
                "sound": "ping.aiff",
                "mutable-content": 1
            },
            "ext": r#"{"deeplink":"app://stock/A"}"#,
            "image": "https://example.com/a.png",
            "taskid": "1400000001_1795436400123_2210984713_88123456"
        }))
    );
}

#[tokio::test]
async fn apns_payload_follows_badge_mode_and_falls_back_to_the_push_title() {
    let fake = FakeApns::start().await;
    let notifier = ApnsNotifier::new(&fake.config()).unwrap();
    let mut plain = notification("cafe01", json!({"ApnsInfo": {"BadgeMode": 1}}));
    plain.ext = None;
    assert_eq!(notifier.send(&plain).await, Outcome::Sent);
    let request = &fake.wait_for(1, Duration::from_secs(5)).await[0];
    assert_eq!(
        request.json,
        Some(json!({
            "aps": {"alert": {"title": "Stock A", "body": "Stock A moved 5%"}},
            "taskid": "1400000001_1795436400123_2210984713_88123456"
        }))
    );
}

#[tokio::test]
async fn apns_reuses_one_provider_token_and_replaces_an_expired_one() {
    let fake = FakeApns::start().await;
    let notifier = ApnsNotifier::new(&fake.config()).unwrap();
    let n = notification("beef", Value::Null);
    assert_eq!(notifier.send(&n).await, Outcome::Sent);
    assert_eq!(notifier.send(&n).await, Outcome::Sent);
    fake.respond_once("beef", fake_apns::reason(403, "ExpiredProviderToken"));
    let outcome = notifier.send(&n).await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("ExpiredProviderToken")),
        "{outcome:?}"
    );
    assert_eq!(notifier.send(&n).await, Outcome::Sent);

    let requests = fake.requests();
    let jwts: Vec<&str> = requests
        .iter()
        .map(|r| fake_apns::jwt(r).unwrap())
        .collect();
    assert_eq!(jwts.len(), 4);
    assert!(requests.iter().all(|r| r.verified && r.is_http2()));
    assert_eq!(jwts[0], jwts[1], "one token for many sends");
    assert_eq!(jwts[1], jwts[2]);
    assert_ne!(jwts[2], jwts[3], "a new token after ExpiredProviderToken");
}

#[tokio::test]
async fn apns_dead_tokens_retries_and_failures() {
    let fake = FakeApns::start().await;
    let notifier = ApnsNotifier::new(&fake.config()).unwrap();
    fake.respond_to("gone", fake_apns::unregistered());
    fake.respond_to("bad", fake_apns::reason(400, "BadDeviceToken"));
    fake.respond_to(
        "other-topic",
        fake_apns::reason(400, "DeviceTokenNotForTopic"),
    );
    fake.respond_to(
        "busy",
        fake_apns::reason(429, "TooManyRequests").retry_after(7),
    );
    fake.respond_to("down", fake_apns::reason(503, "ServiceUnavailable"));
    fake.respond_to("big", fake_apns::reason(413, "PayloadTooLarge"));
    fake.respond_once("flaky", fake_apns::reason(429, "TooManyRequests"));

    assert_dead(&send_plain(&notifier, "gone").await, "Unregistered");
    assert_dead(&send_plain(&notifier, "bad").await, "BadDeviceToken");
    assert_dead(
        &send_plain(&notifier, "other-topic").await,
        "DeviceTokenNotForTopic",
    );
    assert_eq!(
        retry_after(&send_plain(&notifier, "busy").await),
        Some(Duration::from_secs(7))
    );
    assert_eq!(retry_after(&send_plain(&notifier, "down").await), None);
    assert_failed(&send_plain(&notifier, "big").await, "413 PayloadTooLarge");
    assert_eq!(retry_after(&send_plain(&notifier, "flaky").await), None);
    assert_eq!(send_plain(&notifier, "flaky").await, Outcome::Sent);
    assert_eq!(fake.count(), 8);
}

#[tokio::test]
async fn apns_network_and_tls_errors_are_retried() {
    // Nothing listens on a port just released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let fake = FakeApns::start().await;
    let closed = ApnsConfig {
        endpoint: format!("https://127.0.0.1:{port}"),
        ..fake.config()
    };
    let outcome = ApnsNotifier::new(&closed)
        .unwrap()
        .send(&notification("t", Value::Null))
        .await;
    assert!(matches!(outcome, Outcome::Retry { .. }), "{outcome:?}");

    // Without the test CA the fake's certificate is not trusted: no request gets through.
    let untrusted = ApnsConfig {
        ca_file: None,
        ..fake.config()
    };
    let outcome = ApnsNotifier::new(&untrusted)
        .unwrap()
        .send(&notification("t", Value::Null))
        .await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("certificate")),
        "{outcome:?}"
    );
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn apns_refuses_a_missing_or_wrong_key_file_naming_it() {
    let fake = FakeApns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("AuthKey_MISSING.p8");
    let error = ApnsNotifier::new(&ApnsConfig {
        key_file: missing.clone(),
        ..fake.config()
    })
    .unwrap_err();
    assert!(
        format!("{error:#}").contains(&missing.display().to_string()),
        "{error:#}"
    );

    // An RSA key is PEM but not an EC P-256 .p8.
    let rsa = dir.path().join("AuthKey_RSA.p8");
    let account: Value =
        serde_json::from_str(include_str!("../fixtures/notify/fcm-service-account.json")).unwrap();
    std::fs::write(&rsa, account["private_key"].as_str().unwrap()).unwrap();
    let error = ApnsNotifier::new(&ApnsConfig {
        key_file: rsa.clone(),
        ..fake.config()
    })
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("AuthKey_RSA.p8") && text.contains("P-256"),
        "{text}"
    );
}

#[tokio::test]
async fn fake_apns_refuses_http1_and_a_jwt_from_another_key() {
    let fake = FakeApns::start().await;
    let config = fake.config();
    let ca = std::fs::read(config.ca_file.as_ref().unwrap()).unwrap();
    let http1 = reqwest::Client::builder()
        .use_rustls_tls()
        .http1_only()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let answer = http1
        .post(format!("{}/3/device/abc", config.endpoint))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.version(), reqwest::Version::HTTP_11);

    // A well-formed token signed by some other key.
    let dir = tempfile::tempdir().unwrap();
    let other_key = dir.path().join("AuthKey_OTHER.p8");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let impostor = ApnsNotifier::new(&ApnsConfig {
        key_file: other_key,
        ..config
    })
    .unwrap();
    assert_failed(
        &send_plain(&impostor, "abc").await,
        "403 InvalidProviderToken",
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].version, "HTTP/1.1");
    assert!(!requests[0].verified);
    assert!(requests[1].is_http2() && !requests[1].verified);
    assert!(
        requests[1]
            .rejection
            .as_deref()
            .unwrap()
            .contains("does not verify"),
        "{:?}",
        requests[1].rejection
    );
}

#[tokio::test]
async fn apns_config_toml_round_trips() {
    let fake = FakeApns::start().await;
    let text = fake.config_toml();
    assert!(text.starts_with("[app.apns]\n"), "{text}");
    let table: toml::Table = toml::from_str(&text).unwrap();
    let config: ApnsConfig = table["app"]["apns"].clone().try_into().unwrap();
    assert_eq!(config, fake.config());
}

// ---------------------------------------------------------------------------------------------
// FCM

#[tokio::test]
async fn fcm_fetches_one_access_token_for_many_sends_and_shapes_the_message() {
    let fake = FakeFcm::start().await;
    let notifier = FcmNotifier::new(&fake.config()).unwrap();
    assert_eq!(notifier.provider(), Provider::Fcm);

    let notifications: Vec<Notification> = (0..5)
        .map(|i| notification(&format!("fcm-device-{i}"), full_info()))
        .collect();
    // Concurrently: they all need the token at once, and one fetch must serve them.
    let outcomes =
        futures_util::future::join_all(notifications.iter().map(|n| notifier.send(n))).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Sent), "{outcomes:?}");
    assert_eq!(notifier.send(&notifications[0]).await, Outcome::Sent);

    let token_requests = fake.token_requests();
    assert_eq!(token_requests.len(), 1, "one token for all sends");
    assert!(
        token_requests[0].verified,
        "{:?}",
        token_requests[0].rejection
    );
    assert_eq!(
        token_requests[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    let sends = fake.requests();
    assert_eq!(sends.len(), 6);
    assert!(sends.iter().all(
        |r| r.verified && r.header("authorization") == Some("Bearer ya29.fake-access-token-1")
    ));
    let first = &only(&sends, "fcm-device-3")[0];
    assert_eq!(first.path, "/v1/projects/crier-test/messages:send");
    let message = first.json.as_ref().unwrap();
    let ttl = message["message"]["android"]["ttl"].as_str().unwrap();
    let ttl_secs: u64 = ttl.strip_suffix('s').unwrap().parse().unwrap();
    let now = crier::clock::now_secs();
    assert!((EXPIRES_AT - now - 5..=EXPIRES_AT - now + 5).contains(&ttl_secs));
    assert_eq!(
        message,
        &json!({"message": {
            "token": "fcm-device-3",
            "notification": {"title": "Stock A", "body": "Stock A moved 5%"},
            "data": {"taskid": "1400000001_1795436400123_2210984713_88123456",
                     "ext": r#"{"deeplink":"app://stock/A"}"#},
            "android": {"ttl": ttl,
                        "notification": {"channel_id": "markets", "sound": "ping"}}
        }})
    );
}

#[tokio::test]
async fn fcm_refreshes_a_token_close_to_expiry_and_after_a_401() {
    let fake = FakeFcm::start().await;
    let notifier = FcmNotifier::new(&fake.config()).unwrap();
    let n = notification("device", Value::Null);
    assert_eq!(notifier.send(&n).await, Outcome::Sent);

    fake.revoke_tokens();
    let outcome = notifier.send(&n).await;
    assert!(
        matches!(&outcome, Outcome::Retry { reason, .. } if reason.contains("UNAUTHENTICATED")),
        "{outcome:?}"
    );
    assert_eq!(notifier.send(&n).await, Outcome::Sent);
    assert_eq!(fake.tokens_issued(), 2, "a new token after the 401");

    // A token that expires within the margin is not kept.
    fake.set_token_lifetime(30);
    fake.revoke_tokens();
    assert!(matches!(notifier.send(&n).await, Outcome::Retry { .. }));
    assert_eq!(notifier.send(&n).await, Outcome::Sent);
    assert_eq!(notifier.send(&n).await, Outcome::Sent);
    assert_eq!(fake.tokens_issued(), 4);
    assert!(fake.token_requests().iter().all(|r| r.verified));
}

#[tokio::test]
async fn fcm_dead_tokens_retries_and_failures() {
    let fake = FakeFcm::start().await;
    let notifier = FcmNotifier::new(&fake.config()).unwrap();
    fake.respond_to("gone", fake_fcm::unregistered());
    fake.respond_to(
        "gone-400",
        fake_fcm::error(400, "INVALID_ARGUMENT", Some("UNREGISTERED")),
    );
    fake.respond_to("not-found", Answer::status(404));
    fake.respond_to(
        "quota",
        fake_fcm::error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")).retry_after(11),
    );
    fake.respond_to(
        "down",
        fake_fcm::error(503, "UNAVAILABLE", Some("UNAVAILABLE")),
    );
    fake.respond_to(
        "internal",
        fake_fcm::error(500, "INTERNAL", Some("INTERNAL")),
    );
    fake.respond_to(
        "invalid",
        fake_fcm::error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")),
    );
    fake.respond_to(
        "mismatch",
        fake_fcm::error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
    );
    fake.respond_once("flaky", fake_fcm::error(503, "UNAVAILABLE", None));

    assert_dead(&send_plain(&notifier, "gone").await, "UNREGISTERED");
    assert_dead(&send_plain(&notifier, "gone-400").await, "UNREGISTERED");
    assert_dead(&send_plain(&notifier, "not-found").await, "404");
    assert_eq!(
        retry_after(&send_plain(&notifier, "quota").await),
        Some(Duration::from_secs(11))
    );
    assert_eq!(retry_after(&send_plain(&notifier, "down").await), None);
    assert_eq!(retry_after(&send_plain(&notifier, "internal").await), None);
    assert_failed(&send_plain(&notifier, "invalid").await, "INVALID_ARGUMENT");
    assert_failed(
        &send_plain(&notifier, "mismatch").await,
        "SENDER_ID_MISMATCH",
    );
    assert!(matches!(
        send_plain(&notifier, "flaky").await,
        Outcome::Retry { .. }
    ));
    assert_eq!(send_plain(&notifier, "flaky").await, Outcome::Sent);
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn fcm_token_endpoint_refusal_fails_and_bad_files_are_named() {
    let fake = FakeFcm::start().await;
    // The assertion's audience must be the token endpoint it is posted to: pointing the token
    // URI elsewhere on the fake makes the fake refuse it as Google would.
    let wrong_audience = FcmConfig {
        token_uri: Some(format!("{}/token?other", fake.config().endpoint)),
        ..fake.config()
    };
    let notifier = FcmNotifier::new(&wrong_audience).unwrap();
    let notifications: Vec<Notification> = (0..4)
        .map(|i| notification(&format!("device-{i}"), Value::Null))
        .collect();
    let outcomes =
        futures_util::future::join_all(notifications.iter().map(|n| notifier.send(n))).await;
    for outcome in &outcomes {
        assert_failed(outcome, "invalid_grant");
    }
    assert_eq!(fake.count(), 0, "no send without a token");
    let token_requests = fake.token_requests();
    assert_eq!(
        token_requests.len(),
        1,
        "a refusal is not asked again at once"
    );
    assert!(!token_requests[0].verified);

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let error = FcmNotifier::new(&FcmConfig {
        service_account_file: missing.clone(),
        ..fake.config()
    })
    .unwrap_err();
    assert!(format!("{error:#}").contains(&missing.display().to_string()));
    let garbled = dir.path().join("garbled.json");
    std::fs::write(
        &garbled,
        r#"{"project_id":"p","client_email":"e","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
    )
    .unwrap();
    let error = FcmNotifier::new(&FcmConfig {
        service_account_file: garbled.clone(),
        ..fake.config()
    })
    .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("garbled.json") && text.contains("RSA"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Webhook

#[tokio::test]
async fn webhook_posts_signed_json() {
    let fake = FakeWebhook::start().await;
    let notifier = WebhookNotifier::new(&fake.config()).unwrap();
    assert_eq!(notifier.provider(), Provider::Webhook);
    let n = notification("hook-device", full_info());
    assert_eq!(notifier.send(&n).await, Outcome::Sent);

    let request = &fake.wait_for(1, Duration::from_secs(5)).await[0];
    assert!(request.verified, "{:?}", request.rejection);
    assert_eq!(request.header("content-type"), Some("application/json"));
    let timestamp: u64 = request
        .header("x-crier-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    // The documented scheme, recomputed independently of the fake.
    assert_eq!(
        request.header("x-crier-signature").unwrap(),
        crier::notify::webhook::signature(
            fake_webhook::SECRET.as_bytes(),
            timestamp,
            &request.body
        )
    );
    assert_eq!(
        request.json,
        Some(json!({
            "SdkAppId": 1_400_000_001u64,
            "TaskId": "1400000001_1795436400123_2210984713_88123456",
            "To_Account": "alice",
            "Token": "hook-device",
            "Title": "Stock A",
            "Desc": "Stock A moved 5%",
            "Ext": r#"{"deeplink":"app://stock/A"}"#,
            "OfflinePushInfo": full_info(),
            "ExpiresAt": EXPIRES_AT
        }))
    );
}

#[tokio::test]
async fn webhook_outcomes_and_a_wrong_secret() {
    let fake = FakeWebhook::start().await;
    let notifier = WebhookNotifier::new(&fake.config()).unwrap();
    fake.respond_to("gone", Answer::status(410));
    fake.respond_to("busy", Answer::status(429).retry_after(2));
    fake.respond_to("down", Answer::status(502));
    fake.respond_to(
        "refused",
        Answer::json(422, json!({"error": "no such user"})),
    );
    fake.respond_to("accepted", Answer::status(202));
    assert_dead(&send_plain(&notifier, "gone").await, "410");
    assert_eq!(
        retry_after(&send_plain(&notifier, "busy").await),
        Some(Duration::from_secs(2))
    );
    assert_eq!(retry_after(&send_plain(&notifier, "down").await), None);
    assert_failed(&send_plain(&notifier, "refused").await, "no such user");
    assert_eq!(send_plain(&notifier, "accepted").await, Outcome::Sent);
    assert!(fake.requests().iter().all(|r| r.verified));

    let wrong = WebhookNotifier::new(&WebhookConfig {
        secret: SecretKey("not the secret".into()),
        ..fake.config()
    })
    .unwrap();
    assert_failed(&wrong.send(&notification("x", Value::Null)).await, "401");
    let last = fake.requests().pop().unwrap();
    assert!(!last.verified);
    assert_eq!(
        last.rejection.as_deref(),
        Some("X-Crier-Signature does not match")
    );
}
