//! The coordinator: start the server, set up the accounts, start the hostile connections and
//! the honest sessions (child processes), run the honest REST load for `--duration`, collect
//! what everyone saw, `kill -9` the server, restart it on the same data and check that every
//! acknowledged write is there; then the report (`report.rs`) and the plot (`plot.rs`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::args::SoakArgs;
use crate::children::ChildProc;
use crate::client::{CallError, RestClient};
use crate::collect::{parse_hostile, parse_sessions, HostileKind, SessionOutcome};
use crate::common::{
    cpu_ticks, honest_user, hostile_user, open_files_limit, proc_status_kb, ticks_per_second,
    BASE_TAG,
};
use crate::hostile::KINDS;
use crate::pushes::{push_loop, Pushes};
use crate::rest::{Expected, Journal, RestStats, Worker, ATTR_NAMES};
use crate::sampler::{Sample, Sampler};
use crate::server::{write_config, CrierServer};
use crate::verify::Durability;

pub struct Outcome {
    pub args: SoakArgs,
    pub crier_bin: PathBuf,
    pub work_dir: Option<PathBuf>,
    pub nofile: Option<(u64, u64)>,
    pub startup: Duration,
    pub setup: Duration,
    pub hostile_setup: Duration,
    pub logins: Duration,
    pub sessions: SessionOutcome,
    pub hostile: Vec<HostileKind>,
    pub hostile_bytes: u64,
    pub rest: RestStats,
    pub pushes: Pushes,
    pub load_seconds: f64,
    pub load_cpu_seconds: Option<f64>,
    pub samples: Vec<Sample>,
    pub marks: Vec<(f64, String)>,
    pub load_window: (f64, f64),
    pub exited_before_kill: Option<String>,
    pub restart_startup: Option<Duration>,
    pub restart_rss_kb: Option<u64>,
    pub terminate: Option<Option<Duration>>,
    pub durability: Option<Durability>,
    pub log_tally: BTreeMap<(String, String), u64>,
    pub restart_log_tally: BTreeMap<(String, String), u64>,
    pub plot: Option<(PathBuf, Option<(PathBuf, &'static str)>)>,
}

pub fn run(args: SoakArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(soak(args))
}

/// Runs the soak; on SIGINT or SIGTERM drops it, which kills the server and the children
/// (`kill_on_drop`), so nothing is left running.
async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // A bound on the whole run, whatever hangs: set-up, load, restart and check.
    let limit = Duration::from_secs(args.duration + 1800);
    tokio::select! {
        result = run_soak(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
        _ = tokio::time::sleep(limit) => bail!("the soak did not finish within {limit:?}"),
    }
}

fn source(k: u8, hostile: bool) -> String {
    Ipv4Addr::new(127, 0, u8::from(hostile), 2 + k).to_string()
}

/// Imports every account, names the attribute slots and gives every account the base tag.
async fn set_up(client: &RestClient, accounts: &[String], journal: &Journal) -> anyhow::Result<()> {
    let fail = |path: &str, e: CallError| match e {
        CallError::Refused(code, info) => {
            anyhow::anyhow!("{path}: ErrorCode {code}: {info}")
        }
        CallError::Transport(why) => anyhow::anyhow!("{path}: {why}"),
    };
    let names: serde_json::Map<String, serde_json::Value> = ATTR_NAMES
        .iter()
        .enumerate()
        .map(|(slot, name)| (slot.to_string(), json!(name)))
        .collect();
    let path = "all_member_push/im_set_attr_name";
    client
        .call(path, &json!({ "AttrNames": names }))
        .await
        .map_err(|e| fail(path, e))?;
    for chunk in accounts.chunks(100) {
        let path = "im_open_login_svc/multiaccount_import";
        client
            .call(path, &json!({ "Accounts": chunk }))
            .await
            .map_err(|e| fail(path, e))?;
        let tags: Vec<_> = chunk
            .iter()
            .map(|a| json!({"To_Account": a, "Tags": [BASE_TAG]}))
            .collect();
        let path = "all_member_push/im_add_tag";
        client
            .call(path, &json!({ "UserTags": tags }))
            .await
            .map_err(|e| fail(path, e))?;
    }
    if let Ok(mut file) = journal.lock() {
        use std::io::Write as _;
        let _ = writeln!(
            file,
            "{}",
            json!({"set_up": accounts.len(), "tag": BASE_TAG, "attr_names": names})
        );
    }
    Ok(())
}

struct Run {
    t0: Instant,
    marks: Vec<(f64, String)>,
}

impl Run {
    fn mark(&mut self, label: &str) {
        let t = self.t0.elapsed().as_secs_f64();
        eprintln!("[{t:7.1} s] {label}");
        self.marks.push((t, label.to_owned()));
    }
}

async fn run_soak(args: SoakArgs) -> anyhow::Result<()> {
    let crier_bin = match &args.crier_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("crier"),
    };
    if !crier_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p crier) or pass --crier-bin",
            crier_bin.display()
        );
    }
    let counts = args.hostile_counts();
    let nonreaders = counts[KINDS.len() - 1];
    let nofile = open_files_limit("self");
    if let Some((soft, _)) = nofile {
        let server_needs = (args.sessions + args.hostile + args.rest_clients) as u64 + 64;
        eprintln!("RLIMIT_NOFILE {soft}: the server will hold about {server_needs} descriptors");
        if server_needs > soft {
            eprintln!("warning: that is more than the server may open; expect refused connections");
        }
        if args.per_proc as u64 + 64 > soft || args.hostile as u64 + 64 > soft {
            bail!("--per-proc or --hostile exceed what one process may open ({soft})");
        }
    }
    let temp = tempfile::Builder::new().prefix("crier-soak-").tempdir()?;
    let dir = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    let config = write_config(&dir, &args.extra_config)?;
    let data = dir.join("data");
    let journal: Journal = Arc::new(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
        dir.join("writes.jsonl"),
    )?)));
    let mut run = Run {
        t0: Instant::now(),
        marks: Vec::new(),
    };

    let mut server =
        CrierServer::start(&crier_bin, &config, &data, &dir.join("server.log")).await?;
    let sampler = Sampler::start(server.pid, run.t0);
    run.mark("server up");
    let admin = RestClient::new(&server.base())?;
    let accounts: Vec<String> = (0..args.sessions)
        .map(honest_user)
        .chain((0..nonreaders).map(hostile_user))
        .collect();
    let setup_started = Instant::now();
    set_up(&admin, &accounts, &journal)
        .await
        .context("setting up the accounts")?;
    let setup = setup_started.elapsed();
    run.mark("accounts set up");

    let hostile_started = Instant::now();
    let mut hostile = if args.hostile > 0 {
        let sources: Vec<String> = (0..args.sources.max(1)).map(|k| source(k, true)).collect();
        let mut child = ChildProc::spawn(
            "hostile".into(),
            &[
                "hostile".into(),
                format!("--target={}", server.addr),
                format!("--sources={}", sources.join(",")),
                format!(
                    "--counts={}",
                    counts
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                format!("--slowloris-interval-ms={}", args.slowloris_interval_ms),
                format!("--stall-bytes={}", args.stall_bytes),
                format!("--probe-secs={}", args.probe_secs),
                format!("--nonreader-relogin-secs={}", args.nonreader_relogin_secs),
            ],
        )?;
        child.expect("READY", Duration::from_secs(180)).await?;
        Some(child)
    } else {
        None
    };
    let hostile_setup = hostile_started.elapsed();
    run.mark("hostile on");

    let logins_started = Instant::now();
    let sources: Vec<String> = (0..args.sources.max(1)).map(|k| source(k, false)).collect();
    let procs = args.session_procs();
    let mut session_procs = Vec::new();
    for p in 0..procs {
        let first = args.sessions * p / procs;
        let count = args.sessions * (p + 1) / procs - first;
        session_procs.push(ChildProc::spawn(
            format!("sessions {p}"),
            &[
                "sessions".into(),
                format!("--target={}", server.addr),
                format!("--first={first}"),
                format!("--count={count}"),
                format!("--sources={}", sources.join(",")),
                format!("--concurrency={}", args.concurrency),
                format!("--ping-secs={}", args.ping_secs),
            ],
        )?);
    }
    let mut sessions = SessionOutcome::default();
    for child in &mut session_procs {
        let ready = child.expect("READY", Duration::from_secs(400)).await?;
        let n: Vec<u64> = ready
            .split_ascii_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        sessions.ready += n.first().copied().unwrap_or(0);
    }
    let logins = logins_started.elapsed();
    run.mark("sessions logged in");
    eprintln!(
        "  {} of {} honest sessions logged in in {:.1} s",
        sessions.ready,
        args.sessions,
        logins.as_secs_f64()
    );

    // The load.
    let load_start = Instant::now();
    let load_t = run.t0.elapsed().as_secs_f64();
    run.mark("load on");
    let cpu_before = cpu_ticks(&server.pid.to_string());
    let end = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let push_rate = 1000.0 / args.push_interval_ms.max(1) as f64;
    let workers_n = args.rest_clients.max(1).min(args.sessions.max(1));
    let period = Duration::from_secs_f64(workers_n as f64 / (args.rps - push_rate).max(1.0));
    let mut workers = Vec::new();
    for w in 0..workers_n {
        let owned: Vec<usize> = (w..args.sessions).step_by(workers_n).collect();
        let worker = Worker::new(
            RestClient::new(&server.base())?,
            owned,
            period,
            Arc::clone(&journal),
            (args.sessions, nonreaders),
        );
        workers.push(tokio::spawn(worker.run(end)));
    }
    let pushes = tokio::spawn(push_loop(
        RestClient::new(&server.base())?,
        end,
        Duration::from_millis(args.push_interval_ms),
        args.push_lifetime,
        args.text_bytes,
        Arc::clone(&journal),
    ));
    let progress = {
        let t0 = run.t0;
        let samples = Arc::new(sampler_view(&sampler));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            every.tick().await;
            loop {
                every.tick().await;
                if let Some(s) = samples() {
                    eprintln!(
                        "[{:7.1} s] load: server RSS {:.0} MiB, {} descriptors",
                        t0.elapsed().as_secs_f64(),
                        s.rss_kb as f64 / 1024.0,
                        s.fds
                    );
                }
            }
        })
    };
    let mut rest = RestStats::default();
    let mut model: BTreeMap<String, Expected> = BTreeMap::new();
    for worker in workers {
        let worker = worker.await?;
        rest.merge(worker.stats);
        for (i, expected) in worker.model {
            model.insert(honest_user(i), expected);
        }
    }
    let mut pushes = pushes.await?;
    progress.abort();
    rest.merge(std::mem::take(&mut pushes.stats));
    let load_seconds = load_start.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(&server.pid.to_string());
    let load_cpu_seconds = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / ticks_per_second()),
        _ => None,
    };
    if let Ok(mut file) = journal.lock() {
        use std::io::Write as _;
        let _ = file.flush();
    }
    run.mark("load off");
    let load_window = (load_t, run.t0.elapsed().as_secs_f64());

    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let accepted: Vec<String> = pushes.accepted.iter().map(|(r, _)| r.to_string()).collect();
    let report_command = format!("REPORT {}", accepted.join(" "));
    for child in &mut session_procs {
        match child.ask(&report_command, Duration::from_secs(60)).await {
            Ok(lines) => parse_sessions(&lines, &mut sessions),
            Err(e) => {
                *sessions
                    .errors
                    .entry(format!("no report from {}: {e:#}", child.name))
                    .or_default() += 1;
            }
        }
    }
    let (hostile_kinds, hostile_bytes) = match &mut hostile {
        Some(child) => parse_hostile(&child.ask("REPORT", Duration::from_secs(60)).await?),
        None => (Vec::new(), 0),
    };

    let exited_before_kill = server.exited().map(|s| s.to_string());
    let startup = server.startup;
    let log_tally = server
        .log_tally
        .lock()
        .map(|t| t.clone())
        .unwrap_or_default();
    server.kill_9().await;
    run.mark("kill -9");
    let samples = sampler.stop();
    for child in session_procs {
        child.stop().await;
    }
    if let Some(child) = hostile {
        child.stop().await;
    }

    // Restart on the same data and read everything back.
    for expected_hostile in (0..nonreaders).map(hostile_user) {
        let mut expected = Expected::default();
        expected.tags.insert(BASE_TAG.to_owned());
        model.insert(expected_hostile, expected);
    }
    let task_ids: Vec<String> = pushes.accepted.iter().map(|(_, t)| t.clone()).collect();
    let (restart_startup, restart_rss_kb, terminate, durability, restart_log_tally) =
        match CrierServer::start(&crier_bin, &config, &data, &dir.join("server-restart.log")).await
        {
            Ok(restarted) => {
                eprintln!(
                    "restarted in {:.1} s; checking {} accounts and {} TaskIds",
                    restarted.startup.as_secs_f64(),
                    model.len(),
                    task_ids.len()
                );
                let client = RestClient::new(&restarted.base())?;
                let durability = crate::verify::check(&client, &model, &task_ids).await;
                let rss = proc_status_kb(restarted.pid, "VmRSS");
                let startup = restarted.startup;
                let tally = restarted
                    .log_tally
                    .lock()
                    .map(|t| t.clone())
                    .unwrap_or_default();
                let terminate = restarted.terminate(Duration::from_secs(60)).await;
                (Some(startup), rss, Some(terminate), Some(durability), tally)
            }
            Err(e) => {
                eprintln!("the server did not restart: {e:#}");
                (None, None, None, None, BTreeMap::new())
            }
        };

    let plot = match &args.plot {
        Some(path) => {
            let title = format!(
                "crier serve RSS: {} sessions, {} REST calls/s, {} hostile connections",
                args.sessions, args.rps, args.hostile
            );
            std::fs::write(path, crate::plot::svg(&samples, &run.marks, &title))?;
            let png = path.with_extension("png");
            let rendered = crate::plot::render_png(path, &png).map(|by| (png, by));
            Some((path.clone(), rendered))
        }
        None => None,
    };
    let keep = args.keep || args.work_dir.is_some();
    let outcome = Outcome {
        crier_bin,
        work_dir: keep.then(|| dir.clone()),
        nofile,
        startup,
        setup,
        hostile_setup,
        logins,
        sessions,
        hostile: hostile_kinds,
        hostile_bytes,
        rest,
        pushes,
        load_seconds,
        load_cpu_seconds,
        samples,
        marks: run.marks,
        load_window,
        exited_before_kill,
        restart_startup,
        restart_rss_kb,
        terminate,
        durability,
        log_tally,
        restart_log_tally,
        plot,
        args: args.clone(),
    };
    let md = crate::report::report(&outcome);
    println!("{md}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md)?;
    }
    if args.keep && args.work_dir.is_none() {
        // The temporary directory is left in place.
        let _ = temp.keep();
    }
    Ok(())
}

/// A closure reading the sampler's latest sample, for the progress task.
fn sampler_view(sampler: &Sampler) -> impl Fn() -> Option<Sample> + Send + Sync + 'static {
    let latest = sampler.samples();
    move || latest.lock().ok()?.last().copied()
}
