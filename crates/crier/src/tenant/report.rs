//! The report of one push (a Crier extension): who it was for, who got it online, on login,
//! who acknowledged it, and how its offline notifications went.

use serde::Serialize;

use super::Tenant;
use crate::notify::worker::JobCounts;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskReport {
    pub task_id: String,
    /// Acceptance time, Unix seconds.
    pub created_at: u64,
    pub msg_life_time: u32,
    pub audience_size: u64,
    /// Sessions it reached as it was accepted.
    pub delivered_online: u64,
    /// Logins it was delivered on from the kept pushes.
    pub delivered_offline: u64,
    /// Accounts that acknowledged it; absent when it is not kept (lifetime 0, or ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<u64>,
    pub notifications: NotificationReport,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NotificationReport {
    /// Accounts that were offline with a device when the push was accepted.
    pub targets: u64,
    /// `None`: nothing to notify; `Running`; `Done`.
    pub state: &'static str,
    pub providers: JobCounts,
}

/// The report of `task_id`, or `None` when the app has no such push (any more). Blocking.
pub fn task_report(tenant: &Tenant, task_id: &str) -> Result<Option<TaskReport>, StoreError> {
    let Some(summary) = tenant.store.push_summary(tenant.sdkappid(), task_id)? else {
        return Ok(None);
    };
    let delivery = tenant.delivery.report(task_id);
    let notifications = match tenant.notify.report(task_id)? {
        Some(job) => NotificationReport {
            targets: job.targets,
            state: if job.done { "Done" } else { "Running" },
            providers: job.counts,
        },
        None => NotificationReport {
            state: "None",
            ..NotificationReport::default()
        },
    };
    Ok(Some(TaskReport {
        task_id: task_id.to_owned(),
        created_at: summary.created_ms / 1000,
        msg_life_time: summary.lifetime_secs,
        audience_size: summary.audience_size,
        delivered_online: delivery.delivered_online,
        delivered_offline: delivery.delivered_offline,
        acknowledged: delivery.acknowledged,
        notifications,
    }))
}
