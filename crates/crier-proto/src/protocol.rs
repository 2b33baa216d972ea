//! Crier's WebSocket client protocol (`shared/spec/client-protocol.md`): one JSON object per
//! text frame, named by its `Type` field.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Close codes the server uses.
pub mod close {
    pub const LOGIN_FAILED: u16 = 4001;
    pub const LOGIN_TIMEOUT: u16 = 4002;
    pub const KICKED: u16 = 4003;
    pub const TOO_SLOW: u16 = 4008;
}

/// Seconds a client has to send `Login` after the upgrade.
pub const LOGIN_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum ClientFrame {
    Login {
        #[serde(rename = "SdkAppId")]
        sdk_app_id: u64,
        #[serde(rename = "Identifier")]
        identifier: String,
        #[serde(rename = "UserSig")]
        user_sig: String,
        #[serde(rename = "Platform", default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    Ack {
        #[serde(rename = "TaskIds")]
        task_ids: Vec<String>,
    },
    Ping,
    RegisterDevice {
        #[serde(rename = "Platform")]
        platform: String,
        #[serde(rename = "Token")]
        token: String,
    },
    UnregisterDevice {
        #[serde(rename = "Platform")]
        platform: String,
        #[serde(rename = "Token")]
        token: String,
    },
}

/// Login platforms a client may name; `Web` when it names none.
pub const LOGIN_PLATFORMS: &[&str] = &["iPhone", "Android", "Web", "PC", "iPad", "Mac"];

/// Serialize-only: serde's internally tagged enums buffer their content, which `RawValue`
/// cannot pass through, so frames are read back with [`ServerFrame::parse`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "Type")]
pub enum ServerFrame {
    #[serde(rename = "LoginOK")]
    LoginOk {
        #[serde(rename = "Identifier")]
        identifier: String,
        #[serde(rename = "ServerTime")]
        server_time: u64,
    },
    Error {
        #[serde(rename = "ErrorCode")]
        error_code: u32,
        #[serde(rename = "ErrorInfo")]
        error_info: String,
    },
    Push(PushFrame),
    Pong,
    Kicked {
        #[serde(rename = "Reason")]
        reason: String,
    },
}

/// The frames without a raw payload, which serde's tagged enums can read directly.
#[derive(Deserialize)]
#[serde(tag = "Type")]
enum PlainServerFrame {
    #[serde(rename = "LoginOK")]
    LoginOk {
        #[serde(rename = "Identifier")]
        identifier: String,
        #[serde(rename = "ServerTime")]
        server_time: u64,
    },
    Error {
        #[serde(rename = "ErrorCode")]
        error_code: u32,
        #[serde(rename = "ErrorInfo")]
        error_info: String,
    },
    Pong,
    Kicked {
        #[serde(rename = "Reason")]
        reason: String,
    },
}

#[derive(Deserialize)]
struct FrameType<'a> {
    #[serde(rename = "Type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl ServerFrame {
    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        let FrameType { kind } = serde_json::from_str(text)?;
        if kind == "Push" {
            return serde_json::from_str(text).map(ServerFrame::Push);
        }
        Ok(match serde_json::from_str(text)? {
            PlainServerFrame::LoginOk {
                identifier,
                server_time,
            } => ServerFrame::LoginOk {
                identifier,
                server_time,
            },
            PlainServerFrame::Error {
                error_code,
                error_info,
            } => ServerFrame::Error {
                error_code,
                error_info,
            },
            PlainServerFrame::Pong => ServerFrame::Pong,
            PlainServerFrame::Kicked { reason } => ServerFrame::Kicked { reason },
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushFrame {
    #[serde(rename = "TaskId")]
    pub task_id: String,
    #[serde(rename = "From_Account")]
    pub from_account: String,
    #[serde(rename = "MsgTimeStamp")]
    pub msg_time_stamp: u64,
    #[serde(rename = "MsgRandom")]
    pub msg_random: u32,
    #[serde(rename = "MsgBody")]
    pub msg_body: Box<RawValue>,
    #[serde(
        rename = "OfflinePushInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_push_info: Option<Box<RawValue>>,
    #[serde(rename = "Offline")]
    pub offline: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_protocol_names() {
        let login: ClientFrame = serde_json::from_str(
            r#"{"Type":"Login","SdkAppId":1400000000,"Identifier":"a","UserSig":"s"}"#,
        )
        .unwrap();
        assert_eq!(
            login,
            ClientFrame::Login {
                sdk_app_id: 1_400_000_000,
                identifier: "a".into(),
                user_sig: "s".into(),
                platform: None
            }
        );
        assert_eq!(
            serde_json::to_string(&ServerFrame::Pong).unwrap(),
            r#"{"Type":"Pong"}"#
        );
        let ok = ServerFrame::LoginOk {
            identifier: "a".into(),
            server_time: 5,
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"Type":"LoginOK","Identifier":"a","ServerTime":5}"#
        );
        let push = ServerFrame::Push(PushFrame {
            task_id: "t".into(),
            from_account: "admin".into(),
            msg_time_stamp: 1,
            msg_random: 2,
            msg_body: RawValue::from_string("[]".into()).unwrap(),
            offline_push_info: None,
            offline: true,
        });
        let text = serde_json::to_string(&push).unwrap();
        assert_eq!(
            text,
            r#"{"Type":"Push","TaskId":"t","From_Account":"admin","MsgTimeStamp":1,"MsgRandom":2,"MsgBody":[],"Offline":true}"#
        );
        for frame in [push, ok, ServerFrame::Pong] {
            let text = serde_json::to_string(&frame).unwrap();
            let back = serde_json::to_string(&ServerFrame::parse(&text).unwrap()).unwrap();
            assert_eq!(back, text);
        }
        assert!(ServerFrame::parse(r#"{"Type":"Nope"}"#).is_err());
    }
}
