//! Audience conditions as bitmap algebra.
//!
//! `TagsAnd` intersects the tag bitmaps, smallest first so the running result only shrinks
//! (see [`intersect_all`] for how two mid-sized sets are intersected);
//! `TagsOr` unites them in one multi-way pass; together their results intersect; likewise
//! for (attribute slot, value) bitmaps; `TagsNot` subtracts the union of its tags last. The
//! result is always cut to live accounts.

use std::borrow::Cow;

use roaring::{MultiOps, RoaringBitmap};

/// A push condition after names were checked and attribute names turned into slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    All,
    /// `not`: accounts holding any of these tags are left out (`TagsNot` of the `timpush`
    /// family; the classic `im_push` accepts it too).
    Tags {
        and: Vec<String>,
        or: Vec<String>,
        not: Vec<String>,
    },
    Attrs {
        and: Vec<(u8, String)>,
        or: Vec<(u8, String)>,
    },
}

/// Members per roaring container: the high 16 bits of an account number pick its container.
const CONTAINER_SPAN: u64 = 1 << 16;
/// Below this many members per container on average, merging two sorted arrays is cheap.
const MERGE_CHEAP_BELOW: u64 = 128;
/// Roaring holds a container of more members than this as a bitmap, intersected word-wise.
pub(crate) const ARRAY_MAX: u64 = 4096;

/// Average members per container over the span of account numbers `set` reaches.
pub(crate) fn per_container(set: &RoaringBitmap) -> u64 {
    let containers = set
        .max()
        .map_or(1, |max| u64::from(max) / CONTAINER_SPAN + 1);
    set.len() / containers
}

/// The members of a tag or an attribute value: a bitmap, less the accounts removed from it and
/// plus those added beside it since it was last merged ([`super::member_set`]), each of those
/// a small bitmap when there are any.
pub(crate) struct Members<'a> {
    pub bulk: &'a RoaringBitmap,
    /// Accounts of `bulk` that are not members.
    pub removed: Option<RoaringBitmap>,
    /// Members not in `bulk`.
    pub added: Option<RoaringBitmap>,
}

impl Members<'_> {
    fn len(&self) -> u64 {
        let len = |part: &Option<RoaringBitmap>| part.as_ref().map_or(0, RoaringBitmap::len);
        self.bulk.len() + len(&self.added) - len(&self.removed)
    }

    /// The members among `candidates`, a small set: a few intersections with small bitmaps.
    fn among(&self, candidates: &RoaringBitmap) -> RoaringBitmap {
        let mut members = candidates & self.bulk;
        if let Some(removed) = &self.removed {
            members -= removed;
        }
        if let Some(added) = &self.added {
            members |= candidates & added;
        }
        members
    }
}

/// The union of the `removed` (or the `added`) parts of `sets`, if any has one.
fn union_of_parts<'s>(
    parts: impl Iterator<Item = &'s Option<RoaringBitmap>>,
) -> Option<RoaringBitmap> {
    let parts: Vec<&RoaringBitmap> = parts.flatten().collect();
    (!parts.is_empty()).then(|| union_of(&parts))
}

/// The union of `sets`. roaring's multi-way union turns each container it merges into an
/// 8 KiB bitmap, and back into an array at the end when it holds few members: right when the
/// result's containers are bitmaps anyway, but for sets of a few hundred members per
/// container (rare tags, the changes waiting beside a bitmap) the two conversions cost
/// several times the merges of sorted arrays they replace. Those are united pairwise.
fn union_of(sets: &[&RoaringBitmap]) -> RoaringBitmap {
    let members_per_container: u64 = sets.iter().map(|set| per_container(set)).sum();
    if members_per_container > ARRAY_MAX {
        return sets.iter().copied().union();
    }
    let Some((first, rest)) = sets.split_first() else {
        return RoaringBitmap::new();
    };
    rest.iter().fold((*first).clone(), |mut union, set| {
        union |= *set;
        union
    })
}

