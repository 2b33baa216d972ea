//! The REST body readers, on any bytes the way `dispatch` reads a body: JSON, then each
//! command's validation. Nothing may panic; every refusal is a documented request error (never
//! an internal one); what is accepted holds to the contract's limits.
//!
//! What is accepted is then used as the server would: a push's condition picks its audience
//! from a directory of a few thousand accounts, compared against a plain per-account reading of
//! the same directory, and tag writes are applied to a small directory and read back.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crier::api::{accounts, attrs, fields, tags, write_bodies};
use crier::config::AppConfig;
use crier::directory::{Condition, DirOp, Directory, UserAttrValues, UserTags};
use crier::error::{Error, TencentCode};
use crier::push::validate::{self, parse_push};
use crier_proto::codes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const ACCOUNTS: u32 = 3_000;

fuzz_target!(|data: &[u8]| {
    // As the contract reads a body: empty and `[]` mean "no parameters".
    let body = if data.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice::<Value>(data) {
            Ok(Value::Array(items)) if items.is_empty() => Value::Object(Map::new()),
            Ok(value) => value,
            Err(_) => return,
        }
    };
    let world = world();
    check_push(&body, world);
    check_tag_writes(&body);
    check_write_bodies(data, &body);
    check_attr_names(&body);
    check_account_lists(&body);
});

/// A refusal must be the client's fault and carry a code of the request's family.
fn refused(result: Result<impl Sized, Error>) {
    if let Err(error) = result {
        assert!(!error.is_internal(), "internal error on a request: {error}");
        let code = error.tencent_code();
        assert!(
            (60000..80000).contains(&code) || (90000..91000).contains(&code),
            "code {code} for {error}"
        );
    }
}

struct Template {
    directory: Directory,
    /// Per live account: its number, tags and attribute values, read one account at a time.
    accounts: Vec<(u32, BTreeSet<String>, BTreeMap<u8, String>)>,
}

struct World {
    app: AppConfig,
    /// Every numbered account live or deleted (the audience skips its cut to live accounts)...
    plain: Template,
    /// ...and the same with tags and attributes written ahead of import.
    with_ghosts: Template,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World {
        app: AppConfig {
            admins: vec!["administrator".into()],
            ..AppConfig::new(1_400_000_000, "key")
        },
        plain: template(false),
        with_ghosts: template(true),
    })
}

/// Tags of dense and sparse shares (some in roaring's "mid-sized array" range, which takes a
/// different intersection path), three attributes, deleted and re-imported accounts.
fn template(ghosts: bool) -> Template {
    let name = |i: u32| format!("u{i}");
    let mut d = Directory::default();
    d.apply(&DirOp::Import {
        accounts: (0..ACCOUNTS).map(name).collect(),
    });
    d.apply(&DirOp::SetAttrNames {
        names: vec![(0, "sex".into()), (1, "city".into()), (9, "level".into())],
    });
    let tags_of = |i: u32| -> Vec<String> {
        let rules: [(&str, bool); 7] = [
            ("t0", i.is_multiple_of(2)),
            ("t1", i.is_multiple_of(3)),
            ("t2", i.is_multiple_of(7)),
            ("t3", i < 200),
            ("t4", i == 1),
            ("x", i.is_multiple_of(500)),
            ("y", i.is_multiple_of(250)),
        ];
        rules
            .iter()
            .filter(|(_, held)| *held)
            .map(|(tag, _)| tag.to_string())
            .collect()
    };
    d.apply(&DirOp::AddTags {
        users: (0..ACCOUNTS)
            .map(|i| UserTags {
                account: name(i),
                tags: tags_of(i),
            })
            .collect(),
    });
    d.apply(&DirOp::SetAttrs {
        users: (0..ACCOUNTS)
            .map(|i| {
                let mut values = vec![
                    (0, if i.is_multiple_of(2) { "f" } else { "m" }.to_string()),
                    (1, format!("c{}", i % 5)),
                ];
                if i.is_multiple_of(11) {
                    values.push((9, "gold".into()));
                }
                UserAttrValues {
                    account: name(i),
                    values,
                }
            })
            .collect(),
    });
    d.apply(&DirOp::Delete {
        accounts: (0..ACCOUNTS)
            .filter(|i| i.is_multiple_of(97))
            .map(name)
            .collect(),
    });
    d.apply(&DirOp::Import {
        accounts: vec![name(97), name(194)],
    });
    d.apply(&DirOp::AddTags {
        users: vec![UserTags {
            account: name(97),
            tags: vec!["t4".into()],
        }],
    });
    let mut names: Vec<String> = (0..ACCOUNTS).map(name).collect();
    if ghosts {
        let ghost_names: Vec<String> = (0..50).map(|i| format!("ghost{i}")).collect();
        d.apply(&DirOp::AddTags {
            users: ghost_names
                .iter()
                .map(|g| UserTags {
                    account: g.clone(),
                    tags: vec!["t0".into(), "t1".into(), "t3".into()],
                })
                .collect(),
        });
        d.apply(&DirOp::SetAttrs {
            users: ghost_names
                .iter()
                .map(|g| UserAttrValues {
                    account: g.clone(),
                    values: vec![(0, "f".into()), (1, "c1".into())],
                })
                .collect(),
        });
        names.extend(ghost_names);
    }
    let accounts = names
        .iter()
        .filter(|n| d.is_live(n))
        .map(|n| {
            let number = d.account_number(n).expect("a live account has a number");
            (number, d.tags_of(n).into_iter().collect(), d.attrs_of(n))
        })
        .collect();
    Template {
        directory: d,
        accounts,
    }
}

