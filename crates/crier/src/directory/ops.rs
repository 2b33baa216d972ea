//! The writes a directory accepts. Each is validated before it is logged; applying one is
//! infallible and deterministic, so replaying the log after a snapshot rebuilds the same state.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTags {
    pub account: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAttrValues {
    pub account: String,
    /// (attribute slot, value)
    pub values: Vec<(u8, String)>,
}

/// Which kind of account an attribute slot (`AttrTypes` of `v4/timpush/set_attr_name`) holds
/// values for. A slot named through the classic API is for UserIDs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountKind {
    /// An app account, `AttrTypes` 0.
    #[default]
    UserId,
    /// A device's push registration id, `AttrTypes` 1.
    RegistrationId,
}

impl AccountKind {
    /// The number `AttrTypes` spells this kind with.
    pub fn code(self) -> u8 {
        match self {
            AccountKind::UserId => 0,
            AccountKind::RegistrationId => 1,
        }
    }

    pub fn from_code(code: u64) -> Option<AccountKind> {
        match code {
            0 => Some(AccountKind::UserId),
            1 => Some(AccountKind::RegistrationId),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAttrSlots {
    pub account: String,
    pub slots: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum DirOp {
    /// Imported or logged in: the accounts join "all users".
    Import {
        accounts: Vec<String>,
    },
    /// The accounts leave every audience and lose their tags and attributes.
    Delete {
        accounts: Vec<String>,
    },
    AddTags {
        users: Vec<UserTags>,
    },
    RemoveTags {
        users: Vec<UserTags>,
    },
    RemoveAllTags {
        accounts: Vec<String>,
    },
    SetAttrs {
        users: Vec<UserAttrValues>,
    },
    RemoveAttrs {
        users: Vec<UserAttrSlots>,
    },
    SetAttrNames {
        names: Vec<(u8, String)>,
    },
    /// The account kind of attribute slots (logged with the names it comes with; a slot's kind
    /// is checked not to change before this is logged).
    SetAttrKinds {
        kinds: Vec<(u8, AccountKind)>,
    },
}
