//! What every request handler and session shares: the apps (each behind its façade), the
//! store, the metrics, the shutdown signal and the edge's limits.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use crate::bus::local::LocalBus;
use crate::bus::{Bus, NodeId};
use crate::config::{AppConfig, Limits};
use crate::http::body::BodyBudget;
use crate::metrics::Metrics;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tenant::{OpenError, Shared, Tenant};

pub struct AppState {
    pub tenants: HashMap<u64, Arc<Tenant>>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    /// This node, in announcements and job leases.
    pub node: NodeId,
    pub metrics: Arc<Metrics>,
    /// Flips to `true` when the server stops; sessions close on it.
    pub shutdown: watch::Sender<bool>,
    pub limits: Limits,
    /// Request bodies in memory, over all requests (`Limits::request_body_budget_bytes`).
    pub body_budget: BodyBudget,
}

impl AppState {
    /// Opens the embedded store under `data_dir` and loads every app. Blocking.
    pub fn open(data_dir: &std::path::Path, apps: Vec<AppConfig>) -> Result<AppState, OpenError> {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data_dir)?);
        Self::with_store(store, apps)
    }

    /// Loads every app from `store`, on the in-process bus. Blocking.
    pub fn with_store(store: Arc<dyn Store>, apps: Vec<AppConfig>) -> Result<AppState, OpenError> {
        Self::with_backends(store, Arc::new(LocalBus::default()), new_node_id(), apps)
    }

    /// Loads every app from `store`, announcing on `bus` as `node`. Blocking.
    pub fn with_backends(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        node: NodeId,
        apps: Vec<AppConfig>,
    ) -> Result<AppState, OpenError> {
        let metrics = Arc::new(Metrics::default());
        let mut tenants = HashMap::new();
        for app in apps {
            let shared = Shared {
                metrics: Arc::clone(&metrics),
                bus: Arc::clone(&bus),
                node: Arc::clone(&node),
            };
            let tenant = Tenant::open(app, Arc::clone(&store), shared)?;
            tenants.insert(tenant.sdkappid(), tenant);
        }
        let limits = Limits::default();
        Ok(AppState {
            tenants,
            store,
            bus,
            node,
            metrics,
            shutdown: watch::Sender::new(false),
            body_budget: body_budget(&limits),
            limits,
        })
    }

    /// The same server with other limits (the defaults are Tencent-sized and internet-safe).
    pub fn with_limits(mut self, limits: Limits) -> AppState {
        self.body_budget = body_budget(&limits);
        self.limits = limits;
        self
    }

    /// Stores pending acknowledgements and delivery counts, snapshots every app and flushes
    /// the store, so the next start replays nothing. Blocking.
    pub fn flush(&self) {
        for tenant in self.tenants.values() {
            tenant.flush();
        }
        if let Err(error) = self.store.flush() {
            warn!(%error, "store flush at shutdown failed");
        }
    }
}

/// A name for a node started without one: unique enough among the nodes of a cluster.
pub fn new_node_id() -> NodeId {
    format!("node-{:08x}", rand::random::<u32>()).into()
}

fn body_budget(limits: &Limits) -> BodyBudget {
    BodyBudget::new(
        limits.request_body_budget_bytes,
        std::time::Duration::from_secs(limits.body_timeout_secs),
    )
}
