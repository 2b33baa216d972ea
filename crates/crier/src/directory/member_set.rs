//! The accounts holding one tag or one attribute value: a roaring bitmap, and the accounts
//! added since it was last merged, kept apart in a plain list.
//!
//! At ten million accounts an insert into a bitmap is a chain of cache misses (its container,
//! then a binary search in an array of a few thousand members, then a move of half of it):
//! about 1 µs on the benchmark machine, most of a bulk `im_add_tag`. Appending to a list costs
//! a few nanoseconds. When the list reaches a 128th of the bitmap (at least
//! [`MERGE_AT_LEAST`], at most [`MERGE_AT_MOST`]), it is sorted and merged in, one pass per
//! container it touches, each container rebuilt once for a few dozen new members instead of
//! moved once per member. Timed apart (the benchmark's Zipf tags at 10M accounts, groups of
//! 3,000 new pairs alternated between the two ways): about 190 ns per insert, merges included,
//! against 1,100.
//!
//! Reads pay for the list when it is not empty: an audience sorts a copy of it into a small
//! bitmap ([`MemberSet::parts`]) and [`super::condition`] combines the two parts without
//! materialising their union. A removal looks in the bitmap first, then in the list. After a
//! merge the list's allocation is given back, so the lists hold memory only for additions
//! not merged yet (reported apart from the bitmaps, [`MemberSet::list_bytes`]).

use std::borrow::Cow;

use roaring::RoaringBitmap;

use super::condition::Members;

/// Lists shorter than this are not merged, however small the bitmap: merging a small bitmap
/// is cheap, but doing it every few additions is not.
const MERGE_AT_LEAST: usize = 32;
/// Nor longer than this: a merge is a stall of the writer, and a read sorts the list.
const MERGE_AT_MOST: usize = 4096;
/// The list is merged at this fraction of the bitmap's size: each container is then rebuilt
/// for about this many times fewer members than it holds.
const MERGE_FRACTION: u64 = 128;

#[derive(Clone, Default)]
pub struct MemberSet {
    merged: RoaringBitmap,
    /// Accounts added since the last merge: distinct, none in `merged`, in no order.
    added: Vec<u32>,
    /// `added`'s length that triggers a merge, set from `merged`'s size at each merge.
    merge_at: usize,
}

impl MemberSet {
    pub fn from_bitmap(merged: RoaringBitmap) -> MemberSet {
        let merge_at = merge_at(&merged);
        MemberSet {
            merged,
            added: Vec::new(),
            merge_at,
        }
    }

    /// Adds an account that does not hold the tag (the caller knows it from the account's tag
    /// list; adding a member again would count it twice).
    pub fn add(&mut self, id: u32) {
        debug_assert!(!self.contains(id), "account {id} already holds the tag");
        self.added.push(id);
        if self.added.len() >= self.merge_at {
            self.merge_list();
        }
    }

    /// Removes `id`; answers whether it held the tag. The bitmap is tried first: an account
    /// is in the list only between its addition and the next merge, and looking it up there
    /// is a pass over the list.
    pub fn remove(&mut self, id: u32) -> bool {
        if self.merged.remove(id) {
            return true;
        }
        match self.added.iter().position(|&added| added == id) {
            Some(at) => {
                self.added.swap_remove(at);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.merged.contains(id) || self.added.contains(&id)
    }

    pub fn len(&self) -> u64 {
        self.merged.len() + self.added.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.merged.is_empty() && self.added.is_empty()
    }

    /// Members that are also in `set`.
    pub fn intersection_len(&self, set: &RoaringBitmap) -> u64 {
        self.merged.intersection_len(set)
            + self.added.iter().filter(|&&id| set.contains(id)).count() as u64
    }

    /// The members as two disjoint parts: the bitmap, and the accounts added since its last
    /// merge as a bitmap of their own (`None` when there are none).
    pub fn parts(&self) -> (&RoaringBitmap, Option<RoaringBitmap>) {
        (&self.merged, self.added_bitmap())
    }

    /// Every member in one bitmap: borrowed when nothing waits to be merged.
    pub fn to_bitmap(&self) -> Cow<'_, RoaringBitmap> {
        match self.added_bitmap() {
            None => Cow::Borrowed(&self.merged),
            Some(added) => Cow::Owned(&self.merged | added),
        }
    }

    /// The members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.merged.iter().chain(self.added.iter().copied())
    }

