//! The providers an app's config names, ready to send.

use std::collections::HashMap;
use std::sync::Arc;

use super::apns::ApnsNotifier;
use super::fcm::FcmNotifier;
use super::webhook::WebhookNotifier;
use super::worker::Channel;
use super::{Notifier, Provider};
use crate::config::AppConfig;

/// Builds every provider configured for `config`; an error names the provider and the problem
/// (a missing key file, a malformed service account).
pub fn open(config: &AppConfig) -> Result<HashMap<Provider, Channel>, (Provider, anyhow::Error)> {
    let mut channels = HashMap::new();
    if let Some(apns) = &config.apns {
        let notifier = ApnsNotifier::new(apns).map_err(|e| (Provider::Apns, e))?;
        channels.insert(Provider::Apns, channel(notifier, apns.rate_per_sec()));
    }
    if let Some(fcm) = &config.fcm {
        let notifier = FcmNotifier::new(fcm).map_err(|e| (Provider::Fcm, e))?;
        channels.insert(Provider::Fcm, channel(notifier, fcm.rate_per_sec()));
    }
    if let Some(webhook) = &config.webhook {
        let notifier = WebhookNotifier::new(webhook).map_err(|e| (Provider::Webhook, e))?;
        channels.insert(Provider::Webhook, channel(notifier, webhook.rate_per_sec()));
    }
    Ok(channels)
}

fn channel(notifier: impl Notifier + 'static, per_sec: u32) -> Channel {
    Channel::new(Arc::new(notifier) as Arc<dyn Notifier>, per_sec)
}
