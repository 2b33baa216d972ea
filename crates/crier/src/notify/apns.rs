//! Apple Push Notification service: HTTP/2 over TLS with token-based authentication.
//!
//! Every request carries `authorization: bearer <JWT>`, an ES256 JWT signed with the team's
//! `.p8` key (header `alg` + `kid`, claims `iss` = team id and `iat`). Apple refuses a token older
//! than an hour and one replaced more often than every 20 minutes, so one token is shared by all
//! sends and replaced once it is [`TOKEN_REFRESH_AFTER`] old, or at once when Apple answers
//! `403 ExpiredProviderToken` (that send is then retried).
//!
//! Answers: 200 sent; 410 and 400 `BadDeviceToken`/`DeviceTokenNotForTopic` end the device;
//! 429 and 5xx are retried (after `Retry-After` when given), as are network errors; anything
//! else fails with Apple's `reason`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use percent_encoding::utf8_percent_encode;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::http::{self, info_int, info_str};
use super::{Notification, Notifier, Outcome, Provider, SendFuture};
pub use crate::config::providers::{ApnsConfig, APNS_PRODUCTION_ENDPOINT as PRODUCTION_ENDPOINT};

/// Apple's development (sandbox) endpoint, for apps built with a development profile.
pub const SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";
/// Age at which the provider token is replaced (Apple rejects tokens older than one hour).
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(45 * 60);

/// The JWT claims Apple reads.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

struct ProviderToken {
    jwt: Arc<str>,
    made: Instant,
}

pub struct ApnsNotifier {
    client: reqwest::Client,
    /// `{endpoint}/3/device/`, to which the percent-encoded token is appended.
    device_url: String,
    topic: String,
    team_id: String,
    header: Header,
    key: EncodingKey,
    token: Mutex<Option<ProviderToken>>,
}

impl std::fmt::Debug for ApnsNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsNotifier")
            .field("device_url", &self.device_url)
            .field("topic", &self.topic)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ApnsNotifier {
    /// Reads the key and checks it signs; builds the HTTP/2 client.
    pub fn new(config: &ApnsConfig) -> anyhow::Result<ApnsNotifier> {
        for (name, value) in [
            ("key_id", &config.key_id),
            ("team_id", &config.team_id),
            ("topic", &config.topic),
        ] {
            anyhow::ensure!(!value.trim().is_empty(), "apns: {name} is empty");
        }
        let endpoint = config.endpoint.trim_end_matches('/');
        let url = reqwest::Url::parse(endpoint)
            .with_context(|| format!("apns: endpoint {endpoint:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "https" | "http"),
            "apns: endpoint {endpoint:?} is not http(s)"
        );
        let path = &config.key_file;
        let pem = std::fs::read(path)
            .with_context(|| format!("apns: reading key_file {}", path.display()))?;
        let key = EncodingKey::from_ec_pem(&pem).with_context(|| {
            format!(
                "apns: key_file {} is not a PKCS#8 EC P-256 PEM (.p8) key",
                path.display()
            )
        })?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(config.key_id.clone());
        let notifier = ApnsNotifier {
            client: http::client("apns", config.ca_file.as_deref(), http::Version::Http2Only)?,
            device_url: format!("{endpoint}/3/device/"),
            topic: config.topic.clone(),
            team_id: config.team_id.clone(),
            header,
            key,
            token: Mutex::new(None),
        };
        // A key that parses as PEM may still not be an EC P-256 key: find out now, not at the
        // first push.
        notifier.provider_token().map_err(|error| {
            anyhow::anyhow!(
                "apns: key_file {} is not a PKCS#8 EC P-256 PEM (.p8) key: {error}",
                path.display()
            )
        })?;
        Ok(notifier)
    }

    /// The current provider token, made afresh when there is none or it is getting old.
    fn provider_token(&self) -> Result<Arc<str>, jsonwebtoken::errors::Error> {
        let mut slot = self.token.lock();
        if let Some(token) = slot.as_ref() {
            if token.made.elapsed() < TOKEN_REFRESH_AFTER {
                return Ok(token.jwt.clone());
            }
        }
        let claims = Claims {
            iss: &self.team_id,
            iat: crate::clock::now_secs(),
        };
        let jwt: Arc<str> = jsonwebtoken::encode(&self.header, &claims, &self.key)?.into();
        *slot = Some(ProviderToken {
            jwt: jwt.clone(),
            made: Instant::now(),
        });
        Ok(jwt)
    }

    /// Forgets `used` so that the next send makes a new token (unless another send already did).
    fn drop_provider_token(&self, used: &str) {
        let mut slot = self.token.lock();
        if slot.as_ref().is_some_and(|token| &*token.jwt == used) {
            *slot = None;
        }
    }

    async fn deliver(&self, n: &Notification) -> Outcome {
        let jwt = match self.provider_token() {
            Ok(jwt) => jwt,
            Err(error) => {
                return Outcome::Failed {
                    reason: format!("apns: signing the provider token: {error}"),
                }
            }
        };
        let url = format!(
            "{}{}",
            self.device_url,
            utf8_percent_encode(&n.token, http::PATH_SEGMENT)
        );
        let request = self
            .client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-expiration", n.expires_at.to_string())
            .header("apns-priority", "10");
        let request = match &n.collapse_id {
            Some(collapse_id) => request.header("apns-collapse-id", collapse_id),
            None => request,
        };
        let response = request.json(&payload(n)).send().await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return http::transport_error("apns", &error),
        };
        let status = response.status().as_u16();
        if status == 200 {
            return Outcome::Sent;
        }
        let after = http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|answer| answer.get("reason")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| http::excerpt(&body, 200));
        let reason_text = format!("apns {status} {reason}");
        match (status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::DeadToken {
                reason: reason_text,
            },
            (403, "ExpiredProviderToken") => {
                self.drop_provider_token(&jwt);
                Outcome::Retry {
                    after: None,
                    reason: reason_text,
                }
            }
            (429 | 500..=599, _) => Outcome::Retry {
                after,
                reason: reason_text,
            },
            _ => Outcome::Failed {
                reason: reason_text,
            },
        }
    }
}

