//! The behaviour every [`Store`] must show, written once and run against each implementation
//! (after quickwit's `metastore_test_suite!`), so the embedded store and a shared one provably
//! agree.
//!
//! Each case is a generic `pub fn` over a [`StoreFactory`]; [`store_conformance_suite!`]
//! expands to one `#[test]` per case for a factory type. Outside this crate's tests the suite
//! is behind the `store-conformance` feature, for a store living in another crate.
//!
//! [`store_conformance_suite!`]: crate::store_conformance_suite

// Test cases, compiled outside `cfg(test)` for other crates: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use roaring::RoaringBitmap;

use super::notify::{JobProgress, Lease, StoredDevice};
use super::{
    DeliveryCounts, PushAcceptance, PushCounts, PushRules, PushSummary, Store, StoreError,
};
use crate::directory::DirOp;
use crate::push::PushRecord;

/// Makes stores for the suite.
pub trait StoreFactory {
    /// A new, empty store, for one case.
    fn create() -> Self;

    /// A handle on the store made by [`StoreFactory::create`]. May be called again, while
    /// other handles are open (they play nodes sharing the store) or after all were dropped
    /// (a restart): every handle sees everything any handle committed.
    fn open(&self) -> Box<dyn Store>;
}

/// Expands to one `#[test]` per conformance case, for the [`StoreFactory`] type `$factory`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:ty) => {
        $crate::store_conformance_suite!(@cases $factory;
            directory_writes_are_numbered_densely_per_app,
            an_append_at_a_stale_head_conflicts_and_writes_nothing,
            a_snapshot_sets_the_head_of_an_app_without_a_log,
            reads_start_after_the_given_seq,
            snapshots_round_trip_and_keep_the_log_behind_the_previous_one,
            an_older_snapshot_never_replaces_a_newer_one,
            an_accepted_push_is_stored_with_its_job,
            a_retry_within_the_window_is_a_duplicate_up_to_its_edge,
            the_same_msg_random_with_another_fingerprint_is_not_a_duplicate,
            pushes_closer_than_the_interval_are_too_frequent,
            the_quota_counts_pushes_since_the_start_of_the_utc_day,
            refused_pushes_store_nothing,
            push_summaries_and_counts,
            acks_and_delivery_counts_merge_per_push,
            purging_takes_ended_pushes_with_what_hangs_on_them,
            devices_move_between_accounts_and_go,
            two_nodes_never_hold_one_job,
            an_expired_lease_passes_to_another_node_at_the_stored_cursor,
            a_node_that_lost_its_lease_changes_nothing,
            finished_jobs_are_never_claimed,
            a_released_job_is_claimed_at_once,
            everything_survives_a_reopen,
        );
    };
    (@cases $factory:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::store::conformance::$case::<$factory>();
            }
        )*
    };
}

const APP: u64 = 1;
const DAY_MS: u64 = 86_400_000;
/// Midnight UTC, 1 December 2025.
const DAY: u64 = 20_423 * DAY_MS;

fn import(account: &str) -> DirOp {
    DirOp::Import {
        accounts: vec![account.to_owned()],
    }
}

fn ops(store: &dyn Store, app: u64, after_seq: u64) -> Result<Vec<(u64, DirOp)>, StoreError> {
    let mut read = Vec::new();
    store.read_dir_ops(app, after_seq, &mut |seq, op| read.push((seq, op)))?;
    Ok(read)
}

fn seqs(store: &dyn Store, app: u64, after_seq: u64) -> Vec<u64> {
    let read = ops(store, app, after_seq).unwrap();
    read.into_iter().map(|(seq, _)| seq).collect()
}

fn save_snapshot(store: &dyn Store, app: u64, seq: u64, bytes: &[u8]) {
    store
        .save_dir_snapshot(app, seq, &mut |out: &mut dyn Write| out.write_all(bytes))
        .unwrap();
}

fn load_snapshot(store: &dyn Store, app: u64) -> Option<(u64, Vec<u8>)> {
    let mut stored = store.load_dir_snapshot(app).unwrap()?;
    let mut bytes = Vec::new();
    stored.reader.read_to_end(&mut bytes).unwrap();
    Some((stored.seq, bytes))
}

