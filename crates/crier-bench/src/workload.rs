//! The bulk writes, the same for Crier and its peers: requests of 100 users, each account
//! once per pass over all accounts, scattered (a prime stride), each user's change drawn from
//! its own RNG so every consumer regenerates exactly the same writes.
//!
//! - add tags: 1 to 10 distinct Zipf-drawn tags per user (RNG stream 1);
//! - remove tags: the same users and tags as the add with the same request number;
//! - set attributes: 1 to 3 attributes per user set to Zipf-drawn values (stream 2);
//! - remove attributes: 1 to 3 attributes per user (stream 3).

use rand::Rng;
use serde_json::{json, Map, Value};

use crate::dataset::{account_name, attr_value, Dataset, ATTRS};

pub const USERS_PER_REQUEST: usize = 100;
/// A prime: walking account numbers by it visits every account once per pass, scattered.
const STRIDE: u64 = 2_147_483_647;

/// One user's part of a tag request: the account number and tag ranks (0-based).
pub struct UserTags {
    pub uid: u32,
    pub tags: Vec<usize>,
}

/// One user's part of an attribute request: the account number and (slot, value index), the
/// value absent for a removal.
pub struct UserAttrs {
    pub uid: u32,
    pub attrs: Vec<(usize, Option<u16>)>,
}

/// The accounts of write request `request`.
fn request_accounts(dataset: &Dataset, request: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
    (0..USERS_PER_REQUEST).map(move |j| {
        let k = (request * USERS_PER_REQUEST + j) as u64;
        (k, ((k * STRIDE) % u64::from(dataset.accounts)) as u32)
    })
}

/// Tag request `request` (for adding, and for removing the same tags again).
pub fn tag_request(dataset: &Dataset, request: usize) -> Vec<UserTags> {
    request_accounts(dataset, request)
        .map(|(k, uid)| {
            let mut rng = dataset.rng_for(1, k);
            let count = rng.gen_range(1..=10);
            let mut tags: Vec<usize> = Vec::with_capacity(count);
            while tags.len() < count {
                let tag = dataset.tag_zipf.sample(&mut rng);
                if !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            UserTags { uid, tags }
        })
        .collect()
}

/// Attribute request `request`: values to set, or (`remove`) attributes to remove.
pub fn attr_request(dataset: &Dataset, request: usize, remove: bool) -> Vec<UserAttrs> {
    request_accounts(dataset, request)
        .map(|(k, uid)| {
            let mut rng = dataset.rng_for(if remove { 3 } else { 2 }, k);
            let count = rng.gen_range(1..=3);
            let mut attrs: Vec<(usize, Option<u16>)> = Vec::with_capacity(count);
            while attrs.len() < count {
                let slot = rng.gen_range(0..ATTRS.len());
                let value = dataset.attr_zipf(slot).sample(&mut rng) as u16;
                if !attrs.iter().any(|&(s, _)| s == slot) {
                    attrs.push((slot, (!remove).then_some(value)));
                }
            }
            UserAttrs { uid, attrs }
        })
        .collect()
}

pub fn tag_body(dataset: &Dataset, users: &[UserTags]) -> String {
    let users: Vec<Value> = users
        .iter()
        .map(|user| {
            json!({
                "To_Account": account_name(user.uid),
                "Tags": user.tags.iter().map(|&t| &dataset.tag_names[t]).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "UserTags": users }).to_string()
}

pub fn attr_body(users: &[UserAttrs]) -> String {
    let users: Vec<Value> = users
        .iter()
        .map(|user| {
            let account = account_name(user.uid);
            if user.attrs.iter().all(|(_, value)| value.is_none()) {
                let names: Vec<&str> = user.attrs.iter().map(|&(s, _)| ATTRS[s].0).collect();
                return json!({"To_Account": account, "Attrs": names});
            }
            let attrs: Map<String, Value> = user
                .attrs
                .iter()
                .filter_map(|&(slot, value)| {
                    Some((ATTRS[slot].0.to_owned(), Value::String(attr_value(value?))))
                })
                .collect();
            json!({"To_Account": account, "Attrs": attrs})
        })
        .collect();
    json!({ "UserAttrs": users }).to_string()
}

/// Tags or attributes a list of requests carries in all.
pub fn tag_items(requests: &[Vec<UserTags>]) -> u64 {
    requests.iter().flatten().map(|u| u.tags.len() as u64).sum()
}

pub fn attr_items(requests: &[Vec<UserAttrs>]) -> u64 {
    requests
        .iter()
        .flatten()
        .map(|u| u.attrs.len() as u64)
        .sum()
}
