use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn tags(account: &str, tags: &[&str]) -> UserTags {
    UserTags {
        account: account.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn import(names: &[&str]) -> DirOp {
    DirOp::Import {
        accounts: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn names(directory: &Directory, audience: &RoaringBitmap) -> BTreeSet<String> {
    audience
        .iter()
        .map(|id| directory.account_name(id).unwrap().to_owned())
        .collect()
}

#[test]
fn tag_conditions_follow_tencents_rules() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b", "c", "d"]));
    d.apply(&DirOp::AddTags {
        users: vec![
            tags("a", &["x", "y"]),
            tags("b", &["x"]),
            tags("c", &["y", "z"]),
            tags("ghost", &["x"]),
        ],
    });
    let run = |and: &[&str], or: &[&str]| {
        let c = Condition::Tags {
            and: and.iter().map(|t| t.to_string()).collect(),
            or: or.iter().map(|t| t.to_string()).collect(),
            not: Vec::new(),
        };
        names(&d, &d.audience(&c)).into_iter().collect::<Vec<_>>()
    };
    assert_eq!(run(&["x", "y"], &[]), ["a"]);
    assert_eq!(run(&[], &["x", "z"]), ["a", "b", "c"]);
    assert_eq!(run(&["y"], &["x", "nobody"]), ["a"]);
    assert_eq!(run(&["x", "nobody"], &[]), Vec::<String>::new());
    assert_eq!(
        names(&d, &d.audience(&Condition::All)).len(),
        4,
        "ghost is tagged but never imported"
    );
}

#[test]
fn tags_not_leaves_out_holders_of_any_listed_tag() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b", "c", "d"]));
    d.apply(&DirOp::AddTags {
        users: vec![
            tags("a", &["x", "y"]),
            tags("b", &["x", "z"]),
            tags("c", &["y"]),
        ],
    });
    let run = |or: &[&str], not: &[&str]| {
        let c = Condition::Tags {
            and: Vec::new(),
            or: or.iter().map(|t| t.to_string()).collect(),
            not: not.iter().map(|t| t.to_string()).collect(),
        };
        names(&d, &d.audience(&c)).into_iter().collect::<Vec<_>>()
    };
    // Not (y or z), as the spec decides, rather than not (y and z).
    assert_eq!(run(&["x"], &["y", "z"]), Vec::<String>::new());
    assert_eq!(run(&["x"], &["y"]), ["b"]);
    // Alone: everybody but the holders.
    assert_eq!(run(&[], &["x"]), ["c", "d"]);
    assert_eq!(run(&[], &["nobody"]), ["a", "b", "c", "d"]);
}

#[test]
fn deleting_an_account_drops_it_everywhere() {
    let mut d = Directory::default();
    d.apply(&import(&["a"]));
    d.apply(&DirOp::SetAttrNames {
        names: vec![(0, "city".into())],
    });
    d.apply(&DirOp::AddTags {
        users: vec![tags("a", &["x"])],
    });
    d.apply(&DirOp::SetAttrs {
        users: vec![UserAttrValues {
            account: "a".into(),
            values: vec![(0, "sz".into())],
        }],
    });
    d.apply(&DirOp::Delete {
        accounts: vec!["a".into()],
    });
    assert!(!d.is_live("a"));
    assert!(d.tags_of("a").is_empty());
    assert!(d.attrs_of("a").is_empty());
    assert_eq!(d.tag_count("a"), 0);
}

#[test]
fn an_account_created_again_after_a_delete_is_a_new_account() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b"]));
    let before = d.audience(&Condition::All);
    d.apply(&DirOp::Delete {
        accounts: vec!["a".into()],
    });
    d.apply(&DirOp::AddTags {
        users: vec![tags("a", &["x"])],
    });
    d.apply(&import(&["a"]));
    let again = d.account_number("a").unwrap();
    assert!(
        !before.contains(again),
        "an old audience must not hold the new account"
    );
    let mut bytes = Vec::new();
    snapshot::write(&d, &mut bytes).unwrap();
    let mut loaded = snapshot::read(&mut bytes.as_slice(), |_, _| {}).unwrap();
    assert_eq!(loaded.account_number("a"), Some(again));
    assert_eq!(loaded.tags_of("a"), ["x"]);
    // Retired numbers stay retired across the snapshot: deleting again retires this one too.
    loaded.apply(&DirOp::Delete {
        accounts: vec!["a".into()],
    });
    loaded.apply(&import(&["a"]));
    assert!(loaded.account_number("a").unwrap() > again);
    assert_eq!(names(&loaded, &loaded.audience(&Condition::All)).len(), 2);
}

#[test]
fn an_attribute_holds_one_value_per_account() {
    let mut d = Directory::default();
    d.apply(&import(&["a"]));
    let set = |v: &str| DirOp::SetAttrs {
        users: vec![UserAttrValues {
            account: "a".into(),
            values: vec![(1, v.into())],
        }],
    };
    d.apply(&set("sz"));
    d.apply(&set("bj"));
    assert_eq!(d.attrs_of("a"), BTreeMap::from([(1, "bj".to_string())]));
    let in_sz = Condition::Attrs {
        and: vec![(1, "sz".into())],
        or: vec![],
    };
    assert!(d.audience(&in_sz).is_empty());
}

#[test]
fn replacing_a_value_finds_the_old_one_in_any_order_and_after_a_snapshot() {
    let set = |account: &str, v: &str| DirOp::SetAttrs {
        users: vec![UserAttrValues {
            account: account.into(),
            values: vec![(3, v.into())],
        }],
    };
    let mut d = Directory::default();
    d.apply(&import(&["a", "b", "c"]));
    // "c" (number 2) gets its value first, so "a" and "b" are below the slot's bound.
    d.apply(&set("c", "x"));
    d.apply(&set("a", "x"));
    d.apply(&set("b", "y"));
    d.apply(&set("a", "y"));
    let mut bytes = Vec::new();
    snapshot::write(&d, &mut bytes).unwrap();
    let mut loaded = snapshot::read(&mut bytes.as_slice(), |_, _| {}).unwrap();
    for d in [&mut d, &mut loaded] {
        d.apply(&set("c", "z"));
        d.apply(&set("b", "y"));
        let holders = |v: &str| {
            let c = Condition::Attrs {
                and: vec![(3, v.into())],
                or: vec![],
            };
            names(d, &d.audience(&c))
        };
        assert!(holders("x").is_empty());
        assert_eq!(
            holders("y"),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
        assert_eq!(holders("z"), BTreeSet::from(["c".to_string()]));
    }
}

#[test]
fn tag_counts_track_adds_and_removes() {
    let mut d = Directory::default();
    d.apply(&DirOp::AddTags {
        users: vec![tags("a", &["x", "y", "x"])],
    });
    assert_eq!(d.tag_count("a"), 2);
    d.apply(&DirOp::RemoveTags {
        users: vec![tags("a", &["x", "q"])],
    });
    assert_eq!(d.tag_count("a"), 1);
    d.apply(&DirOp::RemoveAllTags {
        accounts: vec!["a".into()],
    });
    assert_eq!(d.tag_count("a"), 0);
}

#[test]
fn a_copy_for_a_snapshot_counts_tags_past_255_and_past_one_container() {
    let names: Vec<String> = (0..70_000).map(|n| format!("u{n}")).collect();
    let mut d = Directory::default();
    d.apply(&import(
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let many: Vec<String> = (0..300).map(|n| format!("t{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    d.apply(&DirOp::AddTags {
        users: vec![
            tags("u0", &many),
            tags("u65535", &many[..3]),
            tags("u65536", &many[..4]),
            tags("u69999", &many[..1]),
        ],
    });
    assert!(a_copy_writes_the_same_snapshot(&d));
}

#[test]
fn an_accounts_tags_are_read_from_its_own_list_not_from_every_tag() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b"]));
    // Many tags of other accounts, numbered before and after a's.
    for n in 0..2_000 {
        d.apply(&DirOp::AddTags {
            users: vec![tags(&format!("other{}", n % 50), &[&format!("noise{n}")])],
        });
        if n == 1_000 {
            d.apply(&DirOp::AddTags {
                users: vec![tags("a", &["y", "x"])],
            });
        }
    }
    // Empty every bitmap behind the directory's back: what is left to answer is a's list.
    let bitmaps: Vec<MemberSet> = d.tags.iter().map(|(_, m)| m.clone()).collect();
    for (_, members) in &mut d.tags {
        *members = MemberSet::default();
    }
    assert_eq!(d.tags_of("a"), ["y", "x"], "tags in order of first use");
    assert_eq!(d.tag_count("a"), 2);
    assert!(d.tags_of("b").is_empty());
    // Clearing a's tags reaches a's two bitmaps and no others.
    for (n, members) in bitmaps.into_iter().enumerate() {
        d.tags[n].1 = members;
    }
    let cleared = d.tags.iter().filter(|(_, m)| m.contains(0)).count();
    assert_eq!(cleared, 2);
    d.apply(&DirOp::RemoveAllTags {
        accounts: vec!["a".into()],
    });
    assert!(d.tags.iter().all(|(_, m)| !m.contains(0)));
    assert_eq!(d.tag_count("a"), 0);
}

/// A user of the reference model: plain sets, no bitmaps.
#[derive(Debug, Clone, Default)]
struct PlainUser {
    live: bool,
    tags: BTreeSet<String>,
    attrs: BTreeMap<u8, String>,
}

fn reference_audience(
    users: &BTreeMap<String, PlainUser>,
    condition: &Condition,
) -> BTreeSet<String> {
    let matches = |user: &PlainUser| match condition {
        Condition::All => true,
        Condition::Tags { and, or, not } => {
            and.iter().all(|t| user.tags.contains(t))
                && (or.is_empty() || or.iter().any(|t| user.tags.contains(t)))
                && !not.iter().any(|t| user.tags.contains(t))
        }
        Condition::Attrs { and, or } => {
            let has = |(slot, v): &(u8, String)| user.attrs.get(slot) == Some(v);
            and.iter().all(has) && (or.is_empty() || or.iter().any(has))
        }
    };
    users
        .iter()
        .filter(|(_, u)| u.live && matches(u))
        .map(|(name, _)| name.clone())
        .collect()
}

fn arb_op() -> impl Strategy<Value = DirOp> {
    let account = "u[0-9]{1,2}";
    let tag = "t[0-9]";
    let value = "v[0-3]";
    prop_oneof![
        prop::collection::vec(account, 1..5).prop_map(|accounts| DirOp::Import { accounts }),
        // Accounts and tags seldom named twice, among the ones named often.
        prop::collection::vec(
            ("w[0-9]{4}", prop::collection::vec("t[0-9]|s[0-9]{3}", 1..4)),
            1..3
        )
        .prop_map(|users| DirOp::AddTags {
            users: users
                .into_iter()
                .map(|(account, tags)| UserTags { account, tags })
                .collect()
        }),
        prop::collection::vec(account, 1..2).prop_map(|accounts| DirOp::Delete { accounts }),
        prop::collection::vec((account, prop::collection::vec(tag, 1..5)), 1..5).prop_map(
            |users| DirOp::AddTags {
                users: users
                    .into_iter()
                    .map(|(account, tags)| UserTags { account, tags })
                    .collect()
            }
        ),
        prop::collection::vec((account, prop::collection::vec(tag, 1..3)), 1..3).prop_map(
            |users| DirOp::RemoveTags {
                users: users
                    .into_iter()
                    .map(|(account, tags)| UserTags { account, tags })
                    .collect()
            }
        ),
        prop::collection::vec(account, 1..2).prop_map(|accounts| DirOp::RemoveAllTags { accounts }),
        prop::collection::vec(
            (account, prop::collection::vec((0u8..3, value), 1..3)),
            1..5
        )
        .prop_map(|users| DirOp::SetAttrs {
            users: users
                .into_iter()
                .map(|(account, values)| UserAttrValues { account, values })
                .collect()
        }),
        prop::collection::vec((account, prop::collection::vec(0u8..3, 1..2)), 1..2).prop_map(
            |users| DirOp::RemoveAttrs {
                users: users
                    .into_iter()
                    .map(|(account, slots)| UserAttrSlots { account, slots })
                    .collect()
            }
        ),
    ]
}

fn arb_condition() -> impl Strategy<Value = Condition> {
    let tags = prop::collection::vec("t[0-9]", 0..4);
    let pairs = prop::collection::vec((0u8..3, "v[0-3]"), 0..4);
    prop_oneof![
        Just(Condition::All),
        (tags.clone(), tags.clone(), tags).prop_map(|(and, or, not)| Condition::Tags {
            and,
            or,
            not
        }),
        (pairs.clone(), pairs).prop_map(|(and, or)| Condition::Attrs { and, or }),
    ]
}

fn apply_plain(users: &mut BTreeMap<String, PlainUser>, op: &DirOp) {
    match op {
        DirOp::Import { accounts } => accounts
            .iter()
            .for_each(|a| users.entry(a.clone()).or_default().live = true),
        DirOp::Delete { accounts } => {
            for a in accounts {
                if let Some(u) = users.get_mut(a) {
                    *u = PlainUser::default();
                }
            }
        }
        DirOp::AddTags { users: list } => list.iter().for_each(|u| {
            users
                .entry(u.account.clone())
                .or_default()
                .tags
                .extend(u.tags.iter().cloned())
        }),
        DirOp::RemoveTags { users: list } => {
            for u in list {
                if let Some(plain) = users.get_mut(&u.account) {
                    u.tags.iter().for_each(|t| {
                        plain.tags.remove(t);
                    });
                }
            }
        }
        DirOp::RemoveAllTags { accounts } => accounts.iter().for_each(|a| {
            if let Some(u) = users.get_mut(a) {
                u.tags.clear();
            }
        }),
        DirOp::SetAttrs { users: list } => list.iter().for_each(|u| {
            users
                .entry(u.account.clone())
                .or_default()
                .attrs
                .extend(u.values.iter().cloned())
        }),
        DirOp::RemoveAttrs { users: list } => {
            for u in list {
                if let Some(plain) = users.get_mut(&u.account) {
                    u.slots.iter().for_each(|s| {
                        plain.attrs.remove(s);
                    });
                }
            }
        }
        DirOp::SetAttrNames { .. } | DirOp::SetAttrKinds { .. } => {}
    }
}

/// Tags in the order the app first named them in a tag write: the order `tags_of` answers in.
fn first_use_order(ops: &[DirOp]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for op in ops {
        if let DirOp::AddTags { users } = op {
            for tag in users.iter().flat_map(|u| &u.tags) {
                if !order.contains(tag) {
                    order.push(tag.clone());
                }
            }
        }
    }
    order
}

fn reload(directory: &Directory) -> Directory {
    let mut bytes = Vec::new();
    snapshot::write(directory, &mut bytes).unwrap();
    snapshot::read(&mut bytes.as_slice(), |_, _| {}).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn audience_equals_a_plain_filter(ops in prop::collection::vec(arb_op(), 0..40), reloads in prop::collection::btree_set(0usize..40, 0..3), conditions in prop::collection::vec(arb_condition(), 1..8)) {
        let mut directory = Directory::default();
        let mut plain = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            // A restart between writes: the tag lists are rebuilt from the snapshot's bitmaps,
            // and later writes must keep them in step.
            if reloads.contains(&n) {
                directory = reload(&directory);
            }
            directory.apply(op);
            apply_plain(&mut plain, op);
        }
        for condition in &conditions {
            prop_assert_eq!(names(&directory, &directory.audience(condition)), reference_audience(&plain, condition), "{:?}", condition);
        }
        let order = first_use_order(&ops);
        for (name, user) in &plain {
            let expected: Vec<String> = order.iter().filter(|t| user.tags.contains(*t)).cloned().collect();
            prop_assert_eq!(directory.tags_of(name), expected);
            prop_assert_eq!(directory.tag_count(name), user.tags.len());
            prop_assert_eq!(directory.attrs_of(name), user.attrs.clone());
        }
        // Every tag's bitmap holds exactly the accounts whose lists name it.
        for (tag, members) in &directory.tags {
            let holders: BTreeSet<String> = plain.iter().filter(|(_, u)| u.tags.contains(&**tag)).map(|(n, _)| n.clone()).collect();
            let numbered: BTreeSet<String> = members.to_bitmap().iter().map(|id| directory.account_name(id).unwrap().to_owned()).collect();
            prop_assert_eq!(numbered, holders, "tag {}", tag);
        }
    }

    #[test]
    fn a_snapshot_reads_back_the_same_directory(ops in prop::collection::vec(arb_op(), 0..40), condition in arb_condition()) {
        let mut directory = Directory::default();
        directory.apply(&DirOp::SetAttrNames { names: vec![(0, "sex".into()), (2, "city".into())] });
        directory.apply(&DirOp::SetAttrKinds { kinds: vec![(2, AccountKind::RegistrationId)] });
        ops.iter().for_each(|op| directory.apply(op));
        let loaded = reload(&directory);
        prop_assert_eq!(loaded.audience(&condition), directory.audience(&condition));
        prop_assert_eq!(loaded.attr_names(), directory.attr_names());
        prop_assert_eq!(loaded.attr_kinds(), directory.attr_kinds());
        prop_assert_eq!(loaded.live(), directory.live());
        for id in 0..directory.stats().accounts as u32 {
            let name = directory.account_name(id).unwrap();
            // A deleted account's name is unbound from its retired number, in both.
            prop_assert_eq!(loaded.account_number(name), directory.account_number(name));
            prop_assert_eq!(loaded.account_name(id), Some(name));
            prop_assert_eq!(loaded.tags_of(name), directory.tags_of(name));
            prop_assert_eq!(loaded.tag_count(name), directory.tag_count(name));
            prop_assert_eq!(loaded.attrs_of(name), directory.attrs_of(name));
        }
        prop_assert!(a_copy_writes_the_same_snapshot(&directory));
    }
}

/// Writes aimed at few accounts, tags and values, so they keep meeting: the same account
/// several times in one request, a tag added and removed in turn, a value replaced over and
/// over (past 255 values of one slot, where its per-account column widens), attributes removed
/// and set again, accounts deleted and created anew.
fn arb_churn_op() -> impl Strategy<Value = DirOp> {
    let account = "[a-e]";
    let tag = "t[0-5]";
    let value = "v[0-9]{1,2}";
    let user_tags = (account, prop::collection::vec(tag, 1..4))
        .prop_map(|(account, tags)| UserTags { account, tags });
    prop_oneof![
        2 => prop::collection::vec(account, 1..3).prop_map(|accounts| DirOp::Import { accounts }),
        1 => prop::collection::vec(account, 1..2).prop_map(|accounts| DirOp::Delete { accounts }),
        3 => prop::collection::vec(user_tags.clone(), 1..6).prop_map(|users| DirOp::AddTags { users }),
        3 => prop::collection::vec(user_tags, 1..6).prop_map(|users| DirOp::RemoveTags { users }),
        1 => prop::collection::vec(account, 1..3).prop_map(|accounts| DirOp::RemoveAllTags { accounts }),
        4 => prop::collection::vec((account, prop::collection::vec((0u8..3, value), 1..4)), 1..6)
            .prop_map(|users| DirOp::SetAttrs {
                users: users
                    .into_iter()
                    .map(|(account, values)| UserAttrValues { account, values })
                    .collect()
            }),
        // One account's value replaced many times in one request, with values never seen.
        1 => (account, 0u8..3, 1usize..300, 0u32..1_000).prop_map(|(account, slot, times, seed)| {
            DirOp::SetAttrs {
                users: (0..times)
                    .map(|n| UserAttrValues {
                        account: account.clone(),
                        values: vec![(slot, format!("c{seed}-{n}"))],
                    })
                    .collect(),
            }
        }),
        3 => prop::collection::vec((account, prop::collection::vec(0u8..3, 1..3)), 1..4)
            .prop_map(|users| DirOp::RemoveAttrs {
                users: users
                    .into_iter()
                    .map(|(account, slots)| UserAttrSlots { account, slots })
                    .collect()
            }),
    ]
}

/// Every index of `directory` against the plain model: audiences, each tag's and each value's
/// holders (live or not), each account's tags, values and count.
fn check_against_plain(
    directory: &Directory,
    plain: &BTreeMap<String, PlainUser>,
    conditions: &[Condition],
) -> Result<(), TestCaseError> {
    for condition in conditions {
        prop_assert_eq!(
            names(directory, &directory.audience(condition)),
            reference_audience(plain, condition),
            "{:?}",
            condition
        );
    }
    for (name, user) in plain {
        let mut tags = directory.tags_of(name);
        tags.sort();
        prop_assert_eq!(tags, user.tags.iter().cloned().collect::<Vec<_>>());
        prop_assert_eq!(directory.tag_count(name), user.tags.len());
        prop_assert!(directory.most_tags_held() >= user.tags.len());
        prop_assert_eq!(directory.attrs_of(name), user.attrs.clone());
    }
    for (tag, members) in &directory.tags {
        let holders: BTreeSet<String> = plain
            .iter()
            .filter(|(_, u)| u.tags.contains(&**tag))
            .map(|(n, _)| n.clone())
            .collect();
        prop_assert_eq!(
            names(directory, &members.to_bitmap()),
            holders,
            "tag {}",
            tag
        );
    }
    for (slot, values) in directory.attr_values.iter().enumerate() {
        for (value, members) in values.iter() {
            let holders: BTreeSet<String> = plain
                .iter()
                .filter(|(_, u)| u.attrs.get(&(slot as u8)).map(String::as_str) == Some(value))
                .map(|(n, _)| n.clone())
                .collect();
            prop_assert_eq!(
                names(directory, &members.to_bitmap()),
                holders,
                "slot {} value {}",
                slot,
                value
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn interleaved_tag_and_attribute_writes_keep_every_index_in_step(
        ops in prop::collection::vec(arb_churn_op(), 1..80),
        reloads in prop::collection::btree_set(0usize..80, 0..3),
        conditions in prop::collection::vec(arb_condition(), 1..6),
    ) {
        let mut directory = Directory::default();
        let mut plain = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            if reloads.contains(&n) {
                directory = reload(&directory);
            }
            directory.apply(op);
            apply_plain(&mut plain, op);
            // Deleted accounts are no account any more: their names may be created anew.
            if let DirOp::Delete { accounts } = op {
                for account in accounts {
                    plain.remove(account);
                }
            }
            if n % 10 == 9 {
                check_against_plain(&directory, &plain, &conditions)?;
            }
        }
        check_against_plain(&directory, &plain, &conditions)?;
        check_against_plain(&reload(&directory), &plain, &conditions)?;
        prop_assert!(a_copy_writes_the_same_snapshot(&directory));
    }
}

/// Whether the copy a background snapshot writes ([`snapshot::Contents`]) writes the same
/// bytes as the directory it was copied from, tag counts (from the bitmaps, not the lists)
/// included.
fn a_copy_writes_the_same_snapshot(directory: &Directory) -> bool {
    let (mut direct, mut copied) = (Vec::new(), Vec::new());
    snapshot::write(directory, &mut direct).unwrap();
    snapshot::write_contents(&snapshot::Contents::copy(directory), &mut copied).unwrap();
    direct == copied
}

#[test]
fn a_version_1_snapshot_fixture_still_loads() {
    let bytes = include_bytes!("../../tests/fixtures/directory-v1.snap");
    let d = snapshot::read(&mut bytes.as_slice(), |_, _| {}).unwrap();
    assert!(d.is_live("alice") && d.is_live("bob") && !d.is_live("carol"));
    assert_eq!(d.tags_of("alice"), ["stock-a", "stock-b"]);
    assert_eq!(
        d.attrs_of("bob"),
        BTreeMap::from([(1, "Shenzhen".to_string())])
    );
    assert_eq!(
        d.attr_names(),
        BTreeMap::from([(0, "tier".to_string()), (1, "city".to_string())])
    );
}

#[test]
fn a_version_2_snapshot_fixture_still_loads_with_every_slot_for_user_ids() {
    let bytes = include_bytes!("../../tests/fixtures/directory-v2.snap");
    let d = snapshot::read(&mut bytes.as_slice(), |_, _| {}).unwrap();
    assert!(d.is_live("alice") && d.is_live("bob") && !d.is_live("carol") && !d.is_live("dave"));
    // carol was deleted: her name is unbound from her retired number.
    assert_eq!(d.account_number("carol"), None);
    assert_eq!(d.tags_of("alice"), ["stock-a", "stock-b"]);
    assert_eq!(d.tags_of("dave"), ["stock-a"]);
    assert_eq!(
        d.attrs_of("bob"),
        BTreeMap::from([(0, "gold".to_string()), (1, "Shenzhen".to_string())])
    );
    assert_eq!(
        d.attr_kinds(),
        BTreeMap::from([(0, AccountKind::UserId), (1, AccountKind::UserId)])
    );
}

#[test]
fn attribute_kinds_are_kept_per_named_slot_and_survive_a_snapshot() {
    let mut d = Directory::default();
    d.apply(&DirOp::SetAttrNames {
        names: vec![(0, "tier".into()), (3, "model".into())],
    });
    d.apply(&DirOp::SetAttrKinds {
        kinds: vec![(3, AccountKind::RegistrationId)],
    });
    let expected = BTreeMap::from([(0, AccountKind::UserId), (3, AccountKind::RegistrationId)]);
    assert_eq!(d.attr_kinds(), expected);
    assert_eq!(d.attr_kind(3), AccountKind::RegistrationId);
    // Renaming keeps the kind.
    d.apply(&DirOp::SetAttrNames {
        names: vec![(3, "device".into())],
    });
    let reloaded = reload(&d);
    assert_eq!(reloaded.attr_kinds(), expected);
    assert_eq!(reloaded.attr_names()[&3], "device");
}

#[test]
fn a_snapshot_with_an_unknown_kind_is_refused_as_corrupt() {
    let mut d = Directory::default();
    d.apply(&DirOp::SetAttrNames {
        names: vec![(0, "tier".into())],
    });
    let mut bytes = Vec::new();
    snapshot::write(&d, &mut bytes).unwrap();
    let last = bytes.len() - ATTR_SLOTS;
    bytes[last] = 7;
    let error = snapshot::read(&mut bytes.as_slice(), |_, _| {})
        .err()
        .unwrap();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn tags_in_use_leave_out_tags_nobody_holds_any_more() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b"]));
    d.apply(&DirOp::AddTags {
        users: vec![
            tags("a", &["x", "y"]),
            tags("b", &["y"]),
            tags("ghost", &["z"]),
        ],
    });
    assert_eq!(d.tags_in_use(), 3);
    assert_eq!(
        (d.tag_holders("y"), d.tag_holders("z"), d.tag_holders("w")),
        (2, 1, 0)
    );
    d.apply(&DirOp::RemoveTags {
        users: vec![tags("a", &["x"])],
    });
    d.apply(&DirOp::RemoveAllTags {
        accounts: vec!["ghost".into()],
    });
    assert_eq!(d.tags_in_use(), 1);
    assert_eq!(d.tag_holders("x"), 0);
}

/// The plain model after `ops`.
fn plain_after(ops: &[DirOp]) -> BTreeMap<String, PlainUser> {
    let mut plain = BTreeMap::new();
    for op in ops {
        apply_plain(&mut plain, op);
        // Deleted accounts are no account any more: their names may be created anew.
        if let DirOp::Delete { accounts } = op {
            for account in accounts {
                plain.remove(account);
            }
        }
    }
    plain
}

/// Bulk writes as the group writer applies them: hundreds of users per request, runs of
/// requests of one kind applied together.
fn arb_bulk_op() -> impl Strategy<Value = DirOp> {
    let account = "u[0-9]{1,3}";
    let user_tags = (account, prop::collection::vec("t[0-9]{1,2}", 1..8))
        .prop_map(|(account, tags)| UserTags { account, tags });
    let user_values = (
        account,
        prop::collection::vec((0u8..10, "v[0-9]{1,2}"), 1..4),
    )
        .prop_map(|(account, values)| UserAttrValues { account, values });
    let user_slots = (account, prop::collection::vec(0u8..10, 1..4))
        .prop_map(|(account, slots)| UserAttrSlots { account, slots });
    prop_oneof![
        1 => prop::collection::vec(account, 1..200).prop_map(|accounts| DirOp::Import { accounts }),
        4 => prop::collection::vec(user_tags.clone(), 50..400).prop_map(|users| DirOp::AddTags { users }),
        2 => prop::collection::vec(user_tags, 50..400).prop_map(|users| DirOp::RemoveTags { users }),
        4 => prop::collection::vec(user_values, 50..400).prop_map(|users| DirOp::SetAttrs { users }),
        2 => prop::collection::vec(user_slots, 50..400).prop_map(|users| DirOp::RemoveAttrs { users }),
        1 => prop::collection::vec(account, 1..20).prop_map(|accounts| DirOp::Delete { accounts }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn bulk_writes_applied_together_match_the_plain_model(
        ops in prop::collection::vec(arb_bulk_op(), 1..12),
        conditions in prop::collection::vec(arb_condition(), 1..4),
    ) {
        let mut directory = Directory::default();
        directory.apply_all(&ops);
        let plain = plain_after(&ops);
        check_against_plain(&directory, &plain, &conditions)?;
        check_against_plain(&reload(&directory), &plain, &conditions)?;
        prop_assert!(a_copy_writes_the_same_snapshot(&directory));
    }
}

#[test]
fn a_number_looked_up_before_a_delete_is_not_used_after_it() {
    let mut d = Directory::default();
    d.apply(&import(&["a", "b"]));
    let old = d.account_number("a").unwrap();
    let write = DirOp::AddTags {
        users: vec![tags("a", &["x"])],
    };
    let known = d.known_accounts(known::accounts_of(&write).into_iter());
    d.apply(&DirOp::Delete {
        accounts: vec!["a".into()],
    });
    d.apply_all_known(&[write], &[Some(known)]);
    let new = d.account_number("a").unwrap();
    assert_ne!(new, old);
    assert_eq!(d.tags_of("a"), vec!["x".to_string()]);
    assert_eq!(d.tag_holders("x"), 1);
    assert_eq!(d.tag_lists.count(old), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// As the group writer applies them with the numbers requests looked up ahead: looked up
    /// before the writes before them were applied (so some accounts had no number yet, and
    /// some were deleted since), some before the directory was loaded anew from a snapshot.
    #[test]
    fn bulk_writes_with_numbers_looked_up_ahead_match_the_plain_model(
        ops in prop::collection::vec(arb_bulk_op(), 2..12),
        split in 0usize..12,
        reload_between in any::<bool>(),
        conditions in prop::collection::vec(arb_condition(), 1..4),
    ) {
        let split = split % ops.len();
        let (before, after) = ops.split_at(split);
        let mut directory = Directory::default();
        directory.apply_all(before);
        let known: Vec<Option<KnownAccounts>> = after
            .iter()
            .map(|op| Some(directory.known_accounts(known::accounts_of(op).into_iter())))
            .collect();
        if reload_between {
            directory = reload(&directory);
        }
        directory.apply_all_known(after, &known);
        let plain = plain_after(&ops);
        check_against_plain(&directory, &plain, &conditions)?;
        check_against_plain(&reload(&directory), &plain, &conditions)?;
    }
}
