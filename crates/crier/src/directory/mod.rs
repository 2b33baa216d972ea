//! The directory of one app: its accounts, their tags and attributes, and who is live.
//!
//! Every account gets a dense `u32` the first time it is named (import, login, or a tag or
//! attribute written ahead of import). Each tag and each (attribute slot, value) pair owns a
//! roaring bitmap of account numbers; `live` holds the imported or logged-in accounts that are
//! not deleted. A push condition is then bitmap algebra ([`condition`]) cut to `live`.
//!
//! - [`accounts`]: the name ↔ number map.
//! - [`ops`]: the writes, as logged.
//! - [`snapshot`]: the versioned on-disk form, so start-up loads bitmaps instead of rebuilding
//!   them from every write ever made.

pub mod accounts;
pub mod condition;
pub mod ops;
pub mod snapshot;
pub mod stats;
pub mod tag_lists;

use std::collections::{BTreeMap, HashMap};

use roaring::RoaringBitmap;

pub use accounts::AccountIds;
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
    attr_names: [Option<String>; ATTR_SLOTS],
    attr_values: [HashMap<Box<str>, RoaringBitmap>; ATTR_SLOTS],
    /// Per slot, an upper bound of the account numbers holding a value (`None`: nobody), so
    /// setting the first value of a new account skips the scan of the slot's values.
    attr_max: [Option<u32>; ATTR_SLOTS],
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
                        for slot in 0..ATTR_SLOTS {
                            self.clear_attr(id, slot);
                        }
                    }
                }
            }
            DirOp::AddTags { users } => {
                let mut held = Vec::new();
                for user in users {
                    let id = self.number(&user.account);
                    held.clear();
                    for tag in &user.tags {
                        let tag_number = self.tag_number(tag);
                        // The bitmaps and the lists agree, so a tag new to the bitmap is new
                        // to the list.
                        if self.tags[tag_number as usize].1.insert(id) {
                            held.push(tag_number);
                        }
                    }
                    if !held.is_empty() {
                        held.extend(self.tag_lists.tags(id));
                        held.sort_unstable();
                        self.tag_lists.set(id, &held);
                    }
                }
            }
            DirOp::RemoveTags { users } => {
                let mut removed = Vec::new();
                for user in users {
                    let Some(id) = self.accounts.get(&user.account) else {
                        continue;
                    };
                    removed.clear();
                    for tag in &user.tags {
                        let Some(&tag_number) = self.tag_numbers.get(tag.as_str()) else {
                            continue;
                        };
                        if self.tags[tag_number as usize].1.remove(id) {
                            removed.push(tag_number);
                        }
                    }
                    if !removed.is_empty() {
                        removed.sort_unstable();
                        let kept: Vec<u32> = self
                            .tag_lists
                            .tags(id)
                            .filter(|tag| removed.binary_search(tag).is_err())
                            .collect();
                        self.tag_lists.set(id, &kept);
                    }
                }
            }
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
                        let slot = *slot as usize % ATTR_SLOTS;
                        if self.attr_values[slot]
                            .get(value.as_str())
                            .is_some_and(|members| members.contains(id))
                        {
                            continue;
                        }
                        self.clear_attr(id, slot);
                        self.attr_values[slot]
                            .entry(value.as_str().into())
                            .or_default()
                            .insert(id);
                        self.attr_max[slot] = self.attr_max[slot].max(Some(id));
                    }
                }
            }
            DirOp::RemoveAttrs { users } => {
                for user in users {
                    let Some(id) = self.accounts.get(&user.account) else {
                        continue;
                    };
                    for slot in &user.slots {
                        self.clear_attr(id, *slot as usize % ATTR_SLOTS);
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

    fn clear_tags(&mut self, id: u32) {
        if self.tag_lists.count(id) == 0 {
            return;
        }
        for tag_number in self.tag_lists.tags(id) {
            self.tags[tag_number as usize].1.remove(id);
        }
        self.tag_lists.set(id, &[]);
    }

    /// Removes the value `id` holds in `slot`, if any. Scans the slot's values unless `id` is
    /// above every account number that ever got a value there (an account's first values).
    fn clear_attr(&mut self, id: u32, slot: usize) {
        if self.attr_max[slot].is_none_or(|max| id > max) {
            return;
        }
        for members in self.attr_values[slot].values_mut() {
            if members.remove(id) {
                return;
            }
        }
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
        let mut attrs = BTreeMap::new();
        for (slot, values) in self.attr_values.iter().enumerate() {
            if let Some((value, _)) = values.iter().find(|(_, members)| members.contains(id)) {
                attrs.insert(slot as u8, value.to_string());
            }
        }
        attrs
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
                    self.attr_values[*slot as usize % ATTR_SLOTS].get(v.as_str())
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
        let attr_bytes: u64 = self
            .attr_values
            .iter()
            .flat_map(|v| v.values())
            .map(|m| m.serialized_size() as u64)
            .sum();
        DirectoryStats {
            accounts: self.accounts.len() as u64,
            live: self.live.len(),
            tags: self.tags.len() as u64,
            attr_values: self.attr_values.iter().map(|v| v.len() as u64).sum(),
            bitmap_bytes: tag_bytes + attr_bytes + self.live.serialized_size() as u64,
            account_map_bytes: self.accounts.heap_bytes() as u64,
            tag_count_bytes: self.tag_lists.heap_bytes() as u64,
        }
    }
}

#[cfg(test)]
mod tests;
