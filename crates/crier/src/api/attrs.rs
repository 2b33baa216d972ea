//! `im_set_attr_name`, `im_get_attr_name`, `im_get_attr`, `im_set_attr`, `im_remove_attr`,
//! and the reading and checking of their bodies that the `v4/timpush` attribute commands share
//! ([`super::timpush_directory`]).

use std::collections::BTreeMap;

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_list, account_name, object, user_entries, AccountReader};
use crate::auth::AdminCall;
use crate::directory::{
    AccountKind, Ahead, DirOp, Directory, UserAttrSlots, UserAttrValues, ATTR_SLOTS,
};
use crate::error::Error;

pub const MAX_USERS: usize = 100;
pub const MAX_NAME_BYTES: usize = 50;
pub const MAX_VALUE_BYTES: usize = 50;

fn bad_attr(info: String) -> Error {
    Error::rejected(codes::BAD_ATTR, info)
}

fn slot_named(directory: &Ahead, name: &str, place: &str) -> Result<u8, Error> {
    directory.attr_slot(name).ok_or_else(|| {
        bad_attr(format!(
            "{place} names attribute {}, which is not set: define it with im_set_attr_name",
            echo(name)
        ))
    })
}

/// `AttrNames` as an object `{"0":"sex"}` or as an array indexed by slot.
pub fn read_attr_names(body: &Value) -> Result<Vec<(u8, String)>, Error> {
    let names = object(body, codes::BAD_JSON)?
        .get("AttrNames")
        .ok_or_else(|| {
            Error::rejected(
                codes::BAD_JSON,
                "AttrNames is required: an object of slot (\"0\"..\"9\") to name",
            )
        })?;
    let pairs: Vec<(String, &Value)> = match names {
        Value::Object(map) => map
            .iter()
            .map(|(slot, name)| (slot.clone(), name))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(slot, name)| (slot.to_string(), name))
            .collect(),
        _ => {
            return Err(bad_attr(
                "AttrNames must be an object of slot (\"0\"..\"9\") to name".into(),
            ))
        }
    };
    pairs
        .into_iter()
        .map(|(slot_text, name)| {
            let slot = slot_text
                .parse::<u8>()
                .ok()
                .filter(|slot| (*slot as usize) < ATTR_SLOTS && slot.to_string() == slot_text)
                .ok_or_else(|| {
                    bad_attr(format!(
                        "AttrNames key {} is not a slot; slots are \"0\" to \"9\"",
                        echo(&slot_text)
                    ))
                })?;
            match name.as_str() {
                Some(name) if !name.is_empty() && name.len() <= MAX_NAME_BYTES => {
                    Ok((slot, name.to_owned()))
                }
                _ => Err(bad_attr(format!(
                    "AttrNames[{}] must be a name of 1 to {MAX_NAME_BYTES} bytes",
                    echo(&slot_text)
                ))),
            }
        })
        .collect()
}

/// Refuses names that, merged into the app's, would name two slots alike (90033), in the
/// words of Tencent's sample answer (the name is 1 to 50 bytes, checked already, so it is
/// quoted as it is).
pub fn check_distinct_names(directory: &Ahead, names: &[(u8, String)]) -> Result<(), Error> {
    let mut after = directory.attr_names();
    after.extend(names.iter().cloned());
    for (slot, name) in names {
        if let Some((other, _)) = after.iter().find(|(s, n)| *s != slot && *n == name) {
            return Err(bad_attr(format!(
                "attrName:{name} already exists at index:{other}; each slot needs a name of its own"
            )));
        }
    }
    Ok(())
}

pub async fn set_names(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let names = read_attr_names(&body)?;
    call.tenant
        .write(move |directory| {
            check_distinct_names(directory, &names)?;
            Ok(vec![DirOp::SetAttrNames { names }])
        })
        .await?;
    Ok(Map::new())
}

