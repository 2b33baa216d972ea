//! What the coordinator and its child processes share: the app, account names, the clock,
//! percentiles and `/proc` readings.

use std::time::{SystemTime, UNIX_EPOCH};

/// The sdkappid of the soak's Crier app.
pub const APP: u64 = 1_400_000_888;
pub const ADMIN: &str = "administrator";
pub const KEY: &str = "crier-soak-benchmark-secret-key-0123456789abcdef";
/// The tag every account holds from the set-up on and no REST write touches: pushes aim at it,
/// so their audience is every account whatever the tag writes do.
pub const BASE_TAG: &str = "soak-base";

/// Identifier of honest session `i`.
pub fn honest_user(i: usize) -> String {
    format!("soak{i:05}")
}

/// Identifier of the hostile non-reading session `i`.
pub fn hostile_user(i: usize) -> String {
    format!("hostile{i:05}")
}

/// Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Nearest-rank percentile of sorted values (`p` in 0..=1); 0 when there are none.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
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

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Writes one line on stdout at once: the coordinator reads children line by line, and lines
/// from several tasks must not interleave.
pub fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}
