//! The on-disk form of a [`Directory`]; it is an API, so it is versioned.
//!
//! Layout (little-endian): magic `CRIERDIR`, `u32` version, then
//! - retired account numbers (version 2 on): a bitmap;
//! - accounts: `u32` count, each a `u16` length and the UTF-8 name, in number order (a name
//!   appears again after its retired number when an account of that name was created anew);
//! - live accounts: a bitmap; tag counts: `u32` length and one byte per account, saturating at
//!   255 (not read back: the per-account tag lists are rebuilt from the tag bitmaps);
//! - tags: `u32` count, each a name and a bitmap;
//! - attribute names: for each of the ten slots a `u8` present flag and a name;
//! - attribute values: for each slot a `u32` count, each a value and a bitmap;
//! - attribute kinds (version 3 on): for each slot a `u8`, its `AttrTypes` (0 UserID,
//!   1 RegistrationID).
//!
//! A bitmap is a `u64` length and roaring's portable serialization, the format other roaring
//! implementations read too.
//!
//! A snapshot is written either from the directory itself, held still meanwhile (at shutdown),
//! or from [`Contents`], a copy of what the file holds, made while every write of the app waits
//! and written while they go on (in the background).

use std::io::{self, Read, Write};

use roaring::RoaringBitmap;

use super::accounts::Names;
use super::{AccountKind, Directory, MemberSet, SlotValues, TagLists, ATTR_SLOTS};

const MAGIC: &[u8; 8] = b"CRIERDIR";
pub const VERSION: u32 = 3;
/// Version 1 had no retired numbers; it is read as a snapshot where none is retired. Versions 1
/// and 2 had no attribute kinds; every slot is read as one for UserIDs, the only kind there was.
const OLDEST_READABLE: u32 = 1;

/// What a snapshot holds of a directory, copied out of it, to be written while the directory
/// goes on changing: the names and the bitmaps. The indexes rebuilt at load (the identifier
/// map's hash table, the tag lists, the value columns) are left behind, about half the
/// directory's memory at ten million accounts, and so is the time to copy them, which every
/// write of the app waits for.
pub struct Contents {
    retired: RoaringBitmap,
    names: Names,
    live: RoaringBitmap,
    tags: Vec<(Box<str>, MemberSet)>,
    attr_names: [Option<String>; ATTR_SLOTS],
    attr_values: [Vec<(Box<str>, MemberSet)>; ATTR_SLOTS],
    attr_kinds: [AccountKind; ATTR_SLOTS],
}

impl Contents {
    /// Copies what a snapshot of `directory` holds. The bitmaps are copied on as many threads
    /// as there are cores: every write of the app waits for the copy, and the copy is bound by
    /// the kernel handing out fresh pages (about 0.85 s for the bitmaps at ten million
    /// accounts on one core of the benchmark machine), which it does on several at once.
    pub fn copy(directory: &Directory) -> Contents {
        let slots = &directory.attr_values;
        let bitmaps: Vec<&RoaringBitmap> = [&directory.retired, &directory.live]
            .into_iter()
            .chain(directory.tags.iter().map(|(_, members)| members.bitmap()))
            .chain(
                slots
                    .iter()
                    .flat_map(|slot| slot.values().iter().map(|(_, members)| members.bitmap())),
            )
            .collect();
        let mut copies = copy_in_parallel(&bitmaps).into_iter();
        let mut next = || copies.next().expect("a copy for every bitmap");
        let (retired, live) = (next(), next());
        let tags = directory
            .tags
            .iter()
            .map(|(tag, members)| (tag.clone(), members.with_bitmap(next())))
            .collect();
        let attr_values = std::array::from_fn(|slot| {
            slots[slot]
                .values()
                .iter()
                .map(|(value, members)| (value.clone(), members.with_bitmap(next())))
                .collect()
        });
        Contents {
            retired,
            names: directory.accounts.names().clone(),
            live,
            tags,
            attr_names: directory.attr_names.clone(),
            attr_values,
            attr_kinds: directory.attr_kinds,
        }
    }
}

