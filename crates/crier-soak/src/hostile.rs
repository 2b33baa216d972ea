//! A process of hostile connections (the hidden `hostile` subcommand). Each task holds one
//! connection of one kind and opens a new one whenever the server ends it, so the pressure
//! stays on for the whole run:
//! - `slowloris`: request headers, one byte every few seconds, never finished;
//! - `stalled-body`: complete headers with `Content-Length: 1048576` and a forged signature,
//!   part of the body, then nothing;
//! - `stalled-body-admin`: the same with a valid admin signature;
//! - `idle`: a TCP connection that never sends a byte;
//! - `ws-nonreader`: a WebSocket session that logs in (its account gets every push) and never
//!   reads again, with a small receive buffer so its backlog stays on the server.
//!
//! A connection ends when the server answers (the answer is noted) or closes it (end of
//! stream or reset; a non-reading session only notices on its next write, a ping every
//! `--probe-secs`). Line protocol: `READY` once every task made its first attempt; on `REPORT`
//! one `KIND ...` line per kind, `WHY count kind how` lines and `END`; exits when stdin closes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use crate::common::{hostile_user, now_secs, percentile, say, ADMIN, APP, KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Slowloris,
    StalledBody,
    StalledBodyAdmin,
    Idle,
    WsNonreader,
}

