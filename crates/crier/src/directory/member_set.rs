//! The accounts holding one tag or one attribute value: a roaring bitmap, and the accounts
//! added to it and removed from it since it was last merged, kept apart in two small hash sets.
//!
//! At ten million accounts an insert into a bitmap or a removal from it is a chain of cache
//! misses (its container, then a binary search in an array of a few thousand members, then a
//! move of half of it): about 1 µs on the benchmark machine, most of a bulk write. A hash set
//! of a few thousand accounts stays in the caches. When the two sets together reach a 64th
//! of the bitmap (at least [`MERGE_AT_LEAST`], at most [`MERGE_AT_MOST`]; [`MERGE_AT_DENSE`]
//! when its containers are bitmaps), they are sorted and merged in, each container they touch
//! rebuilt once for a few dozen changes instead of moved once per change. Timed apart at 10M accounts (interleaved groups of 3,000 changes, the
//! benchmark's Zipf tags, then its ten attributes): a tag insert 1,100 ns directly, 190 ns with
//! its additions in a plain list; an attribute change (a removal and an insert) 1,440 ns
//! directly, 990 ns with the additions listed, 590 ns with both in hash sets.
//!
//! The caller knows which accounts are members (the per-account tag lists, the value columns):
//! [`MemberSet::add`] is given non-members and [`MemberSet::remove`] members, so neither looks
//! at the bitmap.
//!
//! Reads pay for the sets when they are not empty: an audience sorts copies of them into small
//! bitmaps ([`MemberSet::parts`]) and [`super::condition`] combines the parts without
//! materialising each set whole. After a merge the hash sets' memory is given back, so they
//! hold memory only for changes not merged yet (reported apart from the bitmaps,
//! [`MemberSet::pending_bytes`]).

use std::borrow::Cow;

use hashbrown::HashSet;
use roaring::RoaringBitmap;

use super::condition::{per_container, Members, ARRAY_MAX};

/// Changes are not merged while fewer than this, however small the bitmap: merging a small
/// bitmap is cheap, but doing it every few changes is not.
const MERGE_AT_LEAST: usize = 32;
/// Nor kept past this: a merge is a stall of the writer, and a read sorts the changes.
const MERGE_AT_MOST: usize = 4096;
/// The changes are merged at this fraction of the bitmap's size: each container is then
/// rebuilt for about this many times fewer changes than it holds members.
const MERGE_FRACTION: u64 = 64;
/// Where the bitmap's containers are bitmaps rather than arrays, merging costs a bit flipped
/// per change, a cache miss each however many are merged at once: such sets (the popular tags
/// and values, the biggest) merge early, so that reads find few changes to combine.
const MERGE_AT_DENSE: usize = 256;

#[derive(Clone, Default)]
pub struct MemberSet {
    merged: RoaringBitmap,
    /// Members since the last merge that are not in `merged`.
    added: HashSet<u32>,
    /// Accounts of `merged` that are no longer members.
    removed: HashSet<u32>,
    /// The count of changes that triggers a merge, set from `merged`'s size at each merge.
    merge_at: usize,
}

impl MemberSet {
    pub fn from_bitmap(merged: RoaringBitmap) -> MemberSet {
        let merge_at = merge_at(&merged);
        MemberSet {
            merged,
            merge_at,
            ..MemberSet::default()
        }
    }

    /// Adds an account that is not a member.
    pub fn add(&mut self, id: u32) {
        debug_assert!(!self.contains(id), "account {id} is a member already");
        if !self.removed.remove(&id) {
            self.added.insert(id);
        }
        self.merge_if_due();
    }

    /// Removes an account that is a member.
    pub fn remove(&mut self, id: u32) {
        debug_assert!(self.contains(id), "account {id} is not a member");
        if !self.added.remove(&id) {
            self.removed.insert(id);
        }
        self.merge_if_due();
    }

    pub fn contains(&self, id: u32) -> bool {
        self.added.contains(&id) || (self.merged.contains(id) && !self.removed.contains(&id))
    }

