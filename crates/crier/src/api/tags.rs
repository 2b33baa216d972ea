//! `im_get_tag`, `im_add_tag`, `im_remove_tag`, `im_remove_all_tags`, and the reading of
//! their bodies that the `v4/timpush` tag commands share ([`super::timpush_directory`]).

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_list, account_name, user_entries, AccountReader};
use super::write_bodies;
use crate::auth::AdminCall;
use crate::directory::{DirOp, UserTags};
use crate::error::Error;
use crate::push::validate::check_tag;

pub const MAX_USERS: usize = 100;
pub const MAX_TAGS_PER_CALL: usize = 10;

pub async fn get(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let accounts = account_list(
        &body,
        "To_Account",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
    )?;
    let user_tags: Vec<Value> = call.tenant.read(|d| {
        accounts
            .iter()
            .map(|a| json!({"To_Account": a, "Tags": d.tags_of(a)}))
            .collect()
    });
    Ok(Map::from_iter([(
        "UserTags".into(),
        Value::Array(user_tags),
    )]))
}

/// Reads the per-user tag lists, checking each tag's own rules.
pub fn read_user_tags(body: &Value, limit_per_user: Option<usize>) -> Result<Vec<UserTags>, Error> {
    read_user_tags_with(body, limit_per_user, account_name)
}

/// [`read_user_tags`] with each `To_Account` read by `read`; `limit_per_entry` applies to each
/// entry's list.
pub fn read_user_tags_with(
    body: &Value,
    limit_per_entry: Option<usize>,
    read: AccountReader,
) -> Result<Vec<UserTags>, Error> {
    let entries = user_entries(
        body,
        ["UserTags", "Tags", "Tags"],
        (MAX_USERS, codes::TOO_MANY_USERS, codes::BAD_JSON),
        read,
    )?;
    entries
        .into_iter()
        .enumerate()
        .map(|(n, (account, tags))| {
            let place = format!("UserTags[{n}].Tags");
            let tags = tags.as_array().ok_or_else(|| {
                Error::rejected(codes::BAD_JSON, format!("{place} must be an array of tags"))
            })?;
            if let Some(limit) = limit_per_entry {
                if tags.len() > limit {
                    return Err(Error::rejected(
                        codes::TOO_MANY_TAGS,
                        format!(
                            "{place} holds {} tags; at most {limit} per user per call",
                            tags.len()
                        ),
                    ));
                }
            }
            let tags = tags
                .iter()
                .map(|tag| check_tag(tag, &place))
                .collect::<Result<_, _>>()?;
            Ok(UserTags { account, tags })
        })
        .collect()
}

pub async fn add(call: AdminCall, body: Vec<u8>) -> Result<Map<String, Value>, Error> {
    let users = write_bodies::user_tags(&body, Some(MAX_TAGS_PER_CALL))?;
    drop(body);
    let requested = distinct_tag_counts(&users)?;
    let cap = call.tenant.config().max_tags_per_user;
    let known = call
        .tenant
        .known_accounts(users.iter().map(|user| user.account.as_str()));
    call.tenant
        .write_known(known, move |directory| {
            // No account holds more than `most`: while that is far from the cap, no account's
            // tags need counting here.
            let most = directory.most_tags_held();
            for &(first_entry, count) in &requested {
                if most + count <= cap {
                    continue;
                }
                let account = users[first_entry].account.as_str();
                let held = directory.tag_count(account);
                // Counting only the tags the account lacks costs a bitmap probe per tag; the
                // bound without it settles nearly every call.
                if held + count <= cap {
                    continue;
                }
                let tags: BTreeSet<&str> = users
                    .iter()
                    .filter(|user| user.account == account)
                    .flat_map(|user| user.tags.iter().map(String::as_str))
                    .collect();
                let total = held + tags.iter().filter(|tag| !directory.holds_tag(account, tag)).count();
                if total > cap {
                    return Err(Error::rejected(
                        codes::TOO_MANY_TAGS,
                        format!("account {} would hold {total} tags; an account holds at most {cap}: remove some first", echo(account)),
                    ));
                }
            }
            Ok(vec![DirOp::AddTags { users }])
        })
        .await?;
    Ok(Map::new())
}

/// Each account of the call once, in order of first mention, as the position of its first
/// entry and the number of distinct tags its entries name together. Worked out before the
/// write lock is taken, so writers wait only for the checks against the directory. The
/// per-call limit is per account, across its entries.
///
/// An account named by one entry only (the usual call) is counted without allocating: an
/// entry holds at most [`MAX_TAGS_PER_CALL`] tags, compared pairwise.
pub fn distinct_tag_counts(users: &[UserTags]) -> Result<Vec<(usize, usize)>, Error> {
    let mut entries_of: HashMap<&str, (usize, usize)> = HashMap::with_capacity(users.len());
    let mut order = Vec::with_capacity(users.len());
    for (n, user) in users.iter().enumerate() {
        let (_, entries) = entries_of.entry(&user.account).or_insert_with(|| {
            order.push(n);
            (n, 0)
        });
        *entries += 1;
    }
    order
        .into_iter()
        .map(|first| {
            let account = users[first].account.as_str();
            let count = if entries_of[account].1 == 1 {
                let tags = &users[first].tags;
                (0..tags.len())
                    .filter(|&i| !tags[..i].contains(&tags[i]))
                    .count()
            } else {
                users
                    .iter()
                    .filter(|user| user.account == account)
                    .flat_map(|user| user.tags.iter().map(String::as_str))
                    .collect::<BTreeSet<&str>>()
                    .len()
            };
            if count > MAX_TAGS_PER_CALL {
                return Err(Error::rejected(
                    codes::TOO_MANY_TAGS,
                    format!(
                        "account {} is given {count} distinct tags across its entries; at most {MAX_TAGS_PER_CALL} per user per call",
                        echo(account),
                    ),
                ));
            }
            Ok((first, count))
        })
        .collect()
}

pub async fn remove(call: AdminCall, body: Vec<u8>) -> Result<Map<String, Value>, Error> {
    let users = write_bodies::user_tags(&body, None)?;
    drop(body);
    let known = call
        .tenant
        .known_accounts(users.iter().map(|user| user.account.as_str()));
    call.tenant
        .write_known(known, move |_| Ok(vec![DirOp::RemoveTags { users }]))
        .await?;
    Ok(Map::new())
}

pub async fn remove_all(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let accounts = account_list(
        &body,
        "To_Account",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
    )?;
    call.tenant
        .write(move |_| Ok(vec![DirOp::RemoveAllTags { accounts }]))
        .await?;
    Ok(Map::new())
}
