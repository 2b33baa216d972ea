//! The `crier` binary's client commands: `listen`, `push` and `tasks`, built on `crier-client`
//! the way any other application would use it.

pub mod listen;
pub mod push;
pub mod revoke;
pub mod tasks;

use anyhow::{bail, Context};
use clap::Args;
use crier_client::Admin;
use serde_json::{Map, Value};

/// Where the server is and which app to act for.
#[derive(Args, Clone)]
pub struct Target {
    /// The server's base URL (http://host:port); `listen` derives ws://host:port/v4/ws from it.
    #[arg(long, env = "CRIER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The app's SDKAppID.
    #[arg(long, env = "CRIER_SDKAPPID")]
    pub sdkappid: u64,
    /// The app's secret key, used to sign UserSigs locally (it is never sent).
    #[arg(long, env = "CRIER_KEY", hide_env_values = true)]
    pub key: String,
}

impl Target {
    pub fn websocket_url(&self) -> String {
        websocket_url(&self.url)
    }
}

/// The gateway's URL on the server at `base`: http://host:port gives ws://host:port/v4/ws,
/// https gives wss; a URL that already ends in /v4/ws is kept.
pub fn websocket_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    if base.ends_with("/v4/ws") {
        base
    } else {
        format!("{base}/v4/ws")
    }
}

/// Calls `/v4/{command}` signed for `admin`; answers the fields beside the envelope, or an
/// error that names the refusal.
pub async fn call_ok(
    target: &Target,
    admin: &str,
    command: &str,
    body: &Value,
) -> anyhow::Result<Map<String, Value>> {
    let answer = Admin::new(&target.url, target.sdkappid, &target.key, admin)
        .call(command, body)
        .await
        .with_context(|| format!("cannot reach {}", target.url))?;
    if answer.error_code != 0 {
        let name = command.rsplit('/').next().unwrap_or(command);
        bail!(
            "{name} refused: ErrorCode {} ({})",
            answer.error_code,
            answer.error_info
        );
    }
    Ok(answer.rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target {
            url: url.into(),
            sdkappid: 1,
            key: "k".into(),
        }
    }

    #[test]
    fn websocket_url_follows_the_base_url() {
        assert_eq!(
            target("http://127.0.0.1:8080").websocket_url(),
            "ws://127.0.0.1:8080/v4/ws"
        );
        assert_eq!(
            target("https://push.example.com/").websocket_url(),
            "wss://push.example.com/v4/ws"
        );
        assert_eq!(target("ws://h:1/v4/ws").websocket_url(), "ws://h:1/v4/ws");
    }
}
