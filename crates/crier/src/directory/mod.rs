//! The directory of one app: its accounts, their tags and attributes, and who is live.
//!
//! Every account gets a dense `u32` the first time it is named (import, login, or a tag or
//! attribute written ahead of import). Each tag and each (attribute slot, value) pair owns a
//! roaring bitmap of account numbers; `live` holds the imported or logged-in accounts that are
//! not deleted. A push condition is then bitmap algebra ([`condition`]) cut to `live`.
//!
//! - [`accounts`]: the name ↔ number map.
//! - [`ops`]: the writes, as logged.
//! - [`tag_lists`] and [`attr_values`]: the transposes the writes read (which tags, which value
//!   an account holds), so a write costs the account's own tags and values, not the app's.
//! - [`snapshot`]: the versioned on-disk form, so start-up loads bitmaps instead of rebuilding
//!   them from every write ever made.

pub mod accounts;
pub mod attr_values;
pub mod condition;
pub mod ops;
pub mod snapshot;
pub mod tag_lists;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use roaring::RoaringBitmap;

pub use accounts::AccountIds;
pub use attr_values::SlotValues;
pub use condition::Condition;
pub use ops::{DirOp, UserAttrSlots, UserAttrValues, UserTags};
pub use tag_lists::TagLists;

/// Attribute slots `"0"`..`"9"`.
pub const ATTR_SLOTS: usize = 10;

#[derive(Default, Clone)]
pub struct Directory {
    accounts: AccountIds,
    live: RoaringBitmap,
    /// Numbers of deleted accounts, never handed out again (see `accounts`).
    retired: RoaringBitmap,
    tag_numbers: HashMap<Box<str>, u32>,
    tags: Vec<(Box<str>, RoaringBitmap)>,
    /// The tags each account holds (the transpose of `tags`), so reading, counting and clearing
    /// an account's tags costs its own tags, not every tag of the app.
    tag_lists: TagLists,
    /// At least the most tags any account holds (it does not shrink when tags are removed), so
    /// the per-account cap is checked without looking each account up while it is far off.
    most_tags_held: usize,
    attr_names: [Option<String>; ATTR_SLOTS],
    /// Per slot, the holders of each value and the value of each account.
    attr_values: [SlotValues; ATTR_SLOTS],
    /// Buffers of the write path, kept from one write to the next.
    scratch: Scratch,
}

/// Buffers the tag writes reuse, so a warm write path allocates only where the data grows.
#[derive(Default)]
struct Scratch {
    /// (tag number, account number) of one write, sorted so each bitmap is visited once.
    pairs: Vec<(u32, u32)>,
    /// (account number, tag number) that changed, sorted so each account's list is
    /// rewritten once.
    changed: Vec<(u32, u32)>,
    list: Vec<u32>,
}

/// A copy of the directory (a snapshot's) starts with empty buffers.
impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch::default()
    }
}

/// Sizes for metrics and the benchmark's memory report.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectoryStats {
    pub accounts: u64,
    pub live: u64,
    pub tags: u64,
    pub attr_values: u64,
    pub bitmap_bytes: u64,
    pub account_map_bytes: u64,
    /// The per-account tag lists ([`TagLists`]), which also give the per-account counts.
    pub tag_count_bytes: u64,
    /// The per-account value columns of the attribute slots in use ([`SlotValues`]).
    pub attr_index_bytes: u64,
    /// Attribute slots some value was ever set in: the index's budget is 4 bytes per account
    /// for each.
    pub attr_slots_in_use: u64,
}

impl Directory {
    pub fn apply(&mut self, op: &DirOp) {
        match op {
            DirOp::Import { accounts } => {
                for name in accounts {
                    let id = self.number(name);
                    self.live.insert(id);
                }
            }
            DirOp::Delete { accounts } => {
                for name in accounts {
                    if let Some(id) = self.accounts.retire(name) {
                        self.retired.insert(id);
                        self.live.remove(id);
                        self.clear_tags(id);
                        for slot in &mut self.attr_values {
                            slot.clear(id);
                        }
                    }
                }
            }
            DirOp::AddTags { users } => self.add_tags(users),
            DirOp::RemoveTags { users } => self.remove_tags(users),
            DirOp::RemoveAllTags { accounts } => {
                for name in accounts {
                    if let Some(id) = self.accounts.get(name) {
                        self.clear_tags(id);
                    }
                }
            }
            DirOp::SetAttrs { users } => {
                for user in users {
                    let id = self.number(&user.account);
                    for (slot, value) in &user.values {
                        let slot = &mut self.attr_values[*slot as usize % ATTR_SLOTS];
                        let number = slot.number(value);
                        slot.set(id, number);
                    }
                }
            }
            DirOp::RemoveAttrs { users } => {
                for user in users {
                    let Some(id) = self.accounts.get(&user.account) else {
                        continue;
                    };
                    for slot in &user.slots {
                        self.attr_values[*slot as usize % ATTR_SLOTS].clear(id);
                    }
                }
            }
            DirOp::SetAttrNames { names } => {
                for (slot, name) in names {
                    self.attr_names[*slot as usize % ATTR_SLOTS] = Some(name.clone());
                }
            }
        }
    }

