//! Conformance cases of the scheduled-task part ([`crate::store::sched`]).

use std::collections::BTreeSet;

use super::{accept, push, race, rules, StoreFactory, APP, DAY};
use crate::store::notify::Lease;
use crate::store::sched::{
    NewSchedTask, SchedChange, SchedKind, SchedOrder, SchedOutcome, SchedStatus, SchedTask,
};
use crate::store::{PushAcceptance, PushKind, Store};

const CONTENT: &str = r#"{"MsgRandom":7,"OfflinePushInfo":{"Title":"t","Desc":"d"}}"#;

fn add(store: &dyn Store, app: u64, created_ms: u64, sched_at_ms: u64) -> u64 {
    store
        .add_sched_task(&NewSchedTask {
            app,
            kind: SchedKind::Tag,
            created_ms,
            sched_at_ms,
            content: CONTENT,
            caller: "admin",
        })
        .unwrap()
}

fn lease(node: &str, now_ms: u64) -> Lease<'_> {
    Lease {
        node,
        now_ms,
        lease_ms: 1_000,
    }
}

fn claimed(store: &dyn Store, node: &str, now_ms: u64) -> Option<SchedTask> {
    store.claim_sched_task(APP, lease(node, now_ms)).unwrap()
}

fn status(store: &dyn Store, task_id: u64) -> SchedStatus {
    store.sched_task(APP, task_id).unwrap().unwrap().status
}

fn ids(tasks: &[SchedTask]) -> Vec<u64> {
    tasks.iter().map(|task| task.task_id).collect()
}

pub fn sched_task_ids_count_per_app_and_are_never_reused<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    assert_eq!(add(&*store, APP, DAY, DAY + 10_000), 1);
    assert_eq!(add(&*store, APP, DAY, DAY + 10_000), 2);
    assert_eq!(add(&*store, APP + 1, DAY, DAY + 10_000), 1, "per app");
    assert_eq!(store.delete_sched_task(APP, 2).unwrap(), SchedChange::Done);
    assert_eq!(
        add(&*store, APP, DAY, DAY + 10_000),
        3,
        "2 was deleted, not freed"
    );
    assert_eq!(store.sched_task(APP + 1, 2).unwrap(), None);
}

pub fn a_sched_task_reads_back_and_changes_only_while_pending<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let id = add(&*store, APP, DAY + 1, DAY + 5_000);
    assert_eq!(
        store.sched_task(APP, id).unwrap(),
        Some(SchedTask {
            app: APP,
            task_id: id,
            kind: SchedKind::Tag,
            created_ms: DAY + 1,
            sched_at_ms: DAY + 5_000,
            content: CONTENT.into(),
            caller: "admin".into(),
            status: SchedStatus::Pending,
            dispatch_err: String::new(),
            push_task_id: String::new(),
        })
    );
    assert_eq!(
        store.modify_sched_task(APP, id, DAY + 6_000, "{}").unwrap(),
        SchedChange::Done
    );
    let modified = store.sched_task(APP, id).unwrap().unwrap();
    assert_eq!(
        (modified.sched_at_ms, modified.content.as_str()),
        (DAY + 6_000, "{}")
    );
    assert_eq!(
        store.modify_sched_task(APP, 99, DAY, "{}").unwrap(),
        SchedChange::Unknown
    );
    assert_eq!(
        store.delete_sched_task(APP, 99).unwrap(),
        SchedChange::Unknown
    );

    let running = claimed(&*store, "a", DAY + 6_000).unwrap();
    assert_eq!(
        running.status,
        SchedStatus::Pending,
        "as it was before the claim"
    );
    assert_eq!(status(&*store, id), SchedStatus::Dispatching);
    let refused = SchedChange::NotPending(SchedStatus::Dispatching);
    assert_eq!(
        store.modify_sched_task(APP, id, DAY + 9_000, "[]").unwrap(),
        refused
    );
    assert_eq!(store.delete_sched_task(APP, id).unwrap(), refused);
    store
        .finish_sched_task(
            APP,
            id,
            "a",
            SchedOutcome::Dispatched { push_task_id: "p1" },
        )
        .unwrap();
    let done = store.sched_task(APP, id).unwrap().unwrap();
    assert_eq!(
        (
            done.status,
            done.push_task_id.as_str(),
            done.dispatch_err.as_str()
        ),
        (SchedStatus::Dispatched, "p1", "")
    );
    assert_eq!(done.content, "{}", "a refused change changed nothing");
    assert_eq!(
        store.delete_sched_task(APP, id).unwrap(),
        SchedChange::NotPending(SchedStatus::Dispatched)
    );

    let failing = add(&*store, APP, DAY, DAY + 7_000);
    claimed(&*store, "a", DAY + 7_000).unwrap();
    store
        .finish_sched_task(
            APP,
            failing,
            "a",
            SchedOutcome::Failed {
                error: "missed schedule",
            },
        )
        .unwrap();
    let failed = store.sched_task(APP, failing).unwrap().unwrap();
    assert_eq!(
        (
            failed.status,
            failed.dispatch_err.as_str(),
            failed.push_task_id.as_str()
        ),
        (SchedStatus::Failed, "missed schedule", "")
    );
}

