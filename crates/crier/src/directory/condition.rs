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
const ARRAY_MAX: u64 = 4096;

/// Average members per container over the span of account numbers `set` reaches.
fn per_container(set: &RoaringBitmap) -> u64 {
    let containers = set
        .max()
        .map_or(1, |max| u64::from(max) / CONTAINER_SPAN + 1);
    set.len() / containers
}

/// The members of a tag or an attribute value, as a bitmap and, for a tag with additions not
/// merged into it yet ([`super::member_set`]), a small bitmap of those, disjoint from it.
pub(crate) struct Members<'a> {
    pub bulk: &'a RoaringBitmap,
    pub recent: Option<RoaringBitmap>,
}

impl Members<'_> {
    fn len(&self) -> u64 {
        self.bulk.len() + self.recent.as_ref().map_or(0, RoaringBitmap::len)
    }
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
/// The running result is kept as two parts too, the intersection of the bulks and the rest,
/// so a set's recent additions cost intersections with a small bitmap, never a copy of its
/// bulk: (B ∪ s) ∩ (B' ∪ r') = (B ∩ B') ∪ (B ∩ r') ∪ (s ∩ (B' ∪ r')).
pub(crate) fn intersect_all(sets: Vec<Option<Members<'_>>>, live: &RoaringBitmap) -> RoaringBitmap {
    if sets.iter().any(Option::is_none) {
        return RoaringBitmap::new();
    }
    let mut sets: Vec<Members<'_>> = sets.into_iter().flatten().collect();
    sets.sort_by_key(Members::len);
    let mut sets = sets.into_iter();
    let Some(first) = sets.next() else {
        return RoaringBitmap::new();
    };
    let mut bulk: Cow<'_, RoaringBitmap> = Cow::Borrowed(first.bulk);
    let mut rest = first.recent;
    for set in sets {
        if bulk.is_empty() && rest.as_ref().is_none_or(RoaringBitmap::is_empty) {
            break;
        }
        let mut next_rest = set.recent.as_ref().map(|recent| bulk.as_ref() & recent);
        if let Some(rest) = &rest {
            let mut kept = rest & set.bulk;
            if let Some(recent) = &set.recent {
                kept |= rest & recent;
            }
            *next_rest.get_or_insert_default() |= kept;
        }
        bulk = Cow::Owned(intersect_two(&bulk, set.bulk, live));
        rest = next_rest;
    }
    let mut result = bulk.into_owned();
    if let Some(rest) = rest {
        result |= rest;
    }
    result
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

pub(crate) fn union_all(sets: Vec<Option<Members<'_>>>) -> RoaringBitmap {
    let sets: Vec<Members<'_>> = sets.into_iter().flatten().collect();
    let mut result = sets.iter().map(|set| set.bulk).union();
    for recent in sets.into_iter().filter_map(|set| set.recent) {
        result |= recent;
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
        Some(Members { bulk, recent: None })
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

    /// Sets given as a bulk and recent additions give what the same sets whole give.
    #[test]
    fn sets_in_two_parts_combine_as_the_sets_whole() {
        let mut rng = StdRng::seed_from_u64(9);
        let n = 4 * CONTAINER_SPAN as u32;
        let live = random_set(&mut rng, n, 0.95);
        for densities in [
            vec![0.03, 0.03],
            vec![0.5, 0.02, 0.03],
            vec![0.001, 0.3, 0.03, 0.9],
            vec![0.02],
        ] {
            let sets: Vec<RoaringBitmap> = densities
                .iter()
                .map(|&p| random_set(&mut rng, n, p))
                .collect();
            // Some members of each (none of some sets) moved to the recent part.
            let split: Vec<(RoaringBitmap, Option<RoaringBitmap>)> = sets
                .iter()
                .enumerate()
                .map(|(k, set)| {
                    if k % 3 == 2 {
                        return (set.clone(), None);
                    }
                    let recent: RoaringBitmap = set.iter().filter(|_| rng.gen_bool(0.05)).collect();
                    (set - &recent, Some(recent))
                })
                .collect();
            let parts = || -> Vec<Option<Members<'_>>> {
                split
                    .iter()
                    .map(|(bulk, recent)| {
                        Some(Members {
                            bulk,
                            recent: recent.clone(),
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
