//! A load-generator process (the hidden `load-gen` subcommand): holds a share of the clients
//! of one system, one tokio task per socket, each socket bound to one of several `127.0.0.x`
//! source addresses. It reports `READY ok failed` once every client is logged in (Crier) or
//! subscribed (MQTT, NATS), then for each round a `GOT id lost t1 t2 ...` line with every
//! client's receipt time (`CLOCK_REALTIME` ns; `k:t` for a client of the k-th target when
//! there are several), when all have it or when the coordinator sends `FLUSH id`. A client
//! counts a round once, even if a bridge delivers it twice. It exits when its stdin closes.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use crier_client::{Connection, Event, LoginOptions};
use futures_util::StreamExt;
use rumqttc::mqttbytes::v4::{Connect, Packet, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::common::{now_ns, round_of, user, APP, TOPIC};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Crier,
    Mosquitto,
    Nats,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Crier => "Crier",
            System::Mosquitto => "Mosquitto",
            System::Nats => "NATS",
        }
    }

    pub fn arg(self) -> &'static str {
        match self {
            System::Crier => "crier",
            System::Mosquitto => "mosquitto",
            System::Nats => "nats",
        }
    }
}

/// Which NATS client the subscribers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NatsClient {
    /// The NATS text protocol read straight off the socket, as lean as the MQTT and Crier
    /// clients here: no task or channel besides the socket's own.
    Raw,
    /// The official `async-nats` client: a connection task plus a subscriber channel each.
    AsyncNats,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoadGenArgs {
    #[arg(long, value_enum)]
    pub system: System,
    /// The servers, brokers or NATS servers to connect to; client i connects to
    /// `target[i % len]`, so a cluster's servers get the clients evenly.
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<SocketAddr>,
    /// Number of this process's first client (clients are numbered across processes).
    #[arg(long)]
    pub first: usize,
    #[arg(long)]
    pub count: usize,
    /// Source addresses; client i binds to `sources[i % len]`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sources: Vec<IpAddr>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value = "raw")]
    pub nats_client: NatsClient,
    /// The Crier app's secret key (Crier only).
    #[arg(long, default_value = "")]
    pub key: String,
}

/// MQTT packets here are small; anything larger is a broken stream.
const MQTT_MAX_PACKET: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Small client WebSocket buffers: frames are small, and the library zero-fills its whole
/// read buffer before each read (128 KiB by default).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
}

pub fn run(args: LoadGenArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(generate(args))
}

/// A TCP connection from `source` (any port) to `target`.
async fn bound_connect(source: IpAddr, target: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Ports of the previous run may still be in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    // Closed with a reset, so that no TIME_WAIT is left behind: 19,000 of them expire a minute
    // later, in the kernel's timers, in the middle of whichever system is measured then.
    socket.set_zero_linger()?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding to {source}"))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

enum Session {
    Crier(Connection),
    Mosquitto(TcpStream, BytesMut),
    Nats(async_nats::Client, async_nats::Subscriber),
    NatsRaw(TcpStream, BytesMut),
}

pub async fn mqtt_read(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Packet> {
    loop {
        match Packet::read(buf, MQTT_MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => bail!("bad MQTT stream: {e:?}"),
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the broker closed the connection");
        }
    }
}

pub async fn mqtt_send(stream: &mut TcpStream, packet: Packet) -> anyhow::Result<()> {
    let mut out = BytesMut::with_capacity(packet.size() + 8);
    packet
        .write(&mut out, MQTT_MAX_PACKET)
        .map_err(|e| anyhow::anyhow!("encoding MQTT: {e:?}"))?;
    stream.write_all(&out).await?;
    Ok(())
}

/// An MQTT 3.1.1 session over `stream`: CONNECT (clean, no keep-alive) and, with `subscribe`,
/// SUBSCRIBE to the topic at QoS 0, waiting for each acknowledgement.
pub async fn mqtt_session(
    mut stream: TcpStream,
    client_id: String,
    subscribe: bool,
) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 0;
    mqtt_send(&mut stream, Packet::Connect(connect)).await?;
    match mqtt_read(&mut stream, &mut buf).await? {
        Packet::ConnAck(ack) if ack.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success => {}
        other => bail!("CONNECT refused: {other:?}"),
    }
    if subscribe {
        let mut request = Subscribe::new(TOPIC, QoS::AtMostOnce);
        request.pkid = 1;
        mqtt_send(&mut stream, Packet::Subscribe(request)).await?;
        match mqtt_read(&mut stream, &mut buf).await? {
            Packet::SubAck(_) => {}
            other => bail!("SUBSCRIBE refused: {other:?}"),
        }
    }
    Ok((stream, buf))
}

/// What a NATS server sends, as far as a subscriber cares.
enum NatsOp {
    Info,
    Msg(bytes::Bytes),
    Ping,
    Pong,
    Ok,
}

/// The next operation from a NATS server (`MSG`, `PING`, `PONG`, `INFO`, `+OK`; `-ERR` fails).
async fn nats_read(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<NatsOp> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = std::str::from_utf8(&buf[..end])?;
            let op = if let Some(args) = line.strip_prefix("MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size: usize = args
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("bad MSG line")?;
                if buf.len() < end + 2 + size + 2 {
                    // The payload is not all here yet.
                    None
                } else {
                    let _ = buf.split_to(end + 2);
                    let payload = buf.split_to(size).freeze();
                    let _ = buf.split_to(2);
                    Some(NatsOp::Msg(payload))
                }
            } else {
                let op = match line {
                    "PING" => NatsOp::Ping,
                    "PONG" => NatsOp::Pong,
                    "+OK" => NatsOp::Ok,
                    _ if line.starts_with("INFO ") => NatsOp::Info,
                    _ => bail!("NATS server said: {line}"),
                };
                let _ = buf.split_to(end + 2);
                Some(op)
            };
            if let Some(op) = op {
                return Ok(op);
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            bail!("the NATS server closed the connection");
        }
    }
}

