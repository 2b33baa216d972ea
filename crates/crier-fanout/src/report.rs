//! The markdown report of a fan-out run: the machine and peers, a table per N, memory per
//! session, the login catch-up, and verdicts against the targets.

use std::fmt::Write as _;

use crate::coord::{BenchArgs, CatchUp, Outcome};
use crate::loadgen::{NatsClient, System};

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_gb = proc_status_meminfo_kb().map_or(0.0, |kb| kb as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gb:.0} GB RAM, Linux {}",
        kernel.trim()
    )
}

fn proc_status_meminfo_kb() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The first line a command prints (stdout or stderr), e.g. a version banner.
fn first_line(program: &std::path::Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown version".into())
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown date".into(), |d| d.trim().to_owned())
}

fn kb_per_session(bytes: Option<f64>) -> String {
    bytes.map_or_else(|| "n/a".into(), |b| format!("{:.1} KB", b / 1024.0))
}

pub fn report(
    args: &BenchArgs,
    outcomes: &[Outcome],
    catch_up: Option<&CatchUp>,
    nofile: Option<(u64, u64)>,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}. Date: {}.", machine(), today());
    let _ = writeln!(
        md,
        "Peers: {} ({}), {} ({}); NATS subscribers use the {} client.",
        first_line(&args.mosquitto_bin, "-h"),
        if args.spawn_peers {
            "a fresh process per N".to_owned()
        } else {
            format!("the service at {}", args.mosquitto)
        },
        first_line(&args.nats_bin, "--version"),
        if args.spawn_peers {
            "a fresh process per N".to_owned()
        } else {
            format!("the service at {}", args.nats)
        },
        match args.nats_client {
            NatsClient::Raw => "raw-protocol",
            NatsClient::AsyncNats => "async-nats",
        }
    );
    if let Some((soft, hard)) = nofile {
        let _ = writeln!(
            md,
            "RLIMIT_NOFILE of this process: soft {soft}, hard {hard} (every process here has the same)."
        );
    }
    let _ = writeln!(
        md,
        "{} load-generator processes, client sockets spread over {} source addresses (127.0.0.2-127.0.0.{}), one tokio task per socket; {} measured rounds per N and system after one warm-up round; frame sizes: {}.\n",
        args.procs,
        args.sources,
        1 + args.sources,
        args.rounds,
        args.systems
            .iter()
            .filter_map(|s| outcomes.iter().find(|o| o.system == *s).map(|o| format!("{} {} B", s.name(), o.frame_bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Times are medians over the rounds, from just before the publish. \"publish answered\": Crier's `im_push` reply (the push stored durably, the fan-out already under way), or the peer's publish written and flushed.\n"
    );
    for &n in &args.sizes {
        let _ = writeln!(md, "### N = {n}\n");
        let _ = writeln!(
            md,
            "| system | publish answered (ms) | p50 (ms) | p99 (ms) | last (ms) | worst round's last (ms) | received / subscribed (worst round) | server CPU per push (ms) | load generators' CPU per push (ms) | other processes' load | time to connect all (s) |"
        );
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for o in outcomes.iter().filter(|o| o.n == n) {
            let expected = o.rounds.first().map_or(o.connected, |r| r.expected);
            let failed = if o.failed > 0 {
                format!(" ({} failed to connect)", o.failed)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {}{failed} | {} | {:.0} | {} | {:.1} |",
                o.system.name(),
                o.answered(),
                o.p50(),
                o.p99(),
                o.last(),
                o.worst_last(),
                o.min_delivered(),
                expected,
                o.cpu.server_ms.map_or_else(|| "n/a".into(), |v| format!("{v:.0}")),
                o.cpu.clients_ms,
                o.cpu.others_pct.map_or_else(|| "n/a".into(), |v| format!("{v:.0} %")),
                o.setup_s,
            );
        }
        md.push('\n');
    }
    let _ = writeln!(md, "### Memory per idle session\n");
    let _ = writeln!(
        md,
        "VmRSS of the server process before and after the N clients logged in (Crier) or subscribed (Mosquitto, NATS), divided by N. Crier runs as a fresh process for each N; {}.\n",
        if args.spawn_peers {
            "so do Mosquitto and NATS (--spawn-peers)"
        } else {
            "Mosquitto and NATS are the long-running services, which keep memory freed by earlier clients and reuse it, so their figures can read low (even 0)"
        }
    );
    let _ = writeln!(
        md,
        "| N | Crier | Mosquitto | NATS | Crier server fds at N |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: |");
    for &n in &args.sizes {
        let find = |s: System| outcomes.iter().find(|o| o.n == n && o.system == s);
        let cell = |s: System| kb_per_session(find(s).and_then(Outcome::bytes_per_session));
        let fds = find(System::Crier)
            .and_then(|o| o.fds)
            .map_or_else(|| "n/a".into(), |f| f.to_string());
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {fds} |",
            cell(System::Crier),
            cell(System::Mosquitto),
            cell(System::Nats)
        );
    }
    md.push('\n');
    if let Some(c) = catch_up {
        let _ = writeln!(md, "### Login catch-up\n");
        let _ = writeln!(
            md,
            "One account with {} kept, unacknowledged pushes (MsgLifeTime 7 days, to a tag only it holds; storing them took {:.1} s). Median of {} logins: {:.1} ms from opening the TCP connection (so including the WebSocket upgrade, the Login and the LoginOK) to the {}th Push received and parsed by crier-client (worst {:.1} ms); {:.1} ms from LoginOK to the last Push.\n",
            c.pushes, c.pushing_s, c.logins, c.total_ms, c.pushes, c.worst_total_ms, c.after_login_ok_ms
        );
    }
    let _ = writeln!(md, "### Verdicts\n");
    for &n in &args.sizes {
        let find = |s: System| outcomes.iter().find(|o| o.n == n && o.system == s);
        let Some(crier) = find(System::Crier) else {
            continue;
        };
        let fastest_peer = [System::Mosquitto, System::Nats]
            .into_iter()
            .filter_map(find)
            .min_by(|a, b| a.last().total_cmp(&b.last()));
        let complete = crier.min_delivered() == crier.connected && crier.failed == 0;
        let mut line = format!("- N = {n}: Crier's last client at {:.1} ms", crier.last());
        if let Some(peer) = fastest_peer {
            let _ = write!(
                line,
                ", the faster peer ({}) at {:.1} ms: {}",
                peer.system.name(),
                peer.last(),
                if crier.last() <= peer.last() {
                    "no slower, target met"
                } else {
                    "slower, target missed"
                }
            );
        }
        if n >= 19_000 {
            let _ = write!(
                line,
                "; ≤ 200 ms to {n}: {}",
                if crier.last() <= 200.0 {
                    "met"
                } else {
                    "missed"
                }
            );
        }
        if !complete {
            line.push_str("; NOT every client received every round");
        }
        let _ = writeln!(md, "{line}.");
    }
    for o in outcomes.iter().filter(|o| o.system == System::Crier) {
        if let Some(b) = o.bytes_per_session() {
            let _ = writeln!(
                md,
                "- Memory per idle Crier session at N = {}: {:.1} KB (target ≤ 10 KB): {}.",
                o.n,
                b / 1024.0,
                if b <= 10.0 * 1024.0 { "met" } else { "missed" }
            );
        }
    }
    if let Some(c) = catch_up {
        let _ = writeln!(
            md,
            "- Login catch-up of {} pushes: {:.1} ms (target ≤ 50 ms): {}.",
            c.pushes,
            c.total_ms,
            if c.total_ms <= 50.0 { "met" } else { "missed" }
        );
    }
    md
}

fn list<T>(items: impl IntoIterator<Item = T>, show: impl Fn(T) -> String) -> String {
    items.into_iter().map(show).collect::<Vec<_>>().join(" / ")
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

/// The report of `--cluster K`: how each system was deployed, a table per N with the spread
/// of clients and each server's last client, and verdicts against issue 13's target.
pub fn cluster_report(
    args: &BenchArgs,
    outcomes: &[Outcome],
    nofile: Option<(u64, u64)>,
) -> String {
    let k = args.cluster;
    let mut md = String::new();
    let _ = writeln!(md, "Machine: {}. Date: {}.", machine(), today());
    let _ = writeln!(
        md,
        "Peers: {}, {}; NATS subscribers use the {} client.",
        first_line(&args.mosquitto_bin, "-h"),
        first_line(&args.nats_bin, "--version"),
        match args.nats_client {
            NatsClient::Raw => "raw-protocol",
            NatsClient::AsyncNats => "async-nats",
        }
    );
    if let Some((soft, hard)) = nofile {
        let _ = writeln!(
            md,
            "RLIMIT_NOFILE of this process: soft {soft}, hard {hard} (every process here has the same)."
        );
    }
    let _ = writeln!(
        md,
        "\nEach system runs as {k} servers, started fresh for each N:\n"
    );
    let _ = writeln!(
        md,
        "- Crier: {k} `crier serve` nodes on one PostgreSQL database created for the run on {} (dropped after), announcing on the NATS at {} under a subject prefix of the run's own; the `im_push` to all goes to node 1.",
        args.postgres, args.crier_bus
    );
    let _ = writeln!(
        md,
        "- NATS: {k} `nats-server` processes on free ports, each with `--cluster` and `--routes` to the others (a full mesh); the publish goes to server 1."
    );
    let _ = writeln!(
        md,
        "- Mosquitto: {k} brokers on free ports; broker 1 has a bridge to each other broker (`topic {} both 0`, MQTT 3.1.1, `try_private`), a star; QoS 0; the publish goes to broker 1.",
        crate::common::TOPIC
    );
    let _ = writeln!(
        md,
        "- Clients: {} load-generator processes, one tokio task per socket, sockets spread over {} source addresses (127.0.0.2-127.0.0.{}); client i connects to server i mod {k}. {} measured rounds per N and system after one warm-up round; frame sizes: {}. Peer clusters carry a probe message end to end before their clients connect.\n",
        args.procs,
        args.sources,
        1 + args.sources,
        args.rounds,
        args.systems
            .iter()
            .filter_map(|s| outcomes.iter().find(|o| o.system == *s).map(|o| format!("{} {} B", s.name(), o.frame_bytes)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "Times are medians over the rounds, from just before the publish (Crier: just before the REST call). \"first-last per server\": the medians of each server's first and last client, server 1 first (where the message was published). Server CPU is the sum over the {k} server processes (for Crier, not PostgreSQL or the NATS it announces on), then each one's. Load average: the machine's 1-minute figure before the clients connected and after the rounds.\n"
    );
    for &n in &args.sizes {
        let _ = writeln!(md, "### N = {n}\n");
        let _ = writeln!(
            md,
            "| system | publish answered (ms) | p50 (ms) | p99 (ms) | last (ms) | worst round's last (ms) | first-last per server (ms) | received / subscribed (worst round) | clients per server | server CPU per push (ms): all (each) | load generators' CPU per push (ms) | other processes' load | load average | time to connect all (s) |"
        );
        let _ = writeln!(
            md,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for o in outcomes.iter().filter(|o| o.n == n) {
            let expected = o.rounds.first().map_or(o.connected, |r| r.expected);
            let failed = if o.failed > 0 {
                format!(" ({} failed to connect)", o.failed)
            } else {
                String::new()
            };
            let servers = o.rounds.first().map_or(0, |r| r.per_server_ns.len());
            let per_server_last = list(0..servers, |j| {
                format!(
                    "{:.1}-{:.1}",
                    o.server_percentile(j, 0.0),
                    o.server_percentile(j, 1.0)
                )
            });
            let clients = list(0..servers, |j| (n - j).div_ceil(servers).to_string());
            let cpu_each = list(o.cpu.server_each_ms.iter(), |v| opt(*v, 0));
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {per_server_last} | {} / {}{failed} | {clients} | {} ({cpu_each}) | {:.0} | {} | {} → {} | {:.1} |",
                o.system.name(),
                o.answered(),
                o.p50(),
                o.p99(),
                o.last(),
                o.worst_last(),
                o.min_delivered(),
                expected,
                opt(o.cpu.server_ms, 0),
                o.cpu.clients_ms,
                o.cpu.others_pct.map_or_else(|| "n/a".into(), |v| format!("{v:.0} %")),
                opt(o.load_before, 2),
                opt(o.load_after, 2),
                o.setup_s,
            );
        }
        md.push('\n');
        let fds = outcomes
            .iter()
            .filter(|o| o.n == n)
            .map(|o| {
                format!(
                    "{} {}",
                    o.system.name(),
                    list(o.fds_each.iter(), |f| f
                        .map_or_else(|| "n/a".into(), |f| f.to_string()))
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            md,
            "Open descriptors per server process with the clients in: {fds}.\n"
        );
        let rss = outcomes
            .iter()
            .filter(|o| o.n == n)
            .map(|o| {
                format!(
                    "{} {}",
                    o.system.name(),
                    kb_per_session(o.bytes_per_session())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(md, "Memory per idle session (VmRSS of all {k} servers, after minus before the clients, divided by N): {rss}.\n");
    }
    let _ = writeln!(md, "### Verdicts\n");
    for &n in &args.sizes {
        let find = |s: System| outcomes.iter().find(|o| o.n == n && o.system == s);
        let Some(crier) = find(System::Crier) else {
            continue;
        };
        let mut line = format!(
            "- N = {n}: Crier's last client at {:.1} ms (target ≤ 500 ms: {})",
            crier.last(),
            if crier.last() <= 500.0 {
                "met"
            } else {
                "missed"
            }
        );
        for peer in [System::Nats, System::Mosquitto]
            .into_iter()
            .filter_map(find)
        {
            let _ = write!(
                line,
                "; {} at {:.1} ms: Crier {}",
                peer.system.name(),
                peer.last(),
                if crier.last() < peer.last() {
                    "faster"
                } else {
                    "slower"
                }
            );
        }
        if crier.min_delivered() != crier.connected || crier.failed > 0 {
            line.push_str("; NOT every client received every round");
        }
        let _ = writeln!(md, "{line}.");
    }
    md
}
