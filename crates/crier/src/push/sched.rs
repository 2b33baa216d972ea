//! Reading the scheduled-task commands (`timpush.md` §9), field by field: the shared
//! `Sdkappid` (§1.1), `Type`, times as `YYYY-MM-DD HH:MM:SS` in UTC, the rules a task's
//! `Content` obeys beside those of the `push` or `batch` it holds, and the listing's window.
//! Every refusal here is 90104 (90001 for a body that is no object, 90056 for an oversized
//! `Content`); the `Content` itself is checked by the push's own reader.

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{Map, Value};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use super::timpush::MAX_PUSH_BODY_BYTES;
use crate::error::Error;
use crate::store::sched::{SchedKind, SchedOrder};

const DAY_MS: u64 = 86_400_000;
/// How far ahead a task may be scheduled.
pub const MAX_AHEAD_MS: u64 = 366 * DAY_MS;
/// The widest window of a listing.
pub const MAX_LIST_SPAN_MS: u64 = 31 * DAY_MS;
/// A listing answers at most this many tasks; a larger `Want` is cut to it.
pub const MAX_WANT: usize = 100;

const TIME_FORMAT: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const TIME_SHAPE: &str = "YYYY-MM-DD HH:MM:SS (UTC)";

fn bad(info: impl Into<String>) -> Error {
    Error::rejected(codes::BAD_PARAMETER, info)
}

/// A time of the wire, in Unix milliseconds; `None` unless exactly `YYYY-MM-DD HH:MM:SS`.
pub fn parse_time(text: &str) -> Option<u64> {
    if text.len() != 19 {
        return None;
    }
    let at = PrimitiveDateTime::parse(text, TIME_FORMAT).ok()?;
    let secs = u64::try_from(at.assume_utc().unix_timestamp()).ok()?;
    Some(secs * 1000)
}

/// Unix milliseconds as the wire writes a time (the milliseconds dropped).
pub fn format_time(ms: u64) -> String {
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(TIME_FORMAT).ok())
        .unwrap_or_default()
}

/// The body as an object, and its `Sdkappid` checked against the query's (§1.1).
pub fn fields_of(body: &Value, sdkappid: u64) -> Result<&Map<String, Value>, Error> {
    let fields = body.as_object().ok_or_else(|| {
        Error::rejected(codes::BAD_JSON, "the request body must be a JSON object")
    })?;
    match fields.get("Sdkappid") {
        Some(value) if value.as_u64() == Some(sdkappid) => Ok(fields),
        Some(value) if value.is_u64() => Err(bad(format!(
            "Sdkappid {value} is not the sdkappid of the query string ({sdkappid})"
        ))),
        Some(_) => Err(bad("Sdkappid must be the app's sdkappid, an integer")),
        None => Err(bad(format!(
            "Sdkappid is required: the app's sdkappid ({sdkappid}), as in the query string"
        ))),
    }
}

fn task_id(fields: &Map<String, Value>) -> Result<u64, Error> {
    match fields.get("TaskID").or_else(|| fields.get("TaskId")) {
        Some(value) => value
            .as_u64()
            .filter(|&id| id > 0)
            .ok_or_else(|| bad("TaskID must be the positive integer add_sched_task answered")),
        None => Err(bad("TaskID is required")),
    }
}

fn kind(fields: &Map<String, Value>) -> Result<SchedKind, Error> {
    match fields.get("Type") {
        Some(Value::String(text)) => SchedKind::parse(text).ok_or_else(|| {
            bad(format!(
                "Type {} is unknown: use All, Tag or User",
                echo(text)
            ))
        }),
        Some(_) => Err(bad("Type must be the string All, Tag or User")),
        None => Err(bad("Type is required: All, Tag or User")),
    }
}

fn time_field(fields: &Map<String, Value>, key: &str) -> Result<Option<u64>, Error> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => parse_time(text).map(Some).ok_or_else(|| {
            bad(format!(
                "{key} {} is not a time: write {TIME_SHAPE}",
                echo(text)
            ))
        }),
        Some(_) => Err(bad(format!("{key} must be a string: {TIME_SHAPE}"))),
    }
}

