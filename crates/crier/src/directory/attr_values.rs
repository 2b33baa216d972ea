//! The values of one attribute slot: who holds each value (a bitmap per value, what audiences
//! read) and its transpose, which value each account holds (what writes read).
//!
//! Without the transpose, replacing or removing an account's value has to probe every value
//! bitmap of the slot for the account: a thousand probes per write for a city-like attribute.
//! With it, a write touches the one bitmap it leaves and the one it joins.
//!
//! Values are numbered in the order they are first set (and in file order when a snapshot
//! loads), and never forgotten, so a number stays valid for the life of the directory. The
//! transpose is a column indexed by account number holding `value number + 1` (0: no value),
//! in the narrowest unsigned width the slot's value count allows: one byte per account while
//! the slot has at most 255 values, two up to 65,535, four beyond. It reaches only as far as the
//! highest account number that ever held a value of the slot, and grows by an eighth, so it
//! costs at most that width plus an eighth per account; an unused slot costs nothing. It is
//! rebuilt from the bitmaps when a snapshot loads, so the snapshot format does not carry it.

use hashbrown::HashMap;

use roaring::RoaringBitmap;

use super::MemberSet;

#[derive(Default, Clone)]
pub struct SlotValues {
    numbers: HashMap<Box<str>, u32>,
    values: Vec<(Box<str>, MemberSet)>,
    holders: ValueColumn,
}

impl SlotValues {
    /// Values ever set in this slot (some may have no holder left).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The holders of `value`, if it was ever set.
    pub fn members(&self, value: &str) -> Option<&MemberSet> {
        let &number = self.numbers.get(value)?;
        Some(&self.values[number as usize].1)
    }

    /// The value `account` holds.
    pub fn value_of(&self, account: u32) -> Option<&str> {
        let number = self.holders.get(account)?;
        Some(&self.values[number as usize].0)
    }

    /// The number of `value`, handing out the next one if it has none.
    pub fn number(&mut self, value: &str) -> u32 {
        if let Some(&number) = self.numbers.get(value) {
            return number;
        }
        let number = u32::try_from(self.values.len()).expect("over 4 billion values in a slot");
        self.values.push((value.into(), MemberSet::default()));
        self.numbers.insert(value.into(), number);
        self.holders.make_room_for(number);
        number
    }

    /// Gives `account` value number `number` (from [`Self::number`]), leaving the value it held
    /// before. Answers whether anything changed.
    pub fn set(&mut self, account: u32, number: u32) -> bool {
        let before = self.holders.get(account);
        if before == Some(number) {
            return false;
        }
        if let Some(before) = before {
            self.values[before as usize].1.remove(account);
        }
        self.values[number as usize].1.add(account);
        self.holders.set(account, Some(number));
        true
    }

    /// Takes `account`'s value away, if it holds one.
    pub fn clear(&mut self, account: u32) {
        if let Some(before) = self.holders.get(account) {
            self.values[before as usize].1.remove(account);
            self.holders.set(account, None);
        }
    }

