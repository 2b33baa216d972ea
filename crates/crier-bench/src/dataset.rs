//! The synthetic population, the same for Crier and its peers.
//!
//! Account `n` is named `user{n}`. It holds 15 to 25 distinct tags out of 1,000, drawn with
//! Zipf popularity (tag rank 1 the most popular), and one value for each of 10 attributes whose
//! value counts run from 2 (a gender-like flag) to 1,000 (a city-like field), values also
//! Zipf-distributed. Every profile comes from its own RNG seeded by (seed, account number), so
//! each consumer regenerates exactly the same data in a streaming pass, without holding 200M
//! (tag, account) pairs in memory.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const TAGS: usize = 1_000;
pub const MIN_TAGS_PER_ACCOUNT: usize = 15;
pub const MAX_TAGS_PER_ACCOUNT: usize = 25;

/// (name, distinct values) of the ten attribute slots "0".."9".
pub const ATTRS: [(&str, usize); 10] = [
    ("gender", 2),
    ("platform", 3),
    ("tier", 5),
    ("age_band", 10),
    ("language", 20),
    ("country", 50),
    ("region", 100),
    ("device", 200),
    ("app_version", 500),
    ("city", 1_000),
];

/// Draws an index in `0..n` with probability proportional to `1 / (index + 1)^s`.
#[derive(Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.gen();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// Probability of one draw landing on `index`.
    #[cfg(test)]
    pub fn probability(&self, index: usize) -> f64 {
        self.cdf[index] - if index == 0 { 0.0 } else { self.cdf[index - 1] }
    }
}

pub struct Profile {
    /// Tag ranks, 0-based (0 = the most popular tag), distinct.
    pub tags: Vec<u16>,
    /// Value index per attribute slot.
    pub attrs: [u16; 10],
}

#[derive(Clone)]
pub struct Dataset {
    pub accounts: u32,
    pub seed: u64,
    pub tag_zipf: Zipf,
    attr_zipf: Vec<Zipf>,
    pub tag_names: Vec<String>,
}

impl Dataset {
    pub fn new(accounts: u32, seed: u64, zipf_s: f64) -> Dataset {
        Dataset {
            accounts,
            seed,
            tag_zipf: Zipf::new(TAGS, zipf_s),
            attr_zipf: ATTRS.iter().map(|&(_, n)| Zipf::new(n, zipf_s)).collect(),
            tag_names: (1..=TAGS).map(tag_name).collect(),
        }
    }

    pub fn rng_for(&self, stream: u64, n: u64) -> SmallRng {
        SmallRng::seed_from_u64(
            self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(40) ^ n,
        )
    }

    /// The profile of account `uid`, written into `out` (reused to avoid allocation).
    pub fn profile(&self, uid: u32, out: &mut Profile) {
        let mut rng = self.rng_for(0, u64::from(uid));
        let count = rng.gen_range(MIN_TAGS_PER_ACCOUNT..=MAX_TAGS_PER_ACCOUNT);
        out.tags.clear();
        while out.tags.len() < count {
            let tag = self.tag_zipf.sample(&mut rng) as u16;
            if !out.tags.contains(&tag) {
                out.tags.push(tag);
            }
        }
        for (slot, zipf) in self.attr_zipf.iter().enumerate() {
            out.attrs[slot] = zipf.sample(&mut rng) as u16;
        }
    }

    pub fn empty_profile() -> Profile {
        Profile {
            tags: Vec::with_capacity(MAX_TAGS_PER_ACCOUNT),
            attrs: [0; 10],
        }
    }

    pub fn attr_zipf(&self, slot: usize) -> &Zipf {
        &self.attr_zipf[slot]
    }
}

/// 1-based popularity rank → tag name.
pub fn tag_name(rank: usize) -> String {
    format!("tag{rank:04}")
}

pub fn account_name(uid: u32) -> String {
    format!("user{uid}")
}

pub fn attr_value(index: u16) -> String {
    format!("v{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_deterministic_and_in_range() {
        let dataset = Dataset::new(1000, 7, 1.0);
        let (mut a, mut b) = (Dataset::empty_profile(), Dataset::empty_profile());
        for uid in 0..1000 {
            dataset.profile(uid, &mut a);
            dataset.profile(uid, &mut b);
            assert_eq!(a.tags, b.tags);
            assert_eq!(a.attrs, b.attrs);
            assert!((MIN_TAGS_PER_ACCOUNT..=MAX_TAGS_PER_ACCOUNT).contains(&a.tags.len()));
            for (slot, &(_, n)) in ATTRS.iter().enumerate() {
                assert!((a.attrs[slot] as usize) < n);
            }
        }
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        assert!(zipf.probability(0) > 0.13 && zipf.probability(0) < 0.14);
        assert!(zipf.probability(0) > zipf.probability(1));
    }
}