fn push(app: u64, task_id: &str, created_ms: u64, msg_random: u32) -> PushRecord {
    PushRecord {
        app,
        task_id: task_id.to_owned(),
        created_ms,
        lifetime_secs: 60,
        from_account: "admin".into(),
        msg_random,
        msg_body: r#"[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]"#.into(),
        offline_push_info: Some(r#"{"Desc":"d"}"#.into()),
        condition: Some(r#"{"TagsAnd":["x"]}"#.into()),
        audience: (0..1_000).chain(70_000..70_100).collect(),
    }
}

/// No limit but the retry window of `push::limits`.
fn rules() -> PushRules {
    PushRules {
        day_start_ms: DAY,
        daily_quota: 1_000,
        min_interval_ms: 0,
        retry_window_ms: 1_000,
    }
}

fn accept(
    store: &dyn Store,
    push: &PushRecord,
    fingerprint: u64,
    rules: &PushRules,
) -> PushAcceptance {
    store
        .try_accept_push(push, fingerprint, rules, None)
        .unwrap()
}

fn task_ids(store: &dyn Store, app: u64) -> Vec<String> {
    let pushes = store.pushes_since(app, 0).unwrap();
    pushes.into_iter().map(|p| p.task_id).collect()
}

fn bitmap(accounts: impl IntoIterator<Item = u32>) -> RoaringBitmap {
    accounts.into_iter().collect()
}

fn lease(node: &str, now_ms: u64) -> Lease<'_> {
    Lease {
        node,
        now_ms,
        lease_ms: 1_000,
    }
}

fn progress(cursor: u32, counts: &str, done: bool) -> JobProgress<'_> {
    JobProgress {
        cursor,
        counts,
        done,
    }
}

/// Stores a push of `app` with a notification job for `targets`.
fn push_with_job(
    store: &dyn Store,
    app: u64,
    task_id: &str,
    created_ms: u64,
    targets: &RoaringBitmap,
) {
    let record = push(app, task_id, created_ms, created_ms as u32);
    let accepted = store
        .try_accept_push(&record, 0, &rules(), Some(targets))
        .unwrap();
    assert_eq!(accepted, PushAcceptance::Accepted);
}

fn claimed_task(store: &dyn Store, node: &str, now_ms: u64) -> Option<String> {
    let claimed = store.claim_job(APP, node, now_ms, 1_000).unwrap();
    claimed.map(|job| job.task_id)
}

pub fn directory_writes_are_numbered_densely_per_app<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert_eq!(store.dir_head(APP).unwrap(), 0, "a new app starts at 0");
    assert_eq!(
        store
            .append_dir_ops(APP, 0, &[import("a"), import("b")])
            .unwrap(),
        2
    );
    assert_eq!(
        store.append_dir_ops(2, 0, &[import("z")]).unwrap(),
        1,
        "apps count apart"
    );
    assert_eq!(store.append_dir_ops(APP, 2, &[import("c")]).unwrap(), 3);
    assert_eq!(
        store.append_dir_ops(APP, 3, &[]).unwrap(),
        3,
        "nothing to append"
    );
    assert_eq!(store.dir_head(APP).unwrap(), 3);
    assert_eq!(store.dir_head(2).unwrap(), 1);
    assert_eq!(
        ops(&*store, APP, 0).unwrap(),
        [(1, import("a")), (2, import("b")), (3, import("c"))]
    );
}

pub fn an_append_at_a_stale_head_conflicts_and_writes_nothing<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    node_a.append_dir_ops(APP, 0, &[import("a")]).unwrap();
    for stale in [0, 2] {
        let refused = node_b.append_dir_ops(APP, stale, &[import("b")]);
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    assert_eq!(seqs(&*node_b, APP, 0), [1]);
    assert_eq!(node_b.dir_head(APP).unwrap(), 1);
    // Caught up, the other node appends after the first.
    assert_eq!(node_b.append_dir_ops(APP, 1, &[import("b")]).unwrap(), 2);
    assert_eq!(ops(&*node_a, APP, 1).unwrap(), [(2, import("b"))]);
}

pub fn a_snapshot_sets_the_head_of_an_app_without_a_log<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    save_snapshot(&*store, APP, 7, b"imported");
    assert_eq!(store.dir_head(APP).unwrap(), 7);
    assert!(matches!(
        store.append_dir_ops(APP, 0, &[import("a")]),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.append_dir_ops(APP, 7, &[import("a")]).unwrap(), 8);
    assert_eq!(seqs(&*store, APP, 7), [8]);
}

