//! What scheduled tasks (`timpush.md` §9) keep durably: one row per task with its content as
//! accepted, its state, and a lease while a node runs it.
//!
//! Nodes sharing a store share the tasks: a node takes a due task with a lease
//! ([`SchedStore::claim_sched_task`], which moves it to `dispatching`) and records how the run
//! ended with [`SchedStore::finish_sched_task`], which only the lease holder can do. A node that
//! dies mid-run loses the task to the next claimant once the lease ends; that claimant first
//! looks for the push the run may have started ([`SchedStore::sched_task_push`]), so a task never
//! pushes twice.

use super::notify::Lease;
use super::StoreError;

/// What a task runs: a `push` to everyone or by condition, or a `batch` to named accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedKind {
    All,
    Tag,
    User,
}

impl SchedKind {
    /// As stored and as the wire spells it (`Type`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedKind::All => "All",
            SchedKind::Tag => "Tag",
            SchedKind::User => "User",
        }
    }

    pub fn parse(text: &str) -> Option<SchedKind> {
        Some(match text {
            "All" => SchedKind::All,
            "Tag" => SchedKind::Tag,
            "User" => SchedKind::User,
            _ => return None,
        })
    }
}

/// Where a task is in its life; only `Pending` tasks can be changed or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedStatus {
    Pending,
    /// Claimed by a node that is running it.
    Dispatching,
    /// The run started a push (`push_task_id`).
    Dispatched,
    /// The run was refused, or the time was missed (`dispatch_err`).
    Failed,
}

impl SchedStatus {
    /// As stored and as the wire spells it (`Status`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchedStatus::Pending => "pending",
            SchedStatus::Dispatching => "dispatching",
            SchedStatus::Dispatched => "dispatched",
            SchedStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<SchedStatus> {
        Some(match text {
            "pending" => SchedStatus::Pending,
            "dispatching" => SchedStatus::Dispatching,
            "dispatched" => SchedStatus::Dispatched,
            "failed" => SchedStatus::Failed,
            _ => return None,
        })
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedTask {
    pub app: u64,
    /// Positive, unique per app, never reused.
    pub task_id: u64,
    pub kind: SchedKind,
    pub created_ms: u64,
    /// When it runs (whole seconds, as the wire gives them).
    pub sched_at_ms: u64,
    /// The `push` or `batch` body as accepted (with `MsgRandom` filled in), as JSON text.
    pub content: String,
    /// The admin who created it: the run is made on their behalf.
    pub caller: String,
    pub status: SchedStatus,
    /// Why the run failed; empty otherwise.
    pub dispatch_err: String,
    /// The TaskId of the push the run started; empty before.
    pub push_task_id: String,
}

/// A task to add; the store gives it its id and the `Pending` state.
#[derive(Debug, Clone, Copy)]
pub struct NewSchedTask<'a> {
    pub app: u64,
    pub kind: SchedKind,
    pub created_ms: u64,
    pub sched_at_ms: u64,
    pub content: &'a str,
    pub caller: &'a str,
}

/// How a change of a task ended; only `Done` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedChange {
    Done,
    NotPending(SchedStatus),
    Unknown,
}

/// Which time a listing is windowed and ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedOrder {
    CreatedAt,
    SchedAt,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedOutcome<'a> {
    Dispatched { push_task_id: &'a str },
    Failed { error: &'a str },
}

pub trait SchedStore: Send + Sync {
    /// Stores a `Pending` task under a fresh id (one more than the app's last, deleted ones
    /// included) and answers the id.
    fn add_sched_task(&self, task: &NewSchedTask<'_>) -> Result<u64, StoreError>;

    fn sched_task(&self, app: u64, task_id: u64) -> Result<Option<SchedTask>, StoreError>;

    /// Replaces the time and the content of a task that is still `Pending`.
    fn modify_sched_task(
        &self,
        app: u64,
        task_id: u64,
        sched_at_ms: u64,
        content: &str,
    ) -> Result<SchedChange, StoreError>;

    /// Deletes a task that is still `Pending`.
    fn delete_sched_task(&self, app: u64, task_id: u64) -> Result<SchedChange, StoreError>;

    /// The app's tasks whose `order` time is within `from_ms ..= to_ms`, ordered by that time
    /// and then by id.
    fn sched_tasks_between(
        &self,
        app: u64,
        order: SchedOrder,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<SchedTask>, StoreError>;

    /// When a runner may next have something to do: the earliest time of a `Pending` task, or
    /// the end of the lease of a `Dispatching` one (whose runner may have died).
    fn next_sched_at(&self, app: u64) -> Result<Option<u64>, StoreError>;

    /// Takes the earliest due task (`sched_at_ms <= lease.now_ms`) that is `Pending`, or
    /// `Dispatching` under a lease that ran out or that `lease.node` holds; moves it to
    /// `Dispatching` leased to `lease.node`. Answers the task with the status it had before,
    /// so the runner knows a run may have started already.
    fn claim_sched_task(&self, app: u64, lease: Lease<'_>)
        -> Result<Option<SchedTask>, StoreError>;

    /// Records how the run of a task ended, if `node` still holds it; otherwise changes nothing
    /// and answers `Conflict`.
    fn finish_sched_task(
        &self,
        app: u64,
        task_id: u64,
        node: &str,
        outcome: SchedOutcome<'_>,
    ) -> Result<(), StoreError>;

    /// Frees the lease of a `Dispatching` task held by `node`, so a runner retries it at once.
    fn release_sched_task(&self, app: u64, task_id: u64, node: &str) -> Result<(), StoreError>;

    /// The TaskId of the push that the run of `sched_task_id` started, if one was stored.
    fn sched_task_push(&self, app: u64, sched_task_id: u64) -> Result<Option<String>, StoreError>;
}
