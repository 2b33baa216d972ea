//! Reading an `im_push` body field by field, in the order the contract lists them, each
//! failure with its own Tencent code and a message that says how to fix the request.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{Map, Value};

use crate::config::AppConfig;
use crate::directory::{Condition, Directory};
use crate::error::Error;
use crate::store::PushKind;

pub const MAX_LIFETIME_SECS: i64 = 604_800;
pub const MAX_MSG_BODY_BYTES: usize = 8_000;
pub const MAX_CONDITION_TAGS: usize = 10;
pub const MAX_TAG_BYTES: usize = 50;
/// Serialized `Condition`, refused past this with 90001. Ten tags of 50 bytes in each list, or
/// ten attribute pairs in each map, take about 1.2 KB; the cap leaves room for the array form
/// and spacing while keeping the stored push (and its task report) small.
pub const MAX_CONDITION_BYTES: usize = 4_096;
/// Serialized `OfflinePushInfo`, refused past this with 90043. It is stored with the push and
/// copied into every device notification, and APNs and FCM take at most 4 KB of payload.
pub const MAX_OFFLINE_PUSH_INFO_BYTES: usize = 4_096;

#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    /// `None`: the calling admin.
    pub from_account: Option<String>,
    pub msg_random: u32,
    pub lifetime_secs: u32,
    pub msg_body: String,
    pub condition: Condition,
    pub condition_text: Option<String>,
    pub offline_push_info: Option<String>,
    pub kind: PushKind,
    /// `DataId` of a `timpush` push or batch.
    pub data_id: Option<String>,
    /// The scheduled task whose run this is.
    pub sched_task_id: Option<u64>,
    /// Identifies the request body, to recognise a retry.
    pub fingerprint: u64,
}

fn reject(code: u32, info: impl Into<String>) -> Error {
    Error::rejected(code, info)
}

pub fn parse_push(
    body: &Value,
    directory: &Directory,
    app: &AppConfig,
) -> Result<PushRequest, Error> {
    let fields = body
        .as_object()
        .ok_or_else(|| reject(codes::BAD_JSON, "the request body must be a JSON object"))?;
    let from_account = parse_from_account(fields.get("From_Account"), directory, app)?;
    let msg_random = parse_msg_random(fields.get("MsgRandom"))?;
    let lifetime_secs = match fields.get("MsgLifeTime") {
        None | Some(Value::Null) => 0,
        Some(value) => {
            let seconds = value.as_i64().ok_or_else(|| {
                reject(
                    codes::MSG_LIFETIME_NOT_INTEGER,
                    "MsgLifeTime must be an integer number of seconds",
                )
            })?;
            if !(0..=MAX_LIFETIME_SECS).contains(&seconds) {
                return Err(reject(
                    codes::BAD_MSG_LIFETIME,
                    format!("MsgLifeTime {seconds} is outside 0..=604800 seconds (7 days)"),
                ));
            }
            seconds as u32
        }
    };
    let msg_body = parse_msg_body(fields.get("MsgBody"))?;
    let (condition, condition_text) = parse_condition(fields.get("Condition"), directory)?;
    let offline_push_info = parse_offline_push_info(fields.get("OfflinePushInfo"))?;

    Ok(PushRequest {
        from_account,
        msg_random,
        lifetime_secs,
        msg_body,
        condition,
        condition_text,
        offline_push_info,
        kind: PushKind::ImPush,
        data_id: None,
        sched_task_id: None,
        fingerprint: fingerprint(body),
    })
}

/// Identifies a request body, so that a retry (same `MsgRandom`, same body) is recognised.
pub fn fingerprint(body: &Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.to_string().hash(&mut hasher);
    hasher.finish()
}

/// `From_Account`: absent means the calling admin; otherwise an admin or a live account.
pub fn parse_from_account(
    value: Option<&Value>,
    directory: &Directory,
    app: &AppConfig,
) -> Result<Option<String>, Error> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if app.is_admin(name) || directory.is_live(name) => Ok(Some(name.clone())),
        Some(Value::String(name)) => Err(reject(
            codes::BAD_FROM_ACCOUNT,
            format!("From_Account {} is neither an imported account nor an admin of this app: import it first or leave From_Account out", echo(name)),
        )),
        Some(_) => Err(reject(codes::BAD_FROM_ACCOUNT, "From_Account must be a string")),
    }
}

pub fn parse_msg_random(value: Option<&Value>) -> Result<u32, Error> {
    value
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            reject(
                codes::BAD_MSG_RANDOM,
                "MsgRandom is required and must be an integer from 0 to 4294967295",
            )
        })
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Number,
    Array,
}

