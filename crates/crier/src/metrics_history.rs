//! A per-app history of delivery counters for the console: the last hour as per-minute
//! increments (the Overview chart) and, for each recent push, its counters over time (the
//! Tasks page).
//!
//! Nothing here is fed by the delivery path. A sampler reads the counters Crier already keeps
//! per push (the task report's online and offline deliveries, acknowledgements and
//! notification outcomes per provider) every [`SAMPLE_EVERY`], sums them, and keeps the sums;
//! a minute's deliveries are the difference between the sums at its two ends. A counter that
//! goes away (a push purged, acknowledgements dropped with an expired push) keeps its last
//! value in the sum, so the sums never go backwards.
//!
//! The sampling itself is in `tenant::console_reads` (it reads the app); this module is data.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::notify::Provider;

/// How often the background sampler reads an app's counters. The console's reads also take a
/// sample when the last one is older than [`FRESH_FOR_MS`], so what it shows is current.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// A sample this recent is not taken again on a read.
pub const FRESH_FOR_MS: u64 = 1_000;
/// How far back the app's history goes.
pub const KEEP_MS: u64 = 61 * 60 * 1000;
/// Per push, samples are kept for its first this long.
pub const TASK_SERIES_MS: u64 = 60 * 60 * 1000;
/// Pushes older than this are no longer sampled (the longest `MsgLifeTime` and a day).
pub const TRACK_TASKS_MS: u64 = (604_800 + 86_400) * 1000;

/// Notification outcomes of one provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SentFailed {
    pub sent: u64,
    pub failed: u64,
}

/// Counters of one push, or their sum over an app's pushes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub delivered_online: u64,
    pub delivered_offline: u64,
    pub acknowledged: u64,
    /// In `Provider::ALL` order.
    pub notifications: [SentFailed; 3],
}

impl Totals {
    fn add(&mut self, other: &Totals) {
        self.delivered_online += other.delivered_online;
        self.delivered_offline += other.delivered_offline;
        self.acknowledged += other.acknowledged;
        for (mine, theirs) in self.notifications.iter_mut().zip(&other.notifications) {
            mine.sent += theirs.sent;
            mine.failed += theirs.failed;
        }
    }

    /// Each counter of `self` at least as large as in `before`: a counter never goes back.
    fn at_least(self, before: &Totals) -> Totals {
        let mut out = self;
        out.delivered_online = out.delivered_online.max(before.delivered_online);
        out.delivered_offline = out.delivered_offline.max(before.delivered_offline);
        out.acknowledged = out.acknowledged.max(before.acknowledged);
        for (mine, theirs) in out.notifications.iter_mut().zip(&before.notifications) {
            mine.sent = mine.sent.max(theirs.sent);
            mine.failed = mine.failed.max(theirs.failed);
        }
        out
    }

    fn minus(&self, before: &Totals) -> Totals {
        let mut out = Totals {
            delivered_online: self
                .delivered_online
                .saturating_sub(before.delivered_online),
            delivered_offline: self
                .delivered_offline
                .saturating_sub(before.delivered_offline),
            acknowledged: self.acknowledged.saturating_sub(before.acknowledged),
            notifications: [SentFailed::default(); 3],
        };
        for (slot, (now, then)) in self
            .notifications
            .iter()
            .zip(&before.notifications)
            .enumerate()
        {
            out.notifications[slot] = SentFailed {
                sent: now.sent.saturating_sub(then.sent),
                failed: now.failed.saturating_sub(then.failed),
            };
        }
        out
    }
}

/// One point of a chart: counters at (task series) or added during (app minutes) `time_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Point {
    /// Unix seconds: the sample's time, or the start of the minute.
    pub time: u64,
    pub delivered_online: u64,
    pub delivered_offline: u64,
    pub acknowledged: u64,
    /// By provider name (`apns`, `fcm`, `webhook`).
    pub notifications: std::collections::BTreeMap<&'static str, SentFailed>,
}

impl Point {
    fn new(time_ms: u64, totals: &Totals) -> Point {
        Point {
            time: time_ms / 1000,
            delivered_online: totals.delivered_online,
            delivered_offline: totals.delivered_offline,
            acknowledged: totals.acknowledged,
            notifications: Provider::ALL
                .iter()
                .zip(&totals.notifications)
                .map(|(provider, counts)| (provider.name(), *counts))
                .collect(),
        }
    }
}

struct TrackedTask {
    created_ms: u64,
    last: Totals,
    /// The notification job has ended (or there is none): its counts no longer change.
    notifications_final: bool,
    series: Vec<(u64, Totals)>,
}

/// What the sampler knows of one app.
#[derive(Default)]
pub struct History {
    /// Pushes accepted up to this time are tracked.
    pub seen_up_to_ms: Option<u64>,
    tasks: HashMap<String, TrackedTask>,
    /// (time, sum over every push ever tracked), oldest first.
    samples: VecDeque<(u64, Totals)>,
}