/// A NATS subscriber over `stream`: CONNECT, SUB to the subject, then PING; the PONG means
/// the server has the subscription.
async fn nats_raw_session(mut stream: TcpStream) -> anyhow::Result<(TcpStream, BytesMut)> {
    let mut buf = BytesMut::with_capacity(2 * 1024);
    match nats_read(&mut stream, &mut buf).await? {
        NatsOp::Info => {}
        _ => bail!("the NATS server did not start with INFO"),
    }
    let hello = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}}\r\nSUB {TOPIC} 1\r\nPING\r\n"
    );
    stream.write_all(hello.as_bytes()).await?;
    loop {
        match nats_read(&mut stream, &mut buf).await? {
            NatsOp::Pong => return Ok((stream, buf)),
            NatsOp::Ping => stream.write_all(b"PONG\r\n").await?,
            _ => {}
        }
    }
}

pub async fn nats_client(source: IpAddr, target: SocketAddr) -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .local_address(SocketAddr::new(source, 0))
        .read_buffer_capacity(4 * 1024)
        .connect(target.to_string())
        .await?)
}

/// Which of the targets client `i` connects to.
fn target_of(args: &LoadGenArgs, i: usize) -> usize {
    i % args.target.len()
}

async fn open(args: &LoadGenArgs, i: usize) -> anyhow::Result<Session> {
    let source = args.sources[i % args.sources.len()];
    let target = args.target[target_of(args, i)];
    Ok(match args.system {
        System::Crier => {
            let stream = bound_connect(source, target).await?;
            let identifier = user(i);
            let now = now_ns() / 1_000_000_000;
            let options = LoginOptions {
                url: format!("ws://{target}/v4/ws"),
                sdkappid: APP,
                user_sig: crier_proto::usersig::sign(APP, &args.key, &identifier, 86_400, now),
                identifier,
                platform: None,
            };
            Session::Crier(Connection::connect_on(stream, &options, Some(ws_config())).await?)
        }
        System::Mosquitto => {
            let stream = bound_connect(source, target).await?;
            let (stream, buf) = mqtt_session(stream, user(i), true).await?;
            Session::Mosquitto(stream, buf)
        }
        System::Nats if args.nats_client == NatsClient::Raw => {
            let stream = bound_connect(source, target).await?;
            let (stream, buf) = nats_raw_session(stream).await?;
            Session::NatsRaw(stream, buf)
        }
        System::Nats => {
            let client = nats_client(source, target).await?;
            let subscriber = client.subscribe(TOPIC).await?;
            // The SUB is on the server once a PING after it is answered.
            client.flush().await?;
            Session::Nats(client, subscriber)
        }
    })
}

/// Where a client's receipts go: `(round, receipt ns, target)`, each round once per client.
struct Receipts<'a> {
    tx: &'a mpsc::UnboundedSender<(u32, u64, usize)>,
    target: usize,
    last_round: Option<u32>,
    duplicates: &'a AtomicUsize,
}

impl Receipts<'_> {
    fn send(&mut self, (id, at): (u32, u64)) -> Result<(), ()> {
        if self.last_round == Some(id) {
            if self.duplicates.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("round {id} reached a client twice; counted once");
            }
            return Ok(());
        }
        self.last_round = Some(id);
        self.tx.send((id, at, self.target)).map_err(|_| ())
    }
}

