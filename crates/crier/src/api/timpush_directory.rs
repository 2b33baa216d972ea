//! The attribute and tag commands of `v4/timpush` (timpush.md §5): `set_attr_name`,
//! `get_attr_name`, `set_attr`, `get_attr`, `remove_attr`, `add_tag`, `get_tag`, `remove_tag`,
//! `clear_all_tags`.
//!
//! They read and write the store of the classic commands ([`super::attrs`], [`super::tags`],
//! whose body readers they share), with three differences: attribute slots have an account
//! kind (`AttrTypes`), `add_tag` can replace an account's tags, and a fault of one account
//! (unknown: 70107; wrong kind: 90035; past a tag cap: 90032) goes to `ErrorList` while every
//! other item is applied. A fault of the request as a whole changes nothing, as in the classic
//! API. Each command takes at most [`CALLS_PER_SECOND`] calls per second per app (90024).
//!
//! A tag takes the kind of the first account it is written to (timpush.md §5). Every account
//! Crier knows is a UserID ([`crate::tenant::to_accounts`]), so every tag is of that kind and no
//! tag write can cross kinds; only attribute slots, whose kind is declared, can refuse one
//! (90035).

use std::collections::{BTreeMap, HashMap};

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_list_read, any_account, object};
use super::{attrs, tags};
use crate::auth::AdminCall;
use crate::directory::{
    AccountKind, Ahead, DirOp, Directory, UserAttrSlots, UserAttrValues, UserTags,
};
use crate::error::Error;
use crate::tenant::to_accounts::Resolved;

type Answer = Result<Map<String, Value>, Error>;

/// Calls per second per command per app [DOC api-list].
pub const CALLS_PER_SECOND: u32 = 100;
/// Distinct tags the accounts of an app may hold at once, as these commands count them.
pub const MAX_TAGS_PER_APP: usize = 1_000;
/// Tags one `add_tag` item may give with `Replace` 0 (as `im_add_tag`) and with `Replace` 1.
pub const MAX_TAGS_PER_ADD: usize = tags::MAX_TAGS_PER_CALL;
pub const MAX_TAGS_PER_REPLACE: usize = 100;

const LIMITS: (usize, u32, u32) = (attrs::MAX_USERS, codes::TOO_MANY_USERS, codes::BAD_JSON);

/// The per-account faults of a request, answered as `ErrorList` when there are any.
#[derive(Default)]
struct ErrorList(Vec<Value>);

impl ErrorList {
    fn refuse(&mut self, to_account: &str, error: Error) {
        let wire = error.to_wire();
        self.0.push(
            json!({"To_Account": to_account, "ErrorCode": wire.code, "ErrorInfo": wire.info}),
        );
    }

    fn unknown(&mut self, to_account: &str) {
        self.refuse(
            to_account,
            Error::rejected(
                codes::ACCOUNT_NOT_FOUND,
                format!(
                    "{} is neither an account (imported or logged in) nor a device token registered with RegisterDevice",
                    echo(to_account)
                ),
            ),
        );
    }

    fn answer(self, mut fields: Map<String, Value>) -> Map<String, Value> {
        if !self.0.is_empty() {
            fields.insert("ErrorList".into(), Value::Array(self.0));
        }
        fields
    }
}

pub async fn set_attr_name(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/set_attr_name", CALLS_PER_SECOND)?;
    let names = attrs::read_attr_names(&body)?;
    let given = read_attr_types(&body, &names)?;
    call.tenant
        .write(move |directory| {
            attrs::check_distinct_names(directory, &names)?;
            let kinds = slot_kinds(directory, &names, &given)?;
            let mut ops = vec![DirOp::SetAttrNames { names }];
            if !kinds.is_empty() {
                ops.push(DirOp::SetAttrKinds { kinds });
            }
            Ok(ops)
        })
        .await?;
    Ok(Map::new())
}

