//! A process of honest WebSocket sessions (the hidden `sessions` subcommand): each logs in,
//! reads everything, acknowledges every push, pings now and then as real clients do, and
//! notes which pushes (by `MsgRandom`) it received. Anything that ends or breaks a session is
//! an honest-client error; the session then logs in again after a second, as a real client
//! would, and catches up on what it missed.
//!
//! Line protocol: `READY ok failed` once every session tried its first login; on `REPORT r1
//! r2 ...` (the `MsgRandom`s of the accepted pushes) it answers `RESULT ...`, one `ERR count
//! kind` per error kind and `END`, then stops counting errors (the server is about to be
//! killed). It exits when its stdin closes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use crier_client::{ClientError, Connection, Event, LoginOptions};
use crier_proto::protocol::ClientFrame;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::common::{honest_user, now_secs, say, APP, KEY};

#[derive(clap::Args, Debug, Clone)]
pub struct SessionsArgs {
    #[arg(long)]
    pub target: SocketAddr,
    /// Number of this process's first session (sessions are numbered across processes).
    #[arg(long)]
    pub first: usize,
    #[arg(long)]
    pub count: usize,
    /// Source addresses; session i binds to `sources[i % len]`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sources: Vec<IpAddr>,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds between a session's pings.
    #[arg(long, default_value_t = 30)]
    pub ping_secs: u64,
    /// READY is sent after this long even if some first logins are still pending.
    #[arg(long, default_value_t = 300)]
    pub login_deadline_secs: u64,
}

const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Small WebSocket buffers: frames are small, and the library zero-fills its whole read
/// buffer before each read (128 KiB by default).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// A TCP connection from `source` (any port) to `target`, closed with a reset so that no
/// TIME_WAIT is left behind.
pub async fn bound_connect(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Which pushes one session has seen, by `MsgRandom` (the coordinator numbers them 1, 2, ...).
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    duplicates: u64,
}

impl Seen {
    fn mark(&mut self, random: u32) {
        let (word, bit) = (random as usize / 64, random % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        }
        self.bits[word] |= 1 << bit;
    }

    fn has(&self, random: u32) -> bool {
        self.bits
            .get(random as usize / 64)
            .is_some_and(|w| w & (1 << (random % 64)) != 0)
    }

    fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

struct Shared {
    args: SessionsArgs,
    seen: Vec<Mutex<Seen>>,
    logged_in: Vec<AtomicBool>,
    errors: Mutex<BTreeMap<String, u64>>,
    reconnects: AtomicU64,
    /// Set once the results are reported: what happens after is the coordinator's doing.
    quiet: AtomicBool,
}

impl Shared {
    fn error(&self, kind: String) {
        if self.quiet.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }
}

/// A short, stable name for a client error: the message and its first cause, no ids.
fn error_kind(prefix: &str, error: &ClientError) -> String {
    let mut kind = format!("{prefix}: {error}");
    if let Some(source) = std::error::Error::source(error) {
        kind.push_str(&format!(": {source}"));
    }
    kind.truncate(120);
    kind
}

async fn log_in(shared: &Shared, i: usize) -> Result<Connection, String> {
    let args = &shared.args;
    let source = args.sources[i % args.sources.len()];
    let identifier = honest_user(i);
    let options = LoginOptions {
        url: format!("ws://{}/v4/ws", args.target),
        sdkappid: APP,
        user_sig: crier_proto::usersig::sign(APP, KEY, &identifier, 86_400 * 2, now_secs()),
        identifier,
        platform: None,
    };
    let attempt = async {
        let stream = bound_connect(source, args.target)
            .await
            .map_err(|e| format!("login: connect: {}", e.kind()))?;
        Connection::connect_on(stream, &options, Some(ws_config()))
            .await
            .map_err(|e| error_kind("login", &e))
    };
    match tokio::time::timeout(LOGIN_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("login: no LoginOK within {LOGIN_TIMEOUT:?}")),
    }
}

