//! Batching delivery records: a thread gathers acknowledgements, delivery counts and the
//! marks of `timpush` pushes (who they reached on a session, who acknowledged them) for a few
//! milliseconds and stores each batch as one bitmap of accounts and one count row per push,
//! so ten thousand clients acking at once cost a handful of rows rather than ten thousand
//! transactions.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roaring::RoaringBitmap;
use tracing::error;

use crate::clock::now_ms;
use crate::metrics::{BackgroundTask, Metrics};
use crate::store::{DeliveryCounts, MarkStage, Store};

/// How long a batch may gather after its first record.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BATCH: usize = 100_000;

enum Message {
    Ack(String, u32),
    Delivered(Vec<(String, DeliveryCounts)>),
    Marked(String, MarkStage, RoaringBitmap),
    Flush(mpsc::Sender<()>),
}

#[derive(Clone)]
pub struct RecordWriter {
    sender: mpsc::Sender<Message>,
}

impl RecordWriter {
    pub fn start(app: u64, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> RecordWriter {
        let (sender, messages) = mpsc::channel();
        crate::supervise::spawn(BackgroundTask::DeliveryRecords, metrics, move || {
            write_batches(app, store.as_ref(), &messages)
        });
        RecordWriter { sender }
    }

    pub fn ack(&self, task_id: String, account: u32) {
        let _ = self.sender.send(Message::Ack(task_id, account));
    }

    /// Adds to the delivery counts of these pushes.
    pub fn delivered(&self, counts: Vec<(String, DeliveryCounts)>) {
        if !counts.is_empty() {
            let _ = self.sender.send(Message::Delivered(counts));
        }
    }

    /// Records that `accounts` reached `stage` of the `timpush` push `task_id`.
    pub fn mark(&self, task_id: String, stage: MarkStage, accounts: RoaringBitmap) {
        if !accounts.is_empty() {
            let _ = self.sender.send(Message::Marked(task_id, stage, accounts));
        }
    }

    /// Returns once everything recorded before the call is stored.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

#[derive(Default)]
struct Batch {
    acks: HashMap<String, RoaringBitmap>,
    counts: HashMap<String, DeliveryCounts>,
    marks: HashMap<(String, MarkStage), RoaringBitmap>,
    flushes: Vec<mpsc::Sender<()>>,
}

fn write_batches(app: u64, store: &dyn Store, messages: &mpsc::Receiver<Message>) {
    while let Ok(first) = messages.recv() {
        let mut batch = Batch::default();
        let deadline = Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        let mut gathered = 0;
        while let Some(message) = next.take() {
            match message {
                Message::Ack(task_id, account) => {
                    batch.acks.entry(task_id).or_default().insert(account);
                }
                Message::Delivered(counts) => {
                    for (task_id, added) in counts {
                        *batch.counts.entry(task_id).or_default() += added;
                    }
                }
                Message::Marked(task_id, stage, accounts) => {
                    *batch.marks.entry((task_id, stage)).or_default() |= accounts;
                }
                Message::Flush(done) => batch.flushes.push(done),
            }
            gathered += 1;
            if gathered < MAX_BATCH && batch.flushes.is_empty() {
                next = messages
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok();
            }
        }
        store_batch(app, store, batch);
    }
}

fn store_batch(app: u64, store: &dyn Store, batch: Batch) {
    if !batch.acks.is_empty() {
        let rows: Vec<(String, RoaringBitmap)> = batch.acks.into_iter().collect();
        if let Err(e) = store.append_acks(app, &rows) {
            error!(app, error = %e, "storing acknowledgements failed; those pushes will be delivered again");
        }
    }
    if !batch.counts.is_empty() {
        let rows: Vec<(String, DeliveryCounts)> = batch.counts.into_iter().collect();
        if let Err(e) = store.add_delivery_counts(app, &rows) {
            error!(app, error = %e, "storing delivery counts failed; after a restart, task reports will count fewer deliveries");
        }
    }
    if !batch.marks.is_empty() {
        let rows: Vec<(String, MarkStage, RoaringBitmap)> = batch
            .marks
            .into_iter()
            .map(|((task_id, stage), accounts)| (task_id, stage, accounts))
            .collect();
        if let Err(e) = store.append_marks(app, now_ms(), &rows) {
            error!(app, error = %e, "storing delivery marks failed; timpush statistics and traces will show fewer deliveries");
        }
    }
    for done in batch.flushes {
        let _ = done.send(());
    }
}
