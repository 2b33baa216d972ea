//! What the console reads of an app that the Tencent API does not offer (`v4/crier/*`): an
//! audience count without pushing, recent tasks, one account's whole state, tag and attribute
//! counts, the quota, sessions by platform and the delivery history. Each read answers plain
//! data; `api::crier_reads` shapes the replies.
//!
//! The history and the rate window of these reads are kept beside the app rather than in it
//! ([`ConsoleExtras`], found by the app's address), so that the console adds no field to
//! `Tenant`. Blocking methods say so: run them on a blocking thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crier_proto::codes;

use super::Tenant;
use crate::clock::{now_ms, utc_day_start_ms};
use crate::directory::stats::Held;
use crate::error::Error;
use crate::metrics_history::{
    History, SentFailed, TaskReading, Totals, FRESH_FOR_MS, TRACK_TASKS_MS,
};
use crate::notify::Provider;
use crate::push::validate::parse_condition;
use crate::store::PushKind;

/// `v4/crier/*` calls per app per second (timpush.md §12).
pub const CALLS_PER_SECOND: u32 = 10;
const DAY_MS: u64 = 86_400_000;

/// What the console keeps per app, beside it.
#[derive(Default)]
pub struct ConsoleExtras {
    pub history: Mutex<History>,
    /// The app's pushes of the last 8 days, as read from the store once each (without their
    /// audiences), so listing tasks does not read every audience again.
    tasks: Mutex<HashMap<String, TaskFacts>>,
    /// (second, calls in it).
    rate: Mutex<(u64, u32)>,
}

/// What `task_list` shows of a push that never changes.
struct TaskFacts {
    /// Order in which the store holds the pushes (its order of acceptance).
    order: u64,
    kind: PushKind,
    data_id: Option<String>,
    sched_task_id: Option<u64>,
    created_ms: u64,
    lifetime_secs: u32,
    audience_size: u64,
    condition: Option<String>,
    msg_body: String,
}

/// One recent push, as `task_list` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub task_id: String,
    pub kind: PushKind,
    pub data_id: Option<String>,
    pub sched_task_id: Option<u64>,
    pub state: &'static str,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub lifetime_secs: u32,
    pub audience_size: u64,
    pub acked: u64,
    pub condition: Option<String>,
    pub msg_body: String,
}

/// An account as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountInfo {
    pub imported: bool,
    pub tags: Vec<String>,
    /// Attribute name → value.
    pub attrs: BTreeMap<String, String>,
    /// Platforms of the open sessions, one per session.
    pub sessions: Vec<String>,
    /// (provider, token).
    pub devices: Vec<(&'static str, String)>,
    /// Kept pushes it has not acknowledged.
    pub pending_pushes: u32,
}

/// The push limits as they stand.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaState {
    pub push_enabled: bool,
    pub daily_push_quota: u64,
    pub pushes_today: u64,
    pub min_push_interval_ms: u64,
    pub last_push_ms: Option<u64>,
    /// When a push would next be accepted (now if it would be now).
    pub next_push_ms: u64,
    /// The next 00:00 UTC, when the count starts again.
    pub quota_resets_ms: u64,
}

/// Sessions and accounts right now.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineState {
    pub sessions_by_platform: BTreeMap<String, u64>,
    pub accounts_online: u64,
    pub live_accounts: u64,
    pub devices: u64,
}

impl Tenant {
    /// This app's console state.
    pub fn console_extras(&self) -> Arc<ConsoleExtras> {
        Arc::clone(&self.console)
    }

    /// Counts a `v4/crier/*` call against the app's 10 per second; 90024 past it.
    pub fn console_rate_check(self: &Arc<Self>) -> Result<(), Error> {
        let extras = self.console_extras();
        let second = now_ms() / 1000;
        let mut rate = extras.rate.lock();
        if rate.0 != second {
            *rate = (second, 0);
        }
        if rate.1 >= CALLS_PER_SECOND {
            return Err(Error::rejected(
                codes::PUSH_TOO_FREQUENT,
                format!("at most {CALLS_PER_SECOND} v4/crier calls per second per app: retry in a second"),
            ));
        }
        rate.1 += 1;
        Ok(())
    }

    /// How many live accounts a push with `condition` would reach now, and how many of them
    /// have an open session. Checks the condition as `im_push` does. Blocking.
    pub fn audience_count(&self, condition: Option<&Value>) -> Result<(u64, u64), Error> {
        let directory = self.directory.read();
        let (condition, _) = parse_condition(condition, &directory)?;
        let audience = directory.audience(&condition);
        drop(directory);
        let connected = self.delivery.sessions.online_among(&audience).len();
        Ok((audience.len(), connected))
    }

