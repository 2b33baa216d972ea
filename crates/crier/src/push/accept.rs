//! Accepting a push: the record is built from the request and its audience, then offered to
//! the store, which applies the daily quota, the minimum interval and the `MsgRandom` retry
//! window against every push the app has stored, in the transaction that stores it. The
//! limits therefore hold across restarts and across nodes sharing the store.

use crier_proto::codes;
use roaring::RoaringBitmap;

use super::limits::{quota_exceeded, too_frequent, RETRY_WINDOW_MS};
use super::task_id::new_task_id;
use super::validate::PushRequest;
use crate::clock::utc_day_start_ms;
use crate::config::AppConfig;
use crate::error::Error;
use crate::store::{PushAcceptance, PushRecord, PushRules, Store};

/// How an acceptance ended, when it was not refused.
pub enum Accepted {
    /// Stored (with its notification job when `notifying`): announce it.
    New {
        record: Box<PushRecord>,
        notifying: bool,
    },
    /// A client's retry of a push already accepted, answered with that push's TaskId.
    Retry { task_id: String },
}

/// Builds the record of `request` from admin `caller`, with its `audience` fixed now, and
/// stores it if the app's limits allow (a `batch` is held to the retry window only).
/// `notify_targets` says who is to get an offline notification (`None`: nobody). Blocking.
pub fn accept(
    store: &dyn Store,
    config: &AppConfig,
    request: PushRequest,
    caller: &str,
    mut audience: RoaringBitmap,
    now_ms: u64,
    notify_targets: impl FnOnce(&PushRecord) -> Option<RoaringBitmap>,
) -> Result<Accepted, Error> {
    if !config.push_enabled {
        return Err(Error::rejected(
            codes::PUSH_DISABLED,
            "pushing to all users is not enabled for this app (push_enabled = false)",
        ));
    }
    let app = config.sdkappid;
    // Runs where they are smaller: a push to every live account of a dense directory is a
    // few kilobytes to store and keep for its lifetime instead of 8 KiB per 65,536 accounts.
    audience.optimize();
    let record = PushRecord {
        app,
        task_id: new_task_id(request.kind, app, now_ms, request.msg_random),
        kind: request.kind,
        data_id: request.data_id,
        sched_task_id: request.sched_task_id,
        revoked_ms: None,
        revoke_info: None,
        created_ms: now_ms,
        lifetime_secs: request.lifetime_secs,
        from_account: request.from_account.unwrap_or_else(|| caller.to_owned()),
        msg_random: request.msg_random,
        msg_body: request.msg_body,
        offline_push_info: request.offline_push_info,
        condition: request.condition_text,
        audience,
    };
    let targets = notify_targets(&record).filter(|targets| !targets.is_empty());
    let rules = PushRules {
        day_start_ms: utc_day_start_ms(now_ms),
        daily_quota: config.daily_push_quota,
        min_interval_ms: config.min_push_interval_ms,
        retry_window_ms: RETRY_WINDOW_MS,
    };
    match store.try_accept_push(&record, request.fingerprint, &rules, targets.as_ref())? {
        PushAcceptance::Accepted => Ok(Accepted::New {
            record: Box::new(record),
            notifying: targets.is_some(),
        }),
        PushAcceptance::Duplicate { task_id } => Ok(Accepted::Retry { task_id }),
        PushAcceptance::TooFrequent { last_created_ms } => Err(too_frequent(
            config.min_push_interval_ms,
            now_ms.saturating_sub(last_created_ms),
        )),
        PushAcceptance::QuotaExceeded { quota } => Err(quota_exceeded(quota)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Condition;
    use crate::store::sqlite::SqliteStore;
    use crate::store::PushKind;

    fn request(msg_random: u32) -> PushRequest {
        PushRequest {
            from_account: None,
            msg_random,
            lifetime_secs: 60,
            msg_body: r#"[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]"#.into(),
            condition: Condition::All,
            condition_text: None,
            offline_push_info: None,
            kind: PushKind::ImPush,
            data_id: None,
            sched_task_id: None,
            fingerprint: u64::from(msg_random),
        }
    }

    #[test]
    fn a_dense_audience_is_kept_as_runs_and_a_sparse_one_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut config = AppConfig::new(1, "key");
        config.min_push_interval_ms = 0;
        let kept = |msg_random: u32, audience: RoaringBitmap| match accept(
            &store,
            &config,
            request(msg_random),
            "admin",
            audience,
            1_000,
            |_| None,
        )
        .unwrap()
        {
            Accepted::New { record, .. } => record.audience,
            Accepted::Retry { .. } => panic!("a new push was taken for a retry"),
        };
        let everyone: RoaringBitmap = (0..1_000_000).collect();
        let dense = kept(1, everyone.clone());
        assert_eq!(dense, everyone);
        // 16 containers of 8 KiB as bitmaps; one run each.
        assert!(dense.serialized_size() < 400, "{}", dense.serialized_size());
        let sparse: RoaringBitmap = (0..1_000_000).step_by(7).collect();
        assert_eq!(
            kept(2, sparse.clone()).serialized_size(),
            sparse.serialized_size()
        );
    }
}