/// The audience read account by account, as the contract states it.
fn plain_audience(template: &Template, condition: &Condition) -> BTreeSet<u32> {
    let matches = |tags: &BTreeSet<String>, attrs: &BTreeMap<u8, String>| match condition {
        Condition::All => true,
        Condition::Tags { and, or, not } => {
            and.iter().all(|t| tags.contains(t))
                && (or.is_empty() || or.iter().any(|t| tags.contains(t)))
                && !not.iter().any(|t| tags.contains(t))
        }
        Condition::Attrs { and, or } => {
            let holds = |(slot, value): &(u8, String)| attrs.get(slot) == Some(value);
            and.iter().all(holds) && (or.is_empty() || or.iter().any(holds))
        }
    };
    template
        .accounts
        .iter()
        .filter(|(_, tags, attrs)| matches(tags, attrs))
        .map(|(number, _, _)| *number)
        .collect()
}

fn check_push(body: &Value, world: &World) {
    let request = parse_push(body, &world.plain.directory, &world.app);
    let Ok(request) = request else {
        return refused(request);
    };
    assert!(request.msg_body.len() <= validate::MAX_MSG_BODY_BYTES);
    let elements: Value = serde_json::from_str(&request.msg_body).expect("MsgBody is JSON");
    assert!(elements.as_array().is_some_and(|e| !e.is_empty()));
    if let Some(info) = &request.offline_push_info {
        let info: Value = serde_json::from_str(info).expect("OfflinePushInfo is JSON");
        assert!(info.is_object());
    }
    assert!(u64::from(request.lifetime_secs) <= validate::MAX_LIFETIME_SECS as u64);
    if let Condition::Tags { and, or, not } = &request.condition {
        for list in [and, or, not] {
            assert!(list.len() <= validate::MAX_CONDITION_TAGS);
            assert!(list
                .iter()
                .all(|t| !t.is_empty() && t.len() <= validate::MAX_TAG_BYTES));
        }
        assert!(and.iter().all(|t| !or.contains(t) && !not.contains(t)));
        assert!(or.iter().all(|t| !not.contains(t)));
    }
    // Both directories name the same attributes, so the condition reads the same in both.
    for template in [&world.plain, &world.with_ghosts] {
        let fast: BTreeSet<u32> = template
            .directory
            .audience(&request.condition)
            .into_iter()
            .collect();
        assert_eq!(
            fast,
            plain_audience(template, &request.condition),
            "audience of {:?}",
            request.condition
        );
    }
}

fn small_directory() -> Directory {
    let mut d = Directory::default();
    d.apply(&DirOp::Import {
        accounts: vec!["a".into(), "b".into()],
    });
    d.apply(&DirOp::AddTags {
        users: vec![UserTags {
            account: "a".into(),
            tags: vec!["x".into()],
        }],
    });
    d
}

