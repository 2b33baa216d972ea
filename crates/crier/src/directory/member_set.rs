//! The accounts holding one tag or one attribute value: a roaring bitmap, and the accounts
//! added to it and removed from it since it was last merged, kept beside it as a list.
//!
//! At ten million accounts an insert into a bitmap or a removal from it is a chain of cache
//! misses (its container, then a binary search in an array of a few thousand members, then a
//! move of half of it): about 1 µs on the benchmark machine, most of a bulk write. Appending
//! to a list touches only its end, which stays in cache. When the list reaches a 64th of the
//! bitmap (at least [`MERGE_AT_LEAST`], at most [`MERGE_AT_MOST`]; [`MERGE_AT_DENSE`] when its
//! containers are bitmaps), it is sorted and merged in, each container it touches rebuilt
//! once for a few dozen changes instead of moved once per change. Timed apart at 10M accounts
//! (interleaved groups of 3,000 changes, the benchmark's Zipf tags, then its ten attributes):
//! a tag insert 1,100 ns directly, 190 ns with its additions in a plain list; an attribute
//! change (a removal and an insert) 1,440 ns directly, 590 ns with both in hash sets. In the
//! server at 10M, hash sets of the changes were a sixth of the writer's time: a thousand sets
//! of a few thousand slots each do not stay in cache, a list's end does.
//!
//! The caller knows which accounts are members (the per-account tag lists, the value columns):
//! [`MemberSet::add`] is given non-members and [`MemberSet::remove`] members, so neither looks
//! at the bitmap. An account's changes therefore alternate, and the list needs no lookup to
//! cancel an addition by a removal: an account listed an even number of times is as the
//! bitmap has it, one listed an odd number of times changed the way its changes mostly went.
//!
//! Reads pay for the list when it is not empty: an audience sorts a copy of it into two small
//! bitmaps ([`MemberSet::parts`]) and [`super::condition`] combines the parts without
//! materialising each set whole. After a merge the list's memory is given back, so it holds
//! memory only for changes not merged yet (reported apart from the bitmaps,
//! [`MemberSet::pending_bytes`]).

use std::borrow::Cow;

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

/// A listed change: the account's number shifted left, the low bit set for a removal.
type Change = u64;
const REMOVAL: Change = 1;

#[derive(Clone, Default)]
pub struct MemberSet {
    merged: RoaringBitmap,
    /// The additions and removals since the last merge, in the order they were made.
    changes: Vec<Change>,
    /// Members, counting the changes.
    len: u64,
    /// The count of changes that triggers a merge, set from `merged`'s size at each merge.
    merge_at: usize,
}

impl MemberSet {
    pub fn from_bitmap(merged: RoaringBitmap) -> MemberSet {
        MemberSet {
            merge_at: merge_at(&merged),
            len: merged.len(),
            merged,
            changes: Vec::new(),
        }
    }

    /// Adds an account that is not a member.
    pub fn add(&mut self, id: u32) {
        debug_assert!(!self.contains(id), "account {id} is a member already");
        self.len += 1;
        self.list(Change::from(id) << 1);
    }

    /// Removes an account that is a member.
    pub fn remove(&mut self, id: u32) {
        debug_assert!(self.contains(id), "account {id} is not a member");
        self.len -= 1;
        self.list(Change::from(id) << 1 | REMOVAL);
    }

    /// A scan of the changes: for checks and tests, not for a write path.
    pub fn contains(&self, id: u32) -> bool {
        let listed = self
            .changes
            .iter()
            .filter(|&&change| change >> 1 == Change::from(id))
            .count();
        self.merged.contains(id) != (listed % 2 == 1)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members that are also in `set`.
    pub fn intersection_len(&self, set: &RoaringBitmap) -> u64 {
        let (removed, added) = net_changes(&self.changes);
        let count = |ids: &[u32]| ids.iter().filter(|&&id| set.contains(id)).count() as u64;
        self.merged.intersection_len(set) + count(&added) - count(&removed)
    }

    /// The members as the bitmap, what was removed from it and what was added beside it, the
    /// last two as bitmaps of their own (`None` when empty).
    pub fn parts(&self) -> (&RoaringBitmap, Option<RoaringBitmap>, Option<RoaringBitmap>) {
        let (removed, added) = net_changes(&self.changes);
        (&self.merged, bitmap_of(removed), bitmap_of(added))
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

    /// Members not in [`Self::bitmap`], and accounts of it that are not members, each
    /// ascending.
    pub fn changes(&self) -> (Vec<u32>, Vec<u32>) {
        let (removed, added) = net_changes(&self.changes);
        (added, removed)
    }

    /// A copy of these members whose bitmap is `merged`, a copy of [`Self::bitmap`] made
    /// elsewhere (a snapshot copies the bitmaps on several threads).
    pub fn with_bitmap(&self, merged: RoaringBitmap) -> MemberSet {
        MemberSet {
            merged,
            changes: self.changes.clone(),
            len: self.len,
            merge_at: self.merge_at,
        }
    }

    /// The bitmap's serialized size (the directory's measure of bitmap memory).
    pub fn bitmap_bytes(&self) -> usize {
        self.merged.serialized_size()
    }

    /// The memory of the changes not merged yet.
    pub fn pending_bytes(&self) -> usize {
        self.changes.capacity() * size_of::<Change>()
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
        self.changes = Vec::new();
        self.merge_at = merge_at(&self.merged);
    }

    /// The list is allocated whole at its first change: grown by doubling instead, its
    /// reallocations were a twelfth of the writer's time at 10M accounts.
    fn list(&mut self, change: Change) {
        if self.changes.capacity() == 0 {
            self.changes.reserve_exact(self.merge_at);
        }
        self.changes.push(change);
        if self.changes.len() >= self.merge_at {
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

/// What the listed changes come to: the accounts removed from the bitmap and those added
/// beside it, each ascending. An account's changes alternate (see the module doc), so where
/// it is listed an odd number of times there is one more of one kind than of the other, and
/// that kind is its change; sorted, its additions come before its removals.
fn net_changes(changes: &[Change]) -> (Vec<u32>, Vec<u32>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    if changes.is_empty() {
        return (removed, added);
    }
    let mut sorted = changes.to_vec();
    sorted.sort_unstable();
    for same in sorted.chunk_by(|a, b| a >> 1 == b >> 1) {
        if same.len() % 2 == 0 {
            continue;
        }
        let id = (same[0] >> 1) as u32;
        let removals = same.iter().filter(|&&change| change & REMOVAL != 0).count();
        if 2 * removals > same.len() {
            removed.push(id);
        } else {
            added.push(id);
        }
    }
    (removed, added)
}

fn bitmap_of(ascending: Vec<u32>) -> Option<RoaringBitmap> {
    if ascending.is_empty() {
        return None;
    }
    Some(RoaringBitmap::from_sorted_iter(ascending).expect("distinct accounts, ascending"))
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