    /// The app's pushes of the last 8 days accepted at or after `since_ms`, newest first.
    /// Blocking (reads the pushes accepted since the last read from the store).
    pub fn recent_tasks(self: &Arc<Self>, since_ms: u64) -> Result<Vec<TaskSummary>, Error> {
        self.sample_history()?;
        let now = now_ms();
        let extras = self.console_extras();
        let known = extras.tasks.lock();
        let mut listed: Vec<(&String, &TaskFacts)> = known
            .iter()
            .filter(|(_, facts)| facts.created_ms >= since_ms)
            .collect();
        listed.sort_unstable_by_key(|(_, facts)| std::cmp::Reverse(facts.order));
        Ok(listed
            .into_iter()
            .map(|(task_id, facts)| {
                let expires_ms = facts.created_ms + u64::from(facts.lifetime_secs) * 1000;
                let kept = self.delivery.kept_record(task_id).is_some();
                TaskSummary {
                    task_id: task_id.clone(),
                    kind: facts.kind,
                    data_id: facts.data_id.clone(),
                    sched_task_id: facts.sched_task_id,
                    state: if self.delivery.is_revoked(task_id) {
                        "revoked"
                    } else if kept && expires_ms > now {
                        "active"
                    } else {
                        "done"
                    },
                    created_ms: facts.created_ms,
                    expires_ms,
                    lifetime_secs: facts.lifetime_secs,
                    audience_size: facts.audience_size,
                    acked: self.delivery.report(task_id).acknowledged.unwrap_or(0),
                    condition: facts.condition.clone(),
                    msg_body: facts.msg_body.clone(),
                }
            })
            .collect())
    }

    /// One account's state; `None` when the app never heard of it (or deleted it).
    pub fn account_info(&self, name: &str) -> Option<AccountInfo> {
        let (number, imported, tags, attrs) = self.read(|directory| {
            let number = directory.account_number(name)?;
            let names = directory.attr_names();
            let attrs = directory
                .attrs_of(name)
                .into_iter()
                .filter_map(|(slot, value)| Some((names.get(&slot)?.clone(), value)))
                .collect();
            Some((
                number,
                directory.is_live(name),
                directory.tags_of(name),
                attrs,
            ))
        })?;
        Some(AccountInfo {
            imported,
            tags,
            attrs,
            sessions: self.delivery.sessions.platforms(number),
            devices: self
                .notify
                .devices
                .of(number)
                .into_iter()
                .map(|device| (device.provider.name(), device.token))
                .collect(),
            pending_pushes: self.delivery.pending_count(number, now_ms()),
        })
    }

    /// The `want` most held tags with their live members, and how many tags have any.
    /// Blocking at scale (one intersection per tag).
    pub fn tag_stats(&self, want: usize) -> (Vec<Held>, u64) {
        self.read(|directory| directory.top_tags(want))
    }

    /// The `want` most held values of the attribute named `name`; 90033 for an unknown name.
    /// Blocking at scale.
    pub fn attr_stats(&self, name: &str, want: usize) -> Result<(Vec<Held>, u64), Error> {
        self.read(|directory| {
            let slot = directory.attr_slot(name).ok_or_else(|| {
                Error::rejected(
                    codes::BAD_ATTR,
                    format!(
                        "{} is not an attribute name of this app: set it with im_set_attr_name first",
                        crier_proto::echo::echo(name)
                    ),
                )
            })?;
            Ok(directory.top_attr_values(slot, want))
        })
    }

    /// The daily quota and the interval as they stand, from the stored pushes. Blocking.
    pub fn quota_state(&self) -> Result<QuotaState, Error> {
        let now = now_ms();
        let day_start = utc_day_start_ms(now);
        let counts = self.store.push_counts(self.sdkappid(), day_start)?;
        let config = &self.config;
        let after_interval = counts
            .last_created_ms
            .map_or(now, |last| (last + config.min_push_interval_ms).max(now));
        let next_push_ms = if counts.since_count >= config.daily_push_quota {
            (day_start + DAY_MS).max(after_interval)
        } else {
            after_interval
        };
        Ok(QuotaState {
            push_enabled: config.push_enabled,
            daily_push_quota: config.daily_push_quota,
            pushes_today: counts.since_count,
            min_push_interval_ms: config.min_push_interval_ms,
            last_push_ms: counts.last_created_ms,
            next_push_ms,
            quota_resets_ms: day_start + DAY_MS,
        })
    }

