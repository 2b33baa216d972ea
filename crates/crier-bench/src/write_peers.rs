//! The bulk writes on what a user would otherwise build: the same requests as Crier's (the
//! first `--peer-write-requests` of each kind: same users, same changes), on
//!
//! - Redis: a set per tag (`tag:<tag>`, members account names) and per account
//!   (`tags:<account>`, for reading an account's tags back), a hash per account
//!   (`user:<account>`, attribute name → value) and a set per attribute value as the index
//!   (`attr:<slot>:<value>`). A request is one pipeline of `SADD`/`SREM`; setting or removing
//!   attributes is two, since the index needs the values being replaced: `HMGET` first, then
//!   `SREM` old / `SADD` new / `HSET` (or `HDEL`). `--concurrency` connections, like Crier's.
//! - SQLite, the naive tables with the keys writes need: `user_tags (account, tag)` and
//!   `user_attrs (account, attr, value)` keyed by account, indexed by tag and by (attr, value);
//!   WAL with `synchronous = NORMAL` (as Crier's own log), one transaction per request, one
//!   connection (SQLite has one writer).
//!
//! Both hold only the accounts the writes touch, loaded beforehand with their dataset
//! profile, not all of them: that takes seconds instead of most of an hour, and it favours
//! the peers (smaller hash tables and B-trees, fewer cache misses than at full size).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};

use crate::dataset::{account_name, attr_value, Dataset, ATTRS};
use crate::util::{log, percentile, process_cpu_secs};
use crate::workload::{self, UserAttrs, UserTags, USERS_PER_REQUEST};

/// The four kinds of write, in the order Crier runs them.
enum Requests {
    Tags(Vec<Vec<UserTags>>),
    Attrs(Vec<Vec<UserAttrs>>),
}

struct Kind {
    key: &'static str,
    add: bool,
    requests: Requests,
}

impl Kind {
    fn len(&self) -> usize {
        match &self.requests {
            Requests::Tags(r) => r.len(),
            Requests::Attrs(r) => r.len(),
        }
    }

    fn items(&self) -> u64 {
        match &self.requests {
            Requests::Tags(r) => workload::tag_items(r),
            Requests::Attrs(r) => workload::attr_items(r),
        }
    }
}

fn kinds(dataset: &Dataset, requests: usize) -> Vec<Kind> {
    let tags = || {
        (0..requests)
            .map(|n| workload::tag_request(dataset, n))
            .collect()
    };
    vec![
        Kind {
            key: "add_tag",
            add: true,
            requests: Requests::Tags(tags()),
        },
        Kind {
            key: "set_attr",
            add: true,
            requests: Requests::Attrs(
                (0..requests)
                    .map(|n| workload::attr_request(dataset, n, false))
                    .collect(),
            ),
        },
        Kind {
            key: "remove_tag",
            add: false,
            requests: Requests::Tags(tags()),
        },
        Kind {
            key: "remove_attr",
            add: false,
            requests: Requests::Attrs(
                (0..requests)
                    .map(|n| workload::attr_request(dataset, n, true))
                    .collect(),
            ),
        },
    ]
}

