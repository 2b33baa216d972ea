//! The real server, run in a fresh child process so its memory is measured alone: start-up from
//! the snapshot (`AppState::open`), then `im_push` and bulk tag/attribute writes over HTTP on
//! 127.0.0.1 from several concurrent connections.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use crier::server::{serve, AppState};
use crier_proto::usersig;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::crier_phase::{app_config, stats_json, ADMIN, APP, KEY};
use crate::dataset::{account_name, attr_value, Dataset, ATTRS};
use crate::util::{disk_usage, log, percentile, proc_status_bytes, Timing};

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
}

pub const USERS_PER_REQUEST: usize = 100;
/// A prime: walking account numbers by it visits every account once per pass, scattered.
const STRIDE: u64 = 2_147_483_647;

/// The accounts of write request `request`: scattered, each account once per pass.
fn request_accounts(dataset: &Dataset, request: usize) -> impl Iterator<Item = (u64, u32)> + '_ {
    (0..USERS_PER_REQUEST).map(move |j| {
        let k = (request * USERS_PER_REQUEST + j) as u64;
        (k, ((k * STRIDE) % u64::from(dataset.accounts)) as u32)
    })
}

/// `im_add_tag` bodies: 100 users, each 1 to 10 distinct Zipf-drawn tags. Answers the bodies
/// and the number of tags they carry.
fn add_tag_bodies(dataset: &Dataset, requests: usize) -> (Vec<String>, u64) {
    let mut tags_total = 0u64;
    let bodies = (0..requests)
        .map(|request| {
            let users: Vec<Value> = request_accounts(dataset, request)
                .map(|(k, uid)| {
                    let mut rng = dataset.rng_for(1, k);
                    let count = rng.gen_range(1..=10);
                    let mut tags: Vec<usize> = Vec::with_capacity(count);
                    while tags.len() < count {
                        let tag = dataset.tag_zipf.sample(&mut rng);
                        if !tags.contains(&tag) {
                            tags.push(tag);
                        }
                    }
                    tags_total += count as u64;
                    json!({"To_Account": account_name(uid), "Tags": tags.iter().map(|&t| &dataset.tag_names[t]).collect::<Vec<_>>()})
                })
                .collect();
            json!({ "UserTags": users }).to_string()
        })
        .collect();
    (bodies, tags_total)
}

/// `im_set_attr` bodies: 100 users, each 1 to 3 attributes set to Zipf-drawn values.
fn set_attr_bodies(dataset: &Dataset, requests: usize) -> (Vec<String>, u64) {
    let mut attrs_total = 0u64;
    let bodies = (0..requests)
        .map(|request| {
            let users: Vec<Value> = request_accounts(dataset, request)
                .map(|(k, uid)| {
                    let mut rng = dataset.rng_for(2, k);
                    let count = rng.gen_range(1..=3);
                    let mut attrs = Map::new();
                    while attrs.len() < count {
                        let slot = rng.gen_range(0..ATTRS.len());
                        let value = dataset.attr_zipf(slot).sample(&mut rng) as u16;
                        attrs.insert(ATTRS[slot].0.to_owned(), Value::String(attr_value(value)));
                    }
                    attrs_total += count as u64;
                    json!({"To_Account": account_name(uid), "Attrs": attrs})
                })
                .collect();
            json!({ "UserAttrs": users }).to_string()
        })
        .collect();
    (bodies, attrs_total)
}

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

fn write_json(elapsed: Duration, latencies: &[Duration], requests: usize, items: u64) -> Value {
    let secs = elapsed.as_secs_f64();
    let users = (requests * USERS_PER_REQUEST) as u64;
    json!({
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
    }
    Ok(Timing::of(samples))
}

pub fn run(args: &ServerArgs) -> anyhow::Result<Value> {
    let started = Instant::now();
    let data_dir_bytes = disk_usage(&args.data_dir);
    let rss_before = proc_status_bytes("VmRSS");
    let t = Instant::now();
    let state = AppState::open(&args.data_dir, vec![app_config()]).context("AppState::open")?;
    let startup = t.elapsed();
    let rss_after = proc_status_bytes("VmRSS");
    let tenant = state.tenants.get(&APP).context("the app is loaded")?;
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
    let (tag_bodies, tags_total) = add_tag_bodies(&dataset, args.tag_requests);
    let (attr_bodies, attrs_total) = set_attr_bodies(&dataset, args.attr_requests);
    log(started, "server: request bodies generated");

    let cpu = crate::util::CpuWatch::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(state), async {
            let _ = signal.await;
        }));
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

        let (elapsed, latencies) = blast(
            &client,
            "all_member_push/im_add_tag",
            tag_bodies,
            args.concurrency,
        )
        .await?;
        let add_tag = write_json(elapsed, &latencies, args.tag_requests, tags_total);
        log(started, format!("server: im_add_tag {add_tag}"));
        let (elapsed, latencies) = blast(
            &client,
            "all_member_push/im_set_attr",
            attr_bodies,
            args.concurrency,
        )
        .await?;
        let set_attr = write_json(elapsed, &latencies, args.attr_requests, attrs_total);
        log(started, format!("server: im_set_attr {set_attr}"));

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
            "add_tag": add_tag,
            "set_attr": set_attr,
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
    let popular_sizes: Vec<i64> = sizes.iter().skip(args.pushes + 1).copied().collect();

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
    Ok(out)
}
