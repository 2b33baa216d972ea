//! Counters served at `GET /metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub sessions_open: AtomicI64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub pushes_accepted: AtomicU64,
    pub deliveries_online: AtomicU64,
    pub deliveries_offline: AtomicU64,
    pub acks: AtomicU64,
    pub slow_consumer_closes: AtomicU64,
    pub kicks: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
                "crier_acks_total",
                "Pushes acknowledged by clients.",
                &self.acks,
            ),
            (
                "crier_slow_consumer_closes_total",
                "Sessions closed with 4008 because their queue stayed full.",
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
        out
    }
}
