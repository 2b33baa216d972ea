//! Crier's WebSocket client protocol (`shared/spec/client-protocol.md`): one JSON object per
//! text frame, named by its `Type` field.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Close codes the server uses.
pub mod close {
    /// RFC 6455 (7.4.1): the server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// RFC 6455: the client broke the framing rules (an unmasked frame, reserved bits set, a
    /// fragmented control frame, ...).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// RFC 6455: a text frame is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// RFC 6455: a frame or message is over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
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

/// Serialize-only: frames are read back with [`ServerFrame::parse`].
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
    /// The push with this TaskId was recalled (`v4/timpush/revoke`): hide it, and drop it if
    /// it still arrives.
    Revoke {
        #[serde(rename = "TaskId")]
        task_id: String,
        #[serde(
            rename = "OfflinePushInfo",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        offline_push_info: Option<Box<RawValue>>,
    },
}

/// Every field any server frame has, read in one pass and then checked against `Type`.
/// serde's internally tagged enums would buffer the object, which `RawValue` cannot pass
/// through, and reading `Type` first costs a second pass over every frame.
#[derive(Deserialize)]
struct FrameFields {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Identifier")]
    identifier: Option<String>,
    #[serde(rename = "ServerTime")]
    server_time: Option<u64>,
    #[serde(rename = "ErrorCode")]
    error_code: Option<u32>,
    #[serde(rename = "ErrorInfo")]
    error_info: Option<String>,
    #[serde(rename = "Reason")]
    reason: Option<String>,
    #[serde(rename = "TaskId")]
    task_id: Option<String>,
    #[serde(rename = "From_Account")]
    from_account: Option<String>,
    #[serde(rename = "MsgTimeStamp")]
    msg_time_stamp: Option<u64>,
    #[serde(rename = "MsgRandom")]
    msg_random: Option<u32>,
    #[serde(rename = "MsgBody")]
    msg_body: Option<Box<RawValue>>,
    #[serde(rename = "OfflinePushInfo")]
    offline_push_info: Option<Box<RawValue>>,
    #[serde(rename = "Offline")]
    offline: Option<bool>,
}

fn required<T>(field: Option<T>, name: &'static str) -> Result<T, serde_json::Error> {
    field.ok_or_else(|| serde::de::Error::missing_field(name))
}

