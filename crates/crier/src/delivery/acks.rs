//! Batching acknowledgements: a thread gathers them for a few milliseconds and stores each
//! batch as one bitmap of accounts per push, so ten thousand clients acking at once cost a
//! handful of rows rather than ten thousand transactions.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use roaring::RoaringBitmap;
use tracing::error;

use crate::store::Store;

/// How long a batch may gather after its first acknowledgement.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BATCH: usize = 100_000;

enum Message {
    Ack(String, u32),
    Flush(mpsc::Sender<()>),
}

pub struct AckWriter {
    sender: mpsc::Sender<Message>,
}

impl AckWriter {
    pub fn start(app: u64, store: Arc<dyn Store>) -> AckWriter {
        let (sender, messages) = mpsc::channel();
        std::thread::Builder::new()
            .name("crier-acks".into())
            .spawn(move || write_batches(app, store.as_ref(), &messages))
            .expect("the ack writer thread starts");
        AckWriter { sender }
    }

    pub fn record(&self, task_id: String, account: u32) {
        let _ = self.sender.send(Message::Ack(task_id, account));
    }

    /// Returns once everything recorded before the call is stored.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

fn write_batches(app: u64, store: &dyn Store, messages: &mpsc::Receiver<Message>) {
    while let Ok(first) = messages.recv() {
        let mut batch: HashMap<String, RoaringBitmap> = HashMap::new();
        let mut waiting = Vec::new();
        let deadline = std::time::Instant::now() + BATCH_WINDOW;
        let mut next = Some(first);
        let mut gathered = 0;
        while let Some(message) = next.take() {
            match message {
                Message::Ack(task_id, account) => {
                    batch.entry(task_id).or_default().insert(account);
                }
                Message::Flush(done) => waiting.push(done),
            }
            gathered += 1;
            if gathered < MAX_BATCH && waiting.is_empty() {
                next = messages
                    .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                    .ok();
            }
        }
        if !batch.is_empty() {
            let rows: Vec<(String, RoaringBitmap)> = batch.into_iter().collect();
            if let Err(e) = store.append_acks(app, &rows) {
                error!(app, error = %e, "storing acknowledgements failed; those pushes will be delivered again");
            }
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}
