//! `timpush/all_member_push_statistics` and `all_member_push_trace` (`timpush.md` §6-7), from
//! what Crier records of a push anyway: its audience snapshot, its delivery counts, the marks
//! of who it reached on a session and who acknowledged it (bitmaps per batch), and its
//! notification job (targets, cursor, counts per provider). No row per recipient is read: one
//! push's statistics cost a few bitmap unions and intersections whatever its audience.

use std::collections::BTreeMap;
use std::sync::Arc;

use crier_proto::codes;
use crier_proto::echo::echo;
use roaring::RoaringBitmap;
use serde::Serialize;
use serde_json::{json, Value};

use super::Tenant;
use crate::clock::{now_ms, utc_datetime};
use crate::error::Error;
use crate::notify::worker::JobCounts;
use crate::notify::Provider;
use crate::store::{MarkStage, PushKind, PushMark, PushRecord};

/// The widest statistics window (§6).
const MAX_WINDOW_SECS: u64 = 30 * 86_400;
/// The most TaskIDs one statistics request names (§6).
const MAX_TASK_IDS: usize = 5;
/// How long a trace is kept (§7).
const TRACE_KEPT_MS: u64 = 7 * 86_400 * 1000;
/// `EventType` of the callback numbering (§8).
const EVENT_OFFLINE: u8 = 1;
const EVENT_ONLINE: u8 = 2;

/// The callback's `PushPlatform` of a provider (§8): the webhook is no vendor Tencent names.
pub fn push_platform(provider: Provider) -> u8 {
    match provider {
        Provider::Apns => 1,
        Provider::Fcm => 4,
        Provider::Webhook => 0,
    }
}

/// A statistics request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatisticsRequest {
    pub start_secs: u64,
    pub end_secs: u64,
    /// Empty: every `timpush` task of the window, summed.
    pub task_ids: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Counters {
    pub total_count: u64,
    pub sent_count: u64,
    pub delivered_count: u64,
    pub click_count: u64,
}

impl std::ops::AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, other: &Counters) {
        self.total_count += other.total_count;
        self.sent_count += other.sent_count;
        self.delivered_count += other.delivered_count;
        self.click_count += other.click_count;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PlatformStatistics {
    pub event_type: u8,
    pub push_platform: u8,
    #[serde(flatten)]
    pub counters: Counters,
}

/// One entry of `Results`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatistics {
    #[serde(rename = "TaskID")]
    pub task_id: String,
    #[serde(flatten)]
    pub counters: Counters,
    pub platform_statistics: Vec<PlatformStatistics>,
}

impl TaskStatistics {
    fn zeros(task_id: &str) -> TaskStatistics {
        TaskStatistics {
            task_id: task_id.to_owned(),
            ..TaskStatistics::default()
        }
    }

    /// Adds `other` into this sum, platform rows matched on (`EventType`, `PushPlatform`).
    fn add(&mut self, other: &TaskStatistics) {
        self.counters += &other.counters;
        for row in &other.platform_statistics {
            match self.platform_statistics.iter_mut().find(|mine| {
                (mine.event_type, mine.push_platform) == (row.event_type, row.push_platform)
            }) {
                Some(mine) => mine.counters += &row.counters,
                None => self.platform_statistics.push(row.clone()),
            }
        }
    }
}

fn bad(info: impl Into<String>) -> Error {
    Error::rejected(codes::BAD_PARAMETER, info)
}

fn unix_secs(body: &Value, key: &str) -> Result<u64, Error> {
    match &body[key] {
        Value::Null => Err(bad(format!(
            "{key} is missing: it is required, Unix seconds"
        ))),
        value => value.as_u64().ok_or_else(|| {
            bad(format!(
                "{key} must be a non-negative integer of Unix seconds"
            ))
        }),
    }
}

/// `TaskID`, or its tolerated spelling `TaskId`.
fn task_id_field(body: &Value) -> &Value {
    match body.get("TaskID") {
        Some(value) => value,
        None => body.get("TaskId").unwrap_or(&Value::Null),
    }
}

