//! Child processes of this binary (session and hostile load generators), driven by lines on
//! their stdin and stdout.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub struct ChildProc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChildProc {
    /// Runs this binary with `args`; its stderr is ours.
    pub fn spawn(name: String, args: &[String]) -> anyhow::Result<ChildProc> {
        let me = std::env::current_exe()?;
        let mut child = Command::new(me)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdout = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc {
            name,
            child,
            stdin,
            lines,
        })
    }

    /// The next line starting with `prefix` within `limit` (other lines are shown).
    pub async fn expect(&mut self, prefix: &str, limit: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.starts_with(prefix) => return Ok(line),
                Ok(Some(line)) => eprintln!("  {}: {line}", self.name),
                Ok(None) => bail!("{} ended before it said {prefix}", self.name),
                Err(_) => bail!("{} did not say {prefix} within {limit:?}", self.name),
            }
        }
    }

    /// Sends `command` and answers every line up to `END`.
    pub async fn ask(&mut self, command: &str, limit: Duration) -> anyhow::Result<Vec<String>> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(command.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        let deadline = tokio::time::Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line == "END" => return Ok(lines),
                Ok(Some(line)) => lines.push(line),
                Ok(None) => bail!("{} ended while answering", self.name),
                Err(_) => bail!("{} did not answer within {limit:?}", self.name),
            }
        }
    }

    /// Closes its stdin, so it exits; kills it if it is still there after 10 s.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