pub const KINDS: [Kind; 5] = [
    Kind::Slowloris,
    Kind::StalledBody,
    Kind::StalledBodyAdmin,
    Kind::Idle,
    Kind::WsNonreader,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Slowloris => "slowloris",
            Kind::StalledBody => "stalled-body",
            Kind::StalledBodyAdmin => "stalled-body-admin",
            Kind::Idle => "idle",
            Kind::WsNonreader => "ws-nonreader",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct HostileArgs {
    #[arg(long)]
    pub target: SocketAddr,
    /// Source addresses the connections are spread over.
    #[arg(long, value_delimiter = ',', required = true)]
    pub sources: Vec<IpAddr>,
    /// Connections of each kind, in the order slowloris, stalled-body, stalled-body-admin,
    /// idle, ws-nonreader.
    #[arg(long, value_delimiter = ',', required = true)]
    pub counts: Vec<usize>,
    /// Number of this process's first non-reading session account.
    #[arg(long, default_value_t = 0)]
    pub first_account: usize,
    /// Milliseconds between two bytes of a slowloris request.
    #[arg(long, default_value_t = 5000)]
    pub slowloris_interval_ms: u64,
    /// Body bytes a stalled request sends before it stalls.
    #[arg(long, default_value_t = 65_536)]
    pub stall_bytes: usize,
    /// Seconds between the pings a non-reading session writes to notice it was closed.
    #[arg(long, default_value_t = 2)]
    pub probe_secs: u64,
    /// Seconds after which a non-reading session leaves and logs in again, to be sent every
    /// push it has not acknowledged once more (0: it stays until the server closes it).
    #[arg(long, default_value_t = 0)]
    pub nonreader_relogin_secs: u64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// The declared body length of a stalled request: the server's limit, so it is not refused
/// for its size.
const STALLED_CONTENT_LENGTH: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct KindStats {
    connects: u64,
    connect_failures: u64,
    /// Milliseconds from connect to the server's answer or close, one per ended connection.
    ended_ms: Vec<u64>,
    /// How connections ended or failed, counted.
    why: BTreeMap<String, u64>,
    /// Connections open now (task number → since when).
    open: HashMap<usize, Instant>,
}

struct Shared {
    args: HostileArgs,
    stats: BTreeMap<Kind, Mutex<KindStats>>,
    bytes_sent: AtomicU64,
    admin_sig: String,
    /// Well formed, for the admin, but made with another key: refused at the HMAC check.
    forged_sig: String,
}

impl Shared {
    fn with<R>(&self, kind: Kind, f: impl FnOnce(&mut KindStats) -> R) -> Option<R> {
        let mut stats = self.stats.get(&kind)?.lock().ok()?;
        Some(f(&mut stats))
    }
}

/// How a connection ended.
enum End {
    /// The server sent bytes: their summary (status line, Tencent ErrorCode or WebSocket close).
    Answered(String),
    /// End of stream, reset or a failed write.
    Closed(String),
    /// The client left on its own (a non-reading session logging in again).
    Left,
}

async fn connect(
    source: IpAddr,
    target: SocketAddr,
    small_rcvbuf: bool,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_zero_linger()?;
    if small_rcvbuf {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The first line of an HTTP answer and its Tencent ErrorCode, or a WebSocket close code.
fn summarize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let first = text.lines().next().unwrap_or("").trim();
    let mut summary = if first.starts_with("HTTP/") {
        first.chars().take(40).collect()
    } else if bytes.first() == Some(&0x88) && bytes.len() >= 4 {
        format!(
            "WebSocket close {}",
            u16::from_be_bytes([bytes[2], bytes[3]])
        )
    } else {
        format!("{} bytes", bytes.len())
    };
    if let Some(rest) = text.split("\"ErrorCode\":").nth(1) {
        let code: String = rest.chars().take_while(char::is_ascii_digit).collect();
        summary.push_str(&format!(" ErrorCode {code}"));
    }
    summary
}

fn io_why(prefix: &str, error: &std::io::Error) -> String {
    format!("{prefix}: {:?}", error.kind())
}

/// Waits for the server to answer or close; meanwhile `drip` (if any) is written one byte per
/// `every`, from `offset` on, forever repeating its last byte.
async fn wait_for_end(
    stream: &mut TcpStream,
    drip: Option<(&[u8], Duration)>,
    shared: &Shared,
) -> End {
    let mut buf = vec![0u8; 2048];
    let mut offset = 0;
    let mut next = tokio::time::Instant::now();
    loop {
        let write_due = async {
            match drip {
                Some(_) => tokio::time::sleep_until(next).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = stream.read(&mut buf) => return match read {
                Ok(0) => End::Closed("end of stream".into()),
                Ok(n) => End::Answered(summarize(&buf[..n])),
                Err(e) => End::Closed(io_why("read", &e)),
            },
            _ = write_due => {
                let Some((bytes, every)) = drip else { continue };
                let byte = bytes[offset.min(bytes.len() - 1)];
                if let Err(e) = stream.write_all(&[byte]).await {
                    return End::Closed(io_why("write", &e));
                }
                shared.bytes_sent.fetch_add(1, Ordering::Relaxed);
                offset += 1;
                next += every;
            }
        }
    }
}

/// A masked client WebSocket frame.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Upgrades, logs in as `account` and reads until `LoginOK`; `Err` tells why it failed.
async fn ws_log_in(stream: &mut TcpStream, target: SocketAddr, account: &str) -> Result<(), End> {
    let upgrade = format!(
        "GET /v4/ws HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: c29hay1ub25yZWFkZXIta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let write = |e: std::io::Error| End::Closed(io_why("write", &e));
    stream.write_all(upgrade.as_bytes()).await.map_err(write)?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut logged_in = false;
    let mut login_sent = false;
    while !logged_in {
        let n = match stream.read(&mut buf).await {
            Ok(0) => return Err(End::Closed("end of stream during login".into())),
            Ok(n) => n,
            Err(e) => return Err(End::Closed(io_why("read during login", &e))),
        };
        got.extend_from_slice(&buf[..n]);
        if !login_sent {
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !got.starts_with(b"HTTP/1.1 101") {
                return Err(End::Answered(summarize(&got)));
            }
            got.drain(..end + 4);
            let login = serde_json::json!({
                "Type": "Login",
                "SdkAppId": APP,
                "Identifier": account,
                "UserSig": crier_proto::usersig::sign(APP, KEY, account, 86_400 * 2, now_secs()),
            });
            stream
                .write_all(&ws_frame(0x1, login.to_string().as_bytes()))
                .await
                .map_err(write)?;
            login_sent = true;
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("\"LoginOK\"") {
            logged_in = true;
        } else if text.contains("\"Error\"") || got.first() == Some(&0x88) {
            return Err(End::Answered(format!("login refused: {}", summarize(&got))));
        } else if got.len() > 64 * 1024 {
            return Err(End::Answered("no LoginOK in the first 64 KiB".into()));
        }
    }
    Ok(())
}

/// Writes a ping every `every` until a write fails (the only way a client that never reads
/// learns that the server closed it), or until `leave_after` has passed.
async fn probe_until_closed(
    stream: &mut TcpStream,
    every: Duration,
    leave_after: Option<Duration>,
) -> End {
    let ping = ws_frame(0x9, b"");
    let leave_at = leave_after.map(|after| Instant::now() + after);
    loop {
        tokio::time::sleep(every).await;
        if leave_at.is_some_and(|at| Instant::now() >= at) {
            return End::Left;
        }
        if let Err(e) = stream.write_all(&ping).await {
            return End::Closed(io_why("write", &e));
        }
    }
}

/// One hostile connection of `kind`, from connect to its end.
/// `task` numbers the connection among all of this process's, `index` among those of its kind.
async fn one_connection(
    shared: &Shared,
    kind: Kind,
    task: usize,
    index: usize,
    stream: &mut TcpStream,
) -> End {
    let args = &shared.args;
    let target = args.target;
    let slow = Duration::from_millis(args.slowloris_interval_ms.max(1));
    match kind {
        Kind::Slowloris => {
            let request = format!(
                "POST /v4/openim/query_online_status?sdkappid={APP}&identifier={ADMIN}&usersig={}&random=1&contenttype=json HTTP/1.1\r\nHost: {target}\r\nX-Slow: a",
                shared.admin_sig
            );
            wait_for_end(stream, Some((request.as_bytes(), slow)), shared).await
        }
        Kind::StalledBody | Kind::StalledBodyAdmin => {
            let sig = if kind == Kind::StalledBodyAdmin {
                &shared.admin_sig
            } else {
                &shared.forged_sig
            };
            let mut request = format!(
                "POST /v4/all_member_push/im_get_tag?sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random={task}&contenttype=json HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {STALLED_CONTENT_LENGTH}\r\n\r\n"
            )
            .into_bytes();
            // The start of a plausible body, then filler: the rest never comes.
            let body_end = request.len() + args.stall_bytes.min(STALLED_CONTENT_LENGTH);
            request.extend_from_slice(b"{\"To_Account\":[\"");
            request.resize(body_end, b'a');
            if let Err(e) = stream.write_all(&request).await {
                return End::Closed(io_why("write", &e));
            }
            shared
                .bytes_sent
                .fetch_add(request.len() as u64, Ordering::Relaxed);
            wait_for_end(stream, None, shared).await
        }
        Kind::Idle => wait_for_end(stream, None, shared).await,
        Kind::WsNonreader => {
            let account = hostile_user(args.first_account + index);
            if let Err(end) = ws_log_in(stream, target, &account).await {
                return end;
            }
            let relogin = (args.nonreader_relogin_secs > 0)
                .then(|| Duration::from_secs(args.nonreader_relogin_secs));
            probe_until_closed(stream, Duration::from_secs(args.probe_secs.max(1)), relogin).await
        }
    }
}

async fn hold(
    shared: Arc<Shared>,
    (kind, task, index): (Kind, usize, usize),
    opening: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<()>,
) {
    let mut ready = Some(ready);
    let source = shared.args.sources[task % shared.args.sources.len()];
    let mut backoff = Duration::from_millis(100);
    loop {
        let permit = opening.acquire().await;
        let connected = connect(source, shared.args.target, kind == Kind::WsNonreader).await;
        drop(permit);
        ready.take();
        let lived = match connected {
            Ok(mut stream) => {
                let since = Instant::now();
                shared.with(kind, |s| {
                    s.connects += 1;
                    s.open.insert(task, since);
                });
                let end = one_connection(&shared, kind, task, index, &mut stream).await;
                let lived = since.elapsed();
                shared.with(kind, |s| {
                    s.open.remove(&task);
                    let left = matches!(end, End::Left);
                    let why = match end {
                        End::Answered(summary) => format!("answered: {summary}"),
                        End::Closed(how) => format!("closed: {how}"),
                        End::Left => "left by the client, to log in again".to_owned(),
                    };
                    if !left {
                        s.ended_ms.push(lived.as_millis() as u64);
                    }
                    *s.why.entry(why).or_default() += 1;
                });
                lived
            }
            Err(e) => {
                shared.with(kind, |s| {
                    s.connect_failures += 1;
                    *s.why.entry(io_why("connect failed", &e)).or_default() += 1;
                });
                Duration::ZERO
            }
        };
        // Fast refusals back off, so a server that refuses at once is not hammered.
        backoff = if lived < Duration::from_secs(1) {
            (backoff * 2).min(Duration::from_secs(5))
        } else {
            Duration::from_millis(100)
        };
        tokio::time::sleep(backoff).await;
    }
}

fn report(shared: &Shared) {
    for kind in KINDS {
        let Some(line) = shared.with(kind, |s| {
            s.ended_ms.sort_unstable();
            let now = Instant::now();
            let mut ages: Vec<u64> = s
                .open
                .values()
                .map(|t| (now - *t).as_millis() as u64)
                .collect();
            ages.sort_unstable();
            let target = shared
                .args
                .counts
                .get(KINDS.iter().position(|k| *k == kind).unwrap_or(0))
                .copied()
                .unwrap_or(0);
            let why: Vec<String> = s
                .why
                .iter()
                .map(|(why, n)| format!("WHY {} {n} {why}", kind.name()))
                .collect();
            (
                format!(
                    "KIND {} {target} {} {} {} {} {} {} {} {} {} {}",
                    kind.name(),
                    s.connects,
                    s.connect_failures,
                    s.ended_ms.len(),
                    s.open.len(),
                    percentile(&s.ended_ms, 0.0),
                    percentile(&s.ended_ms, 0.5),
                    percentile(&s.ended_ms, 0.9),
                    percentile(&s.ended_ms, 1.0),
                    percentile(&ages, 0.0),
                    percentile(&ages, 1.0),
                ),
                why,
            )
        }) else {
            continue;
        };
        say(&line.0);
        for why in line.1 {
            say(&why);
        }
    }
    say(&format!(
        "SENT {}",
        shared.bytes_sent.load(Ordering::Relaxed)
    ));
    say("END");
}

pub fn run(args: HostileArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(generate(args))
}

async fn generate(args: HostileArgs) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        stats: KINDS.iter().map(|k| (*k, Mutex::default())).collect(),
        bytes_sent: AtomicU64::new(0),
        admin_sig: crier_proto::usersig::sign(APP, KEY, ADMIN, 86_400 * 2, now_secs()),
        forged_sig: crier_proto::usersig::sign(
            APP,
            "not-the-app-key",
            ADMIN,
            86_400 * 2,
            now_secs(),
        ),
        args,
    });
    let opening = Arc::new(Semaphore::new(shared.args.concurrency.max(1)));
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let mut task = 0;
    for (kind, count) in KINDS.iter().zip(shared.args.counts.clone()) {
        for index in 0..count {
            tokio::spawn(hold(
                Arc::clone(&shared),
                (*kind, task, index),
                Arc::clone(&opening),
                ready_tx.clone(),
            ));
            task += 1;
        }
    }
    drop(ready_tx);
    // Every task drops its sender after its first attempt.
    let _ = tokio::time::timeout(Duration::from_secs(120), ready.recv()).await;
    say("READY");
    let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await.context("stdin")? {
        if command.trim() == "REPORT" {
            report(&shared);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::net::TcpListener;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn shared(target: SocketAddr) -> Shared {
        Shared {
            args: HostileArgs {
                target,
                sources: vec![LOCAL],
                counts: vec![1],
                first_account: 0,
                slowloris_interval_ms: 20,
                stall_bytes: 0,
                probe_secs: 1,
                nonreader_relogin_secs: 0,
                concurrency: 1,
            },
            stats: BTreeMap::new(),
            bytes_sent: AtomicU64::new(0),
            admin_sig: String::new(),
            forged_sig: String::new(),
        }
    }

    #[tokio::test]
    async fn a_client_that_never_reads_notices_that_the_server_closed_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // More than the client takes: unread data is left on both sides, as with a
            // session the server gives up on.
            let _ = tokio::time::timeout(
                Duration::from_millis(300),
                socket.write_all(&vec![b'x'; 8 << 20]),
            )
            .await;
        });
        let mut stream = connect(LOCAL, addr, true).await.unwrap();
        server.await.unwrap();
        let end = tokio::time::timeout(
            Duration::from_secs(30),
            probe_until_closed(&mut stream, Duration::from_millis(20), None),
        )
        .await
        .expect("the close is noticed by writing");
        assert!(matches!(end, End::Closed(_)));
    }

    #[tokio::test]
    async fn a_slowloris_tells_an_answer_from_a_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut answered, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 3];
            answered.read_exact(&mut first).await.unwrap();
            answered
                .write_all(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let (closed, _) = listener.accept().await.unwrap();
            drop(closed);
            answered
        });
        let shared = shared(addr);
        let drip = Some((&b"POST /"[..], Duration::from_millis(20)));
        let mut stream = connect(LOCAL, addr, false).await.unwrap();
        match wait_for_end(&mut stream, drip, &shared).await {
            End::Answered(summary) => assert_eq!(summary, "HTTP/1.1 408 Request Timeout"),
            _ => panic!("the answer was not seen"),
        }
        let mut stream = connect(LOCAL, addr, false).await.unwrap();
        let _held = server.await.unwrap();
        assert!(matches!(
            wait_for_end(&mut stream, drip, &shared).await,
            End::Closed(_)
        ));
    }

    #[test]
    fn answers_are_summarized_by_status_line_and_error_code() {
        let body = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"ActionStatus\":\"FAIL\",\"ErrorCode\":70009,\"ErrorInfo\":\"x\"}";
        assert_eq!(summarize(body), "HTTP/1.1 200 OK ErrorCode 70009");
        assert_eq!(summarize(&[0x88, 0x02, 0x0f, 0xa8]), "WebSocket close 4008");
    }
}
