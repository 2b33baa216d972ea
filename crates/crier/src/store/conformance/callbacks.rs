//! The delivery callback queue: batching, leases shared by nodes, retries, durability.

use super::*;
use crate::store::callbacks::{CallbackClaim, Claimed, QueuedCallback};

fn events(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("{{\"n\":{n}}}")).collect()
}

fn claim(store: &dyn Store, node: &str, now_ms: u64, max: usize) -> Claimed {
    let terms = CallbackClaim {
        node,
        now_ms,
        lease_ms: 1_000,
        max,
    };
    store.claim_callbacks(APP, terms).unwrap()
}

/// The claimed events, or a panic naming what the claim found instead.
fn claimed(found: Claimed) -> Vec<QueuedCallback> {
    match found {
        Claimed::Batch(batch) => batch,
        other => panic!("expected a batch, found {other:?}"),
    }
}

fn texts(batch: &[QueuedCallback]) -> Vec<String> {
    batch.iter().map(|event| event.event.clone()).collect()
}

fn ids(batch: &[QueuedCallback]) -> Vec<u64> {
    batch.iter().map(|event| event.id).collect()
}

pub fn callbacks_are_claimed_when_a_request_is_full_or_the_oldest_is_due<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert_eq!(
        claim(&*store, "a", 1_000, 5),
        Claimed::Wait { until_ms: None },
        "an empty queue"
    );
    store
        .enqueue_callbacks(APP, &events(0..3), 1_000, 2_000)
        .unwrap();
    store
        .enqueue_callbacks(2, &events(50..60), 1_000, 2_000)
        .unwrap();
    assert_eq!(
        claim(&*store, "a", 1_500, 5),
        Claimed::Wait {
            until_ms: Some(2_000)
        },
        "three of five, the oldest due at 2,000"
    );
    let batch = claimed(claim(&*store, "a", 2_000, 5));
    assert_eq!(texts(&batch), events(0..3), "in order, this app's only");
    assert!(batch.iter().all(|event| event.attempts == 0));
    store
        .enqueue_callbacks(APP, &events(3..10), 2_100, 3_100)
        .unwrap();
    let full = claimed(claim(&*store, "a", 2_100, 5));
    assert_eq!(texts(&full), events(3..8), "a full request goes at once");
    assert_eq!(
        claim(&*store, "a", 2_200, 5),
        Claimed::Wait {
            until_ms: Some(3_000)
        },
        "two ready until 3,100; the first lease ends at 3,000"
    );
    assert_eq!(store.callback_queue_depth(APP).unwrap(), 10);
    assert_eq!(store.callback_queue_depth(2).unwrap(), 10);
    store.delete_callbacks(APP, &ids(&batch)).unwrap();
    store.delete_callbacks(APP, &ids(&full)).unwrap();
    assert_eq!(store.callback_queue_depth(APP).unwrap(), 2);
    assert_eq!(
        texts(&claimed(claim(&*store, "a", 3_100, 5))),
        events(8..10)
    );
}

pub fn two_nodes_never_hold_one_callback_and_a_dead_nodes_pass_on<F: StoreFactory>() {
    let factory = F::create();
    let (node_a, node_b) = (factory.open(), factory.open());
    node_a
        .enqueue_callbacks(APP, &events(0..4), 1_000, 1_000)
        .unwrap();
    let held = claimed(claim(&*node_a, "a", 1_000, 3));
    assert_eq!(texts(&held), events(0..3));
    let sent_by_b = claimed(claim(&*node_b, "b", 1_100, 3));
    assert_eq!(texts(&sent_by_b), events(3..4));
    node_b.delete_callbacks(APP, &ids(&sent_by_b)).unwrap();
    assert_eq!(
        claim(&*node_b, "b", 1_200, 3),
        Claimed::Wait {
            until_ms: Some(2_000)
        },
        "the rest is leased until 2,000"
    );
    // Node a died: at the end of its lease its events go to b, attempts unchanged.
    let taken = claimed(claim(&*node_b, "b", 2_000, 3));
    assert_eq!(ids(&taken), ids(&held));
    // A late retry by a changes nothing; b's does.
    node_a
        .retry_callbacks(APP, "a", &ids(&held), 2_500)
        .unwrap();
    assert!(matches!(
        claim(&*node_a, "a", 2_600, 3),
        Claimed::Wait { .. }
    ));
    node_b
        .retry_callbacks(APP, "b", &ids(&taken), 2_500)
        .unwrap();
    let again = claimed(claim(&*node_a, "a", 2_600, 3));
    assert_eq!(ids(&again), ids(&held));
    assert!(again.iter().all(|event| event.attempts == 1));
}

