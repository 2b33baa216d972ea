//! The SQLite peer: the naive schema a developer would write first.
//!
//! ```sql
//! CREATE TABLE users (uid INTEGER PRIMARY KEY, name TEXT NOT NULL);
//! CREATE TABLE user_tags (tag TEXT NOT NULL, uid INTEGER NOT NULL);    -- index on tag
//! CREATE TABLE user_attrs (attr TEXT NOT NULL, value TEXT NOT NULL, uid INTEGER NOT NULL);
//!                                                                      -- index on (attr, value)
//! ```
//!
//! OR is `COUNT(DISTINCT uid) ... WHERE tag IN (...)`; AND is `GROUP BY uid HAVING COUNT(*) = n`;
//! all users reads every `uid` of `users` into a vector.
//! Every attribute of every account is loaded (unlike the Redis peer, disk is plentiful).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::dataset::{account_name, attr_value, Dataset, ATTRS};
use crate::queries::{Kind, Query};
use crate::redis_peer::PeerQuery;
use crate::util::{disk_usage, log, measure};

const ACCOUNTS_PER_TRANSACTION: u32 = 100_000;

pub struct SqliteResult {
    pub insert: Duration,
    pub index: Duration,
    pub disk_bytes: u64,
    pub rows: u64,
    pub queries: Vec<PeerQuery>,
}

impl SqliteResult {
    /// The SQLite figures of an earlier run's JSON, with `queries` its per-condition entries.
    pub fn from_json(summary: &serde_json::Value, queries: Vec<PeerQuery>) -> Option<SqliteResult> {
        Some(SqliteResult {
            insert: Duration::from_secs_f64(summary.get("insert_s")?.as_f64()?),
            index: Duration::from_secs_f64(summary.get("index_s")?.as_f64()?),
            disk_bytes: summary.get("disk_bytes")?.as_u64()?,
            rows: summary.get("rows")?.as_u64()?,
            queries,
        })
    }
}

/// Removes the database directory when dropped, error or not.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(db: &mut Connection, dataset: &Dataset, started: Instant) -> anyhow::Result<u64> {
    db.execute_batch(
        "CREATE TABLE users (uid INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE user_tags (tag TEXT NOT NULL, uid INTEGER NOT NULL);
         CREATE TABLE user_attrs (attr TEXT NOT NULL, value TEXT NOT NULL, uid INTEGER NOT NULL);",
    )?;
    let mut profile = Dataset::empty_profile();
    let mut rows = 0u64;
    let mut start = 0u32;
    while start < dataset.accounts {
        let end = start
            .saturating_add(ACCOUNTS_PER_TRANSACTION)
            .min(dataset.accounts);
        let tx = db.transaction()?;
        {
            let mut user = tx.prepare_cached("INSERT INTO users (uid, name) VALUES (?1, ?2)")?;
            let mut tag = tx.prepare_cached("INSERT INTO user_tags (tag, uid) VALUES (?1, ?2)")?;
            let mut attr =
                tx.prepare_cached("INSERT INTO user_attrs (attr, value, uid) VALUES (?1, ?2, ?3)")?;
            for uid in start..end {
                dataset.profile(uid, &mut profile);
                user.execute(params![uid, account_name(uid)])?;
                for &t in &profile.tags {
                    tag.execute(params![dataset.tag_names[t as usize], uid])?;
                }
                for (slot, &value) in profile.attrs.iter().enumerate() {
                    attr.execute(params![ATTRS[slot].0, attr_value(value), uid])?;
                }
                rows += 1 + profile.tags.len() as u64 + ATTRS.len() as u64;
            }
        }
        tx.commit()?;
        if end % 1_000_000 == 0 {
            log(
                started,
                format!("sqlite: inserted {end} accounts ({rows} rows)"),
            );
        }
        start = end;
    }
    Ok(rows)
}

