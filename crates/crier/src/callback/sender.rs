//! Out of the durable queue: one app's sender claims a request's worth of events at a time
//! under a lease, at most `callback_qps` requests a second, several in flight, and deletes
//! what the app accepted or puts it back for a retry (after 1, 5 and 30 s; dropped and logged
//! after the last). It runs on its own: a receiver that is slow or down only makes the queue
//! longer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use super::wire;
use super::Callbacks;
use crate::clock::{now_ms, now_secs};
use crate::metrics::callbacks::CallbackEnd;
use crate::store::callbacks::{CallbackClaim, Claimed, QueuedCallback};
use crate::store::StoreError;

/// Events per request at most (Tencent's 100).
pub const MAX_EVENTS_PER_REQUEST: usize = 100;
/// A request not answered within this counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits before the 1st, 2nd and 3rd retry; a 4th failure drops the events.
pub const RETRY_AFTER_MS: [u64; 3] = [1_000, 5_000, 30_000];
/// How long claimed events stay with this node: a request takes at most
/// [`REQUEST_TIMEOUT`], so a node that holds them longer has died.
const LEASE_MS: u64 = 10_000;
/// Requests in flight at once per app.
const IN_FLIGHT: usize = 64;
/// An idle sender looks at the queue at least this often (for events other nodes stored).
const IDLE_LOOK: Duration = Duration::from_millis(1_000);
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// Failures are logged once per this period per app, with how many there were.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Spaces requests at the app's `callback_qps`.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock();
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Failed requests and dropped events since the last log line.
#[derive(Default)]
struct FailureLog {
    last: Mutex<Option<Instant>>,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl FailureLog {
    fn failed(&self, app: u64, reason: &str, dropped: u64, sample_task: Option<&str>) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        let mut last = self.last.lock();
        if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let failed = self.failed.swap(0, Ordering::Relaxed);
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!(app, failed_requests = failed, dropped_events = dropped, %reason, task_id = sample_task.unwrap_or_default(), "callback requests failed; events that failed 4 times were dropped");
        } else {
            warn!(app, failed_requests = failed, %reason, "callback requests failed; their events will be sent again");
        }
    }
}

/// Sends the app's callbacks until shutdown. `alone`: no other node shares the store, so
/// events this app's earlier run had claimed are free at once.
pub async fn run(
    callbacks: Arc<Callbacks>,
    node: Arc<str>,
    alone: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = callbacks.app;
    let store = Arc::clone(&callbacks.store);
    let releasing = if alone { None } else { Some(Arc::clone(&node)) };
    match tokio::task::spawn_blocking(move || store.release_callbacks(app, releasing.as_deref()))
        .await
    {
        Ok(Ok(0)) => {}
        Ok(Ok(released)) => info!(
            app,
            released, "callback events claimed before the restart are free again"
        ),
        Ok(Err(error)) => {
            warn!(app, %error, "could not free callback events claimed before the restart; they wait out their lease")
        }
        Err(_) => return,
    }
    let pacer = Pacer {
        interval: Duration::from_secs(1) / callbacks.settings.qps.max(1),
        next: Mutex::new(Instant::now()),
    };
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let log = Arc::new(FailureLog::default());
    let mut depth_at = Instant::now() - DEPTH_EVERY;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if depth_at.elapsed() >= DEPTH_EVERY {
            depth_at = Instant::now();
            update_depth(&callbacks).await;
        }
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        pacer.wait().await;
        let claimed = claim(&callbacks, &node).await;
        let until_ms = match claimed {
            Ok(Claimed::Batch(batch)) => {
                let (callbacks, node, log) =
                    (Arc::clone(&callbacks), Arc::clone(&node), Arc::clone(&log));
                tokio::spawn(async move {
                    send(&callbacks, &node, &log, batch).await;
                    drop(permit);
                });
                continue;
            }
            Ok(Claimed::Wait { until_ms }) => until_ms,
            Err(error) => {
                warn!(app, %error, "cannot read the callback queue; retrying in 1 s");
                Some(now_ms() + 1_000)
            }
        };
        drop(permit);
        let idle = until_ms.map_or(IDLE_LOOK, |until| {
            Duration::from_millis(until.saturating_sub(now_ms())).min(IDLE_LOOK)
        });
        tokio::select! {
            () = callbacks.stored.notified() => {}
            () = tokio::time::sleep(idle) => {}
            _ = shutdown.changed() => {}
        }
    }
    // Let requests in flight end (each within its timeout), then free what this node holds.
    let _ = tokio::time::timeout(
        REQUEST_TIMEOUT + Duration::from_secs(1),
        in_flight.acquire_many(IN_FLIGHT as u32),
    )
    .await;
    let store = Arc::clone(&callbacks.store);
    let _ = tokio::task::spawn_blocking(move || store.release_callbacks(app, Some(&node))).await;
}