pub fn reads_start_after_the_given_seq<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let written: Vec<DirOp> = (0..5).map(|n| import(&format!("user{n}"))).collect();
    store.append_dir_ops(APP, 0, &written).unwrap();
    assert_eq!(seqs(&*store, APP, 0), [1, 2, 3, 4, 5]);
    assert_eq!(
        ops(&*store, APP, 3).unwrap(),
        [(4, written[3].clone()), (5, written[4].clone())]
    );
    assert!(seqs(&*store, APP, 5).is_empty());
    assert!(
        seqs(&*store, 2, 0).is_empty(),
        "another app's log is its own"
    );
}

pub fn snapshots_round_trip_and_keep_the_log_behind_the_previous_one<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert!(store.load_dir_snapshot(APP).unwrap().is_none());
    store
        .append_dir_ops(APP, 0, &[import("a"), import("b"), import("c")])
        .unwrap();
    save_snapshot(&*store, APP, 2, b"first");
    assert_eq!(load_snapshot(&*store, APP), Some((2, b"first".to_vec())));
    assert_eq!(
        seqs(&*store, APP, 0),
        [1, 2, 3],
        "the first snapshot cuts nothing"
    );

    store
        .append_dir_ops(APP, 3, &[import("d"), import("e")])
        .unwrap();
    save_snapshot(&*store, APP, 4, b"second");
    assert_eq!(load_snapshot(&*store, APP), Some((4, b"second".to_vec())));
    // A reader that loaded the first snapshot (or any later state) still reads every write.
    assert_eq!(seqs(&*store, APP, 2), [3, 4, 5]);
    assert_eq!(seqs(&*store, APP, 4), [5]);
    // One further behind would miss writes: it must load the snapshot again.
    for behind in [0, 1] {
        let refused = ops(&*store, APP, behind);
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.dir_head(APP).unwrap(),
        5,
        "cutting the log keeps the head"
    );
    assert_eq!(store.append_dir_ops(APP, 5, &[import("f")]).unwrap(), 6);
    assert!(store.load_dir_snapshot(2).unwrap().is_none());
}

pub fn an_older_snapshot_never_replaces_a_newer_one<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    store
        .append_dir_ops(APP, 0, &[import("a"), import("b"), import("c")])
        .unwrap();
    save_snapshot(&*store, APP, 3, b"newer");
    save_snapshot(&*store, APP, 2, b"older");
    save_snapshot(&*store, APP, 3, b"same");
    assert_eq!(load_snapshot(&*store, APP), Some((3, b"newer".to_vec())));
    assert_eq!(seqs(&*store, APP, 0), [1, 2, 3], "nothing was cut");
}

pub fn an_accepted_push_is_stored_with_its_job<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let record = push(APP, "t1", DAY + 5_000, 9);
    let targets = bitmap([3, 70_050]);
    let accepted = store
        .try_accept_push(&record, 42, &rules(), Some(&targets))
        .unwrap();
    assert_eq!(accepted, PushAcceptance::Accepted);
    assert_eq!(store.pushes_since(APP, 0).unwrap(), [record]);
    let job = store.job(APP, "t1").unwrap().unwrap();
    assert_eq!((job.targets, job.cursor, job.done), (targets, 0, false));
    let without = push(APP, "t2", DAY + 6_000, 10);
    assert_eq!(
        accept(&*store, &without, 42, &rules()),
        PushAcceptance::Accepted
    );
    assert!(
        store.job(APP, "t2").unwrap().is_none(),
        "no job unless asked"
    );
    assert_eq!(task_ids(&*store, APP), ["t1", "t2"]);
}

pub fn a_retry_within_the_window_is_a_duplicate_up_to_its_edge<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let strict = PushRules {
        min_interval_ms: 5_000,
        daily_quota: 1,
        ..rules()
    };
    let first = push(APP, "first", DAY + 10_000, 7);
    assert_eq!(
        accept(&*store, &first, 1, &strict),
        PushAcceptance::Accepted
    );
    // A retry is answered before the interval and the quota are looked at.
    for (task_id, created_ms) in [
        ("r1", DAY + 10_000),
        ("r2", DAY + 10_500),
        ("r3", DAY + 11_000),
    ] {
        let retry = push(APP, task_id, created_ms, 7);
        assert_eq!(
            accept(&*store, &retry, 1, &strict),
            PushAcceptance::Duplicate {
                task_id: "first".into()
            },
            "{created_ms}"
        );
    }
    let late = push(APP, "late", DAY + 11_001, 7);
    assert_eq!(
        accept(&*store, &late, 1, &rules()),
        PushAcceptance::Accepted
    );
    assert_eq!(task_ids(&*store, APP), ["first", "late"]);
}

