//! Tencent's numeric error codes, by name. The REST contract (`shared/spec/rest-api.md`) says
//! which request causes which; these constants keep the numbers in one place.

pub const OK: u32 = 0;

// UserSig and app identification (public codes, 60000-79999).
pub const USERSIG_EXPIRED: u32 = 70001;
pub const USERSIG_EMPTY: u32 = 70002;
pub const USERSIG_MALFORMED: u32 = 70003;
pub const USERSIG_BAD_SIGNATURE: u32 = 70009;
pub const USERSIG_IDENTIFIER_MISMATCH: u32 = 70013;
pub const USERSIG_APP_MISMATCH: u32 = 70014;
pub const UNKNOWN_APP: u32 = 70020;
pub const ACCOUNT_NOT_FOUND: u32 = 70107;
pub const LOGIN_SVC_BAD_REQUEST: u32 = 70402;
pub const LOGIN_SVC_NOT_ADMIN: u32 = 70403;
pub const UNKNOWN_COMMAND: u32 = 60009;
pub const MISSING_SDKAPPID: u32 = 60012;

// all_member_push and openim.
pub const BAD_JSON: u32 = 90001;
pub const BAD_MSG_BODY_ELEMENT: u32 = 90002;
pub const BAD_MSG_RANDOM: u32 = 90005;
pub const MSG_BODY_NOT_ARRAY: u32 = 90007;
pub const NOT_ADMIN: u32 = 90009;
pub const BAD_MSG_FORMAT: u32 = 90010;
pub const TOO_MANY_ACCOUNTS: u32 = 90011;
pub const TOO_MANY_USERS: u32 = 90018;
pub const TAG_TOO_LONG: u32 = 90020;
pub const TAG_IN_AND_AND_OR: u32 = 90022;
pub const PUSH_TOO_FREQUENT: u32 = 90024;
pub const BAD_MSG_LIFETIME: u32 = 90026;
pub const BAD_ATTR_VALUE: u32 = 90030;
pub const TOO_MANY_TAGS: u32 = 90032;
pub const BAD_ATTR: u32 = 90033;
/// An attribute or tag written for an account of the other kind (UserID vs RegistrationID).
pub const WRONG_ACCOUNT_KIND: u32 = 90035;
pub const TAGS_WITH_ATTRS: u32 = 90039;
pub const EMPTY_TAG: u32 = 90040;
pub const BAD_OFFLINE_PUSH_INFO: u32 = 90043;
pub const MSG_LIFETIME_NOT_INTEGER: u32 = 90044;
pub const PUSH_DISABLED: u32 = 90045;
pub const DAILY_QUOTA_EXCEEDED: u32 = 90047;
pub const BAD_FROM_ACCOUNT: u32 = 90048;
/// `timpush/revoke`: no revocable push has this TaskId.
pub const REVOKE_UNKNOWN_TASK: u32 = 90049;
pub const REVOKE_ALREADY_REVOKED: u32 = 90050;
pub const REVOKE_TOO_FREQUENT: u32 = 90051;
/// `timpush/revoke`: the push started more than 24 hours ago.
pub const REVOKE_TOO_LATE: u32 = 90052;
/// `timpush/revoke`: the push stored nothing, so the overwriting `OfflinePushInfo` is needed.
pub const REVOKE_NEEDS_OFFLINE_PUSH_INFO: u32 = 90053;
/// `timpush/push`: the body is over 10 KB.
pub const PUSH_BODY_TOO_LARGE: u32 = 90056;
pub const DATA_ID_TOO_LONG: u32 = 90057;
/// A parameter of a `v4/crier` read (or a scheduled task) is out of range.
pub const BAD_PARAMETER: u32 = 90104;
/// A scheduled task's state forbids the operation (it is no longer pending).
pub const SCHED_TASK_NOT_PENDING: u32 = 90107;
pub const INTERNAL: u32 = 91000;
