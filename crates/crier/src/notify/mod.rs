//! Offline notifications: when a kept push is accepted, every account of its audience that is
//! not online gets one notification per registered device, through the vendor's channel.
//!
//! - providers (`apns`, `fcm`, `webhook`): one [`Notifier`] each, configured per app;
//! - `devices`: the durable device registry, with a bitmap of accounts that have any;
//! - `jobs`: one durable job per push (its target bitmap and a cursor), so a restart resumes
//!   a run without a row per recipient;
//! - `worker`: walks a job's targets in batches, with rate limits, retries and back-off;
//! - `overwrite`: after a revoke, notifies the devices a job reached again, collapsed onto
//!   the first notification, with the revoke's `OfflinePushInfo`.

pub mod apns;
pub mod channels;
pub mod devices;
pub mod fcm;
pub(crate) mod http;
mod overwrite;
pub mod shape;
pub mod webhook;
pub mod worker;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use crate::config::providers::Provider;

/// One notification to one device, already shaped from the push's `OfflinePushInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub app: u64,
    pub task_id: String,
    /// The account the device belongs to.
    pub account: String,
    /// The device token as registered.
    pub token: String,
    /// `OfflinePushInfo.Title` (APNs: `ApnsInfo.Title` wins when set).
    pub title: Option<String>,
    /// `OfflinePushInfo.Desc`, or the message's notification text when `Desc` is empty.
    pub body: String,
    /// `OfflinePushInfo.Ext`, passed through to the device as given.
    pub ext: Option<String>,
    /// `OfflinePushInfo` as sent (`Null` when absent), for the provider-specific fields
    /// (`ApnsInfo.*`, `AndroidInfo.*`).
    pub offline_push_info: serde_json::Value,
    /// Unix seconds after which the push is no longer worth showing (the push's expiry).
    pub expires_at: u64,
    /// The badge to show (APNs `BadgeMode` 0): the account's unacknowledged kept pushes.
    pub badge: Option<u32>,
    /// The key a later notification replaces this one by (APNs `apns-collapse-id`, FCM
    /// `collapse_key` and `tag`): the TaskId of a `timpush` push, so a revoke can overwrite it.
    pub collapse_id: Option<String>,
    /// The overwrite of a revoked push's notification (the webhook says so).
    pub revoked: bool,
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again (429, 5xx, a network error); `after` is the provider's Retry-After.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The provider says this token will never work again (APNs 410 / BadDeviceToken, FCM
    /// UNREGISTERED): the device is removed.
    DeadToken {
        reason: String,
    },
    /// Will not work by retrying (a malformed request, bad credentials).
    Failed {
        reason: String,
    },
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One vendor channel. Implementations keep their own credentials fresh (JWT, OAuth tokens).
pub trait Notifier: Send + Sync {
    fn provider(&self) -> Provider;
    fn send<'a>(&'a self, notification: &'a Notification) -> SendFuture<'a>;
}
