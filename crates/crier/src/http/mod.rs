//! The server's edge: accepting connections under a cap, serving each with the timeouts and
//! limits of [`Limits`], and stopping with a deadline.
//!
//! - [`connection`]: one connection's life, its watchdog and hyper's protocol settings.
//! - [`body`]: request bodies read under a per-request limit and a shared budget.
//!
//! What was refused and why is counted in [`crate::metrics::refusals`].
//!
//! Past `max_connections`, a connection is still served from a small reserve, but only for
//! `/healthz`, `/metrics` and signed admin calls (which authenticate before reading a body),
//! so an operator can look in while hostile clients hold the rest; past the reserve it is
//! closed at once.

pub mod body;
pub mod connection;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Limits;
use crate::delivery::conn::ConnIo;
use crate::metrics::refusals::Refusal;
use crate::metrics::Metrics;
use connection::Place;

/// How often refusals are summed up in the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed accept (out of files, say), wait this long rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// What every connection shares: the limits, the count of open connections (in the metrics,
/// which also count the refusals).
pub struct Edge {
    pub limits: Limits,
    /// `Limits::max_connections`, resolved against the open-file limit.
    pub connection_cap: usize,
    metrics: Arc<Metrics>,
    all_closed: Notify,
}

impl Edge {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Edge {
        Edge {
            connection_cap: limits.connection_cap(open_file_limit()),
            limits,
            metrics,
            all_closed: Notify::new(),
        }
    }

    fn open(&self) -> &AtomicUsize {
        &self.metrics.connections_open
    }

    pub fn refuse(&self, refusal: Refusal) {
        self.metrics.refusals.count(refusal);
    }

    /// Client connections open now, WebSocket sessions included.
    pub fn open_connections(&self) -> usize {
        self.open().load(Ordering::Acquire)
    }

    async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The soft limit on open files of this process, from `/proc` (Linux); `None` elsewhere.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Accepts and serves connections until `shutdown` completes; then stops accepting, tells
/// every connection (and, through `sessions_stop`, every WebSocket session) to finish, and
/// waits for them until the shutdown deadline, after which what is left is cut.
pub async fn run(
    listener: TcpListener,
    router: Router,
    edge: Arc<Edge>,
    sessions_stop: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    info!(
        max_connections = edge.connection_cap,
        reserved = edge.limits.reserved_connections,
        "accepting connections"
    );
    let log_refusals = tokio::spawn({
        let metrics = Arc::clone(&edge.metrics);
        async move { metrics.refusals.log_every(REFUSAL_LOG_INTERVAL).await }
    });
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, _addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        if is_out_of_files(&error) {
                            edge.refuse(Refusal::OpenFiles);
                        } else {
                            debug!(%error, "accept failed");
                        }
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let (place, open) = Place::take(&edge);
                if open > edge.connection_cap + edge.limits.reserved_connections {
                    edge.refuse(Refusal::ConnectionCap);
                    // A reset rather than a FIN: nothing to say, and no TIME_WAIT to keep.
                    let _ = tcp.set_zero_linger();
                    continue;
                }
                // Pushes are small frames that must leave at once, not wait for Nagle's
                // algorithm to coalesce them with an acknowledgement the client may delay.
                if let Err(error) = tcp.set_nodelay(true) {
                    debug!(%error, "could not set TCP_NODELAY");
                }
                let reserve = open > edge.connection_cap;
                connections.spawn(connection::serve(
                    ConnIo::new(tcp),
                    place,
                    reserve,
                    router.clone(),
                    Arc::clone(&edge),
                    stopping.clone(),
                ));
            }
        }
    }
    drop(listener);
    let deadline = Duration::from_secs(edge.limits.shutdown_timeout_secs);
    info!(
        open = edge.open_connections(),
        deadline_secs = deadline.as_secs(),
        "stopped accepting; closing connections"
    );
    let _ = stop.send(true);
    sessions_stop.send_replace(true);
    let drained = async {
        while connections.join_next().await.is_some() {}
        edge.all_closed().await;
    };
    if tokio::time::timeout(deadline, drained).await.is_err() {
        let cut = edge.open_connections();
        for _ in 0..cut {
            edge.refuse(Refusal::ShutdownCut);
        }
        warn!(
            cut,
            deadline_secs = deadline.as_secs(),
            "shutdown deadline reached: cutting the connections still open"
        );
        connections.abort_all();
    }
    log_refusals.abort();
}

fn is_out_of_files(error: &std::io::Error) -> bool {
    // EMFILE and ENFILE: this process, or the whole system, has no file left.
    matches!(error.raw_os_error(), Some(23 | 24))
}
