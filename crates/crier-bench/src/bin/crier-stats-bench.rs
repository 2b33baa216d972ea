//! The answer time of `timpush/all_member_push_statistics` (and `all_member_push_trace`) for a
//! push to every account of the audience benchmark's data set, on the embedded store. The data
//! set comes from `crier-bench --dataset-cache`: its snapshot becomes the app's directory.
//! Before the timed calls the push gets marks as a busy push would: `--reached` accounts that
//! got it on a session and half of them acknowledging, stored in batches of `--batch` accounts
//! (the record writer stores one bitmap per push per 20 ms batch).
//!
//! ```sh
//! cargo build --release -p crier-bench
//! target/release/crier-bench --accounts 10M --dataset-cache bench-cache --skip-redis --skip-sqlite --skip-server
//! target/release/crier-stats-bench --snapshot bench-cache/crier-10000000-seed42-s1/snapshots/app-1400000001.snap
//! ```

use std::io::{Read, Seek};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use crier::config::{AppConfig, Config, Limits};
use crier::store::sqlite::SqliteStore;
use crier::store::{MarkStage, Store};
use crier_proto::usersig;
use roaring::RoaringBitmap;
use serde_json::{json, Value};

const APP: u64 = 1_400_000_001;
const KEY: &str = "crier-bench-secret-key-0123456789abcdef";
const ADMIN: &str = "administrator";

#[derive(Parser)]
struct Args {
    /// The app's directory snapshot written by `crier-bench --dataset-cache`.
    #[arg(long)]
    snapshot: PathBuf,
    /// Timed statistics calls (one a second, the command's rate).
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Accounts marked as reached on a session (every other one of the first `2 × reached`).
    #[arg(long, default_value_t = 1_000_000)]
    reached: u32,
    /// Accounts per stored mark batch.
    #[arg(long, default_value_t = 10_000)]
    batch: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    {
        let store = SqliteStore::open(dir.path())?;
        let mut file = std::fs::File::open(&args.snapshot)
            .with_context(|| format!("{}", args.snapshot.display()))?;
        // The embedded store's file wraps the directory snapshot in its own header.
        let mut header = [0u8; 16];
        file.read_exact(&mut header)?;
        if &header[..8] != b"CRIERSNP" {
            file.seek(std::io::SeekFrom::Start(0))?;
        }
        store.save_dir_snapshot(APP, 1, &mut |out| std::io::copy(&mut file, out).map(drop))?;
    }
    eprintln!(
        "snapshot stored in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(&args, dir.path().to_owned()))
}

async fn measure(args: &Args, data_dir: PathBuf) -> anyhow::Result<()> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data_dir.clone(),
        store: None,
        bus: None,
        node_id: Some("bench".into()),
        bus_subject_prefix: "crier-stats-bench".into(),
        apps: vec![AppConfig {
            admins: vec![ADMIN.into()],
            daily_push_quota: 1_000_000,
            min_push_interval_ms: 0,
            ..AppConfig::new(APP, KEY)
        }],
        limits: Limits::default(),
    };
    let state = Arc::new(crier::server::open_state(&config).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crier::server::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        let sig = usersig::sign(APP, KEY, ADMIN, 3_600, crier::clock::now_secs());
        let request = client.post(format!(
            "{base}/v4/{path}?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
        ));
        async move {
            let answer: Value = request.body(body.to_string()).send().await?.json().await?;
            anyhow::ensure!(answer["ErrorCode"] == 0, "{answer}");
            Ok::<_, anyhow::Error>(answer)
        }
    };

    let answer = call(
        "timpush/push",
        json!({"MsgRandom": 1, "OnlineOnlyFlag": 0,
               "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "to all"}}]}),
    )
    .await?;
    let task_id = answer["TaskId"].as_str().unwrap_or_default().to_owned();

    // Marks as the record writer stores them, through a second handle on the same database.
    let (reached, batch, marked_task) = (args.reached, args.batch.max(1), task_id.clone());
    let batches = tokio::task::spawn_blocking(move || -> anyhow::Result<u32> {
        let store = SqliteStore::open(&data_dir)?;
        let mut batches = 0;
        let mut first = 0u32;
        while first < reached {
            let last = (first + batch).min(reached);
            let accounts: RoaringBitmap = (first..last).map(|n| n * 2).collect();
            let acked: RoaringBitmap = (first..last)
                .filter(|n| n % 2 == 0)
                .map(|n| n * 2)
                .collect();
            store.append_marks(
                APP,
                crier::clock::now_ms(),
                &[
                    (marked_task.clone(), MarkStage::Reached, accounts),
                    (marked_task.clone(), MarkStage::Acked, acked),
                ],
            )?;
            batches += 2;
            first = last;
        }
        Ok(batches)
    })
    .await??;

    let now = crier::clock::now_secs();
    let body = json!({"StartTime": now - 3_600, "EndTime": now + 60, "TaskID": [task_id]});
    let mut times = Vec::new();
    let mut last = Value::Null;
    for _ in 0..args.calls {
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let sent = Instant::now();
        last = call("timpush/all_member_push_statistics", body.clone()).await?;
        times.push(sent.elapsed());
    }
    times.sort();
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let sent = Instant::now();
    call(
        "timpush/all_member_push_trace",
        json!({"TaskID": task_id, "UserID": "user2"}),
    )
    .await?;
    let trace = sent.elapsed();
    let _ = stop.send(());
    server.await??;

    let result = &last["Results"][0];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "| `all_member_push_statistics` of a push to {} accounts ({} reached on a session, {} acked, {batches} mark batches), median of {} (min – max) | {:.1} ms ({:.1} – {:.1} ms) |",
        result["TotalCount"],
        args.reached,
        result["DeliveredCount"],
        times.len(),
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
    );
    println!(
        "| `all_member_push_trace` of one account of it | {:.1} ms |",
        ms(trace)
    );
    Ok(())
}
