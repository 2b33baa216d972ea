//! Firebase Cloud Messaging, HTTP v1 API.
//!
//! Credentials are a Google service-account JSON file. An OAuth2 access token is obtained with
//! the JWT bearer grant (an RS256 JWT signed with the account's private key, posted to its
//! `token_uri`), cached until 60 seconds before it expires and shared by all sends; only one
//! refresh runs at a time. A 401 from FCM drops the token and the send is retried.
//!
//! Answers: 200 sent; 404 or an error whose details carry `errorCode: UNREGISTERED` end the
//! device; 429 and 5xx are retried (after `Retry-After` when given), as are network errors;
//! anything else fails with FCM's status and message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use percent_encoding::utf8_percent_encode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::http::{self, info_str};
use super::{Notification, Notifier, Outcome, Provider, SendFuture};
pub use crate::config::providers::{FcmConfig, FCM_DEFAULT_ENDPOINT as DEFAULT_ENDPOINT};

pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The OAuth2 scope that allows `messages:send`.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The grant type of the JWT bearer flow (RFC 7523).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// An access token is replaced this long before Google says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// After a failed token fetch, sends within this time get the same answer instead of asking
/// the token endpoint again (a down endpoint is not asked once per queued notification).
const FAILED_FETCH_MEMORY: Duration = Duration::from_secs(1);
/// Lifetime asked for the signed assertion (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// The fields of a service-account file that are used; the others are ignored.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

/// The claims of the JWT bearer assertion.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct AccessToken {
    token: Arc<str>,
    refresh_at: Instant,
}

pub struct FcmNotifier {
    client: reqwest::Client,
    send_url: String,
    token_uri: String,
    client_email: String,
    header: Header,
    key: EncodingKey,
    token: Mutex<Option<AccessToken>>,
    /// Held while fetching a token, so that one fetch runs at a time; holds the last failed
    /// fetch.
    refresh: tokio::sync::Mutex<Option<(Instant, Outcome)>>,
}

impl std::fmt::Debug for FcmNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmNotifier")
            .field("send_url", &self.send_url)
            .field("token_uri", &self.token_uri)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

impl FcmNotifier {
    /// Reads the service account and checks its key signs; builds the client.
    pub fn new(config: &FcmConfig) -> anyhow::Result<FcmNotifier> {
        let path = &config.service_account_file;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("fcm: reading service_account_file {}", path.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text).with_context(|| {
            format!(
                "fcm: service_account_file {} is not a service-account JSON key",
                path.display()
            )
        })?;
        let bad_key = || {
            format!(
                "fcm: the private_key of service_account_file {} is not an RSA PEM key",
                path.display()
            )
        };
        for (name, value) in [
            ("project_id", &account.project_id),
            ("client_email", &account.client_email),
        ] {
            anyhow::ensure!(
                !value.trim().is_empty(),
                "fcm: service_account_file {} has an empty {name}",
                path.display()
            );
        }
        let key =
            EncodingKey::from_rsa_pem(account.private_key.as_bytes()).with_context(bad_key)?;
        let endpoint = config.endpoint.trim_end_matches('/');
        reqwest::Url::parse(endpoint)
            .with_context(|| format!("fcm: endpoint {endpoint:?} is not a URL"))?;
        let token_uri = config
            .token_uri
            .clone()
            .or(account.token_uri)
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
        reqwest::Url::parse(&token_uri)
            .with_context(|| format!("fcm: token_uri {token_uri:?} is not a URL"))?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = account.private_key_id.filter(|id| !id.is_empty());
        let notifier = FcmNotifier {
            client: http::client("fcm", config.ca_file.as_deref(), http::Version::Any)?,
            send_url: format!(
                "{endpoint}/v1/projects/{}/messages:send",
                utf8_percent_encode(&account.project_id, http::PATH_SEGMENT)
            ),
            token_uri,
            client_email: account.client_email,
            header,
            key,
            token: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(None),
        };
        notifier
            .assertion()
            .map_err(|error| anyhow::anyhow!("{}: {error}", bad_key()))?;
        Ok(notifier)
    }