    /// Open sessions by login platform, accounts online, live accounts and devices.
    pub fn online_state(&self) -> OnlineState {
        let online = self.delivery.sessions.online();
        let mut sessions_by_platform = BTreeMap::new();
        for account in &online {
            for platform in self.delivery.sessions.platforms(account) {
                *sessions_by_platform.entry(platform).or_default() += 1;
            }
        }
        OnlineState {
            sessions_by_platform,
            accounts_online: online.len(),
            live_accounts: self.read(|directory| directory.live().len()),
            devices: self.notify.devices.count() as u64,
        }
    }

    /// Reads the pushes accepted since the last read (the first read: the last 8 days) into
    /// the history and the task list. Blocking.
    fn track_new_pushes(
        &self,
        extras: &ConsoleExtras,
        history: &mut History,
        now: u64,
    ) -> Result<(), Error> {
        // From the newest push read, included: another push may have been stored in the same
        // millisecond after the last read.
        let since = history
            .seen_up_to_ms
            .unwrap_or_else(|| now.saturating_sub(TRACK_TASKS_MS));
        let mut tasks = extras.tasks.lock();
        let mut order = tasks
            .values()
            .map(|facts| facts.order + 1)
            .max()
            .unwrap_or(0);
        for push in self.store.pushes_since(self.sdkappid(), since)? {
            history.track(&push.task_id, push.created_ms);
            history.seen_up_to_ms = Some(push.created_ms.max(since));
            tasks.entry(push.task_id.clone()).or_insert_with(|| {
                order += 1;
                TaskFacts {
                    order,
                    kind: push.kind,
                    data_id: push.data_id,
                    sched_task_id: push.sched_task_id,
                    created_ms: push.created_ms,
                    lifetime_secs: push.lifetime_secs,
                    audience_size: push.audience.len(),
                    condition: push.condition,
                    msg_body: push.msg_body,
                }
            });
        }
        tasks.retain(|_, facts| now.saturating_sub(facts.created_ms) <= TRACK_TASKS_MS);
        Ok(())
    }

    /// Reads new pushes, then takes a sample of the app's delivery counters into its history
    /// unless one was taken in the last second. Blocking (reads the store for new pushes and
    /// running notifications).
    pub fn sample_history(self: &Arc<Self>) -> Result<(), Error> {
        let extras = self.console_extras();
        let mut history = extras.history.lock();
        let now = now_ms();
        self.track_new_pushes(&extras, &mut history, now)?;
        if history
            .last_sample_ms()
            .is_some_and(|at| now.saturating_sub(at) < FRESH_FOR_MS)
        {
            return Ok(());
        }
        let mut readings = Vec::new();
        for (task_id, read_notifications) in history.tracked() {
            let report = self.delivery.report(&task_id);
            let notifications = if read_notifications {
                let job = self.notify.report(&task_id)?;
                Some(match job {
                    Some(job) => {
                        let mut counts = [SentFailed::default(); 3];
                        for (slot, provider) in Provider::ALL.iter().enumerate() {
                            if let Some(c) = job.counts.get(provider) {
                                counts[slot] = SentFailed {
                                    sent: c.sent,
                                    failed: c.failed + c.dead_tokens,
                                };
                            }
                        }
                        (counts, job.done)
                    }
                    // A job is stored with its push or never.
                    None => ([SentFailed::default(); 3], true),
                })
            } else {
                None
            };
            readings.push(TaskReading {
                task_id,
                totals: Totals {
                    delivered_online: report.delivered_online,
                    delivered_offline: report.delivered_offline,
                    acknowledged: report.acknowledged.unwrap_or(0),
                    notifications: [SentFailed::default(); 3],
                },
                notifications,
            });
        }
        history.record(now, readings);
        Ok(())
    }
}

/// Samples every app's delivery counters into its history every `SAMPLE_EVERY`, so the
/// Overview chart covers the time before a console opened. Runs until aborted.
pub async fn sample_every(tenants: Vec<Arc<Tenant>>) {
    let mut every = tokio::time::interval(crate::metrics_history::SAMPLE_EVERY);
    loop {
        every.tick().await;
        for tenant in &tenants {
            let tenant = Arc::clone(tenant);
            let app = tenant.sdkappid();
            match tokio::task::spawn_blocking(move || tenant.sample_history()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(app, %error, "console history sample failed"),
                Err(error) => tracing::warn!(app, %error, "console history sampler failed"),
            }
        }
    }
}