pub fn the_same_msg_random_with_another_fingerprint_is_not_a_duplicate<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert_eq!(
        accept(&*store, &push(APP, "a", DAY + 1_000, 7), 1, &rules()),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "b", DAY + 1_100, 7), 2, &rules()),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "c", DAY + 1_200, 8), 1, &rules()),
        PushAcceptance::Accepted
    );
    // Nor is the same request made to another app.
    assert_eq!(
        accept(&*store, &push(2, "d", DAY + 1_300, 7), 1, &rules()),
        PushAcceptance::Accepted
    );
    assert_eq!(task_ids(&*store, APP), ["a", "b", "c"]);
}

pub fn pushes_closer_than_the_interval_are_too_frequent<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let spaced = PushRules {
        min_interval_ms: 2_000,
        ..rules()
    };
    assert_eq!(
        accept(&*store, &push(APP, "a", DAY + 10_000, 1), 1, &spaced),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "b", DAY + 11_999, 2), 2, &spaced),
        PushAcceptance::TooFrequent {
            last_created_ms: DAY + 10_000
        }
    );
    assert_eq!(
        accept(&*store, &push(APP, "c", DAY + 12_000, 3), 3, &spaced),
        PushAcceptance::Accepted
    );
    // The interval is judged before the quota.
    let spent = PushRules {
        daily_quota: 0,
        ..spaced
    };
    assert_eq!(
        accept(&*store, &push(APP, "d", DAY + 12_001, 4), 4, &spent),
        PushAcceptance::TooFrequent {
            last_created_ms: DAY + 12_000
        }
    );
    assert_eq!(task_ids(&*store, APP), ["a", "c"]);
}

pub fn the_quota_counts_pushes_since_the_start_of_the_utc_day<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let yesterday = PushRules {
        day_start_ms: DAY - DAY_MS,
        daily_quota: 2,
        ..rules()
    };
    let today = PushRules {
        day_start_ms: DAY,
        ..yesterday
    };
    assert_eq!(
        accept(&*store, &push(APP, "y1", DAY - 2_000, 1), 1, &yesterday),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "y2", DAY - 1, 2), 2, &yesterday),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "y3", DAY - 1, 3), 3, &yesterday),
        PushAcceptance::QuotaExceeded { quota: 2 }
    );
    // At midnight UTC the count starts again.
    assert_eq!(
        accept(&*store, &push(APP, "t1", DAY, 4), 4, &today),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "t2", DAY + 1, 5), 5, &today),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &push(APP, "t3", DAY + 2, 6), 6, &today),
        PushAcceptance::QuotaExceeded { quota: 2 }
    );
    assert_eq!(
        accept(&*store, &push(2, "other", DAY + 3, 7), 7, &today),
        PushAcceptance::Accepted
    );
    assert_eq!(task_ids(&*store, APP), ["y1", "y2", "t1", "t2"]);
}

pub fn refused_pushes_store_nothing<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let one_a_day = PushRules {
        daily_quota: 1,
        ..rules()
    };
    let targets = bitmap([1, 2]);
    store
        .try_accept_push(
            &push(APP, "a", DAY + 1_000, 1),
            1,
            &one_a_day,
            Some(&targets),
        )
        .unwrap();
    for (task_id, msg_random) in [("retry", 1), ("over", 2)] {
        let refused = store
            .try_accept_push(
                &push(APP, task_id, DAY + 1_500, msg_random),
                1,
                &one_a_day,
                Some(&targets),
            )
            .unwrap();
        assert_ne!(refused, PushAcceptance::Accepted);
        assert!(store.job(APP, task_id).unwrap().is_none());
        assert!(store.push_summary(APP, task_id).unwrap().is_none());
    }
    assert_eq!(store.unfinished_jobs(APP).unwrap().len(), 1);
    assert_eq!(task_ids(&*store, APP), ["a"]);
}