impl Notifier for ApnsNotifier {
    fn provider(&self) -> Provider {
        Provider::Apns
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(notification))
    }
}

/// The JSON payload: `aps` (alert, badge, sound, mutable-content) and the custom keys `ext`,
/// `image` and `taskid`, shaped by `OfflinePushInfo.ApnsInfo`.
pub fn payload(n: &Notification) -> Value {
    let info = &n.offline_push_info;
    let mut alert = Map::new();
    let title = info_str(info, "ApnsInfo", "Title")
        .or(n.title.as_deref())
        .filter(|title| !title.is_empty());
    if let Some(title) = title {
        alert.insert("title".into(), json!(title));
    }
    if let Some(subtitle) = info_str(info, "ApnsInfo", "SubTitle") {
        alert.insert("subtitle".into(), json!(subtitle));
    }
    alert.insert("body".into(), json!(n.body));
    let mut aps = Map::new();
    aps.insert("alert".into(), Value::Object(alert));
    if info_int(info, "ApnsInfo", "BadgeMode").unwrap_or(0) != 1 {
        if let Some(badge) = n.badge {
            aps.insert("badge".into(), json!(badge));
        }
    }
    if let Some(sound) = info_str(info, "ApnsInfo", "Sound") {
        aps.insert("sound".into(), json!(sound));
    }
    if info_int(info, "ApnsInfo", "MutableContent") == Some(1) {
        aps.insert("mutable-content".into(), json!(1));
    }
    let mut root = Map::new();
    root.insert("aps".into(), Value::Object(aps));
    if let Some(ext) = &n.ext {
        root.insert("ext".into(), json!(ext));
    }
    if let Some(image) = info_str(info, "ApnsInfo", "Image") {
        root.insert("image".into(), json!(image));
    }
    root.insert("taskid".into(), json!(n.task_id));
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(info: Value) -> Notification {
        Notification {
            app: 1,
            task_id: "1_2_3_4".into(),
            account: "alice".into(),
            token: "ab12".into(),
            title: Some("plain title".into()),
            body: "the body".into(),
            ext: None,
            offline_push_info: info,
            expires_at: 1_800_000_000,
            badge: Some(3),
            collapse_id: None,
            revoked: false,
        }
    }

    #[test]
    fn payload_without_apns_info() {
        assert_eq!(
            payload(&notification(Value::Null)),
            json!({"aps": {"alert": {"title": "plain title", "body": "the body"}, "badge": 3},
                   "taskid": "1_2_3_4"})
        );
    }

    #[test]
    fn payload_with_every_apns_field() {
        let mut n = notification(json!({"Ext": "{\"k\":1}", "ApnsInfo": {
            "Title": "apns title", "SubTitle": "sub", "Sound": "ding.aiff", "BadgeMode": 1,
            "Image": "https://example.com/i.png", "MutableContent": 1}}));
        n.ext = Some("{\"k\":1}".into());
        assert_eq!(
            payload(&n),
            json!({"aps": {"alert": {"title": "apns title", "subtitle": "sub", "body": "the body"},
                           "sound": "ding.aiff", "mutable-content": 1},
                   "ext": "{\"k\":1}", "image": "https://example.com/i.png", "taskid": "1_2_3_4"})
        );
    }

    #[test]
    fn empty_titles_are_left_out() {
        let mut n = notification(json!({"ApnsInfo": {"Title": "", "BadgeMode": 0}}));
        n.title = Some(String::new());
        n.badge = None;
        assert_eq!(
            payload(&n),
            json!({"aps": {"alert": {"body": "the body"}}, "taskid": "1_2_3_4"})
        );
    }

    #[test]
    fn config_defaults() {
        let config: ApnsConfig = toml::from_str(
            "key_file = \"k.p8\"\nkey_id = \"K\"\nteam_id = \"T\"\ntopic = \"com.example\"",
        )
        .unwrap();
        assert_eq!(config.endpoint, PRODUCTION_ENDPOINT);
        assert_eq!(config.rate_per_sec(), 5000);
        assert!(toml::from_str::<ApnsConfig>("key_file = \"k\"\nsurprise = 1").is_err());
    }

    #[test]
    fn missing_key_file_is_named() {
        let config = ApnsConfig {
            key_file: "/nonexistent/AuthKey.p8".into(),
            key_id: "K".into(),
            team_id: "T".into(),
            topic: "com.example".into(),
            endpoint: PRODUCTION_ENDPOINT.to_owned(),
            ca_file: None,
            rate_per_sec: None,
        };
        let error = format!("{:#}", ApnsNotifier::new(&config).unwrap_err());
        assert!(error.contains("/nonexistent/AuthKey.p8"), "{error}");
    }
}