    /// The signed JWT posted to the token endpoint.
    fn assertion(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = crate::clock::now_secs();
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }

    fn cached_token(&self) -> Option<Arc<str>> {
        let slot = self.token.lock();
        let token = slot.as_ref()?;
        (Instant::now() < token.refresh_at).then(|| token.token.clone())
    }

    /// Forgets `used`, unless it was already replaced.
    fn drop_token(&self, used: &str) {
        let mut slot = self.token.lock();
        if slot.as_ref().is_some_and(|token| &*token.token == used) {
            *slot = None;
        }
    }

    /// A valid access token: the cached one, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<Arc<str>, Outcome> {
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let mut last_failure = self.refresh.lock().await;
        // Another send may have fetched one while this one waited, or just failed to.
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        if let Some((when, outcome)) = last_failure.as_ref() {
            if when.elapsed() < FAILED_FETCH_MEMORY {
                return Err(outcome.clone());
            }
        }
        let fetched = self.fetch_token().await;
        *last_failure = fetched
            .as_ref()
            .err()
            .map(|outcome| (Instant::now(), outcome.clone()));
        fetched
    }

    /// Asks the token endpoint for a new access token and caches it.
    async fn fetch_token(&self) -> Result<Arc<str>, Outcome> {
        let assertion = self.assertion().map_err(|error| Outcome::Failed {
            reason: format!("fcm: signing the token assertion: {error}"),
        })?;
        let response = self
            .client
            .post(&self.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|error| http::transport_error("fcm token", &error))?;
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            let reason = format!("fcm token endpoint {status}: {}", http::excerpt(&body, 200));
            return Err(if status == 429 || status >= 500 {
                Outcome::Retry { after, reason }
            } else {
                Outcome::Failed { reason }
            });
        }
        let answer: TokenAnswer = serde_json::from_str(&body).map_err(|error| Outcome::Failed {
            reason: format!("fcm token endpoint: unreadable answer: {error}"),
        })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME_SECS));
        let token: Arc<str> = answer.access_token.into();
        *self.token.lock() = Some(AccessToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        });
        Ok(token)
    }

    async fn deliver(&self, n: &Notification) -> Outcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(&token)
            .json(&message(n, crate::clock::now_secs()))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return http::transport_error("fcm", &error),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Outcome::Sent;
        }
        let after = http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let error = FcmError::read(&body);
        let reason = format!("fcm {status} {}", error.describe(&body));
        if status == 404 || error.error_code.as_deref() == Some("UNREGISTERED") {
            return Outcome::DeadToken { reason };
        }
        match status {
            401 => {
                self.drop_token(&token);
                Outcome::Retry {
                    after: None,
                    reason,
                }
            }
            429 | 500..=599 => Outcome::Retry { after, reason },
            _ => Outcome::Failed { reason },
        }
    }
}

impl Notifier for FcmNotifier {
    fn provider(&self) -> Provider {
        Provider::Fcm
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(notification))
    }
}

/// What an FCM error answer says: `{"error":{"status","message","details":[{"errorCode"}]}}`.
#[derive(Debug, Default)]
struct FcmError {
    status: Option<String>,
    message: Option<String>,
    error_code: Option<String>,
}

impl FcmError {
    fn read(body: &str) -> FcmError {
        let Ok(answer) = serde_json::from_str::<Value>(body) else {
            return FcmError::default();
        };
        let error = &answer["error"];
        let text = |value: &Value| value.as_str().map(str::to_owned);
        FcmError {
            status: text(&error["status"]),
            message: text(&error["message"]),
            error_code: error["details"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|detail| text(&detail["errorCode"])),
        }
    }

    fn describe(&self, body: &str) -> String {
        let parts: Vec<&str> = [&self.status, &self.error_code, &self.message]
            .into_iter()
            .filter_map(|part| part.as_deref())
            .collect();
        if parts.is_empty() {
            http::excerpt(body, 200)
        } else {
            parts.join(" ")
        }
    }
}

