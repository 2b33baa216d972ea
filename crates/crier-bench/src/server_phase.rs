//! The real server, run in a fresh child process so its memory is measured alone: start-up from
//! the snapshot (`AppState::open`), then `im_push` and bulk tag/attribute writes over HTTP on
//! 127.0.0.1 from several concurrent connections.
//!
//! The server runs on a multi-thread tokio runtime of its own; the load generator (the HTTP
//! client) runs on a current-thread runtime on the process's main thread, so the server's CPU
//! is the process's minus that one thread's, and is reported apart from the client's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crier::server::{serve, AppState};
use crier_proto::usersig;
use serde_json::{json, Map, Value};

use crate::crier_phase::{app_config, stats_json, ADMIN, APP, KEY};
use crate::dataset::Dataset;
use crate::util::{disk_usage, log, percentile, proc_status_bytes, process_cpu_secs, Timing};
use crate::workload::{self, USERS_PER_REQUEST};

#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub accounts: u32,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub zipf_s: f64,
    #[arg(long)]
    pub pushes: usize,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub tag_requests: usize,
    #[arg(long)]
    pub attr_requests: usize,
    #[arg(long)]
    pub remove_requests: usize,
    #[arg(long)]
    pub sync_pushes: usize,
    /// Pause between two write phases, so that a profiler attached to this process (say
    /// `callgrind_control --dump`) can cut its counts between them.
    #[arg(long, default_value_t = 0)]
    pub phase_gap_ms: u64,
}

/// Pause between two timed pushes of the idle / during-sync comparison, so each is a push of
/// its own and not one of a burst.
const PUSH_SPACING: Duration = Duration::from_millis(100);
/// `im_set_attr` requests made ready for the sync that runs while pushes are timed; they are
/// sent again from the first if the pushes outlast them.
const SYNC_REQUESTS: usize = 20_000;

struct Client {
    http: reqwest::Client,
    base: String,
    query: String,
}

impl Client {
    async fn call(&self, path: &str, body: String) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}/v4/{path}?{}", self.base, self.query))
            .body(body)
            .send()
            .await?;
        let answer: Value = response.json().await?;
        anyhow::ensure!(answer["ActionStatus"] == "OK", "{path} failed: {answer}");
        Ok(answer)
    }
}

/// Sends every body from `concurrency` connections; answers wall time and sorted latencies.
async fn blast(
    client: &Arc<Client>,
    path: &'static str,
    bodies: Vec<String>,
    concurrency: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, bodies, next) =
                (Arc::clone(client), Arc::clone(&bodies), Arc::clone(&next));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(n) else { break };
                    let t = Instant::now();
                    client.call(path, body.clone()).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok((elapsed, latencies))
}

fn write_json(
    elapsed: Duration,
    latencies: &[Duration],
    requests: usize,
    items: u64,
    cpu: Cpu,
) -> Value {
    let secs = elapsed.as_secs_f64();
    let users = (requests * USERS_PER_REQUEST) as u64;
    let server_s = cpu.process_s - cpu.client_s;
    json!({
        "cpu_s": cpu.process_s,
        "cpu_us_per_user": cpu.process_s * 1e6 / users as f64,
        "server_cpu_s": server_s,
        "server_cpu_us_per_user": server_s * 1e6 / users as f64,
        "client_cpu_us_per_user": cpu.client_s * 1e6 / users as f64,
        "requests": requests,
        "users": users,
        "items": items,
        "elapsed_s": secs,
        "users_per_s": users as f64 / secs,
        "items_per_s": items as f64 / secs,
        "requests_per_s": requests as f64 / secs,
        "p50_s": percentile(latencies, 0.50).as_secs_f64(),
        "p99_s": percentile(latencies, 0.99).as_secs_f64(),
        "max_s": percentile(latencies, 1.0).as_secs_f64(),
    })
}

