//! Counts over the directory for the console's reads (`v4/crier/tag_stats`, `attr_stats`):
//! the most held tags and the values of one attribute, each with its live members.
//!
//! A count is the size of a bitmap cut to `live`, so it is what a push on that one tag or
//! value would reach now. Counting every tag of an app costs one intersection per tag: at the
//! benchmark's 1,000 tags over a million accounts, a few milliseconds. Call it off the async
//! runtime.

use super::{Directory, ATTR_SLOTS};

/// A tag or an attribute value and how many live accounts hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    pub count: u64,
}

/// The `want` most held of `items` (name, live members), most held first, ties by name; and how
/// many items have at least one live member.
fn top(items: impl Iterator<Item = Held>, want: usize) -> (Vec<Held>, u64) {
    let mut held: Vec<Held> = items.filter(|item| item.count > 0).collect();
    let distinct = held.len() as u64;
    held.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    held.truncate(want);
    (held, distinct)
}

impl Directory {
    /// The `want` tags with the most live members, and how many tags have any.
    pub fn top_tags(&self, want: usize) -> (Vec<Held>, u64) {
        let items = self.tags.iter().map(|(name, members)| Held {
            name: name.to_string(),
            count: members.intersection_len(&self.live),
        });
        top(items, want)
    }

    /// The `want` values of attribute `slot` with the most live members, and how many values
    /// have any.
    pub fn top_attr_values(&self, slot: u8, want: usize) -> (Vec<Held>, u64) {
        let values = &self.attr_values[slot as usize % ATTR_SLOTS];
        let items = values.iter().map(|(value, members)| Held {
            name: value.to_string(),
            count: members.intersection_len(&self.live),
        });
        top(items, want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{DirOp, UserTags};

    #[test]
    fn tags_are_counted_over_live_accounts_only_most_held_first() {
        let mut directory = Directory::default();
        directory.apply(&DirOp::Import {
            accounts: vec!["a".into(), "b".into()],
        });
        let tags = |account: &str, tags: &[&str]| UserTags {
            account: account.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        directory.apply(&DirOp::AddTags {
            users: vec![
                tags("a", &["x", "y"]),
                tags("b", &["y"]),
                // Not imported: holds the tag, counts for nothing.
                tags("c", &["z"]),
            ],
        });
        let (top, distinct) = directory.top_tags(10);
        assert_eq!(distinct, 2);
        assert_eq!(
            top,
            [
                Held {
                    name: "y".into(),
                    count: 2
                },
                Held {
                    name: "x".into(),
                    count: 1
                }
            ]
        );
        assert_eq!(directory.top_tags(1).0.len(), 1);
    }
}