    /// Every value with its holders, in number order (the order the snapshot stores them in).
    /// Each value ever set, in number order, with its holders.
    pub fn values(&self) -> &[(Box<str>, MemberSet)] {
        &self.values
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &MemberSet)> + '_ {
        self.values
            .iter()
            .map(|(value, members)| (&**value, members))
    }

    /// Builds a slot from the values and holders a snapshot stores, in file order.
    pub fn from_loaded(values: Vec<(Box<str>, RoaringBitmap)>) -> SlotValues {
        let mut slot = SlotValues {
            numbers: HashMap::with_capacity(values.len()),
            values: Vec::with_capacity(values.len()),
            holders: ValueColumn::default(),
        };
        let highest = values.iter().filter_map(|(_, members)| members.max()).max();
        let mut loaded: Vec<RoaringBitmap> = Vec::with_capacity(values.len());
        for (value, members) in values {
            let number = slot.number(&value) as usize;
            // A value named twice in a file keeps its first number; its holders join.
            match loaded.get_mut(number) {
                Some(first) => *first |= members,
                None => loaded.push(members),
            }
        }
        if let Some(highest) = highest {
            slot.holders.grow_to(highest as usize + 1);
        }
        let mut shadowed = false;
        for (number, members) in loaded.iter().enumerate() {
            // `for_each` drives roaring's container iterators directly, faster than `next`.
            members.iter().for_each(|account| {
                shadowed |= slot.holders.get(account).is_some();
                slot.holders.set(account, Some(number as u32));
            });
        }
        if shadowed {
            slot.remove_shadowed_holders(&mut loaded);
        }
        for ((_, members), loaded) in slot.values.iter_mut().zip(loaded) {
            *members = MemberSet::from_bitmap(loaded);
        }
        slot
    }

    /// An account may hold one value per slot. A file where some account appears under two
    /// values (none written by Crier does) keeps the last, as the column already says.
    fn remove_shadowed_holders(&self, loaded: &mut [RoaringBitmap]) {
        for (number, members) in loaded.iter_mut().enumerate() {
            let shadowed: Vec<u32> = members
                .iter()
                .filter(|&account| self.holders.get(account) != Some(number as u32))
                .collect();
            for account in shadowed {
                members.remove(account);
            }
        }
    }

    pub fn member_sets(&mut self) -> impl Iterator<Item = &mut MemberSet> {
        self.values.iter_mut().map(|(_, members)| members)
    }

    /// Bytes of the value bitmaps as serialized (the directory's bitmap memory measure).
    pub fn bitmap_bytes(&self) -> u64 {
        self.values
            .iter()
            .map(|(_, members)| members.bitmap_bytes() as u64)
            .sum()
    }

    /// Bytes of the values' changes not merged yet.
    pub fn pending_bytes(&self) -> u64 {
        self.values
            .iter()
            .map(|(_, members)| members.pending_bytes() as u64)
            .sum()
    }

    /// Heap bytes of the per-account column.
    pub fn index_bytes(&self) -> usize {
        self.holders.heap_bytes()
    }
}

/// `value number + 1` per account number, 0 for none, in the narrowest width that holds the
/// slot's highest value number.
#[derive(Clone)]
enum ValueColumn {
    Bytes(Vec<u8>),
    Shorts(Vec<u16>),
    Words(Vec<u32>),
}

impl Default for ValueColumn {
    fn default() -> Self {
        ValueColumn::Bytes(Vec::new())
    }
}

impl ValueColumn {
    fn get(&self, account: u32) -> Option<u32> {
        let cell = match self {
            ValueColumn::Bytes(cells) => cells.get(account as usize).map(|&c| u32::from(c)),
            ValueColumn::Shorts(cells) => cells.get(account as usize).map(|&c| u32::from(c)),
            ValueColumn::Words(cells) => cells.get(account as usize).copied(),
        };
        cell.unwrap_or(0).checked_sub(1)
    }

    /// Widens the column, if need be, so it can hold value number `number`.
    fn make_room_for(&mut self, number: u32) {
        let cell = number + 1;
        match self {
            ValueColumn::Bytes(cells) if cell > u32::from(u8::MAX) => {
                *self = ValueColumn::Shorts(widen(cells));
                self.make_room_for(number);
            }
            ValueColumn::Shorts(cells) if cell > u32::from(u16::MAX) => {
                *self = ValueColumn::Words(widen(cells));
            }
            _ => {}
        }
    }

    /// Stores `number` for `account`; the column must be wide enough ([`Self::make_room_for`]).
    fn set(&mut self, account: u32, number: Option<u32>) {
        let cell = number.map_or(0, |n| n + 1);
        let account = account as usize;
        match self {
            ValueColumn::Bytes(cells) => put(cells, account, cell as u8),
            ValueColumn::Shorts(cells) => put(cells, account, cell as u16),
            ValueColumn::Words(cells) => put(cells, account, cell),
        }
    }

    fn grow_to(&mut self, len: usize) {
        match self {
            ValueColumn::Bytes(cells) => grow(cells, len),
            ValueColumn::Shorts(cells) => grow(cells, len),
            ValueColumn::Words(cells) => grow(cells, len),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ValueColumn::Bytes(cells) => cells.capacity(),
            ValueColumn::Shorts(cells) => cells.capacity() * 2,
            ValueColumn::Words(cells) => cells.capacity() * 4,
        }
    }
}

