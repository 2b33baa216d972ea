//! What a push looks like as a notification: `OfflinePushInfo` read once per push, then one
//! [`Notification`] per device.

use serde_json::Value;

use super::Notification;
use crate::store::PushRecord;

/// The per-push part of every notification of one push.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub app: u64,
    pub task_id: String,
    pub title: Option<String>,
    pub body: String,
    pub ext: Option<String>,
    pub offline_push_info: Value,
    pub expires_at: u64,
    /// `ApnsInfo.BadgeMode` 0 (the default): show a badge count.
    pub counts_badge: bool,
    pub collapse_id: Option<String>,
    pub revoked: bool,
}

fn info_of(record: &PushRecord) -> Value {
    record
        .offline_push_info
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

fn non_empty(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        _ => None,
    }
}

/// Offline notifications go out for kept pushes and `timpush` notification-only pushes,
/// unless `OfflinePushInfo.PushFlag` is 1.
pub fn wants_notifications(record: &PushRecord) -> bool {
    (record.lifetime_secs > 0 || record.is_notification_only())
        && info_of(record)["PushFlag"].as_i64() != Some(1)
}

/// The text a message shows in a notification (REST spec §5): text elements' `Text`,
/// `[Location]`, `[Face]`, a custom element's `Desc`, concatenated.
pub fn notification_text(msg_body: &str) -> String {
    let Ok(Value::Array(elements)) = serde_json::from_str::<Value>(msg_body) else {
        return String::new();
    };
    let mut text = String::new();
    for element in &elements {
        let content = &element["MsgContent"];
        match element["MsgType"].as_str() {
            Some("TIMTextElem") => text.push_str(content["Text"].as_str().unwrap_or_default()),
            Some("TIMLocationElem") => text.push_str("[Location]"),
            Some("TIMFaceElem") => text.push_str("[Face]"),
            Some("TIMCustomElem") => text.push_str(content["Desc"].as_str().unwrap_or_default()),
            Some("TIMImageElem") => text.push_str("[Image]"),
            Some("TIMSoundElem") => text.push_str("[Voice]"),
            Some("TIMFileElem") => text.push_str("[File]"),
            Some("TIMVideoFileElem") => text.push_str("[Video]"),
            _ => {}
        }
    }
    text
}

impl Template {
    pub fn of(record: &PushRecord) -> Template {
        Template::from_info(record, info_of(record))
    }

    /// The notification that overwrites those of a revoked push: its revoke's
    /// `OfflinePushInfo`, on the same collapse key, until the push's notifications would have
    /// expired.
    pub fn overwrite_of(record: &PushRecord) -> Template {
        let info = record
            .revoke_info
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        let mut template = Template::from_info(record, info);
        if record.revoke_info.is_none() {
            // Nothing to show instead: only the webhook is told (of the revoke).
            template.body = String::new();
        }
        template.revoked = true;
        template.collapse_id = Some(record.task_id.clone());
        template
    }

    fn from_info(record: &PushRecord, info: Value) -> Template {
        Template {
            app: record.app,
            task_id: record.task_id.clone(),
            title: non_empty(&info["Title"]),
            body: non_empty(&info["Desc"]).unwrap_or_else(|| notification_text(&record.msg_body)),
            ext: non_empty(&info["Ext"]),
            counts_badge: info["ApnsInfo"]["BadgeMode"].as_i64() != Some(1),
            offline_push_info: info,
            expires_at: record.notifications_expire_at_ms() / 1000,
            collapse_id: record.kind.is_timpush().then(|| record.task_id.clone()),
            revoked: false,
        }
    }

    pub fn for_device(&self, account: &str, token: &str, badge: u32) -> Notification {
        Notification {
            app: self.app,
            task_id: self.task_id.clone(),
            account: account.to_owned(),
            token: token.to_owned(),
            title: self.title.clone(),
            body: self.body.clone(),
            ext: self.ext.clone(),
            offline_push_info: self.offline_push_info.clone(),
            expires_at: self.expires_at,
            badge: self.counts_badge.then_some(badge),
            collapse_id: self.collapse_id.clone(),
            revoked: self.revoked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(msg_body: Value, info: Option<Value>, lifetime_secs: u32) -> PushRecord {
        PushRecord {
            app: 1,
            task_id: "t".into(),
            created_ms: 1_000_000,
            lifetime_secs,
            from_account: "admin".into(),
            msg_random: 1,
            msg_body: msg_body.to_string(),
            offline_push_info: info.map(|i| i.to_string()),
            condition: None,
            ..PushRecord::default()
        }
    }

    #[test]
    fn the_message_text_stands_in_for_an_empty_desc() {
        let body = json!([
            {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi "}},
            {"MsgType": "TIMFaceElem", "MsgContent": {"Index": 1, "Data": "x"}},
            {"MsgType": "TIMLocationElem", "MsgContent": {"Desc": "here", "Latitude": 1, "Longitude": 2}},
            {"MsgType": "TIMCustomElem", "MsgContent": {"Desc": " custom"}}
        ]);
        let template = Template::of(&record(
            body.clone(),
            Some(json!({"Title": "T", "Desc": ""})),
            60,
        ));
        assert_eq!(template.body, "hi [Face][Location] custom");
        assert_eq!(template.title.as_deref(), Some("T"));
        assert_eq!(template.expires_at, 1_060);
        let template = Template::of(&record(
            body,
            Some(json!({"Desc": "override", "Ext": "e", "ApnsInfo": {"BadgeMode": 1}})),
            60,
        ));
        assert_eq!(template.body, "override");
        assert_eq!(template.ext.as_deref(), Some("e"));
        assert_eq!(template.for_device("a", "tok", 3).badge, None);
    }

    #[test]
    fn push_flag_1_and_online_only_pushes_send_none() {
        let body = json!([]);
        assert!(wants_notifications(&record(body.clone(), None, 60)));
        assert!(wants_notifications(&record(
            body.clone(),
            Some(json!({"PushFlag": 0})),
            60
        )));
        assert!(!wants_notifications(&record(
            body.clone(),
            Some(json!({"PushFlag": 1})),
            60
        )));
        assert!(!wants_notifications(&record(body, None, 0)));
    }
}
