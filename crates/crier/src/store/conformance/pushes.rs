//! Push acceptance under the limits (retry window, interval, UTC-day quota), push records and
//! what hangs on them.

use super::*;
use crate::store::{PushCounts, PushId, PushSummary, RevokeOutcome};

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

pub fn a_push_record_is_read_whole_by_any_node<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    let mut record = push(APP, "t1", DAY + 1_000, 5);
    record.offline_push_info = None;
    record.audience = (0..200_000).step_by(3).collect();
    assert_eq!(
        accept(&*node_a, &record, 1, &rules()),
        PushAcceptance::Accepted
    );
    assert_eq!(node_b.push_record(APP, "t1").unwrap(), Some(record));
    assert!(node_b.push_record(APP, "t2").unwrap().is_none());
    assert!(
        node_b.push_record(2, "t1").unwrap().is_none(),
        "task ids are per app"
    );
}

/// Acceptance keeps dense audiences as runs (`RoaringBitmap::optimize`): a store must give
/// back every kind of container, runs included, after a restart and on another node.
pub fn an_audience_kept_as_runs_reads_back_whole<F: StoreFactory>() {
    let factory = F::create();
    let mut record = push(APP, "runs", DAY + 1_000, 5);
    // Runs, an array container and a bitmap container.
    record.audience = (0..300_000)
        .chain([400_000, 400_002])
        .chain((500_000..600_000).step_by(3))
        .collect();
    let plain = record.audience.serialized_size();
    assert!(record.audience.optimize());
    assert!(record.audience.serialized_size() < plain / 2);
    {
        let node_a = factory.open();
        assert_eq!(
            accept(&*node_a, &record, 1, &rules()),
            PushAcceptance::Accepted
        );
    }
    let node_b = factory.open();
    let stored = node_b.push_record(APP, "runs").unwrap().unwrap();
    assert_eq!(stored.audience.len(), record.audience.len());
    assert!(stored.audience.iter().eq(record.audience.iter()));
    let since = node_b.pushes_since(APP, 0).unwrap();
    assert!(since[0].audience.iter().eq(record.audience.iter()));
    assert!(stored.audience.contains(299_999) && !stored.audience.contains(300_000));
}

pub fn acks_since_a_cursor_are_the_later_batches_in_order<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    assert_eq!(node_b.acks_since(APP, 0).unwrap(), (0, vec![]));
    node_a
        .append_acks(
            APP,
            &[("t1".into(), bitmap([1, 2])), ("t2".into(), bitmap([5]))],
        )
        .unwrap();
    node_a
        .append_acks(2, &[("t1".into(), bitmap([9]))])
        .unwrap();
    let (cursor, batches) = node_b.acks_since(APP, 0).unwrap();
    assert_eq!(
        batches,
        [
            ("t1".to_owned(), bitmap([1, 2])),
            ("t2".to_owned(), bitmap([5]))
        ]
    );
    assert_eq!(node_b.acks_since(APP, cursor).unwrap(), (cursor, vec![]));
    node_b.append_acks(APP, &[]).unwrap();
    node_b
        .append_acks(APP, &[("t1".into(), bitmap([2, 3]))])
        .unwrap();
    let (later, batches) = node_a.acks_since(APP, cursor).unwrap();
    assert_eq!(batches, [("t1".to_owned(), bitmap([2, 3]))]);
    assert_ne!(later, cursor);
    assert_eq!(node_a.acks_since(APP, later).unwrap(), (later, vec![]));
    let (_, everything) = node_a.acks_since(APP, 0).unwrap();
    assert_eq!(everything.len(), 3);
    let (_, other_app) = node_a.acks_since(2, 0).unwrap();
    assert_eq!(other_app, [("t1".to_owned(), bitmap([9]))]);
}

