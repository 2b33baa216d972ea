//! `crier-bench`: Crier's audience evaluation, push path, bulk writes, start-up and memory at
//! millions of accounts, side by side with the peers a user would otherwise hand-build (Redis
//! sets, a SQLite table). See BENCHMARKS.md at the repository root.
//!
//! ```text
//! cargo run --release -p crier-bench -- --accounts 1M
//! cargo run --release -p crier-bench -- --accounts 10M --markdown-out bench-10m.md
//! ```

mod crier_phase;
mod dataset;
mod queries;
mod redis_peer;
mod report;
mod server_phase;
mod sqlite_peer;
mod util;
mod workload;
mod write_peers;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::dataset::Dataset;
use crate::util::{disk_usage, log, proc_status_bytes};

#[derive(Parser)]
#[command(
    name = "crier-bench",
    about = "Benchmarks Crier against Redis sets and a naive SQLite table.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    phase: Option<Phase>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Phase {
    /// Internal: the server phase, run in a fresh child process.
    #[command(hide = true)]
    Server(server_phase::ServerArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Accounts in the dataset: a number, or with a K/M suffix (1M, 10M).
    #[arg(long, default_value = "1M", value_parser = parse_count)]
    accounts: u32,
    /// Seed of the dataset; the same seed gives the same accounts, tags and attributes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Zipf exponent of tag and attribute-value popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Repetitions of each Crier audience evaluation (the median is reported).
    #[arg(long, default_value_t = 31)]
    reps: usize,
    /// Repetitions of each Redis and SQLite query.
    #[arg(long, default_value_t = 3)]
    peer_reps: usize,
    /// Timed `im_push` calls of each kind (after one untimed warm-up).
    #[arg(long, default_value_t = 10)]
    pushes: usize,
    /// Concurrent HTTP connections for the bulk writes.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// `im_add_tag` requests of 100 users each. 20,000 is one snapshot interval of the server,
    /// so the amortized snapshot cost is included exactly once.
    #[arg(long, default_value_t = 20_000)]
    tag_requests: usize,
    /// `im_set_attr` requests of 100 users each.
    #[arg(long, default_value_t = 10_000)]
    attr_requests: usize,
    /// `im_remove_tag` and `im_remove_attr` requests of 100 users each (the removed tags are
    /// those the first `im_add_tag` requests added).
    #[arg(long, default_value_t = 5_000)]
    remove_requests: usize,
    /// `im_add_tag` and `im_set_attr` requests applied in-process before the conditions are
    /// timed again with their changes waiting beside the bitmaps, then once merged (0: skip).
    #[arg(long, default_value_t = 3_000)]
    pending_requests: usize,
    /// Timed `im_push` calls to all users on the idle server, and as many again while an
    /// `im_set_attr` sync runs at full speed on `--concurrency` other connections.
    #[arg(long, default_value_t = 100)]
    sync_pushes: usize,
    /// Requests of each kind the write peers (Redis, SQLite) are timed on: the first ones of
    /// Crier's, the same users and changes.
    #[arg(long, default_value_t = 2_000)]
    peer_write_requests: usize,
    /// Skip the Redis and SQLite write peers (they load only the accounts the writes touch,
    /// so they take seconds, unlike the audience peers).
    #[arg(long)]
    skip_write_peers: bool,
    #[arg(long)]
    skip_redis: bool,
    #[arg(long)]
    skip_sqlite: bool,
    /// Skip the HTTP server phase (start-up, im_push, bulk writes).
    #[arg(long)]
    skip_server: bool,
    /// Redis to compare with; its database is FLUSHDB'd before and after.
    #[arg(long, default_value = "redis://127.0.0.1:6379/15")]
    redis_url: String,
    /// Where the Crier data directory and the SQLite database are created (and removed).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the Crier data directory afterwards.
    #[arg(long)]
    keep_data: bool,
    /// Keep the built dataset (as a Crier snapshot) under this directory and reuse it on later
    /// runs with the same --accounts, --seed and --zipf-s instead of building it again.
    #[arg(long)]
    dataset_cache: Option<PathBuf>,
    /// Also write the markdown report to this file.
    #[arg(long)]
    markdown_out: Option<PathBuf>,
    /// Also write every number as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Take the Redis and SQLite figures from the --json-out file of an earlier run on the
    /// same dataset instead of measuring them again (they do not depend on Crier's code, and
    /// take most of a 10M run). The report says so.
    #[arg(long, value_name = "JSON")]
    peers_from: Option<PathBuf>,
}

