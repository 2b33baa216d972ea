//! Timing summaries, process memory and disk usage.

use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub samples: usize,
}

impl Timing {
    pub fn of(mut samples: Vec<Duration>) -> Timing {
        if samples.is_empty() {
            return Timing::default();
        }
        samples.sort();
        Timing {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
            samples: samples.len(),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "median_s": self.median.as_secs_f64(),
            "min_s": self.min.as_secs_f64(),
            "max_s": self.max.as_secs_f64(),
            "samples": self.samples,
        })
    }

    pub fn from_json(value: &serde_json::Value) -> Timing {
        let secs = |key: &str| Duration::from_secs_f64(value[key].as_f64().unwrap_or_default());
        Timing {
            median: secs("median_s"),
            min: secs("min_s"),
            max: secs("max_s"),
            samples: value["samples"].as_u64().unwrap_or(0) as usize,
        }
    }
}

/// Runs `f` `reps` times; answers the timing and the cardinality of the last run, checking
/// every run answered the same.
pub fn measure(
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<(Timing, u64)> {
    let mut samples = Vec::with_capacity(reps);
    let mut cardinality = None;
    for _ in 0..reps.max(1) {
        let started = Instant::now();
        let n = f()?;
        samples.push(started.elapsed());
        if let Some(previous) = cardinality {
            anyhow::ensure!(
                previous == n,
                "cardinality changed between repetitions: {previous} then {n}"
            );
        }
        cardinality = Some(n);
    }
    Ok((Timing::of(samples), cardinality.unwrap_or(0)))
}

/// Percentile of sorted `samples` (0.0..=1.0).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A field of /proc/self/status in bytes (`VmRSS`, `VmHWM`).
pub fn proc_status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes allocated on disk under `path` (what `du` reports).
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|entry| disk_usage(&entry.path()))
                .sum()
        })
    } else {
        meta.blocks() * 512
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Progress to stderr with the time since start.
pub fn log(started: Instant, message: impl AsRef<str>) {
    eprintln!(
        "[{:>8.1}s] {}",
        started.elapsed().as_secs_f64(),
        message.as_ref()
    );
}

/// CPU time used on the machine by processes other than this one, to tell whether a
/// measurement shared the two cores with something else (a compiler, say).
pub struct CpuWatch {
    started: std::time::Instant,
    total_busy: u64,
    own: u64,
}

/// Busy ticks of all CPUs since boot (user + nice + system + irq + softirq + steal).
fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum()
}

/// utime + stime of this process (all threads), in ticks.
fn own_ticks() -> u64 {
    process_ticks("self")
}

/// CPU seconds (user + system) process `pid` ("self" for this one) has used so far.
pub fn process_cpu_secs(pid: &str) -> f64 {
    process_ticks(pid) as f64 / 100.0
}

fn process_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0;
    };
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

impl CpuWatch {
    pub fn start() -> CpuWatch {
        CpuWatch {
            started: std::time::Instant::now(),
            total_busy: machine_busy_ticks(),
            own: own_ticks(),
        }
    }

    /// Average cores the rest of the machine kept busy since `start` (ticks are 1/100 s).
    pub fn others_cores(&self) -> f64 {
        let total = machine_busy_ticks().saturating_sub(self.total_busy);
        let own = own_ticks().saturating_sub(self.own);
        total.saturating_sub(own) as f64 / 100.0 / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}
