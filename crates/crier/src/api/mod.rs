//! The Tencent-compatible REST surface.
//!
//! One route, `POST /v4/{service}/{command}`, runs the contract's checks in order (command
//! known → app → UserSig → admin → body) and hands the parsed body to a thin handler in
//! [`tags`], [`attrs`], [`accounts`], [`timpush`], [`timpush_directory`], [`timpush_sched`] or
//! the push flow. Every answer, refusals included, is HTTP 200 with the Tencent envelope, built
//! in [`respond`] and nowhere else.

pub mod accounts;
pub mod attrs;
pub mod crier_reads;
pub mod fields;
pub mod tags;
pub mod timpush;
pub mod timpush_directory;
pub mod timpush_reports;
pub mod timpush_sched;
pub mod write_bodies;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_proto::codes;
use crier_proto::envelope::Envelope;
use serde_json::{Map, Value};

use crate::app_state::AppState;
use crate::auth::{authenticate_admin, parse_query, AdminCall, Service};
use crate::error::Error;
use crate::http::body::BodyError;
use crate::metrics::refusals::Refusal;

pub use crate::config::MAX_REQUEST_BODY_BYTES as MAX_BODY_BYTES;

type Answer = Result<Map<String, Value>, Error>;
type Reply = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A command's handler: most take the body as a JSON tree; the bulk writes take its bytes and
/// read them into their own shape ([`write_bodies`]).
#[derive(Clone, Copy)]
enum Handler {
    Parsed(fn(AdminCall, Value) -> Reply),
    Bytes(fn(AdminCall, Vec<u8>) -> Reply),
}

macro_rules! handler {
    ($f:path) => {
        Handler::Parsed(|call, body| Box::pin($f(call, body)))
    };
}

macro_rules! bytes_handler {
    ($f:path) => {
        Handler::Bytes(|call, body| Box::pin($f(call, body)))
    };
}

