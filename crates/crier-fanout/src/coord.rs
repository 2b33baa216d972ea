//! The coordinator: for each N and each system, start the servers (one each, or a cluster of
//! `--cluster K`), the load generators, measure memory, run the rounds (t0 just before the
//! push, receipts from every client), then the Crier login catch-up (single servers only);
//! print the report (`report.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crier_client::{Connection, Event, LoginOptions};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::cluster::{start_mosquitto_bridged, start_nats_cluster, ScratchDatabase};
use crate::common::{
    cpu_ticks, load_average, machine_ticks, msg_body, now_ns, open_fds, open_files_limit,
    peer_frame, pid_of, proc_status_kb, ticks_per_second, user, ChildLine, APP, TOPIC,
};
use crate::loadgen::{mqtt_send, mqtt_session, nats_client, NatsClient, System};
use crate::server::{default_binary, ClusterNode, CrierServer, PeerServer, KEY};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Numbers of clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,19000")]
    pub sizes: Vec<usize>,
    /// Measured rounds per N and system (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Load-generator processes.
    #[arg(long, default_value_t = 4)]
    pub procs: usize,
    /// Source addresses 127.0.0.2, 127.0.0.3, ... the client sockets are spread over.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Connections each load generator sets up at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of the text in the message body (the whole frame is about 200 bytes more).
    #[arg(long, default_value_t = 256)]
    pub text_bytes: usize,
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "crier,mosquitto,nats"
    )]
    pub systems: Vec<System>,
    /// The `crier` binary (default: next to this one).
    #[arg(long)]
    pub crier_bin: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mosquitto: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats: SocketAddr,
    /// Run a fresh Mosquitto and NATS server (these binaries) on free ports for each N instead
    /// of using --mosquitto and --nats: their memory is then measured from a clean start.
    #[arg(long)]
    pub spawn_peers: bool,
    #[arg(long, default_value = "mosquitto")]
    pub mosquitto_bin: PathBuf,
    #[arg(long, default_value = "nats-server")]
    pub nats_bin: PathBuf,
    /// The NATS subscribers' client: the protocol read off the socket (as lean as the MQTT
    /// and Crier clients here) or the official async-nats client.
    #[arg(long, value_enum, default_value = "raw")]
    pub nats_client: NatsClient,
    /// Pending pushes for the login catch-up measurement (0: skip it).
    #[arg(long, default_value_t = 700)]
    pub catchup_pushes: usize,
    /// Logins timed for the catch-up measurement.
    #[arg(long, default_value_t = 10)]
    pub catchup_logins: usize,
    /// Seconds to wait for every client's receipt before asking for what arrived.
    #[arg(long, default_value_t = 15)]
    pub round_timeout: u64,
    /// Pause between rounds, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
    /// Before each round, wait (up to --quiet-wait seconds) until the machine is at most this
    /// busy (percent of all cores over 250 ms), so other people's builds do not land in the
    /// middle of a round. 100 turns it off.
    #[arg(long, default_value_t = 20.0)]
    pub quiet_below: f64,
    #[arg(long, default_value_t = 30)]
    pub quiet_wait: u64,
    /// Also write the markdown report here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Run every system as a cluster of this many servers, clients spread evenly over them
    /// and the message published on the first: Crier nodes on one fresh PostgreSQL database
    /// (--postgres) announcing on NATS (--crier-bus), `nats-server` processes joined by routes,
    /// Mosquitto brokers bridged from the first. Peers are always started by the tool then.
    /// 1: one server each (the issue 3 benchmark).
    #[arg(long, default_value_t = 1)]
    pub cluster: usize,
    /// The PostgreSQL server the Crier nodes of --cluster share: a database is created on it
    /// for the run and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pub postgres: String,
    /// The NATS server the Crier nodes of --cluster announce on, under a subject prefix of
    /// their own for the run.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub crier_bus: String,
}