pub fn a_failed_callback_waits_out_its_back_off_with_one_more_attempt<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    store
        .enqueue_callbacks(APP, &events(0..2), 1_000, 1_000)
        .unwrap();
    let first = claimed(claim(&*store, "a", 1_000, 10));
    store
        .retry_callbacks(APP, "a", &ids(&first[..1]), 6_000)
        .unwrap();
    store.delete_callbacks(APP, &ids(&first[1..])).unwrap();
    assert_eq!(
        claim(&*store, "a", 5_999, 10),
        Claimed::Wait {
            until_ms: Some(6_000)
        }
    );
    let retried = claimed(claim(&*store, "a", 6_000, 10));
    assert_eq!(texts(&retried), events(0..1));
    assert_eq!(retried[0].attempts, 1, "due at once at its retry time");
    store
        .retry_callbacks(APP, "a", &ids(&retried), 7_000)
        .unwrap();
    store
        .enqueue_callbacks(APP, &events(5..6), 6_500, 7_500)
        .unwrap();
    let mixed = claimed(claim(&*store, "a", 7_000, 10));
    assert_eq!(
        texts(&mixed),
        [events(0..1), events(5..6)].concat(),
        "the retry's deadline comes first and the new event rides along"
    );
    assert_eq!(mixed.iter().map(|e| e.attempts).collect::<Vec<_>>(), [2, 0]);
    store.delete_callbacks(APP, &ids(&mixed)).unwrap();
    assert_eq!(store.callback_queue_depth(APP).unwrap(), 0);
}

pub fn released_callbacks_are_claimable_at_once<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    store
        .enqueue_callbacks(APP, &events(0..4), 1_000, 1_000)
        .unwrap();
    let by_a = claimed(claim(&*store, "a", 1_000, 2));
    let by_b = claimed(claim(&*store, "b", 1_000, 2));
    assert_eq!(store.release_callbacks(APP, Some("a")).unwrap(), 2);
    assert_eq!(ids(&claimed(claim(&*store, "c", 1_001, 4))), ids(&by_a));
    assert_eq!(store.release_callbacks(APP, None).unwrap(), 4);
    let all = claimed(claim(&*store, "d", 1_002, 4));
    assert_eq!(all.len(), 4);
    assert!(ids(&all).starts_with(&ids(&by_a)) && ids(&all).ends_with(&ids(&by_b)));
}

pub fn of_racing_callback_claims_each_event_goes_to_one_node<F: StoreFactory>() {
    let factory = F::create();
    factory
        .open()
        .enqueue_callbacks(APP, &events(0..40), 1_000, 1_000)
        .unwrap();
    let claims = race(&factory, 4, |node, store| {
        let mut mine = Vec::new();
        let name = format!("n{node}");
        while let Claimed::Batch(batch) = claim(store, &name, 1_000, 7) {
            mine.extend(ids(&batch));
        }
        mine
    });
    let mut all: Vec<u64> = claims.into_iter().flatten().collect();
    let claimed_count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((claimed_count, all.len()), (40, 40), "each once, none lost");
}

pub fn queued_callbacks_survive_a_reopen<F: StoreFactory>() {
    let factory = F::create();
    {
        let store = factory.open();
        store
            .enqueue_callbacks(APP, &events(0..3), 1_000, 2_000)
            .unwrap();
        let first = claimed(claim(&*store, "a", 2_000, 1));
        store
            .retry_callbacks(APP, "a", &ids(&first), 3_000)
            .unwrap();
        claimed(claim(&*store, "a", 2_000, 1));
        store.flush().unwrap();
    }
    let store = factory.open();
    assert_eq!(store.callback_queue_depth(APP).unwrap(), 3);
    let left = claimed(claim(&*store, "b", 2_000, 10));
    assert_eq!(texts(&left), events(2..3), "one leased, one backing off");
    store.release_callbacks(APP, None).unwrap();
    let all = claimed(claim(&*store, "b", 3_000, 10));
    assert_eq!(
        texts(&all),
        [events(1..3), events(0..1)].concat(),
        "earliest deadline first: the retry's is the latest"
    );
    assert_eq!(
        all.iter().map(|e| e.attempts).collect::<Vec<_>>(),
        [0, 0, 1]
    );
}