/// The command table: (service path, command path) → service family and handler.
fn command(service: &str, command: &str) -> Option<(Service, Handler)> {
    use Service::*;
    Some(match (service, command) {
        ("all_member_push", "im_push") => (AllMemberPush, handler!(push)),
        ("all_member_push", "im_set_attr_name") => (AllMemberPush, handler!(attrs::set_names)),
        ("all_member_push", "im_get_attr_name") => (AllMemberPush, handler!(attrs::get_names)),
        ("all_member_push", "im_get_attr") => (AllMemberPush, handler!(attrs::get)),
        ("all_member_push", "im_set_attr") => (AllMemberPush, bytes_handler!(attrs::set)),
        ("all_member_push", "im_remove_attr") => (AllMemberPush, handler!(attrs::remove)),
        ("all_member_push", "im_get_tag") => (AllMemberPush, handler!(tags::get)),
        ("all_member_push", "im_add_tag") => (AllMemberPush, bytes_handler!(tags::add)),
        ("all_member_push", "im_remove_tag") => (AllMemberPush, bytes_handler!(tags::remove)),
        ("all_member_push", "im_remove_all_tags") => (AllMemberPush, handler!(tags::remove_all)),
        // v4/timpush: attributes and tags (timpush.md §5).
        ("timpush", "set_attr_name") => (AllMemberPush, handler!(timpush_directory::set_attr_name)),
        ("timpush", "get_attr_name") => (AllMemberPush, handler!(timpush_directory::get_attr_name)),
        ("timpush", "set_attr") => (AllMemberPush, handler!(timpush_directory::set_attr)),
        ("timpush", "get_attr") => (AllMemberPush, handler!(timpush_directory::get_attr)),
        ("timpush", "remove_attr") => (AllMemberPush, handler!(timpush_directory::remove_attr)),
        ("timpush", "add_tag") => (AllMemberPush, handler!(timpush_directory::add_tag)),
        ("timpush", "get_tag") => (AllMemberPush, handler!(timpush_directory::get_tag)),
        ("timpush", "remove_tag") => (AllMemberPush, handler!(timpush_directory::remove_tag)),
        ("timpush", "clear_all_tags") => {
            (AllMemberPush, handler!(timpush_directory::clear_all_tags))
        }
        ("im_open_login_svc", "account_import") => (LoginSvc, handler!(accounts::import)),
        ("im_open_login_svc", "multiaccount_import") => (LoginSvc, handler!(accounts::import_many)),
        ("im_open_login_svc", "account_delete") => (LoginSvc, handler!(accounts::delete)),
        ("im_open_login_svc", "account_check") => (LoginSvc, handler!(accounts::check)),
        ("im_open_login_svc", "kick") => (LoginSvc, handler!(accounts::kick)),
        ("openim", "query_online_status") => (OpenIm, handler!(accounts::query_online_status)),
        // The `timpush` family's push commands (timpush.md §2-4).
        ("timpush", "push") => (AllMemberPush, handler!(timpush::push)),
        ("timpush", "batch") => (AllMemberPush, handler!(timpush::batch)),
        ("timpush", "revoke") => (AllMemberPush, handler!(timpush::revoke)),
        ("timpush", "all_member_push_statistics") => {
            (AllMemberPush, handler!(timpush_reports::statistics))
        }
        ("timpush", "all_member_push_trace") => (AllMemberPush, handler!(timpush_reports::trace)),
        // Scheduled tasks (timpush.md §9).
        ("timpush", "add_sched_task") => (AllMemberPush, handler!(timpush_sched::add)),
        ("timpush", "modify_sched_task") => (AllMemberPush, handler!(timpush_sched::modify)),
        ("timpush", "delete_sched_task") => (AllMemberPush, handler!(timpush_sched::delete)),
        ("timpush", "get_sched_task") => (AllMemberPush, handler!(timpush_sched::get)),
        ("timpush", "list_sched_task") => (AllMemberPush, handler!(timpush_sched::list)),
        // Crier's own extensions, in Tencent's style.
        ("crier", "task_report") => (AllMemberPush, handler!(task_report)),
        ("crier", "audience_count") => (AllMemberPush, handler!(crier_reads::audience_count)),
        ("crier", "task_list") => (AllMemberPush, handler!(crier_reads::task_list)),
        ("crier", "task_timeline") => (AllMemberPush, handler!(crier_reads::task_timeline)),
        ("crier", "account_info") => (AllMemberPush, handler!(crier_reads::account_info)),
        ("crier", "tag_stats") => (AllMemberPush, handler!(crier_reads::tag_stats)),
        ("crier", "attr_stats") => (AllMemberPush, handler!(crier_reads::attr_stats)),
        ("crier", "quota") => (AllMemberPush, handler!(crier_reads::quota)),
        ("crier", "overview") => (AllMemberPush, handler!(crier_reads::overview)),
        _ => return None,
    })
}

async fn push(call: AdminCall, body: Value) -> Answer {
    let task_id = call.tenant.push(&body, &call.identifier).await?;
    Ok(Map::from_iter([("TaskId".into(), Value::String(task_id))]))
}

async fn task_report(call: AdminCall, body: Value) -> Answer {
    let task_id = match &body["TaskId"] {
        Value::String(task_id) if !task_id.is_empty() => task_id.clone(),
        _ => {
            return Err(Error::rejected(
                codes::BAD_JSON,
                "TaskId must be the string im_push answered",
            ))
        }
    };
    let tenant = Arc::clone(&call.tenant);
    let wanted = task_id.clone();
    let report =
        tokio::task::spawn_blocking(move || crate::tenant::report::task_report(&tenant, &wanted))
            .await??;
    let Some(report) = report else {
        return Err(Error::rejected(
            codes::BAD_JSON,
            format!(
                "this app has no push with TaskId {} (reports last as long as the push is stored)",
                crier_proto::echo::echo(&task_id)
            ),
        ));
    };
    let report = serde_json::to_value(report).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Map::from_iter([("Report".into(), report)]))
}

