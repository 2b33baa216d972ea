//! Reading fields of Tencent request bodies, with the codes and messages the contract wants.

use crier_proto::echo::echo;
use crier_proto::usersig;
use serde_json::{Map, Value};

use crate::error::Error;

/// Tencent's limit on an account name (UserID).
pub const MAX_ACCOUNT_BYTES: usize = usersig::MAX_IDENTIFIER_BYTES;

pub fn object(body: &Value, bad: u32) -> Result<&Map<String, Value>, Error> {
    body.as_object()
        .ok_or_else(|| Error::rejected(bad, "the request body must be a JSON object"))
}

/// An account name: what a UserSig can be signed for (see `usersig::check_identifier`), so
/// every account written can also log in.
pub fn account_name(value: &Value, place: &str, bad: u32) -> Result<String, Error> {
    match value.as_str() {
        Some(name) if usersig::check_identifier(name).is_ok() => Ok(name.to_owned()),
        Some(name) => Err(Error::rejected(
            bad,
            format!(
                "{place} {} must be 1 to {MAX_ACCOUNT_BYTES} bytes without control characters",
                echo(name)
            ),
        )),
        None if value.is_null() => Err(Error::rejected(
            bad,
            format!("{place} is missing: it is required, a string account name"),
        )),
        None => Err(Error::rejected(
            bad,
            format!("{place} must be a string account name"),
        )),
    }
}

/// The array `body[key]`, refused past `max` entries with `too_many`.
pub fn array<'a>(
    body: &'a Value,
    key: &str,
    max: usize,
    too_many: u32,
    bad: u32,
) -> Result<&'a [Value], Error> {
    let items = body
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::rejected(bad, format!("{key} is required and must be an array")))?;
    if items.len() > max {
        return Err(Error::rejected(
            too_many,
            format!(
                "{key} holds {} entries; at most {max} per request",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// Reads one account of a request body: the value, where it is (for the message), and the
/// code of a bad one.
pub type AccountReader = fn(&Value, &str, u32) -> Result<String, Error>;

/// A `To_Account` of the `v4/timpush` commands: any string. Which account (or device token)
/// it names is looked up later; one that names none is a fault of that item alone (70107),
/// not of the request, and is echoed back as given.
pub fn any_account(value: &Value, place: &str, bad: u32) -> Result<String, Error> {
    match value.as_str() {
        Some(text) => Ok(text.to_owned()),
        None if value.is_null() => Err(Error::rejected(
            bad,
            format!("{place} is missing: it is required, a UserID or a device token"),
        )),
        None => Err(Error::rejected(
            bad,
            format!("{place} must be a string, a UserID or a device token"),
        )),
    }
}

/// The account names in `body[key]`.
pub fn account_list(
    body: &Value,
    key: &str,
    max: usize,
    too_many: u32,
    bad: u32,
) -> Result<Vec<String>, Error> {
    account_list_read(body, key, (max, too_many, bad), account_name)
}

/// The accounts in `body[key]`, each read with `read`: more than `max` are refused with
/// `too_many`, a bad one with `bad`.
pub fn account_list_read(
    body: &Value,
    key: &str,
    (max, too_many, bad): (usize, u32, u32),
    read: AccountReader,
) -> Result<Vec<String>, Error> {
    let items = array(body, key, max, too_many, bad)?;
    items
        .iter()
        .enumerate()
        .map(|(n, item)| read(item, &format!("{key}[{n}]"), bad))
        .collect()
}

/// Per-user entries of a tag or attribute write: `{"<list_key>":[{"To_Account":..,"<inner>":..}]}`,
/// also accepting `<alt_key>` for the list and the flat `{"To_Account":..,"<inner>":..}` form.
/// Each `To_Account` is read with `read`.
pub fn user_entries<'a>(
    body: &'a Value,
    [list_key, alt_key, inner]: [&str; 3],
    (max, too_many, bad): (usize, u32, u32),
    read: AccountReader,
) -> Result<Vec<(String, &'a Value)>, Error> {
    let fields = object(body, bad)?;
    let entries: Vec<&Value> = if fields.get("To_Account").is_some_and(Value::is_string) {
        vec![body]
    } else {
        let key = if fields.get(list_key).is_some() {
            list_key
        } else {
            alt_key
        };
        let items = fields.get(key).and_then(Value::as_array).ok_or_else(|| {
            Error::rejected(
                bad,
                format!(
                    "{list_key} is required: an array of {{\"To_Account\": ..., \"{inner}\": ...}}"
                ),
            )
        })?;
        if items.len() > max {
            return Err(Error::rejected(
                too_many,
                format!(
                    "{list_key} holds {} users; at most {max} per request",
                    items.len()
                ),
            ));
        }
        items.iter().collect()
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(n, entry)| {
            let account = read(
                entry.get("To_Account").unwrap_or(&Value::Null),
                &format!("{list_key}[{n}].To_Account"),
                bad,
            )?;
            let value = entry.get(inner).ok_or_else(|| {
                Error::rejected(bad, format!("{list_key}[{n}].{inner} is required"))
            })?;
            Ok((account, value))
        })
        .collect()
}