/// Reads a statistics body: the window and at most five TaskIDs, 90104 otherwise.
pub fn parse_statistics(body: &Value) -> Result<StatisticsRequest, Error> {
    if !body.is_object() {
        return Err(Error::rejected(
            codes::BAD_JSON,
            "the request body must be a JSON object",
        ));
    }
    let start_secs = unix_secs(body, "StartTime")?;
    let end_secs = unix_secs(body, "EndTime")?;
    if end_secs < start_secs {
        return Err(bad(format!(
            "EndTime {end_secs} is before StartTime {start_secs}"
        )));
    }
    if end_secs - start_secs > MAX_WINDOW_SECS {
        return Err(bad(format!(
            "the window from StartTime to EndTime is {} s; it may span at most 30 days ({MAX_WINDOW_SECS} s)",
            end_secs - start_secs
        )));
    }
    let task_ids = match task_id_field(body) {
        Value::Null => Vec::new(),
        Value::Array(items) => {
            if items.len() > MAX_TASK_IDS {
                return Err(bad(format!(
                    "TaskID lists {} tasks; at most {MAX_TASK_IDS} per request",
                    items.len()
                )));
            }
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("TaskID must be an array of TaskId strings"))
                })
                .collect::<Result<_, _>>()?
        }
        _ => return Err(bad("TaskID must be an array of TaskId strings")),
    };
    Ok(StatisticsRequest {
        start_secs,
        end_secs,
        task_ids,
    })
}

/// A trace request, read: (`TaskID`, `UserID`).
pub fn parse_trace(body: &Value) -> Result<(String, String), Error> {
    if !body.is_object() {
        return Err(Error::rejected(
            codes::BAD_JSON,
            "the request body must be a JSON object",
        ));
    }
    let text = |value: &Value, key: &str| match value {
        Value::String(text) if !text.is_empty() => Ok(text.clone()),
        Value::Null => Err(bad(format!("{key} is missing: it is required, a string"))),
        _ => Err(bad(format!("{key} must be a non-empty string"))),
    };
    Ok((
        text(task_id_field(body), "TaskID")?,
        text(&body["UserID"], "UserID")?,
    ))
}

/// The reached and acknowledged accounts of a push, from its marks.
#[derive(Default)]
struct Marks {
    reached: RoaringBitmap,
    acked: RoaringBitmap,
    batches: Vec<PushMark>,
}

impl Marks {
    fn of(batches: Vec<PushMark>) -> Marks {
        let mut marks = Marks::default();
        for batch in &batches {
            match batch.stage {
                MarkStage::Reached => marks.reached |= &batch.accounts,
                MarkStage::Acked => marks.acked |= &batch.accounts,
            }
        }
        marks.batches = batches;
        marks
    }

    /// When `account` first reached `stage`, Unix milliseconds.
    fn first(&self, stage: MarkStage, account: u32) -> Option<u64> {
        self.batches
            .iter()
            .filter(|batch| batch.stage == stage && batch.accounts.contains(account))
            .map(|batch| batch.at_ms)
            .min()
    }
}

fn stage(at_ms: u64) -> Value {
    json!({
        "PushStatus": 1,
        "ErrorCode": 0,
        "ErrorInfo": "success",
        "EventTime": utc_datetime(at_ms / 1000),
    })
}

fn system_of(provider: Provider) -> &'static str {
    match provider {
        Provider::Apns => "APNS",
        Provider::Fcm => "Android",
        Provider::Webhook => "Webhook",
    }
}

impl Tenant {
    /// Takes one of the app's statistics or trace calls: one a second each (§1.9).
    fn take_report_call(&self, trace: bool) -> Result<(), Error> {
        let command = if trace {
            "v4/timpush/all_member_push_trace"
        } else {
            "v4/timpush/all_member_push_statistics"
        };
        self.count_call(command, 1)
    }