/// Intersection of `sets`, where `None` stands for a tag or value nobody holds, exact within
/// `live`: the result may also hold members of the first set that are not live, which
/// [`combine`] cuts away.
///
/// roaring intersects two array containers with a branchy merge, about 20 µs for two arrays of
/// 1,750 members (a tag 2.7% of accounts hold). When both sides are such arrays, `a ∩ b` is
/// computed as `a − (live − b)` instead: `live − b` clears `b`'s members in a copy of `live`'s
/// bitmap containers, and `a` against a bitmap is a bit test per member, together several times
/// faster. Within `live` it is the same set: a live member of `a` is missing from `live − b`
/// exactly when it is in `b`.
///
/// Changes not merged yet cost operations on small bitmaps only: a member of every set is
/// either in every bulk and removed from none, or added to some set, and then it is among the
/// union of the added parts, filtered set by set.
pub(crate) fn intersect_all(sets: Vec<Option<Members<'_>>>, live: &RoaringBitmap) -> RoaringBitmap {
    if sets.iter().any(Option::is_none) {
        return RoaringBitmap::new();
    }
    let mut sets: Vec<Members<'_>> = sets.into_iter().flatten().collect();
    sets.sort_by_key(Members::len);
    let Some((first, rest)) = sets.split_first() else {
        return RoaringBitmap::new();
    };
    let mut bulk: Cow<'_, RoaringBitmap> = Cow::Borrowed(first.bulk);
    for set in rest {
        if bulk.is_empty() {
            break;
        }
        bulk = Cow::Owned(intersect_two(&bulk, set.bulk, live));
    }
    if let Some(removed) = union_of_parts(sets.iter().map(|set| &set.removed)) {
        *bulk.to_mut() -= removed;
    }
    if let Some(mut added) = union_of_parts(sets.iter().map(|set| &set.added)) {
        for set in &sets {
            added = set.among(&added);
        }
        *bulk.to_mut() |= added;
    }
    bulk.into_owned()
}

fn intersect_two(a: &RoaringBitmap, b: &RoaringBitmap, live: &RoaringBitmap) -> RoaringBitmap {
    let both_mid_arrays = [a, b].iter().all(|set| {
        let n = per_container(set);
        (MERGE_CHEAP_BELOW..=ARRAY_MAX).contains(&n)
    });
    if both_mid_arrays {
        a - &(live - b)
    } else {
        a & b
    }
}

/// Union of `sets`. An account removed from one bulk may still be a member of another set:
/// those removed are taken out of the bulks' union, then those of them that are members
/// somewhere put back.
pub(crate) fn union_all(sets: Vec<Option<Members<'_>>>) -> RoaringBitmap {
    let sets: Vec<Members<'_>> = sets.into_iter().flatten().collect();
    let bulks: Vec<&RoaringBitmap> = sets.iter().map(|set| set.bulk).collect();
    let mut result = union_of(&bulks);
    if let Some(removed) = union_of_parts(sets.iter().map(|set| &set.removed)) {
        result -= &removed;
        for set in &sets {
            result |= set.among(&removed);
        }
    }
    if let Some(added) = union_of_parts(sets.iter().map(|set| &set.added)) {
        result |= added;
    }
    result
}