/// `AttrTypes`: absent, or an object of slot to 0 (UserID) or 1 (RegistrationID), each slot
/// one that `AttrNames` names.
fn read_attr_types(
    body: &Value,
    names: &[(u8, String)],
) -> Result<BTreeMap<u8, AccountKind>, Error> {
    let bad = |info: String| Error::rejected(codes::BAD_ATTR, info);
    let types = match object(body, codes::BAD_JSON)?.get("AttrTypes") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(types)) => types,
        Some(_) => {
            return Err(bad(
                "AttrTypes must be an object of slot (\"0\"..\"9\") to 0 (UserID) or 1 (RegistrationID)".into(),
            ))
        }
    };
    types
        .iter()
        .map(|(key, kind)| {
            let slot = names
                .iter()
                .map(|(slot, _)| *slot)
                .find(|slot| slot.to_string() == *key)
                .ok_or_else(|| {
                    bad(format!(
                        "AttrTypes key {} is not a slot AttrNames names; give each slot's type beside its name",
                        echo(key)
                    ))
                })?;
            let kind = kind.as_u64().and_then(AccountKind::from_code).ok_or_else(|| {
                bad(format!(
                    "AttrTypes[{}] must be 0 (UserID) or 1 (RegistrationID)",
                    echo(key)
                ))
            })?;
            Ok((slot, kind))
        })
        .collect()
}

/// The kinds to log for the slots `names` sets: a new slot takes the kind given (UserID when
/// none is); a slot with a name keeps its kind, and giving another is refused (90033).
fn slot_kinds(
    directory: &Ahead,
    names: &[(u8, String)],
    given: &BTreeMap<u8, AccountKind>,
) -> Result<Vec<(u8, AccountKind)>, Error> {
    let named = directory.attr_names();
    let mut kinds = Vec::new();
    for (slot, _) in names {
        let stored = directory.attr_kind(*slot);
        let wanted = given.get(slot).copied();
        match named.get(slot) {
            Some(name) => {
                if let Some(wanted) = wanted.filter(|wanted| *wanted != stored) {
                    return Err(Error::rejected(
                        codes::BAD_ATTR,
                        format!(
                            "slot {slot} ({}) has AttrTypes {}; a slot's type cannot change once set, so {} is refused",
                            echo(name),
                            stored.code(),
                            wanted.code()
                        ),
                    ));
                }
            }
            None => {
                let wanted = wanted.unwrap_or_default();
                if wanted != stored {
                    kinds.push((*slot, wanted));
                }
            }
        }
    }
    Ok(kinds)
}

pub async fn get_attr_name(call: AdminCall, _body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/get_attr_name", CALLS_PER_SECOND)?;
    let (names, kinds) = call.tenant.read(|d| (d.attr_names(), d.attr_kinds()));
    let names: Map<String, Value> = names
        .into_iter()
        .map(|(slot, name)| (slot.to_string(), Value::String(name)))
        .collect();
    let kinds: Map<String, Value> = kinds
        .into_iter()
        .map(|(slot, kind)| (slot.to_string(), Value::from(kind.code())))
        .collect();
    Ok(Map::from_iter([
        ("AttrNames".into(), Value::Object(names)),
        ("AttrTypes".into(), Value::Object(kinds)),
    ]))
}

pub async fn set_attr(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/set_attr", CALLS_PER_SECOND)?;
    let entries = attrs::read_set_entries(&body, any_account)?;
    let errors = call
        .tenant
        .write_answering(move |directory, accounts| {
            let directory = &Ahead::settled(directory);
            let users = attrs::resolve_set_entries(directory, entries)?;
            let mut errors = ErrorList::default();
            let mut accepted = Vec::with_capacity(users.len());
            for user in users {
                let Some(found) = accounts.resolve(&user.account) else {
                    errors.unknown(&user.account);
                    continue;
                };
                if let Some(refusal) = attrs::other_kind(directory, &user, found.kind) {
                    errors.refuse(&user.account, refusal);
                    continue;
                }
                accepted.push(UserAttrValues {
                    account: found.name.to_owned(),
                    values: user.values,
                });
            }
            let ops = if accepted.is_empty() {
                vec![]
            } else {
                vec![DirOp::SetAttrs { users: accepted }]
            };
            Ok((ops, errors))
        })
        .await?;
    Ok(errors.answer(Map::new()))
}

