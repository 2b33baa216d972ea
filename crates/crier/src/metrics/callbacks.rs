//! Delivery callbacks in `/metrics`: events by what became of them, requests by outcome, and
//! each app's queue depth.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// What became of callback events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackEnd {
    /// Stored in the durable queue.
    Enqueued,
    /// In a request the receiver accepted.
    Sent,
    /// In a request that failed, and queued again for later.
    Retried,
    /// Given up on after the last retry, or never stored (the store failed for too long).
    Dropped,
}

impl CallbackEnd {
    pub const ALL: [CallbackEnd; 4] = [
        CallbackEnd::Enqueued,
        CallbackEnd::Sent,
        CallbackEnd::Retried,
        CallbackEnd::Dropped,
    ];

    fn label(self) -> &'static str {
        match self {
            CallbackEnd::Enqueued => "enqueued",
            CallbackEnd::Sent => "sent",
            CallbackEnd::Retried => "retried",
            CallbackEnd::Dropped => "dropped",
        }
    }
}

#[derive(Default)]
pub struct CallbackMetrics {
    events: [AtomicU64; CallbackEnd::ALL.len()],
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    /// Per app, as last counted in the store.
    queue_depth: Mutex<BTreeMap<u64, u64>>,
}

impl CallbackMetrics {
    pub fn events(&self, end: CallbackEnd, n: u64) {
        self.events[end as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn request(&self, ok: bool) {
        let counter = if ok {
            &self.requests_ok
        } else {
            &self.requests_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_queue_depth(&self, app: u64, depth: u64) {
        self.queue_depth.lock().insert(app, depth);
    }

    pub fn total(&self, end: CallbackEnd) -> u64 {
        self.events[end as usize].load(Ordering::Relaxed)
    }

    pub(super) fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP crier_callback_events_total Delivery callback events by what became of them.\n# TYPE crier_callback_events_total counter");
        for end in CallbackEnd::ALL {
            let _ = writeln!(
                out,
                "crier_callback_events_total{{outcome=\"{}\"}} {}",
                end.label(),
                self.total(end)
            );
        }
        let _ = writeln!(out, "# HELP crier_callback_requests_total Callback requests by outcome (failed: timeout, non-2xx, unparsable answer or ErrorCode not 0).\n# TYPE crier_callback_requests_total counter");
        for (label, counter) in [("ok", &self.requests_ok), ("failed", &self.requests_failed)] {
            let _ = writeln!(
                out,
                "crier_callback_requests_total{{outcome=\"{label}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP crier_callback_queue_depth Callback events waiting in the durable queue, per app.\n# TYPE crier_callback_queue_depth gauge");
        for (app, depth) in self.queue_depth.lock().iter() {
            let _ = writeln!(out, "crier_callback_queue_depth{{app=\"{app}\"}} {depth}");
        }
    }
}