impl ServerFrame {
    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<ServerFrame, serde_json::Error> {
        let f: FrameFields = serde_json::from_str(text)?;
        Ok(match f.kind.as_str() {
            "Push" => ServerFrame::Push(PushFrame {
                task_id: required(f.task_id, "TaskId")?,
                from_account: required(f.from_account, "From_Account")?,
                msg_time_stamp: required(f.msg_time_stamp, "MsgTimeStamp")?,
                msg_random: required(f.msg_random, "MsgRandom")?,
                msg_body: required(f.msg_body, "MsgBody")?,
                offline_push_info: f.offline_push_info,
                offline: required(f.offline, "Offline")?,
            }),
            "LoginOK" => ServerFrame::LoginOk {
                identifier: required(f.identifier, "Identifier")?,
                server_time: required(f.server_time, "ServerTime")?,
            },
            "Error" => ServerFrame::Error {
                error_code: required(f.error_code, "ErrorCode")?,
                error_info: required(f.error_info, "ErrorInfo")?,
            },
            "Pong" => ServerFrame::Pong,
            "Kicked" => ServerFrame::Kicked {
                reason: required(f.reason, "Reason")?,
            },
            "Revoke" => ServerFrame::Revoke {
                task_id: required(f.task_id, "TaskId")?,
                offline_push_info: f.offline_push_info,
            },
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["LoginOK", "Error", "Push", "Pong", "Kicked", "Revoke"],
                ))
            }
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
        let error = ServerFrame::Error {
            error_code: 70001,
            error_info: "expired".into(),
        };
        let kicked = ServerFrame::Kicked {
            reason: "deleted".into(),
        };
        let revoke = ServerFrame::Revoke {
            task_id: "t".into(),
            offline_push_info: Some(RawValue::from_string(r#"{"Title":"x"}"#.into()).unwrap()),
        };
        assert_eq!(
            serde_json::to_string(&revoke).unwrap(),
            r#"{"Type":"Revoke","TaskId":"t","OfflinePushInfo":{"Title":"x"}}"#
        );
        assert!(ServerFrame::parse(r#"{"Type":"Revoke"}"#).is_err());
        for frame in [push, ok, ServerFrame::Pong, error, kicked, revoke] {
            let text = serde_json::to_string(&frame).unwrap();
            let back = serde_json::to_string(&ServerFrame::parse(&text).unwrap()).unwrap();
            assert_eq!(back, text);
        }
        assert!(ServerFrame::parse(r#"{"Type":"Nope"}"#).is_err());
        let missing = ServerFrame::parse(r#"{"Type":"Push","TaskId":"t"}"#).unwrap_err();
        assert!(missing.to_string().contains("From_Account"), "{missing}");
        assert!(ServerFrame::parse(r#"{"Type":"Kicked"}"#).is_err());
        // Fields a newer server may add are ignored.
        assert!(matches!(
            ServerFrame::parse(r#"{"Type":"Pong","Extra":[1,{"a":2}]}"#),
            Ok(ServerFrame::Pong)
        ));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn raw_json() -> impl Strategy<Value = Box<RawValue>> {
            prop::collection::vec(("\\PC{0,12}", any::<i64>()), 0..4).prop_map(|items| {
                let value: Vec<serde_json::Value> = items
                    .into_iter()
                    .map(|(text, n)| serde_json::json!({"MsgType": "TIMTextElem", "Text": text, "N": n}))
                    .collect();
                RawValue::from_string(serde_json::to_string(&value).unwrap()).unwrap()
            })
        }

        fn server_frame() -> impl Strategy<Value = ServerFrame> {
            prop_oneof![
                ("\\PC{0,32}", any::<u64>()).prop_map(|(identifier, server_time)| {
                    ServerFrame::LoginOk {
                        identifier,
                        server_time,
                    }
                }),
                (any::<u32>(), "\\PC{0,40}").prop_map(|(error_code, error_info)| {
                    ServerFrame::Error {
                        error_code,
                        error_info,
                    }
                }),
                Just(ServerFrame::Pong),
                "\\PC{0,40}".prop_map(|reason| ServerFrame::Kicked { reason }),
                ("[0-9a-f_]{1,40}", prop::option::of(raw_json())).prop_map(
                    |(task_id, offline_push_info)| ServerFrame::Revoke {
                        task_id,
                        offline_push_info
                    }
                ),
                (
                    "[0-9_]{1,40}",
                    "\\PC{1,32}",
                    any::<u64>(),
                    any::<u32>(),
                    raw_json(),
                    prop::option::of(raw_json()),
                    any::<bool>(),
                )
                    .prop_map(
                        |(
                            task_id,
                            from_account,
                            msg_time_stamp,
                            msg_random,
                            msg_body,
                            offline_push_info,
                            offline,
                        )| {
                            ServerFrame::Push(PushFrame {
                                task_id,
                                from_account,
                                msg_time_stamp,
                                msg_random,
                                msg_body,
                                offline_push_info,
                                offline,
                            })
                        }
                    ),
            ]
        }

        fn client_frame() -> impl Strategy<Value = ClientFrame> {
            prop_oneof![
                (
                    any::<u64>(),
                    "\\PC{0,32}",
                    "[A-Za-z0-9*_-]{0,64}",
                    prop::option::of("[A-Za-z]{1,8}")
                )
                    .prop_map(|(sdk_app_id, identifier, user_sig, platform)| {
                        ClientFrame::Login {
                            sdk_app_id,
                            identifier,
                            user_sig,
                            platform,
                        }
                    }),
                prop::collection::vec("[0-9_]{1,40}", 0..5)
                    .prop_map(|task_ids| ClientFrame::Ack { task_ids }),
                Just(ClientFrame::Ping),
                ("[a-z]{1,8}", "\\PC{1,40}")
                    .prop_map(|(platform, token)| ClientFrame::RegisterDevice { platform, token }),
                ("[a-z]{1,8}", "\\PC{1,40}").prop_map(|(platform, token)| {
                    ClientFrame::UnregisterDevice { platform, token }
                }),
            ]
        }

        proptest! {
            #[test]
            fn server_frames_read_back_as_written(frame in server_frame()) {
                let text = serde_json::to_string(&frame).unwrap();
                let back = ServerFrame::parse(&text).unwrap();
                prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
            }

            #[test]
            fn client_frames_read_back_as_written(frame in client_frame()) {
                let text = serde_json::to_string(&frame).unwrap();
                prop_assert_eq!(serde_json::from_str::<ClientFrame>(&text).unwrap(), frame);
            }

            /// A frame with a field dropped is refused, never read as something else.
            #[test]
            fn a_push_missing_a_required_field_is_refused(frame in server_frame(), drop in 0usize..6) {
                let mut object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&serde_json::to_string(&frame).unwrap()).unwrap();
                let ServerFrame::Push(_) = frame else { return Ok(()) };
                let field = ["TaskId", "From_Account", "MsgTimeStamp", "MsgRandom", "MsgBody", "Offline"][drop];
                object.remove(field);
                let text = serde_json::to_string(&object).unwrap();
                prop_assert!(ServerFrame::parse(&text).is_err());
            }

            #[test]
            fn arbitrary_text_never_panics_the_readers(text in "\\PC{0,200}") {
                let _ = ServerFrame::parse(&text);
                let _ = serde_json::from_str::<ClientFrame>(&text);
            }
        }
    }
}
