//! Webhook: one signed JSON POST per notification to the operator's URL, for an in-house
//! service or a vendor Crier does not speak.
//!
//! # The request
//!
//! `POST <url>` with `Content-Type: application/json` and this body:
//!
//! ```json
//! {"SdkAppId": 1400000001, "TaskId": "1400000001_...", "To_Account": "alice",
//!  "Token": "the device token as registered", "Title": "", "Desc": "the text to show",
//!  "Ext": "", "OfflinePushInfo": {...} or null, "ExpiresAt": 1795436400}
//! ```
//!
//! `Title` and `Ext` are empty strings when the push has none; `OfflinePushInfo` is the push's
//! own, as sent to `im_push`; `ExpiresAt` is the Unix time after which it is not worth showing.
//!
//! Notifications of `v4/timpush` pushes add `"CollapseId"`: the TaskId, the key by which a
//! later notification replaces this one. When such a push is revoked, every device the
//! webhook was sent it for gets a revoke event, the same body with `"Revoked": true`:
//! `Title`, `Desc`, `Ext` and `OfflinePushInfo` are then the revoke's own (what should be
//! shown instead; all empty and `null` when the revoke gave none, and the notification should
//! just be removed).
//!
//! ```json
//! {"SdkAppId": 1400000001, "TaskId": "657bf434_...", "To_Account": "alice", "Token": "...",
//!  "Title": "Correction", "Desc": "the sale starts Saturday", "Ext": "",
//!  "OfflinePushInfo": {"Title": "Correction", ...}, "ExpiresAt": 1795436400,
//!  "CollapseId": "657bf434_...", "Revoked": true}
//! ```
//!
//! # The signature
//!
//! Two headers authenticate the request:
//!
//! - `X-Crier-Timestamp`: the Unix time (seconds) when it was signed;
//! - `X-Crier-Signature`: `sha256=` followed by the lowercase hex HMAC-SHA256, keyed with the
//!   webhook's `secret` (its UTF-8 bytes), of the timestamp, a `.`, and the raw body bytes:
//!   `hex(HMAC_SHA256(secret, "<X-Crier-Timestamp>.<body>"))`.
//!
//! To verify: compute the same HMAC over the body exactly as received (before any JSON
//! parsing), compare it with the header in constant time, and refuse a timestamp more than a
//! few minutes from your clock, which stops a captured request from being replayed later.
//! A retried notification is signed again with a new timestamp; `TaskId` + `Token` identify it.
//!
//! # The answer
//!
//! 2xx: delivered. 410: the token is dead, Crier removes the device. 429 and 5xx: retried later
//! (after `Retry-After` when given); network errors too. Any other status: failed, not retried.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::http;
use super::{Notification, Notifier, Outcome, Provider, SendFuture};
pub use crate::config::providers::WebhookConfig;
use crate::config::SecretKey;

pub const TIMESTAMP_HEADER: &str = "x-crier-timestamp";
pub const SIGNATURE_HEADER: &str = "x-crier-signature";

pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: SecretKey,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex>`: the `X-Crier-Signature` of `body` signed at `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + digest.len() * 2);
    text.push_str("sha256=");
    for byte in digest {
        text.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    text
}

impl WebhookNotifier {
    pub fn new(config: &WebhookConfig) -> anyhow::Result<WebhookNotifier> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|error| anyhow::anyhow!("webhook: url {:?}: {error}", config.url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "https" | "http"),
            "webhook: url {:?} is not http(s)",
            config.url
        );
        anyhow::ensure!(!config.secret.0.is_empty(), "webhook: secret is empty");
        Ok(WebhookNotifier {
            client: http::client("webhook", None, http::Version::Any)?,
            url,
            secret: config.secret.clone(),
        })
    }

    async fn deliver(&self, n: &Notification) -> Outcome {
        let mut body = json!({
            "SdkAppId": n.app,
            "TaskId": n.task_id,
            "To_Account": n.account,
            "Token": n.token,
            "Title": n.title.as_deref().unwrap_or(""),
            "Desc": n.body,
            "Ext": n.ext.as_deref().unwrap_or(""),
            "OfflinePushInfo": n.offline_push_info,
            "ExpiresAt": n.expires_at,
        });
        if let Some(collapse_id) = &n.collapse_id {
            body["CollapseId"] = json!(collapse_id);
        }
        if n.revoked {
            body["Revoked"] = json!(true);
        }
        let body = body.to_string();
        let timestamp = crate::clock::now_secs();
        let response = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(self.secret.0.as_bytes(), timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return http::transport_error("webhook", &error),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Outcome::Sent;
        }
        let after = http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let reason = format!("webhook {status} {}", http::excerpt(&body, 200))
            .trim_end()
            .to_owned();
        match status {
            410 => Outcome::DeadToken { reason },
            429 | 500..=599 => Outcome::Retry { after, reason },
            _ => Outcome::Failed { reason },
        }
    }
}

impl Notifier for WebhookNotifier {
    fn provider(&self) -> Provider {
        Provider::Webhook
    }

    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(notification))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'secret'
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn config_keeps_the_secret_out_of_debug() {
        let config: WebhookConfig =
            toml::from_str("url = \"http://127.0.0.1:9/hook\"\nsecret = \"s3cret\"").unwrap();
        assert_eq!(config.rate_per_sec(), 1000);
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(WebhookNotifier::new(&config).is_ok());
    }
}
