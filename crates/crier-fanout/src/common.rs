//! What the coordinator and the load generators share: the clock, the message, the line
//! protocol on the children's stdin/stdout, and /proc readings.

use std::time::{SystemTime, UNIX_EPOCH};

use crier_proto::protocol::{PushFrame, ServerFrame};
use serde_json::value::RawValue;

/// `CLOCK_REALTIME` in nanoseconds: one clock for every process on the machine, so a receipt
/// time taken in a load generator minus a send time taken in the coordinator is a latency.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The sdkappid of the benchmark's Crier app.
pub const APP: u64 = 1_400_000_777;
pub const ADMIN: &str = "administrator";
/// The MQTT topic and the NATS subject every subscriber listens on.
pub const TOPIC: &str = "crier-fanout";

/// Identifier of client `i`.
pub fn user(i: usize) -> String {
    format!("fan{i:05}")
}

/// The `MsgBody` of a benchmark push: one text element padded to `text_bytes`.
pub fn msg_body(id: u32, text_bytes: usize) -> String {
    let mut text = format!("fan-out round {id} ");
    while text.len() < text_bytes {
        text.push('x');
    }
    serde_json::json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]).to_string()
}

/// The message the peers carry: the very `Push` frame Crier would send for round `id` (same
/// fields, a TaskId of the same shape), so all three systems move the same bytes and every
/// client decodes them with the same parser.
pub fn peer_frame(id: u32, text_bytes: usize) -> String {
    let now_ms = now_ns() / 1_000_000;
    let frame = ServerFrame::Push(PushFrame {
        task_id: format!("{APP}_{now_ms}_{id}_{:010}", 1_234_567_890u32),
        from_account: ADMIN.to_owned(),
        msg_time_stamp: now_ms / 1000,
        msg_random: id,
        msg_body: RawValue::from_string(msg_body(id, text_bytes)).expect("the body is JSON"),
        offline_push_info: None,
        offline: false,
    });
    serde_json::to_string(&frame).expect("frames serialize")
}

/// The round a received message belongs to, read the same way on every system.
pub fn round_of(text: &str) -> Option<u32> {
    match ServerFrame::parse(text).ok()? {
        ServerFrame::Push(push) => Some(push.msg_random),
        _ => None,
    }
}

/// Lines a load generator writes on stdout.
#[derive(Debug)]
pub enum ChildLine {
    /// All its clients tried to connect: how many are logged in/subscribed, how many failed.
    Ready { ok: usize, failed: usize },
    /// Receipt times (ns) of round `id`, each with the target its client is connected to, and
    /// how many of its clients have lost their connection.
    Got {
        id: u32,
        lost: usize,
        times: Vec<(u64, usize)>,
    },
    /// Anything else: shown as is.
    Other(String),
}

impl ChildLine {
    pub fn parse(line: &str) -> ChildLine {
        let mut words = line.split_ascii_whitespace();
        let parsed = match words.next() {
            Some("READY") => (|| {
                Some(ChildLine::Ready {
                    ok: words.next()?.parse().ok()?,
                    failed: words.next()?.parse().ok()?,
                })
            })(),
            Some("GOT") => (|| {
                let id = words.next()?.parse().ok()?;
                let lost = words.next()?.parse().ok()?;
                // `t`, or `k:t` for a client of the k-th target.
                let times = words
                    .map(|w| match w.split_once(':') {
                        Some((target, t)) => Some((t.parse().ok()?, target.parse().ok()?)),
                        None => Some((w.parse().ok()?, 0)),
                    })
                    .collect::<Option<Vec<(u64, usize)>>>()?;
                Some(ChildLine::Got { id, lost, times })
            })(),
            _ => None,
        };
        parsed.unwrap_or_else(|| ChildLine::Other(line.to_owned()))
    }
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Soft and hard `RLIMIT_NOFILE` of a process, from `/proc/PID/limits` ("self" for this one).
pub fn open_files_limit(pid: &str) -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|w| w.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// How many file descriptors a process holds now.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The PID of the running process whose `comm` is `name`, if exactly one.
pub fn pid_of(name: &str) -> Option<u32> {
    let mut found = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        });
    let pid = found.next()?;
    found.next().is_none().then_some(pid)
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is the first of them,
    // utime and stime the 12th and 13th.
    let mut fields = stat.rsplit_once(") ")?.1.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The whole machine's CPU ticks: (busy, total), from the first line of `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let numbers: Vec<u64> = stat
        .lines()
        .next()?
        .split_ascii_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let total: u64 = numbers.iter().take(8).sum();
    let idle = numbers.get(3)? + numbers.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The machine's load average over the last minute, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}