pub fn due_sched_tasks_are_claimed_in_time_order<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let late = add(&*store, APP, DAY, DAY + 3_000);
    let early = add(&*store, APP, DAY, DAY + 2_000);
    let other_app = add(&*store, APP + 1, DAY, DAY + 1_000);
    assert_eq!(store.next_sched_at(APP).unwrap(), Some(DAY + 2_000));
    assert!(
        claimed(&*store, "a", DAY + 1_999).is_none(),
        "nothing due yet"
    );
    assert_eq!(claimed(&*store, "a", DAY + 5_000).unwrap().task_id, early);
    assert_eq!(claimed(&*store, "b", DAY + 5_000).unwrap().task_id, late);
    assert!(
        claimed(&*store, "c", DAY + 5_000).is_none(),
        "both are leased"
    );
    assert_eq!(
        store
            .claim_sched_task(APP + 1, lease("a", DAY + 5_000))
            .unwrap()
            .unwrap()
            .task_id,
        other_app
    );
    assert_eq!(
        store.next_sched_at(APP).unwrap(),
        Some(DAY + 6_000),
        "when the leases end"
    );
    store
        .finish_sched_task(
            APP,
            early,
            "a",
            SchedOutcome::Dispatched { push_task_id: "p" },
        )
        .unwrap();
    store
        .finish_sched_task(
            APP,
            late,
            "b",
            SchedOutcome::Dispatched { push_task_id: "q" },
        )
        .unwrap();
    assert_eq!(
        store.next_sched_at(APP).unwrap(),
        None,
        "nothing left to run"
    );
    assert!(
        claimed(&*store, "a", DAY + 100_000).is_none(),
        "finished tasks stay finished"
    );
}

pub fn of_racing_nodes_each_due_sched_task_is_claimed_once<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let added: BTreeSet<u64> = (0..12)
        .map(|n| add(&*store, APP, DAY, DAY + 1_000 + n))
        .collect();
    let runs = race(&factory, 4, |node, store| {
        let node = format!("node-{node}");
        let mut taken = Vec::new();
        while let Some(task) = store
            .claim_sched_task(APP, lease(&node, DAY + 60_000))
            .unwrap()
        {
            // A node may take its own leased task again: it records each run, as runners do.
            let ran = SchedOutcome::Dispatched { push_task_id: "p" };
            store
                .finish_sched_task(APP, task.task_id, &node, ran)
                .unwrap();
            taken.push(task.task_id);
        }
        taken
    });
    let taken: Vec<u64> = runs.into_iter().flatten().collect();
    assert_eq!(taken.len(), added.len(), "no task twice: {taken:?}");
    assert_eq!(taken.into_iter().collect::<BTreeSet<_>>(), added);
}

