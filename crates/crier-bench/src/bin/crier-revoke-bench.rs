//! Revoke at scale (issue 14): a `v4/timpush/push` kept for an audience of N accounts (1M by
//! default) of which M (10k) are online, then `v4/timpush/revoke`, timed from the revoke call
//! until the last online client has its `Revoke` frame. Beside it, in the same run and by the
//! same clients, the push's own fan-out: from the push call to the last client's `Push`.
//!
//! The server is a real `crier serve` process (release build) on a data directory this tool
//! fills first through the library; the clients are `crier-client` connections in this
//! process, one tokio task each.
//!
//! ```text
//! cargo build --release -p crier -p crier-bench
//! target/release/crier-revoke-bench --accounts 1000000 --online 10000 --rounds 5
//! ```

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use crier::config::AppConfig;
use crier::directory::DirOp;
use crier::server::AppState;
use crier_client::{Connection, Event, LoginOptions};
use crier_proto::usersig;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const APP: u64 = 1_400_000_001;
const KEY: &str = "revoke-bench-key";
const ADMIN: &str = "administrator";

#[derive(Parser)]
#[command(
    about = "Revoke of a push to N accounts with M online: time until every online client has Revoke."
)]
struct Args {
    /// Accounts in the audience (all imported).
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u32,
    /// Of them, logged in over WebSocket from this process.
    #[arg(long, default_value_t = 10_000)]
    online: u32,
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// The server binary.
    #[arg(long, default_value = "target/release/crier")]
    crier_bin: String,
}

/// What a client saw, and when.
enum Seen {
    Push(String, Instant),
    Revoke(String, Instant),
}

fn user(n: u32) -> String {
    format!("user{n:08}")
}

/// Server CPU time (user + system) in seconds, from `/proc/PID/stat`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