fn parse_count(text: &str) -> Result<u32, String> {
    let text = text.trim().replace('_', "");
    let (digits, factor) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1_000u64),
        Some('m' | 'M') => (&text[..text.len() - 1], 1_000_000),
        _ => (&text[..], 1),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a count like 1000000, 1M or 500K"))?;
    let n = (n * factor as f64).round();
    if !(1.0..=u32::MAX as f64).contains(&n) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(n as u32)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.phase {
        Some(Phase::Server(args)) => {
            // As `crier serve` does by default, so the server measured is the one users run.
            let heap = crier::huge_pages::restart_on_huge_pages(true);
            eprintln!("server: {}", heap.describe());
            let result = server_phase::run(&args)?;
            println!("RESULT {result}");
            Ok(())
        }
        None => run(cli.run),
    }
}

/// The Redis and SQLite results of an earlier run's JSON report (`--peers-from`).
struct EarlierPeers {
    path: PathBuf,
    json: serde_json::Value,
}

impl EarlierPeers {
    fn load(
        path: &std::path::Path,
        args: &RunArgs,
        queries: &[queries::Query],
    ) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let same_dataset = json["accounts"].as_u64() == Some(u64::from(args.accounts))
            && json["seed"].as_u64() == Some(args.seed)
            && json["zipf_s"].as_f64() == Some(args.zipf_s);
        anyhow::ensure!(
            same_dataset,
            "{} is a run on another dataset (accounts, seed or zipf s differ)",
            path.display()
        );
        let conditions: Vec<&str> = json["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(|q| q["condition"].as_str()).collect())
            .unwrap_or_default();
        anyhow::ensure!(
            conditions == queries.iter().map(|q| q.name.as_str()).collect::<Vec<_>>(),
            "{} measured other conditions",
            path.display()
        );
        Ok(EarlierPeers {
            path: path.to_owned(),
            json,
        })
    }

    fn queries(&self, peer: &str) -> Option<Vec<redis_peer::PeerQuery>> {
        self.json["audiences"]
            .as_array()?
            .iter()
            .map(|q| redis_peer::PeerQuery::from_json(&q[peer]))
            .collect()
    }

    fn redis(&self) -> Option<redis_peer::RedisResult> {
        redis_peer::RedisResult::from_json(&self.json["redis"], self.queries("redis")?)
    }

    fn sqlite(&self) -> Option<sqlite_peer::SqliteResult> {
        sqlite_peer::SqliteResult::from_json(&self.json["sqlite"], self.queries("sqlite")?)
    }

    fn describe(&self) -> String {
        let when = self.json["finished_at_unix"]
            .as_u64()
            .map_or(String::new(), |t| format!(", finished at Unix time {t}"));
        format!(
            "taken from an earlier run on the same dataset (`{}`{when})",
            self.path.display()
        )
    }
}