/// `SchedAt`, later than `now_ms` and at most [`MAX_AHEAD_MS`] ahead.
fn sched_at(fields: &Map<String, Value>, now_ms: u64) -> Result<Option<u64>, Error> {
    let Some(at_ms) = time_field(fields, "SchedAt")? else {
        return Ok(None);
    };
    if at_ms <= now_ms {
        return Err(bad(format!(
            "SchedAt {} is not in the future (now is {} UTC)",
            format_time(at_ms),
            format_time(now_ms)
        )));
    }
    if at_ms - now_ms > MAX_AHEAD_MS {
        return Err(bad(format!(
            "SchedAt {} is more than 366 days ahead",
            format_time(at_ms)
        )));
    }
    Ok(Some(at_ms))
}

fn content(fields: &Map<String, Value>) -> Result<Option<Map<String, Value>>, Error> {
    match fields.get("Content") {
        None => Ok(None),
        Some(Value::Object(content)) => Ok(Some(content.clone())),
        Some(_) => Err(bad(
            "Content must be an object: the body of a push (All, Tag) or a batch (User)",
        )),
    }
}

/// An `add_sched_task`.
#[derive(Debug)]
pub struct AddRequest {
    pub kind: SchedKind,
    pub sched_at_ms: u64,
    pub content: Map<String, Value>,
}

pub fn parse_add(body: &Value, sdkappid: u64, now_ms: u64) -> Result<AddRequest, Error> {
    let fields = fields_of(body, sdkappid)?;
    let kind = kind(fields)?;
    let sched_at_ms = sched_at(fields, now_ms)?
        .ok_or_else(|| bad(format!("SchedAt is required: when to run, {TIME_SHAPE}")))?;
    let content = content(fields)?.ok_or_else(|| {
        bad("Content is required: the body of a push (All, Tag) or a batch (User)")
    })?;
    Ok(AddRequest {
        kind,
        sched_at_ms,
        content,
    })
}

/// A `modify_sched_task`: what to change, at least one of the two.
#[derive(Debug)]
pub struct ModifyRequest {
    pub task_id: u64,
    pub kind: SchedKind,
    pub sched_at_ms: Option<u64>,
    /// Keys that replace the stored `Content`'s.
    pub content: Option<Map<String, Value>>,
}

pub fn parse_modify(body: &Value, sdkappid: u64, now_ms: u64) -> Result<ModifyRequest, Error> {
    let fields = fields_of(body, sdkappid)?;
    let task_id = task_id(fields)?;
    let kind = kind(fields)?;
    let sched_at_ms = sched_at(fields, now_ms)?;
    let content = content(fields)?;
    if sched_at_ms.is_none() && content.is_none() {
        return Err(bad("nothing to change: give SchedAt, Content or both"));
    }
    Ok(ModifyRequest {
        task_id,
        kind,
        sched_at_ms,
        content,
    })
}

/// A `delete_sched_task`: the task and the type it must have.
pub fn parse_delete(body: &Value, sdkappid: u64) -> Result<(u64, SchedKind), Error> {
    let fields = fields_of(body, sdkappid)?;
    Ok((task_id(fields)?, kind(fields)?))
}

/// A `get_sched_task`.
pub fn parse_get(body: &Value, sdkappid: u64) -> Result<u64, Error> {
    task_id(fields_of(body, sdkappid)?)
}

/// A `list_sched_task`.
#[derive(Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub offset: usize,
    pub want: usize,
    pub order: SchedOrder,
    pub ascending: bool,
    pub begin_ms: u64,
    pub end_ms: u64,
    /// Lowercased.
    pub keyword: Option<String>,
}

