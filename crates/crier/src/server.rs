//! Opening the apps and serving them: `serve` takes a bound listener and a shutdown future,
//! so `main` and the integration tests run the very same server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::config::{AppConfig, Limits};
use crate::http::body::BodyBudget;
use crate::http::Edge;
use crate::metrics::Metrics;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;
use crate::tenant::{OpenError, Tenant};

pub struct AppState {
    pub tenants: HashMap<u64, Arc<Tenant>>,
    pub store: Arc<dyn Store>,
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

    pub fn with_store(store: Arc<dyn Store>, apps: Vec<AppConfig>) -> Result<AppState, OpenError> {
        let metrics = Arc::new(Metrics::default());
        let mut tenants = HashMap::new();
        for app in apps {
            let tenant = Tenant::open_with_metrics(app, Arc::clone(&store), Arc::clone(&metrics))?;
            tenants.insert(tenant.sdkappid(), Arc::new(tenant));
        }
        let limits = Limits::default();
        Ok(AppState {
            tenants,
            store,
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
            tenant.delivery.flush_records();
            if let Err(error) = tenant.snapshot() {
                warn!(app = tenant.sdkappid(), %error, "snapshot at shutdown failed; the write log still holds everything");
            }
        }
        if let Err(error) = self.store.flush() {
            warn!(%error, "store flush at shutdown failed");
        }
    }
}

fn body_budget(limits: &Limits) -> BodyBudget {
    BodyBudget::new(
        limits.request_body_budget_bytes,
        std::time::Duration::from_secs(limits.body_timeout_secs),
    )
}

/// Serves the REST API on `listener` until `shutdown` completes, then stops accepting,
/// gives requests in flight until the shutdown deadline, and flushes the store anyway.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "listening");
    let purger = tokio::spawn(purge_expired_pushes(Arc::clone(&state)));
    let tenants = state.tenants.values().cloned().collect();
    let sampler = tokio::spawn(crate::tenant::console_reads::sample_every(tenants));
    for tenant in state.tenants.values() {
        tokio::spawn(crate::notify::worker::run(
            Arc::clone(tenant),
            state.shutdown.subscribe(),
        ));
    }
    let edge = Arc::new(Edge::new(state.limits.clone(), Arc::clone(&state.metrics)));
    let router = crate::api::router(Arc::clone(&state));
    crate::http::run(listener, router, edge, state.shutdown.clone(), shutdown).await;
    purger.abort();
    sampler.abort();
    info!("shutting down: flushing the store");
    tokio::task::spawn_blocking(move || state.flush())
        .await
        .map_err(std::io::Error::other)?;
    info!("stopped");
    Ok(())
}

/// How often expired pushes leave memory and the store.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn purge_expired_pushes(state: Arc<AppState>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        for tenant in state.tenants.values() {
            let tenant = Arc::clone(tenant);
            match tokio::task::spawn_blocking(move || tenant.delivery.purge_expired(now_ms())).await
            {
                Ok(Ok(0)) => {}
                Ok(Ok(purged)) => info!(purged, "expired pushes purged"),
                Ok(Err(error)) => warn!(%error, "purging expired pushes failed; will retry"),
                Err(error) => warn!(%error, "purge task failed"),
            }
        }
    }
}