pub fn an_expired_sched_lease_passes_to_another_node_which_sees_the_push<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let id = add(&*store, APP, DAY, DAY + 1_000);
    claimed(&*store, "a", DAY + 1_000).unwrap();
    assert!(claimed(&*store, "b", DAY + 1_999).is_none(), "a holds it");
    assert_eq!(store.sched_task_push(APP, id).unwrap(), None);
    // Node a pushed, then died before recording it.
    let mut record = push(APP, "scheduled-run", DAY + 1_500, 7);
    record.kind = PushKind::Push;
    record.sched_task_id = Some(id);
    assert_eq!(
        accept(&*store, &record, 1, &rules()),
        PushAcceptance::Accepted
    );
    let again = claimed(&*store, "b", DAY + 2_000).unwrap();
    assert_eq!(
        (again.task_id, again.status),
        (id, SchedStatus::Dispatching)
    );
    assert_eq!(
        store.sched_task_push(APP, id).unwrap().as_deref(),
        Some("scheduled-run")
    );
    assert_eq!(store.sched_task_push(APP + 1, id).unwrap(), None, "per app");
    let late = SchedOutcome::Dispatched { push_task_id: "x" };
    assert!(
        matches!(
            store.finish_sched_task(APP, id, "a", late),
            Err(crate::store::StoreError::Conflict(_))
        ),
        "a lost its lease"
    );
    store
        .finish_sched_task(
            APP,
            id,
            "b",
            SchedOutcome::Dispatched {
                push_task_id: "scheduled-run",
            },
        )
        .unwrap();
    assert_eq!(
        store.sched_task(APP, id).unwrap().unwrap().push_task_id,
        "scheduled-run"
    );
}

pub fn a_released_sched_task_is_claimed_again_at_once<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    let id = add(&*store, APP, DAY, DAY + 1_000);
    claimed(&*store, "a", DAY + 1_000).unwrap();
    store.release_sched_task(APP, id, "b").unwrap();
    assert!(
        claimed(&*store, "b", DAY + 1_100).is_none(),
        "only the holder releases"
    );
    store.release_sched_task(APP, id, "a").unwrap();
    let again = claimed(&*store, "b", DAY + 1_100).unwrap();
    assert_eq!(
        (again.task_id, again.status),
        (id, SchedStatus::Dispatching)
    );
}

pub fn sched_tasks_are_listed_by_either_time_within_a_window<F: StoreFactory>() {
    let factory = F::create();
    let store = factory.open();
    // (created, scheduled): the orders of the two times differ.
    let first = add(&*store, APP, DAY + 100, DAY + 9_000);
    let second = add(&*store, APP, DAY + 200, DAY + 8_000);
    let third = add(&*store, APP, DAY + 200, DAY + 8_000);
    add(&*store, APP + 1, DAY + 150, DAY + 8_500);
    let by_creation = store
        .sched_tasks_between(APP, SchedOrder::CreatedAt, DAY, DAY + 1_000)
        .unwrap();
    assert_eq!(ids(&by_creation), [first, second, third], "ties by id");
    let by_time = store
        .sched_tasks_between(APP, SchedOrder::SchedAt, DAY + 8_000, DAY + 9_000)
        .unwrap();
    assert_eq!(ids(&by_time), [second, third, first], "both ends included");
    let narrow = store
        .sched_tasks_between(APP, SchedOrder::SchedAt, DAY + 8_001, DAY + 9_000)
        .unwrap();
    assert_eq!(ids(&narrow), [first]);
    assert_eq!(by_time[2].content, CONTENT);
}

pub fn sched_tasks_survive_a_reopen<F: StoreFactory>() {
    let factory = F::create();
    let (pending, running) = {
        let store = factory.open();
        let pending = add(&*store, APP, DAY, DAY + 60_000);
        let running = add(&*store, APP, DAY, DAY + 1_000);
        claimed(&*store, "a", DAY + 1_000).unwrap();
        store.flush().unwrap();
        (pending, running)
    };
    let store = factory.open();
    assert_eq!(status(&*store, pending), SchedStatus::Pending);
    assert_eq!(status(&*store, running), SchedStatus::Dispatching);
    assert!(
        claimed(&*store, "b", DAY + 1_500).is_none(),
        "the lease is stored"
    );
    assert_eq!(add(&*store, APP, DAY, DAY + 1), 3, "so is the last id");
}