impl Kind {
    fn holds(self, value: &Value) -> bool {
        match self {
            Kind::Text => value.is_string(),
            Kind::Integer => value.is_i64() || value.is_u64(),
            Kind::Number => value.is_number(),
            Kind::Array => value.is_array(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Array => "an array",
        }
    }
}

/// The required fields of each message type, as Tencent's message format lists them.
fn required_fields(msg_type: &str) -> Option<&'static [(&'static str, Kind)]> {
    use Kind::*;
    Some(match msg_type {
        "TIMTextElem" => &[("Text", Text)],
        "TIMLocationElem" => &[("Desc", Text), ("Latitude", Number), ("Longitude", Number)],
        "TIMFaceElem" => &[("Index", Integer), ("Data", Text)],
        "TIMCustomElem" => &[],
        "TIMSoundElem" => &[
            ("Url", Text),
            ("UUID", Text),
            ("Size", Integer),
            ("Second", Integer),
            ("Download_Flag", Integer),
        ],
        "TIMImageElem" => &[
            ("UUID", Text),
            ("ImageFormat", Integer),
            ("ImageInfoArray", Array),
        ],
        "TIMFileElem" => &[
            ("Url", Text),
            ("UUID", Text),
            ("FileSize", Integer),
            ("FileName", Text),
            ("Download_Flag", Integer),
        ],
        "TIMVideoFileElem" => &[
            ("VideoUrl", Text),
            ("VideoUUID", Text),
            ("VideoSize", Integer),
            ("VideoSecond", Integer),
            ("VideoFormat", Text),
            ("VideoDownloadFlag", Integer),
            ("ThumbUrl", Text),
            ("ThumbUUID", Text),
            ("ThumbSize", Integer),
            ("ThumbWidth", Integer),
            ("ThumbHeight", Integer),
            ("ThumbFormat", Text),
            ("ThumbDownloadFlag", Integer),
        ],
        _ => return None,
    })
}

const CUSTOM_OPTIONAL_TEXT: &[&str] = &["Data", "Desc", "Ext", "Sound"];
const IMAGE_INFO_FIELDS: &[(&str, Kind)] = &[
    ("Type", Kind::Integer),
    ("Size", Kind::Integer),
    ("Width", Kind::Integer),
    ("Height", Kind::Integer),
    ("URL", Kind::Text),
];

fn check_fields(
    content: &Map<String, Value>,
    fields: &[(&str, Kind)],
    place: &str,
) -> Result<(), Error> {
    for (name, kind) in fields {
        match content.get(*name) {
            Some(value) if kind.holds(value) => {}
            _ => {
                return Err(reject(
                    codes::BAD_MSG_BODY_ELEMENT,
                    format!("{place}.{name} is required and must be {}", kind.name()),
                ))
            }
        }
    }
    Ok(())
}

