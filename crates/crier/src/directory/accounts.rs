//! The identifier map: account name ↔ dense `u32` number.
//!
//! Numbers are handed out in order and never reused, so the names live in one append-only
//! text arena and the reverse lookup is a hash table of numbers that hashes the arena slice.
//! A deleted account's number is retired: its name is unbound, and an account created later
//! under the same name gets a new number.
//! At ten million accounts this costs about the name bytes plus ~12 bytes per account, where a
//! `HashMap<String, u32>` plus a `Vec<String>` would cost over 70.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

#[derive(Default, Clone)]
pub struct AccountIds {
    text: String,
    /// `starts[n]` is where account n's name begins in `text`; it ends where n + 1 begins.
    starts: Vec<u32>,
    by_name: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl AccountIds {
    pub fn len(&self) -> u32 {
        self.starts.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        (id < self.len()).then(|| name_in(&self.text, &self.starts, id))
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        self.by_name
            .find(hash, |&id| self.name(id) == Some(name))
            .copied()
    }

    /// The number of `name`, handing out the next one if it has none.
    pub fn get_or_insert(&mut self, name: &str) -> u32 {
        if let Some(id) = self.get(name) {
            return id;
        }
        let id = self.append(name);
        let hash = self.hasher.hash_one(name);
        let (text, starts, hasher) = (&self.text, &self.starts, &self.hasher);
        self.by_name.insert_unique(hash, id, |&other| {
            hasher.hash_one(name_in(text, starts, other))
        });
        id
    }

    /// Takes the next number for a name that stays unbound: a retired account read back from
    /// a snapshot.
    pub fn append(&mut self, name: &str) -> u32 {
        let id = self.len();
        let start = u32::try_from(self.text.len()).expect("account names exceed 4 GiB");
        self.starts.push(start);
        self.text.push_str(name);
        id
    }

    /// Unbinds `name` from its number for good; answers the number it had.
    pub fn retire(&mut self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let (text, starts) = (&self.text, &self.starts);
        let entry = self
            .by_name
            .find_entry(hash, |&id| name_in(text, starts, id) == name)
            .ok()?;
        let (id, _) = entry.remove();
        Some(id)
    }

    /// Names in number order; used by the snapshot writer.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|id| self.name(id).unwrap_or_default())
    }

    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.starts.capacity() * 4 + self.by_name.capacity() * (4 + 1)
    }

    pub fn reserve(&mut self, accounts: usize, text_bytes: usize) {
        self.text.reserve(text_bytes);
        self.starts.reserve(accounts);
        let (text, starts, hasher) = (&self.text, &self.starts, &self.hasher);
        self.by_name.reserve(accounts, |&other| {
            hasher.hash_one(name_in(text, starts, other))
        });
    }
}

/// Account `id`'s name: from where it starts in `text` to where the next one starts.
fn name_in<'a>(text: &'a str, starts: &[u32], id: u32) -> &'a str {
    let start = starts[id as usize] as usize;
    let end = starts
        .get(id as usize + 1)
        .map_or(text.len(), |&e| e as usize);
    &text[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_stable_and_reversible() {
        let mut ids = AccountIds::default();
        assert_eq!(ids.get_or_insert("alice"), 0);
        assert_eq!(ids.get_or_insert("bob"), 1);
        assert_eq!(ids.get_or_insert("alice"), 0);
        assert_eq!(ids.get("bob"), Some(1));
        assert_eq!(ids.get("carol"), None);
        assert_eq!(ids.name(1), Some("bob"));
        assert_eq!(ids.name(2), None);
        for n in 0..10_000 {
            ids.get_or_insert(&format!("user{n}"));
        }
        assert_eq!(ids.get("user9999"), Some(10_001));
        assert_eq!(ids.names().nth(1), Some("bob"));
    }

    #[test]
    fn a_retired_name_gets_a_new_number() {
        let mut ids = AccountIds::default();
        ids.get_or_insert("alice");
        ids.get_or_insert("bob");
        assert_eq!(ids.retire("alice"), Some(0));
        assert_eq!(ids.retire("alice"), None);
        assert_eq!(ids.get("alice"), None);
        assert_eq!(ids.get_or_insert("alice"), 2);
        assert_eq!(ids.get("alice"), Some(2));
        assert_eq!(ids.get("bob"), Some(1));
        assert_eq!(ids.name(0), Some("alice"));
        assert_eq!(ids.append("carol"), 3);
        assert_eq!(ids.get("carol"), None);
    }
}
