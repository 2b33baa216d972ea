//! What a `Push.AllMemberPush` callback looks like on the wire (timpush.md §8): the event
//! objects, the request's query with its optional signature, the body, and how the app's
//! answer is judged.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::providers::Provider;

pub const CALLBACK_COMMAND: &str = "Push.AllMemberPush";

/// `EventType`.
pub const OFFLINE: u8 = 1;
pub const ONLINE: u8 = 2;
/// `PushStage`.
pub const STAGE_SENT: u8 = 1;
pub const STAGE_REACHED: u8 = 2;
/// `ErrCode` of a notification a provider refused; its reason is in `ErrInfo`.
pub const REFUSED: u32 = 1;
/// `ErrInfo` is cut to this many characters.
const MAX_ERR_INFO_CHARS: usize = 200;

/// One event object, in Tencent's field order and casing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event<'a> {
    #[serde(rename = "CallbackCommand")]
    pub callback_command: &'a str,
    #[serde(rename = "EventType")]
    pub event_type: u8,
    #[serde(rename = "TaskId")]
    pub task_id: &'a str,
    #[serde(rename = "DataId", skip_serializing_if = "Option::is_none")]
    pub data_id: Option<&'a str>,
    /// Unix seconds when the task started.
    #[serde(rename = "TaskTime")]
    pub task_time: u64,
    #[serde(rename = "EventTime")]
    pub event_time: u64,
    #[serde(rename = "To_Account")]
    pub to_account: &'a str,
    #[serde(rename = "PushPlatform")]
    pub push_platform: u8,
    #[serde(rename = "DeviceType")]
    pub device_type: u8,
    #[serde(rename = "PushStage")]
    pub push_stage: u8,
    #[serde(rename = "ErrCode")]
    pub err_code: u32,
    #[serde(rename = "ErrInfo")]
    pub err_info: &'a str,
}

impl Event<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event serializes")
    }
}

/// `PushPlatform` (and `DeviceType`) of a provider: 1 APNs, 4 FCM; a webhook is a channel
/// Tencent has no number for (0, unknown).
pub fn push_platform(provider: Provider) -> u8 {
    match provider {
        Provider::Apns => 1,
        Provider::Fcm => 4,
        Provider::Webhook => 0,
    }
}

/// A provider's reason, short enough for an event.
pub fn err_info(reason: &str) -> String {
    match reason.char_indices().nth(MAX_ERR_INFO_CHARS) {
        Some((cut, _)) => format!("{}...", &reason[..cut]),
        None => reason.to_owned(),
    }
}

/// `Sign`: lowercase hex SHA-256 of the token's UTF-8 bytes followed by the decimal
/// `RequestTime`.
pub fn sign(token: &str, request_time: u64) -> String {
    let mut digest = Sha256::new();
    digest.update(token.as_bytes());
    digest.update(request_time.to_string().as_bytes());
    format!("{:x}", digest.finalize())
}

/// The request's URL: the app's callback URL (its own query kept) with `SdkAppid`,
/// `CallbackCommand`, `contenttype` and, when a token is set, `RequestTime` and `Sign`.
pub fn request_url(
    base: &reqwest::Url,
    sdkappid: u64,
    token: Option<&str>,
    request_time: u64,
) -> reqwest::Url {
    let mut url = base.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("SdkAppid", &sdkappid.to_string())
            .append_pair("CallbackCommand", CALLBACK_COMMAND)
            .append_pair("contenttype", "json");
        if let Some(token) = token {
            query
                .append_pair("RequestTime", &request_time.to_string())
                .append_pair("Sign", &sign(token, request_time));
        }
    }
    url
}

/// `{"Events":[...]}` from events already serialized.
pub fn body<'a>(events: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from("{\"Events\":[");
    for (n, event) in events.into_iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(event);
    }
    body.push_str("]}");
    body
}

/// Whether the app handled the request: HTTP 2xx and a JSON body with `ErrorCode` 0.
/// Otherwise, why not.
pub fn judge(status: u16, answer: &[u8]) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!("HTTP status {status}"));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "ErrorCode")]
        error_code: i64,
        #[serde(rename = "ErrorInfo", default)]
        error_info: String,
    }
    let answer: Answer = serde_json::from_slice(answer)
        .map_err(|e| format!("the answer is not JSON with an integer ErrorCode ({e})"))?;
    if answer.error_code != 0 {
        return Err(format!(
            "ErrorCode {} ({})",
            answer.error_code,
            err_info(&answer.error_info)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_sha256_of_token_then_time() {
        // echo -n "tok1700000000" | sha256sum
        assert_eq!(
            sign("tok", 1_700_000_000),
            "1f4112aa726e20f097d526ff82863c835ad47a6a34dc4ca14240702535c75dbc"
        );
    }

    #[test]
    fn the_url_keeps_the_apps_own_query_and_signs_when_a_token_is_set() {
        let base = reqwest::Url::parse("https://app.example.com/cb?route=push").unwrap();
        let unsigned = request_url(&base, 1_400_000_001, None, 5);
        assert_eq!(
            unsigned.as_str(),
            "https://app.example.com/cb?route=push&SdkAppid=1400000001&CallbackCommand=Push.AllMemberPush&contenttype=json"
        );
        let signed = request_url(&base, 1_400_000_001, Some("tok"), 1_700_000_000);
        assert!(signed.as_str().ends_with(&format!(
            "&RequestTime=1700000000&Sign={}",
            sign("tok", 1_700_000_000)
        )));
    }

    #[test]
    fn events_serialize_in_tencents_casing_and_data_id_only_when_given() {
        let event = Event {
            callback_command: CALLBACK_COMMAND,
            event_type: ONLINE,
            task_id: "t",
            data_id: None,
            task_time: 1,
            event_time: 2,
            to_account: "alice",
            push_platform: 0,
            device_type: 0,
            push_stage: STAGE_SENT,
            err_code: 0,
            err_info: "OK",
        };
        assert_eq!(
            event.to_json(),
            r#"{"CallbackCommand":"Push.AllMemberPush","EventType":2,"TaskId":"t","TaskTime":1,"EventTime":2,"To_Account":"alice","PushPlatform":0,"DeviceType":0,"PushStage":1,"ErrCode":0,"ErrInfo":"OK"}"#
        );
        let labelled = Event {
            data_id: Some("d"),
            ..event
        };
        assert!(labelled.to_json().contains(r#""TaskId":"t","DataId":"d","#));
        assert_eq!(body(["{}", "{}"]), r#"{"Events":[{},{}]}"#);
    }

    #[test]
    fn only_a_2xx_with_error_code_0_counts_as_handled() {
        let ok = br#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
        assert_eq!(judge(200, ok), Ok(()));
        assert!(judge(500, ok).unwrap_err().contains("500"));
        assert!(judge(200, b"OK").unwrap_err().contains("not JSON"));
        assert!(judge(200, br#"{"ErrorCode":"0"}"#).is_err());
        let failed = br#"{"ActionStatus":"FAIL","ErrorCode":1,"ErrorInfo":"busy"}"#;
        assert_eq!(judge(200, failed), Err("ErrorCode 1 (busy)".into()));
    }
}