pub async fn get_attr(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/get_attr", CALLS_PER_SECOND)?;
    let wanted = account_list_read(&body, "To_Account", LIMITS, any_account)?;
    let (user_attrs, errors) = call.tenant.read_accounts(|directory, accounts| {
        let names = directory.attr_names();
        let mut errors = ErrorList::default();
        let mut user_attrs = Vec::with_capacity(wanted.len());
        for to_account in &wanted {
            match accounts.resolve(to_account) {
                Some(found) => user_attrs.push(json!({
                    "To_Account": to_account,
                    "Attrs": attrs::attrs_by_name(directory, &names, found.name),
                })),
                None => errors.unknown(to_account),
            }
        }
        (user_attrs, errors)
    });
    Ok(errors.answer(Map::from_iter([(
        "UserAttrs".into(),
        Value::Array(user_attrs),
    )])))
}

pub async fn remove_attr(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/remove_attr", CALLS_PER_SECOND)?;
    let entries = attrs::read_remove_entries(&body, any_account)?;
    let errors = call
        .tenant
        .write_answering(move |directory, accounts| {
            let users = attrs::resolve_remove_entries(&Ahead::settled(directory), entries)?;
            let mut errors = ErrorList::default();
            let mut accepted = Vec::with_capacity(users.len());
            for user in users {
                match accounts.resolve(&user.account) {
                    Some(found) => accepted.push(UserAttrSlots {
                        account: found.name.to_owned(),
                        slots: user.slots,
                    }),
                    None => errors.unknown(&user.account),
                }
            }
            let ops = if accepted.is_empty() {
                vec![]
            } else {
                vec![DirOp::RemoveAttrs { users: accepted }]
            };
            Ok((ops, errors))
        })
        .await?;
    Ok(errors.answer(Map::new()))
}

pub async fn add_tag(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/add_tag", CALLS_PER_SECOND)?;
    let replace = read_replace(&body)?;
    let per_entry = if replace {
        MAX_TAGS_PER_REPLACE
    } else {
        MAX_TAGS_PER_ADD
    };
    let users = tags::read_user_tags_with(&body, Some(per_entry), any_account)?;
    let caps = Caps {
        per_account: call.tenant.config().max_tags_per_user,
        per_app: MAX_TAGS_PER_APP,
    };
    let errors = call
        .tenant
        .write_answering(move |directory, accounts| {
            Ok(plan_tags(
                directory,
                |to_account| accounts.resolve(to_account),
                users,
                replace,
                caps,
            ))
        })
        .await?;
    Ok(errors.answer(Map::new()))
}

