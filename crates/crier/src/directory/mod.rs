//! The directory of one app: its accounts, their tags and attributes, and who is live.
//!
//! Every account gets a dense `u32` the first time it is named (import, login, or a tag or
//! attribute written ahead of import). Each tag and each (attribute slot, value) pair owns a
//! roaring bitmap of account numbers, with the changes since its last merge kept beside it
//! ([`member_set`]); `live` holds the imported or logged-in accounts that are
//! not deleted. A push condition is then bitmap algebra ([`condition`]) cut to `live`.
//!
//! - [`accounts`]: the name ↔ number map.
//! - [`ops`]: the writes, as logged.
//! - [`pending`]: the directory as writes validated but not yet applied will leave it, for
//!   validating the next write of the same commit group.
//! - [`tag_lists`] and [`attr_values`]: the transposes the writes read (which tags, which value
//!   an account holds), so a write costs the account's own tags and values, not the app's.
//! - [`snapshot`]: the versioned on-disk form, so start-up loads bitmaps instead of rebuilding
//!   them from every write ever made.

pub mod accounts;
pub mod attr_values;
pub mod condition;
pub mod known;
pub mod member_set;
pub mod ops;
pub mod pending;
pub mod snapshot;
pub mod stats;
pub mod tag_lists;

use std::collections::BTreeMap;

use hashbrown::HashMap;
use roaring::RoaringBitmap;

pub use accounts::AccountIds;
pub use attr_values::SlotValues;
pub use condition::Condition;
pub use known::KnownAccounts;
pub use member_set::MemberSet;
pub use ops::{AccountKind, DirOp, UserAttrSlots, UserAttrValues, UserTags};
pub use pending::{Ahead, Pending};
pub use tag_lists::TagLists;

use known::UNKNOWN;

/// Attribute slots `"0"`..`"9"`.
pub const ATTR_SLOTS: usize = 10;

#[derive(Default, Clone)]
pub struct Directory {
    accounts: AccountIds,
    live: RoaringBitmap,
    /// Numbers of deleted accounts, never handed out again (see `accounts`).
    retired: RoaringBitmap,
    tag_numbers: HashMap<Box<str>, u32>,
    tags: Vec<(Box<str>, MemberSet)>,
    /// The tags each account holds (the transpose of `tags`), so reading, counting and clearing
    /// an account's tags costs its own tags, not every tag of the app.
    tag_lists: TagLists,
    /// At least the most tags any account holds (it does not shrink when tags are removed), so
    /// the per-account cap is checked without looking each account up while it is far off.
    most_tags_held: usize,
    attr_names: [Option<String>; ATTR_SLOTS],
    /// The account kind of each slot's values; meaningful for named slots only.
    attr_kinds: [AccountKind; ATTR_SLOTS],
    /// Per slot, the holders of each value and the value of each account.
    attr_values: [SlotValues; ATTR_SLOTS],
    /// Buffers of the write path, kept from one write to the next.
    scratch: Scratch,
    /// Which numbers the accounts have, for numbers looked up ahead of a write.
    numbering: known::Numbering,
}

/// Buffers the tag writes reuse, so a warm write path allocates only where the data grows.
///
/// The pairs are packed into one `u64` each ([`pack`]), the first number high: sorted as
/// numbers they come out in the order of the pair, and a comparison is one instruction.
#[derive(Default)]
struct Scratch {
    /// (account number, tag number) a write names, sorted so each account's list is read and
    /// rewritten once.
    pairs: Vec<u64>,
    /// (tag number, account number) to add or remove.
    changed: Vec<u64>,
    list: Vec<u32>,
}

fn pack(high: u32, low: u32) -> u64 {
    (u64::from(high) << 32) | u64::from(low)
}

fn unpack(pair: u64) -> (u32, u32) {
    ((pair >> 32) as u32, pair as u32)
}

/// A copy of the directory starts with empty buffers.
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
    /// The changes (accounts added and removed) not merged into their bitmaps yet
    /// ([`MemberSet`]).
    pub unmerged_bytes: u64,
}

impl Directory {
    pub fn apply(&mut self, op: &DirOp) {
        self.apply_known(op, None);
    }