    /// The bitmap's serialized size (the directory's measure of bitmap memory).
    pub fn bitmap_bytes(&self) -> usize {
        self.merged.serialized_size()
    }

    /// The list's allocation.
    pub fn list_bytes(&self) -> usize {
        self.added.capacity() * size_of::<u32>()
    }

    /// For copying the members apart (a snapshot copies the bitmaps on several threads).
    pub fn bitmap_and_added(&self) -> (&RoaringBitmap, &[u32]) {
        (&self.merged, &self.added)
    }

    /// Members made of a bitmap and a list, as [`Self::bitmap_and_added`] gave them.
    pub fn from_bitmap_and_added(merged: RoaringBitmap, added: Vec<u32>) -> MemberSet {
        let merge_at = merge_at(&merged);
        MemberSet {
            merged,
            added,
            merge_at,
        }
    }

    fn added_bitmap(&self) -> Option<RoaringBitmap> {
        if self.added.is_empty() {
            return None;
        }
        let mut sorted = self.added.clone();
        sorted.sort_unstable();
        Some(RoaringBitmap::from_sorted_iter(sorted).expect("distinct accounts, sorted"))
    }

    /// Merges the additions waiting in the list into the bitmap.
    pub fn merge_list(&mut self) {
        if self.added.is_empty() {
            return;
        }
        let mut added = std::mem::take(&mut self.added);
        added.sort_unstable();
        let added = RoaringBitmap::from_sorted_iter(added).expect("distinct accounts, sorted");
        self.merged |= added;
        self.merge_at = merge_at(&self.merged);
    }
}

impl<'a> From<&'a MemberSet> for Members<'a> {
    fn from(set: &'a MemberSet) -> Self {
        let (bulk, recent) = set.parts();
        Members { bulk, recent }
    }
}

fn merge_at(merged: &RoaringBitmap) -> usize {
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
            for (add, id) in writes {
                if add {
                    if plain.insert(id) {
                        members.add(id);
                    }
                } else {
                    prop_assert_eq!(members.remove(id), plain.remove(id));
                }
                prop_assert_eq!(members.len(), plain.len());
                prop_assert_eq!(members.contains(id), plain.contains(id));
            }
            let whole = members.to_bitmap();
            prop_assert_eq!(whole.as_ref(), &plain);
            let (merged, added) = members.parts();
            let added = added.unwrap_or_default();
            prop_assert!(merged.is_disjoint(&added));
            prop_assert_eq!(merged | &added, plain.clone());
            let mut listed: Vec<u32> = members.iter().collect();
            listed.sort_unstable();
            prop_assert_eq!(listed, plain.iter().collect::<Vec<_>>());
            let half: RoaringBitmap = (0..150_000).collect();
            prop_assert_eq!(members.intersection_len(&half), plain.intersection_len(&half));
        }
    }

    #[test]
    fn additions_wait_in_the_list_until_a_128th_of_the_bitmap() {
        let mut members = MemberSet::from_bitmap((0..1_000_000).step_by(2).collect());
        let merge_at = 500_000 / 128;
        for n in 0..merge_at - 1 {
            members.add(2 * n as u32 + 1);
        }
        assert_eq!(members.bitmap_and_added().1.len(), merge_at - 1);
        assert!(members.parts().1.is_some());
        members.add(999_999);
        assert!(members.bitmap_and_added().1.is_empty());
        assert!(members.parts().1.is_none());
        assert_eq!(members.len(), 500_000 + merge_at as u64);
    }
}