impl Contents {
    /// Merges the copied changes into the copied bitmaps, so that the file is written from
    /// the bitmaps as they are rather than from a merged copy of each: in place, a merge
    /// rebuilds the containers the changes touch; a merged copy would also copy the others.
    ///
    /// [`Contents::copy`] copies the changes as they are (a few thousand at most per set), so
    /// that they are merged here, by the thread writing the file, not while writes wait.
    pub fn merge_changes(&mut self) {
        let tags = self.tags.iter_mut().map(|(_, members)| members);
        let values = self
            .attr_values
            .iter_mut()
            .flatten()
            .map(|(_, members)| members);
        tags.chain(values).for_each(MemberSet::merge_changes);
    }
}

/// Copies of `bitmaps`, in order, made by up to one thread per core, each taking a run of
/// about the same number of bytes.
fn copy_in_parallel(bitmaps: &[&RoaringBitmap]) -> Vec<RoaringBitmap> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8);
    let sizes: Vec<usize> = bitmaps
        .iter()
        .map(|bitmap| bitmap.serialized_size())
        .collect();
    let share = sizes.iter().sum::<usize>() / threads + 1;
    let mut runs = Vec::with_capacity(threads);
    let (mut start, mut bytes) = (0, 0);
    for (n, size) in sizes.iter().enumerate() {
        bytes += size;
        if bytes >= share {
            runs.push(&bitmaps[start..=n]);
            (start, bytes) = (n + 1, 0);
        }
    }
    runs.push(&bitmaps[start..]);
    let copy = |run: &[&RoaringBitmap]| -> Vec<RoaringBitmap> {
        run.iter().map(|&bitmap| bitmap.clone()).collect()
    };
    std::thread::scope(|scope| {
        let (first, rest) = runs.split_first().expect("at least one run");
        // A run whose thread could not be started is copied here, after the first.
        let helpers: Vec<_> = rest
            .iter()
            .map(|&run| {
                std::thread::Builder::new()
                    .name("crier-snapshot-copy".into())
                    .spawn_scoped(scope, move || copy(run))
                    .map_err(|_| run)
            })
            .collect();
        let mut copies = copy(first);
        for helper in helpers {
            match helper {
                Ok(thread) => copies.extend(thread.join().expect("a bitmap copy panicked")),
                Err(run) => copies.extend(copy(run)),
            }
        }
        copies
    })
}

/// A snapshot's contents, borrowed from a directory or from a copy of one.
struct Parts<'a> {
    retired: &'a RoaringBitmap,
    names: &'a Names,
    live: &'a RoaringBitmap,
    tags: &'a [(Box<str>, MemberSet)],
    /// Per account number, how many tags it holds, saturating at 255.
    tag_counts: Vec<u8>,
    attr_names: &'a [Option<String>; ATTR_SLOTS],
    attr_values: [&'a [(Box<str>, MemberSet)]; ATTR_SLOTS],
    attr_kinds: &'a [AccountKind; ATTR_SLOTS],
}

/// Writes `directory` as it is now; it must not change until written.
pub fn write(directory: &Directory, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    write_parts(
        Parts {
            retired: &directory.retired,
            names: directory.accounts.names(),
            live: &directory.live,
            tags: &directory.tags,
            tag_counts: directory.saturated_tag_counts().collect(),
            attr_names: &directory.attr_names,
            attr_values: std::array::from_fn(|slot| directory.attr_values[slot].values()),
            attr_kinds: &directory.attr_kinds,
        },
        out,
    )
}