async fn admin_call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    let sig = usersig::sign(APP, KEY, ADMIN, 3_600, crier::clock::now_secs());
    let url = format!(
        "{base}/v4/{path}?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"
    );
    let answer: Value = http
        .post(url)
        .body(body.to_string())
        .send()
        .await?
        .json()
        .await?;
    if answer["ErrorCode"] != 0 {
        bail!("{path}: {answer}");
    }
    Ok(answer)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let app = AppConfig {
        daily_push_quota: 1_000,
        min_push_interval_ms: 0,
        ..AppConfig::new(APP, KEY)
    };

    let setup = Instant::now();
    let path = data.clone();
    let state =
        Arc::new(tokio::task::spawn_blocking(move || AppState::open(&path, vec![app])).await??);
    let tenant = Arc::clone(&state.tenants[&APP]);
    for start in (0..args.accounts).step_by(50_000) {
        let accounts: Vec<String> = (start..(start + 50_000).min(args.accounts))
            .map(user)
            .collect();
        tenant
            .write(move |_| Ok(vec![DirOp::Import { accounts }]))
            .await
            .map_err(|e| anyhow::anyhow!("import: {e}"))?;
    }
    tokio::task::spawn_blocking(move || tenant.flush()).await?;
    drop(state);
    eprintln!(
        "setup: {} accounts in {:.1} s",
        args.accounts,
        setup.elapsed().as_secs_f64()
    );

    let config = dir.path().join("crier.toml");
    std::fs::write(
        &config,
        format!("[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmin_push_interval_ms = 0\ndaily_push_quota = 1000\n"),
    )?;
    let mut server = std::process::Command::new(&args.crier_bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.crier_bin))?;
    let mut lines = std::io::BufReader::new(server.stderr.take().context("stderr")?).lines();
    let addr = loop {
        let line = lines.next().context("crier exited before listening")??;
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            break event["addr"].as_str().context("addr")?.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    let base = format!("http://{addr}");
    let pid = server.id();

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let login_started = Instant::now();
    for chunk in (0..args.online).collect::<Vec<_>>().chunks(500) {
        let logins = chunk.iter().map(|&n| {
            let options = LoginOptions {
                url: format!("ws://{addr}/v4/ws"),
                sdkappid: APP,
                identifier: user(n),
                user_sig: usersig::sign(APP, KEY, &user(n), 86_400, crier::clock::now_secs()),
                platform: None,
            };
            async move { Connection::connect(&options).await }
        });
        for connection in futures_util::future::join_all(logins).await {
            let mut connection = connection?;
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while let Ok(event) = connection.next_event().await {
                    let now = Instant::now();
                    let seen = match event {
                        Event::Push(push) => Seen::Push(push.task_id, now),
                        Event::Revoke { task_id, .. } => Seen::Revoke(task_id, now),
                        Event::Closed { .. } => return,
                        _ => continue,
                    };
                    if seen_tx.send(seen).is_err() {
                        return;
                    }
                }
            });
        }
    }
    eprintln!(
        "{} clients logged in in {:.1} s",
        args.online,
        login_started.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let mut fan_out_ms = Vec::new();
    let mut revoke_ms = Vec::new();
    let mut revoke_answer_ms = Vec::new();
    let mut revoke_cpu_ms = Vec::new();
    for round in 0..args.rounds {
        let body = json!({
            "MsgRandom": round,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "a push to recall"}}],
        });
        let pushed = Instant::now();
        let answer = admin_call(&http, &base, "timpush/push", &body).await?;
        let task_id = answer["TaskId"].as_str().context("TaskId")?.to_owned();
        let mut got = 0;
        let mut last = pushed;
        while got < args.online {
            match tokio::time::timeout(Duration::from_secs(60), seen.recv()).await? {
                Some(Seen::Push(id, at)) if id == task_id => {
                    got += 1;
                    last = at;
                }
                Some(_) => {}
                None => bail!("clients gone"),
            }
        }
        let fan_out = last.duration_since(pushed).as_secs_f64() * 1000.0;
        fan_out_ms.push(fan_out);
        // The revoke rate is one a second.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let cpu_before = cpu_secs(pid);
        let revoked = Instant::now();
        admin_call(&http, &base, "timpush/revoke", &json!({"TaskId": task_id})).await?;
        let answered = revoked.elapsed().as_secs_f64() * 1000.0;
        revoke_answer_ms.push(answered);
        let mut got = 0;
        let mut last = revoked;
        while got < args.online {
            match tokio::time::timeout(Duration::from_secs(60), seen.recv()).await? {
                Some(Seen::Revoke(id, at)) if id == task_id => {
                    got += 1;
                    last = at;
                }
                Some(_) => {}
                None => bail!("clients gone"),
            }
        }
        let revoke = last.duration_since(revoked).as_secs_f64() * 1000.0;
        revoke_ms.push(revoke);
        revoke_cpu_ms.push((cpu_secs(pid) - cpu_before) * 1000.0);
        eprintln!(
            "round {round}: push to the last client {fan_out:.0} ms, revoke to the last client {revoke:.0} ms (answered in {answered:.0} ms)"
        );
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let _ = server.kill();
    let _ = server.wait();

    let summary = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        format!(
            "{:.0} ms / {:.0} ms",
            percentile(values, 0.5),
            percentile(values, 1.0)
        )
    };
    println!(
        "### Revoke of a push to {} accounts with {} online\n",
        args.accounts, args.online
    );
    println!("{} rounds; median / worst. One `crier serve` process (release), the clients in one other process (`crier-client`, one tokio task each), both on this machine's 2 cores.\n", args.rounds);
    println!("| Measure | Result |\n|---|--:|");
    println!(
        "| `revoke` call to the last online client's `Revoke` | **{}** |",
        summary(&mut revoke_ms)
    );
    println!(
        "| `revoke` answered (the local sessions have it queued) | {} |",
        summary(&mut revoke_answer_ms)
    );
    println!(
        "| server CPU from the revoke call to the last `Revoke` | {} |",
        summary(&mut revoke_cpu_ms)
    );
    println!(
        "| beside it: `push` call to the last online client's `Push` | {} |",
        summary(&mut fan_out_ms)
    );
    Ok(())
}