pub fn parse_list(body: &Value, sdkappid: u64) -> Result<ListRequest, Error> {
    let fields = fields_of(body, sdkappid)?;
    let offset = match fields.get("Offset") {
        Some(value) => value
            .as_u64()
            .ok_or_else(|| bad("Offset must be an integer from 0"))?,
        None => return Err(bad("Offset is required (from 0)")),
    };
    let want = match fields.get("Want") {
        Some(value) => value
            .as_u64()
            .filter(|&want| want > 0)
            .ok_or_else(|| bad("Want must be an integer above 0"))?,
        None => return Err(bad("Want is required: how many tasks to answer (1-100)")),
    };
    let order = match fields.get("OrderBy").and_then(Value::as_str) {
        Some(text) if text.eq_ignore_ascii_case("createat") => SchedOrder::CreatedAt,
        Some(text) if text.eq_ignore_ascii_case("schedat") => SchedOrder::SchedAt,
        _ => return Err(bad("OrderBy is required: createAt or schedAt")),
    };
    let ascending = fields
        .get("Asc")
        .and_then(Value::as_bool)
        .ok_or_else(|| bad("Asc is required: true (ascending) or false"))?;
    let (begin_ms, end_ms) = match (
        time_field(fields, "BeginTime")?,
        time_field(fields, "EndTime")?,
    ) {
        (Some(begin), Some(end)) => (begin, end),
        _ => {
            return Err(bad(format!(
                "BeginTime and EndTime are required together: {TIME_SHAPE}"
            )))
        }
    };
    if begin_ms > end_ms {
        return Err(bad("BeginTime is after EndTime"));
    }
    if end_ms - begin_ms > MAX_LIST_SPAN_MS {
        return Err(bad(
            "BeginTime and EndTime are more than 31 days apart: list a shorter window",
        ));
    }
    let keyword = match fields.get("Keyword") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.to_lowercase()),
        Some(_) => return Err(bad("Keyword must be a string")),
    };
    Ok(ListRequest {
        offset: usize::try_from(offset).unwrap_or(usize::MAX),
        want: usize::try_from(want).map_or(MAX_WANT, |want| want.min(MAX_WANT)),
        order,
        ascending,
        begin_ms,
        end_ms,
        keyword,
    })
}

/// A task's `Content` made ready to store: its `Type` rule checked, `MsgRandom` filled in when
/// absent, and the push body's size cap applied. Answers the content as JSON text.
pub fn prepare_content(
    kind: SchedKind,
    mut content: Map<String, Value>,
) -> Result<(Value, String), Error> {
    let has_condition = !matches!(content.get("Condition"), None | Some(Value::Null));
    match kind {
        SchedKind::All if has_condition => {
            return Err(bad(
                "a task of Type All goes to every user: leave Condition out, or use Type Tag",
            ))
        }
        SchedKind::Tag if !has_condition => {
            return Err(bad(
                "a task of Type Tag needs Content.Condition (tags or attributes)",
            ))
        }
        _ => {}
    }
    content
        .entry("MsgRandom")
        .or_insert_with(|| Value::from(rand::random::<u32>()));
    let content = Value::Object(content);
    let text = content.to_string();
    if kind != SchedKind::User && text.len() > MAX_PUSH_BODY_BYTES {
        return Err(Error::rejected(
            codes::PUSH_BODY_TOO_LARGE,
            format!(
                "Content is {} bytes; the body of a push is at most {MAX_PUSH_BODY_BYTES} bytes",
                text.len()
            ),
        ));
    }
    Ok((content, text))
}