pub async fn get_names(call: AdminCall, _body: Value) -> Result<Map<String, Value>, Error> {
    let names: Map<String, Value> = call.tenant.read(|d| {
        d.attr_names()
            .into_iter()
            .map(|(slot, name)| (slot.to_string(), Value::String(name)))
            .collect()
    });
    Ok(Map::from_iter([("AttrNames".into(), Value::Object(names))]))
}

pub async fn get(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let accounts = account_list(
        &body,
        "To_Account",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
    )?;
    let user_attrs: Vec<Value> = call.tenant.read(|d| {
        let names = d.attr_names();
        accounts
            .iter()
            .map(|account| json!({"To_Account": account, "Attrs": attrs_by_name(d, &names, account)}))
            .collect()
    });
    Ok(Map::from_iter([(
        "UserAttrs".into(),
        Value::Array(user_attrs),
    )]))
}

/// The attributes `account` holds, by name (`names` being the directory's slot names).
pub fn attrs_by_name(
    directory: &Directory,
    names: &BTreeMap<u8, String>,
    account: &str,
) -> Map<String, Value> {
    directory
        .attrs_of(account)
        .into_iter()
        .filter_map(|(slot, value)| Some((names.get(&slot)?.clone(), Value::String(value))))
        .collect()
}

/// One `im_set_attr` entry as read before the write lock: the account and, when `Attrs` is an
/// object, each attribute name with its value if the value is valid (1 to 50 bytes of text).
#[derive(Debug)]
pub struct SetEntry {
    pub account: String,
    attrs: Option<Vec<(String, Option<String>)>>,
}

impl SetEntry {
    /// An entry whose `Attrs` is an object, its values checked.
    pub fn new(account: String, attrs: impl IntoIterator<Item = (String, String)>) -> SetEntry {
        SetEntry {
            account,
            attrs: Some(
                attrs
                    .into_iter()
                    .map(|(name, value)| {
                        let valid = !value.is_empty() && value.len() <= MAX_VALUE_BYTES;
                        (name, valid.then_some(value))
                    })
                    .collect(),
            ),
        }
    }
}

/// The entries of an `im_set_attr` body, values checked and copied out of the body so that
/// only the names are left to resolve under the write lock.
pub fn read_set_entries(body: &Value, read: AccountReader) -> Result<Vec<SetEntry>, Error> {
    Ok(user_entries(
        body,
        ["UserAttrs", "Attrs", "Attrs"],
        (MAX_USERS, codes::TOO_MANY_USERS, codes::BAD_JSON),
        read,
    )?
    .into_iter()
    .map(|(account, attrs)| SetEntry {
        account,
        attrs: attrs.as_object().map(|attrs| {
            attrs
                .iter()
                .map(|(name, value)| {
                    let value = value
                        .as_str()
                        .filter(|v| !v.is_empty() && v.len() <= MAX_VALUE_BYTES);
                    (name.clone(), value.map(str::to_owned))
                })
                .collect()
        }),
    })
    .collect())
}

/// Resolves the attribute names of `entries` to slots, in the order the checks were always
/// made, so a bad request reports the same first error; the accounts are left as given.
pub fn resolve_set_entries(
    directory: &Ahead,
    entries: Vec<SetEntry>,
) -> Result<Vec<UserAttrValues>, Error> {
    entries
        .into_iter()
        .enumerate()
        .map(|(n, entry)| {
            let place = || format!("UserAttrs[{n}].Attrs");
            let attrs = entry.attrs.ok_or_else(|| {
                bad_attr(format!(
                    "{} must be an object of attribute name to value",
                    place()
                ))
            })?;
            let values = attrs
                .into_iter()
                .map(|(name, value)| {
                    let slot = match directory.attr_slot(&name) {
                        Some(slot) => slot,
                        None => slot_named(directory, &name, &place())?,
                    };
                    let value = value.ok_or_else(|| {
                        Error::rejected(
                            codes::BAD_ATTR_VALUE,
                            format!(
                                "{}.{name} must be a string of 1 to {MAX_VALUE_BYTES} bytes",
                                place()
                            ),
                        )
                    })?;
                    Ok((slot, value))
                })
                .collect::<Result<_, Error>>()?;
            Ok(UserAttrValues {
                account: entry.account,
                values,
            })
        })
        .collect()
}

