//! Running scheduled tasks (`timpush.md` §9.6). Each node runs one loop per app that sleeps
//! until the earliest task is due (reading the store at least once a second, for tasks other
//! nodes added), claims due tasks one at a time under a lease, and runs each through the
//! `push` or `batch` path with the quotas as they stand, so a run is an ordinary push that
//! reports, revokes and callbacks see.
//!
//! Exactly once: the claim is the store's (one node gets a task); a task claimed again after
//! its runner died is first looked up among the stored pushes (`PushRecord::sched_task_id`),
//! so a run that pushed before dying is recorded, not repeated. A task found more than 10
//! minutes late (the server was down) fails with "missed schedule"; a later one runs at once,
//! with a log line.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Tenant;
use crate::clock::now_ms;
use crate::error::Error;
use crate::push::sched::format_time;
use crate::store::notify::Lease;
use crate::store::sched::{SchedKind, SchedOutcome, SchedStatus, SchedTask};
use crate::store::StoreError;

/// How long a claimed task is its runner's: far longer than a run takes (one push
/// acceptance), so a live runner never loses a task to another node mid-run.
const LEASE_MS: u64 = 30_000;
/// The runner looks at the store at least this often, for tasks added on other nodes.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The pause after a round of claims, before looking at what is due next.
const AFTER_A_ROUND: Duration = Duration::from_millis(10);
/// A task found later than this after its time fails instead of running.
pub const MISSED_AFTER_MS: u64 = 10 * 60 * 1000;
/// A run later than this after its time is logged as late.
const LATE_AFTER_MS: u64 = 1_000;
pub const MISSED_SCHEDULE: &str = "missed schedule";

/// What became of one claimed task.
enum Run {
    /// Recorded (dispatched, failed, or taken over by another node).
    Ended,
    /// Could not run now for a fault of the server; the task was handed back.
    Retry,
}

impl Tenant {
    /// Runs this app's scheduled tasks as they fall due, until shutdown.
    pub async fn run_sched_tasks(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            // Claiming writes; while nothing is due the runner only reads when something will be.
            let mut wait = self.until_next_sched_task().await;
            if wait.is_zero() {
                wait = match self.run_due_sched_tasks().await {
                    // What was due ran here or is running on another node: look again soon.
                    Run::Ended => AFTER_A_ROUND,
                    Run::Retry => LOOK_EVERY,
                };
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.sched.changed.notified() => {}
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
        }
    }

    /// Claims and runs due tasks until none is left or one must wait.
    async fn run_due_sched_tasks(self: &Arc<Self>) -> Run {
        loop {
            let tenant = Arc::clone(self);
            let claimed = tokio::task::spawn_blocking(move || {
                let lease = Lease {
                    node: &tenant.node,
                    now_ms: now_ms(),
                    lease_ms: LEASE_MS,
                };
                tenant.store.claim_sched_task(tenant.sdkappid(), lease)
            })
            .await
            .map_err(Error::from);
            let task = match claimed {
                Ok(Ok(Some(task))) => task,
                Ok(Ok(None)) => return Run::Ended,
                Ok(Err(error)) => {
                    warn!(app = self.sdkappid(), %error, "cannot claim due scheduled tasks; retrying in a second");
                    return Run::Retry;
                }
                Err(error) => {
                    warn!(app = self.sdkappid(), %error, "claiming scheduled tasks failed; retrying in a second");
                    return Run::Retry;
                }
            };
            if let Run::Retry = self.dispatch_sched_task(task).await {
                return Run::Retry;
            }
        }
    }

    /// How long until a task may be due (zero: one is), at most [`LOOK_EVERY`].
    async fn until_next_sched_task(self: &Arc<Self>) -> Duration {
        let tenant = Arc::clone(self);
        let next =
            tokio::task::spawn_blocking(move || tenant.store.next_sched_at(tenant.sdkappid()))
                .await;
        match next {
            Ok(Ok(Some(at_ms))) => {
                Duration::from_millis(at_ms.saturating_sub(now_ms())).min(LOOK_EVERY)
            }
            Ok(Ok(None)) => LOOK_EVERY,
            Ok(Err(error)) => {
                warn!(app = self.sdkappid(), %error, "cannot read when the next scheduled task is due");
                LOOK_EVERY
            }
            Err(error) => {
                warn!(app = self.sdkappid(), %error, "reading the next scheduled task failed");
                LOOK_EVERY
            }
        }
    }

