//! A fake app server receiving `Push.AllMemberPush` callbacks: `POST /crier-callback`,
//! checking the query the way timpush.md §8 tells receivers to (its own `SdkAppid`, the
//! command, and, when signed, `Sign` = hex SHA-256 of token + `RequestTime`, with
//! `RequestTime` within a minute of its clock). It answers Tencent's success body unless
//! scripted otherwise (`respond_once("", ...)`, `respond_to("", ...)`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{form_pairs, now_secs, Answer, Received, Recorded, Recorder, Reply, Server};
use crate::harness::APP;

pub const TOKEN: &str = "fake-callback-token";
const MAX_SKEW_SECS: u64 = 60;

/// What receivers deduplicate on: (`TaskId`, `To_Account`, `EventType`, `PushStage`,
/// `PushPlatform`).
pub type EventKey = (String, String, u64, u64, u64);

pub struct FakeCallbackReceiver {
    recorder: Arc<Recorder>,
    server: Server,
}

impl std::ops::Deref for FakeCallbackReceiver {
    type Target = Recorder;

    fn deref(&self) -> &Recorder {
        &self.recorder
    }
}

impl FakeCallbackReceiver {
    pub async fn start() -> FakeCallbackReceiver {
        let recorder = Recorder::new();
        let handler_recorder = recorder.clone();
        let server = Server::start(
            None,
            Arc::new(move |request| handle(&handler_recorder, request)),
        )
        .await;
        FakeCallbackReceiver { recorder, server }
    }

    /// The `callback_url` to configure.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/crier-callback",
            self.server.addr.port()
        )
    }

    /// Waits until `n` requests have arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.recorder
            .wait_for_named("fake callback receiver", n, timeout)
            .await
    }

    /// The events of every request it answered as handled (HTTP 200, `ErrorCode` 0).
    pub fn accepted_events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|request| request.status == 200 && handled(request))
            .flat_map(events_of)
            .collect()
    }

    /// Waits until the accepted events hold every key of `expected`; answers every accepted
    /// event then. Panics after `timeout`, naming what is missing.
    pub async fn wait_for_events(
        &self,
        expected: &BTreeSet<EventKey>,
        timeout: Duration,
    ) -> Vec<Value> {
        let started = std::time::Instant::now();
        loop {
            let events = self.accepted_events();
            let keys: BTreeSet<EventKey> = events.iter().map(key).collect();
            if expected.is_subset(&keys) {
                return events;
            }
            if started.elapsed() > timeout {
                let missing: Vec<_> = expected.difference(&keys).collect();
                panic!(
                    "callback events missing after {timeout:?}: {missing:#?}; {} requests so far",
                    self.count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An event's deduplication key.
pub fn key(event: &Value) -> EventKey {
    (
        event["TaskId"].as_str().unwrap_or_default().to_owned(),
        event["To_Account"].as_str().unwrap_or_default().to_owned(),
        event["EventType"].as_u64().unwrap_or(99),
        event["PushStage"].as_u64().unwrap_or(99),
        event["PushPlatform"].as_u64().unwrap_or(99),
    )
}

/// The `Events` of one request.
pub fn events_of(request: &Recorded) -> Vec<Value> {
    request
        .json
        .as_ref()
        .and_then(|body| body["Events"].as_array().cloned())
        .unwrap_or_default()
}

/// The request's query parameters.
pub fn query(request: &Recorded) -> HashMap<String, String> {
    let query = request.path.split_once('?').map_or("", |(_, query)| query);
    form_pairs(query.as_bytes())
}

/// Whether the fake's answer to the request said it was handled.
fn handled(request: &Recorded) -> bool {
    request.header("x-fake-answer") != Some("failed")
}

/// The receiver's checks of a request, in the spec's words.
pub fn check(request: &Recorded, token: Option<&str>) -> Result<(), String> {
    let query = query(request);
    if query.get("SdkAppid").map(String::as_str) != Some(&APP.to_string()) {
        return Err(format!("SdkAppid is not ours: {query:?}"));
    }
    if query.get("CallbackCommand").map(String::as_str) != Some("Push.AllMemberPush") {
        return Err(format!("CallbackCommand: {query:?}"));
    }
    if query.get("contenttype").map(String::as_str) != Some("json") {
        return Err(format!("contenttype: {query:?}"));
    }
    let Some(token) = token else {
        return match query.contains_key("Sign") || query.contains_key("RequestTime") {
            true => Err("signed without a token".into()),
            false => Ok(()),
        };
    };
    let time = query.get("RequestTime").ok_or("no RequestTime")?;
    let signed_at: u64 = time.parse().map_err(|_| format!("RequestTime {time:?}"))?;
    if now_secs().abs_diff(signed_at) > MAX_SKEW_SECS {
        return Err(format!("RequestTime {signed_at} is over a minute from now"));
    }
    let expected = format!("{:x}", Sha256::digest(format!("{token}{time}").as_bytes()));
    match query.get("Sign") {
        Some(sign) if *sign == expected => Ok(()),
        other => Err(format!("Sign {other:?}, expected {expected}")),
    }
}

fn handle(recorder: &Recorder, request: Received) -> Reply {
    let answer = recorder.answer_for("").unwrap_or_else(|| {
        Answer::json(
            200,
            json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}),
        )
    });
    let failed = answer.status != 200
        || answer
            .body
            .as_ref()
            .is_none_or(|body| body["ErrorCode"] != json!(0));
    let mut recorded = request.recorded("", answer.status);
    // Remember how it was answered, for `accepted_events`.
    recorded.headers.push((
        "x-fake-answer".into(),
        if failed { "failed" } else { "handled" }.into(),
    ));
    recorded.verified = check(&recorded, Some(TOKEN)).is_ok();
    recorder.record(recorded);
    Reply::from_answer(&answer, None)
}
