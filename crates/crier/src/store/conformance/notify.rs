//! Devices, and notification jobs under a lease shared by nodes.

use super::*;
use crate::store::notify::StoredDevice;

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

pub fn of_racing_claims_exactly_one_wins<F: StoreFactory>() {
    let factory = F::create();
    push_with_job(&*factory.open(), APP, "j1", 1_000, &bitmap([1]));
    let claims = race(&factory, 4, |node, store| {
        let claimed = store.claim_job(APP, &format!("node{node}"), 10_000, 1_000);
        claimed.unwrap().map(|job| job.task_id)
    });
    let winners: Vec<usize> = (0..4).filter(|&node| claims[node].is_some()).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let store = factory.open();
    let winner = format!("node{}", winners[0]);
    store
        .update_job(APP, "j1", lease(&winner, 10_100), progress(1, "{}", false))
        .unwrap();
}