async fn time_pushes(
    client: &Client,
    pushes: usize,
    first_random: u32,
    condition: Option<Value>,
) -> anyhow::Result<Timing> {
    Ok(Timing::of(
        push_samples(client, pushes, first_random, condition, Duration::ZERO).await?,
    ))
}

/// `pushes` timed `im_push` calls after an untimed one, `spacing` apart; answers the samples.
async fn push_samples(
    client: &Client,
    pushes: usize,
    first_random: u32,
    condition: Option<Value>,
    spacing: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(pushes);
    // One untimed push first: connection set-up and first-touch costs are not the steady state.
    for n in 0..=pushes {
        let mut body = json!({
            "MsgRandom": first_random + n as u32,
            "MsgLifeTime": 3600,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": format!("benchmark push {n}")}}],
        });
        if let Some(condition) = &condition {
            body["Condition"] = condition.clone();
        }
        let t = Instant::now();
        client
            .call("all_member_push/im_push", body.to_string())
            .await?;
        if n > 0 {
            samples.push(t.elapsed());
        }
        tokio::time::sleep(spacing).await;
    }
    Ok(samples)
}

/// Percentiles of push samples, and which pushes (by position, from 0) took over 20 ms.
fn samples_json(mut samples: Vec<Duration>) -> Value {
    let slow: Vec<Value> = samples
        .iter()
        .enumerate()
        .filter(|(_, t)| **t > Duration::from_millis(20))
        .map(|(n, t)| json!([n, t.as_secs_f64()]))
        .collect();
    samples.sort();
    json!({
        "over_20ms": slow,
        "samples": samples.len(),
        "p50_s": percentile(&samples, 0.50).as_secs_f64(),
        "p99_s": percentile(&samples, 0.99).as_secs_f64(),
        "max_s": percentile(&samples, 1.0).as_secs_f64(),
        "min_s": percentile(&samples, 0.0).as_secs_f64(),
    })
}

/// Sends `bodies` over and over from `concurrency` connections until `stop` is set; answers
/// the requests answered and the time it ran.
async fn sync_until(
    client: Arc<Client>,
    bodies: Arc<Vec<String>>,
    concurrency: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(usize, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, bodies, next, stop) = (
                Arc::clone(&client),
                Arc::clone(&bodies),
                Arc::clone(&next),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let body = bodies[n % bodies.len()].clone();
                    client.call("all_member_push/im_set_attr", body).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok((next.load(Ordering::Relaxed), started.elapsed()))
}

/// CPU seconds used by the whole process and by the load generator's thread (the main one).
#[derive(Clone, Copy)]
struct Cpu {
    process_s: f64,
    client_s: f64,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu {
            process_s: process_cpu_secs("self"),
            client_s: process_cpu_secs(&format!("self/task/{}", std::process::id())),
        }
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            process_s: self.process_s - before.process_s,
            client_s: self.client_s - before.client_s,
        }
    }
}

