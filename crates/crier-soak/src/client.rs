//! The admin REST client of the soak: one keep-alive HTTP/1.1 connection, one UserSig.

use std::time::Duration;

use crier_proto::envelope::Envelope;
use serde_json::{Map, Value};

use crate::common::{now_secs, ADMIN, APP, KEY};

/// An admin client on one keep-alive connection, with one UserSig for the whole run (as
/// Tencent's server SDKs cache theirs).
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    sig: String,
}

pub enum CallError {
    Transport(String),
    /// Not OK: the envelope's code and info.
    Refused(u32, String),
}

pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl RestClient {
    pub fn new(base: &str) -> anyhow::Result<RestClient> {
        Ok(RestClient {
            http: reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(CALL_TIMEOUT)
                .build()?,
            base: base.to_owned(),
            sig: crier_proto::usersig::sign(APP, KEY, ADMIN, 86_400 * 2, now_secs()),
        })
    }

    /// POSTs `body` to `/v4/{path}`; OK answers give the envelope's fields.
    pub async fn call(&self, path: &str, body: &Value) -> Result<Map<String, Value>, CallError> {
        let url = format!(
            "{}/v4/{path}?sdkappid={APP}&identifier={ADMIN}&usersig={}&random={}&contenttype=json",
            self.base,
            self.sig,
            rand::random::<u32>()
        );
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            CallError::Transport(why)
        };
        let response = self
            .http
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .map_err(transport)?;
        let envelope: Envelope = response.json().await.map_err(transport)?;
        if envelope.is_ok() {
            Ok(envelope.rest)
        } else {
            Err(CallError::Refused(envelope.error_code, envelope.error_info))
        }
    }
}