/// `Replace`: absent or 0 adds to an account's tags, 1 replaces them.
fn read_replace(body: &Value) -> Result<bool, Error> {
    match object(body, codes::BAD_JSON)?.get("Replace") {
        None | Some(Value::Null) => Ok(false),
        Some(value) => match value.as_u64() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(Error::rejected(
                codes::BAD_JSON,
                "Replace must be 0 (add to the account's tags) or 1 (replace all of them)",
            )),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Caps {
    per_account: usize,
    per_app: usize,
}

/// One account's tags while a request's items are checked: as the directory holds them, and
/// as the items accepted so far leave them (in the order they were first named).
struct AccountTags {
    before: Vec<String>,
    after: Vec<String>,
}

/// Checks the items of an `add_tag` in order against the caps, as the items accepted before
/// each leave the account and the app, and answers the writes of the accepted ones (the tags
/// each account loses, then those it gains) with the faults of the others.
fn plan_tags<'n>(
    directory: &Directory,
    resolve: impl Fn(&str) -> Option<Resolved<'n>>,
    users: Vec<UserTags>,
    replace: bool,
    caps: Caps,
) -> (Vec<DirOp>, ErrorList) {
    let mut errors = ErrorList::default();
    let mut accounts: Vec<(&'n str, AccountTags)> = Vec::new();
    let mut position: HashMap<&'n str, usize> = HashMap::new();
    // How the accepted items change each tag's number of holders, and the tags held by some
    // account after them.
    let mut holders_change: HashMap<String, i64> = HashMap::new();
    let mut in_use = directory.tags_in_use();
    for user in users {
        let Some(found) = resolve(&user.account) else {
            errors.unknown(&user.account);
            continue;
        };
        let at = *position.entry(found.name).or_insert_with(|| {
            let before = directory.tags_of(found.name);
            accounts.push((
                found.name,
                AccountTags {
                    after: before.clone(),
                    before,
                },
            ));
            accounts.len() - 1
        });
        let current = &accounts[at].1.after;
        let mut wanted: Vec<String> = if replace { Vec::new() } else { current.clone() };
        for tag in user.tags {
            if !wanted.contains(&tag) {
                wanted.push(tag);
            }
        }
        if wanted.len() > caps.per_account {
            errors.refuse(
                &user.account,
                Error::rejected(
                    codes::TOO_MANY_TAGS,
                    format!(
                        "{} would hold {} tags; an account holds at most {}: remove some first",
                        echo(&user.account),
                        wanted.len(),
                        caps.per_account
                    ),
                ),
            );
            continue;
        }
        let holders = |tag: &String| {
            directory.tag_holders(tag) as i64 + holders_change.get(tag).copied().unwrap_or(0)
        };
        let gained: Vec<&String> = wanted.iter().filter(|t| !current.contains(t)).collect();
        let lost: Vec<&String> = current.iter().filter(|t| !wanted.contains(t)).collect();
        let newly_used = gained.iter().filter(|t| holders(t) == 0).count();
        let released = lost.iter().filter(|t| holders(t) == 1).count();
        let in_use_after = in_use + newly_used - released;
        if newly_used > 0 && in_use_after > caps.per_app {
            errors.refuse(
                &user.account,
                Error::rejected(
                    codes::TOO_MANY_TAGS,
                    format!(
                        "the app's accounts would hold {in_use_after} distinct tags; an app holds at most {}: remove tags no longer used first",
                        caps.per_app
                    ),
                ),
            );
            continue;
        }
        for tag in gained {
            *holders_change.entry(tag.clone()).or_default() += 1;
        }
        for tag in lost {
            *holders_change.entry(tag.clone()).or_default() -= 1;
        }
        in_use = in_use_after;
        accounts[at].1.after = wanted;
    }
    let (mut losses, mut gains) = (Vec::new(), Vec::new());
    for (name, tags) in accounts {
        let lost: Vec<String> = tags
            .before
            .iter()
            .filter(|t| !tags.after.contains(t))
            .cloned()
            .collect();
        let gained: Vec<String> = tags
            .after
            .iter()
            .filter(|t| !tags.before.contains(t))
            .cloned()
            .collect();
        if !lost.is_empty() {
            losses.push(UserTags {
                account: name.to_owned(),
                tags: lost,
            });
        }
        if !gained.is_empty() {
            gains.push(UserTags {
                account: name.to_owned(),
                tags: gained,
            });
        }
    }
    let mut ops = Vec::new();
    if !losses.is_empty() {
        ops.push(DirOp::RemoveTags { users: losses });
    }
    if !gains.is_empty() {
        ops.push(DirOp::AddTags { users: gains });
    }
    (ops, errors)
}

pub async fn get_tag(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/get_tag", CALLS_PER_SECOND)?;
    let wanted = account_list_read(&body, "To_Account", LIMITS, any_account)?;
    let (user_tags, errors) = call.tenant.read_accounts(|directory, accounts| {
        let mut errors = ErrorList::default();
        let mut user_tags = Vec::with_capacity(wanted.len());
        for to_account in &wanted {
            match accounts.resolve(to_account) {
                Some(found) => user_tags.push(json!({
                    "To_Account": to_account,
                    "Tags": directory.tags_of(found.name),
                })),
                None => errors.unknown(to_account),
            }
        }
        (user_tags, errors)
    });
    Ok(errors.answer(Map::from_iter([(
        "UserTags".into(),
        Value::Array(user_tags),
    )])))
}

pub async fn remove_tag(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/remove_tag", CALLS_PER_SECOND)?;
    let users = tags::read_user_tags_with(&body, None, any_account)?;
    let errors = call
        .tenant
        .write_answering(move |_, accounts| {
            let mut errors = ErrorList::default();
            let mut accepted = Vec::with_capacity(users.len());
            for user in users {
                match accounts.resolve(&user.account) {
                    Some(found) => accepted.push(UserTags {
                        account: found.name.to_owned(),
                        tags: user.tags,
                    }),
                    None => errors.unknown(&user.account),
                }
            }
            let ops = if accepted.is_empty() {
                vec![]
            } else {
                vec![DirOp::RemoveTags { users: accepted }]
            };
            Ok((ops, errors))
        })
        .await?;
    Ok(errors.answer(Map::new()))
}

pub async fn clear_all_tags(call: AdminCall, body: Value) -> Answer {
    call.tenant
        .count_call("v4/timpush/clear_all_tags", CALLS_PER_SECOND)?;
    let wanted = account_list_read(&body, "To_Account", LIMITS, any_account)?;
    let errors = call
        .tenant
        .write_answering(move |_, accounts| {
            let mut errors = ErrorList::default();
            let mut cleared = Vec::with_capacity(wanted.len());
            for to_account in &wanted {
                match accounts.resolve(to_account) {
                    Some(found) => cleared.push(found.name.to_owned()),
                    None => errors.unknown(to_account),
                }
            }
            let ops = if cleared.is_empty() {
                vec![]
            } else {
                vec![DirOp::RemoveAllTags { accounts: cleared }]
            };
            Ok((ops, errors))
        })
        .await?;
    Ok(errors.answer(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directory(ops: &[DirOp]) -> Directory {
        let mut directory = Directory::default();
        ops.iter().for_each(|op| directory.apply(op));
        directory
    }

    fn import(names: &[&str]) -> DirOp {
        DirOp::Import {
            accounts: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn user(account: &str, tags: &[&str]) -> UserTags {
        UserTags {
            account: account.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn live<'d>(directory: &'d Directory) -> impl Fn(&str) -> Option<Resolved<'d>> + 'd {
        move |name| {
            let number = directory.account_number(name)?;
            directory.live().contains(number).then(|| Resolved {
                name: directory.account_name(number).unwrap(),
                kind: AccountKind::UserId,
            })
        }
    }

    /// Plans `users` and applies the writes; answers the codes of the faults per account.
    fn run(
        directory: &mut Directory,
        users: Vec<UserTags>,
        replace: bool,
        caps: Caps,
    ) -> Vec<(String, u64)> {
        let (ops, errors) = plan_tags(directory, live(directory), users, replace, caps);
        ops.iter().for_each(|op| directory.apply(op));
        errors
            .0
            .iter()
            .map(|e| {
                (
                    e["To_Account"].as_str().unwrap().to_owned(),
                    e["ErrorCode"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    const CAPS: Caps = Caps {
        per_account: 100,
        per_app: 1_000,
    };

    #[test]
    fn replace_drops_the_tags_not_given_and_adding_keeps_them() {
        let mut d = directory(&[import(&["a", "b"])]);
        assert!(run(
            &mut d,
            vec![user("a", &["x", "y"]), user("b", &["x"])],
            false,
            CAPS
        )
        .is_empty());
        assert!(run(&mut d, vec![user("a", &["z", "y"])], true, CAPS).is_empty());
        assert_eq!(d.tags_of("a"), ["y", "z"]);
        assert_eq!(d.tags_of("b"), ["x"]);
        // Replacing with the tags held writes nothing.
        let (ops, _) = plan_tags(&d, live(&d), vec![user("a", &["z", "y"])], true, CAPS);
        assert!(ops.is_empty());
        // Two items for one account: the second replaces what the first left.
        assert!(run(
            &mut d,
            vec![user("a", &["p"]), user("a", &["q"])],
            true,
            CAPS
        )
        .is_empty());
        assert_eq!(d.tags_of("a"), ["q"]);
        assert!(run(
            &mut d,
            vec![user("a", &["r"]), user("a", &["s"])],
            false,
            CAPS
        )
        .is_empty());
        assert_eq!(d.tags_of("a"), ["q", "r", "s"]);
    }

    #[test]
    fn an_unknown_or_not_imported_account_is_70107_and_the_others_are_written() {
        let mut d = directory(&[import(&["a"])]);
        d.apply(&DirOp::AddTags {
            users: vec![user("ahead", &["x"])],
        });
        let errors = run(
            &mut d,
            vec![
                user("ghost", &["x"]),
                user("a", &["x"]),
                user("ahead", &["y"]),
            ],
            false,
            CAPS,
        );
        assert_eq!(errors, [("ghost".into(), 70107), ("ahead".into(), 70107)]);
        assert_eq!(d.tags_of("a"), ["x"]);
        assert_eq!(d.tags_of("ahead"), ["x"]);
    }

    #[test]
    fn the_per_account_cap_counts_what_earlier_items_added() {
        let caps = Caps {
            per_account: 3,
            per_app: 1_000,
        };
        let mut d = directory(&[import(&["a", "b"])]);
        let errors = run(
            &mut d,
            vec![
                user("a", &["1", "2"]),
                user("a", &["3", "4"]),
                user("b", &["1", "2", "3"]),
                user("a", &["2", "3"]),
            ],
            false,
            caps,
        );
        assert_eq!(errors, [("a".into(), 90032)]);
        assert_eq!(d.tags_of("a"), ["1", "2", "3"]);
        assert_eq!(d.tags_of("b"), ["1", "2", "3"]);
        // Replacing counts only the tags given.
        assert!(run(&mut d, vec![user("a", &["4", "5", "6"])], true, caps).is_empty());
        assert_eq!(d.tags_of("a"), ["4", "5", "6"]);
    }

    #[test]
    fn the_app_cap_counts_tags_in_use_and_frees_the_ones_a_replace_releases() {
        let caps = Caps {
            per_account: 100,
            per_app: 3,
        };
        let mut d = directory(&[import(&["a", "b", "c"])]);
        assert!(run(
            &mut d,
            vec![user("a", &["x", "y"]), user("b", &["y", "z"])],
            false,
            caps
        )
        .is_empty());
        // A fourth tag is refused; tags already in use are not.
        let errors = run(
            &mut d,
            vec![user("c", &["w"]), user("c", &["x", "z"])],
            false,
            caps,
        );
        assert_eq!(errors, [("c".into(), 90032)]);
        assert_eq!(d.tags_of("c"), ["x", "z"]);
        // a replacing x and y with w frees nothing (c holds x, b holds y): refused. Once c
        // dropped x, a's replace releases x's last holder, which makes room for w.
        let errors = run(&mut d, vec![user("a", &["w"])], true, caps);
        assert_eq!(errors, [("a".into(), 90032)]);
        assert!(run(
            &mut d,
            vec![user("c", &["z"]), user("a", &["w"])],
            true,
            caps
        )
        .is_empty());
        assert_eq!(d.tags_of("a"), ["w"]);
        assert_eq!(d.tags_in_use(), 3);
    }
}
