//! Account numbers looked up ahead of a write, on the request's own thread.
//!
//! One thread applies every write of an app, and during a bulk sync it is the bottleneck while
//! the request handlers have CPU to spare. At ten million accounts looking a name up is a
//! chain of cache misses (its slot, its number, where its name starts, the name's bytes):
//! about a quarter of the writer's time in `im_add_tag`. A handler looks its request's
//! accounts up under the directory's read lock ([`Directory::known_accounts`]) and hands the
//! numbers to the writer with the write.
//!
//! A number, once given, stays its account's until the account is deleted (its number is then
//! retired, and the name gets a new one if it comes back), or until the directory is loaded
//! anew from a snapshot. The numbers are used only if neither happened in between
//! ([`Numbering`]); otherwise the writer looks the names up itself, as it does for accounts
//! that had no number yet.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{DirOp, Directory};

/// Marks an account that had no number when looked up.
pub(super) const UNKNOWN: u32 = u32::MAX;

/// Which numbers a directory gives its accounts: the same as long as this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Numbering {
    /// Drawn afresh for every directory built or loaded; copies share it.
    directory: u64,
    /// Deletions applied to it, each of which may have retired a number.
    deletions: u64,
}

static DIRECTORIES: AtomicU64 = AtomicU64::new(0);

impl Default for Numbering {
    fn default() -> Numbering {
        Numbering {
            directory: DIRECTORIES.fetch_add(1, Ordering::Relaxed),
            deletions: 0,
        }
    }
}

impl Numbering {
    pub(super) fn deleted(&mut self) {
        self.deletions += 1;
    }
}

/// The numbers of one write's accounts, in the order its op names them.
#[derive(Debug)]
pub struct KnownAccounts {
    numbering: Numbering,
    ids: Vec<u32>,
}

impl Directory {
    /// Looks `names` up; for the users of a tag or attribute write, in their order.
    pub fn known_accounts<'a>(&self, names: impl Iterator<Item = &'a str>) -> KnownAccounts {
        KnownAccounts {
            numbering: self.numbering,
            ids: names
                .map(|name| self.accounts.get(name).unwrap_or(UNKNOWN))
                .collect(),
        }
    }

    /// The numbers `known` gives the users of `op`, if they are still this directory's: one
    /// per user, [`UNKNOWN`] where the writer must look the name up.
    pub(super) fn still_known<'k>(
        &self,
        known: Option<&'k KnownAccounts>,
        op: &DirOp,
    ) -> Option<&'k [u32]> {
        let known = known.filter(|known| known.numbering == self.numbering)?;
        let ids = (Some(known.ids.len()) == users_in(op)).then_some(&known.ids[..])?;
        debug_assert!(
            ids.iter()
                .zip(accounts_of(op))
                .all(|(&id, name)| id == UNKNOWN || self.accounts.name(id) == Some(name)),
            "the numbers looked up ahead are of another write's accounts"
        );
        Some(ids)
    }
}

/// The accounts a write's users name, in order: what a request looks up
/// ([`Directory::known_accounts`]), and what the numbers are checked against in tests.
pub(super) fn accounts_of(op: &DirOp) -> Vec<&str> {
    match op {
        DirOp::AddTags { users } | DirOp::RemoveTags { users } => {
            users.iter().map(|user| user.account.as_str()).collect()
        }
        DirOp::SetAttrs { users } => users.iter().map(|user| user.account.as_str()).collect(),
        DirOp::RemoveAttrs { users } => users.iter().map(|user| user.account.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// How many users a write names, for the writes whose accounts are looked up ahead.
fn users_in(op: &DirOp) -> Option<usize> {
    match op {
        DirOp::AddTags { users } | DirOp::RemoveTags { users } => Some(users.len()),
        DirOp::SetAttrs { users } => Some(users.len()),
        DirOp::RemoveAttrs { users } => Some(users.len()),
        _ => None,
    }
}