/// One round's receipts, as latencies from t0.
pub(crate) struct Round {
    pub(crate) latencies_ns: Vec<u64>,
    /// The same, sorted, for the clients of each server (one list without a cluster).
    pub(crate) per_server_ns: Vec<Vec<u64>>,
    pub(crate) expected: usize,
    /// From t0 to the publisher's answer: the `im_push` reply, or the peer's publish flushed.
    pub(crate) answered_ns: u64,
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// What one system did at one N.
pub(crate) struct Outcome {
    pub(crate) system: System,
    pub(crate) n: usize,
    pub(crate) connected: usize,
    pub(crate) failed: usize,
    pub(crate) setup_s: f64,
    pub(crate) rounds: Vec<Round>,
    pub(crate) rss_before_kb: Option<u64>,
    pub(crate) rss_after_kb: Option<u64>,
    pub(crate) fds: Option<usize>,
    /// Open descriptors of each server once the clients are in: how they spread.
    pub(crate) fds_each: Vec<Option<usize>>,
    pub(crate) frame_bytes: usize,
    pub(crate) cpu: Cpu,
    /// The machine's 1-minute load average before the clients connected and after the rounds.
    pub(crate) load_before: Option<f64>,
    pub(crate) load_after: Option<f64>,
}

/// CPU used while the rounds ran, in ms per push, and the share of the machine other
/// processes (not the server, the load generators or the coordinator) used meanwhile.
/// The server figure is the sum over the system's server processes (every node of a cluster;
/// for Crier not PostgreSQL or the NATS it announces on), `server_each_ms` each one's.
#[derive(Default, Clone)]
pub(crate) struct Cpu {
    pub(crate) server_ms: Option<f64>,
    pub(crate) server_each_ms: Vec<Option<f64>>,
    pub(crate) clients_ms: f64,
    pub(crate) others_pct: Option<f64>,
}

#[derive(Clone)]
struct CpuSnapshot {
    servers: Vec<Option<u64>>,
    clients: u64,
    me: u64,
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    fn take(servers: &[u32], children: &Children) -> CpuSnapshot {
        CpuSnapshot {
            servers: servers
                .iter()
                .map(|pid| cpu_ticks(&pid.to_string()))
                .collect(),
            clients: children
                .pids
                .iter()
                .filter_map(|pid| cpu_ticks(&pid.to_string()))
                .sum(),
            me: cpu_ticks("self").unwrap_or(0),
            machine: machine_ticks(),
        }
    }