pub fn a_poller_of_acks_since_misses_no_batch_of_racing_nodes<F: StoreFactory>() {
    const WRITERS: usize = 3;
    const BATCHES: u32 = 20;
    let factory = F::create();
    let writing = std::sync::atomic::AtomicUsize::new(WRITERS);
    let seen = race(&factory, WRITERS + 1, |node, store| {
        if node < WRITERS {
            for batch in 0..BATCHES {
                let task_id = format!("n{node}-{batch}");
                store
                    .append_acks(APP, &[(task_id, bitmap([batch]))])
                    .unwrap();
            }
            writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Vec::new();
        }
        // The poller: what it reads while the others write, then what is left.
        let (mut cursor, mut seen) = (0, Vec::new());
        loop {
            let done = writing.load(std::sync::atomic::Ordering::SeqCst) == 0;
            let (next, batches) = store.acks_since(APP, cursor).unwrap();
            cursor = next;
            seen.extend(batches.into_iter().map(|(task_id, _)| task_id));
            if done {
                return seen;
            }
        }
    });
    let mut seen = seen.concat();
    let read = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((read, seen.len()), (WRITERS * BATCHES as usize, read));
    for node in 0..WRITERS {
        let own: Vec<&String> = seen
            .iter()
            .filter(|task_id| task_id.starts_with(&format!("n{node}-")))
            .collect();
        assert_eq!(own.len(), BATCHES as usize);
    }
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
    // A timpush push is kept a week longer, for its statistics, trace and revoke.
    let reported = PushRecord {
        kind: PushKind::Push,
        ..push(APP, "timpush", 5_000, 7)
    };
    accept(&*store, &reported, 7, &rules());
    let week = crate::store::TIMPUSH_REPORTED_AFTER_EXPIRY_MS;
    assert_eq!(
        store.purge_pushes(APP, 65_001 + week - 1, 5_001).unwrap(),
        0
    );
    assert_eq!(store.purge_pushes(APP, 65_001 + week, 5_001).unwrap(), 1);
    assert_eq!(task_ids(&*store, APP), ["new"]);
}

pub fn racing_nodes_never_accept_more_than_the_quota<F: StoreFactory>() {
    let factory = F::create();
    let two_a_day = PushRules {
        daily_quota: 2,
        ..rules()
    };
    let answers = race(&factory, 4, |node, store| {
        let record = push(APP, &format!("node{node}"), DAY + 1_000, node as u32);
        store
            .try_accept_push(&record, node as u64, &two_a_day, Some(&bitmap([1])))
            .unwrap()
    });
    let accepted = answers
        .iter()
        .filter(|answer| **answer == PushAcceptance::Accepted)
        .count();
    assert_eq!(accepted, 2, "{answers:?}");
    assert!(answers.iter().all(|answer| matches!(
        answer,
        PushAcceptance::Accepted | PushAcceptance::QuotaExceeded { quota: 2 }
    )));
    let store = factory.open();
    assert_eq!(task_ids(&*store, APP).len(), 2);
    assert_eq!(store.unfinished_jobs(APP).unwrap().len(), 2);
}

pub fn batches_are_outside_the_quota_and_the_interval_but_retries_hold<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let strict = PushRules {
        min_interval_ms: 5_000,
        daily_quota: 1,
        ..rules()
    };
    let batch = |task_id: &str, created_ms: u64, msg_random: u32| PushRecord {
        kind: PushKind::Batch,
        data_id: Some("order-1".into()),
        ..push(APP, task_id, created_ms, msg_random)
    };
    assert_eq!(
        accept(&*store, &batch("b1", DAY + 1_000, 1), 1, &strict),
        PushAcceptance::Accepted
    );
    // A batch neither uses the quota nor starts the interval...
    let first = PushRecord {
        kind: PushKind::Push,
        sched_task_id: Some(77),
        ..push(APP, "p1", DAY + 1_001, 2)
    };
    assert_eq!(
        accept(&*store, &first, 2, &strict),
        PushAcceptance::Accepted
    );
    // ...nor is refused by them.
    assert_eq!(
        accept(&*store, &batch("b2", DAY + 1_002, 3), 3, &strict),
        PushAcceptance::Accepted
    );
    assert_eq!(
        accept(&*store, &batch("b3", DAY + 1_500, 3), 3, &strict),
        PushAcceptance::Duplicate {
            task_id: "b2".into()
        },
        "a batch retried within the window"
    );
    assert_eq!(
        accept(&*store, &push(APP, "i1", DAY + 2_000, 4), 4, &strict),
        PushAcceptance::TooFrequent {
            last_created_ms: DAY + 1_001
        },
        "the interval runs from the last push that counts, not from a batch"
    );
    assert_eq!(
        store.push_counts(APP, DAY).unwrap(),
        PushCounts {
            since_count: 1,
            last_created_ms: Some(DAY + 1_001)
        }
    );
    let stored = store.push_record(APP, "b1").unwrap().unwrap();
    assert_eq!(
        (stored.kind, stored.data_id.as_deref()),
        (PushKind::Batch, Some("order-1"))
    );
    let stored = store.push_record(APP, "p1").unwrap().unwrap();
    assert_eq!(stored, first);
}