/// Reads until the session ends; answers why it ended (an honest-client error).
async fn serve(shared: &Shared, i: usize, connection: &mut Connection) -> String {
    let local = i - shared.args.first;
    let mut ping = tokio::time::interval(Duration::from_secs(shared.args.ping_secs.max(1)));
    ping.tick().await;
    loop {
        tokio::select! {
            event = connection.next_event() => match event {
                Ok(Event::Push(push)) => {
                    if let Ok(mut seen) = shared.seen[local].lock() {
                        seen.mark(push.msg_random);
                    }
                    if let Err(e) = connection.ack(vec![push.task_id]).await {
                        return error_kind("ack", &e);
                    }
                }
                Ok(Event::Pong | Event::Revoke { .. }) => {}
                Ok(Event::Error { code, .. }) => shared.error(format!("Error frame {code}")),
                Ok(Event::Kicked { reason }) => return format!("kicked: {reason}"),
                Ok(Event::Closed { code, reason }) => return format!("closed by the server: {code} {reason}"),
                Err(e) => return error_kind("read", &e),
            },
            _ = ping.tick() => {
                if let Err(e) = connection.send(&ClientFrame::Ping).await {
                    return error_kind("ping", &e);
                }
            }
        }
    }
}

async fn session(
    shared: Arc<Shared>,
    i: usize,
    setting_up: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<bool>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_secs(1);
    loop {
        let permit = setting_up.acquire().await;
        let login = log_in(&shared, i).await;
        drop(permit);
        if let Some(ready) = ready.take() {
            let _ = ready.send(login.is_ok());
        }
        match login {
            Ok(mut connection) => {
                shared.logged_in[i - shared.args.first].store(true, Ordering::Relaxed);
                backoff = Duration::from_secs(1);
                let why = serve(&shared, i, &mut connection).await;
                shared.error(why);
            }
            Err(why) => {
                shared.error(why);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        if shared.quiet.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(backoff).await;
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn report(shared: &Shared, accepted: &[u32]) {
    let (mut logged, mut complete, mut missing, mut extra, mut duplicates, mut received) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for (local, seen) in shared.seen.iter().enumerate() {
        let Ok(seen) = seen.lock() else { continue };
        if !shared.logged_in[local].load(Ordering::Relaxed) {
            continue;
        }
        logged += 1;
        let got = accepted.iter().filter(|r| seen.has(**r)).count() as u64;
        missing += accepted.len() as u64 - got;
        extra += seen.count() - got;
        duplicates += seen.duplicates;
        received += seen.count() + seen.duplicates;
        if got == accepted.len() as u64 {
            complete += 1;
        }
    }
    say(&format!(
        "RESULT {} {logged} {complete} {missing} {extra} {duplicates} {} {received}",
        shared.args.count,
        shared.reconnects.load(Ordering::Relaxed)
    ));
    if let Ok(errors) = shared.errors.lock() {
        for (kind, count) in errors.iter() {
            say(&format!("ERR {count} {kind}"));
        }
    }
    say("END");
}

pub fn run(args: SessionsArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(generate(args))
}

async fn generate(args: SessionsArgs) -> anyhow::Result<()> {
    let count = args.count;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.login_deadline_secs);
    let setting_up = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let shared = Arc::new(Shared {
        seen: (0..count).map(|_| Mutex::default()).collect(),
        logged_in: (0..count).map(|_| AtomicBool::new(false)).collect(),
        errors: Mutex::default(),
        reconnects: AtomicU64::new(0),
        quiet: AtomicBool::new(false),
        args,
    });
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    for i in shared.args.first..shared.args.first + count {
        tokio::spawn(session(
            Arc::clone(&shared),
            i,
            Arc::clone(&setting_up),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < count {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Ok(Some(true)) => ok += 1,
            Ok(Some(false)) => failed += 1,
            Ok(None) | Err(_) => break,
        }
    }
    say(&format!("READY {ok} {}", count - ok));
    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await.context("stdin")? {
        if let Some(list) = command.strip_prefix("REPORT") {
            let accepted: Vec<u32> = list
                .split_ascii_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            report(&shared, &accepted);
            shared.quiet.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}
