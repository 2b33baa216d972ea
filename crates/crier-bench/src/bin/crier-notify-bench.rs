//! Offline notification throughput: N offline accounts with one webhook device each, one
//! `im_push` to all users, timed from the REST call until a local webhook receiver has every
//! notification, with the server's memory sampled during the run. See BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p crier-bench --bin crier-notify-bench -- --devices 100000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::post;
use clap::Parser;
use crier::config::AppConfig;
use crier::directory::DirOp;
use crier::notify::devices::Device;
use crier::notify::Provider;
use crier::server::{serve, AppState};
use crier_proto::usersig;
use serde_json::{json, Value};

const APP: u64 = 1_400_000_001;
const KEY: &str = "notify-bench-key";
const ADMIN: &str = "administrator";

#[derive(Parser)]
#[command(about = "Offline notification throughput to a local webhook receiver.")]
struct Args {
    /// Offline accounts, one webhook device each.
    #[arg(long, default_value_t = 100_000)]
    devices: u32,
    /// The webhook provider's rate limit (notifications per second).
    #[arg(long, default_value_t = 1_000_000)]
    rate_per_sec: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A webhook receiver that answers 200 and counts what it got.
async fn start_receiver(received: Arc<AtomicU64>) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        post(move |_body: axum::body::Bytes| {
            let received = Arc::clone(&received);
            async move {
                received.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let received = Arc::new(AtomicU64::new(0));
    let receiver = start_receiver(Arc::clone(&received)).await?;
    let data = tempfile::tempdir()?;
    let app = AppConfig {
        daily_push_quota: 1_000,
        min_push_interval_ms: 0,
        webhook: Some(serde_json::from_value(json!({
            "url": format!("http://{receiver}/hook"),
            "secret": "bench-secret",
            "rate_per_sec": args.rate_per_sec,
        }))?),
        ..AppConfig::new(APP, KEY)
    };
    let path = data.path().to_owned();
    let state =
        Arc::new(tokio::task::spawn_blocking(move || AppState::open(&path, vec![app])).await??);
    let tenant = Arc::clone(&state.tenants[&APP]);

    let setup = Instant::now();
    let names: Vec<String> = (0..args.devices).map(|n| format!("user{n:08}")).collect();
    for chunk in names.chunks(10_000) {
        let accounts = chunk.to_vec();
        tenant
            .write(move |_| Ok(vec![DirOp::Import { accounts }]))
            .await
            .map_err(|e| anyhow::anyhow!("import: {e}"))?;
    }
    let registering = Arc::clone(&tenant);
    let names_for_devices = names.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for name in &names_for_devices {
            let account = registering
                .read(|d| d.account_number(name))
                .context("imported account")?;
            let device = Device {
                provider: Provider::Webhook,
                token: format!("token-{name}"),
            };
            registering.register_device(account, name, device)?;
        }
        Ok(())
    })
    .await??;
    eprintln!(
        "setup: {} accounts with a device in {:.1} s",
        args.devices,
        setup.elapsed().as_secs_f64()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));

    let rss_before = rss_bytes();
    let sig = usersig::sign(APP, KEY, ADMIN, 3_600, crier::clock::now_secs());
    let url = format!(
        "{base}/v4/all_member_push/im_push?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
    );
    let body = json!({"MsgRandom": 1, "MsgLifeTime": 3600, "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "you have mail"}}]});
    let started = Instant::now();
    let answer: Value = reqwest::Client::new()
        .post(url)
        .body(body.to_string())
        .send()
        .await?
        .json()
        .await?;
    let task_id = answer["TaskId"]
        .as_str()
        .with_context(|| format!("im_push failed: {answer}"))?
        .to_owned();
    let mut peak_rss = rss_before;
    let deadline = started + Duration::from_secs(args.timeout_secs);
    while received.load(Ordering::Relaxed) < u64::from(args.devices) && Instant::now() < deadline {
        peak_rss = peak_rss.max(rss_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let got = received.load(Ordering::Relaxed);
    // The job is marked done right after its last batch; give it a moment.
    let mut report = None;
    for _ in 0..500 {
        let reported = tenant.notifications().report(&task_id)?;
        if reported.as_ref().is_some_and(|r| r.done) {
            report = reported;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    server.await??;

    let rate = got as f64 / elapsed.as_secs_f64();
    println!("### Offline notifications to a local webhook receiver\n");
    println!("| Measure | Result |\n|---|--:|");
    println!(
        "| Offline accounts, one webhook device each | {} |",
        args.devices
    );
    println!("| Notifications received | {got} |");
    println!(
        "| From `im_push` sent to the last notification received | {:.2} s |",
        elapsed.as_secs_f64()
    );
    println!("| Throughput | **{rate:.0} notifications/s** |");
    println!(
        "| Process RSS before the push / peak during the run | {:.1} MiB / {:.1} MiB (+{:.1} MiB) |",
        mib(rss_before),
        mib(peak_rss),
        mib(peak_rss.saturating_sub(rss_before))
    );
    match report {
        Some(report) => println!(
            "| Task report: targets, counts | {}, {} |",
            report.targets,
            serde_json::to_string(&report.counts)?
        ),
        None => println!("| Task report | the job had not finished |"),
    }
    anyhow::ensure!(
        got == u64::from(args.devices),
        "only {got} of {} notifications arrived",
        args.devices
    );
    Ok(())
}