/// Writes a copy of a directory, the same bytes [`write`] writes of the directory copied.
pub fn write_contents(contents: &Contents, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    write_parts(
        Parts {
            retired: &contents.retired,
            names: &contents.names,
            live: &contents.live,
            tags: &contents.tags,
            // The copy has no tag lists: counted from the bitmaps, here, on the writing
            // thread rather than while every write waits for the copy.
            tag_counts: saturated_counts(&contents.tags, contents.names.len()),
            attr_names: &contents.attr_names,
            attr_values: std::array::from_fn(|slot| contents.attr_values[slot].as_slice()),
            attr_kinds: &contents.attr_kinds,
        },
        out,
    )
}

fn write_parts(parts: Parts<'_>, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    write_bitmap(out, parts.retired)?;
    out.write_all(&parts.names.len().to_le_bytes())?;
    for name in parts.names.iter() {
        write_short_text(out, name)?;
    }
    write_bitmap(out, parts.live)?;
    out.write_all(&(parts.tag_counts.len() as u32).to_le_bytes())?;
    out.write_all(&parts.tag_counts)?;
    out.write_all(&(parts.tags.len() as u32).to_le_bytes())?;
    for (tag, members) in parts.tags {
        write_short_text(out, tag)?;
        write_bitmap(out, &members.to_bitmap())?;
    }
    for name in parts.attr_names {
        out.write_all(&[name.is_some() as u8])?;
        write_short_text(out, name.as_deref().unwrap_or_default())?;
    }
    for values in parts.attr_values {
        out.write_all(&(values.len() as u32).to_le_bytes())?;
        for (value, members) in values {
            write_short_text(out, value)?;
            write_bitmap(out, &members.to_bitmap())?;
        }
    }
    let kinds: Vec<u8> = parts.attr_kinds.iter().map(|kind| kind.code()).collect();
    out.write_all(&kinds)?;
    Ok(())
}

/// Per account number below `accounts`, how many of the bitmaps hold it, saturating at 255.
/// Counted a roaring container's range of accounts at a time, so the counts being added to
/// stay in cache while every bitmap is visited.
fn saturated_counts(tags: &[(Box<str>, MemberSet)], accounts: u32) -> Vec<u8> {
    const CHUNK_BITS: u32 = 16;
    let mut counts = vec![0u8; accounts as usize];
    for (chunk, counts) in counts.chunks_mut(1 << CHUNK_BITS).enumerate() {
        let first = (chunk as u32) << CHUNK_BITS;
        let last = first + (counts.len() as u32 - 1);
        for (_, members) in tags {
            members.bitmap().range(first..=last).for_each(|account| {
                let count = &mut counts[(account - first) as usize];
                *count = count.saturating_add(1);
            });
        }
    }
    for (_, members) in tags {
        let (added, removed) = members.changes();
        for account in added {
            let count = &mut counts[account as usize];
            *count = count.saturating_add(1);
        }
        for account in removed {
            let count = &mut counts[account as usize];
            *count = count.saturating_sub(1);
        }
    }
    counts
}

