//! The directory as the writes validated ahead of a request will leave it.
//!
//! Writes are committed in groups: the requests that queued while the previous group was
//! logged and applied are validated one after the other, logged in one append, then applied
//! together. A request must be validated against the state the earlier requests of its group
//! leave (the per-account tag cap counts their tags, an attribute name they define resolves,
//! an account they import is live), yet those are neither logged nor applied while it is
//! validated. [`Ahead`] answers the questions a validation asks from the directory and the
//! group's earlier writes ([`Pending`]), as if those were applied.
//!
//! The group writer also validates a group while the group before it, logged, is not applied
//! yet (it is applied while this one is logged): that group's writes come first in the view
//! ([`Pending::after`]), borrowed, not copied.
//!
//! The writes of a group are kept as they will be logged; what is indexed is only which names
//! they touch (by hash, so indexing a write allocates nothing per name) and how many tags they
//! may add to one account. A question about a name no earlier write touches is the directory's
//! to answer; one about a name they do touch replays them for that name, which is rare in bulk
//! writes (each account once per request) and cheap in small ones.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::LazyLock;

use hashbrown::{DefaultHashBuilder, HashMap, HashSet};

use super::{AccountKind, DirOp, Directory, ATTR_SLOTS};

/// The writes of a group accepted so far, in the order they will be logged and applied.
#[derive(Default)]
pub struct Pending<'e> {
    /// The writes of the group before, logged and not applied yet: they apply first.
    earlier: &'e [DirOp],
    ops: Vec<DirOp>,
    /// Hashes of the names imported or deleted.
    live_touched: HashSet<u64>,
    /// Hashes of the names whose tags change, each with an upper bound of the tags the writes
    /// may add to it (two names of one hash share a bound, which only makes it looser).
    tags_touched: HashMap<u64, usize>,
    /// The largest of those bounds.
    most_added: usize,
    /// The attribute names after the writes, once one of them names attributes.
    attr_names: Option<[Option<String>; ATTR_SLOTS]>,
    /// The attribute slots' account kinds after the writes, once one of them sets some.
    attr_kinds: Option<[AccountKind; ATTR_SLOTS]>,
    hasher: DefaultHashBuilder,
}

impl<'e> Pending<'e> {
    /// Nothing accepted yet, after `earlier` (logged, not applied to `directory`).
    pub fn after(directory: &Directory, earlier: &'e [DirOp]) -> Pending<'e> {
        let mut pending = Pending {
            earlier,
            ..Pending::default()
        };
        for op in earlier {
            pending.index(directory, op);
        }
        pending
    }

    /// Accepts the writes of one more request, after those accepted before.
    pub fn push(&mut self, directory: &Directory, ops: Vec<DirOp>) {
        for op in &ops {
            self.index(directory, op);
        }
        self.ops.extend(ops);
    }

    /// Whether the view is the directory itself: nothing accepted, and no earlier group.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.earlier.is_empty()
    }

    /// The writes accepted, not counting the earlier group's.
    pub fn into_ops(self) -> Vec<DirOp> {
        self.ops
    }

    /// Every write the view applies, in order: the earlier group's, then those accepted.
    fn all_ops(&self) -> impl DoubleEndedIterator<Item = &DirOp> {
        self.earlier.iter().chain(&self.ops)
    }

    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    fn index(&mut self, directory: &Directory, op: &DirOp) {
        match op {
            DirOp::Import { accounts } => {
                for name in accounts {
                    self.live_touched.insert(self.hash(name));
                }
            }
            DirOp::Delete { accounts } => {
                for name in accounts {
                    let hash = self.hash(name);
                    self.live_touched.insert(hash);
                    self.tags_touched.entry(hash).or_insert(0);
                }
            }
            DirOp::AddTags { users } => {
                for user in users {
                    let hash = self.hash(&user.account);
                    let added = self.tags_touched.entry(hash).or_insert(0);
                    *added += user.tags.len();
                    self.most_added = self.most_added.max(*added);
                }
            }
            DirOp::RemoveTags { users } => {
                for user in users {
                    let hash = self.hash(&user.account);
                    self.tags_touched.entry(hash).or_insert(0);
                }
            }
            DirOp::RemoveAllTags { accounts } => {
                for name in accounts {
                    let hash = self.hash(name);
                    self.tags_touched.entry(hash).or_insert(0);
                }
            }
            DirOp::SetAttrNames { names } => {
                let after = self.attr_names.get_or_insert_with(|| {
                    std::array::from_fn(|slot| directory.attr_names[slot].clone())
                });
                for (slot, name) in names {
                    after[*slot as usize % ATTR_SLOTS] = Some(name.clone());
                }
            }
            DirOp::SetAttrKinds { kinds } => {
                let after = self.attr_kinds.get_or_insert(directory.attr_kinds);
                for (slot, kind) in kinds {
                    after[*slot as usize % ATTR_SLOTS] = *kind;
                }
            }
            // Attribute values are not asked about while validating.
            DirOp::SetAttrs { .. } | DirOp::RemoveAttrs { .. } => {}
        }
    }
}

