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

use std::io::{self, Read, Write};

use roaring::RoaringBitmap;

use super::{AccountKind, Directory, SlotValues, TagLists, ATTR_SLOTS};

const MAGIC: &[u8; 8] = b"CRIERDIR";
pub const VERSION: u32 = 3;
/// Version 1 had no retired numbers; it is read as a snapshot where none is retired. Versions 1
/// and 2 had no attribute kinds; every slot is read as one for UserIDs, the only kind there was.
const OLDEST_READABLE: u32 = 1;

pub fn write(directory: &Directory, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    write_bitmap(out, &directory.retired)?;
    out.write_all(&directory.accounts.len().to_le_bytes())?;
    for name in directory.accounts.names() {
        write_short_text(out, name)?;
    }
    write_bitmap(out, &directory.live)?;
    out.write_all(&directory.accounts.len().to_le_bytes())?;
    let mut counts = directory.saturated_tag_counts();
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        buffer.clear();
        buffer.extend(counts.by_ref().take(64 * 1024));
        if buffer.is_empty() {
            break;
        }
        out.write_all(&buffer)?;
    }
    out.write_all(&(directory.tags.len() as u32).to_le_bytes())?;
    for (tag, members) in &directory.tags {
        write_short_text(out, tag)?;
        write_bitmap(out, members)?;
    }
    for name in &directory.attr_names {
        out.write_all(&[name.is_some() as u8])?;
        write_short_text(out, name.as_deref().unwrap_or_default())?;
    }
    for values in &directory.attr_values {
        out.write_all(&(values.len() as u32).to_le_bytes())?;
        for (value, members) in values.iter() {
            write_short_text(out, value)?;
            write_bitmap(out, members)?;
        }
    }
    let kinds: Vec<u8> = directory
        .attr_kinds
        .iter()
        .map(|kind| kind.code())
        .collect();
    out.write_all(&kinds)?;
    Ok(())
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
    directory
        .accounts
        .reserve(accounts as usize, accounts as usize * 12);
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
        directory.tags.push((tag, members));
    }
    // The transpose of the tag bitmaps. Rebuilt rather than stored, so the format stays as it
    // was and cannot disagree with the bitmaps.
    let bitmaps: Vec<&RoaringBitmap> = directory.tags.iter().map(|(_, members)| members).collect();
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