/// The first of `values`' slots that is for accounts of another kind than `kind`, as the
/// refusal (90035) that says so about `account`.
pub fn other_kind(directory: &Ahead, values: &UserAttrValues, kind: AccountKind) -> Option<Error> {
    let slot = values
        .values
        .iter()
        .map(|(slot, _)| *slot)
        .find(|slot| directory.attr_kind(*slot) != kind)?;
    let name = directory.attr_names().remove(&slot).unwrap_or_default();
    Some(Error::rejected(
        codes::WRONG_ACCOUNT_KIND,
        format!(
            "attribute {} is for {} (AttrTypes {}) and {} is a {}: write it for accounts of that kind",
            echo(&name),
            kind_plural(directory.attr_kind(slot)),
            directory.attr_kind(slot).code(),
            echo(&values.account),
            kind_name(kind),
        ),
    ))
}

fn kind_name(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::UserId => "UserID",
        AccountKind::RegistrationId => "RegistrationID",
    }
}

fn kind_plural(kind: AccountKind) -> &'static str {
    match kind {
        AccountKind::UserId => "UserIDs",
        AccountKind::RegistrationId => "RegistrationIDs",
    }
}

pub async fn set(call: AdminCall, body: Vec<u8>) -> Result<Map<String, Value>, Error> {
    let entries = super::write_bodies::set_entries(&body)?;
    drop(body);
    let known = call
        .tenant
        .known_accounts(entries.iter().map(|entry| entry.account.as_str()));
    call.tenant
        .write_known(known, move |directory| {
            let users = resolve_set_entries(directory, entries)?;
            // The classic commands name UserIDs only.
            if let Some(refusal) = users
                .iter()
                .find_map(|user| other_kind(directory, user, AccountKind::UserId))
            {
                return Err(refusal);
            }
            Ok(vec![DirOp::SetAttrs { users }])
        })
        .await?;
    Ok(Map::new())
}

/// The per-user attribute names of an `im_remove_attr` body, copied out of the body.
pub fn read_remove_entries(
    body: &Value,
    read: AccountReader,
) -> Result<Vec<(String, Value)>, Error> {
    Ok(user_entries(
        body,
        ["UserAttrs", "Attrs", "Attrs"],
        (MAX_USERS, codes::TOO_MANY_USERS, codes::BAD_JSON),
        read,
    )?
    .into_iter()
    .map(|(account, attrs)| (account, attrs.clone()))
    .collect())
}

/// Resolves the attribute names of `entries` to slots; the accounts are left as given.
pub fn resolve_remove_entries(
    directory: &Ahead,
    entries: Vec<(String, Value)>,
) -> Result<Vec<UserAttrSlots>, Error> {
    entries
        .into_iter()
        .enumerate()
        .map(|(n, (account, names))| {
            let place = format!("UserAttrs[{n}].Attrs");
            let names = names
                .as_array()
                .ok_or_else(|| bad_attr(format!("{place} must be an array of attribute names")))?;
            let slots = names
                .iter()
                .map(|name| slot_named(directory, name.as_str().unwrap_or_default(), &place))
                .collect::<Result<_, _>>()?;
            Ok(UserAttrSlots { account, slots })
        })
        .collect()
}

pub async fn remove(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let entries = read_remove_entries(&body, account_name)?;
    let known = call
        .tenant
        .known_accounts(entries.iter().map(|(account, _)| account.as_str()));
    call.tenant
        .write_known(known, move |directory| {
            let users = resolve_remove_entries(directory, entries)?;
            Ok(vec![DirOp::RemoveAttrs { users }])
        })
        .await?;
    Ok(Map::new())
}
