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
}
