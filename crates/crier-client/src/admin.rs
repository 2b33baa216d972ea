//! Admin calls to the REST API, signed like Tencent's server SDKs sign them.

use crier_proto::envelope::Envelope;
use crier_proto::usersig;
use serde_json::{json, Map, Value};

use crate::ClientError;

pub struct Admin {
    base: String,
    sdkappid: u64,
    key: String,
    identifier: String,
    http: reqwest::Client,
}

impl Admin {
    /// `base` is the server's root URL, e.g. `http://127.0.0.1:8080`.
    pub fn new(base: &str, sdkappid: u64, key: &str, identifier: &str) -> Admin {
        Admin {
            base: base.trim_end_matches('/').to_owned(),
            sdkappid,
            key: key.to_owned(),
            identifier: identifier.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// POSTs `body` to `/v4/{path}` and answers the envelope, successful or not.
    pub async fn call(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<Envelope<Map<String, Value>>, ClientError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = usersig::sign(self.sdkappid, &self.key, &self.identifier, 3_600, now);
        let url = format!(
            "{}/v4/{path}?sdkappid={}&identifier={}&usersig={sig}&random={}&contenttype=json",
            self.base,
            self.sdkappid,
            self.identifier,
            rand::random::<u32>()
        );
        // Errors leave the URL out: its query string carries a live signature.
        let response = self
            .http
            .post(url)
            .body(body.to_string())
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        Ok(response.json().await.map_err(reqwest::Error::without_url)?)
    }

    /// `v4/timpush/add_sched_task`: runs `content` at `sched_at` (`YYYY-MM-DD HH:MM:SS`, UTC),
    /// a `push` body for `kind` `All` or `Tag`, a `batch` body for `User`. Answers the
    /// scheduled task's `TaskID`.
    pub async fn add_sched_task(
        &self,
        kind: &str,
        sched_at: &str,
        content: &Value,
    ) -> Result<u64, ClientError> {
        let body = json!({
            "Sdkappid": self.sdkappid,
            "Type": kind,
            "SchedAt": sched_at,
            "Content": content,
        });
        let answer = self.call("timpush/add_sched_task", &body).await?;
        if answer.error_code != 0 {
            return Err(ClientError::Refused {
                code: answer.error_code,
                info: answer.error_info,
            });
        }
        answer
            .rest
            .get("TaskID")
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                ClientError::Protocol("add_sched_task answered OK without a TaskID".into())
            })
    }

    /// Makes a UserSig for one of the app's accounts (for tests and tools holding the key).
    pub fn user_sig(&self, identifier: &str, expire: u64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        usersig::sign(self.sdkappid, &self.key, identifier, expire, now)
    }
}