/// What one sample read of one push.
pub struct TaskReading {
    pub task_id: String,
    /// Without notifications when `notifications` is `None`.
    pub totals: Totals,
    /// `None`: not read this time (already final).
    pub notifications: Option<([SentFailed; 3], bool)>,
}

impl History {
    /// Starts tracking a push (once).
    pub fn track(&mut self, task_id: &str, created_ms: u64) {
        self.tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| TrackedTask {
                created_ms,
                last: Totals::default(),
                notifications_final: false,
                series: Vec::new(),
            });
    }

    /// The tracked pushes, and whether their notification counts still need reading.
    pub fn tracked(&self) -> Vec<(String, bool)> {
        self.tasks
            .iter()
            .map(|(id, task)| (id.clone(), !task.notifications_final))
            .collect()
    }

    /// When the last sample was taken.
    pub fn last_sample_ms(&self) -> Option<u64> {
        self.samples.back().map(|(at, _)| *at)
    }

    /// Records the readings of a sample taken at `now_ms`.
    pub fn record(&mut self, now_ms: u64, readings: Vec<TaskReading>) {
        for reading in readings {
            let Some(task) = self.tasks.get_mut(&reading.task_id) else {
                continue;
            };
            let mut totals = reading.totals;
            match reading.notifications {
                Some((counts, done)) => {
                    totals.notifications = counts;
                    task.notifications_final = done;
                }
                None => totals.notifications = task.last.notifications,
            }
            task.last = totals.at_least(&task.last);
            if now_ms.saturating_sub(task.created_ms) <= TASK_SERIES_MS
                && task
                    .series
                    .last()
                    .is_none_or(|(_, last)| *last != task.last)
            {
                task.series.push((now_ms, task.last));
            }
        }
        let mut sum = Totals::default();
        for task in self.tasks.values() {
            sum.add(&task.last);
        }
        // Forgotten pushes leave the sum; keep it from going back.
        if let Some((_, before)) = self.samples.back() {
            sum = sum.at_least(before);
        }
        self.samples.push_back((now_ms, sum));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now_ms.saturating_sub(*at) > KEEP_MS)
        {
            self.samples.pop_front();
        }
        self.tasks
            .retain(|_, task| now_ms.saturating_sub(task.created_ms) <= TRACK_TASKS_MS);
    }

    /// What was added in each of the last `minutes` whole minutes up to the one holding
    /// `now_ms`, oldest first. A minute before the first sample shows zeros.
    pub fn minutes(&self, now_ms: u64, minutes: u64) -> Vec<Point> {
        let this_minute = now_ms / 60_000 * 60_000;
        let first = this_minute.saturating_sub((minutes.saturating_sub(1)) * 60_000);
        let mut added: Vec<Totals> = vec![Totals::default(); minutes as usize];
        for (before, after) in self.samples.iter().zip(self.samples.iter().skip(1)) {
            if after.0 < first {
                continue;
            }
            let slot = ((after.0 - first) / 60_000) as usize;
            if let Some(bucket) = added.get_mut(slot) {
                bucket.add(&after.1.minus(&before.1));
            }
        }
        added
            .iter()
            .enumerate()
            .map(|(slot, totals)| Point::new(first + slot as u64 * 60_000, totals))
            .collect()
    }

    /// The counters of one push at each sample that changed them, oldest first.
    pub fn task_series(&self, task_id: &str) -> Option<Vec<Point>> {
        let task = self.tasks.get(task_id)?;
        Some(
            task.series
                .iter()
                .map(|(at, totals)| Point::new(*at, totals))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(task_id: &str, online: u64, acked: u64) -> TaskReading {
        TaskReading {
            task_id: task_id.into(),
            totals: Totals {
                delivered_online: online,
                acknowledged: acked,
                ..Totals::default()
            },
            notifications: None,
        }
    }

    #[test]
    fn minutes_hold_what_was_added_in_them_and_never_go_negative() {
        let mut history = History::default();
        let start = 1_700_000_080_000; // 40 s into a minute
        history.track("t1", start);
        history.record(start, vec![reading("t1", 5, 0)]);
        history.record(start + 10_000, vec![reading("t1", 8, 2)]);
        // The next minute: the acknowledgements vanish (the push expired) and 1 more delivery.
        history.record(start + 30_000, vec![reading("t1", 9, 0)]);
        let minutes = history.minutes(start + 30_000, 3);
        assert_eq!(minutes.len(), 3);
        assert_eq!(minutes[0].delivered_online, 0);
        assert_eq!(
            (minutes[1].delivered_online, minutes[1].acknowledged),
            (3, 2)
        );
        assert_eq!(
            (minutes[2].delivered_online, minutes[2].acknowledged),
            (1, 0)
        );
        let series = history.task_series("t1").unwrap();
        assert_eq!(series.len(), 3);
        assert_eq!(series[2].acknowledged, 2, "counters keep their last value");
    }
}
