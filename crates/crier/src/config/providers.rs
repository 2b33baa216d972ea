//! The configuration of the offline notification providers (`[app.apns]`, `[app.fcm]`,
//! `[app.webhook]`) and the name of each provider. They live with the rest of the
//! configuration so that `config` depends on nothing else in the crate; `notify` reads them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SecretKey;

pub const APNS_PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
const APNS_DEFAULT_RATE_PER_SEC: u32 = 5000;
pub const FCM_DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// FCM's 600k a minute.
const FCM_DEFAULT_RATE_PER_SEC: u32 = 10_000;
const WEBHOOK_DEFAULT_RATE_PER_SEC: u32 = 1000;

fn apns_default_endpoint() -> String {
    APNS_PRODUCTION_ENDPOINT.to_owned()
}

fn fcm_default_endpoint() -> String {
    FCM_DEFAULT_ENDPOINT.to_owned()
}

/// The vendor channel a device is reached through; also the `Platform` of `RegisterDevice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Apns,
    Fcm,
    Webhook,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Apns, Provider::Fcm, Provider::Webhook];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Apns => "apns",
            Provider::Fcm => "fcm",
            Provider::Webhook => "webhook",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// `[app.apns]`: token-based authentication with a `.p8` key from the Apple developer account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// The `.p8` signing key (PKCS#8 PEM, EC P-256) as downloaded from Apple.
    pub key_file: PathBuf,
    /// The key's 10-character identifier (the JWT's `kid`).
    pub key_id: String,
    /// The developer team identifier (the JWT's `iss`).
    pub team_id: String,
    /// The app's bundle identifier (`apns-topic`).
    pub topic: String,
    /// `https://api.push.apple.com` unless set (the sandbox, or a test server).
    #[serde(default = "apns_default_endpoint")]
    pub endpoint: String,
    /// Extra trusted root certificates (PEM), beside the built-in ones; for tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Notifications per second at most (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

impl ApnsConfig {
    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
            .unwrap_or(APNS_DEFAULT_RATE_PER_SEC)
            .max(1)
    }
}

/// `[app.fcm]`: a service account of the Firebase project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON key (`project_id`, `client_email`, `private_key`, `token_uri`).
    pub service_account_file: PathBuf,
    /// `https://fcm.googleapis.com` unless set.
    #[serde(default = "fcm_default_endpoint")]
    pub endpoint: String,
    /// Overrides the file's `token_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_uri: Option<String>,
    /// Extra trusted root certificates (PEM), beside the built-in ones; for tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Notifications per second at most (default 10,000, FCM's 600k a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

impl FcmConfig {
    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec.unwrap_or(FCM_DEFAULT_RATE_PER_SEC).max(1)
    }
}

/// `[app.webhook]`: where to post and the key that signs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that receives the POSTs.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Crier-Signature` (never logged).
    pub secret: SecretKey,
    /// Notifications per second at most (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

impl WebhookConfig {
    pub fn rate_per_sec(&self) -> u32 {
        self.rate_per_sec
            .unwrap_or(WEBHOOK_DEFAULT_RATE_PER_SEC)
            .max(1)
    }
}
