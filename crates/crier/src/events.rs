//! Delivery events: what became of one push for one account, as the delivery points see it
//! (a `Push` frame written to a session, an `Ack`, a provider's answer to a notification),
//! handed off to whoever consumes them for the app: the delivery callbacks
//! (the `callback` module), and anything else that counts per task.
//!
//! The hand-off must never slow a delivery: [`DeliveryEvents::emit`] gives the events to each
//! sink, and a sink only queues them for a thread of its own. Events are only made for pushes
//! some sink [`wants`](DeliveryEvents::wants), so a push nobody reports on costs nothing here.

use std::sync::Arc;

use parking_lot::RwLock;
use roaring::RoaringBitmap;

use crate::config::providers::Provider;
use crate::store::PushRecord;

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryStep {
    /// The push's frame went to `sessions` open sessions of these accounts, as it was accepted
    /// or at a login's catch-up.
    Written {
        accounts: RoaringBitmap,
        sessions: u64,
    },
    /// The account acknowledged the push (the first time).
    Acked { account: u32 },
    /// A notification to one of the account's devices ended at the provider: accepted, or
    /// refused with the provider's reason (after the retries it asked for).
    Notified {
        account: u32,
        provider: Provider,
        refused: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct DeliveryEvent {
    pub task: Arc<PushRecord>,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub step: DeliveryStep,
}

/// A consumer of an app's delivery events.
pub trait DeliveryEventSink: Send + Sync {
    /// Whether events of this push are of interest.
    fn wants(&self, task: &PushRecord) -> bool;

    /// Takes events; returns at once (the work happens on the sink's own thread).
    fn take(&self, events: Vec<DeliveryEvent>);
}

/// One app's hand-off: cheap to clone, shared by the delivery points.
#[derive(Clone, Default)]
pub struct DeliveryEvents {
    sinks: Arc<RwLock<Vec<Arc<dyn DeliveryEventSink>>>>,
}

impl DeliveryEvents {
    pub fn add_sink(&self, sink: Arc<dyn DeliveryEventSink>) {
        self.sinks.write().push(sink);
    }

    /// Whether any sink wants events of `task`; delivery points make none otherwise.
    pub fn wants(&self, task: &PushRecord) -> bool {
        self.sinks.read().iter().any(|sink| sink.wants(task))
    }

    /// Hands each sink the events it wants.
    pub fn emit(&self, events: Vec<DeliveryEvent>) {
        if events.is_empty() {
            return;
        }
        let sinks = self.sinks.read();
        for sink in sinks.iter() {
            let wanted: Vec<DeliveryEvent> = events
                .iter()
                .filter(|event| sink.wants(&event.task))
                .cloned()
                .collect();
            if !wanted.is_empty() {
                sink.take(wanted);
            }
        }
    }

    /// One event.
    pub fn emit_one(&self, task: &Arc<PushRecord>, at_ms: u64, step: DeliveryStep) {
        self.emit(vec![DeliveryEvent {
            task: Arc::clone(task),
            at_ms,
            step,
        }]);
    }
}
