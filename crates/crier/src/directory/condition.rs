//! Audience conditions as bitmap algebra.
//!
//! `TagsAnd` intersects the tag bitmaps, smallest first so the running result only shrinks;
//! `TagsOr` unites them in one multi-way pass; together their results intersect; likewise
//! for (attribute slot, value) bitmaps. The result is always cut to live accounts.

use roaring::{MultiOps, RoaringBitmap};

/// A push condition after names were checked and attribute names turned into slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    All,
    Tags {
        and: Vec<String>,
        or: Vec<String>,
    },
    Attrs {
        and: Vec<(u8, String)>,
        or: Vec<(u8, String)>,
    },
}

/// Intersection of `sets`, where `None` stands for a tag or value nobody holds.
pub(crate) fn intersect_all(mut sets: Vec<Option<&RoaringBitmap>>) -> RoaringBitmap {
    if sets.iter().any(Option::is_none) {
        return RoaringBitmap::new();
    }
    sets.sort_by_key(|set| set.map_or(0, RoaringBitmap::len));
    let mut sets = sets.into_iter().flatten();
    let Some(first) = sets.next() else {
        return RoaringBitmap::new();
    };
    let mut result = first.clone();
    for set in sets {
        if result.is_empty() {
            break;
        }
        result &= set;
    }
    result
}

pub(crate) fn union_all(sets: Vec<Option<&RoaringBitmap>>) -> RoaringBitmap {
    sets.into_iter().flatten().union()
}

/// `and` and `or` each constrain only when non-empty; with neither, everyone in `live`.
pub(crate) fn combine(
    and: Option<RoaringBitmap>,
    or: Option<RoaringBitmap>,
    live: &RoaringBitmap,
) -> RoaringBitmap {
    let mut result = match (and, or) {
        (Some(mut and), Some(or)) => {
            and &= or;
            and
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => return live.clone(),
    };
    result &= live;
    result
}