pub fn run(args: &ServerArgs) -> anyhow::Result<Value> {
    let started = Instant::now();
    let data_dir_bytes = disk_usage(&args.data_dir);
    let rss_before = proc_status_bytes("VmRSS");
    let t = Instant::now();
    let state = AppState::open(&args.data_dir, vec![app_config()]).context("AppState::open")?;
    let startup = t.elapsed();
    let rss_after = proc_status_bytes("VmRSS");
    let tenant = Arc::clone(state.tenants.get(&APP).context("the app is loaded")?);
    let metrics = Arc::clone(&state.metrics);
    let stats = tenant.read(|directory| directory.stats());
    log(
        started,
        format!(
            "server: AppState::open took {:.2} s; {} accounts",
            startup.as_secs_f64(),
            stats.accounts
        ),
    );
    anyhow::ensure!(
        stats.accounts == u64::from(args.accounts),
        "the snapshot holds {} accounts, expected {}",
        stats.accounts,
        args.accounts
    );

    let dataset = Dataset::new(args.accounts, args.seed, args.zipf_s);
    let mut phases: Vec<(&str, &str, Vec<String>, u64)> = Vec::new();
    let tag_requests: Vec<_> = (0..args.tag_requests)
        .map(|n| workload::tag_request(&dataset, n))
        .collect();
    phases.push((
        "add_tag",
        "all_member_push/im_add_tag",
        tag_requests
            .iter()
            .map(|r| workload::tag_body(&dataset, r))
            .collect(),
        workload::tag_items(&tag_requests),
    ));
    let attr_requests: Vec<_> = (0..args.attr_requests)
        .map(|n| workload::attr_request(&dataset, n, false))
        .collect();
    phases.push((
        "set_attr",
        "all_member_push/im_set_attr",
        attr_requests
            .iter()
            .map(|r| workload::attr_body(r))
            .collect(),
        workload::attr_items(&attr_requests),
    ));
    let removes = args.remove_requests.min(args.tag_requests);
    phases.push((
        "remove_tag",
        "all_member_push/im_remove_tag",
        tag_requests[..removes]
            .iter()
            .map(|r| workload::tag_body(&dataset, r))
            .collect(),
        workload::tag_items(&tag_requests[..removes]),
    ));
    drop(tag_requests);
    drop(attr_requests);
    let remove_attr_requests: Vec<_> = (0..args.remove_requests)
        .map(|n| workload::attr_request(&dataset, n, true))
        .collect();
    phases.push((
        "remove_attr",
        "all_member_push/im_remove_attr",
        remove_attr_requests
            .iter()
            .map(|r| workload::attr_body(r))
            .collect(),
        workload::attr_items(&remove_attr_requests),
    ));
    drop(remove_attr_requests);
    // The sync that runs beside the timed pushes: users none of the writes above touched.
    let sync_bodies: Arc<Vec<String>> = Arc::new(
        (args.attr_requests..args.attr_requests + SYNC_REQUESTS)
            .map(|n| workload::attr_body(&workload::attr_request(&dataset, n, false)))
            .collect(),
    );
    log(started, "server: request bodies generated");

    let cpu = crate::util::CpuWatch::start();
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let server = server_runtime.spawn(serve(listener, Arc::new(state), async {
        let _ = signal.await;
    }));
    let server_handle = server_runtime.handle().clone();
    let result = client_runtime.block_on(async {
        let sig = usersig::sign(APP, KEY, ADMIN, 86_400, crier::clock::now_secs());
        let client = Arc::new(Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency.max(1) * 2)
                .build()?,
            base,
            query: format!(
                "sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
            ),
        });

        let push_all = time_pushes(&client, args.pushes, 1_000, None).await?;
        log(
            started,
            format!(
                "server: im_push all users, median {:.2} ms",
                push_all.median.as_secs_f64() * 1e3
            ),
        );
        let popular =
            json!({"TagsOr": [dataset.tag_names[0], dataset.tag_names[1], dataset.tag_names[2]]});
        let push_popular = time_pushes(&client, args.pushes, 2_000, Some(popular)).await?;
        log(
            started,
            format!(
                "server: im_push TagsOr popular, median {:.2} ms",
                push_popular.median.as_secs_f64() * 1e3
            ),
        );

        let mut writes = Map::new();
        for (key, path, bodies, items) in phases {
            tokio::time::sleep(Duration::from_millis(args.phase_gap_ms)).await;
            let requests = bodies.len();
            let cpu = Cpu::now();
            let writer_busy = || metrics.directory_writer_busy_us.load(Ordering::Relaxed);
            let busy_before = writer_busy();
            let (elapsed, latencies) = blast(&client, path, bodies, args.concurrency).await?;
            let mut result =
                write_json(elapsed, &latencies, requests, items, Cpu::now().since(cpu));
            // Near 1: every write waited for the one writer; well below: for something else.
            result["writer_busy_fraction"] =
                json!((writer_busy() - busy_before) as f64 / 1e6 / elapsed.as_secs_f64());
            log(started, format!("server: {path} {result}"));
            writes.insert(key.to_owned(), result);
        }
        tokio::time::sleep(Duration::from_millis(args.phase_gap_ms)).await;

        // im_push to all users on an idle server, then while an attribute sync runs at full
        // speed on `concurrency` other connections. A snapshot first, so that the one the writes
        // above may have started in the background is not part of "idle".
        let snapshotting = Arc::clone(&tenant);
        server_handle
            .spawn_blocking(move || snapshotting.snapshot())
            .await??;
        let idle = push_samples(&client, args.sync_pushes, 3_000, None, PUSH_SPACING).await?;
        let idle = samples_json(idle);
        log(started, format!("server: im_push all users, idle {idle}"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sync = tokio::spawn(sync_until(
            Arc::clone(&client),
            Arc::clone(&sync_bodies),
            args.concurrency,
            Arc::clone(&stop),
        ));
        // Let the sync reach full speed first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = push_samples(&client, args.sync_pushes, 4_000, None, PUSH_SPACING).await;
        stop.store(true, Ordering::Relaxed);
        let (sync_requests, sync_elapsed) = sync.await??;
        let during = samples_json(during?);
        let sync_users_per_s =
            (sync_requests * USERS_PER_REQUEST) as f64 / sync_elapsed.as_secs_f64();
        log(
            started,
            format!("server: im_push all users during a sync of {sync_users_per_s:.0} users/s: {during}"),
        );

        let t = Instant::now();
        let _ = shutdown.send(());
        server.await??;
        let shutdown_time = t.elapsed();
        log(
            started,
            format!(
                "server: graceful shutdown (snapshot + flush) took {:.2} s",
                shutdown_time.as_secs_f64()
            ),
        );
        anyhow::Ok(json!({
            "push_all": push_all.to_json(),
            "push_tags_or_popular": push_popular.to_json(),
            "add_tag": writes["add_tag"],
            "set_attr": writes["set_attr"],
            "remove_tag": writes["remove_tag"],
            "remove_attr": writes["remove_attr"],
            "push_idle": idle,
            "push_during_sync": during,
            "sync_users_per_s": sync_users_per_s,
            "sync_requests": sync_requests,
            "shutdown_s": shutdown_time.as_secs_f64(),
        }))
    })?;

    // The push records hold the audience as a bitmap: check their sizes.
    let db = rusqlite::Connection::open(args.data_dir.join("crier.db"))?;
    let sizes: Vec<i64> = db
        .prepare("SELECT audience_size FROM pushes WHERE app = ?1 ORDER BY seq")?
        .query_map([APP as i64], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let all_sizes: Vec<i64> = sizes.iter().take(args.pushes + 1).copied().collect();
    let popular_sizes: Vec<i64> = sizes
        .iter()
        .skip(args.pushes + 1)
        .take(args.pushes + 1)
        .copied()
        .collect();
    // The idle and during-sync pushes go to all users too.
    let sync_sizes_ok = sizes
        .iter()
        .skip(2 * (args.pushes + 1))
        .all(|&size| size as u64 == u64::from(args.accounts));

    let stats_at_end = tenant.read(|directory| directory.stats());
    drop(tenant);
    let mut out = result;
    out["cpu_others_cores"] = json!(cpu.others_cores());
    out["startup_s"] = json!(startup.as_secs_f64());
    out["rss_before_open"] = json!(rss_before);
    out["rss_after_open"] = json!(rss_after);
    out["rss_peak"] = json!(proc_status_bytes("VmHWM"));
    out["stats"] = stats_json(&stats);
    out["data_dir_bytes_at_start"] = json!(data_dir_bytes);
    out["data_dir_bytes_at_end"] = json!(disk_usage(&args.data_dir));
    out["push_all_audience_sizes"] = json!(all_sizes);
    out["push_popular_audience_sizes"] = json!(popular_sizes);
    out["push_sync_audiences_all"] = json!(sync_sizes_ok);
    out["stats_at_end"] = stats_json(&stats_at_end);
    Ok(out)
}