    /// As [`Self::apply`], with the numbers of its users' accounts where they were looked up
    /// ahead ([`KnownAccounts`]).
    fn apply_known(&mut self, op: &DirOp, known: Option<&[u32]>) {
        let known = |n: usize| known.map_or(UNKNOWN, |ids| ids[n]);
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
                        self.numbering.deleted();
                        self.retired.insert(id);
                        self.live.remove(id);
                        self.clear_tags(id);
                        for slot in &mut self.attr_values {
                            slot.clear(id);
                        }
                    }
                }
            }
            DirOp::AddTags { users } => {
                self.add_tags(users.iter().enumerate().map(|(n, user)| (user, known(n))))
            }
            DirOp::RemoveTags { users } => {
                self.remove_tags(users.iter().enumerate().map(|(n, user)| (user, known(n))))
            }
            DirOp::RemoveAllTags { accounts } => {
                for name in accounts {
                    if let Some(id) = self.accounts.get(name) {
                        self.clear_tags(id);
                    }
                }
            }
            DirOp::SetAttrs { users } => {
                for (n, user) in users.iter().enumerate() {
                    let id = self.number_known(known(n), &user.account);
                    for (slot, value) in &user.values {
                        let slot = &mut self.attr_values[*slot as usize % ATTR_SLOTS];
                        let number = slot.number(value);
                        slot.set(id, number);
                    }
                }
            }
            DirOp::RemoveAttrs { users } => {
                for (n, user) in users.iter().enumerate() {
                    let Some(id) = self.existing_known(known(n), &user.account) else {
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
            DirOp::SetAttrKinds { kinds } => {
                for (slot, kind) in kinds {
                    self.attr_kinds[*slot as usize % ATTR_SLOTS] = *kind;
                }
            }
        }
    }

    /// Applies `ops` in order, as [`Self::apply`] one after the other would. Consecutive tag
    /// additions (and consecutive removals) are applied as one: their (tag, account) pairs are
    /// sorted together, so a bitmap is entered once for all of them, in account order.
    pub fn apply_all(&mut self, ops: &[DirOp]) {
        self.apply_all_known(ops, &[]);
    }

    /// As [`Self::apply_all`], with the numbers of each op's accounts where they were looked
    /// up ahead (`known[n]` for `ops[n]`; missing ones, and ones no longer valid, are looked up
    /// here).
    pub fn apply_all_known(&mut self, ops: &[DirOp], known: &[Option<KnownAccounts>]) {
        let known_for = |n: usize| known.get(n).and_then(Option::as_ref);
        self.warm_accounts(ops, known_for);
        let mut first = 0;
        for run in ops.chunk_by(|a, b| {
            matches!(
                (a, b),
                (DirOp::AddTags { .. }, DirOp::AddTags { .. })
                    | (DirOp::RemoveTags { .. }, DirOp::RemoveTags { .. })
            )
        }) {
            let positions = first..first + run.len();
            first += run.len();
            if !matches!(run[0], DirOp::AddTags { .. } | DirOp::RemoveTags { .. }) {
                for (op, n) in run.iter().zip(positions) {
                    let ids = self.still_known(known_for(n), op);
                    self.apply_known(op, ids);
                }
                continue;
            }
            // No deletion within a run of tag writes: the numbers valid at its start stay so.
            let ids: Vec<Option<&[u32]>> = positions
                .zip(run)
                .map(|(n, op)| self.still_known(known_for(n), op))
                .collect();
            let users = run.iter().zip(&ids).flat_map(|(op, ids)| {
                users_of(op)
                    .iter()
                    .enumerate()
                    .map(move |(n, user)| (user, ids.map_or(UNKNOWN, |ids| ids[n])))
            });
            if matches!(run[0], DirOp::AddTags { .. }) {
                self.add_tags(users);
            } else {
                self.remove_tags(users);
            }
        }
    }

    /// Looks up, without acting on the answers, every account `ops` name, and for tag writes
    /// its tag list. Applying an account's write waits on a chain of cache misses (the name's
    /// slot, its number, its bytes, then its list) and does enough else between two accounts
    /// that the processor follows one chain at a time; this loop does nothing else, so several
    /// accounts' chains are in flight together, and applying then finds their lines loaded.
    /// At 10M accounts (session 12, when the bitmaps were written directly): tag writes
    /// 17-30 % more users/s, attribute writes about 5 %. Accounts whose numbers were looked up
    /// ahead need only their tag lists.
    fn warm_accounts<'k>(
        &self,
        ops: &[DirOp],
        known_for: impl Fn(usize) -> Option<&'k KnownAccounts>,
    ) {
        let mut any = 0usize;
        for (n, op) in ops.iter().enumerate() {
            let ids = self.still_known(known_for(n), op);
            let id_of = |at: usize, name: &str| match ids {
                Some(ids) if ids[at] != UNKNOWN => Some(ids[at]),
                Some(_) => None,
                None => self.accounts.get(name),
            };
            match op {
                DirOp::AddTags { users } | DirOp::RemoveTags { users } => {
                    for (at, user) in users.iter().enumerate() {
                        if let Some(id) = id_of(at, &user.account) {
                            any += self.tag_lists.count(id);
                        }
                    }
                }
                // Only the account: the value column and the value bitmaps read again here
                // cost more than their misses do when applying (measured at 10M: 10-17 %
                // fewer users/s than not warming at all).
                DirOp::SetAttrs { users } if ids.is_none() => {
                    for user in users {
                        any += usize::from(self.accounts.get(&user.account).is_some());
                    }
                }
                DirOp::RemoveAttrs { users } if ids.is_none() => {
                    for user in users {
                        any += usize::from(self.accounts.get(&user.account).is_some());
                    }
                }
                _ => {}
            }
        }
        std::hint::black_box(any);
    }

    /// Merges every tag's and value's changes into its bitmap ([`MemberSet`]). Writes merge
    /// them as they go; this is for a snapshot written from the directory itself, and for
    /// measuring what reads pay while changes wait.
    pub fn merge_changes(&mut self) {
        let tags = self.tags.iter_mut().map(|(_, members)| members);
        let values = self
            .attr_values
            .iter_mut()
            .flat_map(SlotValues::member_sets);
        tags.chain(values).for_each(MemberSet::merge_changes);
    }

    fn number(&mut self, name: &str) -> u32 {
        self.accounts.get_or_insert(name)
    }

    /// The number of `name`, `known` unless [`UNKNOWN`].
    fn number_known(&mut self, known: u32, name: &str) -> u32 {
        if known == UNKNOWN {
            self.number(name)
        } else {
            known
        }
    }

    /// The number of `name` if it has one, `known` unless [`UNKNOWN`].
    fn existing_known(&self, known: u32, name: &str) -> Option<u32> {
        if known == UNKNOWN {
            self.accounts.get(name)
        } else {
            Some(known)
        }
    }

    fn tag_number(&mut self, tag: &str) -> u32 {
        if let Some(&number) = self.tag_numbers.get(tag) {
            return number;
        }
        let number = self.tags.len() as u32;
        self.tags.push((tag.into(), MemberSet::default()));
        self.tag_numbers.insert(tag.into(), number);
        number
    }

    /// Each account's name is looked up once, and its own tag list is read first: the tags it
    /// holds already cost no bitmap probe (at ten million accounts a probe is a dozen cache
    /// misses, most of a write's time). The tags it lacks are then added to their members
    /// ([`MemberSet::add`]: a hash-set insert, the bitmap merged now and then), and its list
    /// is rewritten once.
    ///
    /// Account and tag numbers are handed out in the order `users` names them, so several
    /// writes' users chained are applied as the writes one after the other would be.
    fn add_tags<'a>(&mut self, users: impl Iterator<Item = (&'a UserTags, u32)>) {
        let mut requested = std::mem::take(&mut self.scratch.pairs);
        requested.clear();
        for (user, known) in users {
            let id = self.number_known(known, &user.account);
            for tag in &user.tags {
                requested.push(pack(id, self.tag_number(tag)));
            }
        }
        requested.sort_unstable();
        requested.dedup();
        let mut inserts = std::mem::take(&mut self.scratch.changed);
        inserts.clear();
        let mut list = std::mem::take(&mut self.scratch.list);
        for wanted in requested.chunk_by(|&a, &b| a >> 32 == b >> 32) {
            let id = unpack(wanted[0]).0;
            let before = inserts.len();
            list.clear();
            // Both ascending: merge the held tags with the wanted ones.
            let mut wanted = wanted.iter().map(|&pair| unpack(pair).1).peekable();
            for held in self.tag_lists.tags(id) {
                while let Some(new) = wanted.next_if(|&w| w < held) {
                    list.push(new);
                    inserts.push(pack(new, id));
                }
                wanted.next_if_eq(&held);
                list.push(held);
            }
            for new in wanted {
                list.push(new);
                inserts.push(pack(new, id));
            }
            if inserts.len() > before {
                self.tag_lists.set(id, &list);
                self.most_tags_held = self.most_tags_held.max(list.len());
            }
        }
        // The lists and the bitmaps agree, so a tag missing from the list is new here.
        for &pair in &inserts {
            let (tag_number, id) = unpack(pair);
            self.tags[tag_number as usize].1.add(id);
        }
        self.scratch = Scratch {
            pairs: requested,
            changed: inserts,
            list,
        };
    }

    /// As [`Self::add_tags`]: one lookup per name, the account's list read first, so only the
    /// tags it holds are removed from their members.
    fn remove_tags<'a>(&mut self, users: impl Iterator<Item = (&'a UserTags, u32)>) {
        let mut requested = std::mem::take(&mut self.scratch.pairs);
        requested.clear();
        for (user, known) in users {
            let Some(id) = self.existing_known(known, &user.account) else {
                continue;
            };
            for tag in &user.tags {
                if let Some(&tag_number) = self.tag_numbers.get(tag.as_str()) {
                    requested.push(pack(id, tag_number));
                }
            }
        }
        requested.sort_unstable();
        requested.dedup();
        let mut removals = std::mem::take(&mut self.scratch.changed);
        removals.clear();
        let mut list = std::mem::take(&mut self.scratch.list);
        for unwanted in requested.chunk_by(|&a, &b| a >> 32 == b >> 32) {
            let id = unpack(unwanted[0]).0;
            let before = removals.len();
            list.clear();
            let mut unwanted = unwanted.iter().map(|&pair| unpack(pair).1).peekable();
            for held in self.tag_lists.tags(id) {
                while unwanted.next_if(|&u| u < held).is_some() {}
                if unwanted.next_if_eq(&held).is_some() {
                    removals.push(pack(held, id));
                } else {
                    list.push(held);
                }
            }
            if removals.len() > before {
                self.tag_lists.set(id, &list);
            }
        }
        for &pair in &removals {
            let (tag_number, id) = unpack(pair);
            self.tags[tag_number as usize].1.remove(id);
        }
        self.scratch = Scratch {
            pairs: requested,
            changed: removals,
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
            (Some(id), Some(&tag_number)) => self.tag_lists.tags(id).any(|held| held == tag_number),
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

    /// The account kind of the named slots.
    pub fn attr_kinds(&self) -> BTreeMap<u8, AccountKind> {
        self.attr_names
            .iter()
            .zip(&self.attr_kinds)
            .enumerate()
            .filter(|(_, (name, _))| name.is_some())
            .map(|(slot, (_, kind))| (slot as u8, *kind))
            .collect()
    }

    pub fn attr_kind(&self, slot: u8) -> AccountKind {
        self.attr_kinds[slot as usize % ATTR_SLOTS]
    }

    /// Accounts holding `tag`, ahead-of-import ones included.
    pub fn tag_holders(&self, tag: &str) -> u64 {
        self.tag_numbers
            .get(tag)
            .map_or(0, |&number| self.tags[number as usize].1.len())
    }

    /// Distinct tags some account holds. A pass over the app's tags (an emptiness check each):
    /// tags are never forgotten, so the ones nobody holds any more are skipped here.
    pub fn tags_in_use(&self) -> usize {
        self.tags
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .count()
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
            Condition::Tags { and, or, not } => {
                let tag = |t: &String| {
                    self.tag_numbers
                        .get(t.as_str())
                        .map(|&n| condition::Members::from(&self.tags[n as usize].1))
                };
                let and = (!and.is_empty())
                    .then(|| condition::intersect_all(and.iter().map(tag).collect(), &self.live));
                let or =
                    (!or.is_empty()).then(|| condition::union_all(or.iter().map(tag).collect()));
                let mut base = condition::combine(and, or, &self.live, self.every_member_live());
                if !not.is_empty() {
                    base -= condition::union_all(not.iter().map(tag).collect());
                }
                base
            }
            Condition::Attrs { and, or } => {
                let value = |(slot, v): &(u8, String)| {
                    self.attr_values[*slot as usize % ATTR_SLOTS]
                        .members(v)
                        .map(condition::Members::from)
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
        let tag_bytes: u64 = self.tags.iter().map(|(_, m)| m.bitmap_bytes() as u64).sum();
        let attr_bytes: u64 = self.attr_values.iter().map(SlotValues::bitmap_bytes).sum();
        let unmerged_bytes = self
            .tags
            .iter()
            .map(|(_, m)| m.pending_bytes() as u64)
            .chain(self.attr_values.iter().map(SlotValues::pending_bytes))
            .sum();
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
            unmerged_bytes,
        }
    }
}

/// The users of a tag write (none for other writes).
fn users_of(op: &DirOp) -> &[UserTags] {
    match op {
        DirOp::AddTags { users } | DirOp::RemoveTags { users } => users,
        _ => &[],
    }
}

#[cfg(test)]
mod tests;