    fn since(&self, before: &CpuSnapshot, pushes: usize) -> Cpu {
        let tick_ms = 1000.0 / ticks_per_second();
        let per_push = |ticks: u64| ticks as f64 * tick_ms / pushes.max(1) as f64;
        let each: Vec<Option<u64>> = self
            .servers
            .iter()
            .zip(&before.servers)
            .map(|(after, before)| Some(after.as_ref()?.saturating_sub(*before.as_ref()?)))
            .collect();
        let server = if each.is_empty() {
            None
        } else {
            each.iter().copied().sum::<Option<u64>>()
        };
        let clients = self.clients.saturating_sub(before.clients);
        let me = self.me.saturating_sub(before.me);
        let others_pct = match (self.machine, before.machine) {
            (Some((busy, total)), Some((busy0, total0))) if total > total0 => {
                let ours = server.unwrap_or(0) + clients + me;
                let others = (busy - busy0).saturating_sub(ours);
                Some(others as f64 * 100.0 / (total - total0) as f64)
            }
            _ => None,
        };
        Cpu {
            server_ms: server.map(per_push),
            server_each_ms: each.into_iter().map(|t| t.map(per_push)).collect(),
            clients_ms: per_push(clients),
            others_pct,
        }
    }
}

impl Outcome {
    pub(crate) fn stat(&self, f: impl Fn(&Round) -> f64) -> f64 {
        median(&mut self.rounds.iter().map(f).collect::<Vec<_>>())
    }
    pub(crate) fn p50(&self) -> f64 {
        self.stat(|r| ms(percentile(&r.latencies_ns, 0.50)))
    }
    pub(crate) fn p99(&self) -> f64 {
        self.stat(|r| ms(percentile(&r.latencies_ns, 0.99)))
    }
    pub(crate) fn last(&self) -> f64 {
        self.stat(|r| ms(percentile(&r.latencies_ns, 1.0)))
    }
    /// The median over rounds of the `p`-th percentile of server `j`'s clients (0: the first
    /// to have the message, which on another node than the first shows what the hop costs).
    pub(crate) fn server_percentile(&self, j: usize, p: f64) -> f64 {
        self.stat(|r| {
            r.per_server_ns
                .get(j)
                .map_or(f64::NAN, |l| ms(percentile(l, p)))
        })
    }
    pub(crate) fn answered(&self) -> f64 {
        self.stat(|r| ms(r.answered_ns))
    }
    pub(crate) fn worst_last(&self) -> f64 {
        self.rounds
            .iter()
            .map(|r| ms(percentile(&r.latencies_ns, 1.0)))
            .fold(0.0, f64::max)
    }
    pub(crate) fn min_delivered(&self) -> usize {
        self.rounds
            .iter()
            .map(|r| r.latencies_ns.len())
            .min()
            .unwrap_or(0)
    }
    pub(crate) fn bytes_per_session(&self) -> Option<f64> {
        let (before, after) = (self.rss_before_kb?, self.rss_after_kb?);
        Some((after as f64 - before as f64) * 1024.0 / self.connected.max(1) as f64)
    }
}

/// The load generators of one system at one N.
struct Children {
    procs: Vec<Child>,
    pids: Vec<u32>,
    stdins: Vec<ChildStdin>,
    lines: mpsc::UnboundedReceiver<(usize, ChildLine)>,
}

impl Children {
    async fn spawn(
        args: &BenchArgs,
        system: System,
        targets: &[SocketAddr],
        n: usize,
    ) -> anyhow::Result<(Children, usize, usize)> {
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let me = std::env::current_exe()?;
        let sources: Vec<String> = (0..args.sources.max(1))
            .map(|k| Ipv4Addr::new(127, 0, 0, 2 + k).to_string())
            .collect();
        let (tx, lines) = mpsc::unbounded_channel();
        let mut procs = Vec::new();
        let mut pids = Vec::new();
        let mut stdins = Vec::new();
        let share = args.procs.clamp(1, n.max(1));
        for p in 0..share {
            let first = n * p / share;
            let count = n * (p + 1) / share - first;
            let mut child = Command::new(&me)
                .arg("load-gen")
                .args(["--system", system.arg()])
                .args(["--target", &targets.join(",")])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--sources", &sources.join(",")])
                .args(["--concurrency", &args.concurrency.to_string()])
                .args(["--key", KEY])
                .args([
                    "--nats-client",
                    match args.nats_client {
                        NatsClient::Raw => "raw",
                        NatsClient::AsyncNats => "async-nats",
                    },
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            pids.extend(child.id());
            let stdout = child.stdout.take().context("child stdout")?;
            stdins.push(child.stdin.take().context("child stdin")?);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stdout = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = stdout.next_line().await {
                    let _ = tx.send((p, ChildLine::parse(&line)));
                }
            });
            procs.push(child);
        }
        let mut children = Children {
            procs,
            pids,
            stdins,
            lines,
        };
        let (mut ok, mut failed, mut ready) = (0, 0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while ready < children.procs.len() {
            match tokio::time::timeout_at(deadline, children.lines.recv()).await {
                Ok(Some((_, ChildLine::Ready { ok: o, failed: f }))) => {
                    ok += o;
                    failed += f;
                    ready += 1;
                }
                Ok(Some((p, ChildLine::Other(line)))) => eprintln!("  load-gen {p}: {line}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the load generators ended before they were ready"),
                Err(_) => bail!("the load generators were not ready within 600 s"),
            }
        }
        Ok((children, ok, failed))
    }

    /// Collects round `id` from every load generator; after `timeout`, asks for what arrived.
    async fn collect(
        &mut self,
        id: u32,
        timeout: Duration,
    ) -> anyhow::Result<(Vec<(u64, usize)>, usize)> {
        let mut times = Vec::new();
        let mut lost = 0;
        let mut reported = vec![false; self.procs.len()];
        let mut deadline = tokio::time::Instant::now() + timeout;
        let mut flushed = false;
        while reported.iter().any(|r| !r) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((
                    p,
                    ChildLine::Got {
                        id: got,
                        lost: l,
                        times: t,
                    },
                ))) if got == id => {
                    reported[p] = true;
                    lost += l;
                    times.extend(t);
                }
                Ok(Some((p, ChildLine::Other(line)))) => eprintln!("  load-gen {p}: {line}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("the load generators ended during round {id}"),
                Err(_) if !flushed => {
                    for (p, stdin) in self.stdins.iter_mut().enumerate() {
                        if !reported[p] {
                            stdin.write_all(format!("FLUSH {id}\n").as_bytes()).await?;
                            stdin.flush().await?;
                        }
                    }
                    flushed = true;
                    deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                }
                Err(_) => bail!("the load generators did not report round {id}"),
            }
        }
        Ok((times, lost))
    }