/// Removes the Crier data directory at the end unless asked to keep it.
struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dataset = Dataset::new(args.accounts, args.seed, args.zipf_s);
    let queries = queries::all();
    log(
        started,
        format!(
            "dataset: {} accounts, seed {}, zipf s = {}",
            args.accounts, args.seed, args.zipf_s
        ),
    );

    // 1. Crier in-process: build, evaluate audiences, snapshot.
    let cached = match &args.dataset_cache {
        Some(cache) => crier_phase::load_cached(
            &crier_phase::cache_dir(cache, &dataset, args.zipf_s),
            &dataset,
        )?,
        None => None,
    };
    let (directory, build) = match cached {
        Some(cached) => {
            log(
                started,
                format!(
                    "crier: directory loaded from the dataset cache in {:.1} s",
                    cached.1.loaded_from_cache.unwrap_or_default().as_secs_f64()
                ),
            );
            cached
        }
        None => {
            let (directory, build) = crier_phase::build(&dataset, started);
            if let Some(cache) = &args.dataset_cache {
                crier_phase::save_cached(
                    &crier_phase::cache_dir(cache, &dataset, args.zipf_s),
                    &directory,
                    &build,
                )?;
            }
            (directory, build)
        }
    };
    let built_stats = directory.stats();
    log(
        started,
        format!(
            "crier: directory built in {:.1} s (import {:.1} s, tags {:.1} s, attributes {:.1} s); {} tag memberships",
            build.total.as_secs_f64(),
            build.import.as_secs_f64(),
            build.add_tags.as_secs_f64(),
            build.set_attrs.as_secs_f64(),
            build.tag_memberships
        ),
    );
    let rss_built = proc_status_bytes("VmRSS");
    let cpu = util::CpuWatch::start();
    let crier_results = crier_phase::time_audiences(&directory, &queries, args.reps)?;
    for (query, result) in queries.iter().zip(&crier_results) {
        log(
            started,
            format!(
                "crier: {}: {} accounts, median {:.3} ms",
                query.name,
                result.cardinality,
                result.timing.median.as_secs_f64() * 1e3
            ),
        );
    }
    let bare = crier_phase::time_bare_roaring(&directory, &dataset, args.reps)?;
    for result in &bare {
        log(
            started,
            format!(
                "bare roaring: {}: {} accounts, median {:.3} ms",
                result.name,
                result.cardinality,
                result.timing.median.as_secs_f64() * 1e3
            ),
        );
    }
    let crier_cpu_others = cpu.others_cores();
    log(
        started,
        format!(
            "crier: other processes used {crier_cpu_others:.2} cores during the audience timings"
        ),
    );
    let data_dir = DataDir {
        path: work_dir.join(format!("crier-bench-data-{}", std::process::id())),
        keep: args.keep_data,
    };
    let _ = std::fs::remove_dir_all(&data_dir.path);
    let snapshot_time = crier_phase::write_snapshot(&directory, &data_dir.path)?;
    let data_dir_bytes = disk_usage(&data_dir.path);
    log(
        started,
        format!(
            "crier: snapshot written in {:.2} s; data dir {} MiB",
            snapshot_time.as_secs_f64(),
            data_dir_bytes >> 20
        ),
    );
    let pending_reads = (args.pending_requests > 0)
        .then(|| {
            crier_phase::time_audiences_with_changes(
                directory,
                &dataset,
                &queries,
                args.reps,
                args.pending_requests,
            )
        })
        .transpose()?;
    if let Some(pending) = &pending_reads {
        for ((query, with), merged) in queries
            .iter()
            .zip(&pending.with_changes)
            .zip(&pending.merged)
        {
            log(
                started,
                format!(
                    "crier: {} with changes waiting: median {:.3} ms, once merged {:.3} ms",
                    query.name,
                    with.timing.median.as_secs_f64() * 1e3,
                    merged.timing.median.as_secs_f64() * 1e3
                ),
            );
        }
    }

    // 2-4. The real server in a fresh process.
    let server = if args.skip_server {
        None
    } else {
        let exe = std::env::current_exe()?;
        let output = Command::new(exe)
            .arg("server")
            .arg("--data-dir")
            .arg(&data_dir.path)
            .args([
                "--accounts",
                &args.accounts.to_string(),
                "--seed",
                &args.seed.to_string(),
                "--zipf-s",
                &args.zipf_s.to_string(),
            ])
            .args([
                "--pushes",
                &args.pushes.to_string(),
                "--concurrency",
                &args.concurrency.to_string(),
            ])
            .args([
                "--tag-requests",
                &args.tag_requests.to_string(),
                "--attr-requests",
                &args.attr_requests.to_string(),
                "--remove-requests",
                &args.remove_requests.to_string(),
                "--sync-pushes",
                &args.sync_pushes.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()
            .context("running the server phase")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "the server phase failed ({}): {stdout}",
            output.status
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .context("the server phase printed no RESULT")?;
        Some(serde_json::from_str::<serde_json::Value>(line)?)
    };

    // Peers.
    let earlier = match &args.peers_from {
        Some(path) => Some(EarlierPeers::load(path, &args, &queries)?),
        None => None,
    };
    let redis = if args.skip_redis {
        None
    } else if let Some(earlier) = &earlier {
        earlier.redis()
    } else {
        Some(redis_peer::run(
            &args.redis_url,
            &dataset,
            &queries,
            args.peer_reps,
            started,
        )?)
    };
    let sqlite = if args.skip_sqlite {
        None
    } else if let Some(earlier) = &earlier {
        earlier.sqlite()
    } else {
        Some(sqlite_peer::run(
            &work_dir,
            &dataset,
            &queries,
            args.peer_reps,
            started,
        )?)
    };

    let write_peers = if args.skip_write_peers {
        None
    } else {
        Some(write_peers::run(
            &args.redis_url,
            &work_dir,
            &dataset,
            args.peer_write_requests,
            args.concurrency,
            started,
        )?)
    };

    let report = report::Report {
        args: &args,
        queries: &queries,
        crier: &crier_results,
        pending_reads: pending_reads.as_ref(),
        bare: &bare,
        build,
        built_stats,
        rss_built,
        crier_cpu_others,
        snapshot_time,
        data_dir_bytes,
        server: server.as_ref(),
        redis: redis.as_ref(),
        sqlite: sqlite.as_ref(),
        peers_from: earlier.as_ref().map(|e| e.describe()),
        write_peers: write_peers.as_ref(),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, &markdown)?;
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    log(started, "done");
    if !report.cardinalities_agree() {
        anyhow::bail!("the audience sizes of Crier, Redis and SQLite disagree: see the table");
    }
    Ok(())
}
