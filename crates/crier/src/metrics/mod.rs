//! Counters served at `GET /metrics` in Prometheus' text format.

pub mod callbacks;
pub mod refusals;

use crate::config::providers::Provider;
use refusals::{Refusal, Refusals};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// The supervised background threads (see `supervise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundTask {
    FanOut,
    DeliveryRecords,
    Notifications,
    ScheduledTasks,
    CallbackQueue,
    Callbacks,
}

impl BackgroundTask {
    pub const ALL: [BackgroundTask; 6] = [
        BackgroundTask::FanOut,
        BackgroundTask::DeliveryRecords,
        BackgroundTask::Notifications,
        BackgroundTask::ScheduledTasks,
        BackgroundTask::CallbackQueue,
        BackgroundTask::Callbacks,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BackgroundTask::FanOut => "fan_out",
            BackgroundTask::DeliveryRecords => "delivery_records",
            BackgroundTask::Notifications => "notifications",
            BackgroundTask::ScheduledTasks => "scheduled_tasks",
            BackgroundTask::CallbackQueue => "callback_queue",
            BackgroundTask::Callbacks => "callbacks",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Client connections from accept to close, WebSocket sessions included.
    pub connections_open: AtomicUsize,
    /// Connections and requests refused by the limits, by kind.
    pub refusals: Refusals,
    pub sessions_open: AtomicI64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub pushes_accepted: AtomicU64,
    pub deliveries_online: AtomicU64,
    pub deliveries_offline: AtomicU64,
    pub acks: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub kicks: AtomicU64,
    /// Directory writes committed (each a request that changed something), and the groups
    /// they were committed in: one log append and one apply pass each.
    pub directory_writes: AtomicU64,
    pub directory_write_groups: AtomicU64,
    /// Microseconds the directory writers (one per app at a time) spent committing groups: its
    /// rate is how busy the serial part of every directory write is.
    pub directory_writer_busy_us: AtomicU64,
    background_restarts: [AtomicU64; BackgroundTask::ALL.len()],
    /// Offline notifications by provider (`Provider::ALL` order) and by how they ended.
    pub notifications: [[AtomicU64; NotificationEnd::ALL.len()]; 3],
    /// Delivery callbacks to the apps' servers.
    pub callbacks: callbacks::CallbackMetrics,
}

/// How one notification ended, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationEnd {
    Sent,
    Failed,
    /// A provider said to try again later; the notification was (or will be) resent.
    Retried,
    /// The provider reported the token dead; the device was removed.
    DeadToken,
}

impl NotificationEnd {
    pub const ALL: [NotificationEnd; 4] = [
        NotificationEnd::Sent,
        NotificationEnd::Failed,
        NotificationEnd::Retried,
        NotificationEnd::DeadToken,
    ];

    fn label(self) -> &'static str {
        match self {
            NotificationEnd::Sent => "sent",
            NotificationEnd::Failed => "failed",
            NotificationEnd::Retried => "retried",
            NotificationEnd::DeadToken => "dead_token",
        }
    }
}

impl Metrics {
    pub fn background_restarted(&self, task: BackgroundTask) {
        self.background_restarts[task as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn notification(&self, provider: Provider, end: NotificationEnd) {
        let row = Provider::ALL
            .iter()
            .position(|p| *p == provider)
            .unwrap_or(0);
        let column = NotificationEnd::ALL
            .iter()
            .position(|e| *e == end)
            .unwrap_or(0);
        Metrics::add(&self.notifications[row][column], 1);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = self.sessions_open.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP crier_sessions_open WebSocket sessions logged in now.\n# TYPE crier_sessions_open gauge\ncrier_sessions_open {gauge}");
        let counters = [
            (
                "crier_logins_total",
                "Successful WebSocket logins.",
                &self.logins,
            ),
            (
                "crier_login_failures_total",
                "Refused WebSocket logins.",
                &self.login_failures,
            ),
            (
                "crier_pushes_accepted_total",
                "im_push calls accepted.",
                &self.pushes_accepted,
            ),
            (
                "crier_deliveries_online_total",
                "Push frames sent to sessions open when the push was accepted.",
                &self.deliveries_online,
            ),
            (
                "crier_deliveries_offline_total",
                "Kept push frames sent on login.",
                &self.deliveries_offline,
            ),
            (
                "crier_directory_writes_total",
                "Directory writes (tag, attribute, account changes) committed.",
                &self.directory_writes,
            ),
            (
                "crier_directory_write_groups_total",
                "Groups the directory writes were committed in, one log append each.",
                &self.directory_write_groups,
            ),
            (
                "crier_acks_total",
                "Pushes acknowledged by clients.",
                &self.acks,
            ),
            (
                "crier_slow_consumer_closes_total",
                "Sessions closed with 4008 because their backlog of unsent pushes was full.",
                &self.slow_consumer_closes,
            ),
            (
                "crier_kicks_total",
                "Sessions ended with Kicked.",
                &self.kicks,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let busy_us = self.directory_writer_busy_us.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP crier_directory_writer_busy_seconds_total Time the directory writers spent committing groups (validating, logging, applying); near 1 per second and app, writes wait for the writer.\n# TYPE crier_directory_writer_busy_seconds_total counter\ncrier_directory_writer_busy_seconds_total {}.{:06}",
            busy_us / 1_000_000,
            busy_us % 1_000_000
        );
        let connections = self.connections_open.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP crier_connections_open Client connections open now, WebSocket sessions included.\n# TYPE crier_connections_open gauge\ncrier_connections_open {connections}");
        let _ = writeln!(out, "# HELP crier_refusals_total Connections and requests cut short by the server's limits, by kind.\n# TYPE crier_refusals_total counter");
        for refusal in Refusal::ALL {
            let _ = writeln!(
                out,
                "crier_refusals_total{{kind=\"{}\"}} {}",
                refusal.label(),
                self.refusals.total(refusal)
            );
        }
        let _ = writeln!(out, "# HELP crier_background_restarts_total Background threads started again after a panic, by task.\n# TYPE crier_background_restarts_total counter");
        for task in BackgroundTask::ALL {
            let _ = writeln!(
                out,
                "crier_background_restarts_total{{task=\"{}\"}} {}",
                task.label(),
                self.background_restarts[task as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP crier_notifications_total Offline notifications by provider and outcome.\n# TYPE crier_notifications_total counter");
        for (provider, row) in Provider::ALL.iter().zip(&self.notifications) {
            for (end, counter) in NotificationEnd::ALL.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "crier_notifications_total{{provider=\"{}\",outcome=\"{}\"}} {}",
                    provider.name(),
                    end.label(),
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        self.callbacks.render(&mut out);
        out
    }
}