fn sql_of(query: &Query) -> (String, Vec<String>) {
    let tags = |ranks: &[usize]| {
        ranks
            .iter()
            .map(|&r| crate::dataset::tag_name(r + 1))
            .collect::<Vec<_>>()
    };
    let placeholders = |n: usize| {
        (1..=n)
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let pairs = |pairs: &[(usize, u16)]| {
        let clause = (0..pairs.len())
            .map(|i| format!("(attr = ?{} AND value = ?{})", 2 * i + 1, 2 * i + 2))
            .collect::<Vec<_>>()
            .join(" OR ");
        let values = pairs
            .iter()
            .flat_map(|&(slot, v)| [ATTRS[slot].0.to_owned(), attr_value(v)])
            .collect();
        (clause, values)
    };
    match &query.kind {
        // COUNT(*) would only count pages; an all-users push needs the accounts themselves.
        Kind::All => ("SELECT uid FROM users".into(), Vec::new()),
        Kind::TagsOr(ranks) => (format!("SELECT COUNT(DISTINCT uid) FROM user_tags WHERE tag IN ({})", placeholders(ranks.len())), tags(ranks)),
        Kind::TagsAnd(ranks) => (
            format!(
                "SELECT COUNT(*) FROM (SELECT uid FROM user_tags WHERE tag IN ({}) GROUP BY uid HAVING COUNT(*) = {})",
                placeholders(ranks.len()),
                ranks.len()
            ),
            tags(ranks),
        ),
        Kind::AttrsAnd(p) => {
            let (clause, values) = pairs(p);
            (format!("SELECT COUNT(*) FROM (SELECT uid FROM user_attrs WHERE {clause} GROUP BY uid HAVING COUNT(*) = {})", p.len()), values)
        }
        Kind::AttrsOr(p) => {
            let (clause, values) = pairs(p);
            (format!("SELECT COUNT(DISTINCT uid) FROM user_attrs WHERE {clause}"), values)
        }
    }
}

pub fn run(
    work_dir: &Path,
    dataset: &Dataset,
    queries: &[Query],
    reps: usize,
    started: Instant,
) -> anyhow::Result<SqliteResult> {
    let dir = TempDir(work_dir.join(format!("crier-bench-sqlite-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let path = dir.0.join("naive.db");
    let mut db = Connection::open(&path)?;
    // Loading is not what is measured: make it as quick as SQLite allows.
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;",
    )?;
    let t = Instant::now();
    let rows = load(&mut db, dataset, started)?;
    let insert = t.elapsed();
    log(
        started,
        format!(
            "sqlite: {rows} rows inserted in {:.1} s; indexing",
            insert.as_secs_f64()
        ),
    );
    let t = Instant::now();
    db.execute_batch(
        "CREATE INDEX user_tags_by_tag ON user_tags (tag);
         CREATE INDEX user_attrs_by_value ON user_attrs (attr, value);
         ANALYZE;",
    )?;
    let index = t.elapsed();
    drop(db);
    let disk_bytes = disk_usage(&dir.0);
    log(
        started,
        format!(
            "sqlite: indexed in {:.1} s; {} MiB on disk",
            index.as_secs_f64(),
            disk_bytes >> 20
        ),
    );

    // Queries run on a fresh connection with SQLite's defaults but for an in-memory temp store.
    let db = Connection::open(&path)?;
    db.execute_batch("PRAGMA temp_store = MEMORY;")?;
    let mut results = Vec::new();
    for query in queries {
        let (sql, args) = sql_of(query);
        let plan: Vec<String> = db
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
            .query_map(rusqlite::params_from_iter(&args), |row| {
                row.get::<_, String>(3)
            })?
            .collect::<Result<_, _>>()?;
        let mut statement = db.prepare(&sql)?;
        let all = matches!(query.kind, Kind::All);
        let (timing, cardinality) = measure(reps, || {
            if all {
                let uids: Vec<i64> = statement
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                return Ok(uids.len() as u64);
            }
            Ok(
                statement.query_row(rusqlite::params_from_iter(&args), |row| {
                    row.get::<_, i64>(0)
                })? as u64,
            )
        })?;
        log(
            started,
            format!(
                "sqlite: {}: {} accounts, median {:.1} ms [plan: {}]",
                query.name,
                cardinality,
                timing.median.as_secs_f64() * 1e3,
                plan.join("; ")
            ),
        );
        results.push(PeerQuery {
            timing,
            cardinality,
        });
    }
    drop(db);
    log(started, format!("sqlite: removing {}", dir.0.display()));
    Ok(SqliteResult {
        insert,
        index,
        disk_bytes,
        rows,
        queries: results,
    })
}