/// The `messages:send` body: notification, data (`taskid`, `ext`), Android TTL, channel and
/// sound from `OfflinePushInfo.AndroidInfo`.
pub fn message(n: &Notification, now_secs: u64) -> Value {
    let info = &n.offline_push_info;
    let mut notification = Map::new();
    if let Some(title) = n.title.as_deref().filter(|title| !title.is_empty()) {
        notification.insert("title".into(), json!(title));
    }
    notification.insert("body".into(), json!(n.body));
    let mut data = Map::new();
    data.insert("taskid".into(), json!(n.task_id));
    if let Some(ext) = &n.ext {
        data.insert("ext".into(), json!(ext));
    }
    let mut android = Map::new();
    let ttl = n.expires_at.saturating_sub(now_secs);
    android.insert("ttl".into(), json!(format!("{ttl}s")));
    let mut android_notification = Map::new();
    if let Some(channel) = info_str(info, "AndroidInfo", "GoogleChannelID") {
        android_notification.insert("channel_id".into(), json!(channel));
    }
    if let Some(sound) = info_str(info, "AndroidInfo", "Sound") {
        android_notification.insert("sound".into(), json!(sound));
    }
    if let Some(collapse_id) = &n.collapse_id {
        // The tag replaces a notification shown on the device; the collapse key replaces one
        // still waiting at FCM for the device to come online.
        android.insert("collapse_key".into(), json!(collapse_id));
        android_notification.insert("tag".into(), json!(collapse_id));
    }
    if !android_notification.is_empty() {
        android.insert("notification".into(), Value::Object(android_notification));
    }
    json!({"message": {
        "token": n.token,
        "notification": notification,
        "data": data,
        "android": android,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(info: Value) -> Notification {
        Notification {
            app: 1,
            task_id: "1_2_3_4".into(),
            account: "bob".into(),
            token: "fcm-token".into(),
            title: Some("title".into()),
            body: "body".into(),
            ext: Some("{\"k\":1}".into()),
            offline_push_info: info,
            expires_at: 1_000_120,
            badge: None,
            collapse_id: None,
            revoked: false,
        }
    }

    #[test]
    fn message_with_android_info() {
        let n = notification(json!({"AndroidInfo": {"GoogleChannelID": "news", "Sound": "ding"}}));
        assert_eq!(
            message(&n, 1_000_000),
            json!({"message": {"token": "fcm-token",
                "notification": {"title": "title", "body": "body"},
                "data": {"taskid": "1_2_3_4", "ext": "{\"k\":1}"},
                "android": {"ttl": "120s", "notification": {"channel_id": "news", "sound": "ding"}}}})
        );
    }

    #[test]
    fn message_without_extras() {
        let mut n = notification(Value::Null);
        n.title = None;
        n.ext = None;
        assert_eq!(
            message(&n, 2_000_000),
            json!({"message": {"token": "fcm-token", "notification": {"body": "body"},
                "data": {"taskid": "1_2_3_4"}, "android": {"ttl": "0s"}}})
        );
    }

    #[test]
    fn a_collapse_id_is_the_tag_and_the_collapse_key() {
        let mut n = notification(Value::Null);
        n.collapse_id = Some("657bf434_1_2_3_4".into());
        let message = message(&n, 1_000_000);
        assert_eq!(
            message["message"]["android"]["collapse_key"],
            "657bf434_1_2_3_4"
        );
        assert_eq!(
            message["message"]["android"]["notification"]["tag"],
            "657bf434_1_2_3_4"
        );
    }

    #[test]
    fn error_answers_are_read() {
        let error = FcmError::read(
            r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND",
               "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
        );
        assert_eq!(error.error_code.as_deref(), Some("UNREGISTERED"));
        assert_eq!(
            error.describe(""),
            "NOT_FOUND UNREGISTERED Requested entity was not found."
        );
        assert_eq!(FcmError::read("<html>").describe("<html>"), "<html>");
    }

    #[test]
    fn config_defaults() {
        let config: FcmConfig = toml::from_str("service_account_file = \"sa.json\"").unwrap();
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config.rate_per_sec(), 10_000);
    }
}