/// The directory as the pending writes will leave it, for validating the next request.
pub struct Ahead<'a> {
    directory: &'a Directory,
    pending: &'a Pending<'a>,
}

/// No write pending.
static NOTHING: LazyLock<Pending<'static>> = LazyLock::new(Pending::default);

impl<'a> Ahead<'a> {
    pub fn new(directory: &'a Directory, pending: &'a Pending<'a>) -> Ahead<'a> {
        Ahead { directory, pending }
    }

    /// The directory itself, with no write pending: for a write validated against the whole
    /// directory, first of its group (`Tenant::write_settled`).
    pub fn settled(directory: &'a Directory) -> Ahead<'a> {
        Ahead::new(directory, &NOTHING)
    }

    pub fn is_live(&self, name: &str) -> bool {
        if self.pending.live_touched.contains(&self.pending.hash(name)) {
            // The last import or deletion of the name decides.
            for op in self.pending.all_ops().rev() {
                match op {
                    DirOp::Import { accounts } if accounts.iter().any(|a| a == name) => {
                        return true
                    }
                    DirOp::Delete { accounts } if accounts.iter().any(|a| a == name) => {
                        return false
                    }
                    _ => {}
                }
            }
        }
        self.directory.is_live(name)
    }

    /// At least the most tags any account holds.
    pub fn most_tags_held(&self) -> usize {
        self.directory.most_tags_held() + self.pending.most_added
    }

    pub fn tag_count(&self, name: &str) -> usize {
        match self.tags_after(name) {
            Some(tags) => tags.len(),
            None => self.directory.tag_count(name),
        }
    }

    pub fn holds_tag(&self, name: &str, tag: &str) -> bool {
        match self.tags_after(name) {
            Some(tags) => tags.contains(tag),
            None => self.directory.holds_tag(name, tag),
        }
    }

    pub fn attr_names(&self) -> BTreeMap<u8, String> {
        match &self.pending.attr_names {
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(slot, name)| Some((slot as u8, name.clone()?)))
                .collect(),
            None => self.directory.attr_names(),
        }
    }

    pub fn attr_slot(&self, name: &str) -> Option<u8> {
        match &self.pending.attr_names {
            Some(names) => names
                .iter()
                .position(|n| n.as_deref() == Some(name))
                .map(|slot| slot as u8),
            None => self.directory.attr_slot(name),
        }
    }

    pub fn attr_kind(&self, slot: u8) -> AccountKind {
        match &self.pending.attr_kinds {
            Some(kinds) => kinds[slot as usize % ATTR_SLOTS],
            None => self.directory.attr_kind(slot),
        }
    }

    /// The tags of `name` after the pending writes, if any of them may change them.
    fn tags_after(&self, name: &str) -> Option<BTreeSet<String>> {
        if !self
            .pending
            .tags_touched
            .contains_key(&self.pending.hash(name))
        {
            return None;
        }
        let mut tags: BTreeSet<String> = self.directory.tags_of(name).into_iter().collect();
        for op in self.pending.all_ops() {
            match op {
                DirOp::AddTags { users } => users
                    .iter()
                    .filter(|user| user.account == name)
                    .for_each(|user| tags.extend(user.tags.iter().cloned())),
                DirOp::RemoveTags { users } => users
                    .iter()
                    .filter(|user| user.account == name)
                    .for_each(|user| {
                        for tag in &user.tags {
                            tags.remove(tag);
                        }
                    }),
                DirOp::RemoveAllTags { accounts } | DirOp::Delete { accounts } => {
                    if accounts.iter().any(|a| a == name) {
                        tags.clear();
                    }
                }
                DirOp::Import { .. }
                | DirOp::SetAttrs { .. }
                | DirOp::RemoveAttrs { .. }
                | DirOp::SetAttrNames { .. }
                | DirOp::SetAttrKinds { .. } => {}
            }
        }
        Some(tags)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::directory::{UserAttrSlots, UserAttrValues, UserTags};

    /// Writes over a handful of names, tags and attribute names, so that they keep meeting.
    fn arb_op() -> impl Strategy<Value = DirOp> {
        let account = "[a-e]";
        let tag = "t[0-5]";
        let user_tags = (account, prop::collection::vec(tag, 1..4))
            .prop_map(|(account, tags)| UserTags { account, tags });
        prop_oneof![
            2 => prop::collection::vec(account, 1..3).prop_map(|accounts| DirOp::Import { accounts }),
            1 => prop::collection::vec(account, 1..2).prop_map(|accounts| DirOp::Delete { accounts }),
            3 => prop::collection::vec(user_tags.clone(), 1..4).prop_map(|users| DirOp::AddTags { users }),
            2 => prop::collection::vec(user_tags, 1..4).prop_map(|users| DirOp::RemoveTags { users }),
            1 => prop::collection::vec(account, 1..3).prop_map(|accounts| DirOp::RemoveAllTags { accounts }),
            1 => prop::collection::vec((0u8..3, "n[0-3]"), 1..3).prop_map(|names| DirOp::SetAttrNames { names }),
            1 => (account, 0u8..3, "v[0-2]").prop_map(|(account, slot, value)| DirOp::SetAttrs {
                users: vec![UserAttrValues { account, values: vec![(slot, value)] }],
            }),
            1 => prop::collection::vec((0u8..3, prop_oneof![Just(AccountKind::UserId), Just(AccountKind::RegistrationId)]), 1..3)
                .prop_map(|kinds| DirOp::SetAttrKinds { kinds }),
            1 => (account, 0u8..3).prop_map(|(account, slot)| DirOp::RemoveAttrs {
                users: vec![UserAttrSlots { account, slots: vec![slot] }],
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Every answer of the view is the answer of the directory once the pending writes are
        /// applied, for the names they touch and the ones they do not; with or without an
        /// earlier group logged ahead of them and not applied.
        #[test]
        fn the_view_answers_as_the_directory_will(
            applied in prop::collection::vec(arb_op(), 0..20),
            earlier in prop::collection::vec(arb_op(), 0..8),
            pending_requests in prop::collection::vec(prop::collection::vec(arb_op(), 0..3), 0..6),
        ) {
            let mut directory = Directory::default();
            for op in &applied {
                directory.apply(op);
            }
            let mut after = directory.clone();
            for op in &earlier {
                after.apply(op);
            }
            let mut pending = Pending::after(&directory, &earlier);
            for request in &pending_requests {
                pending.push(&directory, request.clone());
                for op in request {
                    after.apply(op);
                }
                let ahead = Ahead::new(&directory, &pending);
                for name in ["a", "b", "c", "d", "e", "z"] {
                    prop_assert_eq!(ahead.is_live(name), after.is_live(name), "live {}", name);
                    prop_assert_eq!(ahead.tag_count(name), after.tag_count(name), "count {}", name);
                    prop_assert!(ahead.most_tags_held() >= after.tag_count(name));
                    for tag in ["t0", "t1", "t2", "t3", "t4", "t5", "t9"] {
                        prop_assert_eq!(ahead.holds_tag(name, tag), after.holds_tag(name, tag), "{} holds {}", name, tag);
                    }
                }
                prop_assert_eq!(ahead.attr_names(), after.attr_names());
                for name in ["n0", "n1", "n2", "n3"] {
                    prop_assert_eq!(ahead.attr_slot(name), after.attr_slot(name));
                }
                for slot in 0..3 {
                    prop_assert_eq!(ahead.attr_kind(slot), after.attr_kind(slot));
                }
            }
        }
    }
}