/// Any path that is not a command: the envelope, not axum's plain 404.
pub async fn unknown_route() -> Response {
    respond(Err(unknown_command()))
}

fn unknown_command() -> Error {
    Error::rejected(
        codes::UNKNOWN_COMMAND,
        "no such command: use POST /v4/{service}/{command} with a command of the REST API",
    )
}

pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    Path((service, command_name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let Some((family, handler)) =
        command(&service, &command_name).filter(|_| method == Method::POST)
    else {
        return respond(Err(unknown_command()));
    };
    let path = (service, command_name);
    let service = family;
    let result = async {
        // Signature first: a body is never read, let alone buffered, for a caller who
        // cannot sign. An unread body also ends the connection after the answer.
        let call = authenticate_admin(&state.tenants, &parse_query(query.as_deref()), service)?;
        let mut read = state
            .body_budget
            .read(body, MAX_BODY_BYTES)
            .await
            .map_err(|error| body_refused(&state, error, service))?;
        if path.0 == "timpush"
            && path.1 == "push"
            && read.bytes.len() > crate::push::timpush::MAX_PUSH_BODY_BYTES
        {
            return Err(Error::rejected(
                codes::PUSH_BODY_TOO_LARGE,
                format!(
                    "the body is {} bytes; a v4/timpush/push body is at most {} bytes",
                    read.bytes.len(),
                    crate::push::timpush::MAX_PUSH_BODY_BYTES
                ),
            ));
        }
        // The budget covers what the body is parsed to as well: `read`'s share of it is held
        // until the answer.
        let answer = match handler {
            Handler::Parsed(handler) => handler(call, parse_body(&read.bytes, service)?).await,
            Handler::Bytes(handler) => handler(call, std::mem::take(&mut read.bytes)).await,
        };
        drop(read);
        answer
    }
    .await;
    respond_with(result, failure_fields(&path.0, &path.1))
}

/// What a failed answer of a command carries besides the envelope: `"TaskId": ""` for the
/// `timpush` push commands and `"TaskID": 0` for the scheduled-task commands that answer a
/// TaskID, as Tencent's samples show.
fn failure_fields(service: &str, command: &str) -> Map<String, Value> {
    match (service, command) {
        ("timpush", "push" | "batch") => {
            Map::from_iter([("TaskId".into(), Value::String(String::new()))])
        }
        ("timpush", "add_sched_task" | "modify_sched_task" | "delete_sched_task") => {
            Map::from_iter([("TaskID".into(), Value::from(0))])
        }
        _ => Map::new(),
    }
}

fn body_refused(state: &AppState, error: BodyError, service: Service) -> Error {
    let code = match error {
        BodyError::Busy => {
            state.metrics.refusals.count(Refusal::BodyBudget);
            codes::INTERNAL
        }
        BodyError::TimedOut(_) => {
            state.metrics.refusals.count(Refusal::BodyTimeout);
            service.bad_request_code()
        }
        BodyError::TooLarge { .. } | BodyError::Unreadable(_) => service.bad_request_code(),
    };
    Error::rejected(code, error.to_string())
}

/// An empty body, `{}` and `[]` all mean "no parameters".
fn parse_body(bytes: &[u8], service: Service) -> Result<Value, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Array(items)) if items.is_empty() => Ok(Value::Object(Map::new())),
        Ok(value) => Ok(value),
        Err(e) => Err(Error::rejected(
            service.bad_request_code(),
            format!("the request body is not valid JSON: {e}"),
        )),
    }
}

pub fn respond(result: Answer) -> Response {
    respond_with(result, Map::new())
}

/// The envelope of `result`; a failure also carries `on_failure`.
fn respond_with(result: Answer, on_failure: Map<String, Value>) -> Response {
    let envelope = match result {
        Ok(fields) => Envelope::ok(fields),
        Err(error) => {
            let wire = error.to_wire();
            let mut envelope = Envelope::fail(wire.code, wire.info);
            envelope.rest = on_failure;
            envelope
        }
    };
    Json(envelope).into_response()
}
