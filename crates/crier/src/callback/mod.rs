//! Delivery callbacks to the app's server: `Push.AllMemberPush` (timpush.md §8), for apps
//! with a `callback_url`.
//!
//! - `queue`: the app's sink of delivery events (`crate::events`); a thread turns
//!   them into callback events and stores them, gathered, in the durable queue
//!   (`crate::store::callbacks`).
//! - `sender`: an async task that claims up to 100 due events at a time under a lease, POSTs
//!   them (signed when a token is set) at most `callback_qps` requests a second, and deletes,
//!   retries or drops them by the answer.
//! - `wire`: the event objects, the query and signature, the judgement of an answer.
//!
//! Emission is a channel send and the sender runs apart from deliveries, so a receiver that
//! is down or never answers costs pushes nothing; the queue is in the store, so a restart
//! (or `kill -9`) loses no event that was stored, and in a cluster each event is sent by the
//! one node that claimed it.

pub mod queue;
pub mod sender;
pub mod wire;

use std::sync::{Arc, OnceLock, Weak};

use crate::config::{AppConfig, SecretKey};
use crate::metrics::Metrics;
use crate::store::Store;
use queue::{CallbackQueue, Writer};

/// Names of accounts, by number (the app's directory).
pub trait AccountNames: Send + Sync {
    /// The name of each account, `None` for one that no longer exists.
    fn names(&self, accounts: &[u32]) -> Vec<Option<String>>;
}

/// Where and how callbacks go, from the app's config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: reqwest::Url,
    pub token: Option<SecretKey>,
    pub qps: u32,
}

impl Settings {
    /// The app's callback settings, `None` when it has no `callback_url` (or one that is not
    /// a URL, which the config refuses at start).
    pub fn of(config: &AppConfig) -> Option<Settings> {
        let url = reqwest::Url::parse(config.callback_url.as_deref()?).ok()?;
        Some(Settings {
            url,
            token: config.callback_token.clone(),
            qps: config.callback_qps.max(1),
        })
    }
}

/// One app's callbacks: the queue its delivery points feed, and what its sender needs.
pub struct Callbacks {
    app: u64,
    settings: Settings,
    store: Arc<dyn Store>,
    queue: Arc<CallbackQueue>,
    names: Arc<OnceLock<Weak<dyn AccountNames>>>,
    /// Told when events were stored.
    stored: Arc<tokio::sync::Notify>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

impl Callbacks {
    /// Starts the app's queue writer. The sender is started by [`sender::run`].
    pub fn start(
        app: u64,
        settings: Settings,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Callbacks> {
        let client =
            crate::notify::http::client("callback", None, crate::notify::http::Version::Any)?;
        let names = Arc::new(OnceLock::new());
        let stored = Arc::new(tokio::sync::Notify::new());
        let queue = CallbackQueue::start(Writer {
            app,
            store: Arc::clone(&store),
            names: Arc::clone(&names),
            stored: Arc::clone(&stored),
            metrics: Arc::clone(&metrics),
        });
        Ok(Callbacks {
            app,
            settings,
            store,
            queue: Arc::new(queue),
            names,
            stored,
            client,
            metrics,
        })
    }

    /// How accounts are named; given once the app is open (its façade names them).
    pub fn name_accounts_with(&self, names: Weak<dyn AccountNames>) {
        let _ = self.names.set(names);
    }

    /// The sink to add to the app's delivery events.
    pub fn sink(&self) -> Arc<CallbackQueue> {
        Arc::clone(&self.queue)
    }

    /// Stores every event handed over so far. Blocking.
    pub fn flush(&self) {
        self.queue.flush();
    }
}
