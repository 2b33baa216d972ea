//! The markdown tables BENCHMARKS.md includes, and the same numbers as JSON.

use std::fmt::Write;
use std::time::Duration;

use crier::directory::DirectoryStats;
use serde_json::{json, Value};

use crate::crier_phase::{AudienceResult, BareResult, BuildReport, PendingReads};
use crate::queries::Query;
use crate::redis_peer::{PeerQuery, RedisResult};
use crate::sqlite_peer::SqliteResult;
use crate::util::{fmt_bytes, fmt_count, fmt_duration, Timing};
use crate::workload::USERS_PER_REQUEST;
use crate::RunArgs;

pub const AUDIENCE_TARGET: Duration = Duration::from_millis(2);
pub const SPEEDUP_TARGET: f64 = 1000.0;
pub const PUSH_TARGET: Duration = Duration::from_millis(20);
pub const WRITE_TARGET_PER_S: f64 = 200_000.0;
pub const STARTUP_TARGET: Duration = Duration::from_secs(15);
pub const DATA_DIR_TARGET: u64 = 1 << 30;
pub const BITMAP_TARGET_PER_ACCOUNT: f64 = 40.0;

pub struct Report<'a> {
    pub args: &'a RunArgs,
    pub queries: &'a [Query],
    pub crier: &'a [AudienceResult],
    /// The conditions again with changes waiting beside the bitmaps (`--pending-requests`).
    pub pending_reads: Option<&'a PendingReads>,
    pub bare: &'a [BareResult],
    pub build: BuildReport,
    pub built_stats: DirectoryStats,
    pub rss_built: u64,
    /// Cores other processes kept busy while Crier's audiences were timed.
    pub crier_cpu_others: f64,
    pub snapshot_time: Duration,
    pub data_dir_bytes: u64,
    pub server: Option<&'a Value>,
    pub redis: Option<&'a RedisResult>,
    pub sqlite: Option<&'a SqliteResult>,
    /// Set when the Redis and SQLite figures come from an earlier run (`--peers-from`).
    pub peers_from: Option<String>,
    /// The same bulk writes on Redis and SQLite (`write_peers`).
    pub write_peers: Option<&'a Value>,
}

/// Issue 17's targets at 10M accounts, in users per second.
pub const SET_ATTR_TARGET_PER_S: f64 = 200_000.0;
pub const ADD_TAG_TARGET_PER_S: f64 = 300_000.0;

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**MISSED**"
    }
}

fn speedup(peer: Option<&PeerQuery>, crier: Duration) -> Option<f64> {
    peer.map(|p| p.timing.median.as_secs_f64() / crier.as_secs_f64().max(1e-9))
}

fn fmt_speedup(x: Option<f64>) -> String {
    match x {
        Some(x) if x >= 100.0 => format!("{}×", fmt_count(x.round() as u64)),
        Some(x) => format!("{x:.1}×"),
        None => "—".into(),
    }
}

fn fmt_peer(peer: Option<&PeerQuery>) -> String {
    peer.map_or("—".into(), |p| fmt_duration(p.timing.median))
}

fn secs(value: &Value) -> Duration {
    Duration::from_secs_f64(value.as_f64().unwrap_or_default())
}