/// Every account some request of `kinds` names, once, ascending.
fn touched(kinds: &[Kind]) -> Vec<u32> {
    let mut uids: Vec<u32> = kinds
        .iter()
        .flat_map(|kind| match &kind.requests {
            Requests::Tags(r) => r.iter().flatten().map(|u| u.uid).collect::<Vec<_>>(),
            Requests::Attrs(r) => r.iter().flatten().map(|u| u.uid).collect(),
        })
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

fn result_json(
    requests: usize,
    items: u64,
    elapsed: Duration,
    mut latencies: Vec<Duration>,
    server_cpu_s: f64,
) -> Value {
    latencies.sort();
    let users = (requests * USERS_PER_REQUEST) as f64;
    let secs = elapsed.as_secs_f64();
    json!({
        "requests": requests,
        "users": users,
        "items": items,
        "elapsed_s": secs,
        "users_per_s": users / secs,
        "items_per_s": items as f64 / secs,
        "p50_s": percentile(&latencies, 0.50).as_secs_f64(),
        "p99_s": percentile(&latencies, 0.99).as_secs_f64(),
        "max_s": percentile(&latencies, 1.0).as_secs_f64(),
        "cpu_s": server_cpu_s,
        "cpu_us_per_user": server_cpu_s * 1e6 / users,
    })
}

pub fn run(
    redis_url: &str,
    work_dir: &Path,
    dataset: &Dataset,
    requests: usize,
    concurrency: usize,
    started: Instant,
) -> anyhow::Result<Value> {
    let kinds = kinds(dataset, requests);
    let uids = touched(&kinds);
    log(
        started,
        format!(
            "write peers: {} requests of each kind, {} accounts touched",
            requests,
            uids.len()
        ),
    );
    let redis = redis_run(redis_url, dataset, &kinds, &uids, concurrency, started)?;
    let sqlite = sqlite_run(work_dir, dataset, &kinds, &uids, started)?;
    Ok(json!({
        "requests_per_kind": requests,
        "accounts_loaded": uids.len(),
        "redis": redis,
        "sqlite": sqlite,
    }))
}

fn redis_cpu(con: &mut redis::Connection) -> anyhow::Result<impl Fn() -> f64> {
    let info: String = redis::cmd("INFO").arg("server").query(con)?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .context("INFO server gave no process_id")?;
    Ok(move || process_cpu_secs(&pid))
}

fn redis_run(
    url: &str,
    dataset: &Dataset,
    kinds: &[Kind],
    uids: &[u32],
    concurrency: usize,
    started: Instant,
) -> anyhow::Result<Value> {
    let client = redis::Client::open(url)?;
    let mut con = client
        .get_connection()
        .with_context(|| format!("connecting to {url}"))?;
    redis::cmd("FLUSHDB").query::<()>(&mut con)?;
    let outcome = (|| {
        let t = Instant::now();
        let mut profile = Dataset::empty_profile();
        for chunk in uids.chunks(500) {
            let mut pipe = redis::pipe();
            for &uid in chunk {
                dataset.profile(uid, &mut profile);
                let name = account_name(uid);
                let tags: Vec<&str> = profile
                    .tags
                    .iter()
                    .map(|&t| dataset.tag_names[t as usize].as_str())
                    .collect();
                pipe.cmd("SADD")
                    .arg(format!("tags:{name}"))
                    .arg(&tags)
                    .ignore();
                for tag in &tags {
                    pipe.cmd("SADD")
                        .arg(format!("tag:{tag}"))
                        .arg(&name)
                        .ignore();
                }
                let mut hset = redis::cmd("HSET");
                hset.arg(format!("user:{name}"));
                for (slot, &value) in profile.attrs.iter().enumerate() {
                    let value = attr_value(value);
                    hset.arg(ATTRS[slot].0).arg(&value);
                    pipe.cmd("SADD")
                        .arg(format!("attr:{slot}:{value}"))
                        .arg(&name)
                        .ignore();
                }
                pipe.add_command(hset).ignore();
            }
            pipe.query::<()>(&mut con)?;
        }
        log(
            started,
            format!(
                "write peers: redis loaded {} accounts in {:.1} s",
                uids.len(),
                t.elapsed().as_secs_f64()
            ),
        );
        let cpu = redis_cpu(&mut con)?;
        let mut results = Map::new();
        for kind in kinds {
            let next = AtomicUsize::new(0);
            let cpu_before = cpu();
            let t = Instant::now();
            let latencies: Vec<Duration> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..concurrency.max(1))
                    .map(|_| {
                        let (client, next) = (&client, &next);
                        scope.spawn(move || {
                            let mut con = client.get_connection()?;
                            let mut latencies = Vec::new();
                            loop {
                                let n = next.fetch_add(1, Ordering::Relaxed);
                                if n >= kind.len() {
                                    break;
                                }
                                let t = Instant::now();
                                redis_request(&mut con, dataset, kind, n)?;
                                latencies.push(t.elapsed());
                            }
                            anyhow::Ok(latencies)
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for worker in workers {
                    all.extend(worker.join().expect("a redis writer panicked")?);
                }
                anyhow::Ok(all)
            })?;
            let elapsed = t.elapsed();
            let result = result_json(
                kind.len(),
                kind.items(),
                elapsed,
                latencies,
                cpu() - cpu_before,
            );
            log(started, format!("write peers: redis {} {result}", kind.key));
            results.insert(kind.key.to_owned(), result);
        }
        let memory: String = redis::cmd("INFO").arg("memory").query(&mut con)?;
        results.insert(
            "used_memory".into(),
            json!(memory
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())),
        );
        anyhow::Ok(Value::Object(results))
    })();
    let flushed = redis::cmd("FLUSHDB").query::<()>(&mut con);
    let result = outcome?;
    flushed?;
    Ok(result)
}

fn redis_request(
    con: &mut redis::Connection,
    dataset: &Dataset,
    kind: &Kind,
    n: usize,
) -> anyhow::Result<()> {
    let (set_command, mut pipe) = (if kind.add { "SADD" } else { "SREM" }, redis::pipe());
    match &kind.requests {
        Requests::Tags(requests) => {
            for user in &requests[n] {
                let name = account_name(user.uid);
                let tags: Vec<&str> = user
                    .tags
                    .iter()
                    .map(|&t| dataset.tag_names[t].as_str())
                    .collect();
                pipe.cmd(set_command)
                    .arg(format!("tags:{name}"))
                    .arg(&tags)
                    .ignore();
                for tag in tags {
                    pipe.cmd(set_command)
                        .arg(format!("tag:{tag}"))
                        .arg(&name)
                        .ignore();
                }
            }
            pipe.query::<()>(con)?;
        }
        Requests::Attrs(requests) => {
            let users = &requests[n];
            let mut read = redis::pipe();
            for user in users {
                read.cmd("HMGET")
                    .arg(format!("user:{}", account_name(user.uid)));
                for &(slot, _) in &user.attrs {
                    read.arg(ATTRS[slot].0);
                }
            }
            let before: Vec<Vec<Option<String>>> = read.query(con)?;
            for (user, before) in users.iter().zip(before) {
                let name = account_name(user.uid);
                let mut hash = redis::cmd(if kind.add { "HSET" } else { "HDEL" });
                hash.arg(format!("user:{name}"));
                let mut changed = false;
                for (&(slot, value), before) in user.attrs.iter().zip(before) {
                    let value = value.map(attr_value);
                    if value == before {
                        continue;
                    }
                    if let Some(before) = before {
                        pipe.cmd("SREM")
                            .arg(format!("attr:{slot}:{before}"))
                            .arg(&name)
                            .ignore();
                    }
                    hash.arg(ATTRS[slot].0);
                    changed = true;
                    if let Some(value) = value {
                        pipe.cmd("SADD")
                            .arg(format!("attr:{slot}:{value}"))
                            .arg(&name)
                            .ignore();
                        hash.arg(value);
                    }
                }
                if changed {
                    pipe.add_command(hash).ignore();
                }
            }
            pipe.query::<()>(con)?;
        }
    }
    Ok(())
}

fn sqlite_run(
    work_dir: &Path,
    dataset: &Dataset,
    kinds: &[Kind],
    uids: &[u32],
    started: Instant,
) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("crier-bench-sqlite-writes-")
        .tempdir_in(work_dir)?;
    let mut db = Connection::open(dir.path().join("naive.db"))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
         CREATE TABLE user_tags (account TEXT NOT NULL, tag TEXT NOT NULL,
                                 PRIMARY KEY (account, tag)) WITHOUT ROWID;
         CREATE INDEX user_tags_by_tag ON user_tags (tag);
         CREATE TABLE user_attrs (account TEXT NOT NULL, attr TEXT NOT NULL, value TEXT NOT NULL,
                                  PRIMARY KEY (account, attr)) WITHOUT ROWID;
         CREATE INDEX user_attrs_by_value ON user_attrs (attr, value);",
    )?;
    let t = Instant::now();
    let mut profile = Dataset::empty_profile();
    for chunk in uids.chunks(10_000) {
        let tx = db.transaction()?;
        {
            let mut tag = tx.prepare_cached("INSERT INTO user_tags VALUES (?1, ?2)")?;
            let mut attr = tx.prepare_cached("INSERT INTO user_attrs VALUES (?1, ?2, ?3)")?;
            for &uid in chunk {
                dataset.profile(uid, &mut profile);
                let name = account_name(uid);
                for &t in &profile.tags {
                    tag.execute(params![name, dataset.tag_names[t as usize]])?;
                }
                for (slot, &value) in profile.attrs.iter().enumerate() {
                    attr.execute(params![name, ATTRS[slot].0, attr_value(value)])?;
                }
            }
        }
        tx.commit()?;
    }
    log(
        started,
        format!(
            "write peers: sqlite loaded {} accounts in {:.1} s",
            uids.len(),
            t.elapsed().as_secs_f64()
        ),
    );
    let mut results = Map::new();
    for kind in kinds {
        let cpu_before = process_cpu_secs("self");
        let t = Instant::now();
        let mut latencies = Vec::with_capacity(kind.len());
        for n in 0..kind.len() {
            let t = Instant::now();
            sqlite_request(&mut db, dataset, kind, n)?;
            latencies.push(t.elapsed());
        }
        let result = result_json(
            kind.len(),
            kind.items(),
            t.elapsed(),
            latencies,
            process_cpu_secs("self") - cpu_before,
        );
        log(
            started,
            format!("write peers: sqlite {} {result}", kind.key),
        );
        results.insert(kind.key.to_owned(), result);
    }
    Ok(Value::Object(results))
}

