//! Background work that must not die quietly: the fan-out writer and the delivery records
//! writer (threads), and each app's notification and scheduled-task runners (tasks). A panic in
//! one is logged,
//! counted (`crier_background_restarts_total{task}`), and the work is taken up again from the
//! next item; it never silently stops delivering.
//! What the panicking item was doing is lost, and says so in the log: for a fan-out, the
//! sessions it had not reached get the push from the kept pushes at their next login.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::metrics::{BackgroundTask, Metrics};

/// Runs `work` on a thread of its own until it returns, calling it again after each panic.
/// `work` resumes from whatever state it keeps (typically a channel receiver it drains).
pub fn spawn(task: BackgroundTask, metrics: Arc<Metrics>, mut work: impl FnMut() + Send + 'static) {
    std::thread::Builder::new()
        .name(format!("crier-{}", task.label().replace('_', "-")))
        .spawn(move || loop {
            match catch_unwind(AssertUnwindSafe(&mut work)) {
                Ok(()) => return,
                Err(panic) => {
                    let reason = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    metrics.background_restarted(task);
                    tracing::error!(task = task.label(), %reason, "a background thread panicked; it starts again with its next item (the item in hand is lost)");
                }
            }
        })
        .expect("a background thread starts");
}

/// Runs the task `start` makes until it ends, starting a new one after each panic (a
/// notification runner claims its job again and resumes at the stored cursor).
pub fn spawn_task<F>(
    task: BackgroundTask,
    metrics: Arc<Metrics>,
    start: impl Fn() -> F + Send + 'static,
) where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(start()).await {
                Err(error) if error.is_panic() => {
                    metrics.background_restarted(task);
                    tracing::error!(task = task.label(), %error, "a background task panicked; starting it again");
                    // A task that panics at once would otherwise spin.
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                _ => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_panicking_item_is_counted_and_the_next_items_are_still_handled() {
        let metrics = Arc::new(Metrics::default());
        let (items, work) = mpsc::channel::<u32>();
        let (done, handled) = mpsc::channel::<u32>();
        spawn(BackgroundTask::FanOut, Arc::clone(&metrics), move || {
            for item in &work {
                assert!(item != 2, "injected");
                done.send(item).unwrap();
            }
        });
        for item in 1..=4 {
            items.send(item).unwrap();
        }
        drop(items);
        let handled: Vec<u32> = handled.iter().collect();
        assert_eq!(handled, [1, 3, 4]);
        assert!(metrics
            .render()
            .contains("crier_background_restarts_total{task=\"fan_out\"} 1"));
    }
}