/// `Content.OfflinePushInfo`'s `Title` and `Desc` (empty when absent).
pub fn title_and_desc(content: &Value) -> (String, String) {
    let text = |key: &str| {
        content["OfflinePushInfo"][key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (text("Title"), text("Desc"))
}

/// Whether `Title` or `Desc` holds `keyword` (lowercased), case-insensitively.
pub fn matches_keyword(content: &Value, keyword: &str) -> bool {
    let (title, desc) = title_and_desc(content);
    title.to_lowercase().contains(keyword) || desc.to_lowercase().contains(keyword)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn code(result: Result<impl std::fmt::Debug, Error>) -> u32 {
        result.unwrap_err().to_wire().code
    }

    #[test]
    fn times_are_exactly_the_wire_shape_in_utc() {
        assert_eq!(parse_time("2025-06-01 10:00:00"), Some(1_748_772_000_000));
        assert_eq!(format_time(1_748_772_000_999), "2025-06-01 10:00:00");
        for wrong in [
            "2025-06-01T10:00:00",
            "2025-6-01 10:00:00",
            "2025-06-01 10:00",
            "2025-06-01 10:00:00Z",
            "2025-06-01 10:00:00 ",
            "2025-02-30 10:00:00",
            "2025-06-01 24:00:00",
            "1969-12-31 23:59:59",
        ] {
            assert_eq!(parse_time(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn sdkappid_must_repeat_the_query() {
        let now = parse_time("2025-06-01 00:00:00").unwrap();
        let body = |app: Value| json!({"Sdkappid": app, "Type": "All", "SchedAt": "2025-06-02 00:00:00", "Content": {}});
        assert!(parse_add(&body(json!(7)), 7, now).is_ok());
        assert_eq!(code(parse_add(&body(json!(8)), 7, now)), 90104);
        assert_eq!(code(parse_add(&body(json!("7")), 7, now)), 90104);
        assert_eq!(code(parse_add(&json!({"Type": "All"}), 7, now)), 90104);
        assert_eq!(code(parse_add(&json!([1]), 7, now)), 90001);
    }

    #[test]
    fn sched_at_is_ahead_by_at_most_366_days() {
        let now = parse_time("2025-06-01 00:00:00").unwrap();
        let at = |when: &str| {
            parse_add(
                &json!({"Sdkappid": 7, "Type": "All", "SchedAt": when, "Content": {}}),
                7,
                now,
            )
        };
        assert_eq!(code(at("2025-06-01 00:00:00")), 90104, "not later than now");
        assert!(at("2025-06-01 00:00:01").is_ok());
        assert!(at("2026-06-02 00:00:00").is_ok(), "366 days");
        assert_eq!(code(at("2026-06-02 00:00:01")), 90104);
    }

    #[test]
    fn content_follows_its_type_and_gets_a_msg_random() {
        let all =
            |content: Value| prepare_content(SchedKind::All, content.as_object().unwrap().clone());
        assert_eq!(code(all(json!({"Condition": {"TagsOr": ["a"]}}))), 90104);
        assert!(all(json!({"Condition": null})).is_ok());
        assert_eq!(
            code(prepare_content(SchedKind::Tag, Map::new())),
            90104,
            "Tag without Condition"
        );
        let (filled, _) = all(json!({})).unwrap();
        assert!(filled["MsgRandom"].is_u64());
        let (kept, _) = all(json!({"MsgRandom": 5})).unwrap();
        assert_eq!(kept["MsgRandom"], 5);
        let big = "x".repeat(MAX_PUSH_BODY_BYTES);
        assert_eq!(code(all(json!({"Ext": big}))), 90056);
        let user = prepare_content(
            SchedKind::User,
            json!({"Ext": big}).as_object().unwrap().clone(),
        );
        assert!(user.is_ok(), "a batch body keeps the 1 MiB envelope limit");
    }

    #[test]
    fn a_listing_needs_its_window_within_31_days() {
        let list = |extra: Value| {
            let mut body = json!({"Sdkappid": 7, "Offset": 0, "Want": 500, "OrderBy": "SCHEDAT", "Asc": true,
                                  "BeginTime": "2025-05-01 00:00:00", "EndTime": "2025-06-01 00:00:00"});
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            parse_list(&body, 7)
        };
        let listed = list(json!({"Keyword": "MarKet"})).unwrap();
        assert_eq!(listed.want, MAX_WANT);
        assert_eq!(listed.order, SchedOrder::SchedAt);
        assert_eq!(listed.keyword.as_deref(), Some("market"));
        assert_eq!(code(list(json!({"EndTime": "2025-06-01 00:00:01"}))), 90104);
        assert_eq!(
            code(list(json!({"BeginTime": "2025-06-02 00:00:00"}))),
            90104
        );
        assert_eq!(code(list(json!({"OrderBy": "taskid"}))), 90104);
        assert_eq!(code(list(json!({"Want": 0}))), 90104);
        assert_eq!(code(list(json!({"Asc": "yes"}))), 90104);
    }

    #[test]
    fn keywords_match_title_or_desc_in_any_case() {
        let content = json!({"OfflinePushInfo": {"Title": "Market OPEN", "Desc": "Ünïcode"}});
        assert!(matches_keyword(&content, "open"));
        assert!(matches_keyword(&content, "ünï"));
        assert!(!matches_keyword(&content, "closed"));
        assert_eq!(title_and_desc(&json!({})), (String::new(), String::new()));
    }
}
