//! The identifier map: account name ↔ dense `u32` number.
//!
//! Numbers are handed out in order and never reused, so the names live in append-only text
//! arenas ([`Names`]) and the reverse lookup is a hash table of numbers that hashes the arena slice.
//! A deleted account's number is retired: its name is unbound, and an account created later
//! under the same name gets a new number.
//! At ten million accounts this costs about the name bytes plus ~12 bytes per account, where a
//! `HashMap<String, u32>` plus a `Vec<String>` would cost over 70.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

#[derive(Default, Clone)]
pub struct AccountIds {
    names: Names,
    by_name: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

/// Every account's name, in number order: what a snapshot stores of the map.
///
/// Names are kept in chunks of [`CHUNK_ACCOUNTS`], each a text arena and where each name starts
/// in it. Only the last chunk is ever appended to, so a copy (a background snapshot's) shares
/// every full chunk instead of copying it, and appending after a copy copies at most the last
/// one: at ten million accounts a copy of the names went from about 240 ms of fresh pages,
/// which every write of the app waited for, to nothing.
#[derive(Default, Clone)]
pub struct Names {
    chunks: Vec<Arc<Chunk>>,
}

/// A million accounts: a chunk's arrays are megabytes, each its own mapping, which the
/// allocator puts on huge pages where it can. Small in tests, so they cross chunks.
#[cfg(not(test))]
const CHUNK_BITS: u32 = 20;
#[cfg(test)]
const CHUNK_BITS: u32 = 8;
const CHUNK_ACCOUNTS: usize = 1 << CHUNK_BITS;

#[derive(Default, Clone)]
struct Chunk {
    text: String,
    /// `starts[n]` is where the chunk's account n begins in `text`; it ends where n + 1
    /// begins.
    starts: Vec<u32>,
}

impl Names {
    pub fn len(&self) -> u32 {
        match self.chunks.last() {
            Some(last) => ((self.chunks.len() - 1) * CHUNK_ACCOUNTS + last.starts.len()) as u32,
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        (id < self.len()).then(|| self.name_unchecked(id))
    }

    /// Account `id`'s name, `id` being below [`Self::len`].
    fn name_unchecked(&self, id: u32) -> &str {
        let chunk = &self.chunks[(id >> CHUNK_BITS) as usize];
        let n = id as usize % CHUNK_ACCOUNTS;
        let start = chunk.starts[n] as usize;
        let end = chunk
            .starts
            .get(n + 1)
            .map_or(chunk.text.len(), |&e| e as usize);
        &chunk.text[start..end]
    }

    /// Names in number order (a retired number's too); used by the snapshot writer.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|id| self.name_unchecked(id))
    }

    fn append(&mut self, name: &str) -> u32 {
        let id = self.len();
        if self
            .chunks
            .last()
            .is_none_or(|last| last.starts.len() == CHUNK_ACCOUNTS)
        {
            // Sized at once, as the chunk before ended up, rather than grown by doubling.
            let text = self.chunks.last().map_or(0, |last| last.text.len());
            self.chunks.push(Arc::new(Chunk {
                text: String::with_capacity(text),
                starts: Vec::with_capacity(CHUNK_ACCOUNTS),
            }));
        }
        let last = Arc::make_mut(self.chunks.last_mut().expect("a chunk was pushed"));
        let start = u32::try_from(last.text.len()).expect("a chunk's names exceed 4 GiB");
        last.starts.push(start);
        last.text.push_str(name);
        id
    }

    fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|chunk| chunk.text.capacity() + chunk.starts.capacity() * 4)
            .sum()
    }
}

impl AccountIds {
    pub fn len(&self) -> u32 {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.name(id)
    }

    /// The names in number order, for a snapshot.
    pub fn names(&self) -> &Names {
        &self.names
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
        let id = self.names.append(name);
        let hash = self.hasher.hash_one(name);
        let (names, hasher) = (&self.names, &self.hasher);
        self.by_name.insert_unique(hash, id, |&other| {
            hasher.hash_one(names.name_unchecked(other))
        });
        id
    }

    /// Takes the next number for a name that stays unbound: a retired account read back from
    /// a snapshot.
    pub fn append(&mut self, name: &str) -> u32 {
        self.names.append(name)
    }

    /// Unbinds `name` from its number for good; answers the number it had.
    pub fn retire(&mut self, name: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(name);
        let names = &self.names;
        let entry = self
            .by_name
            .find_entry(hash, |&id| names.name_unchecked(id) == name)
            .ok()?;
        let (id, _) = entry.remove();
        Some(id)
    }

    pub fn heap_bytes(&self) -> usize {
        self.names.heap_bytes() + self.by_name.capacity() * (4 + 1)
    }

    pub fn reserve(&mut self, accounts: usize) {
        let (names, hasher) = (&self.names, &self.hasher);
        self.by_name.reserve(accounts, |&other| {
            hasher.hash_one(names.name_unchecked(other))
        });
    }
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
        assert_eq!(ids.names().iter().nth(1), Some("bob"));
    }

    #[test]
    fn a_copy_of_the_names_keeps_them_as_they_were_across_chunks() {
        let mut ids = AccountIds::default();
        let total = 2 * CHUNK_ACCOUNTS as u32 + 10;
        for n in 0..total {
            assert_eq!(ids.get_or_insert(&format!("user{n}")), n);
        }
        let copy = ids.names().clone();
        // The first two chunks are full: shared, not copied.
        assert!(Arc::ptr_eq(&copy.chunks[0], &ids.names.chunks[0]));
        assert!(Arc::ptr_eq(&copy.chunks[1], &ids.names.chunks[1]));
        for n in total..total + 5 {
            ids.get_or_insert(&format!("user{n}"));
        }
        assert_eq!(copy.len(), total);
        assert_eq!(ids.len(), total + 5);
        assert_eq!(
            copy.iter().last(),
            Some(format!("user{}", total - 1).as_str())
        );
        for n in [
            0,
            CHUNK_ACCOUNTS as u32 - 1,
            CHUNK_ACCOUNTS as u32,
            total + 4,
        ] {
            let name = format!("user{n}");
            assert_eq!(ids.name(n), Some(name.as_str()));
            assert_eq!(ids.get(&name), Some(n));
        }
        assert_eq!(copy.name(total), None);
        assert!(copy.iter().eq((0..total).map(|n| format!("user{n}"))));
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
