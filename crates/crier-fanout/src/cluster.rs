//! The clusters of `--cluster K`: a scratch PostgreSQL database for the Crier nodes, K
//! `nats-server` processes joined by routes, and K Mosquitto brokers bridged from the first.
//! A peer cluster is handed over only once a message published on its first server reaches a
//! subscriber on every other one, so the rounds never measure routes or bridges still forming.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::process::Command;

use crate::common::{now_ns, TOPIC};
use crate::loadgen::{mqtt_read, mqtt_send, mqtt_session};
use crate::server::{free_port, PeerServer};

/// How long a peer cluster may take to carry its first message end to end.
const FORMING_TIMEOUT: Duration = Duration::from_secs(30);

/// A database of its own on a PostgreSQL server, dropped (connections and all) with this value.
pub struct ScratchDatabase {
    /// `postgres://USER@HOST:PORT`, without a database.
    server: String,
    name: String,
    /// `server/name`.
    url: String,
}

impl ScratchDatabase {
    pub fn create(server: &str) -> anyhow::Result<ScratchDatabase> {
        let server = server.trim_end_matches('/').to_owned();
        let name = format!(
            "crier_fanout_{}_{}",
            std::process::id(),
            now_ns() % 1_000_000_000
        );
        psql(&server, &format!("CREATE DATABASE {name}"))?;
        let url = format!("{server}/{name}");
        Ok(ScratchDatabase { server, name, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        match psql(&self.server, &drop) {
            Ok(()) => eprintln!("dropped database {}", self.name),
            Err(e) => eprintln!("could not drop database {}: {e:#}", self.name),
        }
    }
}

/// Runs one statement with `psql` on the server's `postgres` database.
fn psql(server: &str, sql: &str) -> anyhow::Result<()> {
    let output = std::process::Command::new("psql")
        .arg(format!("{server}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .context("cannot run psql")?;
    if !output.status.success() {
        bail!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// `k` NATS servers on free ports, each with a route to every other (a full mesh, as NATS
/// clusters are), answered once a message published on the first reaches all the others.
pub async fn start_nats_cluster(binary: &Path, k: usize) -> anyhow::Result<Vec<PeerServer>> {
    let cluster_ports = (0..k)
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut servers = Vec::new();
    for (j, cluster_port) in cluster_ports.iter().enumerate() {
        let routes: Vec<String> = cluster_ports
            .iter()
            .enumerate()
            .filter(|&(other, _)| other != j)
            .map(|(_, port)| format!("nats://127.0.0.1:{port}"))
            .collect();
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["--name", &format!("fanout-{}", j + 1)])
            .args(["--cluster_name", "crier-fanout"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
            .args(["--routes", &routes.join(",")]);
        servers.push(PeerServer::start(command, port).await?);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let started = Instant::now();
    nats_carries(&addrs).await?;
    eprintln!(
        "NATS cluster of {k} ({}) carries a message end to end after {:.1} s",
        addrs_text(&addrs),
        started.elapsed().as_secs_f64()
    );
    Ok(servers)
}

/// `k` Mosquitto brokers on free ports; the first has a bridge to each of the others with the
/// topic in both directions (a star: one hop from the first to any other, as from the first
/// NATS server or Crier node). Answered once a message published on the first reaches all.
pub async fn start_mosquitto_bridged(
    binary: &Path,
    dir: &Path,
    k: usize,
) -> anyhow::Result<Vec<PeerServer>> {
    let ports = (0..k)
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let base = |port: u16| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n"
        )
    };
    let mut others = Vec::new();
    for (j, &port) in ports.iter().enumerate().skip(1) {
        let config = dir.join(format!("mosquitto-{}.conf", j + 1));
        std::fs::write(&config, base(port))?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config);
        others.push(PeerServer::start(command, port).await?);
    }
    let mut hub = base(ports[0]);
    for (j, port) in ports.iter().enumerate().skip(1) {
        hub.push_str(&format!(
            "\nconnection bridge-to-{n}\naddress 127.0.0.1:{port}\ntopic {TOPIC} both 0\nbridge_protocol_version mqttv311\ntry_private true\ncleansession true\nnotifications false\nstart_type automatic\nrestart_timeout 1\n",
            n = j + 1
        ));
    }
    let config = dir.join("mosquitto-1.conf");
    std::fs::write(&config, hub)?;
    let mut command = Command::new(binary);
    command.arg("-c").arg(&config);
    let mut servers = vec![PeerServer::start(command, ports[0]).await?];
    servers.extend(others);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let started = Instant::now();
    mqtt_carries(&addrs).await?;
    eprintln!(
        "Mosquitto brokers {} bridged from the first carry a message end to end after {:.1} s",
        addrs_text(&addrs),
        started.elapsed().as_secs_f64()
    );
    Ok(servers)
}

fn addrs_text(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.port().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Subscribes on every server but the first, then publishes on the first until each
/// subscriber has had a message (routes and their interest take a moment to form).
async fn nats_carries(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let publisher = async_nats::connect(addrs[0].to_string()).await?;
    let mut subscribers = Vec::new();
    for addr in &addrs[1..] {
        let client = async_nats::connect(addr.to_string()).await?;
        let subscriber = client.subscribe(TOPIC).await?;
        client.flush().await?;
        subscribers.push((client, subscriber, false));
    }
    let deadline = Instant::now() + FORMING_TIMEOUT;
    while subscribers.iter().any(|(_, _, got)| !got) {
        if Instant::now() > deadline {
            bail!("the NATS cluster did not carry a message within {FORMING_TIMEOUT:?}");
        }
        publisher.publish(TOPIC, "probe".into()).await?;
        publisher.flush().await?;
        for (_, subscriber, got) in subscribers.iter_mut().filter(|(_, _, got)| !got) {
            *got = tokio::time::timeout(Duration::from_millis(200), subscriber.next())
                .await
                .is_ok_and(|m| m.is_some());
        }
    }
    Ok(())
}

/// The same for MQTT: QoS 0 subscribers on every broker but the first, publishes on the first.
async fn mqtt_carries(addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let (mut publisher, _) = mqtt_session(
        tokio::net::TcpStream::connect(addrs[0]).await?,
        "crier-fanout-probe-publisher".into(),
        false,
    )
    .await?;
    let mut subscribers = Vec::new();
    for (j, addr) in addrs.iter().enumerate().skip(1) {
        let (stream, buf) = mqtt_session(
            tokio::net::TcpStream::connect(addr).await?,
            format!("crier-fanout-probe-{j}"),
            true,
        )
        .await?;
        subscribers.push((stream, buf, false));
    }
    let deadline = Instant::now() + FORMING_TIMEOUT;
    while subscribers.iter().any(|(_, _, got)| !got) {
        if Instant::now() > deadline {
            bail!("the bridged brokers did not carry a message within {FORMING_TIMEOUT:?}");
        }
        let probe = Packet::Publish(Publish::new(TOPIC, QoS::AtMostOnce, "probe"));
        mqtt_send(&mut publisher, probe).await?;
        for (stream, buf, got) in subscribers.iter_mut().filter(|(_, _, got)| !got) {
            *got = matches!(
                tokio::time::timeout(Duration::from_millis(200), mqtt_read(stream, buf)).await,
                Ok(Ok(Packet::Publish(_)))
            );
        }
    }
    Ok(())
}