impl Report<'_> {
    fn redis_query(&self, n: usize) -> Option<&PeerQuery> {
        self.redis.map(|r| &r.queries[n])
    }

    fn sqlite_query(&self, n: usize) -> Option<&PeerQuery> {
        self.sqlite.map(|s| &s.queries[n])
    }

    fn agrees(&self, n: usize) -> bool {
        let crier = self.crier[n].cardinality;
        self.redis_query(n).is_none_or(|p| p.cardinality == crier)
            && self.sqlite_query(n).is_none_or(|p| p.cardinality == crier)
    }

    pub fn cardinalities_agree(&self) -> bool {
        (0..self.queries.len()).all(|n| self.agrees(n))
    }

    pub fn markdown(&self) -> String {
        let accounts = u64::from(self.args.accounts);
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "### {} accounts\n", fmt_count(accounts));
        let _ = writeln!(
            w,
            "Dataset: {} accounts, each with 15–25 of 1,000 tags (Zipf s = {}, seed {}; {} tag memberships in all) and 10 attributes of 2 to 1,000 values.\n",
            fmt_count(accounts),
            self.args.zipf_s,
            self.args.seed,
            fmt_count(self.build.tag_memberships)
        );

        let _ = writeln!(
            w,
            "#### Audience evaluation: condition → final set of accounts\n"
        );
        let _ = writeln!(
            w,
            "| Condition | Audience | Crier `Directory::audience` (median of {}) | Redis `S*STORE` (median of {}) | SQLite naive (median of {}) | Crier vs Redis | Crier vs SQLite | Sizes agree |",
            self.args.reps, self.args.peer_reps, self.args.peer_reps
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|:-:|");
        let mut slowest = (Duration::ZERO, 0);
        let mut least_speedup: Option<(f64, usize)> = None;
        for (n, (query, crier)) in self.queries.iter().zip(self.crier).enumerate() {
            let median = crier.timing.median;
            if median > slowest.0 {
                slowest = (median, n);
            }
            let vs_redis = speedup(self.redis_query(n), median);
            if let Some(x) = vs_redis {
                if least_speedup.is_none_or(|(least, _)| x < least) {
                    least_speedup = Some((x, n));
                }
            }
            let sizes: Vec<String> = [self.redis_query(n), self.sqlite_query(n)]
                .iter()
                .flatten()
                .map(|p| fmt_count(p.cardinality))
                .collect();
            let agree = match (sizes.is_empty(), self.agrees(n)) {
                (true, _) => "—".to_owned(),
                (false, true) => "yes".to_owned(),
                (false, false) => format!("**NO** ({})", sizes.join(" / ")),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                query.name,
                fmt_count(crier.cardinality),
                fmt_duration(median),
                fmt_peer(self.redis_query(n)),
                fmt_peer(self.sqlite_query(n)),
                fmt_speedup(vs_redis),
                fmt_speedup(speedup(self.sqlite_query(n), median)),
                agree
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "- Slowest condition in Crier: {} on \"{}\" (target ≤ 2 ms at 10M accounts: {}).",
            fmt_duration(slowest.0),
            self.queries[slowest.1].name,
            verdict(slowest.0 <= AUDIENCE_TARGET)
        );
        if let Some((x, n)) = least_speedup {
            let below: Vec<&str> = (0..self.queries.len())
                .filter(|&n| {
                    speedup(self.redis_query(n), self.crier[n].timing.median)
                        .is_some_and(|x| x < SPEEDUP_TARGET)
                })
                .map(|n| self.queries[n].name.as_str())
                .collect();
            let _ = writeln!(
                w,
                "- Smallest speed-up over Redis: {} on \"{}\" (target ≥ 1000× on every condition: {}{}).",
                fmt_speedup(Some(x)),
                self.queries[n].name,
                verdict(x >= SPEEDUP_TARGET),
                if below.is_empty() { String::new() } else { format!("; below 1000× on {}", below.join(", ")) }
            );
        }
        if let Some(note) = &self.peers_from {
            let _ = writeln!(w, "- Redis and SQLite figures: {note}.");
        }
        let _ = writeln!(w);

        let _ = writeln!(
            w,
            "- Other processes on the machine used {:.2} cores on average while Crier's audiences were timed{}.",
            self.crier_cpu_others,
            if self.crier_cpu_others > 0.2 { " (**the numbers above shared the 2 cores**)" } else { "" }
        );
        let _ = writeln!(w);
        let _ = writeln!(w, "Reference, bare roaring 0.12 on copies of the tag bitmaps (no live cut, no Crier code):\n");
        let _ = writeln!(
            w,
            "| Operation | Result size | Median of {} |",
            self.args.reps
        );
        let _ = writeln!(w, "|---|--:|--:|");
        for bare in self.bare {
            let _ = writeln!(
                w,
                "| {} | {} | {} |",
                bare.name,
                fmt_count(bare.cardinality),
                fmt_duration(bare.timing.median)
            );
        }
        let _ = writeln!(w);

        if let Some(server) = self.server {
            self.server_table(w, server, accounts);
            self.writes_table(w, server, accounts);
        }

        let _ = writeln!(w, "#### Setup costs (not targets)\n");
        let _ = writeln!(w, "| Step | Result |");
        let _ = writeln!(w, "|---|--:|");
        if let Some(loaded) = self.build.loaded_from_cache {
            let _ = writeln!(w, "| Crier: this run loaded the directory from the dataset cache (`snapshot::read`) | {} |", fmt_duration(loaded));
        }
        let _ = writeln!(
            w,
            "| Crier: apply the dataset's `DirOp`s in-process (import / add tags / set attributes) | {} ({} / {} / {}) |",
            fmt_duration(self.build.total),
            fmt_duration(self.build.import),
            fmt_duration(self.build.add_tags),
            fmt_duration(self.build.set_attrs)
        );
        let _ = writeln!(
            w,
            "| Crier: bitmaps / identifier map right after building (`Directory::stats`), bench process RSS | {} / {}, RSS {} |",
            fmt_bytes(self.built_stats.bitmap_bytes),
            fmt_bytes(self.built_stats.account_map_bytes),
            fmt_bytes(self.rss_built)
        );
        let _ = writeln!(
            w,
            "| Crier: write the snapshot (`Store::save_dir_snapshot`), data directory size | {}, {} |",
            fmt_duration(self.snapshot_time),
            fmt_bytes(self.data_dir_bytes)
        );
        if let Some(redis) = self.redis {
            let _ = writeln!(
                w,
                "| Redis: pipelined SADD of {} members, `used_memory` | {}, {} |",
                fmt_count(redis.members),
                fmt_duration(redis.load),
                fmt_bytes(redis.used_memory)
            );
        }
        if let Some(sqlite) = self.sqlite {
            let _ = writeln!(
                w,
                "| SQLite: insert {} rows / create indexes, file size | {} / {}, {} |",
                fmt_count(sqlite.rows),
                fmt_duration(sqlite.insert),
                fmt_duration(sqlite.index),
                fmt_bytes(sqlite.disk_bytes)
            );
        }
        out
    }

    fn server_table(&self, w: &mut String, server: &Value, accounts: u64) {
        let per_account = |bytes: u64| bytes as f64 / accounts as f64;
        let push = Timing::from_json(&server["push_all"]);
        let push_popular = Timing::from_json(&server["push_tags_or_popular"]);
        let sizes_ok = server["push_all_audience_sizes"]
            .as_array()
            .is_some_and(|a| a.iter().all(|v| v.as_u64() == Some(accounts)));
        let startup = secs(&server["startup_s"]);
        let stats = &server["stats"];
        let bitmap = stats["bitmap_bytes"].as_u64().unwrap_or(0);
        let map = stats["account_map_bytes"].as_u64().unwrap_or(0);
        let counts = stats["tag_count_bytes"].as_u64().unwrap_or(0);
        let rss_before = server["rss_before_open"].as_u64().unwrap_or(0);
        let rss_after = server["rss_after_open"].as_u64().unwrap_or(0);
        let data_dir = server["data_dir_bytes_at_start"]
            .as_u64()
            .unwrap_or(self.data_dir_bytes);

        let _ = writeln!(
            w,
            "#### The server (`crier::server::serve` on 127.0.0.1, a fresh process)\n"
        );
        let _ = writeln!(w, "| Measure | Result | Target (10M) |");
        let _ = writeln!(w, "|---|--:|---|");
        let _ = writeln!(
            w,
            "| `im_push` to all users, HTTP in → durable push record → OK out (median of {}; min–max) | {} ({} – {}); audiences {} | ≤ 20 ms: {} |",
            push.samples,
            fmt_duration(push.median),
            fmt_duration(push.min),
            fmt_duration(push.max),
            if sizes_ok { format!("all {}", fmt_count(accounts)) } else { format!("**{}**", server["push_all_audience_sizes"]) },
            verdict(push.median <= PUSH_TARGET)
        );
        let _ = writeln!(
            w,
            "| `im_push` with `TagsOr` of the 3 most popular tags (median; min–max) | {} ({} – {}) | — |",
            fmt_duration(push_popular.median),
            fmt_duration(push_popular.min),
            fmt_duration(push_popular.max)
        );
        for (key, what, items, target) in [
            (
                "add_tag",
                "`im_add_tag`, 100 users × 1–10 tags per request",
                "tags",
                true,
            ),
            (
                "set_attr",
                "`im_set_attr`, 100 users × 1–3 attributes per request",
                "attributes",
                false,
            ),
        ] {
            let r = &server[key];
            let users_per_s = r["users_per_s"].as_f64().unwrap_or(0.0);
            let items_per_s = r["items_per_s"].as_f64().unwrap_or(0.0);
            // "200k user-tag updates per second" reads two ways: (user, tag) assignments, or
            // users whose tags a request updates. Both are shown; neither is hidden.
            let target_text = if target {
                format!(
                    "≥ 200k/s: counting (user, tag) pairs {}; counting users {}",
                    verdict(items_per_s >= WRITE_TARGET_PER_S),
                    verdict(users_per_s >= WRITE_TARGET_PER_S)
                )
            } else {
                "—".into()
            };
            let _ = writeln!(
                w,
                "| {what}, {} connections, {} requests | **{} users/s**, **{} {items}/s** ({} requests/s; latency p50 {}, p99 {}, max {}) | {} |",
                self.args.concurrency,
                fmt_count(r["requests"].as_u64().unwrap_or(0)),
                fmt_count(users_per_s.round() as u64),
                fmt_count(items_per_s.round() as u64),
                fmt_count(r["requests_per_s"].as_f64().unwrap_or(0.0).round() as u64),
                fmt_duration(secs(&r["p50_s"])),
                fmt_duration(secs(&r["p99_s"])),
                fmt_duration(secs(&r["max_s"])),
                target_text
            );
        }
        let _ = writeln!(
            w,
            "| Start-up: `AppState::open` on the data directory (snapshot load) | {} | ≤ 15 s: {} |",
            fmt_duration(startup),
            verdict(startup <= STARTUP_TARGET)
        );
        let _ = writeln!(
            w,
            "| Data directory on disk (snapshot + SQLite) | {} | ≤ 1 GiB: {} |",
            fmt_bytes(data_dir),
            verdict(data_dir <= DATA_DIR_TARGET)
        );
        let _ = writeln!(
            w,
            "| Bitmap indexes (tags, attribute values, live), `Directory::stats().bitmap_bytes` | {} = **{:.1} B/account** | ≤ 40 B/account: {} |",
            fmt_bytes(bitmap),
            per_account(bitmap),
            verdict(per_account(bitmap) <= BITMAP_TARGET_PER_ACCOUNT)
        );
        let _ = writeln!(
            w,
            "| Identifier map (name ↔ number), `account_map_bytes` | {} = {:.1} B/account | — |",
            fmt_bytes(map),
            per_account(map)
        );
        let _ = writeln!(
            w,
            "| Per-account tag lists, `tag_count_bytes` | {} = {:.1} B/account | — |",
            fmt_bytes(counts),
            per_account(counts)
        );
        let _ = writeln!(
            w,
            "| Process RSS after start-up (growth during `AppState::open`) | {} ({} = {:.1} B/account) | — |",
            fmt_bytes(rss_after),
            fmt_bytes(rss_after.saturating_sub(rss_before)),
            per_account(rss_after.saturating_sub(rss_before))
        );
        let others = server["cpu_others_cores"].as_f64().unwrap_or_default();
        let _ = writeln!(
            w,
            "| Other processes' CPU during the HTTP measurements (cores, average) | {others:.2}{} | — |",
            if others > 0.2 { " (**shared the 2 cores**)" } else { "" }
        );
        let _ = writeln!(
            w,
            "| Graceful shutdown after the writes (final snapshot + flush) | {} | — |",
            fmt_duration(secs(&server["shutdown_s"]))
        );
        let _ = writeln!(w);
    }

    /// Issue 17: the four bulk writes beside Redis and SQLite, `im_push` during a sync, and the
    /// memory of the indexes the writes keep.
    fn writes_table(&self, w: &mut String, server: &Value, accounts: u64) {
        let _ = writeln!(w, "#### Directory writes (issue 17)\n");
        let _ = writeln!(
            w,
            "100 users per request. Crier: through the REST API, {} connections; CPU of the server's threads, and in brackets of the whole process (the benchmark's HTTP client runs on the process's main thread). Redis and SQLite: the same users and changes, the first {} requests of each kind, on only the accounts the writes touch; CPU of `redis-server` / of the SQLite process.\n",
            self.args.concurrency,
            self.write_peers
                .and_then(|p| p["requests_per_kind"].as_u64())
                .map_or("—".into(), fmt_count)
        );
        let _ = writeln!(
            w,
            "| Write | System | Requests | Users/s | Items/s | Latency p50 / p99 / max | CPU per user | Target (10M) |"
        );
        let _ = writeln!(w, "|---|---|--:|--:|--:|--:|--:|---|");
        for (key, what, target) in [
            (
                "add_tag",
                "`im_add_tag`, 1–10 tags per user",
                Some(ADD_TAG_TARGET_PER_S),
            ),
            (
                "set_attr",
                "`im_set_attr`, 1–3 attributes per user",
                Some(SET_ATTR_TARGET_PER_S),
            ),
            ("remove_tag", "`im_remove_tag`, the tags the add gave", None),
            (
                "remove_attr",
                "`im_remove_attr`, 1–3 attributes per user",
                None,
            ),
        ] {
            let systems = [
                ("Crier", Some(&server[key])),
                ("Redis", self.write_peers.map(|p| &p["redis"][key])),
                ("SQLite naive", self.write_peers.map(|p| &p["sqlite"][key])),
            ];
            for (system, r) in systems {
                let Some(r) = r.filter(|r| r.is_object()) else {
                    continue;
                };
                let users_per_s = r["users_per_s"].as_f64().unwrap_or(0.0);
                let target_text = match (system, target) {
                    ("Crier", Some(t)) => format!(
                        "≥ {}k users/s: {}",
                        t as u64 / 1000,
                        verdict(users_per_s >= t)
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(
                    w,
                    "| {what} | {system} | {} | **{}** | {} | {} / {} / {} | {} | {target_text} |",
                    fmt_count(r["requests"].as_u64().unwrap_or(0)),
                    fmt_count(users_per_s.round() as u64),
                    fmt_count(r["items_per_s"].as_f64().unwrap_or(0.0).round() as u64),
                    fmt_duration(secs(&r["p50_s"])),
                    fmt_duration(secs(&r["p99_s"])),
                    fmt_duration(secs(&r["max_s"])),
                    match (
                        r["server_cpu_us_per_user"].as_f64(),
                        r["cpu_us_per_user"].as_f64(),
                    ) {
                        (Some(server), Some(process)) =>
                            format!("{server:.1} µs ({process:.1} µs)"),
                        (None, Some(process)) => format!("{process:.1} µs"),
                        _ => "—".into(),
                    },
                );
            }
        }
        let _ = writeln!(w);
        let idle = &server["push_idle"];
        let during = &server["push_during_sync"];
        let _ = writeln!(
            w,
            "| `im_push` to all {} users ({} pushes, 100 ms apart) | p50 | p99 | max |",
            fmt_count(accounts),
            idle["samples"]
        );
        let _ = writeln!(w, "|---|--:|--:|--:|");
        for (what, r) in [
            ("idle server".to_owned(), idle),
            (
                format!(
                    "during an `im_set_attr` sync on {} other connections ({} users/s meanwhile)",
                    self.args.concurrency,
                    fmt_count(server["sync_users_per_s"].as_f64().unwrap_or(0.0).round() as u64)
                ),
                during,
            ),
        ] {
            let _ = writeln!(
                w,
                "| {what} | {} | {} | {} |",
                fmt_duration(secs(&r["p50_s"])),
                fmt_duration(secs(&r["p99_s"])),
                fmt_duration(secs(&r["max_s"]))
            );
        }
        if server["push_sync_audiences_all"] != json!(true) {
            let _ = writeln!(w, "\n**Some of these pushes did not reach every account.**");
        }
        let _ = writeln!(w);
        let end = &server["stats_at_end"];
        let per_account = |key: &str| end[key].as_u64().unwrap_or(0) as f64 / accounts as f64;
        let _ = writeln!(
            w,
            "| Memory after the writes (`Directory::stats`) | B/account | Budget |"
        );
        let _ = writeln!(w, "|---|--:|---|");
        let _ = writeln!(
            w,
            "| Bitmaps (tags, attribute values, live), serialized size | {:.1} | ≤ 40: {} |",
            per_account("bitmap_bytes"),
            verdict(per_account("bitmap_bytes") <= BITMAP_TARGET_PER_ACCOUNT)
        );
        let slots_in_use = end["attr_slots_in_use"].as_u64().unwrap_or(0);
        let index = per_account("attr_index_bytes");
        let _ = writeln!(
            w,
            "| Attribute reverse index (value per account, {slots_in_use} slots in use) | {index:.1} | ≤ 4 per slot in use = {}: {} |",
            4 * slots_in_use,
            verdict(index <= 4.0 * slots_in_use as f64)
        );
        let _ = writeln!(
            w,
            "| Changes not merged into the bitmaps yet (accounts added and removed, per tag and value) | {:.1} | — |",
            per_account("unmerged_bytes")
        );
        let _ = writeln!(
            w,
            "| Per-account tag lists | {:.1} | — |",
            per_account("tag_count_bytes")
        );
        let _ = writeln!(
            w,
            "| Identifier map | {:.1} | — |",
            per_account("account_map_bytes")
        );
        let _ = writeln!(w);
        self.pending_reads(w);
    }

    /// The conditions timed with the changes of some writes waiting beside the bitmaps, then
    /// once merged, in the benchmark's process.
    fn pending_reads(&self, w: &mut String) {
        let Some(pending) = self.pending_reads else {
            return;
        };
        let accounts = self.built_stats.accounts.max(1) as f64;
        let _ = writeln!(
            w,
            "Reads while changes wait to be merged: the first {} `im_add_tag` and `im_set_attr` requests above applied in-process to the directory as built, which leaves {:.2} B/account of changes beside the bitmaps; each condition timed (median of {}), then the changes merged and the condition timed again.\n",
            fmt_count(pending.requests as u64),
            pending.unmerged_bytes as f64 / accounts,
            self.args.reps
        );
        let _ = writeln!(w, "| Condition | Audience | Changes waiting | Merged |");
        let _ = writeln!(w, "|---|--:|--:|--:|");
        for ((query, with), merged) in self
            .queries
            .iter()
            .zip(&pending.with_changes)
            .zip(&pending.merged)
        {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                query.name,
                fmt_count(with.cardinality),
                fmt_duration(with.timing.median),
                fmt_duration(merged.timing.median)
            );
        }
        let _ = writeln!(w);
    }

    pub fn json(&self) -> Value {
        let peer = |p: Option<&PeerQuery>| {
            p.map(|p| json!({"timing": p.timing.to_json(), "cardinality": p.cardinality}))
        };
        let audiences: Vec<Value> = self
            .queries
            .iter()
            .enumerate()
            .map(|(n, q)| {
                json!({
                    "condition": q.name,
                    "crier": {"timing": self.crier[n].timing.to_json(), "cardinality": self.crier[n].cardinality},
                    "redis": peer(self.redis_query(n)),
                    "sqlite": peer(self.sqlite_query(n)),
                })
            })
            .collect();
        json!({
            "accounts": self.args.accounts,
            "seed": self.args.seed,
            "zipf_s": self.args.zipf_s,
            "finished_at_unix": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "peers_from": self.peers_from,
            "users_per_write_request": USERS_PER_REQUEST,
            "audiences": audiences,
            "build_s": {
                "total": self.build.total.as_secs_f64(),
                "import": self.build.import.as_secs_f64(),
                "add_tags": self.build.add_tags.as_secs_f64(),
                "set_attrs": self.build.set_attrs.as_secs_f64(),
            },
            "tag_memberships": self.build.tag_memberships,
            "bare_roaring": self.bare.iter().map(|b| json!({"operation": b.name, "timing": b.timing.to_json(), "cardinality": b.cardinality})).collect::<Vec<_>>(),
            "snapshot_write_s": self.snapshot_time.as_secs_f64(),
            "loaded_from_cache_s": self.build.loaded_from_cache.map(|d| d.as_secs_f64()),
            "crier_cpu_others_cores": self.crier_cpu_others,
            "data_dir_bytes": self.data_dir_bytes,
            "server": self.server,
            "redis": self.redis.map(|r| json!({"load_s": r.load.as_secs_f64(), "used_memory": r.used_memory, "members": r.members})),
            "sqlite": self.sqlite.map(|s| json!({"insert_s": s.insert.as_secs_f64(), "index_s": s.index.as_secs_f64(), "disk_bytes": s.disk_bytes, "rows": s.rows})),
            "write_peers": self.write_peers,
        })
    }
}