pub fn push_ids_since_name_the_recent_pushes_and_their_revokes<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert!(store.push_ids_since(APP, 0).unwrap().is_empty());
    // Accepted in this order, the later one with the earlier time: oldest first means first
    // accepted, as `pushes_since` reads them.
    for record in [
        push(APP, "b", DAY + 9_000, 2),
        push(APP, "a", DAY + 5_000, 1),
        push(APP, "c", DAY + 12_000, 3),
        push(2, "other", DAY + 9_000, 1),
    ] {
        assert_eq!(
            accept(&*store, &record, record.msg_random.into(), &rules()),
            PushAcceptance::Accepted
        );
    }
    store.revoke_push(APP, "c", DAY + 13_000, None).unwrap();
    let id = |task_id: &str, revoked| PushId {
        task_id: task_id.into(),
        revoked,
    };
    assert_eq!(
        store.push_ids_since(APP, DAY + 5_000).unwrap(),
        [id("b", false), id("a", false), id("c", true)]
    );
    assert_eq!(
        store.push_ids_since(APP, DAY + 5_001).unwrap(),
        [id("b", false), id("c", true)]
    );
    let since = |at| -> Vec<String> {
        store
            .pushes_since(APP, at)
            .unwrap()
            .into_iter()
            .map(|record| record.task_id)
            .collect()
    };
    for at in [0, DAY + 9_000, DAY + 12_001] {
        let ids: Vec<String> = store
            .push_ids_since(APP, at)
            .unwrap()
            .into_iter()
            .map(|pushed| pushed.task_id)
            .collect();
        assert_eq!(ids, since(at), "the pushes `pushes_since` reads, from {at}");
    }
    assert_eq!(store.push_ids_since(2, 0).unwrap(), [id("other", false)]);
}

pub fn a_revoked_push_reads_back_revoked_and_its_job_ends<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let record = PushRecord {
        kind: PushKind::Push,
        ..push(APP, "p1", DAY + 1_000, 1)
    };
    store
        .try_accept_push(&record, 1, &rules(), Some(&bitmap([1, 2, 3])))
        .unwrap();
    assert_eq!(
        store
            .claim_job(APP, "n1", DAY + 1_000, 1_000)
            .unwrap()
            .unwrap()
            .task_id,
        "p1"
    );
    assert_eq!(
        store
            .revoke_push(APP, "p1", DAY + 2_000, Some(r#"{"Title":"t"}"#))
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        store.revoke_push(APP, "p1", DAY + 3_000, None).unwrap(),
        RevokeOutcome::AlreadyRevoked { at_ms: DAY + 2_000 }
    );
    assert_eq!(
        store.revoke_push(APP, "nope", DAY + 3_000, None).unwrap(),
        RevokeOutcome::Unknown
    );
    assert_eq!(
        store.revoke_push(2, "p1", DAY + 3_000, None).unwrap(),
        RevokeOutcome::Unknown,
        "another app's"
    );
    let stored = store.push_record(APP, "p1").unwrap().unwrap();
    assert_eq!(stored.revoked_ms, Some(DAY + 2_000));
    assert_eq!(stored.revoke_info.as_deref(), Some(r#"{"Title":"t"}"#));
    assert_eq!(store.revoked_since(APP, DAY + 2_000).unwrap(), ["p1"]);
    assert!(store.revoked_since(APP, DAY + 2_001).unwrap().is_empty());
    assert!(store.revoked_since(2, 0).unwrap().is_empty());
    assert_eq!(
        store.pushes_since(APP, 0).unwrap()[0].revoked_ms,
        Some(DAY + 2_000)
    );
    // The node running the job stores its progress as usual, but the job stays done.
    store
        .update_job(
            APP,
            "p1",
            lease("n1", DAY + 2_500),
            progress(2, "{}", false),
        )
        .unwrap();
    assert!(store.job(APP, "p1").unwrap().unwrap().done);
    assert!(store
        .claim_job(APP, "n2", DAY + 9_000, 1_000)
        .unwrap()
        .is_none());
    assert!(store.unfinished_jobs(APP).unwrap().is_empty());
}
