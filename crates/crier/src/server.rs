//! Serving the apps: `serve` takes a bound listener and a shutdown future, so `main` and the
//! integration tests run the very same server. This module only wires: the routes, the edge,
//! the background work, the flush at the end.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{any, get};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::{info, warn};

pub use crate::app_state::AppState;
use crate::bus::local::LocalBus;
use crate::bus::nats::NatsBus;
use crate::bus::{Bus, NodeId};
use crate::clock::now_ms;
use crate::config::Config;
use crate::http::Edge;
use crate::metrics::BackgroundTask;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

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
        let (tenant, shutdown) = (Arc::clone(tenant), state.shutdown.subscribe());
        let metrics = Arc::clone(&state.metrics);
        crate::supervise::spawn_task(BackgroundTask::Notifications, metrics, move || {
            crate::notify::worker::run(
                tenant.notifications(),
                Arc::clone(&tenant) as _,
                tenant.node(),
                shutdown.clone(),
            )
        });
    }
    for tenant in state.tenants.values() {
        let (tenant, shutdown) = (Arc::clone(tenant), state.shutdown.subscribe());
        let metrics = Arc::clone(&state.metrics);
        crate::supervise::spawn_task(BackgroundTask::ScheduledTasks, metrics, move || {
            Arc::clone(&tenant).run_sched_tasks(shutdown.clone())
        });
    }
    for tenant in state.tenants.values() {
        let Some(callbacks) = tenant.callbacks() else {
            continue;
        };
        let (node, alone) = (tenant.node(), !state.bus.spans_nodes());
        let shutdown = state.shutdown.subscribe();
        let metrics = Arc::clone(&state.metrics);
        crate::supervise::spawn_task(BackgroundTask::Callbacks, metrics, move || {
            crate::callback::sender::run(
                Arc::clone(&callbacks),
                Arc::clone(&node),
                alone,
                shutdown.clone(),
            )
        });
    }
    if state.bus.spans_nodes() {
        for tenant in state.tenants.values() {
            tokio::spawn(Arc::clone(tenant).run_cluster_sync(state.shutdown.subscribe()));
        }
    }
    let edge = Arc::new(Edge::new(state.limits.clone(), Arc::clone(&state.metrics)));
    let router = router(Arc::clone(&state));
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

/// Opens the store and the bus `config` names (the embedded SQLite store under its data
/// directory and the in-process bus by default) and loads every app of `config`.
pub async fn open_state(config: &Config) -> Result<AppState, OpenStateError> {
    let store: Arc<dyn Store> = match &config.store {
        None => {
            let data_dir = config.data_dir.clone();
            Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&data_dir)).await??)
        }
        Some(url) => {
            let url = url.clone();
            Arc::new(tokio::task::spawn_blocking(move || PostgresStore::open(url.expose())).await??)
        }
    };
    let node: NodeId = match &config.node_id {
        Some(node) => node.as_str().into(),
        None => crate::app_state::new_node_id(),
    };
    let bus: Arc<dyn Bus> = match &config.bus {
        None => Arc::new(LocalBus::default()),
        Some(url) => Arc::new(
            NatsBus::connect(
                url.expose(),
                &config.bus_subject_prefix,
                Arc::clone(&node),
                Arc::clone(&store),
            )
            .await?,
        ),
    };
    info!(%node, store = %config.store.as_ref().map_or_else(|| "embedded SQLite".to_owned(), ToString::to_string), bus = %config.bus.as_ref().map_or_else(|| "in-process".to_owned(), ToString::to_string), "backends open");
    let apps = config.apps.clone();
    let state =
        tokio::task::spawn_blocking(move || AppState::with_backends(store, bus, node, apps))
            .await??;
    Ok(state.with_limits(config.limits.clone()))
}

#[derive(Debug, thiserror::Error)]
pub enum OpenStateError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Bus(#[from] crate::bus::nats::ConnectError),
    #[error(transparent)]
    Open(#[from] crate::tenant::OpenError),
    #[error("opening failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Every route: the REST API, the WebSocket gateway, health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v4/{service}/{command}", any(crate::api::dispatch))
        .route("/v4/ws", get(crate::gateway::upgrade))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/metrics",
            get(|State(state): State<Arc<AppState>>| async move { state.metrics.render() }),
        )
        .merge(crate::console::router())
        .fallback(crate::api::unknown_route)
        .with_state(state)
}

/// How often expired pushes leave memory and the store.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

async fn purge_expired_pushes(state: Arc<AppState>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    loop {
        every.tick().await;
        for tenant in state.tenants.values() {
            let tenant = Arc::clone(tenant);
            match tokio::task::spawn_blocking(move || tenant.purge_expired(now_ms())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(purged)) => info!(purged, "expired pushes purged"),
                Ok(Err(error)) => warn!(%error, "purging expired pushes failed; will retry"),
                Err(error) => warn!(%error, "purge task failed"),
            }
        }
    }
}
