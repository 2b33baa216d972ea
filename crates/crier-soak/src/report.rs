//! The markdown report of a soak: the machine and the instrument's shape, a verdict line,
//! honest errors, REST latency, pushes received, hostile connections, server memory and CPU,
//! the durability check and the plot.

use std::fmt::Write as _;
use std::time::Duration;

use crate::common::percentile;
use crate::coord::Outcome;
use crate::hostile::KINDS;
use crate::rest::COMMANDS;

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), Linux {}", kernel.trim())
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

fn ms_us(us: u32) -> String {
    format!("{:.1}", f64::from(us) / 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

fn ms_as_s(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{:.0} s", ms as f64 / 1000.0)
    }
}

pub fn report(o: &Outcome) -> String {
    let a = &o.args;
    let mut md = String::new();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let commit =
        command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_some();
    let _ = writeln!(
        md,
        "### Soak: {} sessions, {} REST calls/s for {} s, beside {} hostile connections\n",
        a.sessions, a.rps, a.duration, a.hostile
    );
    let _ = writeln!(
        md,
        "Machine: {}. Date: {date}. Server: `{}` at commit {commit}{}. RLIMIT_NOFILE: {}.\n",
        machine(),
        o.crier_bin.display(),
        if dirty {
            " (working tree with changes)"
        } else {
            ""
        },
        o.nofile.map_or_else(
            || "unknown".into(),
            |(soft, hard)| format!("{soft} (hard {hard})")
        )
    );

    let invocation: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let _ = writeln!(md, "Command: `crier-soak {}`\n", invocation.join(" "));

    // Verdict.
    let honest_session_errors: u64 = o.sessions.errors.values().sum();
    let honest_rest_errors: u64 = o.rest.errors.values().map(|(n, _)| n).sum();
    let mut all: Vec<u32> = o.rest.latencies_us.values().flatten().copied().collect();
    all.sort_unstable();
    let rss: Vec<u64> = {
        let mut rss: Vec<u64> = o.samples.iter().map(|s| s.rss_kb).collect();
        rss.sort_unstable();
        rss
    };
    let durability = o.durability.as_ref().map_or_else(
        || "not checked (the server did not restart)".to_owned(),
        |d| {
            format!(
                "{} missing of {} acknowledged tags, {} attribute values and {} TaskIds",
                d.missing(),
                d.tags_expected,
                d.attrs_expected,
                d.tasks_checked
            )
        },
    );
    let _ = writeln!(
        md,
        "**Result**: {} honest-client errors ({} session, {} REST); honest REST p99 {} ms over {} calls; {} of {} sessions received every push; server RSS max {}; hostile kinds the server never ended: {}; after `kill -9` and restart, {durability}.{}\n",
        honest_session_errors + honest_rest_errors,
        honest_session_errors,
        honest_rest_errors,
        ms_us(percentile(&all, 0.99)),
        all.len(),
        o.sessions.complete,
        a.sessions,
        mib(percentile(&rss, 1.0)),
        {
            let never: Vec<&str> = o.hostile.iter().filter(|k| k.target > 0 && k.ended == 0).map(|k| k.name.as_str()).collect();
            if never.is_empty() { "none".to_owned() } else { never.join(", ") }
        },
        o.exited_before_kill.as_ref().map_or(String::new(), |s| format!(" **The server exited during the run: {s}.**"))
    );

    // Shape.
    let counts = a.hostile_counts();
    let _ = writeln!(md, "#### The instrument\n");
    let _ = writeln!(md, "| Part | Shape |\n| --- | --- |");
    let _ = writeln!(md, "| Server | `crier serve` child process, one app (`daily_push_quota` 100000, `min_push_interval_ms` 1000), `127.0.0.1:0`, fresh data dir{} |", if a.extra_config.trim().is_empty() { String::new() } else { format!(", extra config `{}`", a.extra_config.replace('\n', "; ")) });
    let _ = writeln!(md, "| Honest sessions | {} WebSocket sessions (one account each) in {} process{} of at most {}, from {} source addresses; read everything, `Ack` every push, `Ping` every {} s |", a.sessions, a.session_procs(), if a.session_procs() == 1 { "" } else { "es" }, a.per_proc, a.sources, a.ping_secs);
    let _ = writeln!(md, "| Honest REST | {} keep-alive HTTP/1.1 clients (reqwest), one UserSig each, paced to {} calls/s in all, each owning 1/{} of the accounts; a separate client pushes |", a.rest_clients, a.rps, a.rest_clients);
    let _ = writeln!(md, "| REST mix | `im_push` every {} ms after the previous answer (to all, alternately by the tag all hold; MsgLifeTime {} s; {} bytes of text); of the rest: 20 % `im_add_tag`, 10 % `im_remove_tag`, 15 % `im_set_attr`, 20 % `im_get_tag`, 15 % `im_get_attr` (1-10 accounts each, reads checked against acknowledged writes), 10 % `account_check` (1-10), 10 % `query_online_status` (1-20) |", a.push_interval_ms, a.push_lifetime, a.text_bytes);
    let _ = writeln!(
        md,
        "| Hostile | {} connections in 1 process, reopened 0.1-5 s after the server ends them: {} |",
        a.hostile,
        KINDS.iter().zip(&counts).map(|(k, n)| format!("{n} {}", k.name())).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(md, "| Hostile payloads | slowloris: a request byte every {} ms; stalled bodies: `Content-Length: 1048576`, {} bytes sent then nothing (forged UserSig / valid admin UserSig); idle: nothing; non-readers: log in, then a ping every {} s, never read (4 KiB receive buffer){} |", a.slowloris_interval_ms, a.stall_bytes, a.probe_secs, if a.nonreader_relogin_secs > 0 { format!(", leave and log in again every {} s", a.nonreader_relogin_secs) } else { String::new() });
    let _ = writeln!(
        md,
        "| Sampling | server VmRSS and utime+stime from `/proc` every second; open descriptors |"
    );
    let _ = writeln!(md, "| Phases | server start {}; accounts set up {}; hostile connections opened {}; honest logins {}; load {:.0} s |\n", secs(o.startup), secs(o.setup), secs(o.hostile_setup), secs(o.logins), o.load_seconds);

    // Honest errors.
    let _ = writeln!(md, "#### Honest-client errors\n");
    if honest_session_errors + honest_rest_errors == 0 && o.rest.read_mismatches == 0 {
        let _ = writeln!(md, "None.\n");
    } else {
        let _ = writeln!(
            md,
            "| Where | Kind | Count | First detail |\n| --- | --- | ---: | --- |"
        );
        for (kind, n) in &o.sessions.errors {
            let _ = writeln!(md, "| session | {kind} | {n} | |");
        }
        for (kind, (n, detail)) in &o.rest.errors {
            let mut detail = detail.clone();
            detail.truncate(160);
            let _ = writeln!(
                md,
                "| REST | {kind} | {n} | {} |",
                detail.replace('|', "\\|")
            );
        }
        if o.rest.read_mismatches > 0 {
            let _ = writeln!(
                md,
                "| REST | read disagreeing with acknowledged writes | {} | {} |",
                o.rest.read_mismatches,
                o.rest
                    .mismatch_example
                    .clone()
                    .unwrap_or_default()
                    .replace('|', "\\|")
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "Pushes refused for the 1 s interval (90024, counted apart): {}. REST calls started over a second late (the client could not keep pace): {}.\n", o.pushes.refused_interval, o.rest.late_calls);

    // Latency.
    let _ = writeln!(md, "#### Honest REST latency (ms)\n");
    let _ = writeln!(md, "| Command | Calls | Rate /s | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let load_s = o.load_seconds.max(1e-9);
    for command in COMMANDS {
        let Some(latencies) = o.rest.latencies_us.get(command) else {
            continue;
        };
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let _ = writeln!(
            md,
            "| `{command}` | {} | {:.1} | {} | {} | {} | {} |",
            sorted.len(),
            sorted.len() as f64 / load_s,
            ms_us(percentile(&sorted, 0.5)),
            ms_us(percentile(&sorted, 0.9)),
            ms_us(percentile(&sorted, 0.99)),
            ms_us(percentile(&sorted, 1.0))
        );
    }
    let _ = writeln!(
        md,
        "| all | {} | {:.1} | {} | {} | {} | {} |\n",
        all.len(),
        all.len() as f64 / load_s,
        ms_us(percentile(&all, 0.5)),
        ms_us(percentile(&all, 0.9)),
        ms_us(percentile(&all, 0.99)),
        ms_us(percentile(&all, 1.0))
    );

    // Pushes.
    let s = &o.sessions;
    let accepted = o.pushes.accepted.len() as u64;
    let _ = writeln!(md, "#### Pushes received by the honest sessions\n");
    let _ = writeln!(
        md,
        "{accepted} pushes accepted ({} with a transport failure, fate unknown). {} of {} sessions logged in at the start, {} at some point; {} later logins after a lost session. Expected {} receipts ({} sessions × {accepted}); {} sessions got every push, {} receipts missing, {} duplicates, {} of pushes whose answer was lost. {} frames received in all.\n",
        o.pushes.uncertain.len(),
        s.ready,
        a.sessions,
        s.logged,
        s.reconnects,
        s.logged * accepted,
        s.logged,
        s.complete,
        s.missing,
        s.duplicates,
        s.extra,
        s.received
    );

    // Hostile.
    let _ = writeln!(md, "#### Hostile connections\n");
    if o.hostile.is_empty() {
        let _ = writeln!(md, "None.\n");
    } else {
        let _ = writeln!(md, "Ended = the server answered or closed the connection (time from connect); open = still held when the load stopped.\n");
        let _ = writeln!(md, "| Kind | Held | Opened | Refused at connect | Ended by the server | Time to end: min / p50 / p90 / max | Open at the end (oldest) |\n| --- | ---: | ---: | ---: | ---: | --- | --- |");
        for k in &o.hostile {
            let ended = if k.ended == 0 {
                "never".to_owned()
            } else {
                k.ended_ms
                    .iter()
                    .map(|ms| ms_as_s(*ms))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let open = if k.open_at_end == 0 {
                "0".to_owned()
            } else {
                format!("{} ({})", k.open_at_end, ms_as_s(k.open_age_ms[1]))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {ended} | {open} |",
                k.name, k.target, k.connects, k.connect_failures, k.ended
            );
        }
        let _ = writeln!(
            md,
            "\nHow they ended:\n\n| Kind | How | Count |\n| --- | --- | ---: |"
        );
        for k in &o.hostile {
            for (n, why) in &k.why {
                let _ = writeln!(md, "| {} | {} | {n} |", k.name, why.replace('|', "\\|"));
            }
        }
        let _ = writeln!(
            md,
            "\nHostile bytes sent: {:.1} MiB.\n",
            o.hostile_bytes as f64 / 1024.0 / 1024.0
        );
    }

    // Server.
    let _ = writeln!(md, "#### Server memory and CPU\n");
    let in_load: Vec<u64> = {
        let mut v: Vec<u64> = o
            .samples
            .iter()
            .filter(|s| s.t >= o.load_window.0 && s.t <= o.load_window.1)
            .map(|s| s.rss_kb)
            .collect();
        v.sort_unstable();
        v
    };
    let first_in_load = o
        .samples
        .iter()
        .find(|s| s.t >= o.load_window.0)
        .map(|s| s.rss_kb);
    let last_in_load = o
        .samples
        .iter()
        .rev()
        .find(|s| s.t <= o.load_window.1)
        .map(|s| s.rss_kb);
    let fds_max = o.samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let _ = writeln!(md, "| | min | median | max |\n| --- | ---: | ---: | ---: |");
    let _ = writeln!(
        md,
        "| RSS, whole run ({} samples) | {} | {} | {} |",
        rss.len(),
        mib(percentile(&rss, 0.0)),
        mib(percentile(&rss, 0.5)),
        mib(percentile(&rss, 1.0))
    );
    let _ = writeln!(
        md,
        "| RSS, during the load | {} | {} | {} |\n",
        mib(percentile(&in_load, 0.0)),
        mib(percentile(&in_load, 0.5)),
        mib(percentile(&in_load, 1.0))
    );
    let calls = o.rest.calls();
    let _ = writeln!(
        md,
        "RSS at the start of the load {}, at its end {}. Open descriptors at most {fds_max}. Server CPU during the load: {} ({} per REST call, which includes everything else the server did meanwhile: fan-out, acks, hostile connections).\n",
        first_in_load.map_or_else(|| "n/a".into(), mib),
        last_in_load.map_or_else(|| "n/a".into(), mib),
        o.load_cpu_seconds.map_or_else(|| "n/a".into(), |c| format!("{c:.1} s ({:.0} % of one core)", c * 100.0 / load_s)),
        o.load_cpu_seconds.map_or_else(|| "n/a".into(), |c| format!("{:.2} ms", c * 1000.0 / calls.max(1) as f64)),
    );
    let tick = crate::common::ticks_per_second();
    let busiest = o
        .samples
        .windows(11)
        .map(|w| {
            (w[10].cpu_ticks.saturating_sub(w[0].cpu_ticks)) as f64
                / tick
                / (w[10].t - w[0].t).max(1e-9)
                * 100.0
        })
        .fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "Busiest 10 s of the server: {busiest:.0} % of one core.\n"
    );
    let complaints: Vec<String> = o
        .log_tally
        .iter()
        .filter(|((level, _), _)| level == "WARN" || level == "ERROR")
        .map(|((level, message), n)| format!("{n} × {level} \"{message}\""))
        .collect();
    let _ = writeln!(
        md,
        "Server log (warnings and errors): {}.\n",
        if complaints.is_empty() {
            "none".to_owned()
        } else {
            complaints.join("; ")
        }
    );

    // Durability.
    let _ = writeln!(md, "#### After `kill -9` and restart\n");
    match &o.durability {
        Some(d) => {
            let _ = writeln!(
                md,
                "Restarted in {} (RSS {}); checked in {}. Accounts checked: {} ({} left out: a write to them failed in transport).\n\n| Acknowledged | Expected | Missing | Unexpected |\n| --- | ---: | ---: | ---: |\n| tags | {} | {} | {} |\n| attribute values | {} | {} | {} |\n| TaskIds (`v4/crier/task_report`) | {} | {} | |\n",
                o.restart_startup.map_or_else(|| "n/a".into(), secs),
                o.restart_rss_kb.map_or_else(|| "n/a".into(), mib),
                secs(d.elapsed),
                d.accounts_checked,
                d.accounts_uncertain,
                d.tags_expected, d.tags_missing, d.tags_unexpected,
                d.attrs_expected, d.attrs_missing, d.attrs_unexpected,
                d.tasks_checked, d.tasks_missing,
            );
            for example in &d.examples {
                let _ = writeln!(md, "- {example}");
            }
            if !d.check_errors.is_empty() {
                let _ = writeln!(md, "\n**The check itself failed {} times** (its counts are incomplete); first: {}\n", d.check_errors.len(), d.check_errors[0]);
            }
            let _ = writeln!(
                md,
                "SIGTERM of the restarted server: {}.\n",
                match o.terminate {
                    Some(Some(took)) => format!("stopped in {}", secs(took)),
                    Some(None) => "**did not stop within 60 s** (killed)".into(),
                    None => "n/a".into(),
                }
            );
            let restart_complaints: Vec<String> = o
                .restart_log_tally
                .iter()
                .filter(|((level, _), _)| level == "WARN" || level == "ERROR")
                .map(|((level, message), n)| format!("{n} × {level} \"{message}\""))
                .collect();
            if !restart_complaints.is_empty() {
                let _ = writeln!(
                    md,
                    "Restarted server's log: {}.\n",
                    restart_complaints.join("; ")
                );
            }
        }
        None => {
            let _ = writeln!(md, "**The server did not restart**; nothing was checked.\n");
        }
    }

    // Plot.
    if let Some((svg, png)) = &o.plot {
        let shown = png.as_ref().map_or(svg, |(png, _)| png);
        let name = shown.file_name().map_or_else(
            || shown.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let _ = writeln!(md, "![server RSS over the run]({name})\n");
        let _ = writeln!(
            md,
            "RSS over time: `{}`{}; phases marked: {}.\n",
            svg.display(),
            png.as_ref().map_or(String::new(), |(png, by)| format!(
                ", rendered to `{}` by {by}",
                png.display()
            )),
            o.marks
                .iter()
                .map(|(t, label)| format!("{label} at {t:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(dir) = &o.work_dir {
        let _ = writeln!(md, "Work directory (config, data, server logs, journal of acknowledged writes `writes.jsonl`): `{}`.", dir.display());
    }
    md
}
