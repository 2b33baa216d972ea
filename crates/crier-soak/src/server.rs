//! The real `crier serve` as a child process: one app, listening on `127.0.0.1:0`; its address
//! comes from the JSON log line `"message":"listening"`. Its log goes to a file, and each
//! (level, message) pair is counted, so the report can say what the server complained about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::common::{ADMIN, APP, KEY};

/// How many log lines of each (level, message) the server wrote.
pub type LogTally = Arc<Mutex<BTreeMap<(String, String), u64>>>;

pub struct CrierServer {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub log_tally: LogTally,
    /// From spawn to the `listening` line.
    pub startup: Duration,
}

/// The config file: one app whose quota allows every push of the run, Tencent's 1 s interval,
/// and whatever top-level settings the caller adds (limits of a hardened server, say).
pub fn write_config(dir: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("crier.toml");
    std::fs::write(
        &path,
        format!(
            "{extra}\n\n[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\npush_enabled = true\ndaily_push_quota = 100000\nmin_push_interval_ms = 1000\n"
        ),
    )?;
    Ok(path)
}

impl CrierServer {
    /// Starts `binary serve` on `config` and `data_dir`, appending its log to `log_file`;
    /// answers once it has logged the address it listens on.
    pub async fn start(
        binary: &Path,
        config: &Path,
        data_dir: &Path,
        log_file: &Path,
    ) -> anyhow::Result<CrierServer> {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("CRIER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the server has no pid")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
            .await?;
        let log_tally = LogTally::default();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let tally = Arc::clone(&log_tally);
        // Drains the log for the server's whole life: a full pipe would block its logging.
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let message = event["message"].as_str().unwrap_or(&line).to_owned();
                if message == "listening" {
                    if let (Some(tx), Some(addr)) = (addr_tx.take(), event["addr"].as_str()) {
                        let _ = tx.send(addr.to_owned());
                    }
                }
                let level = event["level"].as_str().unwrap_or("-").to_owned();
                if let Ok(mut tally) = tally.lock() {
                    *tally.entry((level, message)).or_default() += 1;
                }
            }
            let _ = log.flush().await;
        });
        let addr = match tokio::time::timeout(Duration::from_secs(300), addr_rx).await {
            Ok(Ok(addr)) => addr.parse().context("the listening address")?,
            Ok(Err(_)) => {
                let status = child.wait().await?;
                bail!(
                    "the server exited ({status}) before listening; see {}",
                    log_file.display()
                )
            }
            Err(_) => bail!("the server did not listen within 300 s"),
        };
        Ok(CrierServer {
            child,
            pid,
            addr,
            log_tally,
            startup: started.elapsed(),
        })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `Some(status)` if the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, as a crash would; answers the status if it had exited before.
    pub async fn kill_9(mut self) -> Option<std::process::ExitStatus> {
        let before = self.exited();
        let _ = self.child.kill().await;
        before
    }

    /// SIGTERM, then the time it took to exit (SIGKILL and `None` after `limit`).
    pub async fn terminate(mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(_) => Some(started.elapsed()),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}