fn put<T: Copy + Default + PartialEq>(cells: &mut Vec<T>, account: usize, cell: T) {
    if account >= cells.len() {
        if cell == T::default() {
            return;
        }
        grow(cells, account + 1);
    }
    cells[account] = cell;
}

/// Lengthens `cells` to `len` with empty cells, reserving an eighth more rather than doubling:
/// at ten million accounts the columns are most of this index, and doubling would leave a
/// quarter of them unused on average.
fn grow<T: Copy + Default>(cells: &mut Vec<T>, len: usize) {
    if len <= cells.len() {
        return;
    }
    if len > cells.capacity() {
        let wanted = (len - cells.len()).max(cells.len() / 8);
        cells.reserve_exact(wanted);
    }
    cells.resize(len, T::default());
}

fn widen<N: Copy + Into<W>, W>(cells: &[N]) -> Vec<W> {
    let mut wide = Vec::with_capacity(cells.len() + cells.len() / 8);
    wide.extend(cells.iter().map(|&cell| cell.into()));
    wide
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_column_widens_past_255_and_65535_values_and_keeps_every_holder() {
        let mut slot = SlotValues::default();
        for n in 0..70_000u32 {
            let number = slot.number(&format!("v{n}"));
            slot.set(n * 3, number);
            if n == 254 || n == 255 || n == 65_534 || n == 65_535 {
                assert_eq!(slot.value_of(n * 3), Some(&*format!("v{n}")));
            }
        }
        assert!(matches!(slot.holders, ValueColumn::Words(_)));
        for n in [0u32, 1, 254, 255, 256, 65_534, 65_535, 65_536, 69_999] {
            assert_eq!(slot.value_of(n * 3), Some(&*format!("v{n}")));
            assert_eq!(slot.value_of(n * 3 + 1), None);
        }
    }

    #[test]
    fn an_unused_slot_costs_nothing_and_a_used_one_a_byte_an_account() {
        let mut slot = SlotValues::default();
        assert_eq!(slot.index_bytes(), 0);
        slot.clear(5);
        assert_eq!(slot.index_bytes(), 0);
        let tier = slot.number("gold");
        for account in 0..100_000 {
            slot.set(account, tier);
        }
        assert!(slot.index_bytes() <= 100_000 + 100_000 / 8);
    }

    #[test]
    fn a_file_naming_an_account_under_two_values_keeps_one() {
        let first: RoaringBitmap = [1, 2, 3].into_iter().collect();
        let second: RoaringBitmap = [3, 4].into_iter().collect();
        let slot = SlotValues::from_loaded(vec![("a".into(), first), ("b".into(), second)]);
        assert_eq!(slot.value_of(3), Some("b"));
        assert_eq!(
            slot.members("a")
                .unwrap()
                .to_bitmap()
                .iter()
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(
            slot.members("b")
                .unwrap()
                .to_bitmap()
                .iter()
                .collect::<Vec<_>>(),
            [3, 4]
        );
    }

    proptest! {
        #[test]
        fn holders_and_column_agree_with_a_plain_map(
            writes in prop::collection::vec((0u32..300, prop::option::of(0u32..400)), 0..400),
        ) {
            let mut slot = SlotValues::default();
            let mut plain: BTreeMap<u32, String> = BTreeMap::new();
            for (account, value) in writes {
                match value {
                    Some(v) => {
                        let number = slot.number(&format!("v{v}"));
                        slot.set(account * 7, number);
                        plain.insert(account * 7, format!("v{v}"));
                    }
                    None => {
                        slot.clear(account * 7);
                        plain.remove(&(account * 7));
                    }
                }
            }
            for account in 0..300 * 7 {
                prop_assert_eq!(slot.value_of(account), plain.get(&account).map(String::as_str));
            }
            for (value, members) in slot.iter() {
                let expected: Vec<u32> = plain.iter().filter(|(_, v)| *v == value).map(|(a, _)| *a).collect();
                prop_assert_eq!(members.to_bitmap().iter().collect::<Vec<_>>(), expected);
            }
            let loaded = SlotValues::from_loaded(slot.iter().map(|(v, m)| (v.into(), m.to_bitmap().into_owned())).collect());
            for account in 0..300 * 7 {
                prop_assert_eq!(loaded.value_of(account), slot.value_of(account));
            }
        }
    }
}
