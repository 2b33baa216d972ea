//! The directory log: dense seqs, compare-and-append, reads after a seq, snapshots and the
//! horizon they keep.

use super::*;

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

pub fn every_kind_of_directory_write_reads_back_as_written<F: StoreFactory>() {
    use crate::directory::{AccountKind, UserAttrSlots, UserAttrValues, UserTags};
    let factory = F::create();
    let store = factory.open();
    let user_tags = vec![UserTags {
        account: "a".into(),
        tags: vec!["gold".into(), "标签 \"q\"".into()],
    }];
    let written = vec![
        import("a"),
        DirOp::AddTags {
            users: user_tags.clone(),
        },
        DirOp::RemoveTags { users: user_tags },
        DirOp::RemoveAllTags {
            accounts: vec!["a".into()],
        },
        DirOp::SetAttrNames {
            names: vec![(0, "city".into()), (9, "model".into())],
        },
        DirOp::SetAttrKinds {
            kinds: vec![(9, AccountKind::RegistrationId), (0, AccountKind::UserId)],
        },
        DirOp::SetAttrs {
            users: vec![UserAttrValues {
                account: "a".into(),
                values: vec![(0, "Shenzhen".into())],
            }],
        },
        DirOp::RemoveAttrs {
            users: vec![UserAttrSlots {
                account: "a".into(),
                slots: vec![0, 9],
            }],
        },
        DirOp::Delete {
            accounts: vec!["a".into()],
        },
    ];
    store.append_dir_ops(APP, 0, &written).unwrap();
    let read: Vec<DirOp> = ops(&*factory.open(), APP, 0)
        .unwrap()
        .into_iter()
        .map(|(_, op)| op)
        .collect();
    assert_eq!(read, written);
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

pub fn of_racing_appends_at_one_head_exactly_one_lands<F: StoreFactory>() {
    let factory = F::create();
    factory
        .open()
        .append_dir_ops(APP, 0, &[import("first")])
        .unwrap();
    let appended = race(&factory, 4, |node, store| {
        store.append_dir_ops(APP, 1, &[import(&format!("node{node}")), import("more")])
    });
    let landed: Vec<usize> = (0..4).filter(|&node| appended[node].is_ok()).collect();
    assert_eq!(landed.len(), 1, "{appended:?}");
    assert!(appended
        .iter()
        .all(|answer| matches!(answer, Ok(3) | Err(StoreError::Conflict(_)))));
    let store = factory.open();
    assert_eq!(
        ops(&*store, APP, 1).unwrap(),
        [
            (2, import(&format!("node{}", landed[0]))),
            (3, import("more"))
        ]
    );
}
