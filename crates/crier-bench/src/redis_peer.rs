//! The Redis peer: one set per tag (`tag:<name>`), per attribute value used by a condition
//! (`attr:<slot>:<value>`) and of all accounts (`users`), members the account numbers. An
//! audience is built with SUNIONSTORE / SINTERSTORE, as a hand-built Redis system would.
//!
//! Only the attribute-value sets the conditions read are loaded: the 100M attribute
//! memberships of 10M accounts would need ~6 GiB more than the machine has to spare beside the
//! 200M tag memberships, and a set operation's cost depends only on the sets it reads.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::dataset::{attr_value, Dataset};
use crate::queries::{Kind, Query};
use crate::util::{log, measure, Timing};

/// Members per SADD and commands per pipeline round trip.
const MEMBERS_PER_SADD: usize = 1_000;
const COMMANDS_PER_PIPELINE: usize = 64;
const DEST: &str = "bench:audience";

pub struct PeerQuery {
    pub timing: Timing,
    pub cardinality: u64,
}

pub struct RedisResult {
    pub load: Duration,
    pub used_memory: u64,
    pub members: u64,
    pub queries: Vec<PeerQuery>,
}

impl PeerQuery {
    /// One peer's entry of an audience in an earlier run's JSON (`audiences[n].redis`).
    pub fn from_json(value: &serde_json::Value) -> Option<PeerQuery> {
        Some(PeerQuery {
            timing: Timing::from_json(value.get("timing")?),
            cardinality: value.get("cardinality")?.as_u64()?,
        })
    }
}

impl RedisResult {
    /// The Redis figures of an earlier run's JSON, with `queries` its per-condition entries.
    pub fn from_json(summary: &serde_json::Value, queries: Vec<PeerQuery>) -> Option<RedisResult> {
        Some(RedisResult {
            load: Duration::from_secs_f64(summary.get("load_s")?.as_f64()?),
            used_memory: summary.get("used_memory")?.as_u64()?,
            members: summary.get("members")?.as_u64()?,
            queries,
        })
    }
}

fn tag_key(dataset: &Dataset, rank: usize) -> String {
    format!("tag:{}", dataset.tag_names[rank])
}

fn attr_key(slot: usize, value: u16) -> String {
    format!("attr:{slot}:{}", attr_value(value))
}

