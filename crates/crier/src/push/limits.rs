//! Per-app push rate limits: the `MsgRandom` retry window, the minimum interval between
//! pushes and the daily quota. Rebuilt from the stored pushes at start, so a restart neither
//! resets the quota nor lets two pushes through closer than the interval.

use std::collections::VecDeque;

use crier_proto::codes;

use crate::clock::utc_day_start_ms;
use crate::config::AppConfig;
use crate::error::Error;
use crate::store::PushCounts;

/// A repeat of the same `MsgRandom` and body within this window is a client retry.
pub const RETRY_WINDOW_MS: u64 = 1_000;

struct Accepted {
    created_ms: u64,
    msg_random: u32,
    fingerprint: u64,
    task_id: String,
}

pub struct PushLimits {
    day_start_ms: u64,
    pushes_today: u64,
    last_push_ms: Option<u64>,
    recent: VecDeque<Accepted>,
}

impl PushLimits {
    /// `counts` are the app's pushes since the start of the UTC day holding `now_ms`.
    pub fn new(now_ms: u64, counts: PushCounts) -> Self {
        PushLimits {
            day_start_ms: utc_day_start_ms(now_ms),
            pushes_today: counts.since_count,
            last_push_ms: counts.last_created_ms,
            recent: VecDeque::new(),
        }
    }

    /// The TaskId of an accepted push this request repeats, if it is a retry.
    pub fn retry_of(&mut self, now_ms: u64, msg_random: u32, fingerprint: u64) -> Option<String> {
        while self
            .recent
            .front()
            .is_some_and(|a| now_ms.saturating_sub(a.created_ms) > RETRY_WINDOW_MS)
        {
            self.recent.pop_front();
        }
        self.recent
            .iter()
            .find(|a| a.msg_random == msg_random && a.fingerprint == fingerprint)
            .map(|a| a.task_id.clone())
    }

    pub fn check(&mut self, now_ms: u64, app: &AppConfig) -> Result<(), Error> {
        if let Some(last) = self.last_push_ms {
            let since = now_ms.saturating_sub(last);
            if since < app.min_push_interval_ms {
                return Err(Error::rejected(
                    codes::PUSH_TOO_FREQUENT,
                    format!("pushes must be at least {} ms apart; the last one was {since} ms ago: retry later", app.min_push_interval_ms),
                ));
            }
        }
        let today = utc_day_start_ms(now_ms);
        if today != self.day_start_ms {
            self.day_start_ms = today;
            self.pushes_today = 0;
        }
        if self.pushes_today >= app.daily_push_quota {
            return Err(Error::rejected(
                codes::DAILY_QUOTA_EXCEEDED,
                format!(
                    "this app's quota of {} pushes per UTC day is used up: retry after 00:00 UTC",
                    app.daily_push_quota
                ),
            ));
        }
        Ok(())
    }

    pub fn record(&mut self, now_ms: u64, msg_random: u32, fingerprint: u64, task_id: String) {
        self.pushes_today += 1;
        self.last_push_ms = Some(now_ms);
        self.recent.push_back(Accepted {
            created_ms: now_ms,
            msg_random,
            fingerprint,
            task_id,
        });
    }
}