/// Reads messages until the connection ends, sending `(round, receipt ns)` for each.
async fn serve(session: Session, receipts: &mut Receipts<'_>) {
    match session {
        Session::Crier(mut connection) => loop {
            match connection.next_event().await {
                Ok(Event::Push(push)) => {
                    let _ = receipts.send((push.msg_random, now_ns()));
                }
                Ok(Event::Closed { .. }) | Err(_) => return,
                Ok(_) => {}
            }
        },
        Session::Mosquitto(mut stream, mut buf) => loop {
            match mqtt_read(&mut stream, &mut buf).await {
                Ok(Packet::Publish(publish)) => {
                    if let Some(id) = std::str::from_utf8(&publish.payload)
                        .ok()
                        .and_then(round_of)
                    {
                        let _ = receipts.send((id, now_ns()));
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        },
        Session::NatsRaw(mut stream, mut buf) => loop {
            match nats_read(&mut stream, &mut buf).await {
                Ok(NatsOp::Msg(payload)) => {
                    if let Some(id) = std::str::from_utf8(&payload).ok().and_then(round_of) {
                        let _ = receipts.send((id, now_ns()));
                    }
                }
                Ok(NatsOp::Ping) => {
                    if stream.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        },
        Session::Nats(_client, mut subscriber) => {
            while let Some(message) = subscriber.next().await {
                if let Some(id) = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(round_of)
                {
                    let _ = receipts.send((id, now_ns()));
                }
            }
        }
    }
}

fn report(id: u32, lost: usize, times: &[(u64, usize)], several_targets: bool) {
    let mut line = format!("GOT {id} {lost}");
    for (t, target) in times {
        line.push(' ');
        if several_targets {
            line.push_str(&target.to_string());
            line.push(':');
        }
        line.push_str(&t.to_string());
    }
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

async fn generate(args: LoadGenArgs) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<(u32, u64, usize)>();
    let duplicates = Arc::new(AtomicUsize::new(0));
    let several_targets = args.target.len() > 1;
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<bool>();
    let lost = Arc::new(AtomicUsize::new(0));
    let setting_up = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let errors_shown = Arc::new(AtomicUsize::new(0));
    for i in args.first..args.first + args.count {
        let (args, receipts_tx, duplicates, ready_tx, lost, setting_up, errors_shown) = (
            Arc::clone(&args),
            receipts_tx.clone(),
            Arc::clone(&duplicates),
            ready_tx.clone(),
            Arc::clone(&lost),
            Arc::clone(&setting_up),
            Arc::clone(&errors_shown),
        );
        tokio::spawn(async move {
            let permit = setting_up.acquire_owned().await;
            let session = tokio::time::timeout(CONNECT_TIMEOUT, open(&args, i)).await;
            drop(permit);
            let session = match session {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => {
                    if errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("client {i}: {e:#}");
                    }
                    let _ = ready_tx.send(false);
                    return;
                }
                Err(_) => {
                    if errors_shown.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("client {i}: no session within {CONNECT_TIMEOUT:?}");
                    }
                    let _ = ready_tx.send(false);
                    return;
                }
            };
            let _ = ready_tx.send(true);
            drop(ready_tx);
            let mut receipts = Receipts {
                tx: &receipts_tx,
                target: target_of(&args, i),
                last_round: None,
                duplicates: &duplicates,
            };
            serve(session, &mut receipts).await;
            lost.fetch_add(1, Ordering::Relaxed);
        });
    }
    drop(ready_tx);
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < args.count {
        match ready.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {ok} {failed}")?;
        out.flush()?;
    }

    let mut rounds: HashMap<u32, Vec<(u64, usize)>> = HashMap::new();
    let mut reported: HashSet<u32> = HashSet::new();
    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            receipt = receipts.recv() => {
                let Some((id, at, target)) = receipt else { break };
                if reported.contains(&id) {
                    continue;
                }
                let times = rounds.entry(id).or_default();
                times.push((at, target));
                let lost = lost.load(Ordering::Relaxed);
                if times.len() + lost >= ok {
                    report(id, lost, times, several_targets);
                    rounds.remove(&id);
                    reported.insert(id);
                }
            }
            command = commands.next_line() => {
                let Ok(Some(command)) = command else { break };
                if let Some(id) = command.strip_prefix("FLUSH ").and_then(|id| id.trim().parse().ok()) {
                    if reported.insert(id) {
                        report(
                            id,
                            lost.load(Ordering::Relaxed),
                            &rounds.remove(&id).unwrap_or_default(),
                            several_targets,
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