    /// Runs one claimed task and records how it ended.
    async fn dispatch_sched_task(self: &Arc<Self>, task: SchedTask) -> Run {
        let (app, task_id) = (self.sdkappid(), task.task_id);
        if task.status == SchedStatus::Dispatching {
            // Its runner died or lost the lease: if that run pushed, it only needs recording.
            let tenant = Arc::clone(self);
            let pushed = tokio::task::spawn_blocking(move || {
                tenant.store.sched_task_push(tenant.sdkappid(), task_id)
            })
            .await
            .map_err(Error::from)
            .and_then(|found| found.map_err(Error::from));
            match pushed {
                Ok(Some(push_task_id)) => {
                    info!(app, task_id, %push_task_id, "scheduled task was dispatched by a run that stopped before recording it");
                    return self.finish_sched_task(task_id, Ok(push_task_id)).await;
                }
                Ok(None) => {}
                Err(error) => {
                    warn!(app, task_id, %error, "cannot tell whether a scheduled task already pushed; retrying");
                    return self.release_sched_task(task_id).await;
                }
            }
        }
        let late_ms = now_ms().saturating_sub(task.sched_at_ms);
        let sched_at = format_time(task.sched_at_ms);
        if late_ms > MISSED_AFTER_MS {
            warn!(app, task_id, %sched_at, late_secs = late_ms / 1000, "scheduled task missed: its time passed more than 10 minutes ago while the server was down; it fails");
            return self
                .finish_sched_task(task_id, Err(MISSED_SCHEDULE.to_owned()))
                .await;
        }
        if late_ms > LATE_AFTER_MS {
            warn!(app, task_id, %sched_at, late_secs = late_ms / 1000, "scheduled task runs late: its time passed while the server was down or busy");
        }
        let run = match serde_json::from_str::<Value>(&task.content) {
            Ok(content) => match task.kind {
                SchedKind::All | SchedKind::Tag => {
                    self.timpush_push(&content, &task.caller, Some(task_id))
                        .await
                }
                SchedKind::User => self
                    .batch(&content, &task.caller, Some(task_id))
                    .await
                    .map(|accepted| accepted.task_id),
            },
            Err(error) => Err(Error::Store(StoreError::Corrupt(format!(
                "content of scheduled task {task_id}: {error}"
            )))),
        };
        match run {
            Ok(push_task_id) => {
                info!(app, task_id, %push_task_id, %sched_at, "scheduled task dispatched");
                self.finish_sched_task(task_id, Ok(push_task_id)).await
            }
            Err(Error::Store(StoreError::Corrupt(error))) => {
                warn!(app, task_id, %error, "scheduled task cannot be read; it fails");
                let reason = "91000 the stored content cannot be read".to_owned();
                self.finish_sched_task(task_id, Err(reason)).await
            }
            Err(error) if error.is_internal() => {
                warn!(app, task_id, %error, "scheduled task could not run for a fault of the server; retrying");
                self.release_sched_task(task_id).await
            }
            Err(refused) => {
                let wire = refused.to_wire();
                let reason = format!("{} {}", wire.code, wire.info);
                warn!(app, task_id, %reason, "scheduled task refused when it ran; it fails");
                self.finish_sched_task(task_id, Err(reason)).await
            }
        }
    }

    /// Records `ending`: the TaskId of the push the run started, or why it failed.
    async fn finish_sched_task(
        self: &Arc<Self>,
        task_id: u64,
        ending: Result<String, String>,
    ) -> Run {
        let tenant = Arc::clone(self);
        let finished = tokio::task::spawn_blocking(move || {
            let outcome = match &ending {
                Ok(push_task_id) => SchedOutcome::Dispatched { push_task_id },
                Err(error) => SchedOutcome::Failed { error },
            };
            tenant
                .store
                .finish_sched_task(tenant.sdkappid(), task_id, &tenant.node, outcome)
        })
        .await;
        match finished {
            Ok(Ok(())) => Run::Ended,
            Ok(Err(StoreError::Conflict(error))) => {
                warn!(app = self.sdkappid(), task_id, %error, "another node took the scheduled task over");
                Run::Ended
            }
            // Still leased here: the next claim finds the push this run stored, if any.
            Ok(Err(error)) => {
                warn!(app = self.sdkappid(), task_id, %error, "cannot record how a scheduled task ended; retrying");
                Run::Retry
            }
            Err(error) => {
                warn!(app = self.sdkappid(), task_id, %error, "recording a scheduled task failed; retrying");
                Run::Retry
            }
        }
    }

    async fn release_sched_task(self: &Arc<Self>, task_id: u64) -> Run {
        let tenant = Arc::clone(self);
        let released = tokio::task::spawn_blocking(move || {
            tenant
                .store
                .release_sched_task(tenant.sdkappid(), task_id, &tenant.node)
        })
        .await;
        if !matches!(released, Ok(Ok(()))) {
            warn!(
                app = self.sdkappid(),
                task_id, "could not hand a scheduled task back; it is retried when its lease ends"
            );
        }
        Run::Retry
    }
}
