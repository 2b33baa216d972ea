//! The server on the PostgreSQL store, with the audience benchmark's data set: how long a fresh
//! node takes to be ready, `im_push` to every account, bulk tag writes through one node, and
//! the database's size. The data set comes from `crier-bench --dataset-cache`: its snapshot is
//! stored in a fresh PostgreSQL database as the app's directory snapshot.
//!
//! ```sh
//! cargo build --release -p crier-bench
//! target/release/crier-bench --accounts 10M --dataset-cache bench-cache --skip-redis --skip-sqlite --skip-server
//! target/release/crier-pg-bench --snapshot bench-cache/crier-10000000-seed42-s1/snapshots/app-1400000001.snap
//! ```

use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crier::config::{AppConfig, BackendUrl, Config, Limits};
use crier::store::postgres::PostgresStore;
use crier::store::Store;
use crier_proto::usersig;
use serde_json::{json, Value};

const APP: u64 = 1_400_000_001;
const KEY: &str = "crier-bench-secret-key-0123456789abcdef";
const ADMIN: &str = "administrator";

#[derive(Parser)]
struct Args {
    /// The app's directory snapshot written by `crier-bench --dataset-cache`.
    #[arg(long)]
    snapshot: PathBuf,
    /// The PostgreSQL server; a database is created on it for the run and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// Accounts in the data set (tag writes go to `user0` .. `user{accounts-1}`).
    #[arg(long, default_value_t = 10_000_000)]
    accounts: u32,
    /// Timed `im_push` calls to all accounts (after one untimed).
    #[arg(long, default_value_t = 10)]
    pushes: usize,
    /// `im_add_tag` requests of 100 users each, 1–10 tags per user.
    #[arg(long, default_value_t = 5_000)]
    tag_requests: usize,
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = format!("crier_pg_bench_{:08x}", rand::random::<u32>());
    let admin_url = format!("{}/postgres", args.postgres);
    let mut admin = postgres::Client::connect(&admin_url, postgres::NoTls)
        .with_context(|| format!("connecting to {}", BackendUrl::new(admin_url.clone())))?;
    admin.batch_execute(&format!("CREATE DATABASE {database}"))?;
    let url = format!("{}/{database}", args.postgres);
    let result = run(&args, &url, &database);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    result
}

fn run(args: &Args, url: &str, database: &str) -> anyhow::Result<()> {
    // The data set goes in as the app's snapshot, as a node's snapshot thread would store it.
    let started = Instant::now();
    let store = PostgresStore::open(url)?;
    let mut file = std::fs::File::open(&args.snapshot)
        .with_context(|| format!("{}", args.snapshot.display()))?;
    // The embedded store's file wraps the directory snapshot in its own header (magic, seq).
    let mut header = [0u8; 16];
    file.read_exact(&mut header)?;
    if &header[..8] != b"CRIERSNP" {
        file.seek(std::io::SeekFrom::Start(0))?;
    }
    store.save_dir_snapshot(APP, 1, &mut |out| std::io::copy(&mut file, out).map(drop))?;
    drop(store);
    eprintln!(
        "snapshot stored in PostgreSQL in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(args, url, database))
}

async fn measure(args: &Args, url: &str, database: &str) -> anyhow::Result<()> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: std::env::temp_dir(),
        store: Some(BackendUrl::new(url)),
        bus: None,
        node_id: Some("bench".into()),
        bus_subject_prefix: "crier-pg-bench".into(),
        apps: vec![AppConfig {
            admins: vec![ADMIN.into()],
            daily_push_quota: 1_000_000,
            min_push_interval_ms: 0,
            ..AppConfig::new(APP, KEY)
        }],
        limits: Limits::default(),
    };
    let started = Instant::now();
    let state = Arc::new(crier::server::open_state(&config).await?);
    let ready = started.elapsed();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crier::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let call = |path: &str, body: String| {
        let sig = usersig::sign(APP, KEY, ADMIN, 3_600, crier::clock::now_secs());
        let request = client.post(format!(
            "{base}/v4/{path}?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
        ));
        async move {
            let answer: Value = request.body(body).send().await?.json().await?;
            anyhow::ensure!(answer["ErrorCode"] == 0, "{answer}");
            Ok::<_, anyhow::Error>(answer)
        }
    };

    let mut pushes = Vec::new();
    for n in 0..=args.pushes {
        let body = json!({"MsgRandom": n, "MsgLifeTime": 60, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "to all"}}]});
        let sent = Instant::now();
        call("all_member_push/im_push", body.to_string()).await?;
        if n > 0 {
            pushes.push(sent.elapsed());
        }
    }
    pushes.sort();

    let bodies: Vec<String> = (0..args.tag_requests)
        .map(|request| tag_body(request, args.accounts))
        .collect();
    let pairs: u64 = (0..args.tag_requests as u64 * 100)
        .map(|k| k % 10 + 1)
        .sum();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (next, bodies, call) = (Arc::clone(&next), Arc::clone(&bodies), call);
            async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(n) else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    call("all_member_push/im_add_tag", body.clone()).await?;
                }
            }
        })
        .collect();
    for result in futures_util::future::join_all(workers).await {
        result?;
    }
    let writing = started.elapsed();

    let size: i64 = {
        let url = url.to_owned();
        let database = database.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
            let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
            Ok(client
                .query_one("SELECT pg_database_size($1)", &[&database])?
                .get(0))
        })
        .await??
    };
    let _ = stop.send(());
    server.await??;

    let median = |times: &[Duration]| times[times.len() / 2].as_secs_f64() * 1e3;
    println!("### The server on PostgreSQL, {} accounts\n", args.accounts);
    println!("| Measure | Result |\n| --- | --- |");
    println!(
        "| a fresh node ready (`open_state`: schema check, snapshot read from PostgreSQL, directory loaded) | {:.1} s |",
        ready.as_secs_f64()
    );
    println!(
        "| `im_push` to all {} accounts, median of {} (min – max) | {:.2} ms ({:.2} – {:.2} ms) |",
        args.accounts,
        pushes.len(),
        median(&pushes),
        pushes[0].as_secs_f64() * 1e3,
        pushes[pushes.len() - 1].as_secs_f64() * 1e3
    );
    println!(
        "| `im_add_tag` through one node, {} requests of 100 users × 1–10 tags, {} connections | {:.0} (user, tag) pairs/s, {:.0} users/s |",
        args.tag_requests,
        args.concurrency,
        pairs as f64 / writing.as_secs_f64(),
        (args.tag_requests * 100) as f64 / writing.as_secs_f64()
    );
    println!(
        "| PostgreSQL's disk for the data set (`pg_database_size`, after the writes) | {:.2} GiB |",
        size as f64 / f64::from(1u32 << 30)
    );
    Ok(())
}

/// 100 users scattered over the accounts, each 1–10 of the data set's tags.
fn tag_body(request: usize, accounts: u32) -> String {
    let users: Vec<Value> = (0..100u64)
        .map(|j| {
            let k = request as u64 * 100 + j;
            let account = (k * 2_147_483_647) % u64::from(accounts);
            let tags: Vec<String> = (0..=(k % 10))
                .map(|t| format!("tag{:04}", 1 + (k * 7 + t * 131) % 1000))
                .collect();
            json!({"To_Account": format!("user{account}"), "Tags": tags})
        })
        .collect();
    json!({ "UserTags": users }).to_string()
}