/// Reads a snapshot; `progress` is told how many accounts were read, now and then.
pub fn read(input: &mut impl Read, mut progress: impl FnMut(u32, u32)) -> io::Result<Directory> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a crier directory snapshot"));
    }
    let version = read_u32(input)?;
    if !(OLDEST_READABLE..=VERSION).contains(&version) {
        return Err(invalid(&format!(
            "snapshot version {version} is not supported (this build reads {OLDEST_READABLE} to {VERSION})"
        )));
    }
    let mut directory = Directory::default();
    if version >= 2 {
        directory.retired = read_bitmap(input)?;
    }
    let accounts = read_u32(input)?;
    directory.accounts.reserve(accounts as usize);
    let mut name = Vec::new();
    for n in 0..accounts {
        let text = read_short_text(input, &mut name)?;
        if directory.retired.contains(n) {
            directory.accounts.append(text);
        } else {
            directory.accounts.get_or_insert(text);
        }
        if n % 1_000_000 == 999_999 {
            progress(n + 1, accounts);
        }
    }
    directory.live = read_bitmap(input)?;
    let counts = u64::from(read_u32(input)?);
    if io::copy(&mut input.by_ref().take(counts), &mut io::sink())? != counts {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    for _ in 0..read_u32(input)? {
        let tag: Box<str> = read_short_text(input, &mut name)?.into();
        let members = read_bitmap(input)?;
        directory
            .tag_numbers
            .insert(tag.clone(), directory.tags.len() as u32);
        directory.tags.push((tag, MemberSet::from_bitmap(members)));
    }
    // The transpose of the tag bitmaps. Rebuilt rather than stored, so the format stays as it
    // was and cannot disagree with the bitmaps.
    let bitmaps: Vec<&RoaringBitmap> = directory
        .tags
        .iter()
        .map(|(_, members)| members.bitmap())
        .collect();
    directory.tag_lists = TagLists::from_bitmaps(&bitmaps);
    directory.most_tags_held = (0..accounts)
        .map(|id| directory.tag_lists.count(id))
        .max()
        .unwrap_or(0);
    for slot in 0..ATTR_SLOTS {
        let mut present = [0u8];
        input.read_exact(&mut present)?;
        let text = read_short_text(input, &mut name)?;
        directory.attr_names[slot] = (present[0] == 1).then(|| text.to_owned());
    }
    let mut slots = Vec::with_capacity(ATTR_SLOTS);
    for _ in 0..ATTR_SLOTS {
        let count = read_u32(input)?;
        let mut values = Vec::with_capacity(count.min(1 << 16) as usize);
        for _ in 0..count {
            let value: Box<str> = read_short_text(input, &mut name)?.into();
            values.push((value, read_bitmap(input)?));
        }
        slots.push(values);
    }
    // The per-account value columns are rebuilt from the bitmaps, like the tag lists; the
    // slots are independent, so on threads of their own (at ten million accounts each is a
    // pass over ten million memberships).
    let built: Vec<SlotValues> = std::thread::scope(|scope| {
        let builders: Vec<_> = slots
            .into_iter()
            .map(|values| scope.spawn(move || SlotValues::from_loaded(values)))
            .collect();
        builders
            .into_iter()
            .map(|builder| builder.join().expect("a value column builder panicked"))
            .collect()
    });
    for (slot, values) in directory.attr_values.iter_mut().zip(built) {
        *slot = values;
    }
    if version >= 3 {
        let mut kinds = [0u8; ATTR_SLOTS];
        input.read_exact(&mut kinds)?;
        for (slot, code) in kinds.into_iter().enumerate() {
            directory.attr_kinds[slot] = AccountKind::from_code(code.into())
                .ok_or_else(|| invalid(&format!("slot {slot} has unknown kind {code}")))?;
        }
    }
    Ok(directory)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn write_short_text(out: &mut (impl Write + ?Sized), text: &str) -> io::Result<()> {
    let len = u16::try_from(text.len()).map_err(|_| invalid("name longer than 65535 bytes"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn read_short_text<'a>(input: &mut impl Read, buffer: &'a mut Vec<u8>) -> io::Result<&'a str> {
    let mut len = [0u8; 2];
    input.read_exact(&mut len)?;
    buffer.resize(u16::from_le_bytes(len) as usize, 0);
    input.read_exact(buffer)?;
    std::str::from_utf8(buffer).map_err(|_| invalid("name is not UTF-8"))
}

fn write_bitmap(out: &mut (impl Write + ?Sized), bitmap: &RoaringBitmap) -> io::Result<()> {
    out.write_all(&(bitmap.serialized_size() as u64).to_le_bytes())?;
    bitmap.serialize_into(out)
}

fn read_bitmap(input: &mut impl Read) -> io::Result<RoaringBitmap> {
    let mut len = [0u8; 8];
    input.read_exact(&mut len)?;
    RoaringBitmap::deserialize_unchecked_from(input.take(u64::from_le_bytes(len)))
}
