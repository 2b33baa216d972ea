//! The answer shape of every Tencent REST call: HTTP 200 with an `ActionStatus`, an
//! `ErrorCode` and an `ErrorInfo`, plus command-specific fields flattened beside them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionStatus {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "FAIL")]
    Fail,
}

/// The common head of every answer. Command fields live in `rest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T = serde_json::Map<String, serde_json::Value>> {
    #[serde(rename = "ActionStatus")]
    pub action_status: ActionStatus,
    #[serde(rename = "ErrorCode")]
    pub error_code: u32,
    #[serde(rename = "ErrorInfo")]
    pub error_info: String,
    #[serde(flatten)]
    pub rest: T,
}

impl<T> Envelope<T> {
    pub fn ok(rest: T) -> Self {
        Envelope {
            action_status: ActionStatus::Ok,
            error_code: 0,
            error_info: String::new(),
            rest,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.action_status == ActionStatus::Ok
    }
}

impl Envelope<serde_json::Map<String, serde_json::Value>> {
    pub fn fail(error_code: u32, error_info: impl Into<String>) -> Self {
        Envelope {
            action_status: ActionStatus::Fail,
            error_code,
            error_info: error_info.into(),
            rest: serde_json::Map::new(),
        }
    }
}