    pub fn len(&self) -> u64 {
        self.merged.len() + self.added.len() as u64 - self.removed.len() as u64
    }

    /// Without counting the bitmap's members unless removals wait (`len` walks its
    /// containers; `Directory::tags_in_use` asks this of every tag).
    pub fn is_empty(&self) -> bool {
        if !self.added.is_empty() {
            return false;
        }
        if self.removed.is_empty() {
            return self.merged.is_empty();
        }
        self.merged.len() == self.removed.len() as u64
    }

    /// Members that are also in `set`.
    pub fn intersection_len(&self, set: &RoaringBitmap) -> u64 {
        let count = |changes: &HashSet<u32>| changes.iter().filter(|&&id| set.contains(id)).count();
        self.merged.intersection_len(set) + count(&self.added) as u64 - count(&self.removed) as u64
    }

    /// The members as the bitmap, what was removed from it and what was added beside it, the
    /// last two as bitmaps of their own (`None` when empty).
    pub fn parts(&self) -> (&RoaringBitmap, Option<RoaringBitmap>, Option<RoaringBitmap>) {
        (&self.merged, sorted(&self.removed), sorted(&self.added))
    }

    /// Every member in one bitmap: borrowed when no change waits to be merged.
    pub fn to_bitmap(&self) -> Cow<'_, RoaringBitmap> {
        let (merged, removed, added) = self.parts();
        if removed.is_none() && added.is_none() {
            return Cow::Borrowed(merged);
        }
        let mut whole = merged - removed.unwrap_or_default();
        whole |= added.unwrap_or_default();
        Cow::Owned(whole)
    }

    /// The bitmap, without the changes since its last merge.
    pub fn bitmap(&self) -> &RoaringBitmap {
        &self.merged
    }

    /// Members not in [`Self::bitmap`], and accounts of it that are not members.
    pub fn changes(
        &self,
    ) -> (
        impl Iterator<Item = u32> + '_,
        impl Iterator<Item = u32> + '_,
    ) {
        (self.added.iter().copied(), self.removed.iter().copied())
    }

    /// A copy of these members whose bitmap is `merged`, a copy of [`Self::bitmap`] made
    /// elsewhere (a snapshot copies the bitmaps on several threads).
    pub fn with_bitmap(&self, merged: RoaringBitmap) -> MemberSet {
        MemberSet {
            merged,
            added: self.added.clone(),
            removed: self.removed.clone(),
            merge_at: self.merge_at,
        }
    }

    /// The bitmap's serialized size (the directory's measure of bitmap memory).
    pub fn bitmap_bytes(&self) -> usize {
        self.merged.serialized_size()
    }

    /// The memory of the changes not merged yet.
    pub fn pending_bytes(&self) -> usize {
        self.added.allocation_size() + self.removed.allocation_size()
    }

    /// Merges the changes since the last merge into the bitmap.
    pub fn merge_changes(&mut self) {
        let (_, removed, added) = self.parts();
        if let Some(removed) = removed {
            self.merged -= removed;
        }
        if let Some(added) = added {
            self.merged |= added;
        }
        self.added = HashSet::new();
        self.removed = HashSet::new();
        self.merge_at = merge_at(&self.merged);
    }

    fn merge_if_due(&mut self) {
        if self.added.len() + self.removed.len() >= self.merge_at {
            self.merge_changes();
        }
    }
}

impl<'a> From<&'a MemberSet> for Members<'a> {
    fn from(set: &'a MemberSet) -> Self {
        let (bulk, removed, added) = set.parts();
        Members {
            bulk,
            removed,
            added,
        }
    }
}

fn sorted(changes: &HashSet<u32>) -> Option<RoaringBitmap> {
    if changes.is_empty() {
        return None;
    }
    let mut sorted: Vec<u32> = changes.iter().copied().collect();
    sorted.sort_unstable();
    Some(RoaringBitmap::from_sorted_iter(sorted).expect("distinct accounts, sorted"))
}

