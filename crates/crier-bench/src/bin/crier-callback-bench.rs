//! Delivery callback throughput: N accounts reached online by one `timpush` push, handed to
//! the app's delivery-event hand-off the way the fan-out and the ack path hand them (one
//! "written" event for all N, then N acknowledgements), timed until a local receiver has
//! accepted all 2N callback events. Reports events and requests per second and the server's
//! CPU per event (the process's CPU less the receiver's threads). See BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p crier-bench --bin crier-callback-bench -- --accounts 100000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use clap::Parser;
use crier::config::AppConfig;
use crier::directory::DirOp;
use crier::events::{DeliveryEvent, DeliveryStep};
use crier::server::{serve, AppState};
use crier::store::{PushKind, PushRecord};
use roaring::RoaringBitmap;

const APP: u64 = 1_400_000_001;
const KEY: &str = "callback-bench-key";
const RECEIVER_THREAD: &str = "cb-receiver";

#[derive(Parser)]
#[command(about = "Delivery callbacks per second to a local receiver.")]
struct Args {
    /// Accounts reached; each makes two events (written, acknowledged).
    #[arg(long, default_value_t = 100_000)]
    accounts: u32,
    /// `callback_qps`: requests per second at most.
    #[arg(long, default_value_t = 1_000)]
    qps: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// CPU seconds (user + system) of this process, or of its threads whose name starts with
/// `prefix`.
fn cpu_secs(prefix: Option<&str>) -> f64 {
    // Linux reports times in clock ticks of 1/100 s (USER_HZ).
    let ticks = |stat: &str| -> u64 {
        let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| {
            fields
                .get(n)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        field(11) + field(12)
    };
    let total = match prefix {
        None => std::fs::read_to_string("/proc/self/stat").map_or(0, |stat| ticks(&stat)),
        Some(prefix) => std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|name| name.starts_with(prefix))
            })
            .map(|task| std::fs::read_to_string(task.path().join("stat")).map_or(0, |s| ticks(&s)))
            .sum(),
    };
    total as f64 / 100.0
}

/// A receiver on a runtime of its own (so its CPU can be told apart) that answers Tencent's
/// success body and counts events and requests.
fn start_receiver(
    events: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> anyhow::Result<std::net::SocketAddr> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(RECEIVER_THREAD)
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/callback",
        post(move |body: axum::body::Bytes| {
            let (events, requests) = (Arc::clone(&events), Arc::clone(&requests));
            async move {
                let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let n = parsed["Events"].as_array().map_or(0, Vec::len);
                events.fetch_add(n as u64, Ordering::Relaxed);
                requests.fetch_add(1, Ordering::Relaxed);
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#
            }
        }),
    );
    // Its own thread: `block_on` cannot run inside the bench's runtime.
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app).await
        })
    });
    Ok(addr)
}

fn task(accounts: &RoaringBitmap) -> PushRecord {
    PushRecord {
        app: APP,
        task_id: "bench-task".into(),
        kind: PushKind::Push,
        created_ms: crier::clock::now_ms(),
        from_account: "administrator".into(),
        msg_random: 1,
        msg_body: "[]".into(),
        data_id: Some("bench".into()),
        audience: accounts.clone(),
        ..PushRecord::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (received, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let receiver = start_receiver(Arc::clone(&received), Arc::clone(&requests))?;
    let data = tempfile::tempdir()?;
    let app = AppConfig {
        callback_url: Some(format!("http://{receiver}/callback")),
        callback_qps: args.qps,
        ..AppConfig::new(APP, KEY)
    };
    let path = data.path().to_owned();
    let state =
        Arc::new(tokio::task::spawn_blocking(move || AppState::open(&path, vec![app])).await??);
    let tenant = Arc::clone(&state.tenants[&APP]);
    let names: Vec<String> = (0..args.accounts).map(|n| format!("user{n:08}")).collect();
    for chunk in names.chunks(10_000) {
        let accounts = chunk.to_vec();
        tenant
            .write(move |_| Ok(vec![DirOp::Import { accounts }]))
            .await
            .map_err(|e| anyhow::anyhow!("import: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, Arc::clone(&state), async move {
        let _ = stopped.await;
    }));

    let accounts: RoaringBitmap = names
        .iter()
        .filter_map(|name| tenant.read(|d| d.account_number(name)))
        .collect();
    let record = Arc::new(task(&accounts));
    let expected = 2 * u64::from(args.accounts);
    let (cpu_before, receiver_cpu_before) = (cpu_secs(None), cpu_secs(Some(RECEIVER_THREAD)));
    let started = Instant::now();
    let events = tenant.delivery_events();
    events.emit(vec![DeliveryEvent {
        task: Arc::clone(&record),
        at_ms: crier::clock::now_ms(),
        step: DeliveryStep::Written {
            accounts: accounts.clone(),
            sessions: accounts.len(),
        },
    }]);
    // Acknowledgements arrive one by one, as sessions send them.
    for account in &accounts {
        events.emit_one(
            &record,
            crier::clock::now_ms(),
            DeliveryStep::Acked { account },
        );
    }
    let emitted = started.elapsed();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let server_cpu =
        (cpu_secs(None) - cpu_before) - (cpu_secs(Some(RECEIVER_THREAD)) - receiver_cpu_before);
    let got = received.load(Ordering::Relaxed);
    let sent_requests = requests.load(Ordering::Relaxed);
    let _ = stop.send(());
    server.await??;

    println!("### Delivery callbacks to a local receiver\n");
    println!("| Measure | Result |\n|---|--:|");
    println!(
        "| Accounts reached (events: written + acknowledged) | {} ({expected}) |",
        args.accounts
    );
    println!("| `callback_qps` | {} |", args.qps);
    println!(
        "| Handing the events over (the delivery points' cost) | {:.1} ms |",
        emitted.as_secs_f64() * 1000.0
    );
    println!(
        "| Events received / requests | {got} / {sent_requests} ({:.1} events a request) |",
        got as f64 / sent_requests.max(1) as f64
    );
    println!(
        "| From the first event to the last received | {:.2} s |",
        elapsed.as_secs_f64()
    );
    println!(
        "| Throughput | **{:.0} callbacks/s**, {:.0} requests/s |",
        got as f64 / elapsed.as_secs_f64(),
        sent_requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| Server CPU (process less the receiver's thread) | {:.2} s, {:.1} µs a callback |",
        server_cpu,
        server_cpu * 1e6 / got.max(1) as f64
    );
    anyhow::ensure!(got >= expected, "only {got} of {expected} events arrived");
    Ok(())
}