/// `and` and `or` each constrain only when non-empty; with neither, everyone in `live`.
/// `every_member_live`: the sets hold live accounts only (every numbered account is live or
/// deleted, and deleted ones leave every set), so the cut to `live`, a pass over every
/// container of the result, can be skipped.
pub(crate) fn combine(
    and: Option<RoaringBitmap>,
    or: Option<RoaringBitmap>,
    live: &RoaringBitmap,
    every_member_live: bool,
) -> RoaringBitmap {
    let mut result = match (and, or) {
        (Some(mut and), Some(or)) => {
            and &= or;
            and
        }
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => return live.clone(),
    };
    if !every_member_live {
        result &= live;
    }
    result
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn whole(bulk: &RoaringBitmap) -> Option<Members<'_>> {
        Some(Members {
            bulk,
            removed: None,
            added: None,
        })
    }

    /// Members of `0..n` drawn with probability `p`, over several containers.
    fn random_set(rng: &mut StdRng, n: u32, p: f64) -> RoaringBitmap {
        (0..n).filter(|_| rng.gen_bool(p)).collect()
    }

    #[test]
    fn intersections_equal_plain_roaring_at_every_density() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 5 * CONTAINER_SPAN as u32;
        // Live: dense in the first containers, sparse in the fourth, absent from the last.
        let mut live = random_set(&mut rng, 3 * CONTAINER_SPAN as u32, 0.97);
        live |= random_set(&mut rng, 4 * CONTAINER_SPAN as u32, 0.01);
        for (pa, pb, pc) in [
            (0.03, 0.03, 0.03),
            (0.01, 0.05, 0.002),
            (0.003, 0.003, 0.5),
            (0.0005, 0.03, 0.03),
            (0.9, 0.03, 0.8),
            (0.06, 0.07, 0.02),
        ] {
            let (a, b, c) = (
                random_set(&mut rng, n, pa),
                random_set(&mut rng, n, pb),
                random_set(&mut rng, n, pc),
            );
            let within = |set: RoaringBitmap, live: &RoaringBitmap| &set & live;
            assert_eq!(
                within(intersect_all(vec![whole(&a), whole(&b)], &live), &live),
                within(&a & &b, &live),
                "{pa} ∩ {pb}"
            );
            assert_eq!(
                within(
                    intersect_all(vec![whole(&a), whole(&b), whole(&c)], &live),
                    &live
                ),
                within(&(&a & &b) & &c, &live),
                "{pa} ∩ {pb} ∩ {pc}"
            );
            // Sets of live members only: exact, no cut needed.
            let (a_live, b_live) = (&a & &live, &b & &live);
            assert_eq!(
                intersect_all(vec![whole(&a_live), whole(&b_live)], &live),
                &a_live & &b_live,
                "{pa} ∩ {pb} within live"
            );
            let no_live = intersect_all(vec![whole(&a), whole(&b)], &RoaringBitmap::new());
            assert!((&a & &b).is_subset(&no_live) && no_live.is_subset(&(&a | &b)));
            // Through `combine`, as `Directory::audience` uses it: cut when some members may
            // not be live, uncut when every member is.
            assert_eq!(
                combine(
                    Some(intersect_all(vec![whole(&a), whole(&b)], &live)),
                    None,
                    &live,
                    false
                ),
                &(&a & &b) & &live
            );
            assert_eq!(
                combine(
                    Some(intersect_all(vec![whole(&a_live), whole(&b_live)], &live)),
                    Some(&a_live | &c),
                    &live,
                    true
                ),
                &(&a_live & &b_live) & &(&a_live | &c)
            );
            assert!(intersect_all(vec![whole(&a), None], &live).is_empty());
        }
    }

    #[test]
    fn mid_sized_arrays_take_the_complement_path() {
        let mut rng = StdRng::seed_from_u64(8);
        let a = random_set(&mut rng, 4 * CONTAINER_SPAN as u32, 0.03);
        assert!((MERGE_CHEAP_BELOW..=ARRAY_MAX).contains(&per_container(&a)));
        let sparse = random_set(&mut rng, 4 * CONTAINER_SPAN as u32, 0.001);
        assert!(per_container(&sparse) < MERGE_CHEAP_BELOW);
    }

    /// Sets given as a bulk with removals and additions give what the same sets whole give.
    #[test]
    fn sets_in_parts_combine_as_the_sets_whole() {
        let mut rng = StdRng::seed_from_u64(9);
        let n = 4 * CONTAINER_SPAN as u32;
        let live = random_set(&mut rng, n, 0.95);
        for densities in [
            vec![0.03, 0.03],
            vec![0.5, 0.02, 0.03],
            vec![0.001, 0.3, 0.03, 0.9],
            vec![0.02],
            vec![0.6, 0.7],
        ] {
            let sets: Vec<RoaringBitmap> = densities
                .iter()
                .map(|&p| random_set(&mut rng, n, p))
                .collect();
            // Some members of each moved to the added part; some accounts that are not
            // members put in the bulk and listed as removed (members of the other sets often,
            // at these densities). Every third set whole.
            let split: Vec<(RoaringBitmap, Option<RoaringBitmap>, Option<RoaringBitmap>)> = sets
                .iter()
                .enumerate()
                .map(|(k, set)| {
                    if k % 3 == 2 {
                        return (set.clone(), None, None);
                    }
                    let added: RoaringBitmap = set.iter().filter(|_| rng.gen_bool(0.05)).collect();
                    let removed = &random_set(&mut rng, n, 0.05) - set;
                    let bulk = &(set - &added) | &removed;
                    (bulk, Some(removed), Some(added))
                })
                .collect();
            let parts = || -> Vec<Option<Members<'_>>> {
                split
                    .iter()
                    .map(|(bulk, removed, added)| {
                        Some(Members {
                            bulk,
                            removed: removed.clone(),
                            added: added.clone(),
                        })
                    })
                    .collect()
            };
            let plain_and = sets
                .iter()
                .skip(1)
                .fold(sets[0].clone(), |acc, set| acc & set);
            assert_eq!(
                &intersect_all(parts(), &live) & &live,
                &plain_and & &live,
                "∩ {densities:?}"
            );
            let plain_or = sets.iter().fold(RoaringBitmap::new(), |acc, set| acc | set);
            assert_eq!(union_all(parts()), plain_or, "∪ {densities:?}");
        }
    }
}
