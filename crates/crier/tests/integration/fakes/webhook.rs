//! A fake webhook receiver: `POST /hook`, checking `X-Crier-Signature` the way
//! `crier::notify::webhook` tells operators to (HMAC-SHA256 over `<timestamp>.<raw body>`,
//! compared in constant time, timestamp within five minutes). A bad signature gets 401.

use std::sync::Arc;
use std::time::Duration;

use crier::config::SecretKey;
use crier::notify::webhook::{WebhookConfig, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{now_secs, Answer, Received, Recorded, Recorder, Reply, Server};

pub const SECRET: &str = "fake-webhook-secret";
const MAX_SKEW_SECS: u64 = 300;

pub struct FakeWebhook {
    recorder: Arc<Recorder>,
    server: Server,
    config: WebhookConfig,
}

impl std::ops::Deref for FakeWebhook {
    type Target = Recorder;

    fn deref(&self) -> &Recorder {
        &self.recorder
    }
}

impl FakeWebhook {
    pub async fn start() -> FakeWebhook {
        let recorder = Recorder::new();
        let handler_recorder = recorder.clone();
        let server = Server::start(
            None,
            Arc::new(move |request| handle(&handler_recorder, request)),
        )
        .await;
        let config = WebhookConfig {
            url: format!("http://127.0.0.1:{}/hook", server.addr.port()),
            secret: SecretKey(SECRET.to_owned()),
            rate_per_sec: None,
        };
        FakeWebhook {
            recorder,
            server,
            config,
        }
    }

    pub fn config(&self) -> WebhookConfig {
        self.config.clone()
    }

    /// `[app.webhook]` and its keys, for a config file (after the `[[app]]` it belongs to).
    pub fn config_toml(&self) -> String {
        format!("[app.webhook]\n{}", toml::to_string(&self.config).unwrap())
    }

    /// Waits until `n` requests have arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.recorder
            .wait_for_named("fake webhook", n, timeout)
            .await
    }
}

/// Verifies the signature headers over the raw body.
pub fn check_signature(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let timestamp = timestamp.ok_or("no X-Crier-Timestamp")?;
    let signed_at: u64 = timestamp
        .parse()
        .map_err(|_| format!("X-Crier-Timestamp {timestamp:?} is not a number"))?;
    if signed_at.abs_diff(now_secs()) > MAX_SKEW_SECS {
        return Err(format!("X-Crier-Timestamp {signed_at} is too far from now"));
    }
    let hex = signature
        .ok_or("no X-Crier-Signature")?
        .strip_prefix("sha256=")
        .ok_or("X-Crier-Signature does not start with sha256=")?;
    let expected = decode_hex(hex).ok_or("X-Crier-Signature is not hex")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| "X-Crier-Signature does not match".to_owned())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

fn handle(recorder: &Recorder, request: Received) -> Reply {
    let json = request.json();
    let token = json
        .as_ref()
        .and_then(|body| body["Token"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut recorded = request.recorded(&token, 200);
    let checked = if request.method != "POST" || request.path != "/hook" {
        Err(format!("{} {}", request.method, request.path))
    } else {
        check_signature(
            SECRET.as_bytes(),
            request.header(TIMESTAMP_HEADER),
            request.header(SIGNATURE_HEADER),
            &request.body,
        )
    };
    if let Err(why) = checked {
        recorded.status = 401;
        recorded.rejection = Some(why.clone());
        recorder.record(recorded);
        return Reply::new(401, Some(json!({ "error": why })));
    }
    recorded.verified = true;
    let answer = recorder.answer_for(&token).unwrap_or_else(Answer::ok);
    recorded.status = answer.status;
    recorder.record(recorded);
    Reply::from_answer(&answer, None)
}
