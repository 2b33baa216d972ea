//! The bodies of the bulk directory writes (`im_add_tag`, `im_remove_tag`, `im_set_attr`) read
//! straight from their bytes into the write's own shape.
//!
//! A sync sends these by the million, nearly all well formed and in the one documented form
//! (`{"UserTags":[{"To_Account":..,"Tags":[..]}]}`, `{"UserAttrs":[{"To_Account":..,"Attrs":{..}}]}`).
//! Parsed into a JSON tree first, each user costs a map, its keys and every string twice (once
//! in the tree, once copied out of it), about half the allocations of the whole write. Here a
//! body of that form is deserialized into the accounts and tags or values directly, and checked
//! with the same rules; anything else (another accepted form, a field of the wrong type, any
//! rule broken) is read again through the JSON tree by the general readers, whose answer and
//! refusal messages are the contract's. So this path decides nothing the general one would
//! decide otherwise: it only skips the tree when the general one would accept the body.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::attrs::{self, SetEntry};
use super::fields::account_name;
use super::tags;
use crate::auth::Service;
use crate::directory::UserTags;
use crate::error::Error;
use crate::push::validate::MAX_TAG_BYTES;

#[derive(Deserialize)]
struct TagsBody {
    #[serde(rename = "UserTags")]
    users: Vec<TagsEntry>,
    /// The flat form's key: with it the general reader reads the body as one entry.
    #[serde(rename = "To_Account")]
    flat: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct TagsEntry {
    #[serde(rename = "To_Account")]
    account: String,
    #[serde(rename = "Tags")]
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct AttrsBody {
    #[serde(rename = "UserAttrs")]
    users: Vec<AttrsEntry>,
    #[serde(rename = "To_Account")]
    flat: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AttrsEntry {
    #[serde(rename = "To_Account")]
    account: String,
    /// A map, as the JSON tree's object is: ordered by name, the last of a repeated name kept.
    #[serde(rename = "Attrs")]
    attrs: BTreeMap<String, String>,
}

/// The per-user tag lists of an `im_add_tag` (`limit_per_user`: at most that many tags per
/// entry) or `im_remove_tag` body, as [`tags::read_user_tags`] reads them.
pub fn user_tags(body: &[u8], limit_per_user: Option<usize>) -> Result<Vec<UserTags>, Error> {
    if let Some(users) = user_tags_direct(body, limit_per_user) {
        return Ok(users);
    }
    tags::read_user_tags(
        &super::parse_body(body, Service::AllMemberPush)?,
        limit_per_user,
    )
}

fn user_tags_direct(body: &[u8], limit_per_user: Option<usize>) -> Option<Vec<UserTags>> {
    let body: TagsBody = deserialize(body)?;
    if body.flat.is_some() || body.users.len() > tags::MAX_USERS {
        return None;
    }
    let limit = limit_per_user.unwrap_or(usize::MAX);
    let fine = body.users.iter().all(|user| {
        account_fine(&user.account)
            && user.tags.len() <= limit
            && user
                .tags
                .iter()
                .all(|tag| !tag.is_empty() && tag.len() <= MAX_TAG_BYTES)
    });
    fine.then(|| {
        body.users
            .into_iter()
            .map(|user| UserTags {
                account: user.account,
                tags: user.tags,
            })
            .collect()
    })
}

/// The entries of an `im_set_attr` body, as [`attrs::read_set_entries`] reads them with
/// [`account_name`].
pub fn set_entries(body: &[u8]) -> Result<Vec<SetEntry>, Error> {
    if let Some(entries) = set_entries_direct(body) {
        return Ok(entries);
    }
    attrs::read_set_entries(
        &super::parse_body(body, Service::AllMemberPush)?,
        account_name,
    )
}

fn set_entries_direct(body: &[u8]) -> Option<Vec<SetEntry>> {
    let body: AttrsBody = deserialize(body)?;
    if body.flat.is_some()
        || body.users.len() > attrs::MAX_USERS
        || !body.users.iter().all(|user| account_fine(&user.account))
    {
        return None;
    }
    Some(
        body.users
            .into_iter()
            .map(|user| SetEntry::new(user.account, user.attrs))
            .collect(),
    )
}

/// The body as `T`, if it reads as one.
fn deserialize<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Option<T> {
    // Checked as UTF-8 once, whole: read from bytes, serde_json checks each string apart, which
    // costs more than the strings' own bytes when they are as short as account names and tags.
    serde_json::from_str(std::str::from_utf8(body).ok()?).ok()
}

/// What [`account_name`] accepts.
fn account_fine(name: &str) -> bool {
    crier_proto::usersig::check_identifier(name).is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    /// Bodies near the documented forms: the list or flat form, accounts and tags or values
    /// of every length around the limits, wrong types, extra and missing fields.
    fn arb_body(list_key: &'static str, inner: &'static str) -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            4 => "[a-c]{1,3}",
            1 => Just(String::new()),
            1 => "[a-z]{30,52}",
            1 => Just("a\u{1}b".to_owned()),
        ];
        let scalar = prop_oneof![
            6 => text.clone().prop_map(Value::from),
            1 => Just(json!(7)),
            1 => Just(Value::Null),
        ];
        let inner_value = prop_oneof![
            3 => prop::collection::vec(scalar.clone(), 0..12).prop_map(Value::from),
            3 => prop::collection::btree_map("[a-c]{1,2}", scalar.clone(), 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            1 => scalar.clone(),
        ];
        let entry = (scalar.clone(), inner_value, any::<bool>(), any::<bool>()).prop_map(
            move |(account, inner_value, has_inner, extra)| {
                let mut entry = json!({ "To_Account": account });
                if has_inner {
                    entry[inner] = inner_value;
                }
                if extra {
                    entry["Other"] = json!(1);
                }
                entry
            },
        );
        let users = prop_oneof![
            6 => prop::collection::vec(entry.clone(), 0..5),
            1 => prop::collection::vec(entry.clone(), 101..103),
        ];
        prop_oneof![
            6 => users.clone().prop_map(move |users| json!({ list_key: users })),
            1 => users.prop_map(move |users| json!({ inner: users })),
            1 => entry,
            1 => (scalar, prop::collection::vec(Just(json!({})), 0..2))
                .prop_map(move |(account, users)| json!({ "To_Account": account, list_key: users })),
        ]
    }

    fn outcome<T: std::fmt::Debug>(read: Result<T, Error>) -> String {
        match read {
            Ok(value) => format!("{value:?}"),
            Err(error) => format!("{:?}", error.to_wire()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn tag_bodies_read_as_the_general_reader_reads_them(
            body in arb_body("UserTags", "Tags"),
            limit in prop_oneof![Just(None), Just(Some(tags::MAX_TAGS_PER_CALL))],
        ) {
            let bytes = body.to_string();
            prop_assert_eq!(
                outcome(user_tags(bytes.as_bytes(), limit)),
                outcome(tags::read_user_tags(&body, limit))
            );
        }

        #[test]
        fn attribute_bodies_read_as_the_general_reader_reads_them(
            body in arb_body("UserAttrs", "Attrs"),
        ) {
            let bytes = body.to_string();
            prop_assert_eq!(
                outcome(set_entries(bytes.as_bytes())),
                outcome(attrs::read_set_entries(&body, account_name))
            );
        }
    }

    #[test]
    fn the_documented_forms_are_read_without_the_json_tree() {
        let tags = br#"{"UserTags":[{"To_Account":"a","Tags":["x","y"]}]}"#;
        assert!(user_tags_direct(tags, Some(10)).is_some());
        let attrs = br#"{"UserAttrs":[{"To_Account":"a","Attrs":{"sex":"m","city":""}}]}"#;
        assert!(set_entries_direct(attrs).is_some());
        // Escapes are decoded as the JSON tree decodes them.
        let escaped = br#"{"UserTags":[{"To_Account":"\u0061","Tags":["\u00e9"]}]}"#;
        assert_eq!(
            user_tags_direct(escaped, None).unwrap(),
            [UserTags {
                account: "a".into(),
                tags: vec!["é".into()]
            }]
        );
    }
}