    fn number(&mut self, name: &str) -> u32 {
        self.accounts.get_or_insert(name)
    }

    fn tag_number(&mut self, tag: &str) -> u32 {
        if let Some(&number) = self.tag_numbers.get(tag) {
            return number;
        }
        let number = self.tags.len() as u32;
        self.tags.push((tag.into(), RoaringBitmap::new()));
        self.tag_numbers.insert(tag.into(), number);
        number
    }

    /// Each account's name is looked up once; the (tag, account) pairs are then sorted, so
    /// each tag bitmap is entered once per write and filled in account order, and each
    /// account's list is rewritten once with all its new tags.
    fn add_tags(&mut self, users: &[UserTags]) {
        let mut pairs = std::mem::take(&mut self.scratch.pairs);
        pairs.clear();
        for user in users {
            let id = self.number(&user.account);
            for tag in &user.tags {
                pairs.push((self.tag_number(tag), id));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut changed = std::mem::take(&mut self.scratch.changed);
        changed.clear();
        for &(tag_number, id) in &pairs {
            // The bitmaps and the lists agree, so a tag new to the bitmap is new to the list.
            if self.tags[tag_number as usize].1.insert(id) {
                changed.push((id, tag_number));
            }
        }
        changed.sort_unstable();
        let mut list = std::mem::take(&mut self.scratch.list);
        for added in changed.chunk_by(|a, b| a.0 == b.0) {
            let id = added[0].0;
            list.clear();
            list.extend(self.tag_lists.tags(id));
            list.extend(added.iter().map(|&(_, tag_number)| tag_number));
            list.sort_unstable();
            self.tag_lists.set(id, &list);
            self.most_tags_held = self.most_tags_held.max(list.len());
        }
        self.scratch = Scratch {
            pairs,
            changed,
            list,
        };
    }

    /// As [`Self::add_tags`]: one lookup per name, each bitmap entered once.
    fn remove_tags(&mut self, users: &[UserTags]) {
        let mut pairs = std::mem::take(&mut self.scratch.pairs);
        pairs.clear();
        for user in users {
            let Some(id) = self.accounts.get(&user.account) else {
                continue;
            };
            for tag in &user.tags {
                if let Some(&tag_number) = self.tag_numbers.get(tag.as_str()) {
                    pairs.push((tag_number, id));
                }
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut changed = std::mem::take(&mut self.scratch.changed);
        changed.clear();
        for &(tag_number, id) in &pairs {
            if self.tags[tag_number as usize].1.remove(id) {
                changed.push((id, tag_number));
            }
        }
        changed.sort_unstable();
        let mut list = std::mem::take(&mut self.scratch.list);
        for removed in changed.chunk_by(|a, b| a.0 == b.0) {
            let id = removed[0].0;
            list.clear();
            // Both ascending: one merge-like pass.
            let mut gone = removed.iter().map(|&(_, tag_number)| tag_number).peekable();
            for tag_number in self.tag_lists.tags(id) {
                while gone.next_if(|&g| g < tag_number).is_some() {}
                if gone.next_if_eq(&tag_number).is_none() {
                    list.push(tag_number);
                }
            }
            self.tag_lists.set(id, &list);
        }
        self.scratch = Scratch {
            pairs,
            changed,
            list,
        };
    }

    fn clear_tags(&mut self, id: u32) {
        if self.tag_lists.count(id) == 0 {
            return;
        }
        for tag_number in self.tag_lists.tags(id) {
            self.tags[tag_number as usize].1.remove(id);
        }
        self.tag_lists.set(id, &[]);
    }

    pub fn account_number(&self, name: &str) -> Option<u32> {
        self.accounts.get(name)
    }

    pub fn account_name(&self, id: u32) -> Option<&str> {
        self.accounts.name(id)
    }

    pub fn is_live(&self, name: &str) -> bool {
        self.accounts
            .get(name)
            .is_some_and(|id| self.live.contains(id))
    }

    pub fn live(&self) -> &RoaringBitmap {
        &self.live
    }

    /// An upper bound of [`Self::tag_count`] over every account.
    pub fn most_tags_held(&self) -> usize {
        self.most_tags_held
    }

    pub fn tag_count(&self, name: &str) -> usize {
        self.accounts
            .get(name)
            .map_or(0, |id| self.tag_lists.count(id))
    }

    pub fn holds_tag(&self, name: &str, tag: &str) -> bool {
        match (self.accounts.get(name), self.tag_numbers.get(tag)) {
            (Some(id), Some(&tag_number)) => self.tags[tag_number as usize].1.contains(id),
            _ => false,
        }
    }

    /// Tags of an account, in the order the tags were first used in the app (tag numbers are
    /// handed out in that order).
    pub fn tags_of(&self, name: &str) -> Vec<String> {
        let Some(id) = self.accounts.get(name) else {
            return Vec::new();
        };
        self.tag_lists
            .tags(id)
            .map(|tag_number| self.tags[tag_number as usize].0.to_string())
            .collect()
    }

    /// Tag counts per account number, as the snapshot stores them (saturating at 255).
    fn saturated_tag_counts(&self) -> impl Iterator<Item = u8> + '_ {
        (0..self.accounts.len()).map(|id| self.tag_lists.count(id).min(255) as u8)
    }

    /// Attribute values of an account by slot.
    pub fn attrs_of(&self, name: &str) -> BTreeMap<u8, String> {
        let Some(id) = self.accounts.get(name) else {
            return BTreeMap::new();
        };
        self.attr_values
            .iter()
            .enumerate()
            .filter_map(|(slot, values)| Some((slot as u8, values.value_of(id)?.to_owned())))
            .collect()
    }

    pub fn attr_names(&self) -> BTreeMap<u8, String> {
        self.attr_names
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| Some((slot as u8, name.clone()?)))
            .collect()
    }

    pub fn attr_slot(&self, name: &str) -> Option<u8> {
        self.attr_names
            .iter()
            .position(|n| n.as_deref() == Some(name))
            .map(|slot| slot as u8)
    }

    /// The live accounts matching `condition`. Heavy at scale: call it off the async runtime.
    pub fn audience(&self, condition: &Condition) -> RoaringBitmap {
        match condition {
            Condition::All => self.live.clone(),
            Condition::Tags { and, or } => {
                let tag = |t: &String| {
                    self.tag_numbers
                        .get(t.as_str())
                        .map(|&n| &self.tags[n as usize].1)
                };
                let and = (!and.is_empty())
                    .then(|| condition::intersect_all(and.iter().map(tag).collect(), &self.live));
                let or =
                    (!or.is_empty()).then(|| condition::union_all(or.iter().map(tag).collect()));
                condition::combine(and, or, &self.live, self.every_member_live())
            }
            Condition::Attrs { and, or } => {
                let value = |(slot, v): &(u8, String)| {
                    self.attr_values[*slot as usize % ATTR_SLOTS].members(v)
                };
                let and = (!and.is_empty())
                    .then(|| condition::intersect_all(and.iter().map(value).collect(), &self.live));
                let or =
                    (!or.is_empty()).then(|| condition::union_all(or.iter().map(value).collect()));
                condition::combine(and, or, &self.live, self.every_member_live())
            }
        }
    }

    /// Every numbered account is live or deleted. Deleted accounts leave every tag and value
    /// set, so then those sets hold live accounts only; an account named by a tag or attribute
    /// write before its import or first login is neither.
    fn every_member_live(&self) -> bool {
        u64::from(self.accounts.len()) == self.live.len() + self.retired.len()
    }

    pub fn stats(&self) -> DirectoryStats {
        let tag_bytes: u64 = self
            .tags
            .iter()
            .map(|(_, m)| m.serialized_size() as u64)
            .sum();
        let attr_bytes: u64 = self.attr_values.iter().map(SlotValues::bitmap_bytes).sum();
        DirectoryStats {
            accounts: self.accounts.len() as u64,
            live: self.live.len(),
            tags: self.tags.len() as u64,
            attr_values: self.attr_values.iter().map(|v| v.len() as u64).sum(),
            bitmap_bytes: tag_bytes + attr_bytes + self.live.serialized_size() as u64,
            account_map_bytes: self.accounts.heap_bytes() as u64,
            tag_count_bytes: self.tag_lists.heap_bytes() as u64,
            attr_index_bytes: self
                .attr_values
                .iter()
                .map(|slot| slot.index_bytes() as u64)
                .sum(),
            attr_slots_in_use: self.attr_values.iter().filter(|s| !s.is_empty()).count() as u64,
        }
    }
}

#[cfg(test)]
mod tests;