pub fn parse_msg_body(value: Option<&Value>) -> Result<String, Error> {
    let elements = match value {
        Some(Value::Array(elements)) => elements,
        _ => {
            return Err(reject(
                codes::MSG_BODY_NOT_ARRAY,
                "MsgBody is required and must be an array of message elements",
            ))
        }
    };
    if elements.is_empty() {
        return Err(reject(
            codes::BAD_MSG_BODY_ELEMENT,
            "MsgBody must hold at least one message element",
        ));
    }
    let mut custom_elements = 0;
    for (index, element) in elements.iter().enumerate() {
        let place = format!("MsgBody[{index}]");
        let element = element.as_object().ok_or_else(|| {
            reject(
                codes::BAD_MSG_BODY_ELEMENT,
                format!("{place} must be an object with MsgType and MsgContent"),
            )
        })?;
        let msg_type = element
            .get("MsgType")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                reject(
                    codes::BAD_MSG_BODY_ELEMENT,
                    format!("{place}.MsgType is required and must be a string"),
                )
            })?;
        let content = element
            .get("MsgContent")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                reject(
                    codes::BAD_MSG_BODY_ELEMENT,
                    format!("{place}.MsgContent is required and must be an object"),
                )
            })?;
        let required = required_fields(msg_type).ok_or_else(|| {
            reject(
                codes::BAD_MSG_FORMAT,
                format!("{place}.MsgType {} is not one of TIMTextElem, TIMLocationElem, TIMFaceElem, TIMCustomElem, TIMSoundElem, TIMImageElem, TIMFileElem, TIMVideoFileElem", echo(msg_type)),
            )
        })?;
        let place = format!("{place}.MsgContent");
        check_fields(content, required, &place)?;
        if msg_type == "TIMCustomElem" {
            custom_elements += 1;
            if custom_elements > 1 {
                return Err(reject(
                    codes::BAD_MSG_FORMAT,
                    "MsgBody may hold at most one TIMCustomElem",
                ));
            }
            for name in CUSTOM_OPTIONAL_TEXT {
                if content.get(*name).is_some_and(|v| !v.is_string()) {
                    return Err(reject(
                        codes::BAD_MSG_BODY_ELEMENT,
                        format!("{place}.{name} must be a string"),
                    ));
                }
            }
        }
        if msg_type == "TIMImageElem" {
            for (n, info) in content["ImageInfoArray"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let info = info.as_object().ok_or_else(|| {
                    reject(
                        codes::BAD_MSG_BODY_ELEMENT,
                        format!("{place}.ImageInfoArray[{n}] must be an object"),
                    )
                })?;
                check_fields(
                    info,
                    IMAGE_INFO_FIELDS,
                    &format!("{place}.ImageInfoArray[{n}]"),
                )?;
            }
        }
    }
    let text = Value::Array(elements.clone()).to_string();
    if text.len() > MAX_MSG_BODY_BYTES {
        return Err(reject(
            codes::BAD_MSG_FORMAT,
            format!(
                "MsgBody is {} bytes serialized; at most {MAX_MSG_BODY_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    Ok(text)
}

/// The condition fields, merged when the caller sent an array of condition objects.
#[derive(Default)]
struct RawCondition {
    tags_and: Vec<Value>,
    tags_or: Vec<Value>,
    tags_not: Vec<Value>,
    attrs_and: Map<String, Value>,
    attrs_or: Map<String, Value>,
}

/// The condition and its text as stored with the push. The size is checked after the fields,
/// so a request with one bad tag hears about that tag.
pub fn parse_condition(
    value: Option<&Value>,
    directory: &Directory,
) -> Result<(Condition, Option<String>), Error> {
    let condition = read_condition(value, directory)?;
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok((condition, None));
    };
    let text = value.to_string();
    if text.len() > MAX_CONDITION_BYTES {
        return Err(reject(
            codes::BAD_JSON,
            format!("Condition is {} bytes serialized; at most {MAX_CONDITION_BYTES} are allowed: send only TagsAnd/TagsOr or AttrsAnd/AttrsOr", text.len()),
        ));
    }
    Ok((condition, Some(text)))
}

fn read_condition(value: Option<&Value>, directory: &Directory) -> Result<Condition, Error> {
    let parts: Vec<&Map<String, Value>> = match value {
        None | Some(Value::Null) => return Ok(Condition::All),
        Some(Value::Object(object)) => vec![object],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_object().ok_or_else(|| {
                    reject(
                        codes::BAD_JSON,
                        "each element of a Condition array must be an object",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(reject(
                codes::BAD_JSON,
                "Condition must be an object with TagsAnd/TagsOr or AttrsAnd/AttrsOr",
            ))
        }
    };
    let mut raw = RawCondition::default();
    for part in parts {
        for (key, list) in [
            ("TagsAnd", &mut raw.tags_and),
            ("TagsOr", &mut raw.tags_or),
            ("TagsNot", &mut raw.tags_not),
        ] {
            match part.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => list.extend(items.iter().cloned()),
                Some(_) => {
                    return Err(reject(
                        codes::BAD_JSON,
                        format!("Condition.{key} must be an array of tags"),
                    ))
                }
            }
        }
        for (key, map) in [
            ("AttrsAnd", &mut raw.attrs_and),
            ("AttrsOr", &mut raw.attrs_or),
        ] {
            match part.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(pairs)) => {
                    map.extend(pairs.iter().map(|(k, v)| (k.clone(), v.clone())))
                }
                Some(_) => {
                    return Err(reject(
                        codes::BAD_JSON,
                        format!("Condition.{key} must be an object of attribute name to value"),
                    ))
                }
            }
        }
    }
    let has_tags = !raw.tags_and.is_empty() || !raw.tags_or.is_empty() || !raw.tags_not.is_empty();
    let has_attrs = !raw.attrs_and.is_empty() || !raw.attrs_or.is_empty();
    if has_tags && has_attrs {
        return Err(reject(
            codes::TAGS_WITH_ATTRS,
            "a Condition may select by tags or by attributes, not both: send two pushes",
        ));
    }
    if has_tags {
        let and = condition_tags(&raw.tags_and, "TagsAnd")?;
        let or = condition_tags(&raw.tags_or, "TagsOr")?;
        let not = condition_tags(&raw.tags_not, "TagsNot")?;
        for (first, first_key, second, second_key) in [
            (&and, "TagsAnd", &or, "TagsOr"),
            (&and, "TagsAnd", &not, "TagsNot"),
            (&or, "TagsOr", &not, "TagsNot"),
        ] {
            if let Some(tag) = first.iter().find(|tag| second.contains(*tag)) {
                return Err(reject(
                    codes::TAG_IN_AND_AND_OR,
                    format!(
                        "tag {} is in both {first_key} and {second_key}: keep it in one",
                        echo(tag)
                    ),
                ));
            }
        }
        return Ok(Condition::Tags {
            and: and.into_iter().collect(),
            or: or.into_iter().collect(),
            not: not.into_iter().collect(),
        });
    }
    if has_attrs {
        let and = condition_attrs(&raw.attrs_and, "AttrsAnd", directory)?;
        let or = condition_attrs(&raw.attrs_or, "AttrsOr", directory)?;
        return Ok(Condition::Attrs { and, or });
    }
    Ok(Condition::All)
}

/// A tag's own rules, shared by conditions and tag writes.
pub fn check_tag(tag: &Value, place: &str) -> Result<String, Error> {
    let tag = tag
        .as_str()
        .ok_or_else(|| reject(codes::EMPTY_TAG, format!("{place} must hold strings")))?;
    if tag.is_empty() {
        return Err(reject(
            codes::EMPTY_TAG,
            format!("{place} holds an empty tag; a tag is 1 to 50 bytes"),
        ));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(reject(
            codes::TAG_TOO_LONG,
            format!(
                "tag {} in {place} is {} bytes; a tag is at most 50 bytes",
                echo(tag),
                tag.len()
            ),
        ));
    }
    Ok(tag.to_owned())
}

fn condition_tags(items: &[Value], key: &str) -> Result<BTreeSet<String>, Error> {
    if items.len() > MAX_CONDITION_TAGS {
        return Err(reject(
            codes::TOO_MANY_TAGS,
            format!(
                "Condition.{key} holds {} tags; at most {MAX_CONDITION_TAGS}",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .map(|tag| check_tag(tag, &format!("Condition.{key}")))
        .collect()
}

fn condition_attrs(
    pairs: &Map<String, Value>,
    key: &str,
    directory: &Directory,
) -> Result<Vec<(u8, String)>, Error> {
    pairs
        .iter()
        .map(|(name, value)| {
            let slot = directory.attr_slot(name).ok_or_else(|| {
                reject(codes::BAD_ATTR, format!("Condition.{key} names attribute {}, which is not set: define it with im_set_attr_name", echo(name)))
            })?;
            let value = value
                .as_str()
                .ok_or_else(|| reject(codes::BAD_ATTR, format!("Condition.{key}.{name} must be a string value")))?;
            Ok((slot, value.to_owned()))
        })
        .collect()
}

pub fn parse_offline_push_info(value: Option<&Value>) -> Result<Option<String>, Error> {
    let info = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(info)) => info,
        Some(_) => {
            return Err(reject(
                codes::BAD_OFFLINE_PUSH_INFO,
                "OfflinePushInfo must be an object",
            ))
        }
    };
    let bad = |what: &str| {
        reject(
            codes::BAD_OFFLINE_PUSH_INFO,
            format!("OfflinePushInfo.{what}"),
        )
    };
    if let Some(flag) = info.get("PushFlag") {
        if !matches!(flag.as_u64(), Some(0 | 1)) {
            return Err(bad("PushFlag must be 0 (push) or 1 (do not push)"));
        }
    }
    for key in ["Title", "Desc", "Ext"] {
        if info.get(key).is_some_and(|v| !v.is_string()) {
            return Err(bad(&format!("{key} must be a string")));
        }
    }
    for (key, text_fields, integer_fields) in [
        ("AndroidInfo", &["Sound", "GoogleChannelID"][..], &[][..]),
        (
            "ApnsInfo",
            &["Sound", "Title", "SubTitle", "Image"][..],
            &["BadgeMode", "MutableContent"][..],
        ),
    ] {
        let Some(section) = info.get(key) else {
            continue;
        };
        let section = section
            .as_object()
            .ok_or_else(|| bad(&format!("{key} must be an object")))?;
        for field in text_fields {
            if section.get(*field).is_some_and(|v| !v.is_string()) {
                return Err(bad(&format!("{key}.{field} must be a string")));
            }
        }
        for field in integer_fields {
            if section
                .get(*field)
                .is_some_and(|v| !matches!(v.as_u64(), Some(0 | 1)))
            {
                return Err(bad(&format!("{key}.{field} must be 0 or 1")));
            }
        }
    }
    let text = Value::Object(info.clone()).to_string();
    if text.len() > MAX_OFFLINE_PUSH_INFO_BYTES {
        return Err(reject(
            codes::BAD_OFFLINE_PUSH_INFO,
            format!("OfflinePushInfo is {} bytes serialized; at most {MAX_OFFLINE_PUSH_INFO_BYTES} are allowed: shorten Title, Desc or Ext", text.len()),
        ));
    }
    Ok(Some(text))
}