fn merge_at(merged: &RoaringBitmap) -> usize {
    if per_container(merged) > ARRAY_MAX {
        return MERGE_AT_DENSE;
    }
    usize::try_from(merged.len() / MERGE_FRACTION)
        .unwrap_or(MERGE_AT_MOST)
        .clamp(MERGE_AT_LEAST, MERGE_AT_MOST)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the order of additions and removals, and wherever the merges fall, the
        /// members are those of a plain bitmap given the same writes.
        #[test]
        fn members_are_those_of_a_plain_bitmap(
            start in proptest::collection::btree_set(0u32..300_000, 0..5_000),
            writes in proptest::collection::vec((any::<bool>(), 0u32..300_000), 0..3_000),
        ) {
            let mut plain: RoaringBitmap = start.iter().copied().collect();
            let mut members = MemberSet::from_bitmap(plain.clone());
            // Accounts added and removed over and over, the same ones often.
            for (add, id) in writes.iter().map(|&(add, id)| (add, if id % 3 == 0 { id % 97 } else { id })) {
                if add {
                    if plain.insert(id) {
                        members.add(id);
                    }
                } else if plain.remove(id) {
                    members.remove(id);
                }
                prop_assert_eq!(members.len(), plain.len());
                prop_assert_eq!(members.is_empty(), plain.is_empty());
                prop_assert_eq!(members.contains(id), plain.contains(id));
            }
            let whole = members.to_bitmap();
            prop_assert_eq!(whole.as_ref(), &plain);
            let (merged, removed, added) = members.parts();
            let (removed, added) = (removed.unwrap_or_default(), added.unwrap_or_default());
            prop_assert!(removed.is_subset(merged));
            prop_assert!(merged.is_disjoint(&added));
            let half: RoaringBitmap = (0..150_000).collect();
            prop_assert_eq!(members.intersection_len(&half), plain.intersection_len(&half));
            let copy = members.with_bitmap(members.bitmap().clone());
            let copied = copy.to_bitmap();
            prop_assert_eq!(copied.as_ref(), &plain);
            members.merge_changes();
            prop_assert_eq!(members.bitmap(), &plain);
        }
    }

    /// Adds and removes alternately until `merge_at` changes wait: none is merged before the
    /// last; the bitmap then holds every member and the changes' memory is given back.
    fn merges_after(members: &mut MemberSet, merge_at: usize, outsider: impl Fn(usize) -> u32) {
        let mut expected = members.len();
        let insiders: Vec<u32> = members.bitmap().iter().step_by(7).collect();
        for (n, &insider) in insiders.iter().enumerate().take(merge_at - 1) {
            if n % 2 == 0 {
                members.add(outsider(n));
                expected += 1;
            } else {
                members.remove(insider);
                expected -= 1;
            }
        }
        let (_, removed, added) = members.parts();
        assert_eq!(
            removed.map_or(0, |r| r.len()) + added.map_or(0, |a| a.len()),
            merge_at as u64 - 1
        );
        assert!(members.pending_bytes() > 0);
        members.add(outsider(merge_at));
        let (_, removed, added) = members.parts();
        assert!(removed.is_none() && added.is_none());
        assert_eq!(members.pending_bytes(), 0);
        assert_eq!(members.len(), expected + 1);
    }

    #[test]
    fn changes_wait_beside_array_containers_until_a_64th_of_the_bitmap() {
        // 2,048 members per container: arrays.
        let mut members = MemberSet::from_bitmap((0..6_400_000).step_by(32).collect());
        merges_after(&mut members, 200_000 / MERGE_FRACTION as usize, |n| {
            32 * n as u32 + 1
        });
    }

    #[test]
    fn changes_wait_beside_bitmap_containers_until_a_few_hundred() {
        // 32,768 members per container: bitmaps.
        let mut members = MemberSet::from_bitmap((0..1_000_000).step_by(2).collect());
        merges_after(&mut members, MERGE_AT_DENSE, |n| 2 * n as u32 + 1);
    }
}
