//! Opening the apps and serving them: `serve` takes a bound listener and a shutdown future,
//! so `main` and the integration tests run the very same server.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn};

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::config::AppConfig;
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
        Ok(AppState {
            tenants,
            store,
            metrics,
            shutdown: watch::Sender::new(false),
        })
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

/// Serves the REST API on `listener` until `shutdown` completes, then stops accepting,
/// finishes requests in flight and flushes the store.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    info!(addr = %listener.local_addr()?, "listening");
    let purger = tokio::spawn(purge_expired_pushes(Arc::clone(&state)));
    for tenant in state.tenants.values() {
        tokio::spawn(crate::notify::worker::run(
            Arc::clone(tenant),
            state.shutdown.subscribe(),
        ));
    }
    let sessions_stop = state.shutdown.clone();
    let shutdown = async move {
        shutdown.await;
        // Open WebSocket sessions would hold the graceful shutdown forever: end them first.
        sessions_stop.send_replace(true);
    };
    let listener = crate::gateway::GatewayListener(listener);
    let app = crate::api::router(Arc::clone(&state))
        .into_make_service_with_connect_info::<crate::gateway::ClientConn>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    purger.abort();
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