pub fn push_summaries_and_counts<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert_eq!(store.push_counts(APP, 0).unwrap(), PushCounts::default());
    assert!(store.push_summary(APP, "a").unwrap().is_none());
    let (a, b) = (push(APP, "a", 5_000, 1), push(APP, "b", 9_000, 2));
    accept(&*store, &a, 1, &rules());
    accept(&*store, &b, 2, &rules());
    assert_eq!(
        store.push_summary(APP, "a").unwrap(),
        Some(PushSummary {
            created_ms: 5_000,
            lifetime_secs: 60,
            audience_size: 1_100
        })
    );
    assert!(store.push_summary(2, "a").unwrap().is_none());
    assert_eq!(store.pushes_since(APP, 0).unwrap(), [a, b.clone()]);
    assert_eq!(store.pushes_since(APP, 5_001).unwrap(), [b]);
    assert!(store.pushes_since(APP, 9_001).unwrap().is_empty());
    assert_eq!(
        store.push_counts(APP, 5_001).unwrap(),
        PushCounts {
            since_count: 1,
            last_created_ms: Some(9_000)
        }
    );
    assert_eq!(store.push_counts(2, 0).unwrap(), PushCounts::default());
}

pub fn acks_and_delivery_counts_merge_per_push<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    store
        .append_acks(
            APP,
            &[("t1".into(), bitmap([1, 2])), ("t2".into(), bitmap([5]))],
        )
        .unwrap();
    store
        .append_acks(APP, &[("t1".into(), bitmap([2, 3]))])
        .unwrap();
    store.append_acks(2, &[("t1".into(), bitmap([9]))]).unwrap();
    let acks = store.load_acks(APP).unwrap();
    assert_eq!(
        (acks.len(), &acks["t1"], &acks["t2"]),
        (2, &bitmap([1, 2, 3]), &bitmap([5]))
    );
    let counts = |online, offline| DeliveryCounts { online, offline };
    store
        .add_delivery_counts(APP, &[("t1".into(), counts(5, 0))])
        .unwrap();
    store
        .add_delivery_counts(
            APP,
            &[("t1".into(), counts(2, 3)), ("t2".into(), counts(1, 1))],
        )
        .unwrap();
    store
        .add_delivery_counts(2, &[("t1".into(), counts(9, 9))])
        .unwrap();
    let stored = store.load_delivery_counts(APP).unwrap();
    assert_eq!(
        (stored.len(), stored["t1"], stored["t2"]),
        (2, counts(7, 3), counts(1, 1))
    );
}

pub fn purging_takes_ended_pushes_with_what_hangs_on_them<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    // Lifetime 60 s: ends at 65,000.
    push_with_job(&*store, APP, "old", 5_000, &bitmap([1]));
    push_with_job(&*store, APP, "new", 100_000, &bitmap([1]));
    push_with_job(&*store, 2, "old", 5_000, &bitmap([1]));
    store
        .append_acks(
            APP,
            &[("old".into(), bitmap([1])), ("new".into(), bitmap([1]))],
        )
        .unwrap();
    let one = DeliveryCounts {
        online: 1,
        offline: 0,
    };
    store
        .add_delivery_counts(APP, &[("old".into(), one), ("new".into(), one)])
        .unwrap();
    // Kept while alive, or while it counts toward the day's quota.
    assert_eq!(store.purge_pushes(APP, 65_000, 1_000_000).unwrap(), 0);
    assert_eq!(store.purge_pushes(APP, 65_001, 5_000).unwrap(), 0);
    assert_eq!(store.purge_pushes(APP, 65_001, 5_001).unwrap(), 1);
    assert_eq!(task_ids(&*store, APP), ["new"]);
    assert!(!store.load_acks(APP).unwrap().contains_key("old"));
    assert!(!store.load_delivery_counts(APP).unwrap().contains_key("old"));
    assert!(store.job(APP, "old").unwrap().is_none());
    assert!(store.job(APP, "new").unwrap().is_some());
    assert_eq!(task_ids(&*store, 2), ["old"], "other apps keep theirs");
    assert!(store.job(2, "old").unwrap().is_some());
}

