//! `im_set_attr_name`, `im_get_attr_name`, `im_get_attr`, `im_set_attr`, `im_remove_attr`.

use std::collections::BTreeMap;

use crier_proto::codes;
use crier_proto::echo::echo;
use serde_json::{json, Map, Value};

use super::fields::{account_list, object, user_entries};
use crate::auth::AdminCall;
use crate::directory::{Ahead, DirOp, UserAttrSlots, UserAttrValues, ATTR_SLOTS};
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

pub async fn set_names(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let names = read_attr_names(&body)?;
    call.tenant
        .write(move |directory| {
            let mut after = directory.attr_names();
            after.extend(names.iter().cloned());
            let mut seen = BTreeMap::new();
            for (slot, name) in &after {
                if let Some(other) = seen.insert(name, slot) {
                    return Err(bad_attr(format!(
                        "attribute name {} would name slots {other} and {slot}; names must differ",
                        echo(name)
                    )));
                }
            }
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
            .map(|account| {
                let attrs: Map<String, Value> = d
                    .attrs_of(account)
                    .into_iter()
                    .filter_map(|(slot, value)| {
                        Some((names.get(&slot)?.clone(), Value::String(value)))
                    })
                    .collect();
                json!({"To_Account": account, "Attrs": attrs})
            })
            .collect()
    });
    Ok(Map::from_iter([(
        "UserAttrs".into(),
        Value::Array(user_attrs),
    )]))
}

/// One `im_set_attr` entry as read before the write lock: the account and, when `Attrs` is an
/// object, each attribute name with its value if the value is valid (1 to 50 bytes of text).
struct SetEntry {
    account: String,
    attrs: Option<Vec<(String, Option<String>)>>,
}

pub async fn set(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    // The values are checked and copied out of the body before the write lock; under it only
    // the names are resolved to slots (they change with `im_set_attr_name`), in the order the
    // checks were always made, so a bad request reports the same first error.
    let entries: Vec<SetEntry> = user_entries(
        &body,
        "UserAttrs",
        "Attrs",
        "Attrs",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
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
    .collect();
    call.tenant
        .write(move |directory| {
            let users = entries
                .into_iter()
                .enumerate()
                .map(|(n, entry)| {
                    let place = || format!("UserAttrs[{n}].Attrs");
                    let attrs = entry.attrs.ok_or_else(|| {
                        bad_attr(format!("{} must be an object of attribute name to value", place()))
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
                                    format!("{}.{name} must be a string of 1 to {MAX_VALUE_BYTES} bytes", place()),
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
                .collect::<Result<_, Error>>()?;
            Ok(vec![DirOp::SetAttrs { users }])
        })
        .await?;
    Ok(Map::new())
}

pub async fn remove(call: AdminCall, body: Value) -> Result<Map<String, Value>, Error> {
    let entries: Vec<(String, Value)> = user_entries(
        &body,
        "UserAttrs",
        "Attrs",
        "Attrs",
        MAX_USERS,
        codes::TOO_MANY_USERS,
        codes::BAD_JSON,
    )?
    .into_iter()
    .map(|(account, attrs)| (account, attrs.clone()))
    .collect();
    call.tenant
        .write(move |directory| {
            let users = entries
                .into_iter()
                .enumerate()
                .map(|(n, (account, names))| {
                    let place = format!("UserAttrs[{n}].Attrs");
                    let names = names.as_array().ok_or_else(|| {
                        bad_attr(format!("{place} must be an array of attribute names"))
                    })?;
                    let slots = names
                        .iter()
                        .map(|name| {
                            slot_named(directory, name.as_str().unwrap_or_default(), &place)
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(UserAttrSlots { account, slots })
                })
                .collect::<Result<_, Error>>()?;
            Ok(vec![DirOp::RemoveAttrs { users }])
        })
        .await?;
    Ok(Map::new())
}
