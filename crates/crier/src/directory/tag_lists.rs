//! Per-account tag lists: the tags an account holds, read without scanning every tag of the
//! app.
//!
//! The tag bitmaps answer "who holds tag t"; `im_get_tag`, the per-user cap and clearing an
//! account's tags ask the transpose, "which tags does account n hold", which the bitmaps answer
//! only by probing every tag (194 ms for 100 accounts among 346k distinct tags). This is that
//! transpose, kept in step by every write and rebuilt from the bitmaps when a snapshot loads, so
//! the snapshot format does not carry it.
//!
//! Layout, chosen for memory at ten million accounts: accounts are grouped in pages of 4,096. A
//! page holds one byte arena and, per account, where its list starts there. A list is a varint
//! count, then the account's tag numbers ascending, each a varint of its distance from the one
//! before. A changed list is written anew at the arena's end and the page is compacted when its
//! dead bytes outgrow its live ones, so a write costs the length of the account's own list,
//! amortised, and compacting touches one page (about 100 KB), not the whole index.
//!
//! Cost: 4 bytes per account, plus a byte for the count and about one byte per tag held while
//! the gaps between an account's tag numbers stay under 128 (two under 16,384). The 10M
//! benchmark's accounts (15 to 25 of 1,000 tags) take about 26 bytes each.

use roaring::RoaringBitmap;

/// Accounts per page: a page's compaction copies at most this many lists.
const PAGE_BITS: u32 = 12;
const PAGE_SLOTS: usize = 1 << PAGE_BITS;
/// `starts` entry of an account holding no tag.
const NONE: u32 = u32::MAX;
/// Dead bytes a page may carry before it is compacted, whatever its live size.
const DEAD_SLACK: usize = 4_096;
/// Accounts whose lists are rebuilt together at load: one roaring container's worth, so each
/// tag bitmap is visited once per container it has.
const LOAD_CHUNK_BITS: u32 = 16;

#[derive(Default, Clone)]
pub struct TagLists {
    pages: Vec<Page>,
}

#[derive(Default, Clone)]
struct Page {
    /// Per account slot of the page, where its list starts in `bytes` (or [`NONE`]); only as
    /// long as the highest slot that ever held a tag.
    starts: Vec<u32>,
    bytes: Vec<u8>,
    /// Bytes of `bytes` no list uses any more.
    dead: usize,
}