pub fn devices_move_between_accounts_and_go<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let device = |account: &str, platform: &str, token: &str| StoredDevice {
        account: account.into(),
        platform: platform.into(),
        token: token.into(),
    };
    let sorted = |store: &dyn Store, app| {
        let mut devices = store.load_devices(app).unwrap();
        devices.sort_by(|a, b| (&a.platform, &a.token).cmp(&(&b.platform, &b.token)));
        devices
    };
    store.put_device(APP, "ann", "apns", "t1").unwrap();
    store.put_device(APP, "ann", "fcm", "t1").unwrap();
    store.put_device(APP, "ann", "fcm", "t2").unwrap();
    store.put_device(APP, "ann", "fcm", "t2").unwrap();
    store.put_device(2, "ann", "fcm", "t9").unwrap();
    // The token now belongs to bob.
    store.put_device(APP, "bob", "fcm", "t2").unwrap();
    assert_eq!(
        sorted(&*store, APP),
        [
            device("ann", "apns", "t1"),
            device("ann", "fcm", "t1"),
            device("bob", "fcm", "t2")
        ]
    );
    assert!(store.delete_device(APP, "fcm", "t1").unwrap());
    assert!(!store.delete_device(APP, "fcm", "t1").unwrap());
    assert!(!store.delete_device(APP, "apns", "t2").unwrap());
    store.put_device(APP, "ann", "fcm", "t3").unwrap();
    store.delete_account_devices(APP, "ann").unwrap();
    assert_eq!(sorted(&*store, APP), [device("bob", "fcm", "t2")]);
    assert_eq!(sorted(&*store, 2), [device("ann", "fcm", "t9")]);
}

pub fn two_nodes_never_hold_one_job<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    push_with_job(&*node_a, APP, "j1", 1_000, &bitmap([1, 2]));
    push_with_job(&*node_a, APP, "j2", 2_000, &bitmap([3]));
    assert_eq!(
        claimed_task(&*node_a, "a", 10_000).as_deref(),
        Some("j1"),
        "oldest first"
    );
    assert_eq!(claimed_task(&*node_b, "b", 10_100).as_deref(), Some("j2"));
    assert_eq!(
        claimed_task(&*node_b, "b", 10_200).as_deref(),
        Some("j2"),
        "a holder claims its own again"
    );
    assert_eq!(claimed_task(&*node_a, "c", 10_999), None, "both are leased");
    assert!(
        node_a.claim_job(2, "a", 10_000, 1_000).unwrap().is_none(),
        "jobs are per app"
    );
}

pub fn an_expired_lease_passes_to_another_node_at_the_stored_cursor<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    push_with_job(&*node_a, APP, "j1", 1_000, &bitmap(0..100));
    let job = node_a.claim_job(APP, "a", 10_000, 1_000).unwrap().unwrap();
    assert_eq!((job.cursor, job.counts.as_str()), (0, "{}"));
    // A batch stored renews the lease until 11,500.
    node_a
        .update_job(
            APP,
            "j1",
            lease("a", 10_500),
            progress(40, r#"{"Fcm":{"Sent":40}}"#, false),
        )
        .unwrap();
    assert_eq!(claimed_task(&*node_b, "b", 11_499), None);
    let taken = node_b.claim_job(APP, "b", 11_500, 1_000).unwrap().unwrap();
    assert_eq!(
        (
            taken.task_id.as_str(),
            taken.cursor,
            taken.counts.as_str(),
            taken.targets.len()
        ),
        ("j1", 40, r#"{"Fcm":{"Sent":40}}"#, 100)
    );
    node_b
        .update_job(APP, "j1", lease("b", 11_600), progress(80, "{}", false))
        .unwrap();
    assert_eq!(node_a.job(APP, "j1").unwrap().unwrap().cursor, 80);
}

pub fn a_node_that_lost_its_lease_changes_nothing<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    push_with_job(&*node_a, APP, "j1", 1_000, &bitmap(0..10));
    node_a.claim_job(APP, "a", 10_000, 1_000).unwrap().unwrap();
    node_b.claim_job(APP, "b", 11_000, 1_000).unwrap().unwrap();
    let late = node_a.update_job(APP, "j1", lease("a", 11_100), progress(5, "late", true));
    assert!(matches!(late, Err(StoreError::Conflict(_))), "{late:?}");
    let job = node_b.job(APP, "j1").unwrap().unwrap();
    assert_eq!(
        (job.cursor, job.counts.as_str(), job.done),
        (0, "{}", false)
    );
    // Its lease was not renewed either: b still holds the job.
    assert_eq!(claimed_task(&*node_a, "a", 11_500), None);
    let never_held = node_a.update_job(APP, "j1", lease("c", 11_500), progress(5, "", false));
    assert!(matches!(never_held, Err(StoreError::Conflict(_))));
}

