//! The audience conditions measured, in terms every system can express.

use crier::directory::Condition;

use crate::dataset::{attr_value, tag_name, ATTRS};

#[derive(Debug, Clone)]
pub enum Kind {
    All,
    /// Tag ranks, 0-based.
    TagsOr(Vec<usize>),
    TagsAnd(Vec<usize>),
    /// (attribute slot, value index)
    AttrsAnd(Vec<(usize, u16)>),
    AttrsOr(Vec<(usize, u16)>),
}

#[derive(Debug, Clone)]
pub struct Query {
    pub name: String,
    pub kind: Kind,
}

fn tag_list(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(|&r| tag_name(r + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

fn attr_list(pairs: &[(usize, u16)]) -> String {
    pairs
        .iter()
        .map(|&(slot, v)| format!("{}={}", ATTRS[slot].0, attr_value(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn all() -> Vec<Query> {
    let tags = |label: &str, op: &str, ranks: Vec<usize>| {
        let name = format!("{op} {} {label} ({})", ranks.len(), tag_list(&ranks));
        let kind = if op == "TagsOr" {
            Kind::TagsOr(ranks)
        } else {
            Kind::TagsAnd(ranks)
        };
        Query { name, kind }
    };
    let and = vec![(0, 0), (3, 2)];
    let or = vec![(1, 2), (4, 5), (9, 0)];
    vec![
        Query {
            name: "all users".into(),
            kind: Kind::All,
        },
        tags("popular", "TagsOr", vec![0, 1, 2]),
        tags("middling", "TagsOr", vec![99, 100, 101]),
        tags("rare", "TagsOr", vec![997, 998, 999]),
        tags("popular", "TagsAnd", vec![0, 1]),
        tags("middling", "TagsAnd", vec![99, 100]),
        tags("rare", "TagsAnd", vec![998, 999]),
        Query {
            name: format!("AttrsAnd 2 ({})", attr_list(&and)),
            kind: Kind::AttrsAnd(and),
        },
        Query {
            name: format!("AttrsOr 3 ({})", attr_list(&or)),
            kind: Kind::AttrsOr(or),
        },
    ]
}

impl Query {
    pub fn to_crier(&self) -> Condition {
        let names = |ranks: &[usize]| ranks.iter().map(|&r| tag_name(r + 1)).collect::<Vec<_>>();
        let pairs = |pairs: &[(usize, u16)]| {
            pairs
                .iter()
                .map(|&(slot, v)| (slot as u8, attr_value(v)))
                .collect::<Vec<_>>()
        };
        match &self.kind {
            Kind::All => Condition::All,
            Kind::TagsOr(ranks) => Condition::Tags {
                and: Vec::new(),
                or: names(ranks),
                not: Vec::new(),
            },
            Kind::TagsAnd(ranks) => Condition::Tags {
                and: names(ranks),
                or: Vec::new(),
                not: Vec::new(),
            },
            Kind::AttrsAnd(p) => Condition::Attrs {
                and: pairs(p),
                or: Vec::new(),
            },
            Kind::AttrsOr(p) => Condition::Attrs {
                and: Vec::new(),
                or: pairs(p),
            },
        }
    }

    /// The attribute (slot, value) sets this query reads.
    pub fn attr_sets(&self) -> Vec<(usize, u16)> {
        match &self.kind {
            Kind::AttrsAnd(p) | Kind::AttrsOr(p) => p.clone(),
            _ => Vec::new(),
        }
    }
}