async fn claim(callbacks: &Callbacks, node: &Arc<str>) -> Result<Claimed, StoreError> {
    let (store, app, node) = (
        Arc::clone(&callbacks.store),
        callbacks.app,
        Arc::clone(node),
    );
    tokio::task::spawn_blocking(move || {
        let terms = CallbackClaim {
            node: &node,
            now_ms: now_ms(),
            lease_ms: LEASE_MS,
            max: MAX_EVENTS_PER_REQUEST,
        };
        store.claim_callbacks(app, terms)
    })
    .await
    .unwrap_or_else(|e| Err(StoreError::Unavailable(format!("claim task: {e}"))))
}

async fn update_depth(callbacks: &Callbacks) {
    let (store, app) = (Arc::clone(&callbacks.store), callbacks.app);
    if let Ok(Ok(depth)) =
        tokio::task::spawn_blocking(move || store.callback_queue_depth(app)).await
    {
        callbacks.metrics.callbacks.set_queue_depth(app, depth);
    }
}

/// One request; then the events are deleted, or put back for a retry, or dropped.
async fn send(
    callbacks: &Callbacks,
    node: &Arc<str>,
    log: &FailureLog,
    batch: Vec<QueuedCallback>,
) {
    let app = callbacks.app;
    let settings = &callbacks.settings;
    let url = wire::request_url(
        &settings.url,
        app,
        settings.token.as_ref().map(|t| t.0.as_str()),
        now_secs(),
    );
    let body = wire::body(batch.iter().map(|event| event.event.as_str()));
    let answered = callbacks
        .client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .timeout(REQUEST_TIMEOUT)
        .body(body)
        .send()
        .await;
    let outcome = match answered {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(answer) => wire::judge(status, &answer),
                Err(e) => Err(format!(
                    "reading the answer: {}",
                    crate::notify::http::error_chain(&e)
                )),
            }
        }
        Err(e) => Err(crate::notify::http::error_chain(&e)),
    };
    callbacks.metrics.callbacks.request(outcome.is_ok());
    let metrics = &callbacks.metrics.callbacks;
    let ids = |events: &[&QueuedCallback]| events.iter().map(|e| e.id).collect::<Vec<u64>>();
    let store = Arc::clone(&callbacks.store);
    let node = Arc::clone(node);
    let reason = match outcome {
        Ok(()) => {
            metrics.events(CallbackEnd::Sent, batch.len() as u64);
            let sent: Vec<u64> = batch.iter().map(|e| e.id).collect();
            // A failure here sends them again after the lease: at least once.
            let deleted =
                tokio::task::spawn_blocking(move || store.delete_callbacks(app, &sent)).await;
            if !matches!(deleted, Ok(Ok(()))) {
                warn!(
                    app,
                    "could not delete sent callback events; they will be sent again"
                );
            }
            return;
        }
        Err(reason) => reason,
    };
    let mut dropped = Vec::new();
    let mut retries: [Vec<&QueuedCallback>; 3] = Default::default();
    for event in &batch {
        match retries.get_mut(event.attempts as usize) {
            Some(group) => group.push(event),
            None => dropped.push(event),
        }
    }
    let sample_task = dropped.first().and_then(|event| task_id_of(&event.event));
    log.failed(app, &reason, dropped.len() as u64, sample_task.as_deref());
    metrics.events(CallbackEnd::Dropped, dropped.len() as u64);
    metrics.events(CallbackEnd::Retried, (batch.len() - dropped.len()) as u64);
    let dropped = ids(&dropped);
    let retries: Vec<(u64, Vec<u64>)> = retries
        .iter()
        .zip(RETRY_AFTER_MS)
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, after)| (now_ms() + after, ids(group)))
        .collect();
    let stored = tokio::task::spawn_blocking(move || {
        store.delete_callbacks(app, &dropped)?;
        for (at, group) in retries {
            store.retry_callbacks(app, &node, &group, at)?;
        }
        Ok::<(), StoreError>(())
    })
    .await;
    if !matches!(stored, Ok(Ok(()))) {
        warn!(
            app,
            "could not reschedule failed callback events; they are retried when their lease ends"
        );
    }
}

/// The `TaskId` of a stored event, for a log line.
fn task_id_of(event: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(event).ok()?;
    Some(value.get("TaskId")?.as_str()?.to_owned())
}