pub fn finished_jobs_are_never_claimed<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    push_with_job(&*store, APP, "j1", 1_000, &bitmap([1]));
    store.claim_job(APP, "a", 10_000, 1_000).unwrap().unwrap();
    store
        .update_job(APP, "j1", lease("a", 10_100), progress(2, "{}", true))
        .unwrap();
    assert_eq!(claimed_task(&*store, "a", 10_200), None);
    assert_eq!(claimed_task(&*store, "b", 99_000), None);
    assert!(store.unfinished_jobs(APP).unwrap().is_empty());
    let job = store.job(APP, "j1").unwrap().unwrap();
    assert_eq!((job.cursor, job.done), (2, true));
}

pub fn a_released_job_is_claimed_at_once<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    push_with_job(&*node_a, APP, "j1", 1_000, &bitmap([1]));
    node_a.claim_job(APP, "a", 10_000, 60_000).unwrap().unwrap();
    // Only the holder can release.
    node_b.release_job(APP, "j1", "b").unwrap();
    assert_eq!(claimed_task(&*node_b, "b", 10_100), None);
    node_a.release_job(APP, "j1", "a").unwrap();
    assert_eq!(claimed_task(&*node_b, "b", 10_100).as_deref(), Some("j1"));
    assert_eq!(
        node_a.unfinished_jobs(APP).unwrap().len(),
        1,
        "released is not finished"
    );
}

pub fn everything_survives_a_reopen<F: StoreFactory>() {
    let factory = F::create();
    let record = push(APP, "t1", DAY + 1_000, 3);
    {
        let store = factory.open();
        store
            .append_dir_ops(APP, 0, &[import("a"), import("b")])
            .unwrap();
        save_snapshot(&*store, APP, 1, b"one");
        save_snapshot(&*store, APP, 2, b"two");
        store
            .try_accept_push(&record, 77, &rules(), Some(&bitmap([4])))
            .unwrap();
        store
            .append_acks(APP, &[("t1".into(), bitmap([4]))])
            .unwrap();
        store
            .add_delivery_counts(
                APP,
                &[(
                    "t1".into(),
                    DeliveryCounts {
                        online: 2,
                        offline: 1,
                    },
                )],
            )
            .unwrap();
        store.put_device(APP, "ann", "fcm", "tok").unwrap();
        store.claim_job(APP, "a", 10_000, 5_000).unwrap().unwrap();
        store
            .update_job(APP, "t1", lease("a", 10_000), progress(3, "{}", false))
            .unwrap();
        store.flush().unwrap();
    }
    let store = factory.open();
    assert_eq!(store.dir_head(APP).unwrap(), 2);
    assert_eq!(load_snapshot(&*store, APP), Some((2, b"two".to_vec())));
    assert_eq!(seqs(&*store, APP, 1), [2]);
    assert!(
        matches!(ops(&*store, APP, 0), Err(StoreError::Conflict(_))),
        "the horizon too"
    );
    assert_eq!(store.append_dir_ops(APP, 2, &[import("c")]).unwrap(), 3);
    assert_eq!(store.pushes_since(APP, 0).unwrap(), [record]);
    let retry = push(APP, "t1-again", DAY + 1_500, 3);
    assert_eq!(
        accept(&*store, &retry, 77, &rules()),
        PushAcceptance::Duplicate {
            task_id: "t1".into()
        },
        "the fingerprint was stored"
    );
    assert_eq!(store.load_acks(APP).unwrap()["t1"], bitmap([4]));
    assert_eq!(
        store.load_delivery_counts(APP).unwrap()["t1"],
        DeliveryCounts {
            online: 2,
            offline: 1
        }
    );
    assert_eq!(store.load_devices(APP).unwrap().len(), 1);
    assert_eq!(
        claimed_task(&*store, "b", 10_500),
        None,
        "the lease is stored"
    );
    let job = store.claim_job(APP, "a", 10_500, 1_000).unwrap().unwrap();
    assert_eq!(job.cursor, 3);
}
