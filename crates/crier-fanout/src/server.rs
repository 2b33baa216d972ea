//! The real `crier serve`, as a child process on a fresh config: one app, no minimum interval
//! between pushes and a daily quota the benchmark cannot reach.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crier_client::Admin;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::common::{ADMIN, APP};

pub const KEY: &str = "crier-fanout-benchmark-secret-key-0123456789";

/// What makes a `crier serve` one node of a cluster.
pub struct ClusterNode<'a> {
    pub name: String,
    /// `postgres://...` of the shared database.
    pub store: &'a str,
    /// `nats://...` of the NATS server the nodes announce on.
    pub bus: &'a str,
    pub subject_prefix: &'a str,
}

pub struct CrierServer {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin: Admin,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server binary next to this one (both are built into the same target directory).
pub fn default_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("crier"))
}

impl CrierServer {
    /// Starts `crier serve` with its data in `dir/data`; answers once it accepts connections.
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<CrierServer> {
        CrierServer::start_node(binary, dir, None).await
    }

    /// Starts `crier serve`, alone (`node` is `None`: data in `dir/data`, log in
    /// `dir/server.log`) or as one node of a cluster (data in `dir/data-NAME`, log in
    /// `dir/server-NAME.log`); answers once it accepts connections, which a node does only
    /// once it has loaded the directory from the store.
    pub async fn start_node(
        binary: &Path,
        dir: &Path,
        node: Option<&ClusterNode<'_>>,
    ) -> anyhow::Result<CrierServer> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let suffix = node.map_or_else(String::new, |node| format!("-{}", node.name));
        let config = dir.join(format!("crier{suffix}.toml"));
        let cluster_keys = node.map_or_else(String::new, |node| {
            format!(
                "store = \"{}\"\nbus = \"{}\"\nnode_id = \"{}\"\nbus_subject_prefix = \"{}\"\n",
                node.store, node.bus, node.name, node.subject_prefix
            )
        });
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\ndata_dir = \"{data}\"\n{cluster_keys}\n[[app]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\npush_enabled = true\ndaily_push_quota = 1000000000\nmin_push_interval_ms = 0\n",
                data = dir.join(format!("data{suffix}")).display(),
            ),
        )?;
        let log_path = dir.join(format!("server{suffix}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("CRIER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().context("the server has no pid")?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited with {status}; see {}",
                    log_path.display()
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the server did not listen on {addr} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(CrierServer {
            child,
            pid,
            addr,
            admin: Admin::new(&format!("http://{addr}"), APP, KEY, ADMIN),
        })
    }

    /// Calls the REST API; fails unless the answer is OK.
    pub async fn call(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<serde_json::Map<String, Value>> {
        let envelope = self.admin.call(path, body).await?;
        if !envelope.is_ok() {
            bail!("{path}: {} {}", envelope.error_code, envelope.error_info);
        }
        Ok(envelope.rest)
    }

    /// Imports `accounts`, 100 per call as Tencent allows.
    pub async fn import(&self, accounts: &[String]) -> anyhow::Result<()> {
        for chunk in accounts.chunks(100) {
            self.call(
                "im_open_login_svc/multiaccount_import",
                &json!({ "Accounts": chunk }),
            )
            .await?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the clean stop (SIGKILL after 60 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("the server did not stop within 60 s of SIGTERM; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// A fresh Mosquitto or NATS server on a free loopback port, for a clean memory baseline
/// (the long-running services keep memory freed by earlier runs and reuse it).
pub struct PeerServer {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
}

impl PeerServer {
    pub async fn start_mosquitto(binary: &Path, dir: &Path) -> anyhow::Result<PeerServer> {
        let port = free_port()?;
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"),
        )?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config);
        PeerServer::start(command, port).await
    }

    pub async fn start_nats(binary: &Path) -> anyhow::Result<PeerServer> {
        let port = free_port()?;
        let mut command = Command::new(binary);
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        PeerServer::start(command, port).await
    }

    pub async fn start(mut command: Command, port: u16) -> anyhow::Result<PeerServer> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let pid = child.id().context("the peer has no pid")?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("{command:?} exited with {status}");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("{command:?} did not listen on {addr} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(PeerServer { child, pid, addr })
    }

    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
