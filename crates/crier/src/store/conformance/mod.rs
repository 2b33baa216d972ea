//! The behaviour every [`Store`] must show, written once and run against each implementation
//! (after quickwit's `metastore_test_suite!`), so the embedded store and a shared one provably
//! agree.
//!
//! Each case is a generic `pub fn` over a [`StoreFactory`], in `directory`, `pushes`, `notify`,
//! `sched` or `callbacks` by the part of the store it covers (and re-exported here);
//! [`store_conformance_suite!`] expands to one `#[test]` per case for a factory type. Outside
//! this crate's tests the suite is behind the `store-conformance` feature, for a store living
//! in another crate.
//!
//! [`store_conformance_suite!`]: crate::store_conformance_suite

// Test cases, compiled outside `cfg(test)` for other crates: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod callbacks;
mod directory;
mod marks;
mod notify;
mod pushes;
mod sched;

use std::io::{Read, Write};

use roaring::RoaringBitmap;

pub use self::callbacks::*;
pub use self::directory::*;
pub use self::marks::*;
pub use self::notify::*;
pub use self::pushes::*;
pub use self::sched::*;
use super::notify::{JobProgress, Lease};
use super::{DeliveryCounts, PushAcceptance, PushRules, Store, StoreError};
use crate::directory::DirOp;
use crate::store::{PushKind, PushRecord};

/// Makes stores for the suite.
pub trait StoreFactory {
    /// A new, empty store, for one case.
    fn create() -> Self;

    /// A handle on the store made by [`StoreFactory::create`]. May be called again, while
    /// other handles are open (they play nodes sharing the store) or after all were dropped
    /// (a restart): every handle sees everything any handle committed.
    fn open(&self) -> Box<dyn Store>;

    /// Why the suite cannot run here (a server that cannot be reached), if it cannot: each
    /// case then prints the reason and passes without running.
    fn skip_reason() -> Option<String> {
        None
    }
}

/// Expands to one `#[test]` per conformance case, for the [`StoreFactory`] type `$factory`.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:ty) => {
        $crate::store_conformance_suite!(@cases $factory;
            directory_writes_are_numbered_densely_per_app,
            every_kind_of_directory_write_reads_back_as_written,
            an_append_at_a_stale_head_conflicts_and_writes_nothing,
            of_racing_appends_at_one_head_exactly_one_lands,
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
            racing_nodes_never_accept_more_than_the_quota,
            batches_are_outside_the_quota_and_the_interval_but_retries_hold,
            a_revoked_push_reads_back_revoked_and_its_job_ends,
            push_ids_since_name_the_recent_pushes_and_their_revokes,
            push_summaries_and_counts,
            a_push_record_is_read_whole_by_any_node,
            an_audience_kept_as_runs_reads_back_whole,
            acks_and_delivery_counts_merge_per_push,
            acks_since_a_cursor_are_the_later_batches_in_order,
            a_poller_of_acks_since_misses_no_batch_of_racing_nodes,
            purging_takes_ended_pushes_with_what_hangs_on_them,
            devices_move_between_accounts_and_go,
            two_nodes_never_hold_one_job,
            of_racing_claims_exactly_one_wins,
            an_expired_lease_passes_to_another_node_at_the_stored_cursor,
            a_node_that_lost_its_lease_changes_nothing,
            finished_jobs_are_never_claimed,
            a_released_job_is_claimed_at_once,
            marks_read_back_per_push_in_order_and_go_with_the_push,
            a_revoke_overwrites_what_the_job_sent_once_its_run_lets_go,
            everything_survives_a_reopen,
            sched_task_ids_count_per_app_and_are_never_reused,
            a_sched_task_reads_back_and_changes_only_while_pending,
            due_sched_tasks_are_claimed_in_time_order,
            of_racing_nodes_each_due_sched_task_is_claimed_once,
            an_expired_sched_lease_passes_to_another_node_which_sees_the_push,
            a_released_sched_task_is_claimed_again_at_once,
            sched_tasks_are_listed_by_either_time_within_a_window,
            sched_tasks_survive_a_reopen,
            callbacks_are_claimed_when_a_request_is_full_or_the_oldest_is_due,
            two_nodes_never_hold_one_callback_and_a_dead_nodes_pass_on,
            a_failed_callback_waits_out_its_back_off_with_one_more_attempt,
            released_callbacks_are_claimable_at_once,
            of_racing_callback_claims_each_event_goes_to_one_node,
            queued_callbacks_survive_a_reopen,
        );
    };
    (@cases $factory:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                use $crate::store::conformance::StoreFactory as _;
                if let Some(reason) = <$factory>::skip_reason() {
                    eprintln!("skipped: {reason}");
                    return;
                }
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
        kind: PushKind::ImPush,
        ..PushRecord::default()
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

/// Runs `race` once on each of `nodes` handles of one store, all threads released at once,
/// and answers what each run answered.
fn race<F: StoreFactory, T: Send>(
    factory: &F,
    nodes: usize,
    race: impl Fn(usize, &dyn Store) -> T + Sync,
) -> Vec<T> {
    let handles: Vec<Box<dyn Store>> = (0..nodes).map(|_| factory.open()).collect();
    let start = std::sync::Barrier::new(nodes);
    std::thread::scope(|scope| {
        let runs: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(node, store)| {
                let (start, race) = (&start, &race);
                scope.spawn(move || {
                    start.wait();
                    race(node, &**store)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

fn claimed_task(store: &dyn Store, node: &str, now_ms: u64) -> Option<String> {
    let claimed = store.claim_job(APP, node, now_ms, 1_000).unwrap();
    claimed.map(|job| job.task_id)
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
