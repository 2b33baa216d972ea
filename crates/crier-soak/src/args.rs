//! The soak's command line.

use std::path::PathBuf;

use crate::hostile::KINDS;

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Honest WebSocket sessions (one account each), logged in for the whole run.
    #[arg(long, default_value_t = 15_000)]
    pub sessions: usize,
    /// Honest REST calls per second (pushes included).
    #[arg(long, default_value_t = 500.0)]
    pub rps: f64,
    /// Seconds of REST load.
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Hostile connections, held (and reopened when the server ends them) for the whole run.
    #[arg(long, default_value_t = 2_000)]
    pub hostile: usize,
    /// Weights of the hostile kinds: slowloris, stalled-body, stalled-body-admin, idle,
    /// ws-nonreader.
    #[arg(long, value_delimiter = ',', default_value = "1,1,1,1,1")]
    pub hostile_mix: Vec<u32>,
    /// Honest sessions per session process at most (a process may hold 20,000 files).
    #[arg(long, default_value_t = 5_000)]
    pub per_proc: usize,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... the honest sockets are spread over (the
    /// hostile ones use 127.0.1.x).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Logins in progress at once, per session process.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Keep-alive HTTP/1.1 clients sharing the REST load (each owns a share of the accounts).
    #[arg(long, default_value_t = 16)]
    pub rest_clients: usize,
    /// The pause between two pushes, from the previous push's answer (the server refuses
    /// pushes closer than its min_push_interval_ms, 1000).
    #[arg(long, default_value_t = 1000)]
    pub push_interval_ms: u64,
    /// MsgLifeTime of the pushes: kept, so accounts not connected get them on login.
    #[arg(long, default_value_t = 86_400)]
    pub push_lifetime: u64,
    /// Length of each push's text.
    #[arg(long, default_value_t = 256)]
    pub text_bytes: usize,
    /// Seconds between an honest session's pings.
    #[arg(long, default_value_t = 30)]
    pub ping_secs: u64,
    /// Milliseconds between two bytes of a slowloris request.
    #[arg(long, default_value_t = 5_000)]
    pub slowloris_interval_ms: u64,
    /// Body bytes a stalled request sends (of the 1 MiB it announces) before it stalls.
    #[arg(long, default_value_t = 65_536)]
    pub stall_bytes: usize,
    /// Seconds between the probes a non-reading session writes to notice it was closed.
    #[arg(long, default_value_t = 2)]
    pub probe_secs: u64,
    /// Seconds after which a non-reading session leaves and logs in again, to be sent its
    /// whole backlog of unacknowledged pushes once more (0: it stays until the server closes it).
    #[arg(long, default_value_t = 0)]
    pub nonreader_relogin_secs: u64,
    /// Seconds between the end of the load and the sessions' count of pushes received.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
    /// The `crier` binary (default: next to this one, i.e. target/release/crier).
    #[arg(long)]
    pub crier_bin: Option<PathBuf>,
    /// TOML lines put at the top of the server's config file (server-wide settings).
    #[arg(long, default_value = "")]
    pub extra_config: String,
    /// Where the config, data, server logs and write journal go (default: a temporary
    /// directory, removed at the end unless --keep).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[arg(long)]
    pub keep: bool,
    /// Also write the markdown report here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// The RSS-over-time plot (SVG; a PNG beside it if a renderer is installed).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl SoakArgs {
    /// Hostile connections of each kind, in `KINDS` order.
    pub fn hostile_counts(&self) -> Vec<usize> {
        let weights: Vec<u64> = (0..KINDS.len())
            .map(|k| u64::from(self.hostile_mix.get(k).copied().unwrap_or(0)))
            .collect();
        let total: u64 = weights.iter().sum::<u64>().max(1);
        let mut counts: Vec<usize> = weights
            .iter()
            .map(|w| (self.hostile as u64 * w / total) as usize)
            .collect();
        // The rounding remainder goes to the kinds with a weight, first ones first.
        let mut left = self.hostile - counts.iter().sum::<usize>();
        for (k, w) in weights.iter().enumerate().cycle().take(KINDS.len() * 2) {
            if left == 0 {
                break;
            }
            if *w > 0 {
                counts[k] += 1;
                left -= 1;
            }
        }
        counts
    }

    pub fn session_procs(&self) -> usize {
        self.sessions.div_ceil(self.per_proc.max(1))
    }
}