impl TagLists {
    /// The tag numbers `account` holds, ascending.
    pub fn tags(&self, account: u32) -> Tags<'_> {
        let empty = Tags {
            bytes: &[],
            left: 0,
            previous: 0,
        };
        let Some(page) = self.pages.get((account >> PAGE_BITS) as usize) else {
            return empty;
        };
        match page.starts.get(slot(account)) {
            Some(&start) if start != NONE => {
                let mut bytes = &page.bytes[start as usize..];
                let left = read_varint(&mut bytes);
                Tags {
                    bytes,
                    left,
                    previous: 0,
                }
            }
            _ => empty,
        }
    }

    pub fn count(&self, account: u32) -> usize {
        self.tags(account).left as usize
    }

    /// Replaces `account`'s list with `tags`, which must be ascending without repeats.
    pub fn set(&mut self, account: u32, tags: &[u32]) {
        debug_assert!(tags.windows(2).all(|pair| pair[0] < pair[1]));
        let page_number = (account >> PAGE_BITS) as usize;
        if self.pages.len() <= page_number {
            if tags.is_empty() {
                return;
            }
            self.pages.resize_with(page_number + 1, Page::default);
        }
        let page = &mut self.pages[page_number];
        let slot = slot(account);
        if let Some(&start) = page.starts.get(slot) {
            if start != NONE {
                page.dead += list_len(&page.bytes[start as usize..]);
            }
        }
        if tags.is_empty() {
            if let Some(start) = page.starts.get_mut(slot) {
                *start = NONE;
            }
        } else {
            if page.starts.len() <= slot {
                page.starts.resize(slot + 1, NONE);
            }
            page.starts[slot] = page.append(tags);
        }
        if page.dead > DEAD_SLACK && page.dead > page.bytes.len() - page.dead {
            page.compact();
        }
    }

    /// Builds the lists from the tag bitmaps, the tag number being the position.
    ///
    /// Chunks of accounts are independent, so they are built on as many threads as there are
    /// cores: at ten million accounts this runs once per start-up, over 200 million pairs.
    pub fn from_bitmaps(bitmaps: &[&RoaringBitmap]) -> TagLists {
        let bounds: Vec<Option<(u32, u32)>> = bitmaps
            .iter()
            .map(|members| Some((members.min()?, members.max()?)))
            .collect();
        let Some(highest) = bounds.iter().flatten().map(|&(_, max)| max).max() else {
            return TagLists::default();
        };
        let chunks = (highest >> LOAD_CHUNK_BITS) as usize + 1;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(chunks);
        let built: Vec<Vec<(usize, Vec<Page>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|worker| {
                    let bounds = &bounds;
                    scope.spawn(move || {
                        let mut chunk_builder = ChunkBuilder::default();
                        (worker..chunks)
                            .step_by(threads)
                            .map(|chunk| {
                                (chunk, chunk_builder.build(chunk as u32, bitmaps, bounds))
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a tag list builder panicked"))
                .collect()
        });
        let pages_per_chunk = 1 << (LOAD_CHUNK_BITS - PAGE_BITS);
        let mut pages = vec![Page::default(); chunks * pages_per_chunk];
        for (chunk, chunk_pages) in built.into_iter().flatten() {
            for (n, page) in chunk_pages.into_iter().enumerate() {
                pages[chunk * pages_per_chunk + n] = page;
            }
        }
        TagLists { pages }
    }

    /// Heap bytes held, for the directory's memory report.
    pub fn heap_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<Page>()
            + self
                .pages
                .iter()
                .map(|page| page.starts.capacity() * 4 + page.bytes.capacity())
                .sum::<usize>()
    }
}

impl Page {
    /// Writes `tags` at the end of the arena; answers where the list starts.
    fn append(&mut self, tags: &[u32]) -> u32 {
        // A list takes at most 5 bytes per number and 5 for the count.
        let most = 5 * (tags.len() + 1);
        if self.bytes.capacity() - self.bytes.len() < most {
            // Growing by an eighth, not by doubling: the arenas of ten million accounts are
            // most of this index, and doubling would leave a quarter of them unused on average.
            self.bytes.reserve_exact(most.max(self.bytes.len() / 8));
        }
        let start = u32::try_from(self.bytes.len()).expect("a page's tag lists exceed 4 GiB");
        write_varint(&mut self.bytes, tags.len() as u32);
        let mut previous = 0;
        for &tag in tags {
            write_varint(&mut self.bytes, tag - previous);
            previous = tag;
        }
        start
    }

    fn compact(&mut self) {
        let live = self.bytes.len() - self.dead;
        let mut bytes = Vec::with_capacity(live + live / 8);
        for start in &mut self.starts {
            if *start == NONE {
                continue;
            }
            let list = &self.bytes[*start as usize..];
            *start = bytes.len() as u32;
            bytes.extend_from_slice(&list[..list_len(list)]);
        }
        self.bytes = bytes;
        self.dead = 0;
    }
}

/// Builds the pages of one chunk of accounts from the tag bitmaps by a counting sort: the
/// chunk's (account, tag) pairs are gathered in one pass over the bitmaps, in tag order, then
/// placed per account (so each list comes out ascending) and encoded. Its buffers are reused
/// from chunk to chunk.
#[derive(Default)]
struct ChunkBuilder {
    accounts: Vec<u16>,
    tags: Vec<u32>,
    /// Per account of the chunk, where its tag numbers end in `placed` (after placing).
    ends: Vec<u32>,
    placed: Vec<u32>,
}

impl ChunkBuilder {
    fn build(
        &mut self,
        chunk: u32,
        bitmaps: &[&RoaringBitmap],
        bounds: &[Option<(u32, u32)>],
    ) -> Vec<Page> {
        const CHUNK: usize = 1 << LOAD_CHUNK_BITS;
        let first = chunk << LOAD_CHUNK_BITS;
        let last = first | (CHUNK as u32 - 1);
        self.accounts.clear();
        self.tags.clear();
        for (tag, members) in bitmaps.iter().enumerate() {
            if !bounds[tag].is_some_and(|(min, max)| min <= last && max >= first) {
                continue;
            }
            // `for_each` drives roaring's container iterators directly, faster than `next`.
            members.range(first..=last).for_each(|account| {
                self.accounts.push((account - first) as u16);
                self.tags.push(tag as u32);
            });
        }
        // Counting sort by account: `ends[n + 1]` counts, then becomes where n's span starts,
        // and placing moves it to where n's span ends.
        self.ends.clear();
        self.ends.resize(CHUNK + 1, 0);
        for &account in &self.accounts {
            self.ends[account as usize + 1] += 1;
        }
        for n in 1..=CHUNK {
            self.ends[n] += self.ends[n - 1];
        }
        self.placed.clear();
        self.placed.resize(self.tags.len(), 0);
        for (&account, &tag) in self.accounts.iter().zip(&self.tags) {
            let cursor = &mut self.ends[account as usize];
            self.placed[*cursor as usize] = tag;
            *cursor += 1;
        }
        let mut pages = Vec::with_capacity(CHUNK / PAGE_SLOTS);
        let mut start = 0;
        for page_accounts in self.ends[..CHUNK].chunks(PAGE_SLOTS) {
            let mut page = Page::default();
            let pairs = (page_accounts.last().copied().unwrap_or(start) - start) as usize;
            if pairs > 0 {
                // About a byte per pair and one per account, as `append` would grow it to.
                page.bytes.reserve_exact(pairs + pairs / 4 + PAGE_SLOTS);
            }
            for (slot, &end) in page_accounts.iter().enumerate() {
                if end > start {
                    page.starts.resize(slot + 1, NONE);
                    page.starts[slot] = page.append(&self.placed[start as usize..end as usize]);
                }
                start = end;
            }
            page.bytes
                .shrink_to(page.bytes.len() + page.bytes.len() / 8);
            page.starts.shrink_to_fit();
            pages.push(page);
        }
        pages
    }
}

fn slot(account: u32) -> usize {
    account as usize & (PAGE_SLOTS - 1)
}

/// The tag numbers of one account, decoded as they are read.
pub struct Tags<'a> {
    bytes: &'a [u8],
    left: u32,
    previous: u32,
}

impl Iterator for Tags<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.previous += read_varint(&mut self.bytes);
        Some(self.previous)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for Tags<'_> {}

/// LEB128: seven bits a byte, low first, the high bit set on all but the last.
fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &mut &[u8]) -> u32 {
    let mut value = 0u32;
    let mut shift = 0;
    while let Some((&byte, rest)) = bytes.split_first() {
        *bytes = rest;
        value |= u32::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    value
}

/// Bytes of the list that starts `bytes`.
fn list_len(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let count = read_varint(&mut rest);
    for _ in 0..count {
        read_varint(&mut rest);
    }
    bytes.len() - rest.len()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u32::MAX - 1, u32::MAX] {
            let mut bytes = Vec::new();
            write_varint(&mut bytes, value);
            let mut read = bytes.as_slice();
            assert_eq!(read_varint(&mut read), value);
            assert!(read.is_empty());
        }
    }

    #[test]
    fn a_list_costs_a_byte_per_close_tag_number() {
        let mut lists = TagLists::default();
        let tags: Vec<u32> = (0..20).map(|n| n * 50).collect();
        lists.set(7, &tags);
        assert_eq!(lists.tags(7).collect::<Vec<_>>(), tags);
        assert_eq!(lists.pages[0].bytes.len(), 1 + 20);
    }

    #[test]
    fn rewrites_are_compacted_within_their_page() {
        let mut lists = TagLists::default();
        let big: Vec<u32> = (0..100).map(|n| n * 1_000).collect();
        for round in 0..1_000u32 {
            let account = round % 64;
            lists.set(account, &big[..(round as usize % 100) + 1]);
        }
        let page = &lists.pages[0];
        let live: usize = (0..64)
            .map(|a| list_len(&page.bytes[page.starts[a] as usize..]))
            .sum();
        assert!(
            page.bytes.len() <= 2 * live + DEAD_SLACK + 5 * 101,
            "{} bytes for {live} live",
            page.bytes.len()
        );
        for account in 0..64 {
            let round = (0..1_000).filter(|r| r % 64 == account).max().unwrap();
            assert_eq!(lists.count(account), (round as usize % 100) + 1);
        }
    }

    fn arb_writes() -> impl Strategy<Value = Vec<(u32, BTreeSet<u32>)>> {
        // Accounts across three pages, tag numbers with gaps of every varint length.
        let account = prop_oneof![0u32..10, 4_090u32..4_100, 8_192u32..8_200, Just(1_000_000)];
        let tag = prop_oneof![0u32..200, 0u32..u32::MAX];
        prop::collection::vec((account, prop::collection::btree_set(tag, 0..12)), 0..300)
    }

    proptest! {
        #[test]
        fn lists_read_back_what_was_last_set(writes in arb_writes()) {
            let mut lists = TagLists::default();
            let mut model: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
            for (account, tags) in writes {
                lists.set(account, &tags.iter().copied().collect::<Vec<_>>());
                model.insert(account, tags);
            }
            for (account, tags) in &model {
                prop_assert_eq!(lists.tags(*account).collect::<BTreeSet<_>>(), tags.clone());
                prop_assert_eq!(lists.count(*account), tags.len());
            }
            prop_assert_eq!(lists.count(5_000_000), 0);
        }

        #[test]
        fn built_from_bitmaps_equals_the_transpose(members in prop::collection::vec(prop::collection::btree_set(prop_oneof![0u32..300, 65_530u32..65_540, 200_000u32..200_010], 0..40), 0..30)) {
            let bitmaps: Vec<RoaringBitmap> = members.iter().map(|m| m.iter().copied().collect()).collect();
            let lists = TagLists::from_bitmaps(&bitmaps.iter().collect::<Vec<_>>());
            for account in (0..300).chain(65_530..65_540).chain(200_000..200_010) {
                let expected: Vec<u32> = (0..members.len() as u32).filter(|&t| members[t as usize].contains(&account)).collect();
                prop_assert_eq!(lists.tags(account).collect::<Vec<_>>(), expected);
            }
        }
    }
}
