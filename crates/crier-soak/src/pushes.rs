//! The push client: `im_push` at the rate the server allows, every accepted TaskId noted.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{CallError, RestClient};
use crate::common::BASE_TAG;
use crate::rest::{write_journal, Journal, RestStats};

/// What the push client did: the pushes accepted (MsgRandom, TaskId), the ones whose fate is
/// unknown (transport failure), and refusals for the interval.
#[derive(Default)]
pub struct Pushes {
    pub accepted: Vec<(u32, String)>,
    pub uncertain: Vec<u32>,
    pub refused_interval: u64,
    pub stats: RestStats,
}

/// `im_push` to every account, kept for `lifetime` seconds, one at least `interval` after
/// the previous one was answered (the server counts its interval between acceptances, and
/// the previous one was accepted before it was answered). Alternate pushes name the base tag
/// every account holds, so the audience is always everyone.
pub async fn push_loop(
    client: RestClient,
    end: Instant,
    interval: Duration,
    lifetime: u64,
    text_bytes: usize,
    journal: Journal,
) -> Pushes {
    let mut pushes = Pushes::default();
    let mut random: u32 = 0;
    let mut next = Instant::now();
    while next < end {
        tokio::time::sleep_until(next).await;
        random += 1;
        let mut text = format!("soak push {random} ");
        while text.len() < text_bytes {
            text.push('x');
        }
        let mut body = json!({
            "MsgRandom": random,
            "MsgLifeTime": lifetime,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
        });
        if random % 2 == 0 {
            body["Condition"] = json!({"TagsOr": [BASE_TAG]});
        }
        let started = Instant::now();
        let result = client.call("all_member_push/im_push", &body).await;
        let answered = Instant::now();
        match &result {
            Ok(answer) => {
                let task_id = answer
                    .get("TaskId")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                write_journal(&journal, json!({"push": random, "TaskId": task_id}));
                pushes.accepted.push((random, task_id));
            }
            Err(CallError::Refused(90024, _)) => pushes.refused_interval += 1,
            Err(CallError::Transport(_)) => pushes.uncertain.push(random),
            Err(CallError::Refused(..)) => {}
        }
        if matches!(result, Err(CallError::Refused(90024, _))) {
            // Counted apart: a pacing question, not a server fault.
            pushes
                .stats
                .latencies_us
                .entry("im_push")
                .or_default()
                .push(started.elapsed().as_micros() as u32);
        } else {
            pushes.stats.record("im_push", &result, answered - started);
        }
        next = (next + interval).max(answered + interval + Duration::from_millis(1));
    }
    pushes
}
