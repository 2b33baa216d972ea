//! Into the durable queue: delivery events become callback events on a thread of their own,
//! gathered for a few milliseconds and stored in one transaction, so ten thousand sessions
//! acknowledging at once cost a handful of transactions and the delivery points only ever
//! hand a message to a channel.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tracing::error;

use super::wire::{self, Event, CALLBACK_COMMAND};
use super::AccountNames;
use crate::clock::now_ms;
use crate::events::{DeliveryEvent, DeliveryEventSink, DeliveryStep};
use crate::metrics::callbacks::CallbackEnd;
use crate::metrics::{BackgroundTask, Metrics};
use crate::store::{PushRecord, Store};

/// How long a batch gathers after its first event.
const GATHER_WINDOW: Duration = Duration::from_millis(10);
/// Events per stored batch at most (one transaction each).
const MAX_GATHERED: usize = 20_000;
/// A new event is sent at the latest this long after it was stored (with fewer than a full
/// request's worth waiting).
pub const BATCH_WAIT_MS: u64 = 1_000;
/// Account names looked up per hold of the directory.
const NAMES_PER_LOOKUP: usize = 4_096;
/// While the store refuses writes, events wait in memory up to this many; older ones are
/// dropped (and counted) past it.
const MAX_UNSTORED: usize = 1_000_000;
const STORE_RETRY: Duration = Duration::from_secs(1);

enum Message {
    Events(Vec<DeliveryEvent>),
    Flush(mpsc::Sender<()>),
}

/// The delivery-event sink of one app's callbacks.
pub struct CallbackQueue {
    sender: mpsc::Sender<Message>,
}

impl DeliveryEventSink for CallbackQueue {
    fn wants(&self, task: &PushRecord) -> bool {
        reported(task)
    }

    fn take(&self, events: Vec<DeliveryEvent>) {
        let _ = self.sender.send(Message::Events(events));
    }
}

/// Whether a push's deliveries are reported by callbacks: `timpush` tasks (`push`, `batch`,
/// and the runs of scheduled tasks), never a classic `im_push`.
fn reported(task: &PushRecord) -> bool {
    task.kind.is_timpush()
}

/// What the writer thread works with.
pub(super) struct Writer {
    pub app: u64,
    pub store: Arc<dyn Store>,
    pub names: Arc<OnceLock<Weak<dyn AccountNames>>>,
    /// Wakes the sender when events were stored.
    pub stored: Arc<tokio::sync::Notify>,
    pub metrics: Arc<Metrics>,
}

impl CallbackQueue {
    pub(super) fn start(writer: Writer) -> CallbackQueue {
        let (sender, messages) = mpsc::channel();
        let metrics = Arc::clone(&writer.metrics);
        crate::supervise::spawn(BackgroundTask::CallbackQueue, metrics, move || {
            writer.run(&messages)
        });
        CallbackQueue { sender }
    }

    /// Returns once every event handed over before the call is stored (or given up on).
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Writer {
    fn run(&self, messages: &mpsc::Receiver<Message>) {
        let mut unstored: Vec<String> = Vec::new();
        loop {
            let first = if unstored.is_empty() {
                match messages.recv() {
                    Ok(first) => Some(first),
                    Err(_) => return,
                }
            } else {
                // The store failed last time: try again soon, with whatever came since.
                match messages.recv_timeout(STORE_RETRY) {
                    Ok(first) => Some(first),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            };
            let mut flushes = Vec::new();
            let deadline = Instant::now() + GATHER_WINDOW;
            let mut next = first;
            while let Some(message) = next.take() {
                match message {
                    Message::Events(events) => self.encode(events, &mut unstored),
                    Message::Flush(done) => flushes.push(done),
                }
                if unstored.len() < MAX_GATHERED && flushes.is_empty() {
                    next = messages
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        .ok();
                }
            }
            self.store_all(&mut unstored);
            if !unstored.is_empty() && !flushes.is_empty() {
                error!(
                    app = self.app,
                    events = unstored.len(),
                    "callback events could not be stored at shutdown; they are lost"
                );
                self.metrics
                    .callbacks
                    .events(CallbackEnd::Dropped, unstored.len() as u64);
                unstored.clear();
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Stores what waits, in transactions of at most [`MAX_GATHERED`]; what the store refused
    /// stays in `unstored` (the oldest dropped past [`MAX_UNSTORED`]).
    fn store_all(&self, unstored: &mut Vec<String>) {
        while !unstored.is_empty() {
            let now = now_ms();
            let take = unstored.len().min(MAX_GATHERED);
            match self.store.enqueue_callbacks(
                self.app,
                &unstored[..take],
                now,
                now + BATCH_WAIT_MS,
            ) {
                Ok(()) => {
                    unstored.drain(..take);
                    self.metrics
                        .callbacks
                        .events(CallbackEnd::Enqueued, take as u64);
                    self.stored.notify_one();
                }
                Err(e) => {
                    let over = unstored.len().saturating_sub(MAX_UNSTORED);
                    if over > 0 {
                        unstored.drain(..over);
                        self.metrics
                            .callbacks
                            .events(CallbackEnd::Dropped, over as u64);
                    }
                    error!(app = self.app, error = %e, waiting = unstored.len(), dropped = over, "storing callback events failed; retrying in 1 s");
                    return;
                }
            }
        }
    }

    /// Appends the callback events of `events` (JSON texts) to `out`.
    fn encode(&self, events: Vec<DeliveryEvent>, out: &mut Vec<String>) {
        let names = self.names.get().and_then(Weak::upgrade);
        let Some(names) = names else {
            // The app is gone (shutting down); nobody is left to name the accounts.
            return;
        };
        for event in events {
            let accounts: Vec<u32> = match &event.step {
                DeliveryStep::Written { accounts, .. } => accounts.iter().collect(),
                DeliveryStep::Acked { account } | DeliveryStep::Notified { account, .. } => {
                    vec![*account]
                }
            };
            for chunk in accounts.chunks(NAMES_PER_LOOKUP) {
                let named = names.names(chunk);
                for name in named.iter().flatten() {
                    out.push(callback_event(&event, name));
                }
            }
        }
    }
}

/// The callback event of `event` for the account named `to_account`.
pub fn callback_event(event: &DeliveryEvent, to_account: &str) -> String {
    let task = &event.task;
    let (event_type, stage, platform, err_code, err_info) = match &event.step {
        DeliveryStep::Written { .. } => (wire::ONLINE, wire::STAGE_SENT, 0, 0, "OK".to_owned()),
        DeliveryStep::Acked { .. } => (wire::ONLINE, wire::STAGE_REACHED, 0, 0, "OK".to_owned()),
        DeliveryStep::Notified {
            provider, refused, ..
        } => {
            let platform = wire::push_platform(*provider);
            match refused {
                None => (
                    wire::OFFLINE,
                    wire::STAGE_SENT,
                    platform,
                    0,
                    "OK".to_owned(),
                ),
                Some(reason) => (
                    wire::OFFLINE,
                    wire::STAGE_SENT,
                    platform,
                    wire::REFUSED,
                    wire::err_info(reason),
                ),
            }
        }
    };
    Event {
        callback_command: CALLBACK_COMMAND,
        event_type,
        task_id: &task.task_id,
        data_id: task.data_id.as_deref(),
        task_time: task.created_ms / 1000,
        event_time: event.at_ms / 1000,
        to_account,
        push_platform: platform,
        device_type: platform,
        push_stage: stage,
        err_code,
        err_info: &err_info,
    }
    .to_json()
}