    /// `timpush/all_member_push_statistics`.
    pub async fn push_statistics(
        self: &Arc<Self>,
        body: &Value,
    ) -> Result<Vec<TaskStatistics>, Error> {
        let request = parse_statistics(body)?;
        self.take_report_call(false)?;
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || tenant.statistics_of(&request)).await?
    }

    /// The statistics a request asks for. Blocking.
    pub fn statistics_of(&self, request: &StatisticsRequest) -> Result<Vec<TaskStatistics>, Error> {
        let app = self.sdkappid();
        let window = request.start_secs * 1000..(request.end_secs + 1) * 1000;
        if request.task_ids.is_empty() {
            let mut sum = TaskStatistics::zeros("");
            for record in self.store.pushes_since(app, window.start)? {
                if record.kind.is_timpush() && window.contains(&record.created_ms) {
                    sum.add(&self.task_statistics(&record)?);
                }
            }
            return Ok(vec![sum]);
        }
        request
            .task_ids
            .iter()
            .map(|task_id| {
                // Unknown, outside the window, or a classic `im_push`: zeros (§6, §11).
                match self.store.push_record(app, task_id)? {
                    Some(record)
                        if record.kind.is_timpush() && window.contains(&record.created_ms) =>
                    {
                        self.task_statistics(&record)
                    }
                    _ => Ok(TaskStatistics::zeros(task_id)),
                }
            })
            .collect()
    }

    /// One push's counters: online from its delivery counts and marks, offline from its
    /// notification job. Blocking.
    fn task_statistics(&self, record: &PushRecord) -> Result<TaskStatistics, Error> {
        let app = self.sdkappid();
        let counts = self
            .store
            .load_delivery_counts(app)?
            .remove(&record.task_id)
            .unwrap_or_default();
        let marks = Marks::of(self.store.push_marks(app, &record.task_id)?);
        let job = self.store.job(app, &record.task_id)?;
        let targets = job
            .as_ref()
            .map_or_else(RoaringBitmap::new, |job| job.targets.clone());
        let online = Counters {
            // Whoever is not a notification target can only be reached on a session.
            total_count: record.audience.len() - record.audience.intersection_len(&targets),
            sent_count: counts.online + counts.offline,
            delivered_count: marks.acked.len(),
            click_count: 0,
        };
        let mut statistics = TaskStatistics {
            task_id: record.task_id.clone(),
            counters: Counters {
                total_count: record.audience.len(),
                sent_count: online.sent_count,
                delivered_count: online.delivered_count,
                click_count: 0,
            },
            platform_statistics: vec![PlatformStatistics {
                event_type: EVENT_ONLINE,
                push_platform: 0,
                counters: online,
            }],
        };
        let job_counts: JobCounts = job
            .as_ref()
            .and_then(|job| serde_json::from_str(&job.counts).ok())
            .unwrap_or_default();
        let mut per_provider: BTreeMap<Provider, u64> = self
            .notify
            .devices
            .accounts_per_provider(&targets)
            .into_iter()
            .collect();
        for provider in job_counts.keys() {
            per_provider.entry(*provider).or_default();
        }
        for (provider, with_devices) in per_provider {
            let done = job_counts.get(&provider).copied().unwrap_or_default();
            let row = Counters {
                // Devices removed since (dead tokens) were still tried.
                total_count: with_devices.max(done.sent + done.failed),
                sent_count: done.sent,
                delivered_count: 0,
                click_count: 0,
            };
            statistics.counters.sent_count += row.sent_count;
            statistics.platform_statistics.push(PlatformStatistics {
                event_type: EVENT_OFFLINE,
                push_platform: push_platform(provider),
                counters: row,
            });
        }
        Ok(statistics)
    }

    /// `timpush/all_member_push_trace`: the `InstanceTrace` entries of one user in one task.
    pub async fn push_trace(self: &Arc<Self>, body: &Value) -> Result<Vec<Value>, Error> {
        let (task_id, user) = parse_trace(body)?;
        self.take_report_call(true)?;
        let tenant = Arc::clone(self);
        tokio::task::spawn_blocking(move || tenant.trace_of(&task_id, &user)).await?
    }

    /// The trace of `user` in `task_id`. Blocking.
    pub fn trace_of(&self, task_id: &str, user: &str) -> Result<Vec<Value>, Error> {
        let app = self.sdkappid();
        let Some(record) = self
            .store
            .push_record(app, task_id)?
            .filter(|record| record.kind != PushKind::ImPush)
        else {
            return Err(Error::rejected(
                codes::REVOKE_UNKNOWN_TASK,
                format!(
                    "this app has no v4/timpush task with TaskID {}",
                    echo(task_id)
                ),
            ));
        };
        let account = self.read(|directory| directory.account_number(user));
        let Some(account) = account.filter(|account| record.audience.contains(*account)) else {
            return Ok(Vec::new());
        };
        if now_ms().saturating_sub(record.created_ms) > TRACE_KEPT_MS {
            return Ok(Vec::new());
        }
        let marks = Marks::of(self.store.push_marks(app, task_id)?);
        let committed = json!({ "IMStat": stage(record.created_ms) });
        let mut entries = Vec::new();
        if let Some(reached_ms) = marks.first(MarkStage::Reached, account) {
            let mut online = serde_json::Map::new();
            online.insert("OnlineStat".into(), stage(reached_ms));
            if let Some(acked_ms) = marks.first(MarkStage::Acked, account) {
                online.insert("AckStat".into(), stage(acked_ms));
            }
            entries.push(json!({
                "InstanceId": "online",
                "PushTime": utc_datetime(reached_ms / 1000),
                "DeviceModel": "", "System": "", "SystemVersion": "",
                "EventType": EVENT_ONLINE, "PushPlatform": 0,
                "Token": "", "CertId": "", "SdkVersion": "", "PushVersion": "",
                "NotificationStatus": 0, "last_active_terminal": 1,
                "IMCommitStat": committed,
                "OnlinePushStat": online,
            }));
        }
        let notified = self
            .store
            .job(app, task_id)?
            .is_some_and(|job| job.targets.contains(account) && account < job.cursor);
        if notified {
            // Crier keeps no time per notification (no row per recipient): a device's stage
            // carries the task's start.
            for (index, device) in self.notify.devices.of(account).into_iter().enumerate() {
                entries.push(json!({
                    "InstanceId": format!("{}-{index}", device.provider.name()),
                    "PushTime": utc_datetime(record.created_ms / 1000),
                    "DeviceModel": "", "System": system_of(device.provider), "SystemVersion": "",
                    "EventType": EVENT_OFFLINE, "PushPlatform": push_platform(device.provider),
                    "Token": device.token, "CertId": "", "SdkVersion": "", "PushVersion": "",
                    "NotificationStatus": 1, "last_active_terminal": 0,
                    "IMCommitStat": committed,
                    "OfflinePushStat": { "OfflineStat": stage(record.created_ms) },
                }));
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_windows_and_ids_are_checked() {
        let ok = parse_statistics(&json!({"StartTime": 10, "EndTime": 20, "TaskID": ["a"]}));
        assert_eq!(
            ok.unwrap(),
            StatisticsRequest {
                start_secs: 10,
                end_secs: 20,
                task_ids: vec!["a".into()]
            }
        );
        let tolerated = parse_statistics(&json!({"StartTime": 10, "EndTime": 10, "TaskId": []}));
        assert!(tolerated.unwrap().task_ids.is_empty());
        for body in [
            json!({"StartTime": 20, "EndTime": 10, "TaskID": []}),
            json!({"StartTime": 0, "EndTime": MAX_WINDOW_SECS + 1, "TaskID": []}),
            json!({"StartTime": 0, "EndTime": 1, "TaskID": ["1", "2", "3", "4", "5", "6"]}),
            json!({"EndTime": 1, "TaskID": []}),
            json!({"StartTime": "0", "EndTime": 1}),
            json!({"StartTime": 0, "EndTime": 1, "TaskID": [1]}),
            json!({"StartTime": 0, "EndTime": 1, "TaskID": "a"}),
        ] {
            let error = parse_statistics(&body).unwrap_err().to_wire();
            assert_eq!(error.code, codes::BAD_PARAMETER, "{body}");
        }
        assert!(parse_statistics(&json!({"StartTime": 0, "EndTime": MAX_WINDOW_SECS})).is_ok());
    }

    #[test]
    fn trace_needs_both_fields() {
        assert_eq!(
            parse_trace(&json!({"TaskID": "t", "UserID": "u"})).unwrap(),
            ("t".to_owned(), "u".to_owned())
        );
        for body in [
            json!({"TaskID": "t"}),
            json!({"UserID": "u"}),
            json!({"TaskID": 1, "UserID": "u"}),
        ] {
            assert_eq!(
                parse_trace(&body).unwrap_err().to_wire().code,
                codes::BAD_PARAMETER
            );
        }
    }

    #[test]
    fn sums_match_platform_rows() {
        let row = |event_type, push_platform, total| PlatformStatistics {
            event_type,
            push_platform,
            counters: Counters {
                total_count: total,
                sent_count: total,
                delivered_count: 0,
                click_count: 0,
            },
        };
        let one = TaskStatistics {
            task_id: "a".into(),
            counters: Counters {
                total_count: 3,
                sent_count: 3,
                delivered_count: 1,
                click_count: 0,
            },
            platform_statistics: vec![row(2, 0, 2), row(1, 1, 1)],
        };
        let two = TaskStatistics {
            task_id: "b".into(),
            counters: Counters {
                total_count: 4,
                sent_count: 4,
                delivered_count: 0,
                click_count: 0,
            },
            platform_statistics: vec![row(2, 0, 1), row(1, 4, 3)],
        };
        let mut sum = TaskStatistics::zeros("");
        sum.add(&one);
        sum.add(&two);
        assert_eq!(sum.counters.total_count, 7);
        assert_eq!(
            sum.platform_statistics,
            vec![row(2, 0, 3), row(1, 1, 1), row(1, 4, 3)]
        );
    }
}