fn used_memory(con: &mut redis::Connection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query(con)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Generates the SADD pipelines on a second thread while this one sends them.
fn load(
    con: &mut redis::Connection,
    dataset: &Dataset,
    queries: &[Query],
    started: Instant,
) -> anyhow::Result<u64> {
    let mut wanted: Vec<(usize, u16)> = queries.iter().flat_map(Query::attr_sets).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let (sender, receiver) = mpsc::sync_channel::<redis::Pipeline>(8);
    let dataset = dataset.clone();
    let producer = std::thread::spawn(move || {
        let mut sets: Vec<(String, Vec<u32>)> = (0..dataset.tag_names.len())
            .map(|rank| (tag_key(&dataset, rank), Vec::new()))
            .collect();
        let attr_index: HashMap<(usize, u16), usize> = wanted
            .iter()
            .enumerate()
            .map(|(n, &pair)| (pair, sets.len() + n))
            .collect();
        sets.extend(
            wanted
                .iter()
                .map(|&(slot, value)| (attr_key(slot, value), Vec::new())),
        );
        let users = sets.len();
        sets.push(("users".into(), Vec::new()));

        let mut pipe = redis::pipe();
        let mut commands = 0usize;
        let mut members = 0u64;
        let mut profile = Dataset::empty_profile();
        let mut add = |set: usize,
                       uid: u32,
                       sets: &mut Vec<(String, Vec<u32>)>,
                       pipe: &mut redis::Pipeline,
                       force: bool|
         -> bool {
            if !force {
                sets[set].1.push(uid);
            }
            if sets[set].1.len() >= MEMBERS_PER_SADD || (force && !sets[set].1.is_empty()) {
                pipe.cmd("SADD")
                    .arg(&sets[set].0)
                    .arg(&sets[set].1[..])
                    .ignore();
                sets[set].1.clear();
                commands += 1;
            }
            if commands >= COMMANDS_PER_PIPELINE || (force && commands > 0) {
                commands = 0;
                return sender.send(std::mem::replace(pipe, redis::pipe())).is_ok();
            }
            true
        };
        for uid in 0..dataset.accounts {
            dataset.profile(uid, &mut profile);
            members += profile.tags.len() as u64 + 1;
            let mut ok = add(users, uid, &mut sets, &mut pipe, false);
            for &tag in &profile.tags {
                ok &= add(tag as usize, uid, &mut sets, &mut pipe, false);
            }
            for (slot, &value) in profile.attrs.iter().enumerate() {
                if let Some(&set) = attr_index.get(&(slot, value)) {
                    members += 1;
                    ok &= add(set, uid, &mut sets, &mut pipe, false);
                }
            }
            if !ok {
                return members;
            }
        }
        for set in 0..sets.len() {
            add(set, 0, &mut sets, &mut pipe, true);
        }
        members
    });
    let mut sent = 0u64;
    for pipe in receiver {
        pipe.query::<()>(con).context("SADD pipeline")?;
        sent += 1;
        if sent % 20_000 == 0 {
            log(
                started,
                format!(
                    "redis: {} pipelines sent ({} members)",
                    sent,
                    sent * (COMMANDS_PER_PIPELINE * MEMBERS_PER_SADD) as u64
                ),
            );
        }
    }
    Ok(producer.join().expect("redis generator thread"))
}

fn run_query(con: &mut redis::Connection, dataset: &Dataset, query: &Query) -> anyhow::Result<u64> {
    let (command, keys): (&str, Vec<String>) = match &query.kind {
        Kind::All => ("SUNIONSTORE", vec!["users".into()]),
        Kind::TagsOr(ranks) => (
            "SUNIONSTORE",
            ranks.iter().map(|&r| tag_key(dataset, r)).collect(),
        ),
        Kind::TagsAnd(ranks) => (
            "SINTERSTORE",
            ranks.iter().map(|&r| tag_key(dataset, r)).collect(),
        ),
        Kind::AttrsAnd(pairs) => (
            "SINTERSTORE",
            pairs.iter().map(|&(s, v)| attr_key(s, v)).collect(),
        ),
        Kind::AttrsOr(pairs) => (
            "SUNIONSTORE",
            pairs.iter().map(|&(s, v)| attr_key(s, v)).collect(),
        ),
    };
    Ok(redis::cmd(command).arg(DEST).arg(keys).query(con)?)
}

pub fn run(
    url: &str,
    dataset: &Dataset,
    queries: &[Query],
    reps: usize,
    started: Instant,
) -> anyhow::Result<RedisResult> {
    let client = redis::Client::open(url)?;
    let mut con = client
        .get_connection()
        .with_context(|| format!("connecting to {url}"))?;
    redis::cmd("FLUSHDB").query::<()>(&mut con)?;
    let base_memory = used_memory(&mut con)?;
    let outcome = (|| {
        let t = Instant::now();
        let members = load(&mut con, dataset, queries, started)?;
        let load_time = t.elapsed();
        let used = used_memory(&mut con)?.saturating_sub(base_memory);
        log(
            started,
            format!(
                "redis: loaded {members} members in {:.1} s, {} MiB",
                load_time.as_secs_f64(),
                used >> 20
            ),
        );
        let mut results = Vec::new();
        for query in queries {
            redis::cmd("DEL").arg(DEST).query::<()>(&mut con)?;
            let (timing, cardinality) = measure(reps, || {
                let n = run_query(&mut con, dataset, query)?;
                Ok(n)
            })?;
            redis::cmd("DEL").arg(DEST).query::<()>(&mut con)?;
            log(
                started,
                format!(
                    "redis: {}: {} accounts, median {:.1} ms",
                    query.name,
                    cardinality,
                    timing.median.as_secs_f64() * 1e3
                ),
            );
            results.push(PeerQuery {
                timing,
                cardinality,
            });
        }
        anyhow::Ok(RedisResult {
            load: load_time,
            used_memory: used,
            members,
            queries: results,
        })
    })();
    // Whatever happened, give the memory back.
    let flushed = redis::cmd("FLUSHDB").query::<()>(&mut con);
    let result = outcome?;
    flushed?;
    log(started, "redis: FLUSHDB done");
    Ok(result)
}
