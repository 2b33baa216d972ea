//! Marks of `timpush` pushes, and the overwrite of a revoked push's notifications.

use super::*;
use crate::store::{MarkStage, PushKind, PushMark, RevokeOutcome};

pub fn marks_read_back_per_push_in_order_and_go_with_the_push<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let record = PushRecord {
        kind: PushKind::Push,
        lifetime_secs: 0,
        ..push(APP, "p1", DAY + 1_000, 1)
    };
    accept(&*store, &record, 1, &rules());
    store
        .append_marks(
            APP,
            DAY + 2_000,
            &[
                ("p1".into(), MarkStage::Reached, bitmap([1, 2, 70_000])),
                ("other".into(), MarkStage::Reached, bitmap([9])),
            ],
        )
        .unwrap();
    store
        .append_marks(
            APP,
            DAY + 3_000,
            &[("p1".into(), MarkStage::Acked, bitmap([2]))],
        )
        .unwrap();
    store
        .append_marks(
            2,
            DAY + 3_000,
            &[("p1".into(), MarkStage::Acked, bitmap([1]))],
        )
        .unwrap();
    assert_eq!(
        store.push_marks(APP, "p1").unwrap(),
        [
            PushMark {
                stage: MarkStage::Reached,
                at_ms: DAY + 2_000,
                accounts: bitmap([1, 2, 70_000])
            },
            PushMark {
                stage: MarkStage::Acked,
                at_ms: DAY + 3_000,
                accounts: bitmap([2])
            },
        ]
    );
    assert!(store.push_marks(APP, "nope").unwrap().is_empty());
    store.append_marks(APP, DAY, &[]).unwrap();
    // Purged with the push (its lifetime ended, its day is over).
    store.purge_pushes(APP, DAY * 2, DAY * 2).unwrap();
    assert!(store.push_marks(APP, "p1").unwrap().is_empty());
}

pub fn a_revoke_overwrites_what_the_job_sent_once_its_run_lets_go<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let record = PushRecord {
        kind: PushKind::Push,
        ..push(APP, "p1", DAY + 1_000, 1)
    };
    let targets = bitmap([1, 2, 3, 4]);
    store
        .try_accept_push(&record, 1, &rules(), Some(&targets))
        .unwrap();
    // A push revoked without a job has nothing to overwrite.
    let bare = PushRecord {
        kind: PushKind::Push,
        ..push(APP, "p2", DAY + 1_000, 2)
    };
    accept(&*store, &bare, 2, &rules());
    store.revoke_push(APP, "p2", DAY + 1_500, None).unwrap();
    assert!(store.overwrite(APP, "p2").unwrap().is_none());

    store
        .claim_job(APP, "n1", DAY + 2_000, 1_000)
        .unwrap()
        .unwrap();
    store
        .update_job(
            APP,
            "p1",
            lease("n1", DAY + 2_100),
            progress(2, "{}", false),
        )
        .unwrap();
    assert_eq!(
        store
            .revoke_push(APP, "p1", DAY + 2_200, Some("{}"))
            .unwrap(),
        RevokeOutcome::Revoked
    );
    // n1's run still holds the job: nobody else takes the overwrite yet.
    assert!(store
        .claim_overwrite(APP, "n2", DAY + 2_300, 1_000)
        .unwrap()
        .is_none());
    // Its last batch moves the cursor; then the overwrite is n1's at once.
    store
        .update_job(APP, "p1", lease("n1", DAY + 2_400), progress(3, "{}", true))
        .unwrap();
    let overwrite = store
        .claim_overwrite(APP, "n1", DAY + 2_500, 1_000)
        .unwrap()
        .unwrap();
    assert_eq!(
        (overwrite.task_id.as_str(), overwrite.upto, overwrite.cursor),
        ("p1", 3, 0)
    );
    assert_eq!(overwrite.targets, targets);
    store
        .update_overwrite(
            APP,
            "p1",
            lease("n1", DAY + 2_600),
            progress(2, "{\"apns\":{}}", false),
        )
        .unwrap();
    // n1 stops (its lease runs out): n2 resumes at the stored cursor, and n1 is fenced off,
    // from the overwrite and from the job.
    let resumed = store
        .claim_overwrite(APP, "n2", DAY + 9_000, 1_000)
        .unwrap()
        .unwrap();
    assert_eq!((resumed.cursor, resumed.upto), (2, 3));
    assert_eq!(resumed.counts, "{\"apns\":{}}");
    assert!(matches!(
        store.update_overwrite(APP, "p1", lease("n1", DAY + 9_100), progress(3, "{}", true)),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.update_job(APP, "p1", lease("n1", DAY + 9_100), progress(4, "{}", true)),
        Err(StoreError::Conflict(_))
    ));
    store
        .update_overwrite(APP, "p1", lease("n2", DAY + 9_200), progress(3, "{}", true))
        .unwrap();
    assert!(store
        .claim_overwrite(APP, "n2", DAY + 99_000, 1_000)
        .unwrap()
        .is_none());
    let finished = store.overwrite(APP, "p1").unwrap().unwrap();
    assert_eq!((finished.cursor, finished.upto), (3, 3));
    // Reopened, it is still finished.
    drop(store);
    let store = factory.open();
    assert!(store
        .claim_overwrite(APP, "n3", DAY + 99_000, 1_000)
        .unwrap()
        .is_none());
    assert_eq!(store.overwrite(APP, "p1").unwrap().unwrap().cursor, 3);
}