    /// Closes their stdin: they exit; any still there after 10 s is killed.
    async fn stop(self) {
        drop(self.stdins);
        for mut child in self.procs {
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// How a round's message is sent: the REST call, an MQTT PUBLISH or a NATS PUB.
enum Publisher<'a> {
    Crier(&'a CrierServer),
    Mosquitto(tokio::net::TcpStream),
    Nats(async_nats::Client),
}

impl Publisher<'_> {
    /// Sends round `id`; answers t0 (ns), taken just before the send, the time the send was
    /// answered (ns) and the frame size.
    async fn publish(&mut self, id: u32, text_bytes: usize) -> anyhow::Result<(u64, u64, usize)> {
        match self {
            Publisher::Crier(server) => {
                let body = json!({
                    "MsgRandom": id,
                    "MsgLifeTime": 0,
                    "MsgBody": serde_json::from_str::<serde_json::Value>(&msg_body(id, text_bytes))?,
                });
                let t0 = now_ns();
                let answer = server.call("all_member_push/im_push", &body).await?;
                let answered = now_ns();
                // The frame the clients get: the peers' frame with this TaskId.
                let task_id = answer
                    .get("TaskId")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default();
                let reference = peer_frame(id, text_bytes);
                let size = reference.len() + task_id.len()
                    - reference
                        .split("\"TaskId\":\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .map_or(0, str::len);
                Ok((t0, answered, size))
            }
            Publisher::Mosquitto(stream) => {
                let frame = peer_frame(id, text_bytes);
                let size = frame.len();
                let packet = Packet::Publish(Publish::new(TOPIC, QoS::AtMostOnce, frame));
                let t0 = now_ns();
                mqtt_send(stream, packet).await?;
                Ok((t0, now_ns(), size))
            }
            Publisher::Nats(client) => {
                let frame = peer_frame(id, text_bytes);
                let size = frame.len();
                let t0 = now_ns();
                client.publish(TOPIC, frame.into()).await?;
                client.flush().await?;
                Ok((t0, now_ns(), size))
            }
        }
    }
}

/// Waits until the whole machine is at most `below` percent busy over 250 ms, or `max` has
/// passed; answers the last reading.
async fn wait_quiet(below: f64, max: Duration) -> f64 {
    let started = Instant::now();
    let mut warned = false;
    loop {
        let Some(before) = machine_ticks() else {
            return f64::NAN;
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(after) = machine_ticks() else {
            return f64::NAN;
        };
        let busy = (after.0 - before.0) as f64 * 100.0 / (after.1 - before.1).max(1) as f64;
        if busy <= below || below >= 100.0 {
            return busy;
        }
        if started.elapsed() >= max {
            eprintln!("  the machine is still {busy:.0} % busy after {max:?}; going on");
            return busy;
        }
        if !warned {
            eprintln!("  the machine is {busy:.0} % busy; waiting for it to calm down");
            warned = true;
        }
    }
}

struct Bench {
    args: BenchArgs,
    next_id: u32,
    dir: tempfile::TempDir,
    crier_bin: PathBuf,
    /// The Crier nodes' database with --cluster (dropped at the end of the run).
    database: Option<ScratchDatabase>,
    /// The Crier nodes' NATS subject prefix with --cluster, unique to the run.
    subject_prefix: String,
}

/// The servers of one system at one N: where clients connect (spread evenly; the message is
/// published on the first), the processes measured, and what to stop afterwards.
struct Deployment {
    targets: Vec<SocketAddr>,
    pids: Vec<u32>,
    crier: Vec<CrierServer>,
    peers: Vec<PeerServer>,
}

impl Deployment {
    fn of_crier(crier: Vec<CrierServer>) -> Deployment {
        Deployment {
            targets: crier.iter().map(|s| s.addr).collect(),
            pids: crier.iter().map(|s| s.pid).collect(),
            crier,
            peers: Vec::new(),
        }
    }

    fn of_peers(peers: Vec<PeerServer>) -> Deployment {
        Deployment {
            targets: peers.iter().map(|s| s.addr).collect(),
            pids: peers.iter().map(|s| s.pid).collect(),
            crier: Vec::new(),
            peers,
        }
    }

    /// A long-running service the tool did not start (its pid, if it is the only one).
    fn of_service(addr: SocketAddr, pid: Option<u32>) -> Deployment {
        Deployment {
            targets: vec![addr],
            pids: pid.into_iter().collect(),
            crier: Vec::new(),
            peers: Vec::new(),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        for server in self.crier {
            server.stop().await?;
        }
        for peer in self.peers {
            peer.stop().await;
        }
        Ok(())
    }
}

impl Bench {
    /// The node `j` (from 0) of the Crier cluster.
    fn cluster_node(&self, j: usize) -> anyhow::Result<ClusterNode<'_>> {
        let database = self
            .database
            .as_ref()
            .context("no database for the cluster")?;
        Ok(ClusterNode {
            name: format!("node{}", j + 1),
            store: database.url(),
            bus: &self.args.crier_bus,
            subject_prefix: &self.subject_prefix,
        })
    }

    async fn start_crier(&self) -> anyhow::Result<Vec<CrierServer>> {
        if self.args.cluster <= 1 {
            return Ok(vec![
                CrierServer::start(&self.crier_bin, self.dir.path()).await?,
            ]);
        }
        let mut nodes = Vec::new();
        for j in 0..self.args.cluster {
            let node = self.cluster_node(j)?;
            nodes.push(
                CrierServer::start_node(&self.crier_bin, self.dir.path(), Some(&node)).await?,
            );
        }
        Ok(nodes)
    }

    async fn deploy(&self, system: System) -> anyhow::Result<Deployment> {
        let args = &self.args;
        let clustered = args.cluster > 1;
        Ok(match system {
            System::Crier => Deployment::of_crier(self.start_crier().await?),
            System::Mosquitto if clustered => Deployment::of_peers(
                start_mosquitto_bridged(&args.mosquitto_bin, self.dir.path(), args.cluster).await?,
            ),
            System::Nats if clustered => {
                Deployment::of_peers(start_nats_cluster(&args.nats_bin, args.cluster).await?)
            }
            System::Mosquitto if args.spawn_peers => Deployment::of_peers(vec![
                PeerServer::start_mosquitto(&args.mosquitto_bin, self.dir.path()).await?,
            ]),
            System::Nats if args.spawn_peers => {
                Deployment::of_peers(vec![PeerServer::start_nats(&args.nats_bin).await?])
            }
            System::Mosquitto => Deployment::of_service(args.mosquitto, pid_of("mosquitto")),
            System::Nats => Deployment::of_service(args.nats, pid_of("nats-server")),
        })
    }

    async fn run_system(&mut self, system: System, n: usize) -> anyhow::Result<Outcome> {
        let deployment = self.deploy(system).await?;
        let servers = deployment.targets.len();
        let pids = deployment.pids.clone();
        let rss = |pids: &[u32]| -> Option<u64> {
            if pids.is_empty() {
                return None;
            }
            pids.iter().map(|&pid| proc_status_kb(pid, "VmRSS")).sum()
        };
        // Let the servers settle (start-up allocations) before the baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let load_before = load_average();
        let rss_before_kb = rss(&pids);
        let started = Instant::now();
        let (mut children, connected, failed) =
            Children::spawn(&self.args, system, &deployment.targets, n).await?;
        let setup_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_after_kb = rss(&pids);
        let fds_each: Vec<Option<usize>> = pids.iter().map(|&pid| open_fds(pid)).collect();
        let fds = if fds_each.is_empty() {
            None
        } else {
            fds_each.iter().copied().sum()
        };
        eprintln!(
            "{} N={n}: {connected} clients ready ({failed} failed) in {setup_s:.1} s; server RSS {:?} -> {:?} kB, fds {:?}",
            system.name(),
            rss_before_kb,
            rss_after_kb,
            fds_each
        );
        let first = deployment.targets[0];
        let mut publisher = match system {
            System::Crier => Publisher::Crier(deployment.crier.first().context("server")?),
            System::Mosquitto => {
                let stream = tokio::net::TcpStream::connect(first).await?;
                stream.set_nodelay(true)?;
                let (stream, _) =
                    mqtt_session(stream, "crier-fanout-publisher".into(), false).await?;
                Publisher::Mosquitto(stream)
            }
            System::Nats => {
                Publisher::Nats(nats_client(IpAddr::V4(Ipv4Addr::LOCALHOST), first).await?)
            }
        };
        let mut rounds = Vec::new();
        let mut frame_bytes = 0;
        let cpu_before = CpuSnapshot::take(&pids, &children);
        for round in 0..=self.args.rounds {
            tokio::time::sleep(Duration::from_millis(self.args.pause_ms)).await;
            wait_quiet(
                self.args.quiet_below,
                Duration::from_secs(self.args.quiet_wait),
            )
            .await;
            let id = self.next_id;
            self.next_id += 1;
            let (t0, answered, size) = publisher.publish(id, self.args.text_bytes).await?;
            frame_bytes = size;
            let (times, lost) = children
                .collect(id, Duration::from_secs(self.args.round_timeout))
                .await?;
            let mut latencies_ns: Vec<u64> =
                times.iter().map(|(t, _)| t.saturating_sub(t0)).collect();
            latencies_ns.sort_unstable();
            let mut per_server_ns = vec![Vec::new(); servers];
            for (t, server) in &times {
                if let Some(list) = per_server_ns.get_mut(*server) {
                    list.push(t.saturating_sub(t0));
                }
            }
            per_server_ns.iter_mut().for_each(|l| l.sort_unstable());
            let by_server = if servers > 1 {
                let spans: Vec<String> = per_server_ns
                    .iter()
                    .map(|l| {
                        format!(
                            "{:.1}-{:.1}",
                            ms(percentile(l, 0.0)),
                            ms(percentile(l, 1.0))
                        )
                    })
                    .collect();
                format!(" (first-last per server: {} ms)", spans.join(" / "))
            } else {
                String::new()
            };
            eprintln!(
                "  round {round}{}: {}/{connected} received (lost {lost}), p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms{by_server}",
                if round == 0 { " (warm-up)" } else { "" },
                latencies_ns.len(),
                ms(percentile(&latencies_ns, 0.5)),
                ms(percentile(&latencies_ns, 0.99)),
                ms(percentile(&latencies_ns, 1.0)),
            );
            if round > 0 {
                rounds.push(Round {
                    latencies_ns,
                    per_server_ns,
                    expected: connected,
                    answered_ns: answered.saturating_sub(t0),
                });
            }
        }
        let cpu = CpuSnapshot::take(&pids, &children).since(&cpu_before, self.args.rounds + 1);
        let load_after = load_average();
        eprintln!(
            "  CPU per push: servers {:?} ms (each {:?}), load generators {:.1} ms; other processes used {:?} % of the machine; load average {load_before:?} -> {load_after:?}",
            cpu.server_ms, cpu.server_each_ms, cpu.clients_ms, cpu.others_pct
        );
        drop(publisher);
        children.stop().await;
        deployment.stop().await?;
        Ok(Outcome {
            system,
            n,
            connected,
            failed,
            setup_s,
            rounds,
            rss_before_kb,
            rss_after_kb,
            fds,
            fds_each,
            frame_bytes,
            cpu,
            load_before,
            load_after,
        })
    }

    /// One account with `catchup_pushes` kept pushes it has not acknowledged: time from the
    /// start of the connection to the last of them, over several logins.
    async fn catch_up(&mut self) -> anyhow::Result<CatchUp> {
        let server = CrierServer::start(&self.crier_bin, self.dir.path()).await?;
        let who = "fan-catchup".to_owned();
        server.import(std::slice::from_ref(&who)).await?;
        server
            .call(
                "all_member_push/im_add_tag",
                &json!({"UserTags": [{"To_Account": who, "Tags": ["fanout-catchup"]}]}),
            )
            .await?;
        let started = Instant::now();
        for k in 0..self.args.catchup_pushes {
            let id = self.next_id;
            self.next_id += 1;
            server
                .call(
                    "all_member_push/im_push",
                    &json!({
                        "MsgRandom": id,
                        "MsgLifeTime": 604_800,
                        "Condition": {"TagsOr": ["fanout-catchup"]},
                        "MsgBody": serde_json::from_str::<serde_json::Value>(&msg_body(id, self.args.text_bytes))?,
                    }),
                )
                .await
                .with_context(|| format!("catch-up push {k}"))?;
        }
        let pushing_s = started.elapsed().as_secs_f64();
        let options = LoginOptions {
            url: format!("ws://{}/v4/ws", server.addr),
            sdkappid: APP,
            user_sig: server.admin.user_sig(&who, 86_400),
            identifier: who,
            platform: None,
        };
        let mut total_ms = Vec::new();
        let mut after_login_ok_ms = Vec::new();
        for _ in 0..self.args.catchup_logins {
            let t_start = Instant::now();
            let stream = tokio::net::TcpStream::connect(server.addr).await?;
            stream.set_nodelay(true)?;
            let mut connection = Connection::connect_on(stream, &options, None).await?;
            let t_login_ok = Instant::now();
            let mut received = 0;
            let mut last_random = 0;
            while received < self.args.catchup_pushes {
                match tokio::time::timeout(Duration::from_secs(10), connection.next_event()).await {
                    Ok(Ok(Event::Push(push))) => {
                        if !push.offline || push.msg_random <= last_random {
                            bail!(
                                "catch-up: push {} out of order or not Offline",
                                push.msg_random
                            );
                        }
                        last_random = push.msg_random;
                        received += 1;
                    }
                    Ok(Ok(other)) => bail!("catch-up: unexpected {other:?}"),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => bail!("catch-up: only {received} pushes within 10 s"),
                }
            }
            let done = Instant::now();
            total_ms.push((done - t_start).as_secs_f64() * 1e3);
            after_login_ok_ms.push((done - t_login_ok).as_secs_f64() * 1e3);
            connection.close().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.stop().await?;
        let worst = total_ms.iter().copied().fold(0.0, f64::max);
        Ok(CatchUp {
            pushes: self.args.catchup_pushes,
            pushing_s,
            total_ms: median(&mut total_ms),
            worst_total_ms: worst,
            after_login_ok_ms: median(&mut after_login_ok_ms),
            logins: self.args.catchup_logins,
        })
    }
}

pub(crate) struct CatchUp {
    pub(crate) pushes: usize,
    pub(crate) pushing_s: f64,
    pub(crate) total_ms: f64,
    pub(crate) worst_total_ms: f64,
    pub(crate) after_login_ok_ms: f64,
    pub(crate) logins: usize,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// Runs the benchmark; on SIGINT or SIGTERM drops it, which kills the server and the load
/// generators (`kill_on_drop`), so nothing is left running.
async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = run_bench(args) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let nofile = open_files_limit("self");
    if let Some((soft, hard)) = nofile {
        eprintln!("RLIMIT_NOFILE: soft {soft}, hard {hard}");
        let biggest = args.sizes.iter().copied().max().unwrap_or(0);
        // The server holds one socket per client plus its listener, store files and runtime;
        // a cluster's servers share the clients evenly.
        let per_server = biggest.div_ceil(args.cluster.max(1));
        let server_needs = per_server as u64 + 64;
        eprintln!(
            "each Crier server will hold {per_server} client sockets + ~30 own descriptors; {}",
            if server_needs <= soft {
                format!("that fits under {soft}")
            } else {
                format!("that may not fit under {soft}")
            }
        );
        let per_child = biggest.div_ceil(args.procs.max(1)) as u64;
        if per_child + 64 > soft {
            bail!("{per_child} sockets per load generator exceed the limit; use more --procs");
        }
    }
    let crier_bin = match &args.crier_bin {
        Some(path) => path.clone(),
        None => default_binary()?,
    };
    if args.systems.contains(&System::Crier) && !crier_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p crier) or pass --crier-bin",
            crier_bin.display()
        );
    }
    let clustered = args.cluster > 1;
    let database = if clustered && args.systems.contains(&System::Crier) {
        let database = ScratchDatabase::create(&args.postgres)?;
        eprintln!("created database {}", database.name());
        Some(database)
    } else {
        None
    };
    let mut bench = Bench {
        args: args.clone(),
        next_id: 1,
        dir: tempfile::Builder::new().prefix("crier-fanout-").tempdir()?,
        crier_bin,
        database,
        subject_prefix: format!("crier-fanout-{}-{}", std::process::id(), now_ns()),
    };
    if args.systems.contains(&System::Crier) {
        // Every account exists before the baseline, so the memory measured is the sessions'.
        // A cluster's nodes all load them from the database at start.
        let biggest = args.sizes.iter().copied().max().unwrap_or(0);
        let server = if clustered {
            let node = bench.cluster_node(0)?;
            CrierServer::start_node(&bench.crier_bin, bench.dir.path(), Some(&node)).await?
        } else {
            CrierServer::start(&bench.crier_bin, bench.dir.path()).await?
        };
        let started = Instant::now();
        server
            .import(&(0..biggest).map(user).collect::<Vec<_>>())
            .await?;
        eprintln!(
            "imported {biggest} accounts in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        server.stop().await?;
    }
    let mut outcomes = Vec::new();
    for &n in &args.sizes {
        for &system in &args.systems {
            eprintln!("== {} N={n}", system.name());
            let outcome = bench.run_system(system, n).await?;
            outcomes.push(outcome);
            // Let closed connections drain before the next system connects.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // The catch-up is a single node's measurement (issue 3).
    let catch_up = if args.catchup_pushes > 0 && !clustered && args.systems.contains(&System::Crier)
    {
        eprintln!("== Crier login catch-up");
        Some(bench.catch_up().await?)
    } else {
        None
    };
    let md = if clustered {
        crate::report::cluster_report(&args, &outcomes, nofile)
    } else {
        crate::report::report(&args, &outcomes, catch_up.as_ref(), nofile)
    };
    println!("{md}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md)?;
    }
    Ok(())
}