fn check_tag_writes(body: &Value) {
    let added = tags::read_user_tags(body, Some(tags::MAX_TAGS_PER_CALL));
    let Ok(users) = added else {
        return refused(added);
    };
    assert!(users.len() <= tags::MAX_USERS || users.len() == 1);
    for user in &users {
        assert!(user.tags.len() <= tags::MAX_TAGS_PER_CALL);
        assert!(!user.account.is_empty() && user.account.len() <= fields::MAX_ACCOUNT_BYTES);
    }
    let merged = tags::distinct_tag_counts(&users);
    if let Ok(merged) = &merged {
        let firsts: BTreeSet<&str> = merged
            .iter()
            .map(|&(first, _)| users[first].account.as_str())
            .collect();
        assert_eq!(firsts.len(), merged.len(), "an account twice in {merged:?}");
        for &(first, count) in merged {
            let account = &users[first].account;
            assert!(
                users[..first].iter().all(|u| &u.account != account),
                "entry {first} is not the first of {account:?}"
            );
            assert!(count <= tags::MAX_TAGS_PER_CALL);
            let asked: BTreeSet<&String> = users
                .iter()
                .filter(|u| &u.account == account)
                .flat_map(|u| &u.tags)
                .collect();
            assert_eq!(asked.len(), count, "tags of {account:?}");
        }
    }
    refused(merged);

    let mut d = small_directory();
    d.apply(&DirOp::AddTags {
        users: users.clone(),
    });
    for user in &users {
        for tag in &user.tags {
            assert!(
                d.holds_tag(&user.account, tag),
                "{:?} lacks {tag:?}",
                user.account
            );
        }
        assert_eq!(d.tag_count(&user.account), d.tags_of(&user.account).len());
    }
    d.apply(&DirOp::RemoveTags {
        users: users.clone(),
    });
    for user in &users {
        for tag in &user.tags {
            assert!(!d.holds_tag(&user.account, tag));
        }
        assert_eq!(d.tag_count(&user.account), d.tags_of(&user.account).len());
    }
    refused(tags::read_user_tags(body, None));
}

/// The bulk writes read their bytes without the JSON tree when they can: what they read, or
/// refuse, must be what the general readers make of the tree.
fn check_write_bodies(data: &[u8], body: &Value) {
    fn outcome<T: std::fmt::Debug>(read: Result<T, Error>) -> String {
        match read {
            Ok(value) => format!("{value:?}"),
            Err(error) => format!("{:?}", error.to_wire()),
        }
    }
    for limit in [None, Some(tags::MAX_TAGS_PER_CALL)] {
        assert_eq!(
            outcome(write_bodies::user_tags(data, limit)),
            outcome(tags::read_user_tags(body, limit))
        );
    }
    assert_eq!(
        outcome(write_bodies::set_entries(data)),
        outcome(attrs::read_set_entries(body, fields::account_name))
    );
}

fn check_attr_names(body: &Value) {
    let names = attrs::read_attr_names(body);
    let Ok(names) = names else {
        return refused(names);
    };
    for (slot, name) in &names {
        assert!((*slot as usize) < crier::directory::ATTR_SLOTS);
        assert!(!name.is_empty() && name.len() <= attrs::MAX_NAME_BYTES);
    }
    let mut d = small_directory();
    d.apply(&DirOp::SetAttrNames {
        names: names.clone(),
    });
    let last: BTreeMap<u8, String> = names.into_iter().collect();
    assert_eq!(d.attr_names(), last);
}

fn check_account_lists(body: &Value) {
    let list = fields::account_list(
        body,
        "To_Account",
        accounts::MAX_STATUS_QUERY,
        codes::TOO_MANY_ACCOUNTS,
        codes::BAD_JSON,
    );
    if let Ok(list) = &list {
        assert!(list.len() <= accounts::MAX_STATUS_QUERY);
        assert!(list
            .iter()
            .all(|a| !a.is_empty() && a.len() <= fields::MAX_ACCOUNT_BYTES));
    }
    refused(list);
    for key in ["DeleteItem", "CheckItem"] {
        let items = accounts::user_items(body, key);
        if let Ok(items) = &items {
            assert!(items.len() <= accounts::MAX_BATCH);
        }
        refused(items);
    }
    refused(fields::array(
        body,
        "Accounts",
        accounts::MAX_BATCH,
        codes::LOGIN_SVC_BAD_REQUEST,
        codes::LOGIN_SVC_BAD_REQUEST,
    ));
    for (list, inner) in [("UserAttrs", "Attrs"), ("UserTags", "Tags")] {
        refused(fields::user_entries(
            body,
            [list, inner, inner],
            (attrs::MAX_USERS, codes::TOO_MANY_USERS, codes::BAD_JSON),
            fields::account_name,
        ));
    }
    if let Ok(object) = fields::object(body, codes::LOGIN_SVC_BAD_REQUEST) {
        for key in ["UserID", "Identifier"] {
            if let Some(value) = object.get(key) {
                refused(fields::account_name(
                    value,
                    key,
                    codes::LOGIN_SVC_BAD_REQUEST,
                ));
            }
        }
    }
}