fn sqlite_request(
    db: &mut Connection,
    dataset: &Dataset,
    kind: &Kind,
    n: usize,
) -> anyhow::Result<()> {
    let tx = db.transaction()?;
    match (&kind.requests, kind.add) {
        (Requests::Tags(requests), add) => {
            let mut statement = tx.prepare_cached(if add {
                "INSERT OR IGNORE INTO user_tags VALUES (?1, ?2)"
            } else {
                "DELETE FROM user_tags WHERE account = ?1 AND tag = ?2"
            })?;
            for user in &requests[n] {
                let name = account_name(user.uid);
                for &tag in &user.tags {
                    statement.execute(params![name, dataset.tag_names[tag]])?;
                }
            }
        }
        (Requests::Attrs(requests), true) => {
            let mut statement = tx.prepare_cached(
                "INSERT INTO user_attrs VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, attr) DO UPDATE SET value = excluded.value",
            )?;
            for user in &requests[n] {
                let name = account_name(user.uid);
                for &(slot, value) in &user.attrs {
                    let value = attr_value(value.unwrap_or_default());
                    statement.execute(params![name, ATTRS[slot].0, value])?;
                }
            }
        }
        (Requests::Attrs(requests), false) => {
            let mut statement =
                tx.prepare_cached("DELETE FROM user_attrs WHERE account = ?1 AND attr = ?2")?;
            for user in &requests[n] {
                let name = account_name(user.uid);
                for &(slot, _) in &user.attrs {
                    statement.execute(params![name, ATTRS[slot].0])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
