//! `im_get_tag`, `im_add_tag`, `im_remove_tag`, `im_remove_all_tags`.

use std::collections::{BTreeSet, HashMap};

use crier_proto::codes;
use serde_json::{json, Map, Value};

use super::fields::{account_list, user_entries};
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
fn read_user_tags(body: &Value, limit_per_user: Option<usize>) -> Result<Vec<UserTags>, Error> {
    let entries = user_entries(
        body,
        "UserTags",
        "Tags",
        "Tags",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
    )?;
    entries
        .into_iter()
        .enumerate()
        .map(|(n, (account, tags))| {
            let place = format!("UserTags[{n}].Tags");
            let tags = tags.as_array().ok_or_else(|| {
                Error::rejected(codes::BAD_JSON, format!("{place} must be an array of tags"))
            })?;
            if let Some(limit) = limit_per_user {
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

pub async fn add(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let users = read_user_tags(&body, Some(MAX_TAGS_PER_CALL))?;
    // The per-call limit is per user, so entries naming the same user count together.
    let mut per_user: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for user in &users {
        let tags = per_user.entry(&user.account).or_default();
        tags.extend(user.tags.iter().map(String::as_str));
        if tags.len() > MAX_TAGS_PER_CALL {
            return Err(Error::rejected(
                codes::TOO_MANY_TAGS,
                format!(
                    "account {:?} is given {} distinct tags across its entries; at most {MAX_TAGS_PER_CALL} per user per call",
                    user.account,
                    tags.len()
                ),
            ));
        }
    }
    let cap = call.tenant.config.max_tags_per_user;
    call.tenant
        .write(move |directory| {
            let mut requested: HashMap<&str, BTreeSet<&str>> = HashMap::new();
            for user in &users {
                requested
                    .entry(&user.account)
                    .or_default()
                    .extend(user.tags.iter().map(String::as_str));
            }
            for user in &users {
                let Some(tags) = requested.remove(user.account.as_str()) else {
                    continue;
                };
                let held = directory.tag_count(&user.account);
                // Counting only the tags the account lacks costs a bitmap probe per tag; the
                // bound without it settles nearly every call.
                if held + tags.len() <= cap {
                    continue;
                }
                let total = held + tags.iter().filter(|tag| !directory.holds_tag(&user.account, tag)).count();
                if total > cap {
                    return Err(Error::rejected(
                        codes::TOO_MANY_TAGS,
                        format!("account {:?} would hold {total} tags; an account holds at most {cap}: remove some first", user.account),
                    ));
                }
            }
            Ok(vec![DirOp::AddTags { users }])
        })
        .await?;
    Ok(Map::new())
}

pub async fn remove(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let users = read_user_tags(&body, None)?;
    call.tenant
        .write(move |_| Ok(vec![DirOp::RemoveTags { users }]))
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
